-- ring: a token passed round a ring of P processes, H hops in all.  The
-- token is the number of hops still to make; whoever receives 0 stops.
--   moonbeam ring.lua [P] [H]
local mb = require "moonbeam"
local bench = require "bench"

local procs = math.tointeger(tonumber(arg[1])) or 1000
local hops = math.tointeger(tonumber(arg[2])) or 1000000

local function relay(nxt, main)
  while true do
    local k = mb.receive()
    if k == 0 then
      mb.send(main, 0)
      return
    end
    mb.send(nxt, k - 1)
  end
end

-- This process is the ring's first member; the last one spawned is next.
local me = mb.self()
local nxt = me
for _ = 2, procs do nxt = mb.spawn(relay, nxt, me) end

local t0 = bench.now()
mb.send(nxt, hops - 1)
while true do
  local k = mb.receive()
  if k == 0 then break end
  mb.send(nxt, k - 1)
end
local elapsed = bench.now() - t0

bench.note("%d processes, %d hops", procs, hops)
bench.report("hop", elapsed / hops * 1e9, "ns/hop", "lower")
