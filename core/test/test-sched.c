/* Scheduler: processes spread over all schedulers, a spinning process does
 * not starve others on one scheduler, and 20,000 processes exchanging
 * messages all finish. */
#include "test.h"

TEST_IMPL(runs_the_schedulers_asked_for) {
  test_node_start(2);
  ASSERT_EQ(2, mb_node_schedulers());
  test_node_stop();
  ASSERT_EQ(0, mb_node_schedulers());
}

TEST_IMPL(twenty_thousand_workers_all_reply) {
  test_node_start(2);
  long long n = 0;
  ASSERT(test_run("local mb = require 'moonbeam'\n"
                  "return function()\n"
                  "  local me = mb.self()\n"
                  "  for i = 1, 20000 do\n"
                  "    mb.spawn(function(p, i) mb.send(p, i) end, me, i)\n"
                  "  end\n"
                  "  local sum = 0\n"
                  "  for i = 1, 20000 do sum = sum + mb.receive(10000) end\n"
                  "  return sum\n"
                  "end\n",
                  &n));
  ASSERT_EQ(20000LL * 20001 / 2, n);
  test_node_stop();
}

TEST_IMPL(spinners_do_not_starve_a_reply) {
  test_node_start(2);
  long long n = 0;
  ASSERT(
      test_run("local mb = require 'moonbeam'\n"
               "return function()\n"
               "  local me = mb.self()\n"
               "  local s = {}\n"
               "  for i = 1, 4 do s[i] = mb.spawn(function()\n"
               "    local n = 0\n"
               "    while true do n = n + 1\n"
               "      if n % 1000000 == 0 and mb.receive(0) then return end\n"
               "    end end) end\n"
               "  mb.spawn(function() mb.send(me, 7) end)\n"
               "  local r = mb.receive(10000)\n"
               "  for i = 1, 4 do mb.send(s[i], 'stop') end\n"
               "  return r\n"
               "end\n",
               &n));
  ASSERT_EQ(7, n);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(runs_the_schedulers_asked_for),
          TEST_ENTRY(twenty_thousand_workers_all_reply),
          TEST_ENTRY(spinners_do_not_starve_a_reply))
