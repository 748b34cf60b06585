-- fairness: ping-pong round-trip latency, each round trip timed on its
-- own, while 2 x schedulers processes spin in busy loops.  A fair scheduler
-- keeps the latency near one time slice per spinner on the same scheduler.
--   moonbeam fairness.lua [R]
local mb = require "moonbeam"
local bench = require "bench"

local rounds = math.tointeger(tonumber(arg[1])) or 2000
if not bench.fine_clock then
  bench.note("skipped: timing one round trip needs lua-system")
  return
end

local function spin()
  while true do end
end

local function echo(peer)
  while true do mb.send(peer, mb.receive()) end
end

local spinners = 2 * mb.schedulers()
for _ = 1, spinners do mb.spawn(spin) end
local peer = mb.spawn(echo, mb.self())

local now, send, receive = bench.now, mb.send, mb.receive
local lat = {}
for i = 1, rounds do
  local t = now()
  send(peer, i)
  assert(receive() == i)
  lat[i] = now() - t
end
table.sort(lat)

bench.note("%d round trips, %d spinners, clock %s", rounds, spinners,
           bench.clock)
bench.report("round_trip_p50", bench.percentile(lat, 50) * 1e6, "us", "lower")
bench.report("round_trip_p99", bench.percentile(lat, 99) * 1e6, "us", "lower")
bench.report("round_trip_max", lat[#lat] * 1e6, "us", "lower")
