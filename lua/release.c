/* moonbeam release app.lua --output DIR: a directory that runs the
 * application from anywhere, on a machine that has only the runtime
 * libraries the launcher links to (ldd lists them):
 *
 *   DIR/bin/moonbeam           this launcher
 *   DIR/bin/<app>              start|stop|remote|rpc|pid|ping
 *   DIR/share/lua/5.4/         moonbeam's modules
 *   DIR/app/                   the application file's directory
 *   DIR/rocks/                 the LuaRocks trees of the settings, merged
 *   DIR/etc/config.lua         the config file given, or one naming the node
 *
 * The launcher finds its modules next to itself (bin/../share/lua/5.4), and
 * the start script gives it the rest by paths relative to itself, so the
 * directory may move.  Nothing here starts a node. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "launcher.h"

#define PATH_MAX_LEN 4096

static int fail(const char *what, const char *path) {
  cli_say("release: cannot %s %s: %s", what, path, strerror(errno));
  return -1;
}

/* mkdir -p */
static int make_dir(const char *path) {
  char p[PATH_MAX_LEN];
  snprintf(p, sizeof p, "%s", path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
      return fail("create", p);
    *s = '/';
  }
  if (mkdir(p, 0755) != 0 && errno != EEXIST)
    return fail("create", p);
  return 0;
}

static int copy_file(const char *from, const char *to, mode_t mode) {
  int in = open(from, O_RDONLY);
  if (in < 0)
    return fail("read", from);
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode & 0777);
  if (out < 0) {
    close(in);
    return fail("write", to);
  }
  char buf[65536];
  ssize_t n;
  int r = 0;
  while ((n = read(in, buf, sizeof buf)) > 0)
    if (write(out, buf, (size_t)n) != n) {
      r = fail("write", to);
      break;
    }
  if (n < 0)
    r = fail("read", from);
  close(in);
  if (close(out) != 0 && r == 0)
    r = fail("write", to);
  if (r == 0)
    chmod(to, mode & 0777);
  return r;
}

/* Copy the tree at `from` into `to` (merged with what is there),
 * following links, leaving out hidden entries and `skip` (the output, when
 * it lies inside what is copied). */
static int copy_tree(const char *from, const char *to, const char *skip) {
  if (make_dir(to) != 0)
    return -1;
  DIR *d = opendir(from);
  if (d == NULL)
    return fail("read", from);
  int r = 0;
  struct dirent *e;
  while (r == 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char src[PATH_MAX_LEN + 256], dst[PATH_MAX_LEN + 256], real[PATH_MAX_LEN];
    snprintf(src, sizeof src, "%s/%s", from, e->d_name);
    snprintf(dst, sizeof dst, "%s/%s", to, e->d_name);
    struct stat st;
    if (stat(src, &st) != 0)
      continue; /* a dangling link */
    if (S_ISDIR(st.st_mode)) {
      if (skip != NULL && realpath(src, real) != NULL &&
          strcmp(real, skip) == 0)
        continue;
      r = copy_tree(src, dst, skip);
    } else if (S_ISREG(st.st_mode)) {
      r = copy_file(src, dst, st.st_mode);
    }
  }
  closedir(d);
  return r;
}

static int write_text(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return fail("write", path);
  int ok = fputs(text, f) >= 0;
  if (fclose(f) != 0 || !ok)
    return fail("write", path);
  chmod(path, mode);
  return 0;
}

/* The application's name: what the app file returns (a name, or a spec
 * with one), read as `start` reads it, with an empty environment. */
static const char *app_name(lua_State *L, const char *file) {
  if (luaL_loadfile(L, file) != LUA_OK) {
    cli_say("%s", lua_tostring(L, -1));
    return NULL;
  }
  lua_newtable(L);
  lua_setupvalue(L, -2, 1);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    cli_say("%s", lua_tostring(L, -1));
    return NULL;
  }
  if (lua_istable(L, -1))
    lua_getfield(L, -1, "name");
  const char *name = lua_tostring(L, -1);
  if (name == NULL || *name == '\0' || strpbrk(name, "/ '\"\\$`") != NULL) {
    cli_say("release: %s must return an application spec with a name, or "
            "an application's name (a plain word)",
            file);
    return NULL;
  }
  return name; /* kept on the stack for the launcher's life */
}

static const char script_fmt[] =
    "#!/bin/sh\n"
    "# %s: the release's start script.\n"
    "#   start            run the node in the foreground (for systemd)\n"
    "#   stop|pid|ping    stop it; its OS pid; is it up (exit 0 or 1)\n"
    "#   remote           a shell on the running node\n"
    "#   rpc CODE         evaluate Lua code on the node, print the result\n"
    "# The node's name, cookie and logs are set in etc/config.lua.\n"
    "ROOT=$(cd \"$(dirname \"$0\")/..\" && pwd -P)\n"
    "MB=\"$ROOT/bin/moonbeam\"\n"
    "export MOONBEAM_CONFIG=\"${MOONBEAM_CONFIG:-$ROOT/etc/config.lua}\"\n"
    "export MOONBEAM_ROCKS_TREE=\"$ROOT/rocks\"\n"
    "cmd=$1\n"
    "[ $# -gt 0 ] && shift\n"
    "case \"$cmd\" in\n"
    "  start) exec \"$MB\" start \"$ROOT/app/%s\" \"$@\" ;;\n"
    "  stop|pid|ping|remote|rpc) exec \"$MB\" \"$cmd\" \"$@\" ;;\n"
    "  *) echo \"usage: $0 start|stop|remote|rpc CODE|pid|ping\" >&2; "
    "exit 2 ;;\n"
    "esac\n";

static int write_script(const char *dir, const char *app, const char *file) {
  char path[PATH_MAX_LEN + 300];
  snprintf(path, sizeof path, "%s/bin/%s", dir, app);
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  size_t len = sizeof script_fmt + strlen(app) + strlen(base);
  char *text = malloc(len);
  if (text == NULL) {
    cli_say("out of memory");
    return -1;
  }
  snprintf(text, len, script_fmt, app, base);
  int r = write_text(path, text, 0755);
  free(text);
  return r;
}

static int write_config(const cli_t *cli, const char *dir, const char *app) {
  char path[PATH_MAX_LEN + 64];
  snprintf(path, sizeof path, "%s/etc", dir);
  if (make_dir(path) != 0)
    return -1;
  snprintf(path, sizeof path, "%s/etc/config.lua", dir);
  if (cli->config != NULL)
    return copy_file(cli->config, path, 0644);
  char text[600];
  snprintf(text, sizeof text,
           "-- The settings of the %s release (docs/operations.md).\n"
           "return {\n  sname = \"%s\",\n}\n",
           app, app);
  return write_text(path, text, 0644);
}

int release_build(lua_State *L, const cli_t *cli) {
  const char *out = cli->output;
  if (out == NULL) {
    cli_say("release: --output DIR is missing (see moonbeam release --help)");
    return 2;
  }
  const char *app = app_name(L, cli->target);
  if (app == NULL)
    return 1;
  char exe[PATH_MAX_LEN], dir[PATH_MAX_LEN], src[PATH_MAX_LEN];
  char dst[PATH_MAX_LEN + 64];
  size_t len = sizeof exe;
  if (uv_exepath(exe, &len) != 0) {
    cli_say("release: cannot find the launcher's own file");
    return 1;
  }
  if (make_dir(out) != 0 || realpath(out, dir) == NULL)
    return 1;
  snprintf(dst, sizeof dst, "%s/bin", dir);
  if (make_dir(dst) != 0)
    return 1;
  snprintf(dst, sizeof dst, "%s/bin/moonbeam", dir);
  if (copy_file(exe, dst, 0755) != 0)
    return 1;
  /* moonbeam's modules, found as the launcher finds them. */
  snprintf(src, sizeof src, "%s", exe);
  *strrchr(src, '/') = '\0';
  strncat(src, "/../share/lua/5.4", sizeof src - strlen(src) - 1);
  snprintf(dst, sizeof dst, "%s/share/lua/5.4", dir);
  if (copy_tree(src, dst, dir) != 0)
    return 1;
  /* The application file's directory. */
  snprintf(src, sizeof src, "%s", cli->target);
  char *slash = strrchr(src, '/');
  if (slash != NULL)
    *slash = '\0';
  else
    snprintf(src, sizeof src, ".");
  snprintf(dst, sizeof dst, "%s/app", dir);
  if (copy_tree(src, dst, dir) != 0)
    return 1;
  snprintf(dst, sizeof dst, "%s/rocks", dir);
  if (make_dir(dst) != 0)
    return 1;
  for (int i = 0; i < cli->ntrees; i++)
    if (copy_tree(cli->trees[i], dst, dir) != 0)
      return 1;
  if (write_config(cli, dir, app) != 0 ||
      write_script(dir, app, cli->target) != 0)
    return 1;
  printf("%s: bin/%s start|stop|remote|rpc|pid|ping\n", dir, app);
  return 0;
}
