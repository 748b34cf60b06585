/* A message decodes to an equal value in another state, and an unsendable
 * value is refused with the path to it. */
#include "../internal.h"
#include "test.h"

static const char *roundtrip =
    "local t = {1, 2.5, 'x\\0y', true, false, {a = {b = {c = 'deep'}}},\n"
    "  [10] = 'hole', [math.maxinteger] = math.mininteger}\n"
    "t.self = t\n"
    "t.shared1 = t[6]; t.shared2 = t[6]\n"
    "return t\n";

static const char *check =
    "local t = ...\n"
    "assert(t[1] == 1 and math.type(t[1]) == 'integer')\n"
    "assert(t[2] == 2.5 and t[3] == 'x\\0y' and t[4] == true and t[5] == "
    "false)\n"
    "assert(t[6].a.b.c == 'deep' and t[10] == 'hole')\n"
    "assert(t[math.maxinteger] == math.mininteger)\n"
    "assert(t.self == t and t.shared1 == t.shared2 and t.shared1 == t[6])\n";

int main(void) {
  lua_State *a = luaL_newstate(), *b = luaL_newstate();
  luaL_openlibs(a);
  luaL_openlibs(b);
  ASSERT_EQ(LUA_OK, luaL_dostring(a, roundtrip));
  mb_msg_t *m;
  char err[256];
  ASSERT_EQ(0, mb_msg_encode(a, -1, &m, err, sizeof err));
  ASSERT_EQ(LUA_OK, luaL_loadstring(b, check));
  mb_msg_decode(b, m);
  if (lua_pcall(b, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(b, -1));
    return 1;
  }
  mb_msg_free(m);

  ASSERT_EQ(LUA_OK,
            luaL_dostring(a, "return {x = {1, coroutine.create(print)}}"));
  ASSERT_EQ(MB_EBADTERM, mb_msg_encode(a, -1, &m, err, sizeof err));
  ASSERT(strstr(err, "cannot send a coroutine at value.x[2]") != NULL);

  /* Nesting up to the limit is copied; one level more is refused. */
  ASSERT_EQ(LUA_OK, luaL_dostring(a, "local t = {} for i = 2, 200000 do "
                                     "t = {t} end return t"));
  ASSERT_EQ(0, mb_msg_encode(a, -1, &m, err, sizeof err));
  ASSERT_EQ(0, mb_msg_decode(b, m));
  mb_msg_free(m);
  lua_pop(b, 1);
  lua_createtable(a, 1, 0); /* {chain}: one level more */
  lua_pushvalue(a, -2);
  lua_rawseti(a, -2, 1);
  ASSERT_EQ(MB_EBADTERM, mb_msg_encode(a, -1, &m, err, sizeof err));
  ASSERT(strstr(err, "nested more than 200000 levels deep at value[1][1]") !=
         NULL);

  lua_close(a);
  lua_close(b);
  printf("ok\n");
  return 0;
}
