/* The moonbeam launcher: starts a node, runs a command's first process, and
 * exits when that process ends or when a signal asks.
 *
 *   moonbeam [run] script.lua [args...]  the script is the first process
 *   moonbeam start app.lua               moonbeam.launcher.start
 *   moonbeam eval CODE [args...]         moonbeam.launcher.eval
 *   moonbeam shell [app.lua]             moonbeam.launcher.shell
 *
 * cli.c reads the command line and the settings.  The first process's end
 * gives the exit status: for a script, 0 if it returned and 1 if it crashed
 * (as `elixir script.exs`); the launcher's own entry points return the
 * status.  Other processes do not keep the node alive.
 *
 * Signals: the main thread runs a libuv loop of its own (the node's loop
 * belongs to the core) watching SIGINT and SIGTERM.  Under `moonbeam
 * shell`, SIGINT (Ctrl-C) while the shell evaluates an input interrupts
 * it: moonbeam.launcher.interrupt_shell has the shell's process killed and
 * a new one started, and the node runs on.  Otherwise the first signal
 * stops the node cleanly: a process runs moonbeam.launcher.stop_node, which
 * stops the running applications, last started first, each shutting its
 * supervision tree down; then the launcher exits 0.  A second signal exits at
 * once, with 128 + its number as a shell reports a killed program.  So does
 * the end of the shutdown time (--shutdown-time, as erl's -shutdown_time),
 * with status 1: a process stuck where it cannot be ended (a __gc that
 * loops, holding every scheduler) cannot keep the node up. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include <uv.h>

#include "../core/moonbeam.h"
#include "launcher.h"
#include "lmoonbeam.h"

#define LAUNCHER "moonbeam.launcher"
#define PRELUDE_TIMEOUT_MS 60000
#define SHUTDOWN_TIME_MS 30000
#define LOG_FILE_SIZE (10u << 20)
#define LOG_FILES 5

/* A process whose end the main loop waits for: a thread blocks in the
 * waiter and wakes the loop. */
typedef struct {
  uv_async_t async;
  uv_thread_t thread;
  mb_waiter_t *waiter;
  mb_msg_t *result;
  int normal;
} watch_t;

/* All of these belong to the main thread, but for a watch's `result` and
 * `normal`, which its thread writes before it wakes the loop. */
static uv_loop_t loop;
static uv_signal_t sigint_h, sigterm_h;
static uv_timer_t shutdown_timer;
static watch_t entry, stopper;
static cli_t cli;
static lua_State *L; /* settings, arguments and results are built here */
static int stopping;

/* The node's schedulers still run processes here: the launcher leaves
 * with _exit, after flushing its own output, so that no library's exit
 * handler (OpenSSL's, stdio's teardown) runs under them. */
static void finish(int status) {
  console_restore();
  fflush(stdout);
  fflush(stderr);
  _exit(status);
}

/* ---- processes the launcher starts ---- */

/* Encode the top `n` values of L as an argument table {n = n, ...} and pop
 * them; NULL (the error printed) if one of them cannot be sent. */
static mb_msg_t *encode_args(int n) {
  int first = lua_gettop(L) - n + 1;
  lua_createtable(L, n, 1);
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  char err[600];
  mb_msg_t *m = NULL;
  int r = mb_msg_encode(L, -1, &m, err, sizeof err);
  if (r == MB_EBADTERM)
    cli_say("%s", err);
  else if (r != 0)
    cli_say("%s", mb_strerror(r));
  lua_settop(L, first - 1);
  return r == 0 ? m : NULL;
}

/* Spawn moonbeam.launcher.<function>(args) with a waiter. */
static int spawn_launcher(const char *function, mb_msg_t *args,
                          mb_waiter_t **w) {
  mb_spawn_opts_t o = {0};
  o.module = LAUNCHER;
  o.function = function;
  o.args = args;
  o.waiter = w;
  return mb_proc_spawn_opts(&o, NULL);
}

/* Run moonbeam.launcher.<function>(args) before the node's main work and
 * wait for it (PRELUDE_TIMEOUT_MS at most): 0 when it returned, else -1
 * with "cannot <what>" said. */
static int run_launcher(const char *function, mb_msg_t *args,
                        const char *what) {
  mb_waiter_t *w = NULL;
  mb_msg_t *result = NULL;
  int normal = 0;
  int err = spawn_launcher(function, args, &w);
  if (err == 0)
    err = mb_waiter_wait(w, PRELUDE_TIMEOUT_MS, &result, &normal);
  if (w != NULL)
    mb_waiter_free(w);
  mb_msg_free(result);
  if (err != 0 || !normal) {
    cli_say("cannot %s%s%s", what, err ? ": " : "",
            err ? mb_strerror(err) : "");
    return -1;
  }
  return 0;
}

static void wait_thread(void *arg) {
  watch_t *w = arg;
  mb_waiter_wait(w->waiter, -1, &w->result, &w->normal);
  uv_async_send(&w->async);
}

static int watch(watch_t *w, uv_async_cb done) {
  int err = uv_async_init(&loop, &w->async, done);
  if (err == 0)
    err = uv_thread_create(&w->thread, wait_thread, w);
  return err;
}

/* The status an entry point returned: its first result if it is an
 * integer, else 0. */
static int returned_status(mb_msg_t *result) {
  int status = 0;
  if (result == NULL || mb_msg_decode(L, result) != 0)
    return 0;
  if (lua_istable(L, -1) && lua_rawgeti(L, -1, 1) == LUA_TNUMBER &&
      lua_isinteger(L, -1))
    status = (int)(lua_tointeger(L, -1) & 0xff);
  lua_settop(L, 0);
  return status;
}

/* Whether an exit reason is one the core has already reported: a crash,
 * {Error, "stack traceback..."}, or {memory_limit, Bytes}. */
static int reported(lua_State *ls, int reason) {
  if (!lua_istable(ls, reason) || lua_rawlen(ls, reason) != 2)
    return 0;
  lua_rawgeti(ls, reason, 2);
  const char *tb = lua_tostring(ls, -1);
  int crash = tb != NULL && strncmp(tb, "stack traceback", 15) == 0;
  lua_pop(ls, 1);
  lua_rawgeti(ls, reason, 1);
  const char *first = luaL_tolstring(ls, -1, NULL);
  int memory = strcmp(first, "memory_limit") == 0;
  lua_pop(ls, 2);
  return crash || memory;
}

/* Say why the first process ended when it did not return or crash: an exit
 * signal (through a link, or mb.exit) ended it, as Elixir prints
 * "** (EXIT from PID) reason". */
static void say_exit(mb_msg_t *reason) {
  if (reason == NULL || mb_msg_decode(L, reason) != 0)
    return;
  if (!reported(L, lua_gettop(L))) {
    fprintf(stderr, "** (EXIT) %s\n", luaL_tolstring(L, -1, NULL));
    fflush(stderr);
  }
  lua_settop(L, 0);
}

/* ---- the main loop's events ---- */

static void entry_ended(uv_async_t *a) {
  (void)a;
  if (stopping)
    return; /* the stopper decides the status */
  int status = 1;
  if (entry.normal)
    status = cli.command == CLI_RUN ? 0 : returned_status(entry.result);
  else
    say_exit(entry.result);
  mb_msg_free(entry.result);
  finish(status);
}

static void stopper_ended(uv_async_t *a) {
  (void)a;
  finish(stopper.normal ? 0 : 1);
}

static void shutdown_timed_out(uv_timer_t *t) {
  (void)t;
  mb_log(MB_LOG_WARNING, "the node did not stop within %ld ms: exiting",
         cli.shutdown_time ? cli.shutdown_time : SHUTDOWN_TIME_MS);
  finish(1);
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
  if (signum == SIGINT && !stopping && cli.command == CLI_SHELL &&
      console_evaluating()) {
    if (isatty(STDOUT_FILENO)) {
      fputc('\n', stdout); /* off the line of ^C */
      fflush(stdout);
    }
    int err = spawn_launcher("interrupt_shell", NULL, NULL);
    if (err != 0)
      cli_say("cannot interrupt the shell: %s", mb_strerror(err));
    return;
  }
  if (stopping) {
    mb_log(MB_LOG_WARNING, "%s received again: exiting at once", name);
    finish(128 + signum);
  }
  stopping = 1;
  if (isatty(STDOUT_FILENO)) {
    fputc('\n', stdout); /* off the line of a prompt or of ^C */
    fflush(stdout);
  }
  mb_log(MB_LOG_NOTICE, "%s received: stopping the node", name);
  uv_timer_init(&loop, &shutdown_timer);
  uv_timer_start(
      &shutdown_timer, shutdown_timed_out,
      (uint64_t)(cli.shutdown_time ? cli.shutdown_time : SHUTDOWN_TIME_MS), 0);
  int err = spawn_launcher("stop_node", NULL, &stopper.waiter);
  if (err == 0)
    err = watch(&stopper, stopper_ended);
  if (err != 0) {
    cli_say("cannot stop the node cleanly: %s", mb_strerror(err));
    finish(1);
  }
}

/* ---- start-up ---- */

/* The name of a command that reaches a running node, as its own node's
 * name starts. */
static const char *command_name(void) {
  switch (cli.command) {
  case CLI_RELOAD:
    return "reload";
  case CLI_PING:
    return "ping";
  case CLI_STOP:
    return "stop";
  case CLI_RPC:
    return "rpc";
  case CLI_PID:
    return "pid";
  default:
    return "remsh";
  }
}

/* The settings of how distribution listens and talks, into the table at
 * the top of L's stack, under start_distribution's names. */
static void dist_settings(void) {
  const struct {
    const char *key, *value;
  } texts[] = {{"proto_dist", cli.proto_dist},
               {"ssl_dist_optfile", cli.ssl_dist_optfile},
               {"inet_dist_use_interface", cli.dist_use_interface}};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    if (texts[i].value == NULL)
      continue;
    lua_pushstring(L, texts[i].value);
    lua_setfield(L, -2, texts[i].key);
  }
  if (cli.dist_listen_min > 0) {
    lua_pushinteger(L, cli.dist_listen_min);
    lua_setfield(L, -2, "inet_dist_listen_min");
  }
  if (cli.dist_listen_max > 0) {
    lua_pushinteger(L, cli.dist_listen_max);
    lua_setfield(L, -2, "inet_dist_listen_max");
  }
}

/* Distribution, when --sname, --name, --remsh or reload asks for it: after
 * the node has started, before the first process runs.  The own node of a
 * remote shell or a reload is hidden and named after this OS process, on
 * the target's host. */
static int start_distribution(void) {
  char name[600];
  const char *base = cli.sname ? cli.sname : cli.name;
  const char *key = cli.sname ? "sname" : "name";
  const char *cmd = command_name();
  int to_node = cli.command == CLI_RELOAD || CLI_TO_NODE(cli.command);
  const char *peer = to_node ? cli.target : cli.remsh;
  if (peer != NULL) {
    const char *at = strchr(peer, '@');
    if (at == NULL || at[1] == '\0') {
      cli_say("%s: a node name is name@host (got %s)",
              to_node ? cmd : "--remsh", peer);
      return 2;
    }
    snprintf(name, sizeof name, "%s%d@%s", to_node ? cmd : "remsh",
             (int)getpid(), at + 1);
    base = name;
    key = "name";
  } else if (base == NULL) {
    if (cli.cookie != NULL || cli.hidden || cli.nconnects || cli.hosts) {
      cli_say("%s needs --sname or --name", cli.hidden      ? "--hidden"
                                            : cli.nconnects ? "--connect"
                                            : cli.hosts     ? "--hosts"
                                                            : "--cookie");
      return 2;
    }
    return 0;
  }
  /* The binding's start_distribution decides the rest (the host part of
   * the name, the cookie file, the processes a distributed node runs), as
   * it does for Lua code. */
  lua_pushcfunction(L, lmb_start_distribution);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, base);
  lua_setfield(L, -2, key);
  if (cli.cookie != NULL) {
    lua_pushstring(L, cli.cookie);
    lua_setfield(L, -2, "cookie");
  }
  lua_pushboolean(L, peer != NULL || cli.hidden);
  lua_setfield(L, -2, "hidden");
  dist_settings();
  lua_pushboolean(L, !cli.no_connect_all);
  lua_setfield(L, -2, "connect_all");
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    cli_say("%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* Push the settings' moonbeam.topologies (the environment table is at
 * `env`), or nil. */
static void push_topologies(int env) {
  if (lua_getfield(L, env, "moonbeam") == LUA_TTABLE)
    lua_getfield(L, -1, "topologies");
  else
    lua_pushnil(L);
  lua_remove(L, -2);
}

/* --connect, --hosts and the environment's moonbeam.topologies: the
 * launcher's join(nodes, file, topologies) starts the topologies that
 * connect this node, before the first process runs.  The settings'
 * environment table stays at the top of L. */
static int join_cluster(void) {
  /* The own node of a command that reaches another node joins nothing. */
  if (cli.command == CLI_RELOAD || CLI_TO_NODE(cli.command) || cli.remsh)
    return 0;
  int env = lua_gettop(L);
  push_topologies(env);
  if (cli.nconnects == 0 && cli.hosts == NULL && lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_createtable(L, cli.nconnects, 0);
  for (int i = 0; i < cli.nconnects; i++) {
    lua_pushstring(L, cli.connects[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushstring(L, cli.hosts); /* nil without --hosts */
  lua_rotate(L, -3, 2);         /* nodes, file, topologies */
  mb_msg_t *args = encode_args(3);
  if (args == NULL)
    return 1;
  return run_launcher("join", args, "start the cluster topologies") ? 1 : 0;
}

/* epmd-names: what the EPMD of this host knows, as `epmd -names` prints. */
typedef struct {
  uv_mutex_t lock;
  uv_cond_t cond;
  int done, err;
  char *text;
} names_wait_t;

static void got_names(int err, const char *text, void *arg) {
  names_wait_t *w = arg;
  uv_mutex_lock(&w->lock);
  w->err = err;
  w->text = text ? strdup(text) : NULL;
  w->done = 1;
  uv_cond_signal(&w->cond);
  uv_mutex_unlock(&w->lock);
}

static int epmd_names(void) {
  names_wait_t w;
  memset(&w, 0, sizeof w);
  uv_mutex_init(&w.lock);
  uv_cond_init(&w.cond);
  int err = mb_epmd_names("127.0.0.1", got_names, &w);
  if (err == 0) {
    uv_mutex_lock(&w.lock);
    while (!w.done)
      uv_cond_wait(&w.cond, &w.lock);
    uv_mutex_unlock(&w.lock);
    err = w.err;
  }
  if (err) {
    cli_say("no epmd answers on this host: %s", mb_strerror(err));
    return 1;
  }
  fputs(w.text ? w.text : "", stdout);
  free(w.text);
  return 0;
}

static int check_readable(const char *file) {
  FILE *f = fopen(file, "r");
  if (f == NULL) {
    cli_say("cannot open %s: %s", file, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

/* ---- moonbeam.launcher_os: the launcher's process, for its node ---- */

/* pid() -> the operating system pid of the launcher */
static int os_pid(lua_State *ls) {
  lua_pushinteger(ls, (lua_Integer)getpid());
  return 1;
}

/* terminate(): stop the node as SIGTERM does (moonbeam stop), through the
 * same handler. */
static int os_terminate(lua_State *ls) {
  (void)ls;
  uv_kill((int)getpid(), SIGTERM);
  return 0;
}

static int open_launcher_os(lua_State *ls) {
  static const luaL_Reg funcs[] = {
      {"pid", os_pid}, {"terminate", os_terminate}, {NULL, NULL}};
  luaL_newlib(ls, funcs);
  return 1;
}

/* The launcher's own state finds the stdlib as the processes do: it
 * reads settings with it (an ssl_dist_optfile). */
static void host_paths(const char *path, const char *cpath) {
  lua_getglobal(L, "package");
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, cpath);
  lua_setfield(L, -2, "cpath");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_moonbeam);
  lua_setfield(L, -2, "moonbeam");
  lua_pop(L, 2);
}

static int start_node(void) {
  mb_config_t cfg = {0};
  cfg.schedulers = cli.schedulers;
  cfg.max_heap = cli.max_heap;
  cfg.max_processes = cli.max_processes;
  char *path = cli_lua_path(&cli);
  char *cpath = cli_lua_cpath(&cli);
  cfg.lua_path = path;
  cfg.lua_cpath = cpath;
  if (cli.log_level >= 0)
    mb_log_set_level((mb_log_level_t)cli.log_level);
  else if (CLI_TO_NODE(cli.command) && cli.command != CLI_REMOTE)
    mb_log_set_level(MB_LOG_ERROR); /* its own node's news is noise */
  if (cli.log_format >= 0)
    mb_log_set_format((mb_log_format_t)cli.log_format);
  if (cli.log_file != NULL &&
      mb_log_set_file(cli.log_file,
                      cli.log_file_size ? cli.log_file_size : LOG_FILE_SIZE,
                      cli.log_files >= 0 ? cli.log_files : LOG_FILES) != 0) {
    cli_say("cannot open the log file %s: %s", cli.log_file, strerror(errno));
    free(path);
    free(cpath);
    return MB_EINVAL;
  }
  mb_node_preload("moonbeam", luaopen_moonbeam);
  /* The binding's modules too, before any process runs: a process that
   * opens the package library takes the node's preloads as they are then,
   * and would miss those that loading moonbeam registers later. */
  mb_node_preload("moonbeam.socket", luaopen_moonbeam_socket);
  mb_node_preload("moonbeam.term", luaopen_moonbeam_term);
  mb_node_preload("moonbeam.crypto", luaopen_moonbeam_crypto);
  mb_node_preload("moonbeam.console", luaopen_moonbeam_console);
  mb_node_preload("moonbeam.launcher_os", open_launcher_os);
  int err = path && cpath ? mb_node_start(&cfg) : MB_ENOMEM;
  if (err == 0)
    host_paths(path, cpath);
  free(path);
  free(cpath);
  if (err)
    cli_say("cannot start the node: %s", mb_strerror(err));
  return err;
}

/* For a script: set the application environment of the settings (at the
 * top of L) before the script runs, if there is any. */
static int prelude(void) {
  lua_pushnil(L);
  if (!lua_next(L, -2))
    return 0;
  lua_pop(L, 2);
  mb_msg_t *args = encode_args(1);
  if (args == NULL)
    return -1;
  return run_launcher("set_env", args, "set the application environment");
}

/* Push {n = count, ...} of the command's arguments, with `zero` at [0]
 * if it is not NULL (a script's `arg`). */
static void push_args(const char *zero) {
  lua_createtable(L, cli.nargs, 2);
  if (zero != NULL) {
    lua_pushstring(L, zero);
    lua_rawseti(L, -2, 0);
  }
  for (int k = 0; k < cli.nargs; k++) {
    lua_pushstring(L, cli.args[k]);
    lua_rawseti(L, -2, k + 1);
  }
  lua_pushinteger(L, cli.nargs);
  lua_setfield(L, -2, "n");
}

/* The script is the first process: the core loads it and sets `arg`. */
static int spawn_script(void) {
  if (prelude() != 0)
    return -1;
  lua_settop(L, 0);
  push_args(cli.target);
  mb_msg_t *args;
  char why[600];
  if (mb_msg_encode(L, -1, &args, why, sizeof why) != 0) {
    cli_say("%s", why);
    return -1;
  }
  lua_settop(L, 0);
  mb_spawn_opts_t o = {0};
  o.file = cli.target;
  o.args = args;
  o.waiter = &entry.waiter;
  return mb_proc_spawn_opts(&o, NULL);
}

/* Spawn the command's first process; the application environment of the
 * settings is at the top of L.  Returns 0, or -1 with the error printed. */
static int spawn_entry(void) {
  int err;
  if (cli.command == CLI_RUN) {
    err = spawn_script();
    if (err == -1)
      return -1;
  } else {
    const char *function;
    int nargs = 3;
    if (cli.command == CLI_EVAL || cli.command == CLI_RELOAD ||
        CLI_TO_NODE(cli.command)) {
      /* eval(code, env, {n = count, ...}), reload(node, env, {...}),
       * ping(node, env, {}), rpc(node, env, {code})... */
      function = cli.command == CLI_EVAL ? "eval" : command_name();
      lua_pushstring(L, cli.target);
      lua_insert(L, -2);
      push_args(NULL);
    } else {
      /* start(file, type, env), shell(file or nil, type, env, remsh) */
      function = cli.command == CLI_START ? "start" : "shell";
      lua_pushstring(L, cli.target);
      lua_pushstring(L, cli.start_type);
      lua_rotate(L, -3, 2);
      lua_pushstring(L, cli.remsh);
      nargs = 4;
    }
    mb_msg_t *args = encode_args(nargs);
    if (args == NULL)
      return -1;
    err = spawn_launcher(function, args, &entry.waiter);
  }
  if (err != 0) {
    cli_say("cannot start the first process: %s", mb_strerror(err));
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  /* A node outlives its standard output: once that is gone (a closed
   * pipe, a terminal that went away), writes fail with EPIPE instead of
   * ending the node. */
  signal(SIGPIPE, SIG_IGN);
  int r = cli_parse(argc, argv, &cli);
  if (r >= 0)
    return r;
  L = luaL_newstate();
  if (L == NULL) {
    cli_say("out of memory");
    return 1;
  }
  luaL_openlibs(L);
  r = cli_settings(L, &cli);
  if (r >= 0)
    return r;
  if (CLI_TO_NODE(cli.command) && cli_node(&cli) == NULL)
    return 2;
  if (cli.command == CLI_REMOTE) {
    cli.command = CLI_SHELL;
    cli.remsh = cli.target;
    cli.target = NULL;
  }
  if (cli.target != NULL && cli.command != CLI_EVAL &&
      cli.command != CLI_RELOAD && !CLI_TO_NODE(cli.command) &&
      check_readable(cli.target) != 0)
    return 1;
  if (cli.command == CLI_RELEASE)
    return release_build(L, &cli);
  if (start_node() != 0)
    return 1;
  if (cli.command == CLI_EPMD_NAMES)
    return epmd_names();
  r = start_distribution();
  if (r == 0)
    r = join_cluster();
  if (r != 0)
    return r;

  uv_loop_init(&loop);
  uv_signal_init(&loop, &sigint_h);
  uv_signal_init(&loop, &sigterm_h);
  uv_signal_start(&sigint_h, on_signal, SIGINT);
  uv_signal_start(&sigterm_h, on_signal, SIGTERM);

  if (spawn_entry() != 0)
    finish(1);
  int err = watch(&entry, entry_ended);
  if (err != 0) {
    cli_say("cannot wait for the first process: %s", uv_strerror(err));
    finish(1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  finish(1); /* not reached: the loop's handles stay active */
  return 1;
}
