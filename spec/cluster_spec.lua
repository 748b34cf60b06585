-- Clusters that form by themselves: net_adm and host files, the
-- launcher's --connect and --hosts, and the discovery strategies of
-- moonbeam.cluster (static list, DNS polling against a real dnsmasq,
-- multicast gossip between moonbeam nodes and with an Elixir script).
-- Everything stays on 127.0.0.1, with an EPMD port of the spec's own; every
-- OS process a spec starts is stopped by its pid, and temp files removed.
local mb = require "moonbeam"
local H = require "spec.launcher_helper"

local EPMD_PORT = 22000 + math.random(0, 999)
local COOKIE = "clustersecret"
local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}
local tmp = P.tmp
-- Absolute, for runs in other directories.
local launcher = H.launcher:match("^/") and H.launcher
  or (P.sh("pwd"):gsub("%s+$", "") .. "/" .. H.launcher)
local ME = "clspec@127.0.0.1"

local function run(fn, ...) return mb.run(fn, ...) end

-- The specs that need a distributed node run a driver: a moonbeam node
-- named ME, started by the launcher with the DRIVER prelude and a body of
-- the spec's, which prints what the spec checks. (This file's own node
-- stays undistributed: distribution starts once per node, and dist_spec
-- starts it here.) EPMD is served all along by a hidden node of its own.
-- The prelude gives the body:
--   seen(key, [n], [seconds])  wait until "nodeup a@h" / "nodedown a@h"
--                              has happened n times (default 1, within 20 s)
--   node(name, script, ...)    start a node in the background: its pid
--   os_process(cmd, log)       start a command in the background: its pid
--   stop(pid)                  stop it (SIGKILL)
--   log_has(file, text, [s])   wait until a log file holds text
--   say(...)                   print a result line
-- Every pid started goes to tmp/pids too, which teardown stops.
local DRIVER = [[
local mb = require "moonbeam"
local TMP, LAUNCHER, COOKIE = arg[1], arg[2], arg[3]
local A = mb.atom
mb.monitor_nodes(true)
local events = {}
local function count(key)
  local n = 0
  for _, k in ipairs(events) do if k == key then n = n + 1 end end
  return n
end
function seen(key, n, seconds)
  local deadline = mb.monotonic_time() + (seconds or 20) * 1000000000
  while count(key) < (n or 1) do
    local left = (deadline - mb.monotonic_time()) // 1000000
    if left <= 0 then return false end
    local m = mb.receive(function(m)
      return mb.typeof(m) == "tuple" and (m[1] == A.nodeup or m[1] == A.nodedown)
    end, left)
    if m then events[#events + 1] = tostring(m[1]) .. " " .. tostring(m[2]) end
  end
  return true
end
function os_process(cmd, log)
  local p = io.popen(("exec %s > %s 2>&1 & echo $!"):format(cmd, log or "/dev/null"))
  local pid = p:read("l")
  p:close()
  local f = io.open(TMP .. "/pids", "a")
  f:write(pid, "\n")
  f:close()
  return pid
end
function node(name, script, ...)
  local words = {LAUNCHER, "--name", name, "--cookie", COOKIE}
  for _, a in ipairs({...}) do words[#words + 1] = a end
  if script then words[#words + 1] = TMP .. "/" .. script end
  return os_process(table.concat(words, " "), TMP .. "/" .. name:match("^[^@]+") .. ".log")
end
function stop(pid) os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
function log_has(file, text, seconds)
  for _ = 1, (seconds or 30) * 10 do
    local f = io.open(file)
    local s = f and f:read("a") or ""
    if f then f:close() end
    if s:find(text, 1, true) then return true end
    mb.sleep(100)
  end
  return false
end
function say(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  io.stdout:write(table.concat(t, " "), "\n")
  io.stdout:flush()
end
]]

-- Start-up: the EPMD keeper and the scripts of the peers.
local keeper

-- A launcher run on this spec's EPMD port.
local function launch(args, opts)
  opts = opts or {}
  opts.env = opts.env or {}
  opts.env.ERL_EPMD_PORT = tostring(EPMD_PORT)
  opts.program = launcher
  return H.run(args, opts)
end

--- Run `body` in a driver node named ME; its stdout's lines.
local function drive(body, timeout)
  local file = tmp .. "/driver.lua"
  H.write(file, DRIVER .. body)
  local status, out, err = launch({"--name", ME, "--cookie", COOKIE, file, tmp, launcher, COOKIE},
    {timeout = timeout or 120})
  assert(status == 0, "the driver failed: " .. tostring(status) .. "\n" .. out .. err)
  return H.lines(out)
end

setup(function()
  mb.start{run_timeout = 60000}
  H.write(tmp .. "/idle.lua", 'local mb = require "moonbeam"\nwhile true do mb.receive() end\n')
  H.write(tmp .. "/gossip.lua", [[
local mb = require "moonbeam"
require("moonbeam.cluster").start{lan = {strategy = "gossip", config = {
  port = tonumber(arg[1]), multicast_if = "127.0.0.1", heartbeat_interval = 300,
  secret = arg[2]}}}
while true do mb.receive() end
]])
  keeper = P.spawn_os(("%s --name clepmd@127.0.0.1 --hidden --cookie %s %s/idle.lua")
    :format(launcher, COOKIE, tmp), tmp .. "/clepmd.log")
  for _ = 1, 100 do
    local _, out = launch({"eval", "return require('moonbeam.net_adm').names('127.0.0.1') ~= nil"})
    if out == "true\n" then return end
    run(function() require("moonbeam").sleep(100) end)
  end
  error("the EPMD keeper did not come up:\n" .. H.read(tmp .. "/clepmd.log"))
end)

teardown(function()
  for pid in H.read(tmp .. "/pids"):gmatch("%d+") do P.kill_os(pid, "KILL") end
  P.stop_all()
end)

describe("net_adm", function()
  it("parses Erlang's host file format: quoted and bare atoms, comments", function()
    local hosts = run(function()
      local net_adm = require "moonbeam.net_adm"
      local h = assert(net_adm.parse_hosts(
        "% the hosts\n'a.example.com'.\nlocalhost.   'b-1.example.com'. % two on a line\n\n",
        "f"))
      local out = {}
      for i, a in ipairs(h) do out[i] = require("moonbeam").typeof(a) .. ":" .. tostring(a) end
      return out
    end)
    assert.same({"atom:a.example.com", "atom:localhost", "atom:b-1.example.com"}, hosts)
  end)

  it("says which line of a malformed host file is wrong", function()
    local errs = run(function()
      local net_adm = require "moonbeam.net_adm"
      local out = {}
      for _, text in ipairs({"'a'.\n'b'\n'c'.\n", "'a'.\n42.\n", "'a.\n", "{a, b}.\n",
                             "'a'.\n'b'\n\n"}) do
        local h, why = net_adm.parse_hosts(text, "hosts")
        out[#out + 1] = tostring(h) .. " " .. why
      end
      return out
    end)
    assert.same({
      "nil hosts:3: a full stop expected after b",
      "nil hosts:2: a host name (an atom such as 'host.example.com') expected, got '42.'",
      "nil hosts:1: a quote is not closed",
      "nil hosts:1: a host name (an atom such as 'host.example.com') expected, got '{a,'",
      "nil hosts:2: a full stop expected after b",
    }, errs)
  end)

  it("reads .hosts.erlang from the current directory, then from the home directory", function()
    local cwd, home = H.tmpdir(), H.tmpdir()
    local code = "local h, why = require('moonbeam.net_adm').host_file() "
      .. "return h and tostring(h[1]) or why"
    H.write(home .. "/.hosts.erlang", "'home.example.com'.\n")
    local _, out1 = launch({"eval", code}, {cwd = cwd, env = {HOME = home}})
    H.write(cwd .. "/.hosts.erlang", "'cwd.example.com'.\n")
    local _, out2 = launch({"eval", code}, {cwd = cwd, env = {HOME = home}})
    os.remove(cwd .. "/.hosts.erlang")
    os.remove(home .. "/.hosts.erlang")
    local _, out3 = launch({"eval", code}, {cwd = cwd, env = {HOME = home}})
    H.remove(cwd)
    H.remove(home)
    assert.equal('"home.example.com"\n', out1)
    assert.equal('"cwd.example.com"\n', out2)
    assert.equal(('"no .hosts.erlang in .hosts.erlang or %s/.hosts.erlang"\n'):format(home), out3)
  end)

  it("names(host) lists what EPMD knows there, as {name, port}; {error, address} as nil, 'address'", function()
    local _, found = launch({"eval", "--name", "namer@127.0.0.1", "--cookie", COOKIE,
      "for _, e in ipairs(require('moonbeam.net_adm').names('127.0.0.1')) do "
      .. "if e[1] == 'namer' then return math.type(e[2]) end end"})
    assert.equal('"integer"\n', found)
    -- No EPMD on this port: the launcher's node asks there and gets none.
    local _, out = H.run({"eval", "return require('moonbeam.net_adm').names('127.0.0.1')"},
      {env = {ERL_EPMD_PORT = tostring(EPMD_PORT + 1000)}})
    assert.equal('nil, "address"\n', out)
  end)

  it("ping answers pong for a node that is up and for this node, pang otherwise", function()
    assert.same({"pong pong pang"}, drive([[
      local net_adm = require "moonbeam.net_adm"
      local pid = node("pinged@127.0.0.1", "idle.lua")
      local up = "pang"
      for _ = 1, 100 do
        up = net_adm.ping("pinged@127.0.0.1")
        if up == "pong" then break end
        mb.sleep(100)
      end
      say(up, net_adm.ping(mb.node()), net_adm.ping("nobody@127.0.0.1"))
      stop(pid)
    ]]))
  end)

  it("world_list and world find the nodes of the hosts, this one included", function()
    H.write(tmp .. "/world.hosts", "'127.0.0.1'.\n")
    assert.same({"true true true"}, drive([[
      local net_adm = require "moonbeam.net_adm"
      local pid = node("world1@127.0.0.1", "idle.lua")
      local function has(list, n)
        for _, x in ipairs(list) do if x == mb.atom(tostring(n)) then return true end end
        return false
      end
      local list
      for _ = 1, 100 do
        list = net_adm.world_list({"127.0.0.1"})
        if has(list, "world1@127.0.0.1") then break end
        mb.sleep(100)
      end
      require("moonbeam.application").set_env("moonbeam", "hosts_file", TMP .. "/world.hosts")
      local world = net_adm.world()
      say(has(list, "world1@127.0.0.1"), has(list, mb.node()), has(world, "world1@127.0.0.1"))
      stop(pid)
    ]]))
  end)
end)

describe("the launcher's --connect and --hosts", function()
  it("connects at boot to the nodes of --connect, and says so to monitor_nodes", function()
    assert.same({"true"}, drive(([[
      local pid = node("booted@127.0.0.1", "idle.lua", "--connect", "%s")
      say(seen("nodeup booted@127.0.0.1"))
      stop(pid)
    ]]):format(ME)))
  end)

  it("takes connect and hosts from the config file", function()
    H.write(tmp .. "/node.config.lua", ('return {connect = {"%s"}, hosts = "%s/world.hosts"}')
      :format(ME, tmp))
    H.write(tmp .. "/world.hosts", "'127.0.0.1'.\n")
    assert.same({"true"}, drive([[
      local pid = node("configured@127.0.0.1", "idle.lua", "--config", TMP .. "/node.config.lua")
      say(seen("nodeup configured@127.0.0.1"))
      stop(pid)
    ]]))
  end)

  it("connects to the nodes of the hosts of --hosts", function()
    H.write(tmp .. "/world.hosts", "'127.0.0.1'.\n")
    assert.same({"true"}, drive([[
      local pid = node("hostsboot@127.0.0.1", "idle.lua", "--hosts", TMP .. "/world.hosts")
      say(seen("nodeup hostsboot@127.0.0.1"))
      stop(pid)
    ]]))
  end)

  it("starts the topologies of the moonbeam application's topologies in the config's env", function()
    H.write(tmp .. "/env.config.lua", ([[return {env = {moonbeam = {topologies = {
      back = {strategy = "epmd", config = {hosts = {"%s"}}}}}}}]]):format(ME))
    assert.same({"true"}, drive([[
      local pid = node("fromenv@127.0.0.1", "idle.lua", "--config", TMP .. "/env.config.lua")
      say(seen("nodeup fromenv@127.0.0.1"))
      stop(pid)
    ]]))
  end)

  it("refuses a --connect that is not a list of node names, and one without a name", function()
    local st1, _, err1 = launch({"--sname", "x", "--connect", "a,b@h", tmp .. "/idle.lua"})
    local st2, _, err2 = launch({"--connect", "a@h", tmp .. "/idle.lua"})
    assert.equal(2, st1)
    assert.matches("%-%-connect expects node names %(name@host%), got 'a,b@h'", err1)
    assert.equal(2, st2)
    assert.matches("%-%-connect needs %-%-sname or %-%-name", err2)
  end)

  it("runs on with a malformed host file, and says what is wrong with it", function()
    H.write(tmp .. "/bad.hosts", "'127.0.0.1'.\nnot a host.\n")
    local status, out, err = launch({"eval", "--name", "badhosts@127.0.0.1", "--cookie", COOKIE,
      "--hosts", tmp .. "/bad.hosts", "return 'still running'"})
    assert.equal(0, status)
    assert.equal('"still running"\n', out)
    assert.matches("bad.hosts:2: a full stop expected after not", err)
  end)
end)

describe("moonbeam.cluster", function()
  it("logs an unknown strategy and runs on without that topology", function()
    local status, out, err = launch({"eval", "--name", "unknown@127.0.0.1", "--cookie", COOKIE,
      "local c = require('moonbeam.cluster') "
      .. "local sup = assert(c.start{x = {strategy = 'kubernetes_by_magic'}}) "
      .. "return #require('moonbeam.supervisor').which_children(sup), 'running'"})
    assert.equal(0, status)
    assert.equal('1, "running"\n', out)
    assert.matches("cluster x: unknown strategy 'kubernetes_by_magic'", err)
  end)

  it("epmd: connects to a listed node once it comes up, and again after it went down", function()
    assert.same({"true true true"}, drive([[
      local name = "static@127.0.0.1"
      require("moonbeam.cluster").start{static = {strategy = "epmd",
        config = {hosts = {name}, backoff_min = 100, backoff_max = 400}}}
      -- The node starts after the topology: the topology keeps dialling.
      local pid = node(name, "idle.lua")
      local up1 = seen("nodeup " .. name)
      stop(pid)
      local down = seen("nodedown " .. name)
      pid = node(name, "idle.lua")
      local up2 = seen("nodeup " .. name, 2)
      say(up1, down, up2)
      stop(pid)
    ]]))
  end)

  it("epmd: a user's disconnect is healed", function()
    assert.same({"true true"}, drive([[
      local name = "healed@127.0.0.1"
      local pid = node(name, "idle.lua")
      require("moonbeam.cluster").start{static = {strategy = "epmd",
        config = {hosts = {name}, backoff_min = 100}}}
      local up1 = seen("nodeup " .. name)
      mb.disconnect(name)
      local up2 = seen("nodeup " .. name, 2)
      say(up1, up2)
      stop(pid)
    ]]))
  end)

  it("erlang_hosts: connects to the nodes of the host file's hosts whose names match", function()
    H.write(tmp .. "/match.hosts", "'127.0.0.1'.\n")
    assert.same({"true"}, drive([[
      local pid = node("matched@127.0.0.1", "idle.lua")
      -- The topology reads the hosts again until the node is there.
      require("moonbeam.cluster").start{h = {strategy = "erlang_hosts", config = {
        hosts_file = TMP .. "/match.hosts", polling_interval = 200, name_match = {"matched"}}}}
      say(seen("nodeup matched@127.0.0.1"))
      stop(pid)
    ]]))
  end)

  describe("dns_poll, against dnsmasq", function()
    local dnsmasq = P.sh("command -v dnsmasq || ls /usr/sbin/dnsmasq 2>/dev/null"):match("%S+")
    local DNS_PORT = 25000 + math.random(0, 999)
    local records = tmp .. "/records"
    local dns_pid

    local function resolves(n)
      return run(function(port, n)
        local dns = require "moonbeam.cluster.dns"
        local mb = require "moonbeam"
        for _ = 1, 100 do
          local ips = dns.a_records("peers.test", "127.0.0.1", port, 200)
          if ips and #ips == n then return true end
          mb.sleep(100)
        end
        return false
      end, DNS_PORT, n)
    end

    before_each(function()
      if not dnsmasq then return end
      H.write(records, "127.0.0.1 peers.test\n")
      -- Not under the sanitizers' preload, which a plain dnsmasq refuses.
      -- --local: names under .test not in the records do not exist.
      dns_pid = P.spawn_os(("env -u LD_PRELOAD %s -k --conf-file=/dev/null --port=%d "
        .. "--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts "
        .. "--local=/test/ --addn-hosts=%s --pid-file= --user=root --log-facility=-")
        :format(dnsmasq, DNS_PORT, records), tmp .. "/dnsmasq.log")
      assert(resolves(1), "dnsmasq did not answer")
    end)

    after_each(function()
      if dns_pid then P.kill_os(dns_pid, "KILL") end
      dns_pid = nil
    end)

    it("connects to <basename>@<ip> of each A record, and lets go of a record that is gone", function()
      if not dnsmasq then pending("dnsmasq is not installed (.ci/deps)") return end
      assert.same({"true true"}, drive(([[
        local name = "dnspeer@127.0.0.1"
        local pid = node(name, "idle.lua")
        require("moonbeam.cluster").start{dns = {strategy = "dns_poll", config = {
          query = "peers.test", node_basename = "dnspeer", polling_interval = 200,
          nameserver = "127.0.0.1:%d"}}}
        local up = seen("nodeup " .. name)
        -- The record goes: dnsmasq reads its hosts files again on SIGHUP.
        local f = io.open(TMP .. "/records", "w")
        f:write("127.0.0.9 other.test\n")
        f:close()
        os.execute("kill -HUP %s")
        local down = seen("nodedown " .. name)
        say(up, down)
        stop(pid)
      ]]):format(DNS_PORT, dns_pid)))
    end)

    it("logs a name server that does not answer, and runs on", function()
      local status, out, err = launch({"eval", "--name", "nodns@127.0.0.1", "--cookie", COOKIE,
        ([[local mb = require 'moonbeam'
        mb.monitor_nodes(true)
        require('moonbeam.cluster').start{dns = {strategy = 'dns_poll', config = {
          query = 'peers.test', node_basename = 'x', timeout = 200,
          nameserver = {'127.0.0.1', %d}}}}
        return mb.receive(1500), 'running']]):format(DNS_PORT + 1000)})
      assert.equal(0, status)
      assert.equal('nil, "running"\n', out)
      assert.matches("cluster dns: cannot resolve peers.test at 127.0.0.1:%d+: %w+", err)
    end)
  end)

  describe("gossip", function()
    local GOSSIP_PORT = 26000 + math.random(0, 999)

    it("encodes libcluster's heartbeat, plain and encrypted, and ignores a wrong secret", function()
      local r = run(function()
        local g = require "moonbeam.cluster.gossip"
        local term = require "moonbeam.term"
        local mb = require "moonbeam"
        local me = mb.atom("gossiper@127.0.0.1")
        local plain = g.encode(me)
        local secret = g.encode(me, "s3cret")
        local t = term.binary_to_term(plain:sub(12))
        return {plain:sub(1, 11), tostring(t[mb.atom.node]), tostring(g.decode(secret, "s3cret")),
                tostring(g.decode(secret, "other")), tostring(g.decode(plain, "s3cret")),
                tostring(g.decode("heartbeat::junk")), (#secret - 16) % 16}
      end)
      assert.same({"heartbeat::", "gossiper@127.0.0.1", "gossiper@127.0.0.1", "nil", "nil", "nil", 0}, r)
    end)

    it("forms a cluster of moonbeam nodes over multicast on the loopback", function()
      assert.same({"true"}, drive(([[
        require("moonbeam.cluster").start{lan = {strategy = "gossip", config = {
          port = %d, multicast_if = "127.0.0.1", heartbeat_interval = 300,
          secret = "lan-secret"}}}
        local pid = node("gossip1@127.0.0.1", nil, TMP .. "/gossip.lua", "%d", "lan-secret")
        say(seen("nodeup gossip1@127.0.0.1"))
        stop(pid)
      ]]):format(GOSSIP_PORT, GOSSIP_PORT)))
    end)

    it("and with an Elixir node that sends and receives libcluster's heartbeats", function()
      if not P.have_elixir then pending("elixir is not installed") return end
      H.write(tmp .. "/gossip.exs", [[
[port_s, secret] = System.argv()
port = String.to_integer(port_s)
group = {230, 1, 1, 251}
{:ok, s} = :gen_udp.open(port, [:binary, active: true, ip: {0, 0, 0, 0}, reuseaddr: true,
  multicast_ttl: 1, multicast_loop: true, multicast_if: {127, 0, 0, 1},
  add_membership: {group, {127, 0, 0, 1}}])
key = :crypto.hash(:sha256, secret)
pad = fn m -> n = 16 - rem(byte_size(m), 16); m <> :binary.copy(<<n>>, n) end
beat = fn ->
  iv = :crypto.strong_rand_bytes(16)
  msg = "heartbeat::" <> :erlang.term_to_binary(%{node: node()})
  :gen_udp.send(s, group, port, [iv, :crypto.crypto_one_time(:aes_256_cbc, key, iv, pad.(msg), true)])
end
loop = fn loop ->
  beat.()
  receive do
    {:udp, _, _, _, <<iv::binary-size(16), ct::binary>>} ->
      try do
        pt = :crypto.crypto_one_time(:aes_256_cbc, key, iv, ct, false)
        n = :binary.last(pt)
        <<"heartbeat::", rest::binary>> = binary_part(pt, 0, byte_size(pt) - n)
        %{node: other} = :erlang.binary_to_term(rest)
        if other != node(), do: IO.puts("heard #{other}")
      rescue
        _ -> :ok
      end
  after
    300 -> :ok
  end
  loop.(loop)
end
loop.(loop)
]])
      local cmd = P.peer(("elixir --name exgossip@127.0.0.1 --cookie %s %s/gossip.exs %d mixed-secret")
        :format(COOKIE, P.ptmp, GOSSIP_PORT))
      assert.same({"true true"}, drive(([[
        require("moonbeam.cluster").start{lan = {strategy = "gossip", config = {
          port = %d, multicast_if = "127.0.0.1", heartbeat_interval = 300,
          secret = "mixed-secret"}}}
        local pid = os_process(%q, TMP .. "/exgossip.log")
        local up = seen("nodeup exgossip@127.0.0.1", 1, 60)
        say(up, log_has(TMP .. "/exgossip.log", "heard " .. tostring(mb.node())))
        stop(pid)
      ]]):format(GOSSIP_PORT, cmd)))
    end)
  end)
end)
