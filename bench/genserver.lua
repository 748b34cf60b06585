-- genserver: what a GenServer costs.  Times R gen_server.call round trips
-- to a server that echoes the request, then starts N idle servers and
-- measures their memory: mb.memory() read inside each server by a call,
-- and the growth of the OS process's resident set per server.
--   moonbeam genserver.lua [R] [N]
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local bench = require "bench"

local rounds = math.tointeger(tonumber(arg[1])) or 100000
local n = math.tointeger(tonumber(arg[2])) or 10000

-- The callback module, copied into every server: an echo, and a request
-- that returns the server's own memory.
local echo = {
  init = function(state) return "ok", state end,
  handle_call = function(request, _, state)
    if request == "memory" then
      return "reply", require("moonbeam").memory(), state
    end
    return "reply", request, state
  end,
}

-- Call round trip.
local call = gen_server.call
local server = assert(gen_server.start(echo, 0))
for i = 1, 1000 do assert(call(server, i) == i) end -- warm up
local t0 = bench.now()
for i = 1, rounds do assert(call(server, i) == i) end
local per_call = (bench.now() - t0) / rounds
gen_server.stop(server)

-- N idle servers.
collectgarbage()
local rss0 = bench.rss()
local servers = {}
local t1 = bench.now()
for i = 1, n do servers[i] = gen_server.start(echo, 0) end
local per_start = (bench.now() - t1) / n
collectgarbage()
local rss1 = bench.rss()
local heap = 0
for i = 1, n do heap = heap + call(servers[i], "memory") end

bench.note("%d calls; %d idle servers, %d processes alive", rounds, n,
  mb.process_count())
bench.note("goals: call_round_trip <= 1.0x BEAM's; an idle server <= 16384 B" ..
  " (here %.0f B of heap, %.0f B of RSS)", heap / n, (rss1 - rss0) / n)
bench.report("call_round_trip", per_call * 1e9, "ns", "lower")
bench.report("server_start", per_start * 1e9, "ns/server", "lower")
bench.report("idle_server_heap", heap / n, "B", "lower")
bench.report("rss_per_idle_server", (rss1 - rss0) / n, "B/server", "lower")
