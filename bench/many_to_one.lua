-- many_to_one: S senders each send M messages to one receiver, all at once.
--   moonbeam many_to_one.lua [S] [M]
local mb = require "moonbeam"
local bench = require "bench"

local senders = math.tointeger(tonumber(arg[1])) or 100
local per_sender = math.tointeger(tonumber(arg[2])) or 10000

local function sender(sink, count)
  mb.receive() -- go
  local send = mb.send
  for i = 1, count do send(sink, i) end
end

local me = mb.self()
local pids = {}
for i = 1, senders do pids[i] = mb.spawn(sender, me, per_sender) end

local total = senders * per_sender
local receive = mb.receive
local t0 = bench.now()
for i = 1, senders do mb.send(pids[i], "go") end
for _ = 1, total do receive() end
local elapsed = bench.now() - t0

bench.note("%d senders x %d messages", senders, per_sender)
bench.report("throughput", total / elapsed, "msg/s", "higher")
