-- spawn: what a process costs.  Spawns N processes (in batches, so that the
-- spawner's mailbox stays small); each sends its Lua heap size to the
-- spawner and then waits in receive.  Reports the time per spawn and the
-- memory per idle process.
--   moonbeam spawn.lua [N]
local mb = require "moonbeam"
local bench = require "bench"

local n = math.tointeger(tonumber(arg[1])) or 100000
local batch = 1000
local me = mb.self()

local function idle(parent)
  mb.send(parent, mb.memory())
  mb.receive()
end

collectgarbage()
local rss0 = bench.rss()
local t0 = bench.now()
local in_spawn, heap = 0, 0
for first = 1, n, batch do
  local count = math.min(batch, n - first + 1)
  local s = bench.now()
  for _ = 1, count do mb.spawn(idle, me) end
  in_spawn = in_spawn + (bench.now() - s)
  for _ = 1, count do heap = heap + mb.receive() end
end
local elapsed = bench.now() - t0
collectgarbage()
local rss1 = bench.rss()

bench.note("%d idle processes, %d alive", n, mb.process_count())
bench.report("spawn_until_ready", elapsed / n * 1e9, "ns/proc", "lower")
bench.report("spawn_call_only", in_spawn / n * 1e9, "ns/proc", "lower")
bench.report("rss_per_idle_proc", (rss1 - rss0) / n, "B/proc", "lower")
bench.report("heap_per_idle_proc", heap / n, "B/proc", "lower")
bench.report("rss_total", rss1 / 2^20, "MiB", "lower")
bench.report("elapsed", elapsed, "s", "lower")
