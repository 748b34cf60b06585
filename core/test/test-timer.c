/* Timers: receive timeouts, sleeps and send_after from many processes at
 * once; cancelled timers never fire. */
#include "test.h"

int main(void) {
  mb_config_t cfg = {0};
  cfg.schedulers = 2;
  ASSERT_EQ(0, mb_node_start(&cfg));
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  for i = 1, 1000 do mb.spawn(function()\n"
      "    local _, why = mb.receive(i % 20)\n"
      "    assert(why == 'timeout')\n"
      "    mb.sleep(i % 7)\n"
      "    local t = mb.send_after(1000, me, 'cancelled')\n"
      "    assert(mb.cancel_timer(t))\n"
      "    mb.send_after(i % 5, me, 'tick')\n"
      "  end) end\n"
      "  for i = 1, 1000 do assert(mb.receive(10000) == 'tick') end\n"
      "  local m, why = mb.receive(1100)\n"
      "  assert(why == 'timeout', 'a cancelled timer fired')\n"
      "  return 1000\n"
      "end\n",
      &n));
  ASSERT_EQ(1000, n);
  ASSERT_EQ(0, mb_node_stop());
  printf("ok\n");
  return 0;
}
