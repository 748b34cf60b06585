/* Tracing under concurrency: processes on several schedulers are traced
 * while they run, die, and while their tracer dies; every trace ends with
 * one {trace_stopped, ...}, after exactly its maximum count, or when its
 * tracer is gone, and nothing is left running. */
#include "test.h"

TEST_IMPL(traces_end_cleanly_while_processes_and_tracers_die) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local function worker()\n"
      "    while true do\n"
      "      local m = mb.receive()\n"
      "      if m == 'stop' then return end\n"
      "      mb.send(m[1], m[2])\n"
      "    end\n"
      "  end\n"
      "  local workers = {}\n"
      "  for i = 1, 40 do workers[i] = mb.spawn(worker) end\n"
      "  local checked = 0\n"
      "  for round = 1, 30 do\n"
      "    local tracer, ref = mb.spawn_monitor(function()\n"
      "      local n = 0\n"
      "      while true do\n"
      "        local m = mb.receive()\n"
      "        if m[1] == mb.atom.trace_stopped then\n"
      "          mb.send(me, {'stopped', tostring(m[2]), n, m[3]})\n"
      "          return\n"
      "        end\n"
      "        n = n + 1\n"
      "      end\n"
      "    end)\n"
      "    mb.trace_start(tracer, {max = 50})\n"
      "    for i = 1, #workers do\n"
      "      mb.trace_process(workers[i], {'send', 'receive', 'exit'})\n"
      "    end\n"
      "    if round % 3 == 0 then mb.exit(tracer, 'kill') end\n"
      "    if round % 5 == 0 then\n"
      "      mb.exit(workers[round % #workers + 1], 'kill')\n"
      "      workers[round % #workers + 1] = mb.spawn(worker)\n"
      "    end\n"
      "    for i = 1, #workers do mb.send(workers[i], {me, i}) end\n"
      "    for i = 1, #workers do\n"
      "      assert(mb.receive(function(m) return math.type(m) == 'integer' "
      "end, 10000))\n"
      "    end\n"
      "    if round % 3 == 0 then\n"
      "      -- The first event after the kill found no tracer.\n"
      "      assert(mb.trace_stop() == false, 'a dead tracer ends its trace')\n"
      "    else\n"
      "      local s = mb.receive(function(m) return type(m) == 'table' and "
      "m[1] == 'stopped' end, 10000)\n"
      "      assert(s[2] == 'max' and s[3] == 50 and s[4] == 50, 'max')\n"
      "    end\n"
      "    assert(mb.receive(function(m) return mb.typeof(m) == 'tuple' and "
      "m[2] == ref end, 10000))\n"
      "    checked = checked + 1\n"
      "  end\n"
      "  for i = 1, #workers do mb.send(workers[i], 'stop') end\n"
      "  return checked\n"
      "end\n",
      &n));
  ASSERT_EQ(30, n);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(traces_end_cleanly_while_processes_and_tracers_die))
