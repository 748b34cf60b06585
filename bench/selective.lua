-- selective: a selective receive that skips 1,000 queued messages that do
-- not match, R times: with a Lua matcher function, and with a string
-- pattern through moonbeam.receive.
--   moonbeam selective.lua [R] [QUEUED]
local mb = require "moonbeam"
local receive = require "moonbeam.receive"
local bench = require "bench"

local rounds = math.tointeger(tonumber(arg[1])) or 10000
local queued = math.tointeger(tonumber(arg[2])) or 1000
local me = mb.self()
local noise, wanted = mb.atom.noise, mb.atom.wanted

for i = 1, queued do mb.send(me, mb.tuple(noise, i)) end

local function is_wanted(m) return m[1] == wanted end
local t0 = bench.now()
for i = 1, rounds do
  mb.send(me, mb.tuple(wanted, i))
  assert(mb.receive(is_wanted)[2] == i)
end
local matcher = bench.now() - t0

t0 = bench.now()
for i = 1, rounds do
  mb.send(me, mb.tuple(wanted, i))
  assert(receive { {"{wanted, N}", function(b) return b.N end} } == i)
end
local patterns = bench.now() - t0

bench.note("%d selective receives past %d queued messages", rounds, queued)
bench.report("skip_1000_matcher", matcher / rounds * 1e9, "ns", "lower")
bench.report("skip_1000_pattern", patterns / rounds * 1e9, "ns", "lower")
