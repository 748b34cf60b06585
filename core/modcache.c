/* Lua modules are compiled once per node, and each module has versions.
 *
 * Every process that requires a module would otherwise read and parse its
 * source again (about half a millisecond for gen_server and what it
 * needs); here the first process compiles it and keeps the bytecode, and
 * the others load that.  The bytecode keeps its debug information, so
 * that tracebacks name the file and line of every frame.  Loading is
 * still dear next to a spawn: the 5.7 KB that a GenServer used to load
 * for its start (its Lua side and moonbeam.gen_base) took about 200,000
 * instructions, 35 a byte, which is why a GenServer now starts without
 * loading a module (lua/lgenserve.c).
 *
 * The cache is a searcher put before Lua's own file searcher in each
 * process's package.searchers.  It is keyed by module name, as Erlang's
 * code server is: a node has one current version of a module, numbered
 * from 1.  The first require compiles the file found on package.path and
 * makes version 1; after that the file on disk is not read again until
 * moonbeam.code loads the module anew (install below), which makes the
 * next version.  A process whose package.path finds another file under
 * the same name gets that file, compiled for it alone and not versioned.
 *
 * Each entry keeps who holds which version: a process holds version v of
 * a module when it required the module while v was current, and has not
 * upgraded since (see docs/code_loading.md).  The holders are what the
 * two-versions rule kills; dead pids are pruned as the table grows.
 *
 * The searcher takes the place of Lua's file searcher, so that a module
 * that is not found is reported with each path searched once.
 *
 * A process's `require` is mb__modcache_require until it opens the
 * package library: it finds the file along the node's package.path as
 * package.searchpath does and loads the cached bytecode of that file, so
 * that an idle GenServer has no package library (a few KB) and its start
 * does not open one.  Whatever the cache does not hold yet goes to the
 * package library's require, which this searcher serves. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "internal.h"

/* Under `lock`. */
typedef struct {
  char *name;
  char *path; /* NULL for a module loaded from a string */
  lua_Integer version;
  size_t len;
  char *code;
  mb__map_t holders; /* pid -> version (as a pointer) */
  uint32_t prune_at; /* prune dead holders when there are this many */
} entry_t;

static uv_mutex_t lock = MB__MUTEX_INIT;
static mb__map_t by_name; /* hash of name -> entry_t* */
/* Bumped by every install: a process compares it with the value it saw to
 * learn cheaply that some module changed. */
static _Atomic lua_Integer generation;

#define HELD_KEY "moonbeam.code.held"

static uint64_t hash_name(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h ? h : 1;
}

/* The entry of `name` (under the lock), or NULL. */
static entry_t *find(const char *name) {
  entry_t *e = mb__map_get(&by_name, hash_name(name));
  return e != NULL && strcmp(e->name, name) == 0 ? e : NULL;
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

static void prune(entry_t *e) {
  uint64_t *dead = malloc(e->holders.len * sizeof *dead + 1);
  size_t n = 0, i = 0;
  uint64_t pid;
  void *v;
  if (dead == NULL)
    return;
  while (mb__map_next(&e->holders, &i, &pid, &v))
    if (!mb_proc_alive(pid))
      dead[n++] = pid;
  for (size_t k = 0; k < n; k++) /* apart: deleting moves slots */
    mb__map_del(&e->holders, dead[k]);
  free(dead);
  e->prune_at = 2 * e->holders.len + 64;
}

/* Note that `pid` holds version `v` of e (under the lock). */
static void hold(entry_t *e, mb_pid_t pid, lua_Integer v) {
  if (mb__map_put(&e->holders, pid, (void *)(uintptr_t)v) == 0 &&
      e->holders.len >= e->prune_at)
    prune(e);
}

/* Make `code` the next version of `name`, creating the entry if need be.
 * Returns the new version, or 0 when out of memory. */
static lua_Integer put(const char *name, const char *path, const char *code,
                       size_t len) {
  char *c = malloc(len ? len : 1);
  char *p = path ? strdup(path) : NULL;
  if (c == NULL || (path && p == NULL)) {
    free(c);
    free(p);
    return 0;
  }
  memcpy(c, code, len);
  entry_t *e = find(name);
  if (e == NULL) {
    e = calloc(1, sizeof *e);
    char *nm = strdup(name);
    if (e == NULL || nm == NULL ||
        mb__map_put(&by_name, hash_name(name), e) != 0) {
      free(e);
      free(nm);
      free(c);
      free(p);
      return 0;
    }
    e->name = nm;
    mb__map_init(&e->holders);
    e->prune_at = 64;
  }
  free(e->code);
  free(e->path);
  e->code = c;
  e->len = len;
  e->path = p;
  e->version++;
  atomic_fetch_add(&generation, 1);
  return e->version;
}

/* Note in the calling process's registry that it holds version v of the
 * module `name` (a process-local table, HELD_KEY). */
static void note_held(lua_State *L, const char *name, lua_Integer v) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, HELD_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, HELD_KEY);
  }
  lua_pushinteger(L, v);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

static int load_code(lua_State *L, const char *name, const char *path,
                     const char *code, size_t len) {
  char chunkname[512];
  snprintf(chunkname, sizeof chunkname, path ? "@%s" : "=%s",
           path ? path : name);
  return luaL_loadbufferx(L, code, len, chunkname, "b");
}

/* Load the current version of `name` if the cache has it and it is the
 * one for `path` (NULL: whatever the entry's path).  Pushes the chunk and
 * sets *version on success. */
static int load_current(lua_State *L, const char *name, const char *path,
                        lua_Integer *version) {
  mb_proc_t *self = MB_PROC(L);
  int status = -1;
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  if (e != NULL && (path == NULL || (e->path && !strcmp(e->path, path)))) {
    /* Loading under the lock: entries are replaced under it, and loading
     * bytecode is quick. */
    status = load_code(L, name, e->path, e->code, e->len);
    if (status == LUA_OK) {
      *version = e->version;
      if (self != NULL)
        hold(e, self->pid, e->version);
    }
  }
  uv_mutex_unlock(&lock);
  return status;
}

/* The chunk on top of L becomes version 1 of `name`, unless another
 * process got there first (then the chunk it stored is used). */
static void store_first(lua_State *L, const char *name, const char *path,
                        lua_Integer *version) {
  dump_t d = {NULL, 0, 0};
  *version = 0;
  if (lua_dump(L, writer, &d, 0) != 0 || d.buf == NULL) {
    free(d.buf);
    return;
  }
  mb_proc_t *self = MB_PROC(L);
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  if (e == NULL) {
    *version = put(name, path, d.buf, d.len);
    e = find(name);
  } else if (e->path && strcmp(e->path, path) == 0) {
    *version = e->version; /* same file, compiled twice at once */
  }
  if (*version && self != NULL)
    hold(e, self->pid, *version);
  uv_mutex_unlock(&lock);
  free(d.buf);
}

/* The searcher: (name) -> loader, path | message. */
static int searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer version = 0;
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  bool from_string = e != NULL && e->path == NULL;
  uv_mutex_unlock(&lock);
  if (from_string && load_current(L, name, NULL, &version) == LUA_OK) {
    note_held(L, name, version);
    lua_pushfstring(L, "=%s", name);
    return 2;
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchpath");
  lua_pushstring(L, name);
  lua_getfield(L, 2, "path");
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2))
    return 1; /* the message saying where it looked */
  lua_pop(L, 1);
  const char *path = lua_tostring(L, -1);
  int status = load_current(L, name, path, &version);
  if (status != LUA_OK) {
    if (status > 0)
      lua_pop(L, 1);
    if (luaL_loadfile(L, path) != LUA_OK)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                        name, path, lua_tostring(L, -1));
    store_first(L, name, path, &version);
  }
  if (version)
    note_held(L, name, version);
  lua_pushvalue(L, -2); /* the path, as the second value for the loader */
  return 2;
}

/* The live processes that hold a version of e older than `below`, in a
 * malloc'd array (under the lock: no Lua call here, which could raise);
 * with take, they stop counting as holders. */
static uint64_t *older(entry_t *e, lua_Integer below, bool take, size_t *n) {
  prune(e);
  uint64_t *pids = malloc(e->holders.len * sizeof *pids + 1), pid;
  void *held;
  size_t i = 0;
  *n = 0;
  if (pids == NULL)
    return NULL;
  while (mb__map_next(&e->holders, &i, &pid, &held))
    if ((lua_Integer)(uintptr_t)held < below)
      pids[(*n)++] = pid;
  for (size_t k = 0; take && k < *n; k++)
    mb__map_del(&e->holders, pids[k]);
  return pids;
}

static void push_pids(lua_State *L, uint64_t *pids, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t k = 0; k < n; k++) {
    mb_lua_push_pid(L, pids[k]);
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
}

/* ---- moonbeam.codecache: the Lua side of the cache, for moonbeam.code */

/* install(name, path|nil, bytecode) -> version, {pids}: the bytecode
 * becomes the current version; the pids are the live processes that held
 * a version older than the one current until now (the two-versions rule:
 * the caller kills them).  They are no longer counted as holders. */
static int l_install(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *path = luaL_optstring(L, 2, NULL);
  size_t len;
  const char *code = luaL_checklstring(L, 3, &len);
  uint64_t *pids = NULL;
  size_t n = 0;
  lua_settop(L, 3);
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  lua_Integer below = e ? e->version : 0;
  lua_Integer v = put(name, path, code, len);
  if (v != 0)
    pids = older(find(name), below, true, &n);
  uv_mutex_unlock(&lock);
  lua_pushinteger(L, v);
  push_pids(L, pids, n);
  free(pids);
  if (v == 0)
    return luaL_error(L, "code: out of memory");
  return 2;
}

/* holders(name, below [, take]) -> {pids}: live processes that hold a
 * version of name older than `below`; with take, they stop counting. */
static int l_holders(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer below = luaL_checkinteger(L, 2);
  int take = lua_toboolean(L, 3);
  uint64_t *pids = NULL;
  size_t n = 0;
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  if (e != NULL)
    pids = older(e, below, take, &n);
  uv_mutex_unlock(&lock);
  push_pids(L, pids, n);
  free(pids);
  return 1;
}

/* info(name) -> version, path|false; nothing if the node has no version. */
static int l_info(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer v = 0;
  char *path = NULL;
  bool has_path = false;
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  if (e != NULL) {
    v = e->version;
    has_path = e->path != NULL;
    path = has_path ? strdup(e->path) : NULL;
  }
  uv_mutex_unlock(&lock);
  if (v == 0 || (has_path && path == NULL))
    return 0;
  lua_pushinteger(L, v);
  if (path)
    lua_pushstring(L, path);
  else
    lua_pushboolean(L, 0);
  free(path);
  return 2;
}

/* load(name) -> chunk, version, path|false: the current version, noted
 * as held by the calling process; nothing if there is none. */
static int l_load(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer v;
  if (load_current(L, name, NULL, &v) != LUA_OK)
    return 0;
  note_held(L, name, v);
  lua_pushinteger(L, v);
  l_info(L); /* version, path */
  lua_remove(L, -2);
  return 3;
}

/* hold(name, version): the calling process holds that version again (an
 * upgrade it gave up). */
static int l_hold(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer v = luaL_checkinteger(L, 2);
  mb_proc_t *self = MB_PROC(L);
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  if (e != NULL && self != NULL)
    hold(e, self->pid, v);
  uv_mutex_unlock(&lock);
  note_held(L, name, v);
  return 0;
}

/* held() -> the process's table of module name -> version held. */
static int l_held(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, HELD_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, HELD_KEY);
  }
  return 1;
}

int mb_lua_code_generation(lua_State *L) {
  lua_pushinteger(L, atomic_load_explicit(&generation, memory_order_relaxed));
  return 1;
}

static int open_codecache(lua_State *L) {
  static const luaL_Reg funcs[] = {{"install", l_install},
                                   {"holders", l_holders},
                                   {"info", l_info},
                                   {"load", l_load},
                                   {"hold", l_hold},
                                   {"held", l_held},
                                   {"generation", mb_lua_code_generation},
                                   {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

/* ---- require without the package library ---- */

/* The file package.searchpath would find for `name` along `path`, into
 * buf; false if there is none, or the path is one this copy does not
 * read the way package.searchpath does (an empty template). */
static bool search_path(const char *name, const char *path, char *buf,
                        size_t size) {
  char mod[256];
  size_t n = strlen(name);
  if (n >= sizeof mod)
    return false;
  for (size_t i = 0; i <= n; i++)
    mod[i] = name[i] == '.' ? '/' : name[i];
  for (const char *t = path; *t;) {
    const char *end = strchr(t, ';');
    size_t len = end ? (size_t)(end - t) : strlen(t);
    if (len == 0)
      return false;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
      const char *piece = t[i] == '?' ? mod : &t[i];
      size_t plen = t[i] == '?' ? n : 1;
      if (k + plen >= size)
        return false;
      memcpy(buf + k, piece, plen);
      k += plen;
    }
    buf[k] = '\0';
    FILE *f = fopen(buf, "r");
    if (f != NULL) {
      fclose(f);
      return true;
    }
    t = end ? end + 1 : t + len;
  }
  return false;
}

/* Push the chunk of `name` from the cache, and the loader data require
 * gives it (the file's path, or "=name" for a module loaded from a
 * string), as the searcher would; false, with nothing pushed, when the
 * cache cannot say (not compiled yet, not found, no node path). */
static bool load_cached(lua_State *L, const char *name) {
  lua_Integer version = 0;
  uv_mutex_lock(&lock);
  entry_t *e = find(name);
  bool from_string = e != NULL && e->path == NULL;
  uv_mutex_unlock(&lock);
  if (e == NULL)
    return false;
  if (from_string) {
    if (load_current(L, name, NULL, &version) != LUA_OK)
      return false;
    note_held(L, name, version);
    lua_pushfstring(L, "=%s", name);
    return true;
  }
  const char *path = mb__config()->lua_path;
  char file[4096];
  if (path == NULL || !search_path(name, path, file, sizeof file))
    return false;
  int status = load_current(L, name, file, &version);
  if (status != LUA_OK) {
    if (status > 0)
      lua_pop(L, 1);
    return false;
  }
  note_held(L, name, version);
  lua_pushstring(L, file);
  return true;
}

/* require(name), as package.require does it, for a process that has not
 * opened the package library: an idle process pays neither for the
 * library (its tables, searchers and path strings, a few KB) nor for
 * opening it.  What is already loaded, a standard or preloaded library,
 * and a module the cache has compiled are loaded here; anything else
 * opens the package library and goes through its require, as does every
 * require once the process has opened it (by naming `package`). */
int mb__modcache_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* 2 */
  if (lua_getfield(L, 2, name) != LUA_TNIL && lua_toboolean(L, -1))
    return 1;
  lua_pop(L, 1);
  bool opened = lua_getfield(L, 2, LUA_LOADLIBNAME) != LUA_TNIL;
  lua_pop(L, 1);
  if (!opened && mb__require_opener(name)) {
    mb__require(L, name);
    lua_pushliteral(L, ":preload:");
    return 2;
  }
  if (!opened && strcmp(name, "moonbeam.codecache") == 0) {
    luaL_requiref(L, name, open_codecache, 0);
    lua_pushliteral(L, ":preload:");
    return 2;
  }
  if (opened || !load_cached(L, name)) {
    mb__require(L, LUA_LOADLIBNAME);
    lua_getfield(L, LUA_REGISTRYINDEX, MB__REQUIRE_KEY);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 2);
    return 2;
  }
  /* As package.require: the loader's result, or true, is the module. */
  lua_rotate(L, -2, 1); /* data, chunk */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -3);
  lua_call(L, 2, 1); /* chunk(name, data) */
  if (!lua_isnil(L, -1))
    lua_setfield(L, 2, name);
  else
    lua_pop(L, 1);
  if (lua_getfield(L, 2, name) == LUA_TNIL) {
    lua_pushboolean(L, 1);
    lua_copy(L, -1, -2);
    lua_setfield(L, 2, name);
  }
  lua_rotate(L, -2, 1);
  return 2;
}

/* Put the searcher in the place of Lua's file searcher, the second of
 * package.searchers, and offer moonbeam.codecache (the package table is on
 * top of L). */
void mb__modcache_install(lua_State *L) {
  lua_getfield(L, -1, "searchers");
  lua_pushcfunction(L, searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, open_codecache);
  lua_setfield(L, -2, "moonbeam.codecache");
  lua_pop(L, 1);
}
