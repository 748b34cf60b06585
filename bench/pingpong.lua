-- pingpong: round trips between this process and an echo process.
--   moonbeam pingpong.lua [R]
local mb = require "moonbeam"
local bench = require "bench"

local rounds = math.tointeger(tonumber(arg[1])) or 100000

local function echo(peer)
  while true do mb.send(peer, mb.receive()) end
end

local peer = mb.spawn(echo, mb.self())
local send, receive = mb.send, mb.receive
local t0 = bench.now()
for i = 1, rounds do
  send(peer, i)
  assert(receive() == i)
end
local elapsed = bench.now() - t0

bench.note("%d round trips", rounds)
bench.report("round_trip", elapsed / rounds * 1e9, "ns", "lower")
