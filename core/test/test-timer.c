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

TEST_LIST(TEST_ENTRY(timeouts_sleeps_and_send_after_from_many_processes),
          TEST_ENTRY(cancelled_timers_never_fire))
