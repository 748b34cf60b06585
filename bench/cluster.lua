-- cluster: how long N moonbeam nodes on one machine (127.0.0.1) take to be
-- fully meshed, each connected to all the others, by a discovery strategy
-- of moonbeam.cluster:
--
--   static          the epmd strategy, each node given the other N-1 names
--   gossip/5000     multicast heartbeats at random, at most 5000 ms apart
--                   (libcluster's interval), encrypted with a secret
--   gossip/500      the same, at most 500 ms apart
--   beam/static     Erlang nodes (cluster_peer.erl, when erl is installed)
--                   doing what libcluster's Epmd strategy does:
--                   net_kernel:connect_node to each of the others
--
--   ERL_EPMD_PORT=P moonbeam bench/cluster.lua [N] [RUNS]
--
-- This node is not one of the N: it starts them (bench/cluster_peer.lua)
-- and waits until each has said, by a UDP datagram, that it is up; then it
-- sends each "go" (the peer starts its topology) and measures until the
-- last has said it is connected to all the others. Node start-up is not
-- in the figure. Prints one line per strategy: the median of RUNS runs
-- (default 3), and the fastest and slowest.
--
-- Environment: ERL_EPMD_PORT, a test port (default: 47000 to 47999;
-- when nothing serves it, this node does: it is a hidden node, which no
-- peer connects to); BENCH_TIMEOUT, seconds a
-- peer may live (default 120); BENCH_MOONBEAM, the peers' launcher
-- (default: build/bin/moonbeam). Each peer runs under timeout(1) and is
-- stopped by its pid at the end of each run.
local mb = require "moonbeam"
local gen_udp = require "moonbeam.gen_udp"

local n = math.tointeger(tonumber(arg[1])) or 10
local runs = math.tointeger(tonumber(arg[2])) or 3
local limit = math.tointeger(tonumber(os.getenv("BENCH_TIMEOUT"))) or 120
local epmd_port = math.tointeger(tonumber(os.getenv("ERL_EPMD_PORT")))
  or 47000 + math.random(0, 999)

local bench = require "bench"
local sh, quote = bench.sh, bench.quote

local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local peer_script = bench_dir .. "/cluster_peer.lua"
local launcher = os.getenv("BENCH_MOONBEAM") or bench_dir .. "/../build/bin/moonbeam"
local tmp = sh("mktemp -d"):gsub("%s+$", "")
local cookie = "bench" .. math.random(1e9)
local have_erl = os.execute("command -v erl >/dev/null && command -v erlc >/dev/null")
  and os.execute(("erlc -o %s %s/cluster_peer.erl"):format(quote(tmp), quote(bench_dir)))

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("a"):match("^.*%) (%S)")
  f:close()
  return state ~= "Z"
end

local function stop(pids)
  for _, pid in ipairs(pids) do
    if alive(pid) then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
  end
  for _, pid in ipairs(pids) do
    for _ = 1, 100 do
      if not alive(pid) then break end
      mb.sleep(50)
    end
    if alive(pid) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
end

-- Wait for `count` datagrams "<word> i ...": their fields by i.
local function collect(s, word, count, timeout_ms)
  local got, k = {}, 0
  local deadline = mb.monotonic_time() + timeout_ms * 1000000
  while k < count do
    local left = (deadline - mb.monotonic_time()) // 1000000
    if left <= 0 then return nil, ("%d of %d peers said %s"):format(k, count, word) end
    local _, _, data = gen_udp.recv(s, 0, left)
    local w, i, rest = (data or ""):match("^(%S+) (%d+) ?(.*)$")
    if w == word and not got[tonumber(i)] then
      got[tonumber(i)] = rest
      k = k + 1
    end
  end
  return got
end

-- One run: ms until all n nodes are meshed, or nil and why.
local function run_once(mode, interval, round)
  local ctl = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
  local gossip_port = 40000 + math.random(0, 9999)
  local pids = {}
  for i = 1, n do
    local name = ("c%d_%d@127.0.0.1"):format(round, i)
    local node
    if mode == "beam" then
      node = ("erl -name %s -setcookie %s -noshell -pa %s -run cluster_peer start %d %d %d %d")
        :format(name, cookie, quote(tmp), n, i, round, gen_udp.port(ctl))
    else
      node = ("%s --name %s --cookie %s %s %s %d %d %d %d %d %d"):format(quote(launcher), name,
        cookie, quote(peer_script), mode, n, i, round, gen_udp.port(ctl), gossip_port, interval)
    end
    local cmd = ("ERL_EPMD_PORT=%d exec timeout -k 5 %d %s > %s 2>&1 & echo $!")
      :format(epmd_port, limit, node, quote(tmp .. "/" .. i .. ".log"))
    pids[i] = sh(cmd):match("%d+")
  end
  local ports, why = collect(ctl, "ready", n, 60000)
  local ms
  if ports then
    local t0 = mb.monotonic_time()
    for i = 1, n do gen_udp.send(ctl, "127.0.0.1", tonumber(ports[i]), "go") end
    local done
    done, why = collect(ctl, "meshed", n, 120000)
    if done then ms = (mb.monotonic_time() - t0) / 1e6 end
  end
  stop(pids)
  gen_udp.close(ctl)
  return ms, why
end

mb.start_distribution{name = "cbench" .. math.random(1e6) .. "@127.0.0.1",
  cookie = cookie, hidden = true, epmd_port = epmd_port}

local function median(t)
  table.sort(t)
  local k = #t
  return k % 2 == 1 and t[(k + 1) // 2] or (t[k // 2] + t[k // 2 + 1]) / 2
end

print(("cluster: %d moonbeam nodes on 127.0.0.1, until each is connected to all "
  .. "the others; %d runs each"):format(n, runs))
local round = 0
local modes = {{"static", 0, "static"}, {"gossip", 5000, "gossip/5000"},
               {"gossip", 500, "gossip/500"}}
if have_erl then modes[#modes + 1] = {"beam", 0, "beam/static"} end
local medians = {}
for _, m in ipairs(modes) do
  local times = {}
  for _ = 1, runs do
    round = round + 1
    local ms, why = run_once(m[1], m[2], round)
    if not ms then
      io.stderr:write(("%s: %s\n"):format(m[3], why))
      for i = 1, n do io.stderr:write(sh("tail -5 " .. quote(tmp .. "/" .. i .. ".log"))) end
      break
    end
    times[#times + 1] = ms
  end
  if #times > 0 then
    local lo, hi = math.min(table.unpack(times)), math.max(table.unpack(times))
    medians[m[3]] = median(times)
    print(("  %-12s median %8.1f ms  (min %.1f, max %.1f)"):format(m[3], medians[m[3]], lo, hi))
  end
end
if medians.static and medians["beam/static"] then
  print(("  static moonbeam/BEAM: %.2f"):format(medians.static / medians["beam/static"]))
end
os.execute("rm -rf " .. quote(tmp))
