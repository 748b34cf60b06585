/* moonbeam.term: Erlang's external term format for Lua, as the BIFs
 * term_to_binary and binary_to_term (docs/terms.md).  What a peer sends
 * is untrusted: binary_to_term checks every byte and answers nil and a
 * reason for what is not one whole term, never raising. */
#include <string.h>

#include <lauxlib.h>

#include "../core/moonbeam.h"
#include "lmoonbeam.h"

/* term_to_binary(value) -> string; raises for a value that has no term
 * (a function, a coroutine), naming where it is. */
static int l_term_to_binary(lua_State *L) {
  char err[600];
  luaL_checkany(L, 1);
  if (mb_value_to_term(L, 1, err, sizeof err) != 0)
    return luaL_error(L, "term_to_binary: %s", err);
  return 1;
}

/* Is option `safe` given: the string "safe", {"safe"} or {safe = true}? */
static int safe_opt(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return 0;
  if (lua_type(L, idx) == LUA_TSTRING) {
    luaL_argcheck(L, strcmp(lua_tostring(L, idx), "safe") == 0, idx,
                  "\"safe\" expected");
    return 1;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  int safe = lua_getfield(L, idx, "safe") != LUA_TNIL && lua_toboolean(L, -1);
  lua_pop(L, 1);
  for (lua_Integer i = 1; lua_rawgeti(L, idx, i) != LUA_TNIL; i++) {
    const char *o = lua_tostring(L, -1);
    luaL_argcheck(L, o != NULL && strcmp(o, "safe") == 0, idx,
                  "unknown option");
    safe = 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return safe;
}

/* binary_to_term(bytes, [opts]) -> value, or nil, reason.  The atom nil
 * decodes to nil as well: a second result tells the two apart. */
static int l_binary_to_term(lua_State *L) {
  size_t len;
  const char *buf = luaL_checklstring(L, 1, &len);
  int safe = safe_opt(L, 2);
  char err[200];
  if (mb_value_from_term(L, buf, len, safe, err, sizeof err) == 0)
    return 1;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

int luaopen_moonbeam_term(lua_State *L) {
  static const luaL_Reg funcs[] = {{"term_to_binary", l_term_to_binary},
                                   {"binary_to_term", l_binary_to_term},
                                   {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
