/* moonbeam: the Lua binding of the core, one function per primitive, on
 * the public API alone (moonbeam.h).  Every Lua function of the module is
 * registered in `funcs` below; the core's entry points (mb_lua_*) and the
 * binding's own (the host side: starting a node, running a process,
 * spawning, logging, starting distribution) alike.  The friendly layer
 * lives in stdlib/. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "../core/moonbeam.h"
#include "lmoonbeam.h"

#define DEFAULT_RUN_TIMEOUT_MS 60000

static long run_timeout_ms = DEFAULT_RUN_TIMEOUT_MS;

static void check_err(lua_State *L, int err, const char *fname) {
  if (err != 0)
    mb_lua_error(L, fname, err, NULL);
}

/* A host that started the node stops it when it exits, so that no
 * scheduler thread runs while the OS process tears itself down. */
static void stop_at_exit(void) { mb_node_stop(); }

/* Start the node with the host's package.path and package.cpath. */
static int start_node(lua_State *L, mb_config_t *cfg) {
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    cfg->lua_path = lua_tostring(L, -2);
    cfg->lua_cpath = lua_tostring(L, -1);
  }
  int err = mb_node_start(cfg);
  lua_settop(L, top);
  if (err == 0)
    atexit(stop_at_exit);
  return err;
}

static void ensure_node(lua_State *L) {
  if (mb_node_started())
    return;
  mb_config_t cfg = {0};
  check_err(L, start_node(L, &cfg), "start");
}

/* Encode arguments first..top as a table {n = count, ...}. */
static mb_msg_t *encode_args(lua_State *L, int first, const char *fname) {
  int top = lua_gettop(L);
  if (first > top)
    return NULL;
  return mb_lua_encode_args(L, first, top - first + 1, "args", fname);
}

/* ---- processes ---- */

/* Fill spawn options from the arguments: (fn, ...) or (module, fname, ...).
 * Returns the index of the first argument to pass. */
static int spawn_target(lua_State *L, mb_spawn_opts_t *o, const char *fname) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    o->module = lua_tostring(L, 1);
    o->function = luaL_checkstring(L, 2);
    return 3;
  }
  luaL_argexpected(L, lua_type(L, 1) == LUA_TFUNCTION, 1,
                   "function or module name");
  o->fn = mb_lua_encode(L, 1, "function", fname);
  return 2;
}

static int spawn_with(lua_State *L, mb_spawn_opts_t *o, int base,
                      const char *fname) {
  ensure_node(L);
  mb_pid_t self = mb_lua_self_pid(L);
  if ((o->link || o->monitor) && self == 0)
    return luaL_error(L, "%s: not called inside a moonbeam process", fname);
  o->parent = self;
  lua_rotate(L, 1, -(base - 1)); /* the target first, options last */
  int first = spawn_target(L, o, fname);
  lua_settop(L, lua_gettop(L) - (base - 1));
  o->args = encode_args(L, first, fname);
  mb_pid_t pid;
  int err = mb_proc_spawn_opts(o, &pid);
  if (err == MB_ELIMIT)
    return luaL_error(L,
                      "%s: too many processes (the node's limit is %d: "
                      "system_limit)",
                      fname, (int)mb_node_process_limit());
  check_err(L, err, fname);
  mb_trace_spawn(L, pid, o->module, o->function);
  mb_lua_push_pid(L, pid);
  if (o->monitor) {
    mb_lua_push_ref(L, o->monitor_ref);
    return 2;
  }
  return 1;
}

/* spawn(fn, ...) or spawn(module, fname, ...) -> pid */
static int l_spawn(lua_State *L) {
  mb_spawn_opts_t o = {0};
  return spawn_with(L, &o, 1, "spawn");
}

/* spawn_link(...) -> pid, linked to the caller before it runs. */
static int l_spawn_link(lua_State *L) {
  mb_spawn_opts_t o = {0};
  o.link = 1;
  return spawn_with(L, &o, 1, "spawn_link");
}

/* spawn_monitor(...) -> pid, ref */
static int l_spawn_monitor(lua_State *L) {
  mb_spawn_opts_t o = {0};
  o.monitor = 1;
  return spawn_with(L, &o, 1, "spawn_monitor");
}

/* spawn_opt({link=, monitor=, max_heap=}, fn or module, ...) */
static int l_spawn_opt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  mb_spawn_opts_t o = {0};
  lua_getfield(L, 1, "link");
  o.link = lua_toboolean(L, -1);
  lua_getfield(L, 1, "monitor");
  o.monitor = lua_toboolean(L, -1);
  lua_getfield(L, 1, "max_heap");
  lua_Integer heap = luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, heap >= 0, 1, "max_heap must not be negative");
  o.max_heap = (size_t)heap;
  lua_pop(L, 3);
  return spawn_with(L, &o, 2, "spawn_opt");
}

static int l_is_alive(lua_State *L) {
  lua_pushboolean(L, mb_proc_alive(mb_lua_check_pid(L, 1)));
  return 1;
}

/* monotonic_time() -> nanoseconds from an arbitrary point, never going
 * back (Erlang's erlang:monotonic_time(nanosecond)). */
static int l_monotonic_time(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_hrtime());
  return 1;
}

/* process_limit() -> how many processes may be alive at once
 * (erlang:system_info(process_limit)). */
static int l_process_limit(lua_State *L) {
  ensure_node(L);
  lua_pushinteger(L, (lua_Integer)mb_node_process_limit());
  return 1;
}

static int l_process_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mb_proc_count());
  return 1;
}

/* ---- distribution ---- */

/* The host part of -sname (short) or -name (long) names. */
static void host_name(char *out, size_t len, bool shortname) {
  size_t n = len;
  if (uv_os_gethostname(out, &n) != 0)
    snprintf(out, len, "localhost");
  if (shortname) {
    char *dot = strchr(out, '.');
    if (dot)
      *dot = '\0';
  }
}

/* proto_dist, as Erlang's -proto_dist: inet_tcp (the default), inet_tls
 * (or tls), inet6_tcp, inet6_tls. */
static void dist_proto(lua_State *L, mb_dist_config_t *cfg) {
  static const char *const names[] = {
      "inet_tcp", "tcp", "inet_tls", "tls", "inet6_tcp", "inet6_tls", NULL};
  lua_getfield(L, 1, "proto_dist");
  int k = lua_isnil(L, -1) ? 0 : luaL_checkoption(L, -1, NULL, names);
  lua_pop(L, 1);
  cfg->tls = k == 2 || k == 3 || k == 5;
  cfg->ipv6 = k >= 4;
}

/* One side of the TLS options, from the table at the top of the stack
 * (its strings stay valid while it is there). */
static void dist_tls_side(lua_State *L, const char *side,
                          mb_dist_tls_opts_t *o) {
  o->verify = -1;
  if (lua_getfield(L, -1, side) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "certfile");
  o->certfile = lua_tostring(L, -1);
  lua_getfield(L, -2, "keyfile");
  o->keyfile = lua_tostring(L, -1);
  lua_getfield(L, -3, "cacertfile");
  o->cacertfile = lua_tostring(L, -1);
  lua_getfield(L, -4, "verify");
  if (lua_isstring(L, -1))
    o->verify = strcmp(lua_tostring(L, -1), "verify_peer") == 0;
  lua_getfield(L, -5, "fail_if_no_peer_cert");
  o->fail_if_no_peer_cert = lua_toboolean(L, -1);
  lua_pop(L, 6);
}

/* ssl_dist_opts (a table) or ssl_dist_optfile (Erlang's file), checked by
 * moonbeam.dist_tls: the options stay at the top of the stack until the
 * start has read them. */
static void dist_tls_opts(lua_State *L, mb_dist_config_t *cfg) {
  lua_getfield(L, 1, "ssl_dist_opts");
  lua_getfield(L, 1, "ssl_dist_optfile");
  bool table = !lua_isnil(L, -2), file = !lua_isnil(L, -1);
  if (!cfg->tls) {
    lua_pop(L, 2);
    lua_pushnil(L);
    return;
  }
  if (table == file)
    luaL_error(L, "start_distribution: TLS distribution needs ssl_dist_optfile "
                  "or ssl_dist_opts (one of them)");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonbeam.dist_tls");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, table ? "options" : "read_optfile");
  lua_pushvalue(L, table ? -4 : -3);
  lua_call(L, 1, 2);
  if (lua_isnil(L, -2))
    luaL_error(L, "start_distribution: %s", lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_replace(L, -4);
  lua_pop(L, 2);
  dist_tls_side(L, "server", &cfg->tls_server);
  dist_tls_side(L, "client", &cfg->tls_client);
}

/* The listen ports and address: Erlang's kernel parameters
 * inet_dist_listen_min, inet_dist_listen_max, inet_dist_use_interface. */
static void dist_listen(lua_State *L, mb_dist_config_t *cfg) {
  lua_getfield(L, 1, "inet_dist_listen_min");
  cfg->listen_min = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "inet_dist_listen_max");
  cfg->listen_max = (int)luaL_optinteger(L, -1, 0);
  lua_pop(L, 2);
  if (cfg->listen_min < 0 || cfg->listen_min > 65535 || cfg->listen_max < 0 ||
      cfg->listen_max > 65535 ||
      (cfg->listen_max > 0 && cfg->listen_max < cfg->listen_min))
    luaL_error(L, "start_distribution: inet_dist_listen_min and "
                  "inet_dist_listen_max must be ports, min <= max");
}

/* The default pg scope, registered as pg before start_distribution
 * returns, so that the caller's next pg.join finds it. */
static void start_default_scope(lua_State *L) {
  mb_pid_t scope;
  if (mb_proc_spawn_mfa("moonbeam.pg", "run_default", NULL, &scope) != 0)
    return;
  lua_pushcfunction(L, mb_lua_register);
  lua_pushliteral(L, "pg");
  mb_lua_push_pid(L, scope);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    mb_log(MB_LOG_WARNING, "dist: the default pg scope is not started: %s",
           lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* start_distribution{name = "a@host" | sname = "a", cookie =, hidden =,
 * ticktime =, port =, epmd_port =, proto_dist =, ssl_dist_optfile =,
 * ssl_dist_opts =, inet_dist_listen_min =, inet_dist_listen_max =,
 * inet_dist_use_interface =, connect_all =, start_pg =} -> the node name
 * (an atom).  The one place that starts distribution: the launcher calls
 * it too. */
int lmb_start_distribution(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  ensure_node(L);
  lua_getfield(L, 1, "start_pg");
  bool start_pg = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 1);
  char name[600], host[256], cookie[256];
  lua_getfield(L, 1, "name");
  lua_getfield(L, 1, "sname");
  size_t len;
  const char *lname = lua_tolstring(L, -2, &len), *sname = lua_tostring(L, -1);
  if ((lname == NULL) == (sname == NULL))
    return luaL_argerror(L, 1, "give name or sname");
  if (lname == NULL)
    lua_tolstring(L, -1, &len);
  if (strlen(lname ? lname : sname) != len)
    return luaL_argerror(L, 1, "node name with a NUL byte");
  const char *base = lname ? lname : sname;
  if (strchr(base, '@') != NULL) {
    snprintf(name, sizeof name, "%s", base);
  } else {
    host_name(host, sizeof host, sname != NULL);
    snprintf(name, sizeof name, "%s@%s", base, host);
  }
  lua_pop(L, 2);
  mb_dist_config_t cfg = {0};
  cfg.name = name;
  lua_getfield(L, 1, "cookie");
  if (lua_isstring(L, -1)) {
    snprintf(cookie, sizeof cookie, "%s", lua_tostring(L, -1));
  } else {
    int err = mb_dist_default_cookie(cookie, sizeof cookie);
    if (err)
      return luaL_error(L,
                        "start_distribution: no cookie (~/.erlang.cookie: %s)",
                        mb_strerror(err));
  }
  cfg.cookie = cookie;
  lua_getfield(L, 1, "hidden");
  cfg.hidden = lua_toboolean(L, -1);
  lua_getfield(L, 1, "ticktime");
  cfg.ticktime = (unsigned)luaL_optinteger(L, -1, 60);
  lua_getfield(L, 1, "port");
  cfg.port = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "epmd_port");
  cfg.epmd_port = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "connect_all");
  bool connect_all = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 6);
  dist_proto(L, &cfg);
  dist_listen(L, &cfg);
  lua_getfield(L, 1, "inet_dist_use_interface");
  cfg.use_interface = luaL_optstring(L, -1, NULL); /* stays on the stack */
  dist_tls_opts(L, &cfg);                          /* stays on the stack */
  int err = mb_dist_spawn_handler("moonbeam.rpc", "spawned");
  if (err == 0)
    err = mb_dist_start(&cfg);
  if (err == MB_EEXIST)
    return luaL_error(
        L, "start_distribution: the name %s is already registered with epmd",
        name);
  if (err == MB_EINVAL && (cfg.tls || cfg.use_interface || cfg.listen_min))
    return luaL_error(L, "start_distribution: bad distribution settings (the "
                         "log says which)");
  if (err == MB_ELIMIT)
    return luaL_error(L, "start_distribution: no free port to listen on");
  check_err(L, err, "start_distribution");
  /* net_kernel answers other nodes' pings and starts global, which meshes
   * the cluster (unless connect_all is false; a hidden node never does);
   * moonbeam.rpc runs what their spawn requests ask for. */
  lua_settop(L, 0);
  lua_pushboolean(L, connect_all && !cfg.hidden);
  mb_proc_spawn_mfa("moonbeam.net_kernel", "start",
                    encode_args(L, 1, "start_distribution"), NULL);
  if (start_pg)
    start_default_scope(L);
  lua_settop(L, 0);
  return mb_lua_node(L);
}

/* epmd_port() -> the port this node asks EPMD on (net_adm.names). */
static int l_epmd_port(lua_State *L) {
  int port = mb_epmd_port();
  check_err(L, port < 0 ? port : 0, "epmd_port");
  lua_pushinteger(L, port);
  return 1;
}

/* ---- logging ---- */

static const char *const level_names[] = {"debug",   "info",  "notice",
                                          "warning", "error", NULL};

static const char *const report_kinds[] = {"crash_report", "supervisor_report",
                                           "progress_report", NULL};

/* log(level, text, [kind]): kind is a report's, see mb_log_event. */
static int l_log(lua_State *L) {
  int level = luaL_checkoption(L, 1, NULL, level_names);
  const char *kind = NULL;
  if (!lua_isnoneornil(L, 3))
    kind = report_kinds[luaL_checkoption(L, 3, NULL, report_kinds)];
  size_t len;
  const char *text = mb_lua_tostring(L, 2, &len);
  mb_pid_t self = mb_lua_self_pid(L);
  char pid[48];
  if (self != 0)
    snprintf(pid, sizeof pid, "<0.%u.%u>", MB_PID_ID(self),
             MB_PID_SERIAL(self));
  mb_log_event((mb_log_level_t)level, self != 0 ? pid : NULL, kind, text, len);
  return 0;
}

/* log_level([level]) -> the previous level */
static int l_log_level(lua_State *L) {
  mb_log_level_t old = mb_log_get_level();
  if (!lua_isnoneornil(L, 1))
    mb_log_set_level((mb_log_level_t)luaL_checkoption(L, 1, NULL, level_names));
  lua_pushstring(L, level_names[old]);
  return 1;
}

/* ---- the host side: starting a node and running a process ---- */

static int l_start(lua_State *L) {
  mb_config_t cfg = {0};
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "schedulers");
    cfg.schedulers = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "max_heap");
    cfg.max_heap = (size_t)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "run_timeout");
    run_timeout_ms = (long)luaL_optinteger(L, -1, DEFAULT_RUN_TIMEOUT_MS);
    lua_getfield(L, 1, "max_processes");
    lua_Integer maxp = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, maxp >= 0, 1, "max_processes must not be negative");
    cfg.max_processes = (size_t)maxp;
    lua_pop(L, 4);
  }
  if (mb_node_started()) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "node already started");
    return 2;
  }
  check_err(L, start_node(L, &cfg), "start");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_schedulers(lua_State *L) {
  lua_pushinteger(L, mb_node_schedulers());
  return 1;
}

/* Raise the exit reason of a crashed process in the caller. */
static int raise_reason(lua_State *L) {
  if (mb_lua_is_tuple(L, -1)) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    if (lua_type(L, -1) == LUA_TSTRING) {
      mb_lua_tostring(L, -2, NULL);
      lua_pushfstring(L, "process crashed: %s\n%s", lua_tostring(L, -1),
                      lua_tostring(L, -2));
      return lua_error(L);
    }
    lua_pop(L, 2);
  }
  return lua_error(L);
}

/* run(fn, ...): spawn fn(...) as a process, wait for it, return what it
 * returned; raise its crash reason if it crashed. */
static int l_run(lua_State *L) {
  if (mb_lua_self_pid(L) != 0)
    return luaL_error(L, "run: cannot be called inside a process (use spawn)");
  ensure_node(L);
  mb_spawn_opts_t o = {0};
  int first = spawn_target(L, &o, "run");
  o.args = encode_args(L, first, "run");
  mb_waiter_t *w = NULL;
  o.waiter = &w;
  check_err(L, mb_proc_spawn_opts(&o, NULL), "run");
  mb_msg_t *reason = NULL;
  int normal = 0;
  int err = mb_waiter_wait(w, run_timeout_ms, &reason, &normal);
  mb_waiter_free(w);
  if (err == MB_ETIMEDOUT)
    return luaL_error(L, "run: process did not finish within %d ms",
                      (int)run_timeout_ms);
  check_err(L, err, "run");
  lua_settop(L, 0);
  mb_msg_decode(L, reason);
  mb_msg_free(reason);
  if (!normal)
    return raise_reason(L);
  lua_getfield(L, 1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, 1, i);
  return n;
}

static int l_names(lua_State *L);

/* send(dest, msg): a port or a socket takes Erlang's port messages
 * (lsocket.c); any other destination goes to the core's send. */
static int l_send(lua_State *L) {
  return mb_lua_send_or(L, mb_lsocket_port_send);
}

/* Every Lua function of the module: the core's entry points (send through
 * l_send), then the binding's own. */
#define mb_lua_send l_send
static const luaL_Reg funcs[] = {
#define XX(name) {#name, mb_lua_##name},
    MB_LUA_ENTRY_POINTS(XX)
#undef XX
        {"spawn", l_spawn},
    {"spawn_link", l_spawn_link},
    {"spawn_monitor", l_spawn_monitor},
    {"spawn_opt", l_spawn_opt},
    {"log", l_log},
    {"log_level", l_log_level},
    {"names", l_names},
    {"start_distribution", lmb_start_distribution},
    {"epmd_port", l_epmd_port},
    {"is_alive", l_is_alive},
    {"process_count", l_process_count},
    {"process_limit", l_process_limit},
    {"monotonic_time", l_monotonic_time},
    {"start", l_start},
    {"schedulers", l_schedulers},
    {"run", l_run},
    {"gen_serve", mb_lgen_serve},
    {"gen_init", mb_lgen_init},
    {NULL, NULL}};
#undef mb_lua_send

/* The module's functions are set on first use, so that a process that
 * uses two of them does not pay for a table of all of them. */
static int atom_index(lua_State *L) {
  mb_lua_atom(L);
  lua_pushvalue(L, 1); /* the name, now at 1 */
  lua_pushvalue(L, -2);
  lua_rawset(L, lua_upvalueindex(1));
  return 1;
}

/* mb.atom is a table: mb.atom("ok") and mb.atom.ok both give the atom. */
static void push_atom_table(lua_State *L) {
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, mb_lua_atom);
  lua_setfield(L, -2, "__call");
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, atom_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}

static luaL_Reg sorted[sizeof funcs / sizeof funcs[0]];
static size_t nsorted;
static uv_once_t sort_once = UV_ONCE_INIT;

static int by_name(const void *a, const void *b) {
  return strcmp(((const luaL_Reg *)a)->name, ((const luaL_Reg *)b)->name);
}

static void sort_funcs(void) {
  for (const luaL_Reg *f = funcs; f->name; f++)
    sorted[nsorted++] = *f;
  qsort(sorted, nsorted, sizeof sorted[0], by_name);
}

static int lazy_field(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k == NULL)
    return 0;
  if (strcmp(k, "atom") == 0) {
    push_atom_table(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, k);
    return 1;
  }
  if (strcmp(k, "version") == 0) {
    lua_pushliteral(L, MB_VERSION);
    return 1;
  }
  uv_once(&sort_once, sort_funcs);
  luaL_Reg key = {k, NULL};
  const luaL_Reg *f = bsearch(&key, sorted, nsorted, sizeof sorted[0], by_name);
  if (f == NULL)
    return 0;
  lua_pushcfunction(L, f->func);
  lua_pushvalue(L, -1);
  lua_setfield(L, 1, k);
  return 1;
}

/* names(): every function of the module, for pairs-minded callers. */
static int l_names(lua_State *L) {
  lua_newtable(L);
  int i = 0;
  for (const luaL_Reg *f = funcs; f->name; f++) {
    lua_pushstring(L, f->name);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* Set once the node knows the preloads below: a process opening the
 * module again (every spawned one that uses it) then skips them, as
 * there is nothing of its own state to set up for them. */
static atomic_bool preloaded;

int luaopen_moonbeam(lua_State *L) {
  if (!atomic_load_explicit(&preloaded, memory_order_acquire) ||
      mb_lua_self_pid(L) == 0) {
    mb_node_preload("moonbeam", luaopen_moonbeam);
    mb_lsocket_register(L);
    atomic_store_explicit(&preloaded, true, memory_order_release);
  }
  /* Room for the first function used (lazy_field), not a rehash. */
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_field);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
