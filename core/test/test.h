/* A tiny harness for the core's C tests, after libuv's runner: a test file
 * holds named cases (TEST_IMPL), listed once in TEST_LIST.  The program runs
 * the case named by its argument, or, with none, every case in a child
 * process of its own with a timeout.  CMake registers each case with ctest
 * as file/case (CMakeLists.txt reads the TEST_IMPL lines), so that a
 * case runs, fails and times out on its own. */
#ifndef MB_TEST_H
#define MB_TEST_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "moonbeam.h"

#define ASSERT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT((a) == (b))

#define TEST_TIMEOUT_S 110 /* within ctest's 120 s */

typedef struct {
  const char *name;
  void (*fn)(void);
} test_case_t;

#define TEST_IMPL(name) static void test_##name(void)
#define TEST_ENTRY(name)                                                       \
  { #name, test_##name }
/* The file's cases, in the order they run:
 * TEST_LIST(TEST_ENTRY(a), TEST_ENTRY(b), ...). */
#define TEST_LIST(...)                                                         \
  static const test_case_t test_cases[] = {__VA_ARGS__, {NULL, NULL}};         \
  int main(int argc, char **argv) { return test_main(argc, argv, test_cases); }

/* One case in a child process: its exit status (0 passed). */
static inline int test_fork(const char *self, const char *name) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return 1;
  if (pid == 0) {
    alarm(TEST_TIMEOUT_S); /* kept across exec: a hung case is killed */
    execl(self, self, name, (char *)NULL);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    ;
  if (WIFSIGNALED(status))
    fprintf(stderr, "%s: killed by signal %d\n", name, WTERMSIG(status));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static inline int test_main(int argc, char **argv, const test_case_t *cases) {
  if (argc > 1) {
    for (const test_case_t *c = cases; c->name; c++)
      if (strcmp(c->name, argv[1]) == 0) {
        c->fn();
        printf("ok %s\n", c->name);
        return 0;
      }
    fprintf(stderr, "no test case named %s\n", argv[1]);
    return 2;
  }
  int failed = 0;
  for (const test_case_t *c = cases; c->name; c++) {
    int r = test_fork(argv[0], c->name);
    if (r != 0)
      printf("not ok %s\n", c->name);
    failed += r != 0;
  }
  return failed != 0;
}

int luaopen_moonbeam(lua_State *L);

/* A node with n schedulers, for one case; test_node_stop ends it. */
static inline void test_node_start(int n) {
  mb_config_t cfg = {0};
  cfg.schedulers = n;
  ASSERT_EQ(0, mb_node_start(&cfg));
}

static inline void test_node_stop(void) { ASSERT_EQ(0, mb_node_stop()); }

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
