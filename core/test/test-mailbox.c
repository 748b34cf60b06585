/* Mailboxes under concurrency: many senders on many threads, per-sender
 * order kept, nothing lost; selective receive skips and keeps. */
#include "test.h"

int main(void) {
  mb_config_t cfg = {0};
  cfg.schedulers = 4;
  ASSERT_EQ(0, mb_node_start(&cfg));
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me, senders, per = mb.self(), 16, 2000\n"
      "  for s = 1, senders do\n"
      "    mb.spawn(function() for i = 1, per do mb.send(me, {s, i}) end end)\n"
      "  end\n"
      "  local last, got = {}, 0\n"
      "  for s = 1, senders do last[s] = 0 end\n"
      "  -- take odd-numbered messages of sender 1 first, selectively\n"
      "  for i = 1, per, 2 do\n"
      "    local m = mb.receive(function(m) return m[1] == 1 and m[2] % 2 == 1 end, 10000)\n"
      "    assert(m[2] == i, 'selective order')\n"
      "    got = got + 1\n"
      "  end\n"
      "  last[1] = -1\n"
      "  while got < senders * per do\n"
      "    local m = assert(mb.receive(10000))\n"
      "    local s, i = m[1], m[2]\n"
      "    if s == 1 then assert(i % 2 == 0 and i > last[1]) last[1] = i\n"
      "    else assert(i == last[s] + 1, 'order') last[s] = i end\n"
      "    got = got + 1\n"
      "  end\n"
      "  return got\n"
      "end\n",
      &n));
  ASSERT_EQ(16 * 2000, n);
  ASSERT_EQ(0, mb_node_stop());
  printf("ok\n");
  return 0;
}
