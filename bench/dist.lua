-- dist: two nodes on 127.0.0.1 talking over the Erlang distribution
-- protocol.  This node drives; its peer is another moonbeam node
-- (dist_peer.lua) and, when erl is installed, an Erlang node (dist.erl's
-- peer/1).  dist.erl measures Erlang to Erlang the same way.
--   ERL_EPMD_PORT=P moonbeam dist.lua [R] [N] [G]
--
-- round_trip/A-B: R = 20,000 round trips of an integer between a process
--   here and an echo process on the peer (after R/10 not timed), ns each.
-- throughput/A->B: N = 200,000 integers sent one way as fast as the
--   sender can, from the first send until the receiver has taken the
--   last (after N/10 not timed), messages per second.
-- pg_get_members/A-B: the peer's default pg scope gets 100 members in a
--   group; once this node's scope has them, 10,000 pg.get_members of it,
--   ns each.
-- pg_join_leave/A-B: 5,000 pg.join + pg.leave of this process in another
--   group (each announced to the peer's scope), ns per pair.
-- global/A-B: G = 500 rounds of global register_name, whereis_name and
--   unregister_name here, with the peer in the cluster (each register and
--   unregister takes global's lock on both nodes), after G/10 not timed;
--   microseconds per round.
-- mb is moonbeam, beam Erlang/OTP; bench/run puts each figure next to
-- dist.erl's Erlang-to-Erlang one.
-- round_trip_tls/..., throughput_tls/...: the same over TLS distribution
--   (inet_tls_dist, both sides verifying the other's certificate), from
--   a second run of this script with BENCH_DIST_TLS set, whose nodes and
--   peers all run TLS distribution (certificates by dist_certs.sh).
--
-- Environment:
--   ERL_EPMD_PORT    the EPMD port, a test port (default: 47000 to 47999);
--                    when nothing serves it, this node does, on the
--                    addresses of ERL_EPMD_ADDRESS (bench/run: 127.0.0.1)
--   DIST_COOKIE      the cookie of all the nodes (default: a random one)
--   BENCH_EBIN       where dist.beam and bench.beam are (default: compiled
--                    into a temporary directory)
--   BENCH_MOONBEAM   the launcher of the moonbeam peer (default: this one)
--   BENCH_TIMEOUT    seconds a peer may live (default 300)
--   BENCH_DIST_TLS   (set by this script) a directory with the
--                    certificates and ssl_dist.conf: run over TLS
-- Each peer runs under timeout(1) and is stopped by its pid at the end.
local mb = require "moonbeam"
local bench = require "bench"
local dist = require "moonbeam.dist"
local global = require "moonbeam.global"

local rounds = math.tointeger(tonumber(arg[1])) or 20000
local count = math.tointeger(tonumber(arg[2])) or 200000
local grounds = math.tointeger(tonumber(arg[3])) or 500
local limit = math.tointeger(tonumber(os.getenv("BENCH_TIMEOUT"))) or 300
local epmd_port = math.tointeger(tonumber(os.getenv("ERL_EPMD_PORT")))
  or 47000 + math.random(0, 999)
local A = mb.atom
local send, receive, tuple = mb.send, mb.receive, mb.tuple

local sh, quote = bench.sh, bench.quote

local function random_word()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(12)
  f:close()
  return (bytes:gsub(".", function(c) return string.char(65 + c:byte() % 26) end))
end

local cookie = os.getenv("DIST_COOKIE") or random_word()
local tls_dir = os.getenv("BENCH_DIST_TLS")
local suffix = tls_dir and "_tls" or ""
-- erl's flags of TLS distribution
local erl_tls = tls_dir and ("-proto_dist inet_tls -ssl_dist_optfile %s ")
  :format(quote(tls_dir .. "/ssl_dist.conf")) or ""
local tag = random_word():sub(1, 6):lower()
local tmp = sh("mktemp -d"):gsub("%s+$", "")
local bench_dir = assert(package.searchpath("dist_peer", package.path),
  "dist_peer.lua not found on package.path"):match("^(.*)/[^/]*$") or "."

-- ---------------------------------------------------------------------
-- OS processes: started in the background under timeout(1), stopped by
-- their pid.

local started = {}

-- The state and start time of a process (fields 3 and 22 of
-- /proc/PID/stat), or nil if there is none.
local function proc_stat(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f == nil then return nil end
  local fields = {}
  for w in f:read("a"):match("^.*%) (.*)$"):gmatch("%S+") do
    fields[#fields + 1] = w
  end
  f:close()
  return fields[1], fields[20]
end

-- Whether p is still the process started, and running (a zombie is not,
-- and a pid used again by another process is not ours).
local function running(p)
  local state, since = proc_stat(p.pid)
  return state ~= nil and state ~= "Z" and since == p.since
end

local function start_os(cmd, log)
  local pid = sh(("ERL_EPMD_PORT=%d exec timeout -k 5 %d %s >%s 2>&1 & echo $!")
    :format(epmd_port, limit, cmd, quote(log))):match("%d+")
  local p = {pid = pid, log = log}
  p.since = select(2, proc_stat(pid))
  started[#started + 1] = p
  return p
end

-- SIGTERM, which timeout passes on to the peer (and follows with SIGKILL
-- 5 s later if need be); SIGKILL if still there after 10 s.
local function stop_os(p)
  for _, sig in ipairs{"TERM", "KILL"} do
    if not running(p) then return end
    os.execute(("kill -%s %s 2>/dev/null"):format(sig, p.pid))
    for _ = 1, 100 do
      if not running(p) then return end
      mb.sleep(100)
    end
  end
end

local function show_logs()
  for _, p in ipairs(started) do
    local f = io.open(p.log)
    if f then
      io.stderr:write("--- ", p.log, "\n", f:read("a"))
      f:close()
    end
  end
end

-- ---------------------------------------------------------------------
-- The measurements, against the peer node `peer`.

local function await(pattern, what)
  local m = receive(function(x)
    return type(x) == "table" and x[1] == pattern
  end, 30000)
  return assert(m, "no " .. what .. " from the peer within 30 s")
end

-- Wait until the peer answers, and have it watch this node.
local function connect(peer)
  for _ = 1, 300 do
    if dist.ping(peer, 1000) == "pong" then
      send({"bench_peer", peer}, tuple(A.hello, mb.self(), mb.node()))
      return await(A.hello, "hello")[2]
    end
    mb.sleep(100)
  end
  error("the peer " .. peer .. " did not come up")
end

local function round_trips(echo, n)
  for i = 1, n do
    send(echo, i)
    assert(receive() == i)
  end
end

local function round_trip(ctl)
  send(ctl, tuple(A.echo, mb.self()))
  local echo = await(A.ready, "echo process")[2]
  round_trips(echo, rounds // 10)
  local t0 = bench.now()
  round_trips(echo, rounds)
  return (bench.now() - t0) / rounds * 1e9
end

-- This node sends, the peer receives.
local function sink(ctl, n)
  send(ctl, tuple(A.sink, mb.self(), n))
  local to = await(A.ready, "sink process")[2]
  local t0 = bench.now()
  for i = 1, n do send(to, i) end
  await(A.done, "done")
  return n / (bench.now() - t0)
end

local function throughput_out(ctl)
  sink(ctl, count // 10)
  return sink(ctl, count)
end

-- The peer sends, this node receives.
local function source(ctl, n)
  local t0 = bench.now()
  send(ctl, tuple(A.source, mb.self(), n))
  for _ = 1, n do receive() end
  return n / (bench.now() - t0)
end

local function throughput_in(ctl)
  source(ctl, count // 10)
  return source(ctl, count)
end

-- pg: the peer's members, then reads and joins here.
local PG_MEMBERS, PG_READS, PG_JOINS = 100, 10000, 5000

local function pg_members(ctl, group)
  local pg = require "moonbeam.pg"
  send(ctl, tuple(A.pg_members, mb.self(), PG_MEMBERS, group))
  await(A.ready, "pg members")
  local ref, now = pg.monitor(group)
  while now.n < PG_MEMBERS do
    assert(receive(function(m) return m[1] == ref end, 30000), "no pg sync within 30 s")
    now = pg.get_members(group)
  end
  pg.demonitor(ref)
end

local function pg_get_members(group)
  local get = require("moonbeam.pg").get_members
  local t0 = bench.now()
  for _ = 1, PG_READS do get(group) end
  return (bench.now() - t0) / PG_READS * 1e9
end

local function pg_join_leave()
  local pg = require "moonbeam.pg"
  local me = mb.self()
  local t0 = bench.now()
  for _ = 1, PG_JOINS do
    pg.join("local", me)
    pg.leave("local", me)
  end
  return (bench.now() - t0) / PG_JOINS * 1e9
end

-- The pg figures against the peer ctl, named NAME/variant.
local function pg_figures(ctl, variant)
  local group = "bench_" .. variant
  pg_members(ctl, group)
  bench.report("pg_get_members/" .. variant, pg_get_members(group), "ns", "lower")
  bench.report("pg_join_leave/" .. variant, pg_join_leave(), "ns", "lower")
end

local function global_rounds(from, n)
  local me = mb.self()
  for i = from, from + n - 1 do
    local name = tuple(A.bench, i)
    assert(global.register_name(name, me))
    assert(global.whereis_name(name) == me)
    global.unregister_name(name)
  end
end

local function global_round()
  global.sync()
  global_rounds(1, grounds // 10)
  local t0 = bench.now()
  global_rounds(grounds, grounds)
  return (bench.now() - t0) / grounds * 1e6
end

-- ---------------------------------------------------------------------
-- The peers

local function moonbeam_peer()
  local launcher = os.getenv("BENCH_MOONBEAM")
    or sh("readlink -f /proc/$PPID/exe"):gsub("%s+$", "")
  local node = "mbpeer_" .. tag .. "@127.0.0.1"
  start_os(("%s%s --schedulers %d %s %s %s"):format(
    tls_dir and "env BENCH_DIST_TLS=" .. quote(tls_dir) .. " " or "",
    quote(launcher), mb.schedulers(), quote(bench_dir .. "/dist_peer.lua"),
    node, cookie), tmp .. "/mbpeer.log")
  return node
end

local function beam_peer()
  local ebin = os.getenv("BENCH_EBIN")
  if ebin == nil then
    ebin = tmp
    assert(os.execute(("erlc -o %s %s %s"):format(quote(tmp),
      quote(bench_dir .. "/dist.erl"), quote(bench_dir .. "/bench.erl"))))
  end
  local node = "beampeer_" .. tag .. "@127.0.0.1"
  start_os(("erl -noshell -noinput -setcookie %s -start_epmd false %s"
    .. "-kernel inet_dist_use_interface '{127,0,0,1}' +S %d:%d -pa %s "
    .. "-run dist peer %s"):format(cookie, erl_tls, mb.schedulers(),
    mb.schedulers(), quote(ebin), node), tmp .. "/beampeer.log")
  return node
end

-- The TLS figures: this script again, as a node of its own (a node's
-- distribution starts once), over TLS; its figures and notes go on.
local function tls_run()
  if sh("command -v openssl"):match("%S") == nil then
    bench.note("openssl is not installed: no TLS figures")
    return
  end
  local dir = tmp .. "/tls"
  assert(os.execute(("mkdir -p %s && sh %s %s"):format(quote(dir),
    quote(bench_dir .. "/dist_certs.sh"), quote(dir))), "dist_certs.sh failed")
  local launcher = os.getenv("BENCH_MOONBEAM")
    or sh("readlink -f /proc/$PPID/exe"):gsub("%s+$", "")
  local out = sh(("BENCH_DIST_TLS=%s ERL_EPMD_PORT=%d DIST_COOKIE=%s "
    .. "timeout -k 5 %d %s --schedulers %d %s %d %d 2>&1"):format(quote(dir),
    epmd_port, quote(cookie), limit, quote(launcher), mb.schedulers(),
    quote(bench_dir .. "/dist.lua"), rounds, count))
  local figures = 0
  for line in out:gmatch("[^\n]+") do
    if line:match("^RESULT ") then figures = figures + 1 end
    if line:match("^RESULT ") or line:match("^# ") then print(line) end
  end
  if figures == 0 then error("the TLS run gave no figures:\n" .. out, 0) end
end

local function main()
  mb.log_level("error") -- not each connection, nor the peers' going
  mb.start_distribution{name = "mbdist_" .. tag .. "@127.0.0.1",
                        cookie = cookie, epmd_port = epmd_port,
                        proto_dist = tls_dir and "inet_tls" or nil,
                        ssl_dist_optfile = tls_dir and tls_dir .. "/ssl_dist.conf"}
  -- One peer at a time, so that the other does not take CPU time.
  local ctl = connect(moonbeam_peer())
  bench.report("round_trip" .. suffix .. "/mb-mb", round_trip(ctl), "ns", "lower")
  bench.report("throughput" .. suffix .. "/mb->mb", throughput_out(ctl), "msg/s", "higher")
  if not tls_dir then
    bench.report("global/mb-mb", global_round(), "us", "lower")
    pg_figures(ctl, "mb-mb")
  end
  stop_os(started[#started])
  if sh("command -v erl"):match("%S") then
    ctl = connect(beam_peer())
    bench.report("round_trip" .. suffix .. "/mb-beam", round_trip(ctl), "ns", "lower")
    bench.report("throughput" .. suffix .. "/mb->beam", throughput_out(ctl), "msg/s", "higher")
    bench.report("throughput" .. suffix .. "/beam->mb", throughput_in(ctl), "msg/s", "higher")
    if not tls_dir then
      bench.report("global/mb-beam", global_round(), "us", "lower")
      pg_figures(ctl, "mb-beam")
    end
    stop_os(started[#started])
  else
    bench.note("erl is not installed: no moonbeam-to-Erlang figures")
  end
  if tls_dir then return end
  bench.note("%d round trips, %d messages one way, %d global rounds, over 127.0.0.1",
    rounds, count, grounds)
  tls_run()
end

local ok, err = xpcall(main, debug.traceback)
for _, p in ipairs(started) do stop_os(p) end
if not ok then show_logs() end
os.execute("rm -rf " .. quote(tmp))
if not ok then error(err, 0) end
