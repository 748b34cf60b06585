/* Mailboxes under concurrency: many senders on many threads, per-sender
 * order kept, nothing lost, a waiting receiver always woken; messages to a
 * process that has ended, and a receiver that ends while senders push;
 * selective receive skips and keeps. */
#include <stdatomic.h>

#include <uv.h>

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

/* Two threads outside the schedulers send too, through the C API. */
#define HOST_SENDERS 2
#define HOST_PER 2000

static mb_pid_t host_to;

static void host_sender(void *arg) {
  int s = (int)(intptr_t)arg;
  lua_State *L = luaL_newstate();
  for (int i = 1; i <= HOST_PER; i++) {
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, s);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, 2);
    mb_msg_t *m = NULL;
    char err[128];
    ASSERT_EQ(0, mb_msg_encode(L, -1, &m, err, sizeof err));
    lua_pop(L, 1);
    ASSERT_EQ(0, mb_proc_send(host_to, m));
    if (i % 500 == 0)
      uv_sleep(1); /* a pause, so that the receiver waits now and then */
  }
  lua_close(L);
}

/* 10 sender processes on 4 schedulers and 2 host threads, in bursts with
 * pauses, while the sender processes also monitor and demonitor the
 * receiver (signals travel in the inbox with the messages): the receiver
 * waits whenever its inbox is empty, is woken every time, and gets every
 * message in each sender's order. */
TEST_IMPL(wakes_a_waiting_receiver_and_keeps_order_with_signals) {
  test_node_start(4);
  mb_waiter_t *w;
  mb_spawn_opts_t o = {0};
  o.fn = test_function(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  for s = 1, 10 do\n"
      "    mb.spawn(function()\n"
      "      for i = 1, 2000 do\n"
      "        mb.send(me, {s, i})\n"
      "        if i % 100 == 0 then mb.demonitor(mb.monitor(me)) end\n"
      "        if i % 500 == 0 then mb.sleep(1) end\n"
      "      end\n"
      "    end)\n"
      "  end\n"
      "  local total = 10 * 2000 + 2 * 2000\n"
      "  local last, got, waits = {}, 0, 0\n"
      "  for s = 1, 12 do last[s] = 0 end\n"
      "  while got < total do\n"
      "    local m = mb.receive(0)\n"
      "    if m == nil then\n"
      "      waits = waits + 1\n"
      "      m = assert(mb.receive(30000), 'lost a message or a wake-up')\n"
      "    end\n"
      "    assert(m[2] == last[m[1]] + 1, 'order')\n"
      "    last[m[1]] = m[2]\n"
      "    got = got + 1\n"
      "  end\n"
      "  assert(mb.receive(0) == nil, 'more than was sent')\n"
      "  mb.log('info', 'receiver waited ' .. waits .. ' times')\n"
      "  return got\n"
      "end\n");
  o.waiter = &w;
  ASSERT_EQ(0, mb_proc_spawn_opts(&o, &host_to));
  uv_thread_t host[HOST_SENDERS];
  for (int i = 0; i < HOST_SENDERS; i++)
    ASSERT_EQ(
        0, uv_thread_create(&host[i], host_sender, (void *)(intptr_t)(11 + i)));
  for (int i = 0; i < HOST_SENDERS; i++)
    uv_thread_join(&host[i]);
  mb_msg_t *r = NULL;
  int normal = 0;
  ASSERT_EQ(0, mb_waiter_wait(w, 60000, &r, &normal));
  ASSERT_EQ(1, normal);
  lua_State *L = luaL_newstate();
  mb_msg_decode(L, r);
  lua_rawgeti(L, -1, 1);
  ASSERT_EQ(12 * 2000, lua_tointeger(L, -1));
  lua_close(L);
  mb_msg_free(r);
  mb_waiter_free(w);
  test_node_stop();
}

/* Messages sent to a process after it has ended, through a pid that
 * still holds the process (it found it before the end), are freed, not
 * pushed onto its closed inbox (ASan's leak check, in CI, sees every
 * message); the process's own end frees what it had not taken. */
TEST_IMPL(messages_to_a_process_that_has_ended_are_freed) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run("local mb = require 'moonbeam'\n"
                  "return function()\n"
                  "  local r = mb.spawn(function()\n"
                  "    assert(mb.receive(30000) == 'stop')\n"
                  "  end)\n"
                  "  local ref = mb.monitor(r)\n"
                  "  mb.send(r, 'stop')\n"
                  "  for i = 1, 100 do mb.send(r, {i}) end\n"
                  "  local d = assert(mb.receive(30000))\n"
                  "  assert(d[2] == ref and tostring(d[5]) == 'normal')\n"
                  "  for i = 1, 1000 do mb.send(r, {i}) end\n"
                  "  assert(mb.process_info(r) == nil)\n"
                  "  return 1000\n"
                  "end\n",
                  &n));
  ASSERT_EQ(1000, n);
  test_node_stop();
}

/* Receivers that end while 8 senders on 4 schedulers push to them as fast
 * as they can: each sender sees the receiver's 'DOWN' (normal), and what
 * was pushed after the receiver's last look is freed with it, not left
 * behind (ASan's leak check, in CI, sees every message).  The senders
 * never wait: only the watchdog's pokes let the receiver run, so a poke
 * lost as a slice starts left a sender running for good ahead of it, and
 * the round never ended. */
TEST_IMPL(a_receiver_ending_while_senders_push_frees_every_message) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me, downs = mb.self(), 0\n"
      "  for round = 1, 30 do\n"
      "    local r = mb.spawn(function()\n"
      "      local last = {}\n"
      "      for _ = 1, 300 do\n"
      "        local m = assert(mb.receive(30000))\n"
      "        assert(m[2] > (last[m[1]] or 0), 'order')\n"
      "        last[m[1]] = m[2]\n"
      "      end\n"
      "    end)\n"
      "    for s = 1, 8 do\n"
      "      mb.spawn(function()\n"
      "        local ref, i = mb.monitor(r), 0\n"
      "        while true do\n"
      "          i = i + 1\n"
      "          mb.send(r, {s, i})\n"
      "          local d = i % 16 == 0 and mb.receive(0)\n"
      "          if d then\n"
      "            -- noproc: it ended before this monitor reached it.\n"
      "            local why = tostring(d[5])\n"
      "            assert(d[2] == ref and (why == 'normal' or why == "
      "'noproc'), why)\n"
      "            mb.send(r, {s, i + 1}) -- to a process that has ended\n"
      "            mb.send(me, 'down')\n"
      "            return\n"
      "          end\n"
      "        end\n"
      "      end)\n"
      "    end\n"
      "    for _ = 1, 8 do\n"
      "      assert(mb.receive(30000) == 'down', 'no DOWN')\n"
      "      downs = downs + 1\n"
      "    end\n"
      "    assert(mb.process_info(r) == nil)\n"
      "  end\n"
      "  return downs\n"
      "end\n",
      &n));
  ASSERT_EQ(30 * 8, n);
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

/* A prefilter goes past saved messages by their first element, kept in C
 * (mailbox.c): whatever mixture of first elements is queued, and however
 * the save queue is cut from the middle, each receive takes exactly the
 * message a plain matcher without prefilter would, in arrival order. */
TEST_IMPL(prefilters_take_what_the_matcher_would) {
  test_node_start(2);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me, a, b = mb.self(), mb.atom.a, mb.atom.b\n"
      "  local ref, other = mb.make_ref(), mb.spawn(function() end)\n"
      "  local firsts = {a, b, ref, me, other, 'a', 1, 1.5, true}\n"
      "  local model, seq = {}, 0\n"
      "  local function queue(k)\n"
      "    for i = 1, k do\n"
      "      seq = seq + 1\n"
      "      local f = firsts[seq % (#firsts + 3) + 1]\n"
      "      local m\n"
      "      if f == nil and seq % 2 == 0 then m = seq\n"
      "      elseif f == nil then m = mb.tuple(nil, seq)\n"
      "      else m = mb.tuple(f, seq) end\n"
      "      mb.send(me, m)\n"
      "      model[#model + 1] = m\n"
      "    end\n"
      "  end\n"
      "  local filters = {{[a] = true}, {[ref] = true, [b] = true},\n"
      "    {[me] = true}, {a = true}, {[1] = true, [true] = true},\n"
      "    {[other] = true, [1.5] = true}}\n"
      "  local function first(m)\n"
      "    if type(m) == 'table' then return m[1] end\n"
      "  end\n"
      "  local taken = 0\n"
      "  for round = 1, 300 do\n"
      "    queue(round % 7)\n"
      "    local pf = filters[round % #filters + 1]\n"
      "    local odd = round % 2 == 1\n"
      "    local function want(m)\n"
      "      return type(m) == 'table' and (m[2] % 2 == 1) == odd\n"
      "    end\n"
      "    local expect\n"
      "    for i, m in ipairs(model) do\n"
      "      local f = first(m)\n"
      "      if f ~= nil and pf[f] and want(m) then\n"
      "        expect = table.remove(model, i) break\n"
      "      end\n"
      "    end\n"
      "    local got = mb.receive(want, 0, pf)\n"
      "    if expect == nil then assert(got == nil, 'took ' .. tostring(got))\n"
      "    else\n"
      "      assert(got ~= nil and got[2] == expect[2], 'wrong message')\n"
      "      taken = taken + 1\n"
      "    end\n"
      "  end\n"
      "  for _, m in ipairs(model) do\n"
      "    local got = mb.receive(0)\n"
      "    local key = type(m) == 'table' and m[2] or m\n"
      "    assert((type(got) == 'table' and got[2] or got) == key, 'order')\n"
      "  end\n"
      "  assert(mb.receive(0) == nil)\n"
      "  return taken\n"
      "end\n",
      &n));
  ASSERT(n > 50);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(keeps_each_senders_order_and_loses_nothing),
          TEST_ENTRY(wakes_a_waiting_receiver_and_keeps_order_with_signals),
          TEST_ENTRY(messages_to_a_process_that_has_ended_are_freed),
          TEST_ENTRY(a_receiver_ending_while_senders_push_frees_every_message),
          TEST_ENTRY(selective_receive_skips_and_keeps),
          TEST_ENTRY(prefilters_take_what_the_matcher_would))
