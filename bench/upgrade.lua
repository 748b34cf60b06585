-- upgrade: what a code upgrade costs.  N idle GenServers of one module
-- (and one more that a client calls in a loop) move to a new version:
--   upgrade_all      a new version loaded, then one call to each server,
--                    until all N have answered from the new version (they
--                    move by themselves, between two messages);
--   upgrade_all_sys  the OTP way, as the Erlang twin does it: suspend all,
--                    load, sys.change_code all, resume all, one call each;
--   call_p99_quiet / call_p99_upgrade
--                    the p99 of the call latency one server of the module
--                    sees from a client calling it in a loop, without an
--                    upgrade, and while upgrade_all runs.
--   moonbeam upgrade.lua [N]
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local code = require "moonbeam.code"
local sys = require "moonbeam.sys"
local bench = require "bench"

local n = math.tointeger(tonumber(arg[1])) or 10000
local MOD = "bench_upgrade_srv"

-- Version v of the callback module: "vsn" answers v.
local function source(v)
  return ([[
    return {
      init = function(s) return "ok", s end,
      handle_call = function(req, _, s)
        if req == "vsn" then return "reply", %d, s end
        return "reply", req, s
      end,
      code_change = function(_, s) return "ok", s end,
    }]]):format(v)
end

-- A client that calls `server` in a loop until told to stop, timing each
-- call; it sends back the sorted latencies.
local function client(parent, server)
  local mb = require "moonbeam"
  local call = require("moonbeam.gen_server").call
  local lat, i = {}, 0
  mb.send(parent, "calling")
  while mb.receive(0) ~= "stop" do
    local t = mb.monotonic_time()
    call(server, i)
    i = i + 1
    lat[i] = (mb.monotonic_time() - t) / 1e9
  end
  table.sort(lat)
  mb.send(parent, lat)
end

-- Call every server once; all must answer `want`.
local function call_all(servers, want)
  for i = 1, #servers do assert(gen_server.call(servers[i], "vsn") == want) end
end

-- Run work() while a client calls `watched`; the client's sorted latencies.
local function watching(watched, work)
  local c = mb.spawn(client, mb.self(), watched)
  assert(mb.receive() == "calling")
  local r = work()
  mb.send(c, "stop")
  return mb.receive(), r
end

assert(code.load(MOD, source(1)) == 1)
local servers = {}
for i = 1, n do servers[i] = assert(gen_server.start(MOD, 0)) end
local watched = assert(gen_server.start(MOD, 0))
call_all(servers, 1)

-- The same calls without an upgrade, for the quiet latency.
local quiet = watching(watched, function() call_all(servers, 1) end)

local during, upgrade_all = watching(watched, function()
  local t0 = bench.now()
  assert(code.load(MOD, source(2)) == 2)
  call_all(servers, 2)
  return bench.now() - t0
end)

local t1 = bench.now()
for i = 1, n do sys.suspend(servers[i]) end
assert(code.load(MOD, source(3)) == 3)
for i = 1, n do assert(sys.change_code(servers[i], MOD, 2, nil)) end
for i = 1, n do sys.resume(servers[i]) end
call_all(servers, 3)
local upgrade_all_sys = bench.now() - t1

for i = 1, n do gen_server.stop(servers[i]) end
gen_server.stop(watched)

bench.note("%d idle servers; the watched server answered %d calls quietly, %d during the upgrade",
  n, #quiet, #during)
bench.report("upgrade_all", upgrade_all * 1e3, "ms", "lower")
bench.report("upgrade_all_sys", upgrade_all_sys * 1e3, "ms", "lower")
bench.report("call_p99_quiet", bench.percentile(quiet, 99) * 1e6, "us", "lower")
bench.report("call_p99_upgrade", bench.percentile(during, 99) * 1e6, "us", "lower")
bench.report("call_max_upgrade", during[#during] * 1e6, "us", "lower")
