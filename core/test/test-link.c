/* Links, monitors and names under concurrency: a chain of linked processes
 * spread over schedulers dies whole; many monitors fire once each; of many
 * processes racing for one name exactly one gets it; calls that race their
 * server's end each end, with no monitor left on either side. */
#include "test.h"

TEST_IMPL(a_linked_chain_dies_whole) {
  test_node_start(4);
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local function node(n)\n"
      "    if n == 0 then mb.send(me, mb.self()) end\n"
      "    if n > 0 then mb.spawn_link(node, n - 1) end\n"
      "    mb.receive()\n"
      "  end\n"
      "  local head = mb.spawn(node, 2000)\n"
      "  -- 2,000 spawns and exits: slow under TSan on a busy machine\n"
      "  local tail = assert(mb.receive(60000), 'the chain did not come up')\n"
      "  local ref = mb.monitor(tail)\n"
      "  mb.exit(head, 'boom')\n"
      "  local down = mb.receive(60000)\n"
      "  assert(down and down[2] == ref and down[5] == 'boom', 'chain')\n"
      "end\n",
      NULL));
  test_node_stop();
}

TEST_IMPL(many_monitors_fire_once_each) {
  test_node_start(4);
  long long n = 0;
  ASSERT(
      test_run("local mb = require 'moonbeam'\n"
               "return function()\n"
               "  local me = mb.self()\n"
               "  local target = mb.spawn(function() mb.receive() end)\n"
               "  for i = 1, 200 do mb.spawn(function()\n"
               "    local refs = {}\n"
               "    for j = 1, 50 do refs[mb.monitor(target)] = true end\n"
               "    mb.send(me, 'armed')\n"
               "    local got = 0\n"
               "    for j = 1, 50 do local m = mb.receive(10000) refs[m[2]] = "
               "nil got = got + 1 end\n"
               "    assert(next(refs) == nil)\n"
               "    mb.send(me, got)\n"
               "  end) end\n"
               "  for i = 1, 200 do assert(mb.receive(10000) == 'armed') end\n"
               "  mb.send(target, 'die')\n"
               "  local total = 0\n"
               "  for i = 1, 200 do total = total + mb.receive(10000) end\n"
               "  return total\n"
               "end\n",
               &n));
  ASSERT_EQ(10000, n);
  test_node_stop();
}

TEST_IMPL(one_process_wins_a_race_for_a_name) {
  test_node_start(4);
  long long n = 0;
  ASSERT(
      test_run("local mb = require 'moonbeam'\n"
               "return function()\n"
               "  local me = mb.self()\n"
               "  for i = 1, 100 do mb.spawn(function()\n"
               "    local ok = pcall(mb.register, 'the_one', mb.self())\n"
               "    mb.send(me, ok and 1 or 0)\n"
               "    if ok then mb.receive() end\n"
               "  end) end\n"
               "  local winners = 0\n"
               "  for i = 1, 100 do winners = winners + mb.receive(10000) end\n"
               "  mb.exit(mb.whereis('the_one'), 'kill')\n"
               "  return winners\n"
               "end\n",
               &n));
  ASSERT_EQ(1, n);
  test_node_stop();
}

/* Eight callers call one server on four schedulers while it is killed:
 * every call returns the reply, or false and the reason (killed, or
 * noproc once it has ended), and no caller keeps a monitor; while the
 * server lives, the calls' monitors on its side come and go with them
 * (set and ended at once, under its lock). */
TEST_IMPL(calls_racing_their_servers_end_each_end) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local server = mb.spawn(function()\n"
      "    while true do local m = mb.receive()\n"
      "      mb.send(m[2][1], mb.tuple(m[2][2], m[3])) end\n"
      "  end)\n"
      "  for c = 1, 8 do mb.spawn(function()\n"
      "    local good, bad = 0, 0\n"
      "    for i = 1, 2000 do\n"
      "      local ok, r = mb.call(server, mb.atom['$gen_call'], i, 10000)\n"
      "      if ok then assert(r == i); good = good + 1\n"
      "      else\n"
      "        assert(r == mb.atom.killed or r == mb.atom.noproc, tostring(r))\n"
      "        bad = bad + 1\n"
      "      end\n"
      "    end\n"
      "    mb.send(me, {good + bad, #mb.process_info(mb.self()).monitors})\n"
      "  end) end\n"
      "  mb.sleep(5)\n"
      "  local by = mb.process_info(server).monitored_by\n"
      "  assert(#by <= 8, 'monitors left on the server: ' .. #by)\n"
      "  mb.exit(server, 'kill')\n"
      "  for _ = 1, 8 do\n"
      "    local r = assert(mb.receive(30000), 'a caller did not finish')\n"
      "    assert(r[1] == 2000 and r[2] == 0)\n"
      "  end\n"
      "  return 1\n"
      "end\n",
      &n));
  ASSERT_EQ(1, n);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(a_linked_chain_dies_whole),
          TEST_ENTRY(many_monitors_fire_once_each),
          TEST_ENTRY(one_process_wins_a_race_for_a_name),
          TEST_ENTRY(calls_racing_their_servers_end_each_end))
