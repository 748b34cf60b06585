/* A tiny harness for the core's C tests: each test is its own program, run
 * by ctest with a timeout, as libuv's tests are. */
#ifndef MB_TEST_H
#define MB_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "moonbeam.h"

#define ASSERT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__,   \
              #cond);                                                         \
      abort();                                                                \
    }                                                                         \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT((a) == (b))

int luaopen_moonbeam(lua_State *L);

/* Compile `code` (a chunk returning a function) into a message. */
static inline mb_msg_t *test_function(const char *code) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "moonbeam", luaopen_moonbeam, 0);
  lua_pop(L, 1);
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  mb_msg_t *m = NULL;
  char err[256];
  if (mb_msg_encode(L, -1, &m, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
  lua_close(L);
  return m;
}

/* Run the function `code` returns as a process; wait for it (bounded) and
 * return 1 if it returned, 0 if it crashed.  Its first result, when it is
 * an integer, goes to *result. */
static inline int test_run(const char *code, long long *result) {
  mb_spawn_opts_t o = {0};
  mb_waiter_t *w;
  o.fn = test_function(code);
  o.waiter = &w;
  ASSERT_EQ(0, mb_proc_spawn_opts(&o, NULL));
  mb_msg_t *r = NULL;
  int normal = 0;
  ASSERT_EQ(0, mb_waiter_wait(w, 60000, &r, &normal));
  mb_waiter_free(w);
  if (result != NULL) {
    lua_State *L = luaL_newstate();
    mb_msg_decode(L, r);
    lua_rawgeti(L, -1, 1);
    *result = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    lua_close(L);
  }
  mb_msg_free(r);
  return normal;
}

#endif
