-- trace: the cost of tracing one process on a busy node.  A token goes
-- round a ring of P processes, H hops a round (as ring.lua), while S
-- spinners keep the schedulers busy; rounds alternate between no trace and
-- a trace of one ring member's sends and receives (two events a pass),
-- delivered to a tracer that counts them.  Prints the medians and the
-- ratio traced/untraced.
--   moonbeam trace.lua [P] [H] [ROUNDS] [S]
--   (from bench/: cd bench && ../build/bin/moonbeam trace.lua)
local mb = require "moonbeam"
local bench = require "bench"
local trace = require "moonbeam.trace"

local procs = math.tointeger(tonumber(arg[1])) or 1000
local hops = math.tointeger(tonumber(arg[2])) or 300000
local rounds = math.tointeger(tonumber(arg[3])) or 7
local spinners = math.tointeger(tonumber(arg[4])) or 0

local function relay(nxt, main)
  while true do
    local k = mb.receive()
    if k == 0 then
      mb.send(main, 0)
    else
      mb.send(nxt, k - 1)
    end
  end
end

local function spin()
  local x = 0
  while true do
    for i = 1, 1e5 do x = x + i end
    mb.receive(0) -- a stop message ends it
    if x < 0 then return end
  end
end

local function counter()
  local n = 0
  while true do
    local m = mb.receive()
    if mb.typeof(m) == "tuple" and m[1] == mb.atom.trace_stopped then
      mb.send("trace_bench", n)
      n = 0
    else
      n = n + 1
    end
  end
end

mb.register("trace_bench", mb.self())
local me = mb.self()
local nxt = me
local members = {}
for i = 2, procs do
  nxt = mb.spawn(relay, nxt, me)
  members[i] = nxt
end
local busy = {}
for i = 1, spinners do busy[i] = mb.spawn(spin) end
local tracer = mb.spawn(counter)
local watched = members[procs // 2]

-- A round: its wall time, and the CPU time of the node's threads (less
-- moved by other programs on a loaded machine).
local function round()
  local t0, c0 = bench.now(), os.clock()
  mb.send(nxt, hops - 1)
  while true do
    local k = mb.receive(function(m) return math.type(m) == "integer" end)
    if k == 0 then break end
    mb.send(nxt, k - 1)
  end
  return bench.now() - t0, os.clock() - c0
end

local plain, traced, plain_cpu, traced_cpu, events = {}, {}, {}, {}, 0
round() -- warm up
for _ = 1, rounds do
  plain[#plain + 1], plain_cpu[#plain_cpu + 1] = round()
  trace.processes(watched, {"send", "receive"}, {tracer = tracer, max = math.huge})
  traced[#traced + 1], traced_cpu[#traced_cpu + 1] = round()
  trace.stop()
  events = events + mb.receive(function(m) return math.type(m) == "integer" end)
end
for _, p in ipairs(busy) do mb.exit(p, "kill") end

for _, l in ipairs({plain, traced, plain_cpu, traced_cpu}) do table.sort(l) end
local p, t = bench.percentile(plain, 50), bench.percentile(traced, 50)
local pc, tc = bench.percentile(plain_cpu, 50), bench.percentile(traced_cpu, 50)
bench.note("%d processes, %d hops a round, %d rounds, %d spinners, %d schedulers; "
  .. "%d trace events in all", procs, hops, rounds, spinners, mb.schedulers(), events)
bench.report("hop_untraced", p / hops * 1e9, "ns/hop", "lower")
bench.report("hop_one_traced", t / hops * 1e9, "ns/hop", "lower")
bench.report("traced_ratio", t / p, "x", "lower")
bench.report("cpu_hop_untraced", pc / hops * 1e9, "ns/hop", "lower")
bench.report("cpu_hop_one_traced", tc / hops * 1e9, "ns/hop", "lower")
bench.report("cpu_traced_ratio", tc / pc, "x", "lower")
