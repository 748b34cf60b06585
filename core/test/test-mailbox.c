/* Mailboxes under concurrency: many senders on many threads, per-sender
 * order kept, nothing lost; selective receive skips and keeps. */
#include "test.h"

/* 16 senders of 2000 messages each, {sender, i}, to the receiver. */
#define SENDERS                                                                \
  "local mb = require 'moonbeam'\n"                                            \
  "local senders, per = 16, 2000\n"                                            \
  "local function start(me)\n"                                                 \
  "  for s = 1, senders do\n"                                                  \
  "    mb.spawn(function() for i = 1, per do mb.send(me, {s, i}) end end)\n"   \
  "  end\n"                                                                    \
  "end\n"

TEST_IMPL(keeps_each_senders_order_and_loses_nothing) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run(SENDERS "return function()\n"
                          "  start(mb.self())\n"
                          "  local last, got = {}, 0\n"
                          "  for s = 1, senders do last[s] = 0 end\n"
                          "  while got < senders * per do\n"
                          "    local m = assert(mb.receive(10000))\n"
                          "    assert(m[2] == last[m[1]] + 1, 'order')\n"
                          "    last[m[1]] = m[2]\n"
                          "    got = got + 1\n"
                          "  end\n"
                          "  return got\n"
                          "end\n",
                  &n));
  ASSERT_EQ(16 * 2000, n);
  test_node_stop();
}

TEST_IMPL(selective_receive_skips_and_keeps) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run(
      SENDERS
      "return function()\n"
      "  start(mb.self())\n"
      "  local last, got = {}, 0\n"
      "  for s = 1, senders do last[s] = 0 end\n"
      "  -- take odd-numbered messages of sender 1 first, selectively\n"
      "  for i = 1, per, 2 do\n"
      "    local m = mb.receive(function(m) return m[1] == 1 and m[2] % 2 == 1 "
      "end, 10000)\n"
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
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(keeps_each_senders_order_and_loses_nothing),
          TEST_ENTRY(selective_receive_skips_and_keeps))
