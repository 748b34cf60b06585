/* Timers: receive timeouts, sleeps and send_after from many processes at
 * once; cancelled timers never fire. */
#include "test.h"

TEST_IMPL(timeouts_sleeps_and_send_after_from_many_processes) {
  test_node_start(2);
  long long n = 0;
  ASSERT(
      test_run("local mb = require 'moonbeam'\n"
               "return function()\n"
               "  local me = mb.self()\n"
               "  for i = 1, 1000 do mb.spawn(function()\n"
               "    local _, why = mb.receive(i % 20)\n"
               "    assert(why == 'timeout')\n"
               "    mb.sleep(i % 7)\n"
               "    mb.send_after(i % 5, me, 'tick')\n"
               "  end) end\n"
               "  for i = 1, 1000 do assert(mb.receive(10000) == 'tick') end\n"
               "  return 1000\n"
               "end\n",
               &n));
  ASSERT_EQ(1000, n);
  test_node_stop();
}

TEST_IMPL(cancelled_timers_never_fire) {
  test_node_start(2);
  long long n = 0;
  ASSERT(test_run("local mb = require 'moonbeam'\n"
                  "return function()\n"
                  "  local me = mb.self()\n"
                  "  for i = 1, 1000 do mb.spawn(function()\n"
                  "    local t = mb.send_after(1000, me, 'cancelled')\n"
                  "    assert(mb.cancel_timer(t))\n"
                  "    mb.send(me, 'armed and cancelled')\n"
                  "  end) end\n"
                  "  for i = 1, 1000 do mb.receive(10000) end\n"
                  "  local m, why = mb.receive(1100)\n"
                  "  assert(why == 'timeout', 'a cancelled timer fired')\n"
                  "  return 1000\n"
                  "end\n",
                  &n));
  ASSERT_EQ(1000, n);
  test_node_stop();
}

/* Timers of 20 ms and more wait for the loop's next sweep before they
 * start (timer.c): they still fire, never before their deadline, and one
 * cancelled before the sweep never fires. */
TEST_IMPL(deferred_timers_fire_at_their_deadline_or_never) {
  test_node_start(2);
  long long n = 0;
  ASSERT(
      test_run("local mb = require 'moonbeam'\n"
               "return function()\n"
               "  local me = mb.self()\n"
               "  for i = 1, 200 do mb.spawn(function()\n"
               "    local ms = 20 + i % 30\n"
               "    local t0 = mb.monotonic_time()\n"
               "    local _, why = mb.receive(ms)\n"
               "    assert(why == 'timeout')\n"
               "    assert(mb.monotonic_time() - t0 >= ms * 1000000,\n"
               "      'a timeout came early')\n"
               /* 10 s more, so that a process held off its core
                * cannot see it fire before it cancels it */
               "    local t = mb.send_after(ms + 10000, me, 'cancelled')\n"
               "    local left = mb.cancel_timer(t)\n"
               "    assert(math.type(left) == 'integer' and left <= ms + 10000)\n"
               "    t0 = mb.monotonic_time()\n"
               "    mb.send_after(ms, mb.self(), 'late')\n"
               "    assert(mb.receive(10000) == 'late')\n"
               "    assert(mb.monotonic_time() - t0 >= ms * 1000000,\n"
               "      'a send_after came early')\n"
               "    mb.send(me, 'done')\n"
               "  end) end\n"
               "  for i = 1, 200 do assert(mb.receive(10000) == 'done') end\n"
               "  local m, why = mb.receive(100)\n"
               "  assert(why == 'timeout', 'a cancelled timer fired: ' ..\n"
               "    tostring(m))\n"
               "  return 200\n"
               "end\n",
               &n));
  ASSERT_EQ(200, n);
  test_node_stop();
}

/* A node stops cleanly while deferred timers still wait for their sweep:
 * mb__timer_stop frees them, though they never reached the loop. */
TEST_IMPL(stopping_with_deferred_timers) {
  test_node_start(1);
  long long n = 0;
  ASSERT(test_run("local mb = require 'moonbeam'\n"
                  "return function()\n"
                  "  for i = 1, 50 do mb.send_after(60000, mb.self(), i) end\n"
                  "  return 50\n"
                  "end\n",
                  &n));
  ASSERT_EQ(50, n);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(timeouts_sleeps_and_send_after_from_many_processes),
          TEST_ENTRY(cancelled_timers_never_fire),
          TEST_ENTRY(deferred_timers_fire_at_their_deadline_or_never),
          TEST_ENTRY(stopping_with_deferred_timers))
