/* The launcher's command line and settings.
 *
 * A setting can come from four places; the first of them that sets it wins:
 *
 *   1. a flag                  --schedulers 4
 *   2. an environment variable MOONBEAM_SCHEDULERS=4
 *   3. the config file         --config node.lua, returning {schedulers = 4}
 *   4. the default
 *
 * The config file is the base shared by every run, a variable is set per
 * machine or container, a flag per run: each overrides the one below, as a
 * deployment expects.  Lists (--rocks-tree, --env) follow the same rule,
 * except that the --env flags are laid over the file's `env` key by key. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "../core/moonbeam.h"
#include "launcher.h"

/* ---- commands and options ---- */

typedef struct {
  const char *name;
  cli_command_t command;
  const char *usage;
  const char *about;
} command_t;

static const command_t commands[] = {
    {"run", CLI_RUN, "moonbeam run [options] script.lua [args...]",
     "Runs script.lua as the first process of a new node, with args in `...`\n"
     "and in the global `arg`, and exits when that process ends: with status\n"
     "0 if it returned, 1 if it crashed.  Other processes do not keep the\n"
     "node alive.  `moonbeam script.lua` is the same as `moonbeam run\n"
     "script.lua`.  Options go before the script: the arguments after it\n"
     "are the script's.\n"},
    {"start", CLI_START, "moonbeam start [options] app.lua [options]",
     "Starts a node from an application file: app.lua returns an\n"
     "application spec (a table, as in <name>.app.lua) or the name of an\n"
     "application to find on the path.  The file's directory is put on the\n"
     "path of every process.  The application and those it depends on are\n"
     "started (as permanent, unless --type says otherwise), then the node\n"
     "runs until SIGTERM or SIGINT, which stop the applications, last\n"
     "started first, and exit 0.  If a permanent application dies, the node\n"
     "stops with status 1; if one cannot start, the launcher says why and\n"
     "exits 1.\n"},
    {"eval", CLI_EVAL, "moonbeam eval [options] CODE [args...]",
     "Runs CODE, an expression or statements, as the first process of a new\n"
     "node, with args in `...` and `mb` bound to the moonbeam module, prints\n"
     "what it returns (as the shell does), and exits: 0, or 1 if it raised.\n"},
    {"shell", CLI_SHELL, "moonbeam shell [options] [app.lua]",
     "An interactive shell: a read-eval-print loop that is itself a process.\n"
     "With app.lua, starts that application first, as `start` does.  Type\n"
     "help() in the shell for its helpers; q() or Ctrl-D leaves it, stopping\n"
     "the node as SIGTERM would.  With --remsh NODE, a shell on a running\n"
     "node: lines are read here and evaluated there.\n"},
    {"epmd-names", CLI_EPMD_NAMES, "moonbeam epmd-names [options]",
     "Lists the node names registered with epmd on this host.\n"},
    {"reload", CLI_RELOAD, "moonbeam reload [options] NODE module...",
     "Loads each module again on the running node NODE and on every node\n"
     "it is connected to, from the files their package.path finds\n"
     "(moonbeam.code.reload_cluster), and prints a line per node and\n"
     "module: its new version, or the error that left the old one running.\n"
     "Exits 0 if every module loaded everywhere, else 1.  The launcher's\n"
     "own node is hidden, named reload<pid>@host.\n"},
    {"ping", CLI_PING, "moonbeam ping [options] [NODE]",
     "Asks NODE whether it is up, as net_adm:ping/1: prints pong and exits\n"
     "0, or prints pang and exits 1.  Without NODE, the node of --name, or\n"
     "of --sname on this host (the config file may set them).  The\n"
     "launcher's own node is hidden, named ping<pid>@host.\n"},
    {"stop", CLI_STOP, "moonbeam stop [options] [NODE]",
     "Stops NODE as SIGTERM does: its applications stop, last started\n"
     "first, and its launcher exits 0.  Waits until NODE is down; exits 1\n"
     "if it cannot be reached.\n"},
    {"rpc", CLI_RPC, "moonbeam rpc [options] [NODE] CODE",
     "Evaluates CODE, an expression or statements, on NODE (with `mb`\n"
     "bound), and prints what it returns, as eval does.  Exits 1 if NODE\n"
     "cannot be reached or CODE raises there (the error is printed).\n"},
    {"pid", CLI_PID, "moonbeam pid [options] [NODE]",
     "Prints the operating system pid of the launcher running NODE.\n"},
    {"remote", CLI_REMOTE, "moonbeam remote [options] [NODE]",
     "A shell on the running NODE: the same as shell --remsh NODE.\n"},
    {"release", CLI_RELEASE, "moonbeam release [options] app.lua --output DIR",
     "Builds a release of the application file in DIR: this launcher,\n"
     "moonbeam's modules, the application file's directory, the LuaRocks\n"
     "trees of --rocks-tree, the --config file (else one that names the\n"
     "node after the application) as etc/config.lua, and bin/<app>, a start\n"
     "script: start|stop|remote|rpc CODE|pid|ping.  DIR may be moved; it\n"
     "needs only the shared libraries the launcher links to.\n"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

enum {
  OPT_SCHEDULERS,
  OPT_MAX_HEAP,
  OPT_MAX_PROCESSES,
  OPT_SHUTDOWN_TIME,
  OPT_LOG_LEVEL,
  OPT_LOG_FORMAT,
  OPT_LOG_FILE,
  OPT_LOG_FILE_SIZE,
  OPT_LOG_FILES,
  OPT_CONFIG,
  OPT_ROCKS_TREE,
  OPT_ENV,
  OPT_TYPE,
  OPT_SNAME,
  OPT_NAME,
  OPT_COOKIE,
  OPT_REMSH,
  OPT_HIDDEN,
  OPT_OUTPUT,
  OPT_PROTO_DIST,
  OPT_SSL_DIST_OPTFILE,
  OPT_DIST_LISTEN_MIN,
  OPT_DIST_LISTEN_MAX,
  OPT_DIST_USE_INTERFACE,
  OPT_CONNECT_ALL,
  OPT_DASHBOARD,
  OPT_DASHBOARD_TOKEN,
  OPT_CONNECT,
  OPT_HOSTS,
  OPT_HELP,
  OPT_VERSION,
  OPT_COUNT
};

/* Which settings have been given, by flag or by variable: the config file
 * fills in only the others.  One bit each in a 64-bit mask. */
#define GIVEN(opt) (UINT64_C(1) << (opt))
_Static_assert(OPT_COUNT <= 64, "more settings than bits in cli->given");

#define FOR(cmd) (1u << (cmd))
#define NODE (FOR(CLI_RUN) | FOR(CLI_START) | FOR(CLI_EVAL) | FOR(CLI_SHELL))
#define APPS (FOR(CLI_START) | FOR(CLI_SHELL))
#define TO_NODE                                                                \
  (FOR(CLI_PING) | FOR(CLI_STOP) | FOR(CLI_RPC) | FOR(CLI_PID) |               \
   FOR(CLI_REMOTE))
#define ALL                                                                    \
  (NODE | FOR(CLI_EPMD_NAMES) | FOR(CLI_RELOAD) | TO_NODE | FOR(CLI_RELEASE))

typedef struct {
  const char *name;
  const char *arg; /* what the value is, or NULL for a flag without one */
  unsigned commands;
  int id;
  const char *var;     /* the environment variable, if there is one */
  const char *expects; /* what a good value is, for the error */
  const char *help;
} option_t;

static const option_t options[] = {
    {"--schedulers", "N", NODE, OPT_SCHEDULERS, "MOONBEAM_SCHEDULERS",
     "a number of threads from 1 to 1024",
     "scheduler threads (default: one per core)"},
    {"--max-heap", "SIZE", NODE, OPT_MAX_HEAP, "MOONBEAM_MAX_HEAP",
     "a size in bytes (or with K, M, G)",
     "memory limit of each process: bytes, or with K, M, G\n"
     "(default: none)"},
    {"--max-processes", "N", NODE, OPT_MAX_PROCESSES, "MOONBEAM_MAX_PROCESSES",
     "a number from 1 to 134217727",
     "processes alive at once, as Erlang's +P\n"
     "(default: 1048576)"},
    {"--shutdown-time", "MS", NODE, OPT_SHUTDOWN_TIME, "MOONBEAM_SHUTDOWN_TIME",
     "milliseconds from 1 to 2147483647",
     "how long SIGTERM waits for the node to stop\n"
     "cleanly before it exits anyway (default: 30000)"},
    {"--log-level", "LEVEL", NODE, OPT_LOG_LEVEL, "MOONBEAM_LOG_LEVEL",
     "debug, info, notice, warning or error",
     "debug, info (default), notice, warning or error"},
    {"--log-format", "FORMAT", NODE, OPT_LOG_FORMAT, "MOONBEAM_LOG_FORMAT",
     "time, date or json",
     "log lines: time (default: 12:00:00.000 [info]),\n"
     "date (2026-12-01 12:00:00.000 [info]) or json"},
    {"--log-file", "FILE", NODE, OPT_LOG_FILE, "MOONBEAM_LOG_FILE", "a file",
     "log to FILE instead of stderr, rotated by size"},
    {"--log-file-size", "SIZE", NODE, OPT_LOG_FILE_SIZE,
     "MOONBEAM_LOG_FILE_SIZE", "a size in bytes (or with K, M, G)",
     "rotate the log file at SIZE (default: 10M)"},
    {"--log-files", "N", NODE, OPT_LOG_FILES, "MOONBEAM_LOG_FILES",
     "a number from 0 to 100",
     "rotated log files kept: FILE.1 .. FILE.N (default 5)"},
    {"--config", "FILE", NODE | TO_NODE | FOR(CLI_RELEASE), OPT_CONFIG,
     "MOONBEAM_CONFIG", NULL, "a Lua file that returns settings"},
    {"--rocks-tree", "DIR", NODE | FOR(CLI_RELEASE), OPT_ROCKS_TREE,
     "MOONBEAM_ROCKS_TREE", "a directory",
     "find modules in this LuaRocks tree too (repeatable;\n"
     "the variable takes DIR:DIR...)"},
    {"--env", "APP.KEY=VALUE", NODE, OPT_ENV, NULL, "APP.KEY=VALUE",
     "set a value of an application's environment\n"
     "(repeatable; VALUE: a Lua literal, else a string)"},
    {"--type", "TYPE", APPS, OPT_TYPE, NULL,
     "permanent, transient or temporary",
     "start type: permanent (default), transient or\n"
     "temporary"},
    {"--sname", "NAME", NODE | TO_NODE, OPT_SNAME, NULL, NULL,
     "distributed node, short name (NAME@host)"},
    {"--name", "NAME", NODE | TO_NODE, OPT_NAME, NULL, NULL,
     "distributed node, long name (NAME@host.domain or NAME@ip)"},
    {"--cookie", "COOKIE", ALL, OPT_COOKIE, NULL, NULL,
     "distribution cookie (default: ~/.erlang.cookie)"},
    {"--remsh", "NODE", FOR(CLI_SHELL), OPT_REMSH, NULL, NULL,
     "a shell on a running node"},
    {"--hidden", NULL, NODE, OPT_HIDDEN, NULL, NULL,
     "a hidden node: it joins no cluster by connecting"},
    {"--output", "DIR", FOR(CLI_RELEASE), OPT_OUTPUT, NULL, NULL,
     "release: the directory to build the release in"},
    {"--proto-dist", "PROTO", NODE, OPT_PROTO_DIST, NULL,
     "inet_tcp, inet_tls (or tls), inet6_tcp or inet6_tls",
     "distribution over inet_tcp (default), inet_tls\n"
     "(or tls), inet6_tcp or inet6_tls, as erl -proto_dist"},
    {"--ssl-dist-optfile", "FILE", NODE, OPT_SSL_DIST_OPTFILE, NULL, NULL,
     "TLS distribution's options, in Erlang's format\n"
     "(as erl -ssl_dist_optfile)"},
    {"--inet-dist-listen-min", "PORT", NODE, OPT_DIST_LISTEN_MIN, NULL,
     "a port from 1 to 65535",
     "distribution listens on the first free port\n"
     "from PORT (as the kernel's inet_dist_listen_min)"},
    {"--inet-dist-listen-max", "PORT", NODE, OPT_DIST_LISTEN_MAX, NULL,
     "a port from 1 to 65535", "... up to PORT (inet_dist_listen_max)"},
    {"--inet-dist-use-interface", "IP", NODE, OPT_DIST_USE_INTERFACE, NULL,
     NULL,
     "distribution listens on this address only\n"
     "(default: every interface)"},
    {"--connect-all", "BOOL", NODE, OPT_CONNECT_ALL, NULL, "true or false",
     "connect to every node a peer knows, as Erlang's\n"
     "-connect_all (default: true)"},
    {"--dashboard", "IP:PORT", APPS, OPT_DASHBOARD, "MOONBEAM_DASHBOARD",
     "an address IP:PORT",
     "serve the dashboard on this address (a loopback\n"
     "one, such as 127.0.0.1:4040, unless a token is set)"},
    {"--dashboard-token", "TOKEN", APPS, OPT_DASHBOARD_TOKEN,
     "MOONBEAM_DASHBOARD_TOKEN", "a token of 8 to 256 characters",
     "the dashboard's access token (needed to listen on an\n"
     "address other than loopback)"},
    {"--connect", "NODE,...", NODE, OPT_CONNECT, NULL, "node names (name@host)",
     "connect to these nodes at boot and keep them\n"
     "connected (repeatable; needs --sname or --name)"},
    {"--hosts", "FILE", NODE, OPT_HOSTS, NULL, NULL,
     "the host file (.hosts.erlang's format): connect\n"
     "to the nodes of its hosts at boot"},
    {"--help", NULL, ALL, OPT_HELP, NULL, NULL, "print this help and exit"},
    {"--version", NULL, ALL, OPT_VERSION, NULL, NULL,
     "print the version and exit"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

static const char *const level_names[] = {"debug",   "info",  "notice",
                                          "warning", "error", NULL};
static const char *const log_formats[] = {"time", "date", "json", NULL};
static const char *const start_types[] = {"permanent", "transient", "temporary",
                                          NULL};

void cli_say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("moonbeam: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- help ---- */

static void print_options(FILE *out, unsigned mask) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    const option_t *o = &options[i];
    if (!(o->commands & mask))
      continue;
    char head[64];
    snprintf(head, sizeof head, "%s%s%s", o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
    fprintf(out, "  %-26s", head);
    if (strlen(head) > 26)
      fprintf(out, "\n  %26s", "");
    for (const char *p = o->help; *p; p++) {
      fputc(*p, out);
      if (*p == '\n')
        fprintf(out, "  %26s", "");
    }
    if (o->var)
      fprintf(out, "\n  %26s$%s", "", o->var);
    fputc('\n', out);
  }
}

static const char general_usage[] =
    "usage: moonbeam [options] COMMAND [args...]\n"
    "       moonbeam [options] script.lua [args...]\n"
    "\n"
    "commands:\n"
    "  run script.lua [args...]  run a script as the first process\n"
    "  start app.lua             start a node from an application file\n"
    "  eval CODE [args...]       evaluate Lua code and print the result\n"
    "  shell [app.lua]           an interactive shell\n"
    "  epmd-names                list the names registered with epmd\n"
    "  reload NODE module...     load modules again on a running cluster\n"
    "  ping|stop|pid [NODE]      is NODE up; stop it; its OS pid\n"
    "  rpc [NODE] CODE           evaluate Lua code on NODE, print the result\n"
    "  remote [NODE]             a shell on NODE (shell --remsh NODE)\n"
    "  release app.lua           a self-contained release (--output DIR)\n"
    "  help [COMMAND]            help on a command (or COMMAND --help)\n"
    "\n"
    "options (before or after the command; for run and eval, before the\n"
    "script or the code):\n";

static const char general_notes[] =
    "\n"
    "A setting is taken from its flag, else its environment variable,\n"
    "else the config file, else the default.  Processes find modules\n"
    "in moonbeam's stdlib, then the --rocks-tree trees, then along\n"
    "LUA_PATH_5_4 or LUA_PATH (and LUA_CPATH_5_4 or LUA_CPATH), as\n"
    "`luarocks path` sets them.  See docs/operations.md.\n";

static void usage(FILE *out) {
  fputs(general_usage, out);
  print_options(out, ALL);
  fputs(general_notes, out);
}

static void command_help(FILE *out, const command_t *c) {
  fprintf(out, "usage: %s\n\n%s\noptions:\n", c->usage, c->about);
  print_options(out, FOR(c->command));
}

static const command_t *find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  return NULL;
}

/* ---- values ---- */

static int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* A size: bytes, or a number with K, M or G (powers of 1024). */
static int parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  if (!isdigit((unsigned char)*s))
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  unsigned shift = 0;
  switch (toupper((unsigned char)*end)) {
  case 'K':
    shift = 10;
    end++;
    break;
  case 'M':
    shift = 20;
    end++;
    break;
  case 'G':
    shift = 30;
    end++;
    break;
  default:
    break;
  }
  if (errno || *end || v > (SIZE_MAX >> shift))
    return -1;
  *out = (size_t)(v << shift);
  return 0;
}

static int find_name(const char *const names[], const char *s) {
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], s) == 0)
      return i;
  return -1;
}

static int push_str(const char ***list, int *n, const char *s) {
  const char **l = realloc(*list, (size_t)(*n + 1) * sizeof *l);
  if (l == NULL)
    return -1;
  l[(*n)++] = s;
  *list = l;
  return 0;
}

/* --connect a@h,b@h: each name, kept in a copy the list owns. */
static int add_nodes(cli_t *cli, const char *value) {
  char *copy = strdup(value), *save = NULL;
  if (copy == NULL)
    return -1;
  int n = 0;
  for (char *p = strtok_r(copy, ",", &save); p;
       p = strtok_r(NULL, ",", &save)) {
    const char *at = strchr(p, '@');
    if (at == NULL || at == p || at[1] == '\0' || strchr(at + 1, '@') ||
        push_str(&cli->connects, &cli->nconnects, p) != 0) {
      free(copy);
      return -1;
    }
    n++;
  }
  if (n == 0) {
    free(copy);
    return -1;
  }
  /* The names point into the copy: it lives as long as the launcher. */
  return 0;
}

/* Set one setting from `value`; `from` names where it came from, for the
 * error.  Returns 0, or -1 (the error printed). */
static int apply(cli_t *cli, int id, const char *value, const char *from) {
  long n;
  int k;
  switch (id) {
  case OPT_SCHEDULERS:
    if (parse_int(value, 1, 1024, &n) != 0)
      goto bad;
    cli->schedulers = (int)n;
    break;
  case OPT_MAX_HEAP:
    if (parse_size(value, &cli->max_heap) != 0)
      goto bad;
    break;
  case OPT_MAX_PROCESSES:
    if (parse_int(value, 1, 134217727, &n) != 0)
      goto bad;
    cli->max_processes = (size_t)n;
    break;
  case OPT_SHUTDOWN_TIME:
    if (parse_int(value, 1, 2147483647, &n) != 0)
      goto bad;
    cli->shutdown_time = n;
    break;
  case OPT_LOG_LEVEL:
    if ((k = find_name(level_names, value)) < 0)
      goto bad;
    cli->log_level = k;
    break;
  case OPT_LOG_FORMAT:
    if ((k = find_name(log_formats, value)) < 0)
      goto bad;
    cli->log_format = k;
    break;
  case OPT_LOG_FILE:
    if (*value == '\0')
      goto bad;
    cli->log_file = value;
    break;
  case OPT_LOG_FILE_SIZE:
    if (parse_size(value, &cli->log_file_size) != 0 || cli->log_file_size == 0)
      goto bad;
    break;
  case OPT_LOG_FILES:
    if (parse_int(value, 0, 100, &n) != 0)
      goto bad;
    cli->log_files = (int)n;
    break;
  case OPT_CONFIG:
    cli->config = value;
    break;
  case OPT_ROCKS_TREE:
    if (*value == '\0')
      goto bad;
    if (push_str(&cli->trees, &cli->ntrees, value) != 0)
      goto nomem;
    break;
  case OPT_ENV: {
    const char *dot = strchr(value, '.'), *eq = strchr(value, '=');
    if (dot == NULL || eq == NULL || dot == value || eq < dot + 2)
      goto bad;
    if (push_str(&cli->envs, &cli->nenvs, value) != 0)
      goto nomem;
    break;
  }
  case OPT_TYPE:
    if (find_name(start_types, value) < 0)
      goto bad;
    cli->start_type = value;
    break;
  case OPT_SNAME:
    cli->sname = value;
    break;
  case OPT_NAME:
    cli->name = value;
    break;
  case OPT_COOKIE:
    cli->cookie = value;
    break;
  case OPT_REMSH:
    cli->remsh = value;
    break;
  case OPT_HIDDEN:
    cli->hidden = 1;
    break;
  case OPT_OUTPUT:
    cli->output = value;
    break;
  case OPT_PROTO_DIST: {
    static const char *const protos[] = {
        "inet_tcp", "tcp", "inet_tls", "tls", "inet6_tcp", "inet6_tls", NULL};
    if (find_name(protos, value) < 0)
      goto bad;
    cli->proto_dist = value;
    break;
  }
  case OPT_SSL_DIST_OPTFILE:
    cli->ssl_dist_optfile = value;
    break;
  case OPT_DIST_LISTEN_MIN:
  case OPT_DIST_LISTEN_MAX:
    if (parse_int(value, 1, 65535, &n) != 0)
      goto bad;
    *(id == OPT_DIST_LISTEN_MIN ? &cli->dist_listen_min
                                : &cli->dist_listen_max) = (int)n;
    break;
  case OPT_DIST_USE_INTERFACE:
    cli->dist_use_interface = value;
    break;
  case OPT_CONNECT_ALL:
    if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
      goto bad;
    cli->no_connect_all = strcmp(value, "false") == 0;
    break;
  case OPT_DASHBOARD:
    if (*value == '\0')
      goto bad;
    cli->dashboard = value;
    break;
  case OPT_DASHBOARD_TOKEN:
    if (strlen(value) < 8 || strlen(value) > 256)
      goto bad;
    cli->dashboard_token = value;
    break;
  case OPT_CONNECT:
    if (add_nodes(cli, value) != 0)
      goto bad;
    break;
  case OPT_HOSTS:
    cli->hosts = value;
    break;
  default:
    break;
  }
  return 0;
bad:
  for (size_t i = 0; i < NOPTIONS; i++)
    if (options[i].id == id)
      cli_say("%s expects %s, got '%s'", from, options[i].expects, value);
  return -1;
nomem:
  cli_say("out of memory");
  return -1;
}

/* ---- the command line ---- */

static const option_t *find_option(const char *arg, size_t len) {
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strlen(options[i].name) == len &&
        strncmp(options[i].name, arg, len) == 0)
      return &options[i];
  return NULL;
}

/* The option argv[*i] (--name or --name=value), and its value: argv[*i]'s
 * tail or the next argument, which *i then moves past.  Returns NULL, with
 * the error printed, if it is unknown or its value is missing. */
static const option_t *take_option(int argc, char **argv, int *i,
                                   const char **value) {
  const char *arg = argv[*i];
  const char *eq = strchr(arg, '=');
  size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
  const option_t *o =
      strcmp(arg, "-h") == 0 ? find_option("--help", 6) : find_option(arg, len);
  if (o == NULL) {
    cli_say("unknown option %.*s (see moonbeam --help)", (int)len, arg);
    return NULL;
  }
  *value = NULL;
  if (o->arg == NULL) {
    if (eq != NULL) {
      cli_say("%s takes no value", o->name);
      return NULL;
    }
  } else if (eq != NULL) {
    *value = eq + 1;
  } else if (*i + 1 < argc) {
    *value = argv[++*i];
  } else {
    cli_say("%s expects %s", o->name, o->arg);
    return NULL;
  }
  return o;
}

static int is_option(const char *arg) {
  return (arg[0] == '-' && arg[1] == '-' && arg[2] != '\0') ||
         strcmp(arg, "-h") == 0;
}

/* Parse the option at argv[*i] for command `c` (NULL: before any).
 * Returns -1 to go on, or the status to exit with. */
static int parse_option(cli_t *cli, const command_t *c, int argc, char **argv,
                        int *i) {
  const char *value;
  const option_t *o = take_option(argc, argv, i, &value);
  if (o == NULL)
    return 2;
  if (o->id == OPT_HELP) {
    if (c != NULL)
      command_help(stdout, c);
    else
      usage(stdout);
    return 0;
  }
  if (o->id == OPT_VERSION) {
    printf("moonbeam %s\n", MB_VERSION);
    return 0;
  }
  if (c != NULL && !(o->commands & FOR(c->command))) {
    cli_say("%s is not an option of %s (see moonbeam %s --help)", o->name,
            c->name, c->name);
    return 2;
  }
  if (apply(cli, o->id, value, o->name) != 0)
    return 2;
  cli->given |= GIVEN(o->id);
  return -1;
}

/* Where the command's own arguments start: the first argument after the
 * leading options (whose values are skipped). */
static int skip_options(int argc, char **argv) {
  int i = 1;
  for (; i < argc && is_option(argv[i]); i++) {
    if (strcmp(argv[i], "--") == 0)
      break;
    const char *eq = strchr(argv[i], '=');
    size_t len = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);
    const option_t *o = find_option(argv[i], len);
    if (o != NULL && o->arg != NULL && eq == NULL)
      i++;
  }
  return i;
}

int cli_parse(int argc, char **argv, cli_t *cli) {
  memset(cli, 0, sizeof *cli);
  cli->log_level = -1;
  cli->log_format = -1;
  cli->log_files = -1;
  cli->start_type = "permanent";

  int first = skip_options(argc, argv);
  const command_t *c = NULL;
  int pos = first; /* the command's first argument */
  if (first < argc) {
    if (strcmp(argv[first], "help") == 0) {
      const command_t *h =
          first + 1 < argc ? find_command(argv[first + 1]) : NULL;
      if (first + 1 < argc && h == NULL) {
        cli_say("no command %s (see moonbeam --help)", argv[first + 1]);
        return 2;
      }
      if (h)
        command_help(stdout, h);
      else
        usage(stdout);
      return 0;
    }
    c = find_command(argv[first]);
    if (c != NULL)
      pos = first + 1;
    else
      c = &commands[0]; /* a script: moonbeam script.lua is moonbeam run */
  }
  /* The leading options: with no command, only --help and --version mean
   * anything, and anything else is a usage error below. */
  for (int i = 1; i < first; i++) {
    if (strcmp(argv[i], "--") == 0)
      break;
    int r = parse_option(cli, c, argc, argv, &i);
    if (r >= 0)
      return r;
  }
  if (c == NULL) {
    fprintf(stderr, "usage: moonbeam [options] COMMAND [args...]\n"
                    "       moonbeam [options] script.lua [args...]\n"
                    "(moonbeam --help lists the commands and options)\n");
    return 2;
  }
  cli->command = c->command;

  /* run and eval: options, then the target, then its arguments, untouched.
   * start, shell and epmd-names: options anywhere. */
  bool has_args = c->command == CLI_RUN || c->command == CLI_EVAL ||
                  c->command == CLI_RELOAD;
  bool in_options = true; /* until "--" */
  int npos = 0;
  for (int i = pos; i < argc; i++) {
    if (in_options && strcmp(argv[i], "--") == 0) {
      in_options = false;
      continue;
    }
    if (in_options && is_option(argv[i])) {
      int r = parse_option(cli, c, argc, argv, &i);
      if (r >= 0)
        return r;
      continue;
    }
    if (has_args) {
      cli->target = argv[i];
      cli->args = argv + i + 1;
      cli->nargs = argc - i - 1;
      break;
    }
    if (c->command == CLI_RPC && npos == 1) {
      /* rpc NODE CODE: the node was the first. */
      cli->args = argv + i;
      cli->nargs = 1;
      npos++;
      continue;
    }
    if (++npos > (c->command == CLI_EPMD_NAMES ? 0 : 1)) {
      cli_say("%s: unexpected argument '%s' (see moonbeam %s --help)", c->name,
              argv[i], c->name);
      return 2;
    }
    cli->target = argv[i];
  }
  if (c->command == CLI_RELOAD && cli->target != NULL && cli->nargs == 0) {
    cli_say("reload: no module named (see moonbeam reload --help)");
    return 2;
  }
  if (c->command == CLI_RPC && cli->nargs == 0) {
    /* rpc CODE: the node is --name's or --sname's. */
    if (cli->target == NULL) {
      cli_say("rpc: missing code (see moonbeam rpc --help)");
      return 2;
    }
    static char *code[1];
    code[0] = (char *)cli->target;
    cli->args = code;
    cli->nargs = 1;
    cli->target = NULL;
  }
  if (cli->target == NULL && c->command != CLI_SHELL &&
      c->command != CLI_EPMD_NAMES && !CLI_TO_NODE(c->command)) {
    cli_say("%s: missing %s (see moonbeam %s --help)", c->name,
            c->command == CLI_RUN ? "script"
            : c->command == CLI_START || c->command == CLI_RELEASE
                ? "application file"
            : c->command == CLI_RELOAD ? "node"
                                       : "code",
            c->name);
    return 2;
  }
  return -1;
}

/* ---- environment variables and the config file ---- */

static int from_variables(cli_t *cli) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    const option_t *o = &options[i];
    const char *v = o->var ? getenv(o->var) : NULL;
    if (v == NULL || *v == '\0' || (cli->given & GIVEN(o->id)))
      continue;
    if (o->id == OPT_ROCKS_TREE) {
      /* DIR:DIR..., as PATH is written. */
      char *copy = strdup(v), *save = NULL;
      cli->owned = copy;
      for (char *d = strtok_r(copy, ":", &save); d;
           d = strtok_r(NULL, ":", &save))
        if (apply(cli, o->id, d, o->var) != 0)
          return 1;
    } else if (apply(cli, o->id, v, o->var) != 0) {
      return 1;
    }
    cli->given |= GIVEN(o->id);
  }
  return -1;
}

/* A setting of the config file, as text for `apply`: a string as it is
 * (the settings table, kept for the launcher's life, keeps it alive), or
 * for a number setting a number written out (apply parses it at once). */
static const char *setting_text(lua_State *L, int idx, int id) {
  bool number = id == OPT_SCHEDULERS || id == OPT_MAX_HEAP ||
                id == OPT_MAX_PROCESSES || id == OPT_SHUTDOWN_TIME ||
                id == OPT_LOG_FILE_SIZE || id == OPT_LOG_FILES ||
                id == OPT_DIST_LISTEN_MIN || id == OPT_DIST_LISTEN_MAX;
  if (lua_type(L, idx) == LUA_TSTRING ||
      (number && lua_type(L, idx) == LUA_TNUMBER))
    return lua_tostring(L, idx);
  if (id == OPT_CONNECT_ALL && lua_type(L, idx) == LUA_TBOOLEAN)
    return lua_toboolean(L, idx) ? "true" : "false";
  return NULL;
}

static int file_error(const char *file, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "moonbeam: %s: ", file);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 1;
}

/* A list setting: a string or a list of strings. */
static int file_list(lua_State *L, cli_t *cli, int id, const char *file,
                     const char *key) {
  if (lua_type(L, -1) == LUA_TSTRING)
    return apply(cli, id, lua_tostring(L, -1), key) == 0 ? -1 : 1;
  if (!lua_istable(L, -1))
    return file_error(file, "%s must be a string or a list of strings", key);
  for (lua_Integer k = 1;; k++) {
    int t = lua_rawgeti(L, -1, k);
    if (t == LUA_TNIL) {
      lua_pop(L, 1);
      return -1;
    }
    if (t != LUA_TSTRING)
      return file_error(file, "%s[%d] must be a string", key, (int)k);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays in the table */
    if (apply(cli, id, s, key) != 0)
      return 1;
  }
}

static const struct {
  const char *key;
  int id;
} file_keys[] = {
    {"schedulers", OPT_SCHEDULERS},
    {"max_heap", OPT_MAX_HEAP},
    {"max_processes", OPT_MAX_PROCESSES},
    {"shutdown_time", OPT_SHUTDOWN_TIME},
    {"log_level", OPT_LOG_LEVEL},
    {"log_format", OPT_LOG_FORMAT},
    {"log_file", OPT_LOG_FILE},
    {"log_file_size", OPT_LOG_FILE_SIZE},
    {"log_files", OPT_LOG_FILES},
    {"rocks_tree", OPT_ROCKS_TREE},
    {"sname", OPT_SNAME},
    {"name", OPT_NAME},
    {"cookie", OPT_COOKIE},
    {"proto_dist", OPT_PROTO_DIST},
    {"ssl_dist_optfile", OPT_SSL_DIST_OPTFILE},
    {"inet_dist_listen_min", OPT_DIST_LISTEN_MIN},
    {"inet_dist_listen_max", OPT_DIST_LISTEN_MAX},
    {"inet_dist_use_interface", OPT_DIST_USE_INTERFACE},
    {"connect_all", OPT_CONNECT_ALL},
    {"dashboard", OPT_DASHBOARD},
    {"dashboard_token", OPT_DASHBOARD_TOKEN},
    {"connect", OPT_CONNECT},
    {"hosts", OPT_HOSTS},
};

/* One key of the config file's table (key at -2, value at -1). */
static int file_setting(lua_State *L, cli_t *cli, const char *file) {
  if (lua_type(L, -2) != LUA_TSTRING)
    return file_error(file, "settings are named by strings");
  const char *key = lua_tostring(L, -2);
  if (strcmp(key, "env") == 0)
    return -1; /* read by env_table */
  for (size_t i = 0; i < sizeof file_keys / sizeof file_keys[0]; i++) {
    if (strcmp(key, file_keys[i].key) != 0)
      continue;
    int id = file_keys[i].id;
    if (cli->given & GIVEN(id))
      return -1;
    if (id == OPT_ROCKS_TREE || id == OPT_CONNECT)
      return file_list(L, cli, id, file, key);
    const char *text = setting_text(L, -1, id);
    if (text == NULL)
      return file_error(
          file, "%s must be a %s", key,
          id == OPT_SCHEDULERS || id == OPT_MAX_PROCESSES ||
                  id == OPT_SHUTDOWN_TIME || id == OPT_LOG_FILES ||
                  id == OPT_DIST_LISTEN_MIN || id == OPT_DIST_LISTEN_MAX
              ? "number"
          : id == OPT_MAX_HEAP || id == OPT_LOG_FILE_SIZE ? "number or a string"
          : id == OPT_CONNECT_ALL                         ? "boolean"
                                                          : "string");
    char from[128];
    snprintf(from, sizeof from, "%s: %s", file, key);
    return apply(cli, id, text, from) == 0 ? -1 : 1;
  }
  return file_error(file, "unknown setting '%s'", key);
}

/* Run the config file; leave its table on the stack. */
static int run_config(lua_State *L, cli_t *cli) {
  const char *file = cli->config;
  if (luaL_loadfile(L, file) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    cli_say("%s", msg ? msg : "the config file raised a non-string error");
    return 1;
  }
  if (!lua_istable(L, -1))
    return file_error(file, "must return a table of settings, got %s",
                      luaL_typename(L, -1));
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int r = file_setting(L, cli, file);
    if (r >= 0)
      return r;
    lua_pop(L, 1);
  }
  return -1;
}

/* Read an --env VALUE as a Lua literal (a number, true or false, a quoted
 * string, a table constructor) if it is one; else it is a string. */
static void push_env_value(lua_State *L, const char *text) {
  lua_pushfstring(L, "return %s", text);
  int ok = luaL_loadbufferx(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=--env",
                            "t") == LUA_OK;
  lua_remove(L, -2);
  if (ok) {
    lua_newtable(L); /* an empty environment: data, not code */
    lua_setupvalue(L, -2, 1);
    ok = lua_pcall(L, 0, 1, 0) == LUA_OK && !lua_isnil(L, -1) &&
         !lua_isfunction(L, -1);
  }
  if (!ok) {
    lua_pop(L, 1);
    lua_pushstring(L, text);
  }
}

/* The dashboard's settings, as its application's environment: enabled,
 * listen, and token if there is one (strings as they are). */
static void dashboard_env(lua_State *L, int env, const cli_t *cli) {
  if (lua_getfield(L, env, "moonbeam_dashboard") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, env, "moonbeam_dashboard");
  }
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "enabled");
  lua_pushstring(L, cli->dashboard);
  lua_setfield(L, -2, "listen");
  if (cli->dashboard_token != NULL) {
    lua_pushstring(L, cli->dashboard_token);
    lua_setfield(L, -2, "token");
  }
  lua_pop(L, 1);
}

/* The table {app = {key = value}}: the config file's env (at `file`, or 0
 * for none), with the --env flags laid over it. */
static int env_table(lua_State *L, cli_t *cli, int file) {
  lua_newtable(L);
  int env = lua_gettop(L);
  if (file != 0 && lua_getfield(L, file, "env") != LUA_TNIL) {
    if (!lua_istable(L, -1))
      return file_error(cli->config, "env must be a table {app = {key = "
                                     "value}}");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
        return file_error(cli->config,
                          "env must be a table {app = {key = value}}");
      lua_newtable(L); /* a copy, so that the flags do not change the file's */
      lua_pushnil(L);
      while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
      }
      lua_pushvalue(L, -3);
      lua_insert(L, -2);
      lua_rawset(L, env);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, env);
  for (int i = 0; i < cli->nenvs; i++) {
    const char *s = cli->envs[i];
    const char *dot = strchr(s, '.'), *eq = strchr(s, '=');
    lua_pushlstring(L, s, (size_t)(dot - s));
    if (lua_rawget(L, env) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushlstring(L, s, (size_t)(dot - s));
      lua_pushvalue(L, -2);
      lua_rawset(L, env);
    }
    lua_pushlstring(L, dot + 1, (size_t)(eq - dot - 1));
    push_env_value(L, eq + 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (cli->dashboard != NULL)
    dashboard_env(L, env, cli);
  return -1;
}

int cli_settings(lua_State *L, cli_t *cli) {
  int r = from_variables(cli);
  if (r >= 0)
    return r;
  int file = 0;
  if (cli->config != NULL) {
    r = run_config(L, cli);
    if (r >= 0)
      return r;
    file = lua_gettop(L);
  }
  r = env_table(L, cli, file);
  if (r >= 0)
    return r;
  if (file != 0) {
    /* Settings point into its strings: keep it. */
    lua_pushvalue(L, file);
    luaL_ref(L, LUA_REGISTRYINDEX);
    lua_remove(L, file);
  }
  return -1;
}

const char *cli_node(cli_t *cli) {
  if (cli->target != NULL)
    return cli->target;
  static char node[600];
  if (cli->name != NULL) {
    snprintf(node, sizeof node, "%s", cli->name);
  } else if (cli->sname != NULL && strchr(cli->sname, '@') != NULL) {
    snprintf(node, sizeof node, "%s", cli->sname);
  } else if (cli->sname != NULL) {
    char host[256];
    size_t n = sizeof host;
    if (uv_os_gethostname(host, &n) != 0)
      snprintf(host, sizeof host, "localhost");
    host[strcspn(host, ".")] = '\0';
    snprintf(node, sizeof node, "%s@%s", cli->sname, host);
  } else {
    for (size_t i = 0; i < NCOMMANDS; i++)
      if (commands[i].command == cli->command)
        cli_say("%s: missing node (give NODE, --name or --sname; see "
                "moonbeam %s --help)",
                commands[i].name, commands[i].name);
    return NULL;
  }
  cli->target = node;
  return node;
}

/* ---- module paths ---- */

typedef struct {
  char *s;
  size_t len, cap;
  bool failed;
} buf_t;

/* Append a template, with ';' between templates. */
static void add(buf_t *b, const char *fmt, ...) {
  va_list ap;
  for (int pass = 0; pass < 2 && !b->failed; pass++) {
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->failed = true;
    } else if ((size_t)n + 2 <= room) {
      b->len += (size_t)n;
      b->s[b->len++] = ';';
      b->s[b->len] = '\0';
      return;
    } else {
      size_t cap = (b->cap + (size_t)n + 2) * 2;
      char *s = realloc(b->s, cap);
      if (s == NULL)
        b->failed = true;
      b->s = s;
      b->cap = cap;
    }
  }
}

/* The finished path, without the last ';'; NULL if memory ran out. */
static char *finish(buf_t *b) {
  if (b->failed || b->s == NULL) {
    free(b->s);
    return NULL;
  }
  if (b->len > 0 && b->s[b->len - 1] == ';')
    b->s[--b->len] = '\0';
  return b->s;
}

/* The variable (the versioned one first), where the first ";;" stands for
 * Lua's default, as lua itself reads it; or the default if neither is set. */
static void add_variable(buf_t *b, const char *v54, const char *v,
                         const char *dflt) {
  const char *env = getenv(v54);
  if (env == NULL)
    env = getenv(v);
  if (env == NULL) {
    add(b, "%s", dflt);
    return;
  }
  const char *mark = strstr(env, ";;");
  if (mark == NULL) {
    add(b, "%s", env);
    return;
  }
  add(b, "%.*s%s%s%s%s", (int)(mark - env), env, mark > env ? ";" : "", dflt,
      mark[2] ? ";" : "", mark + 2);
}

/* The directory of the launcher's binary ("" if unknown). */
static void exe_dir(char *dir, size_t size) {
  size_t len = size;
  if (uv_exepath(dir, &len) != 0)
    len = 0;
  dir[len] = '\0';
  char *slash = strrchr(dir, '/');
  if (slash != NULL)
    *slash = '\0';
}

/* The directory of the application file, for start and shell. */
static int app_dir(const cli_t *cli, char *dir, size_t size) {
  if ((cli->command != CLI_START && cli->command != CLI_SHELL) ||
      cli->target == NULL)
    return 0;
  const char *slash = strrchr(cli->target, '/');
  if (slash == NULL)
    snprintf(dir, size, ".");
  else
    snprintf(dir, size, "%.*s",
             (int)(slash - cli->target + (slash == cli->target)), cli->target);
  return 1;
}

/* The stdlib of an install tree or of a build tree, both at
 * bin/../share/lua/5.4, then the application's directory, then each
 * LuaRocks tree, then the variable or Lua's default. */
char *cli_lua_path(const cli_t *cli) {
  char exe[4096], dir[4096];
  buf_t b = {0};
  exe_dir(exe, sizeof exe);
  add(&b, "%s/../share/lua/5.4/?.lua;%s/../share/lua/5.4/?/init.lua", exe, exe);
  if (app_dir(cli, dir, sizeof dir))
    add(&b, "%s/?.lua;%s/?/init.lua", dir, dir);
  for (int i = 0; i < cli->ntrees; i++)
    add(&b, "%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua", cli->trees[i],
        cli->trees[i]);
  add_variable(&b, "LUA_PATH_5_4", "LUA_PATH", LUA_PATH_DEFAULT);
  return finish(&b);
}

/* C modules of an install tree (bin/../lib/lua/5.4), of each LuaRocks
 * tree, then along the variable or Lua's default. */
char *cli_lua_cpath(const cli_t *cli) {
  char exe[4096];
  buf_t b = {0};
  exe_dir(exe, sizeof exe);
  add(&b, "%s/../lib/lua/5.4/?.so", exe);
  for (int i = 0; i < cli->ntrees; i++)
    add(&b, "%s/lib/lua/5.4/?.so", cli->trees[i]);
  add_variable(&b, "LUA_CPATH_5_4", "LUA_CPATH", LUA_CPATH_DEFAULT);
  return finish(&b);
}
