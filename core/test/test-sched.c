/* Scheduler: processes spread over all schedulers, a spinning process does
 * not starve others on one scheduler, and 20,000 processes exchanging
 * messages all finish. */
#include "test.h"

int main(void) {
  mb_config_t cfg = {0};
  cfg.schedulers = 2;
  ASSERT_EQ(0, mb_node_start(&cfg));
  ASSERT_EQ(2, mb_node_schedulers());

  /* Fan out 20,000 workers that each reply; collect every reply. */
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

  /* Spinners on every scheduler, and still a reply gets through. */
  ASSERT(test_run("local mb = require 'moonbeam'\n"
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
  ASSERT_EQ(0, mb_node_stop());
  printf("ok\n");
  return 0;
}
