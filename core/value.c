/* How Erlang-like values look in Lua.
 *
 *  - atom:  a light userdata holding (index << 1) | 1, so equal atoms are
 *           equal Lua values and work as table keys with no allocation;
 *  - pid, ref: full userdata, interned per state in a weak table so that
 *           equal pids are the same Lua value (== and table keys work);
 *  - tuple, list, map: tables carrying a marker metatable; a tuple and a
 *           list also carry their length in field `n` (as table.pack does),
 *           so nil elements survive. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "internal.h"

static const char cache_key = 'c';
static _Atomic uint64_t next_ref = 1;

uint64_t mb__ref_next(void) { return atomic_fetch_add(&next_ref, 1); }

/* ---- atoms ---- */

const mb__atom_t *mb__to_atom(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TLIGHTUSERDATA)
    return NULL;
  uintptr_t v = (uintptr_t)lua_touserdata(L, idx);
  if ((v & 1) == 0)
    return NULL;
  return mb__atom_at((uint32_t)(v >> 1));
}

static int atom_tostring(lua_State *L) {
  const mb__atom_t *a = mb__to_atom(L, 1);
  if (a == NULL)
    return luaL_error(L, "light userdata is not an atom");
  lua_pushlstring(L, a->name, a->len);
  return 1;
}

static int atom_lt(lua_State *L) {
  const mb__atom_t *a = mb__to_atom(L, 1), *b = mb__to_atom(L, 2);
  if (a == NULL || b == NULL)
    return luaL_error(L, "attempt to compare an atom with another value");
  int c = strcmp(a->name, b->name);
  lua_pushboolean(L, c < 0);
  return 1;
}

static int atom_le(lua_State *L) {
  const mb__atom_t *a = mb__to_atom(L, 1), *b = mb__to_atom(L, 2);
  if (a == NULL || b == NULL)
    return luaL_error(L, "attempt to compare an atom with another value");
  lua_pushboolean(L, strcmp(a->name, b->name) <= 0);
  return 1;
}

void mb__push_atom(lua_State *L, const mb__atom_t *a) {
  lua_pushlightuserdata(L, (void *)(((uintptr_t)a->index << 1) | 1));
  if (lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  /* First atom in this state: give light userdata the atom metatable. */
  static const luaL_Reg mt[] = {{"__tostring", atom_tostring},
                                {"__lt", atom_lt},
                                {"__le", atom_le},
                                {NULL, NULL}};
  luaL_newlib(L, mt);
  lua_pushliteral(L, "atom");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
}

/* ---- pids and refs ---- */

static void push_cache(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cache_key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &cache_key);
}

static int pid_tostring(lua_State *L) {
  mb__lpid_t *p = luaL_checkudata(L, 1, MB_PID_MT);
  lua_pushfstring(L, "<0.%d.%d>", (int)MB_PID_ID(p->id),
                  (int)MB_PID_SERIAL(p->id));
  return 1;
}

static int pid_lt(lua_State *L) {
  mb__lpid_t *a = luaL_checkudata(L, 1, MB_PID_MT);
  mb__lpid_t *b = luaL_checkudata(L, 2, MB_PID_MT);
  lua_pushboolean(L, a->id < b->id);
  return 1;
}

static int pid_le(lua_State *L) {
  mb__lpid_t *a = luaL_checkudata(L, 1, MB_PID_MT);
  mb__lpid_t *b = luaL_checkudata(L, 2, MB_PID_MT);
  lua_pushboolean(L, a->id <= b->id);
  return 1;
}

static int ref_tostring(lua_State *L) {
  mb__lref_t *r = luaL_checkudata(L, 1, MB_REF_MT);
  lua_pushfstring(L, "#Ref<0.%d.%d.0>", (int)(r->id >> 32),
                  (int)(r->id & 0xffffffffu));
  return 1;
}

static int ref_lt(lua_State *L) {
  mb__lref_t *a = luaL_checkudata(L, 1, MB_REF_MT);
  mb__lref_t *b = luaL_checkudata(L, 2, MB_REF_MT);
  lua_pushboolean(L, a->id < b->id);
  return 1;
}

/* A pid keeps the process it last sent to, so that sending again skips
 * the process table; the reference goes when the pid is collected. */
static int pid_gc(lua_State *L) {
  mb__lpid_t *p = lua_touserdata(L, 1);
  if (p->proc != NULL)
    mb__proc_unref(p->proc);
  p->proc = NULL;
  return 0;
}

static void set_mt(lua_State *L, const char *name, lua_CFunction tostring,
                   lua_CFunction lt, lua_CFunction le) {
  if (luaL_newmetatable(L, name)) {
    if (tostring == pid_tostring) {
      lua_pushcfunction(L, pid_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, lt);
    lua_setfield(L, -2, "__lt");
    lua_pushcfunction(L, le);
    lua_setfield(L, -2, "__le");
  }
  lua_setmetatable(L, -2);
}

static int ref_le(lua_State *L) {
  mb__lref_t *a = luaL_checkudata(L, 1, MB_REF_MT);
  mb__lref_t *b = luaL_checkudata(L, 2, MB_REF_MT);
  lua_pushboolean(L, a->id <= b->id);
  return 1;
}

void mb__push_pid(lua_State *L, mb_pid_t pid) {
  push_cache(L);
  if (lua_rawgeti(L, -1, (lua_Integer)pid) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  mb__lpid_t *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->id = pid;
  p->proc = NULL;
  set_mt(L, MB_PID_MT, pid_tostring, pid_lt, pid_le);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, (lua_Integer)pid);
  lua_remove(L, -2);
}

void mb__push_ref(lua_State *L, uint64_t ref) {
  /* Pids use integer keys in the cache; refs use negative ones. */
  lua_Integer key = -(lua_Integer)(ref & 0x7fffffffffffffffULL) - 1;
  push_cache(L);
  if (lua_rawgeti(L, -1, key) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  mb__lref_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->id = ref;
  set_mt(L, MB_REF_MT, ref_tostring, ref_lt, ref_le);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, key);
  lua_remove(L, -2);
}

mb__lpid_t *mb__to_pid(lua_State *L, int idx) {
  return luaL_testudata(L, idx, MB_PID_MT);
}

mb__lref_t *mb__to_ref(lua_State *L, int idx) {
  return luaL_testudata(L, idx, MB_REF_MT);
}

/* ---- tuples, lists, maps ---- */

static void put_quoted(luaL_Buffer *b, lua_State *L, int idx) {
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  luaL_addchar(b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(b, '\\');
      luaL_addchar(b, (char)c);
    } else if (c < 32 || c == 127) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\%d", c);
      luaL_addstring(b, esc);
    } else {
      luaL_addchar(b, (char)c);
    }
  }
  luaL_addchar(b, '"');
}

/* Shallow, Erlang-looking rendering: {a, b} for tuples, [a, b] for lists. */
static int seq_tostring(lua_State *L, char open, char close) {
  luaL_checkstack(L, 8, "tostring");
  lua_getfield(L, 1, "n");
  lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1)
                                       : (lua_Integer)lua_rawlen(L, 1);
  lua_pop(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, open);
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addstring(&b, ", ");
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) == LUA_TSTRING) {
      put_quoted(&b, L, -1);
      lua_pop(L, 1);
    } else {
      luaL_tolstring(L, -1, NULL);
      lua_remove(L, -2);
      luaL_addvalue(&b);
    }
  }
  luaL_addchar(&b, close);
  luaL_pushresult(&b);
  return 1;
}

static int tuple_tostring(lua_State *L) { return seq_tostring(L, '{', '}'); }
static int list_tostring(lua_State *L) { return seq_tostring(L, '[', ']'); }

void mb__push_kind_mt(lua_State *L, mb__table_kind_t kind) {
  static const char *names[] = {NULL, MB_TUPLE_MT, MB_LIST_MT, MB_MAP_MT};
  static const char *short_names[] = {NULL, "tuple", "list", "map"};
  if (luaL_newmetatable(L, names[kind])) {
    lua_pushstring(L, short_names[kind]);
    lua_setfield(L, -2, "__name");
    if (kind == MB_KIND_TUPLE) {
      lua_pushcfunction(L, tuple_tostring);
      lua_setfield(L, -2, "__tostring");
    } else if (kind == MB_KIND_LIST) {
      lua_pushcfunction(L, list_tostring);
      lua_setfield(L, -2, "__tostring");
    }
  }
}

mb__table_kind_t mb__table_kind(lua_State *L, int idx) {
  static const char *names[] = {NULL, MB_TUPLE_MT, MB_LIST_MT, MB_MAP_MT};
  if (!lua_getmetatable(L, idx))
    return MB_KIND_PLAIN;
  mb__table_kind_t kind = MB_KIND_PLAIN;
  for (int k = MB_KIND_TUPLE; k <= MB_KIND_MAP && kind == MB_KIND_PLAIN; k++) {
    luaL_getmetatable(L, names[k]);
    if (lua_rawequal(L, -1, -2))
      kind = (mb__table_kind_t)k;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return kind;
}
