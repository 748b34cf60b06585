/* Blank states made ahead of demand: idle schedulers fill the pool, spawns
 * take from it, a memory limit below a blank state refuses the spawn as a
 * fresh state would, spawns from many threads share it, and stopping the
 * node frees what is left (the sanitizer builds see a leak). */
#include "../internal.h"
#include "test.h"

/* Wait, bounded, until the pool holds at least n states. */
static int pool_reaches(int n) {
  for (int i = 0; i < 5000; i++) {
    if (mb__proc_pool_size() >= n)
      return 1;
    usleep(1000);
  }
  return 0;
}

TEST_IMPL(idle_schedulers_fill_the_pool_and_spawns_take_from_it) {
  test_node_start(2);
  ASSERT(pool_reaches(16));
  int before = mb__proc_pool_size();
  size_t taken = mb__proc_pool_taken();
  long long n = 0;
  /* Ten processes spawned in a row, each telling its memory: a blank state
   * serves as a fresh one, and it counts as the process's own. */
  ASSERT(test_run("local mb = require 'moonbeam'\n"
                  "return function()\n"
                  "  local me, sum = mb.self(), 0\n"
                  "  for i = 1, 10 do\n"
                  "    mb.spawn(function(p, i) mb.send(p, {i, mb.memory()}) end,\n"
                  "             me, i)\n"
                  "  end\n"
                  "  for _ = 1, 10 do\n"
                  "    local r = mb.receive(10000)\n"
                  "    assert(r[2] > 4000, 'memory of a process: ' .. r[2])\n"
                  "    sum = sum + r[1]\n"
                  "  end\n"
                  "  return sum\n"
                  "end\n",
                  &n));
  ASSERT_EQ(55, n);
  /* The pool held more than the eleven spawns (the ten and the test's
   * own): each took a blank state, and idle time made new ones. */
  ASSERT_EQ(taken + 11, mb__proc_pool_taken());
  ASSERT(pool_reaches(before));
  test_node_stop();
}

TEST_IMPL(a_limit_below_a_blank_state_refuses_the_spawn) {
  test_node_start(1);
  for (int pooled = 1; pooled >= 0; pooled--) {
    if (pooled)
      ASSERT(pool_reaches(1));
    else
      mb__proc_pool_drain(); /* this spawn may make its own */
    mb_spawn_opts_t o = {0};
    o.fn = test_function("return function() end");
    o.max_heap = 1000;
    size_t alive = mb_proc_count();
    ASSERT_EQ(MB_ENOMEM, mb_proc_spawn_opts(&o, NULL));
    ASSERT_EQ(alive, mb_proc_count());
  }
  test_node_stop();
}

#define THREADS 4
#define PER_THREAD 300

static void spawner(void *arg) {
  int *ok = arg;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  ASSERT(luaL_dostring(L, "return function(i) return i end") == LUA_OK);
  mb_waiter_t *w[PER_THREAD];
  for (int i = 0; i < PER_THREAD; i++) {
    mb_spawn_opts_t o = {0};
    char err[128];
    ASSERT_EQ(0, mb_msg_encode(L, -1, &o.fn, err, sizeof err));
    o.waiter = &w[i];
    ASSERT_EQ(0, mb_proc_spawn_opts(&o, NULL));
  }
  for (int i = 0; i < PER_THREAD; i++) {
    mb_msg_t *r = NULL;
    int normal = 0;
    ASSERT_EQ(0, mb_waiter_wait(w[i], 60000, &r, &normal));
    mb_waiter_free(w[i]);
    mb_msg_free(r);
    *ok += normal;
  }
  lua_close(L);
}

TEST_IMPL(spawns_from_many_threads_share_the_pool) {
  test_node_start(2);
  ASSERT(pool_reaches(8));
  uv_thread_t t[THREADS];
  int ok[THREADS] = {0};
  for (int i = 0; i < THREADS; i++)
    ASSERT_EQ(0, uv_thread_create(&t[i], spawner, &ok[i]));
  for (int i = 0; i < THREADS; i++) {
    uv_thread_join(&t[i]);
    ASSERT_EQ(PER_THREAD, ok[i]);
  }
  test_node_stop(); /* with what the pool holds: freed here */
}

TEST_LIST(TEST_ENTRY(idle_schedulers_fill_the_pool_and_spawns_take_from_it),
          TEST_ENTRY(a_limit_below_a_blank_state_refuses_the_spawn),
          TEST_ENTRY(spawns_from_many_threads_share_the_pool))
