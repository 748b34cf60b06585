/* The moonbeam launcher.
 *
 *   moonbeam [options] script.lua [args...]
 *
 * Starts a node, runs the script as its first process, and exits when the
 * script's process ends: 0 if it returned, 1 if it crashed (as `elixir
 * script.exs` does).  Other processes do not keep the node alive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "../core/internal.h"

int luaopen_moonbeam(lua_State *L);

static void usage(FILE *out) {
  fprintf(out,
          "usage: moonbeam [options] script.lua [args...]\n"
          "\n"
          "Runs script.lua as the first process of a new node and exits\n"
          "when it ends: status 0 if it returned, 1 if it crashed.\n"
          "\n"
          "options:\n"
          "  --schedulers N   scheduler threads (default: one per core)\n"
          "  --max-heap BYTES default memory limit of a process\n"
          "  --version        print the version and exit\n"
          "  --help           print this help and exit\n");
}

/* package.path for processes: the stdlib next to the binary (the build
 * tree's build/bin/../../stdlib, or an install tree's share/lua/5.4), then
 * LUA_PATH_5_4 or LUA_PATH, where ";;" stands for Lua's default path as it
 * does for lua itself, then (if the variable is unset) that default. */
static char *lua_path(void) {
  char exe[4096];
  size_t len = sizeof exe;
  if (uv_exepath(exe, &len) != 0)
    exe[0] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash != NULL)
    *slash = '\0';
  const char *env = getenv("LUA_PATH_5_4");
  if (env == NULL)
    env = getenv("LUA_PATH");
  if (env == NULL)
    env = ";;";
  const char *dflt = strstr(env, ";;");
  size_t n = 8 * strlen(exe) + strlen(env) + strlen(LUA_PATH_DEFAULT) + 512;
  char *path = malloc(n);
  if (path == NULL)
    return NULL;
  int k = snprintf(path, n,
                   "%s/../../stdlib/?.lua;%s/../../stdlib/?/init.lua;"
                   "%s/../share/lua/5.4/?.lua;%s/../share/lua/5.4/?/init.lua",
                   exe, exe, exe, exe);
  if (dflt == NULL) {
    snprintf(path + k, n - (size_t)k, ";%s", env);
  } else {
    int before = (int)(dflt - env);
    const char *after = dflt + 2;
    snprintf(path + k, n - (size_t)k, "%s%.*s;%s%s%s", before ? ";" : "",
             before, env, LUA_PATH_DEFAULT, *after ? ";" : "", after);
  }
  return path;
}

int main(int argc, char **argv) {
  mb_config_t cfg = {0};
  int i = 1;
  for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0) {
      printf("moonbeam %s\n", MB_VERSION);
      return 0;
    } else if (strcmp(a, "--schedulers") == 0 && i + 1 < argc) {
      cfg.schedulers = atoi(argv[++i]);
    } else if (strcmp(a, "--max-heap") == 0 && i + 1 < argc) {
      cfg.max_heap = (size_t)strtoull(argv[++i], NULL, 10);
    } else {
      fprintf(stderr, "moonbeam: unknown option %s\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return 2;
  }
  const char *script = argv[i];
  FILE *f = fopen(script, "r");
  if (f == NULL) {
    fprintf(stderr, "moonbeam: cannot open %s\n", script);
    return 1;
  }
  fclose(f);

  char *path = lua_path();
  cfg.lua_path = path;
  mb_node_preload("moonbeam", luaopen_moonbeam);
  int err = mb_node_start(&cfg);
  free(path);
  if (err) {
    fprintf(stderr, "moonbeam: cannot start node: %s\n", mb_strerror(err));
    return 1;
  }

  /* The script's arguments, as a table {n = count, [0] = script, ...}. */
  lua_State *L = luaL_newstate();
  lua_createtable(L, argc - i, 2);
  lua_pushstring(L, script);
  lua_rawseti(L, -2, 0);
  for (int k = i + 1; k < argc; k++) {
    lua_pushstring(L, argv[k]);
    lua_rawseti(L, -2, k - i);
  }
  lua_pushinteger(L, argc - i - 1);
  lua_setfield(L, -2, "n");
  mb_msg_t *args;
  err = mb_msg_encode(L, -1, &args, NULL, 0);
  lua_close(L);
  if (err) {
    fprintf(stderr, "moonbeam: %s\n", mb_strerror(err));
    return 1;
  }

  mb_spawn_opts_t o = {0};
  mb_waiter_t *w;
  o.file = script;
  o.args = args;
  o.waiter = &w;
  err = mb_proc_spawn_opts(&o, NULL);
  if (err) {
    fprintf(stderr, "moonbeam: cannot start %s: %s\n", script,
            mb_strerror(err));
    return 1;
  }
  mb_msg_t *result = NULL;
  int normal = 0;
  mb_waiter_wait(w, -1, &result, &normal);
  mb_msg_free(result);
  fflush(stdout);
  return normal ? 0 : 1;
}
