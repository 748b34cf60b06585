/* The launcher's files share these names: the command line and settings
 * (cli.c), the shell's console (console.c), and main (moonbeam.c). */
#ifndef MB_LAUNCHER_H
#define MB_LAUNCHER_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

typedef enum {
  CLI_RUN,        /* moonbeam [run] script.lua [args...] */
  CLI_START,      /* moonbeam start app.lua */
  CLI_EVAL,       /* moonbeam eval CODE [args...] */
  CLI_SHELL,      /* moonbeam shell [app.lua] */
  CLI_EPMD_NAMES, /* moonbeam epmd-names (needs distribution) */
  CLI_RELOAD,     /* moonbeam reload NODE module... */
  CLI_PING,       /* moonbeam ping [NODE]: commands for a running node */
  CLI_STOP,       /* moonbeam stop [NODE] */
  CLI_RPC,        /* moonbeam rpc [NODE] CODE */
  CLI_PID,        /* moonbeam pid [NODE] */
  CLI_REMOTE,     /* moonbeam remote [NODE]: shell --remsh NODE */
  CLI_RELEASE     /* moonbeam release app.lua --output DIR (no node) */
} cli_command_t;

/* The commands that reach a running node: NODE, or the node that --name
 * or --sname names. */
#define CLI_TO_NODE(c) ((c) >= CLI_PING && (c) <= CLI_REMOTE)

/* What to run and with which settings, once the command line, the MOONBEAM_*
 * variables and the config file are merged.  Strings point into argv, the
 * environment, or the settings state (see cli_settings); the lists are
 * malloc'd.  All of it lives as long as the launcher. */
typedef struct {
  cli_command_t command;
  const char *target; /* the script, the app file (or NULL), the code, or
                         the node (reload, ping...; see cli_node) */
  int nargs;          /* arguments after the target (run, eval, reload) */
  char **args;
  const char *config;     /* --config or MOONBEAM_CONFIG, or NULL */
  int schedulers;         /* 0: one per core */
  size_t max_heap;        /* 0: no limit */
  size_t max_processes;   /* 0: the core's default */
  long shutdown_time;     /* ms SIGTERM waits for a clean stop; 0: default */
  int log_level;          /* an mb_log_level_t, or -1: leave the default */
  int log_format;         /* an mb_log_format_t, or -1: the default */
  const char *log_file;   /* or NULL: stderr */
  size_t log_file_size;   /* rotate at this size; 0: the default */
  int log_files;          /* rotated files kept; -1: the default */
  const char *start_type; /* start, shell: "permanent" unless --type */
  const char **trees;     /* LuaRocks trees, in the order given */
  int ntrees;
  const char **envs; /* --env APP.KEY=VALUE, in the order given */
  int nenvs;
  /* Distribution. */
  const char *sname, *name, *cookie, *remsh;
  int hidden;         /* --hidden */
  const char *output; /* release: --output DIR */
  /* --proto-dist, --ssl-dist-optfile, --inet-dist-use-interface: NULL
   * unless given; --inet-dist-listen-min/max: 0 unless given. */
  const char *proto_dist, *ssl_dist_optfile, *dist_use_interface;
  int dist_listen_min, dist_listen_max;
  int no_connect_all; /* --connect-all false */
  /* The dashboard: its address and token, or NULL (start, shell). */
  const char *dashboard, *dashboard_token;
  const char **connects; /* --connect: nodes to keep connected */
  int nconnects;
  const char *hosts; /* --hosts: the host file */
  uint64_t given;    /* the settings given by flag or variable (cli.c) */
  char *owned;       /* storage the strings above may point into */
} cli_t;

/* Parse the command line into `cli`.  Returns -1 to go on, or the status
 * to exit with at once (after --help, --version, or a usage error, which
 * is printed). */
int cli_parse(int argc, char **argv, cli_t *cli);

/* Fill in what the command line left unset from the MOONBEAM_* variables,
 * then from the config file, run in L.  Leaves on L's stack one table: the
 * application environment to set, {app = {key = value}}, the file's `env`
 * with the --env flags over it.  Returns -1 to go on, or the status to exit
 * with (the error is printed). */
int cli_settings(lua_State *L, cli_t *cli);

/* For the commands that reach a running node: the node, the one argument
 * or else the name of --name, or of --sname on this host; NULL with the
 * error printed if there is none.  (Settings first: the config file may
 * name the node.)  Returns a string that lives as long as the launcher. */
const char *cli_node(cli_t *cli);

/* package.path and package.cpath for the processes: malloc'd strings. */
char *cli_lua_path(const cli_t *cli);
char *cli_lua_cpath(const cli_t *cli);

/* moonbeam release (release.c): build the release of the application file
 * cli->target in cli->output.  Returns the status to exit with. */
int release_build(lua_State *L, const cli_t *cli);

/* Write "moonbeam: <message>" on stderr: how the launcher reports an error
 * that stops it. */
void cli_say(const char *fmt, ...);

/* The module `moonbeam.console`, preloaded in every process: it lets one
 * process read lines from the terminal without blocking its scheduler. */
int luaopen_moonbeam_console(lua_State *L);

/* Put the terminal back as it was before the console edited a line; for
 * exits that may interrupt a read. */
void console_restore(void);

/* Whether the shell is evaluating an input: it has read a line and not yet
 * asked for the next. */
int console_evaluating(void);

#endif
