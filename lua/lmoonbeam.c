/* moonbeam: the Lua binding of the core, one function per primitive.
 * The friendly layer lives in stdlib/. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/internal.h"

#define DEFAULT_RUN_TIMEOUT_MS 60000

static long run_timeout_ms = DEFAULT_RUN_TIMEOUT_MS;

static void check_err(lua_State *L, int err, const char *fname) {
  if (err != 0)
    luaL_error(L, "%s: %s", fname, mb_strerror(err));
}

/* A host that started the node stops it when it exits, so that no
 * scheduler thread runs while the OS process tears itself down. */
static void stop_at_exit(void) { mb_node_stop(); }

static int start_node(mb_config_t *cfg) {
  int err = mb_node_start(cfg);
  if (err == 0)
    atexit(stop_at_exit);
  return err;
}

static void ensure_node(lua_State *L) {
  if (mb_node_started())
    return;
  mb_config_t cfg = {0};
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    cfg.lua_path = lua_tostring(L, -2);
    cfg.lua_cpath = lua_tostring(L, -1);
  }
  int err = start_node(&cfg);
  lua_settop(L, top);
  check_err(L, err, "start");
}

/* Encode value idx or raise "fname: cannot send ... at path". */
static mb_msg_t *encode(lua_State *L, int idx, const char *root,
                        const char *fname) {
  char err[600];
  mb_msg_t *m;
  int r = mb__msg_encode(L, idx, root, &m, err, sizeof err);
  if (r == MB_EBADTERM)
    luaL_error(L, "%s: %s", fname, err);
  check_err(L, r, fname);
  return m;
}

/* Encode arguments first..top as a table {n = count, ...}. */
static mb_msg_t *encode_args(lua_State *L, int first, const char *fname) {
  int top = lua_gettop(L);
  if (first > top)
    return NULL;
  int n = top - first + 1;
  lua_createtable(L, n, 1);
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  mb_msg_t *m = encode(L, -1, "args", fname);
  lua_pop(L, 1);
  return m;
}

static mb_pid_t check_pid(lua_State *L, int idx) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p == NULL)
    luaL_typeerror(L, idx, "pid");
  return p->id;
}

/* ---- processes ---- */

static int l_self(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL)
    return luaL_error(L, "self: not called inside a moonbeam process");
  mb__push_pid(L, p->pid);
  return 1;
}

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
  o->fn = encode(L, 1, "function", fname);
  return 2;
}

static int l_spawn(lua_State *L) {
  ensure_node(L);
  mb_spawn_opts_t o = {0};
  int first = spawn_target(L, &o, "spawn");
  o.args = encode_args(L, first, "spawn");
  mb_pid_t pid;
  check_err(L, mb_proc_spawn_opts(&o, &pid), "spawn");
  mb__push_pid(L, pid);
  return 1;
}

static int l_send(lua_State *L) {
  mb_pid_t to = check_pid(L, 1);
  luaL_checkany(L, 2);
  mb_msg_t *m = encode(L, 2, "msg", "send");
  mb_proc_t *self = MB_PROC(L);
  m->from = self ? self->pid : 0;
  mb_proc_send(to, m);
  return 0;
}

static int l_send_after(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "time must not be negative");
  mb_pid_t to = check_pid(L, 2);
  luaL_checkany(L, 3);
  ensure_node(L);
  mb_msg_t *m = encode(L, 3, "msg", "send_after");
  uint64_t id = mb__ref_next();
  check_err(L, mb__timer_send((uint64_t)ms, to, m, id), "send_after");
  mb__push_ref(L, id);
  return 1;
}

static int l_cancel_timer(lua_State *L) {
  mb__lref_t *r = mb__to_ref(L, 1);
  if (r == NULL)
    return luaL_typeerror(L, 1, "timer ref");
  int64_t left = mb__timer_cancel(r->id);
  if (left < 0)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, (lua_Integer)left);
  return 1;
}

static int l_make_ref(lua_State *L) {
  mb__push_ref(L, mb__ref_next());
  return 1;
}

static int l_is_alive(lua_State *L) {
  lua_pushboolean(L, mb_proc_alive(check_pid(L, 1)));
  return 1;
}

static int l_process_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mb_proc_count());
  return 1;
}

static int l_memory(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "memory");
  lua_pushinteger(L, (lua_Integer)p->mem);
  return 1;
}

/* ---- values ---- */

static int l_atom(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const mb__atom_t *a;
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ETOOBIG)
    return luaL_argerror(L, 1, "atom name longer than 255 bytes");
  check_err(L, err, "atom");
  mb__push_atom(L, a);
  return 1;
}

static int make_seq(lua_State *L, mb__table_kind_t kind) {
  int n = lua_gettop(L);
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  mb__push_kind_mt(L, kind);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_tuple(lua_State *L) { return make_seq(L, MB_KIND_TUPLE); }
static int l_list(lua_State *L) { return make_seq(L, MB_KIND_LIST); }

static int l_map(lua_State *L) {
  if (lua_isnoneornil(L, 1))
    lua_newtable(L);
  else
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  mb__push_kind_mt(L, MB_KIND_MAP);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_typeof(lua_State *L) {
  luaL_checkany(L, 1);
  const char *t = luaL_typename(L, 1);
  if (mb__to_atom(L, 1))
    t = "atom";
  else if (mb__to_pid(L, 1))
    t = "pid";
  else if (mb__to_ref(L, 1))
    t = "ref";
  else if (lua_istable(L, 1)) {
    static const char *kinds[] = {"table", "tuple", "list", "map"};
    t = kinds[mb__table_kind(L, 1)];
  }
  lua_pushstring(L, t);
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
    lua_pop(L, 3);
  }
  if (mb_node_started()) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "node already started");
    return 2;
  }
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    cfg.lua_path = lua_tostring(L, -2);
    cfg.lua_cpath = lua_tostring(L, -1);
  }
  check_err(L, start_node(&cfg), "start");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_schedulers(lua_State *L) {
  lua_pushinteger(L, mb_node_schedulers());
  return 1;
}

/* Raise the exit reason of a crashed process in the caller. */
static int raise_reason(lua_State *L) {
  if (mb__table_kind(L, -1) == MB_KIND_TUPLE) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    if (lua_type(L, -1) == LUA_TSTRING) {
      luaL_tolstring(L, -2, NULL);
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
  if (MB_PROC(L) != NULL)
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

static const luaL_Reg funcs[] = {
    {"self", l_self},
    {"spawn", l_spawn},
    {"send", l_send},
    {"receive", mb__receive},
    {"sleep", mb__sleep},
    {"send_after", l_send_after},
    {"cancel_timer", l_cancel_timer},
    {"make_ref", l_make_ref},
    {"is_alive", l_is_alive},
    {"process_count", l_process_count},
    {"memory", l_memory},
    {"atom", l_atom},
    {"tuple", l_tuple},
    {"list", l_list},
    {"map", l_map},
    {"typeof", l_typeof},
    {"start", l_start},
    {"schedulers", l_schedulers},
    {"run", l_run},
    {NULL, NULL}};

/* The module's functions are set on first use, so that a process that
 * uses two of them does not pay for a table of all of them. */
static int lazy_field(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  for (const luaL_Reg *f = funcs; k != NULL && f->name; f++)
    if (strcmp(f->name, k) == 0) {
      lua_pushcfunction(L, f->func);
      lua_pushvalue(L, -1);
      lua_setfield(L, 1, k);
      return 1;
    }
  return 0;
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

int luaopen_moonbeam(lua_State *L) {
  mb_node_preload("moonbeam", luaopen_moonbeam);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, MB_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushcfunction(L, l_names);
  lua_setfield(L, -2, "names");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_field);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
