/* Registered names: atom -> pid, one name per process, freed when the
 * process ends.  Lock order: the registry, then a process. */
#include <stdlib.h>

#include <lauxlib.h>

#include "internal.h"

static uv_mutex_t lock = MB__MUTEX_INIT;
static mb__map_t names; /* atom index + 1 -> pid */

static uint64_t key(const mb__atom_t *name) {
  return (uint64_t)name->index + 1;
}

static int register_name(const mb__atom_t *name, mb_pid_t pid) {
  mb_proc_t *p = mb__proc_lookup(pid);
  if (p == NULL)
    return MB_ENOPROC;
  int err = 0;
  uv_mutex_lock(&lock);
  if (mb__map_get(&names, key(name)) != NULL) {
    err = MB_EEXIST;
  } else {
    uv_mutex_lock(&p->lock);
    if (atomic_load(&p->state) == MB_PS_EXITING)
      err = MB_ENOPROC;
    else if (p->name != NULL)
      err = MB_ESTATE;
    else
      p->name = name;
    uv_mutex_unlock(&p->lock);
    if (err == 0)
      err = mb__map_put(&names, key(name), (void *)(uintptr_t)pid);
  }
  uv_mutex_unlock(&lock);
  mb__proc_unref(p);
  return err;
}

static int unregister_name(const mb__atom_t *name) {
  uv_mutex_lock(&lock);
  mb_pid_t pid = (mb_pid_t)(uintptr_t)mb__map_del(&names, key(name));
  mb_proc_t *p = pid ? mb__proc_lookup(pid) : NULL;
  if (p != NULL) {
    uv_mutex_lock(&p->lock);
    p->name = NULL;
    uv_mutex_unlock(&p->lock);
    mb__proc_unref(p);
  }
  uv_mutex_unlock(&lock);
  return pid ? 0 : MB_ENOTFOUND;
}

mb_pid_t mb__registry_whereis(const mb__atom_t *name) {
  uv_mutex_lock(&lock);
  mb_pid_t pid = (mb_pid_t)(uintptr_t)mb__map_get(&names, key(name));
  uv_mutex_unlock(&lock);
  return pid;
}

void mb__registry_remove_proc(mb_proc_t *p) {
  uv_mutex_lock(&lock);
  uv_mutex_lock(&p->lock);
  const mb__atom_t *name = p->name;
  p->name = NULL;
  uv_mutex_unlock(&p->lock);
  if (name != NULL &&
      (mb_pid_t)(uintptr_t)mb__map_get(&names, key(name)) == p->pid)
    mb__map_del(&names, key(name));
  uv_mutex_unlock(&lock);
}

static void push_all(lua_State *L) {
  uv_mutex_lock(&lock);
  size_t n = 0, cap = names.cap, it = 0;
  uint64_t *keys = cap ? malloc(cap * sizeof *keys) : NULL, k;
  void *v;
  while (keys != NULL && mb__map_next(&names, &it, &k, &v))
    keys[n++] = k;
  uv_mutex_unlock(&lock);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const mb__atom_t *a = mb__atom_at((uint32_t)(keys[i] - 1));
    lua_pushlstring(L, a->name, a->len);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  free(keys);
}

/* ---- the Lua entry points ---- */

int mb_lua_register(lua_State *L) {
  const mb__atom_t *name = mb__check_name(L, 1);
  mb_pid_t pid = mb_lua_check_pid(L, 2);
  int err = register_name(name, pid);
  if (err == MB_EEXIST)
    return luaL_error(L, "register: the name '%s' is already registered",
                      name->name);
  if (err == MB_ESTATE)
    return luaL_error(L, "register: %s already has a registered name",
                      luaL_tolstring(L, 2, NULL));
  if (err == MB_ENOPROC)
    return luaL_error(L, "register: %s is not alive",
                      luaL_tolstring(L, 2, NULL));
  if (err)
    mb_lua_error(L, "register", err, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

int mb_lua_unregister(lua_State *L) {
  const mb__atom_t *name = mb__check_name(L, 1);
  if (unregister_name(name) != 0)
    return luaL_error(L, "unregister: no process registered as '%s'",
                      name->name);
  lua_pushboolean(L, 1);
  return 1;
}

/* whereis(name) -> pid, or nil.  A string that names no atom names no
 * process: it is looked up, never made an atom (a lookup of names from
 * outside cannot fill the atom table). */
int mb_lua_whereis(lua_State *L) {
  const mb__atom_t *name = mb__to_atom(L, 1);
  size_t len;
  const char *s;
  if (name == NULL && lua_type(L, 1) == LUA_TSTRING) {
    s = lua_tolstring(L, 1, &len);
    if (mb__atom_find(s, len, &name) != 0)
      name = NULL;
  } else if (name == NULL) {
    name = mb__check_name(L, 1); /* raises: not a name */
  }
  mb_pid_t pid = name ? mb__registry_whereis(name) : 0;
  if (pid == 0 || !mb_proc_alive(pid))
    lua_pushnil(L);
  else
    mb__push_pid(L, pid);
  return 1;
}

int mb_lua_registered(lua_State *L) {
  push_all(L);
  return 1;
}
