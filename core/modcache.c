/* Lua modules are compiled once per node.  Every process that requires a
 * module would otherwise read and parse its source again (about half a
 * millisecond for gen_server and what it needs); here the first process
 * compiles it and keeps the bytecode, and the others load that.
 *
 * The cache is a searcher put before Lua's own file searcher in each
 * process's package.searchers: it finds the file on package.path as Lua
 * would, and uses the bytecode while the file's size and modification time
 * stay the same.  The bytecode keeps its debug information, so that
 * tracebacks name the file and line of every frame; for moonbeam's own
 * modules that costs about 7 KB per process that runs a GenServer (38 KB
 * without it, 45 KB with it).
 *
 * The searcher takes the place of Lua's file searcher, so that a module
 * that is not found is reported with each path searched once. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "internal.h"

typedef struct {
  char *path;
  time_t mtime;
  off_t size;
  size_t len;
  char code[];
} entry_t;

static uv_mutex_t lock = MB__MUTEX_INIT;
static mb__map_t by_path; /* hash of path -> entry_t* */

static uint64_t hash_path(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h ? h : 1;
}

typedef struct {
  char *buf;
  size_t len, cap;
} dump_t;

static int writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  dump_t *d = ud;
  if (d->len + sz > d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 4096;
    while (cap < d->len + sz)
      cap *= 2;
    char *nb = realloc(d->buf, cap);
    if (nb == NULL)
      return 1;
    d->buf = nb;
    d->cap = cap;
  }
  memcpy(d->buf + d->len, p, sz);
  d->len += sz;
  return 0;
}

/* Keep the chunk on top of L as the bytecode of `path`. */
static void store(lua_State *L, const char *path, const struct stat *st) {
  dump_t d = {NULL, 0, 0};
  if (lua_dump(L, writer, &d, 0) != 0 || d.buf == NULL) {
    free(d.buf);
    return;
  }
  entry_t *e = malloc(sizeof *e + d.len);
  char *p = strdup(path);
  if (e == NULL || p == NULL) {
    free(e);
    free(p);
    free(d.buf);
    return;
  }
  e->path = p;
  e->mtime = st->st_mtime;
  e->size = st->st_size;
  e->len = d.len;
  memcpy(e->code, d.buf, d.len);
  free(d.buf);
  uint64_t h = hash_path(path);
  uv_mutex_lock(&lock);
  entry_t *old = mb__map_get(&by_path, h);
  if (old == NULL || strcmp(old->path, path) == 0) {
    if (mb__map_put(&by_path, h, e) == 0) {
      if (old) {
        free(old->path);
        free(old);
      }
      e = NULL;
    }
  }
  uv_mutex_unlock(&lock);
  if (e) {
    free(e->path);
    free(e);
  }
}

/* Load the cached bytecode of path if it is still the file's. */
static int load_cached(lua_State *L, const char *path, const struct stat *st) {
  uint64_t h = hash_path(path);
  int status = -1;
  uv_mutex_lock(&lock);
  entry_t *e = mb__map_get(&by_path, h);
  if (e != NULL && strcmp(e->path, path) == 0 && e->mtime == st->st_mtime &&
      e->size == st->st_size) {
    /* Loading under the lock: entries are replaced under it, and loading
     * bytecode is quick. */
    char chunkname[512];
    snprintf(chunkname, sizeof chunkname, "@%s", path);
    status = luaL_loadbufferx(L, e->code, e->len, chunkname, "b");
  }
  uv_mutex_unlock(&lock);
  return status;
}

/* The searcher: (name) -> loader, path | message. */
static int searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchpath");
  lua_pushstring(L, name);
  lua_getfield(L, 2, "path");
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2))
    return 1; /* the message saying where it looked */
  lua_pop(L, 1);
  const char *path = lua_tostring(L, -1);
  struct stat st;
  if (stat(path, &st) != 0)
    return 0;
  int status = load_cached(L, path, &st);
  if (status != LUA_OK) {
    if (status > 0)
      lua_pop(L, 1);
    if (luaL_loadfile(L, path) != LUA_OK)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                        name, path, lua_tostring(L, -1));
    store(L, path, &st);
  }
  lua_pushvalue(L, -2); /* the path, as the second value for the loader */
  return 2;
}

/* Put the searcher in the place of Lua's file searcher, the second of
 * package.searchers (the package table is on top of L). */
void mb__modcache_install(lua_State *L) {
  lua_getfield(L, -1, "searchers");
  lua_pushcfunction(L, searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 1);
}
