-- Distribution against real peers: Erlang/OTP and Elixir nodes on
-- 127.0.0.1, and other moonbeam nodes run by the launcher.  This file's
-- own node (the host's) serves EPMD on a test port; every OS process a spec
-- starts is stopped by its pid, and temp files are removed.
local mb = require "moonbeam"

-- The node is this process's, shared with the other spec/dist_*_spec.lua
-- files of the run (spec/dist_node.lua).
local NODE = require("spec.dist_node").start("mbspec")
local EPMD_PORT, COOKIE = NODE.epmd_port, NODE.cookie
local build = os.getenv("MB_BUILD_DIR") or "build"
local launcher = build .. "/bin/moonbeam"

local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}
local sh, peer, spawn_os, kill_os = P.sh, P.peer, P.spawn_os, P.kill_os
local tmp, ptmp, have_erl, have_elixir = P.tmp, P.ptmp, P.have_erl, P.have_elixir
local started = P.started

-- Long names on 127.0.0.1: every connection stays on the loopback.
local host = "127.0.0.1"

-- Run fn inside a process of this node and return its results.
local function run(fn, ...) return mb.run(fn, ...) end

local log_until = P.log_until

local erl_node = "e1@" .. host
local e1_os_pid -- e1's OS process

setup(function()
  if have_erl then
    P.erlc("mbpeer.erl")
    e1_os_pid = spawn_os(peer(("erl -name e1@127.0.0.1 -setcookie %s -noshell -pa %s -eval 'mbpeer:start()'")
      :format(COOKIE, ptmp)), tmp .. "/e1.log")
    -- wait (bounded) until it answers a ping
    assert(run(function(node)
      local dist = require "moonbeam.dist"
      local mb = require "moonbeam"
      for _ = 1, 100 do
        if dist.ping(node, 1000) == "pong" then return true end
        mb.sleep(100)
      end
      return false
    end, erl_node), "the Erlang peer did not come up")
  end
end)


teardown(P.stop_all)

-- Ask the Erlang peer to apply M:F(A) and return the result.
local function erl_apply(m, f, args, timeout)
  return run(function(node, m, f, args, timeout)
    local mb = require "moonbeam"
    local ref = mb.make_ref()
    mb.send({"ctl", node}, mb.tuple(mb.self(), ref, mb.tuple(mb.atom.apply, mb.atom(m), mb.atom(f), mb.list(table.unpack(args)))))
    local r = mb.receive(function(x) return x[1] == ref end, timeout or 20000)
    return r and r[2]
  end, erl_node, m, f, args, timeout)
end

-- The peer answers pings before its -eval has registered ctl: wait for it.
local function await_ctl()
  for _ = 1, 100 do
    if erl_apply("erlang", "node", {}, 200) ~= nil then return end
  end
  -- Say what is left of the peer, for the log of a failed run.
  local pong = run(function(node) return require("moonbeam.dist").ping(node, 2000) end, erl_node)
  local f = io.open(tmp .. "/e1.log")
  local log = f and f:read("a") or "(no log)"
  if f then f:close() end
  error(("the Erlang peer's ctl process does not answer: its OS process: %s, a ping gives %s; its log:\n%s")
    :format(P.exit_status(e1_os_pid), pong, log:sub(-4000)))
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("distribution with an Erlang node", function()
  if not have_erl then pending("erl is not installed") return end
  setup(await_ctl)

  it("answers net_adm:ping from Erlang, and pings Erlang", function()
    local r = erl_apply("net_adm", "ping", {mb.atom("mbspec@" .. host)})
    assert.equal("pong", tostring(r))
    assert.equal("pong", run(function(node) return require("moonbeam.dist").ping(node) end, erl_node))
  end)

  it("lists the Erlang node among its nodes, and Erlang lists us", function()
    local ours = run(function(node)
      local mb = require "moonbeam"
      for _, n in ipairs(mb.nodes()) do if tostring(n) == node then return true end end
      return false
    end, erl_node)
    assert.is_true(ours)
    local theirs = erl_apply("erlang", "nodes", {})
    local found = false
    for _, n in ipairs(theirs) do found = found or tostring(n) == "mbspec@" .. host end
    assert.is_true(found)
  end)

  it("stacks monitor_node and monitor_nodes as Erlang does, and connect leaves them alone", function()
    local downs, ups, connected, left = run(function(node)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      local n = mb.atom(node)
      local function count(tag, want)
        local k = 0
        for _ = 1, want do
          if mb.receive(function(m) return m[1] == tag and m[2] == n end, 10000) then k = k + 1 end
        end
        return k
      end
      assert(dist.connect(node))
      mb.monitor_nodes(true)
      mb.monitor_nodes(true)
      mb.monitor_node(n, true)
      mb.monitor_node(n, true)
      mb.monitor_node(n, true)
      mb.monitor_node(n, false)
      assert(dist.ping(node) == "pong")
      mb.disconnect(n)
      -- two subscriptions and two node monitors: four nodedown
      local downs = count(mb.atom.nodedown, 4)
      local connected = dist.connect(node)
      local ups = count(mb.atom.nodeup, 2)
      mb.monitor_nodes(false)
      local left = {}
      while true do
        local m = mb.receive(200)
        if m == nil then break end
        left[#left + 1] = tostring(m)
      end
      return downs, ups, connected, table.concat(left, " ")
    end, erl_node)
    assert.equal(4, downs)
    assert.is_true(connected)
    assert.equal(2, ups)
    assert.equal("", left)
  end)

  it("sends to {name, node} and to remote pids, and gets replies", function()
    local v = run(function(node)
      local mb = require "moonbeam"
      mb.send({"echo", node}, mb.tuple(mb.self(), {1, "two", mb.atom.three}))
      local m = mb.receive(5000)
      return m[1] == mb.atom.echoed and m[2][1] == 1 and m[2][2] == "two" and m[2][3] == mb.atom.three
    end, erl_node)
    assert.is_true(v)
  end)

  it("keeps each sender's messages in order, in bursts and one by one, from four senders at once", function()
    -- Senders write to the socket themselves when nothing is queued, and
    -- queue behind the loop thread otherwise: both must keep the order.
    local bad = run(function(node)
      local mb = require "moonbeam"
      local me, N = mb.self(), 3000
      for s = 1, 4 do
        mb.spawn(function()
          local got, sent, wrong = 0, 0, nil
          while got < N and not wrong do
            -- a burst of up to 50, then waits for some answers
            for _ = 1, math.random(1, 50) do
              if sent < N then
                sent = sent + 1
                mb.send({"echo", node}, mb.tuple(mb.self(), mb.tuple(s, sent)))
              end
            end
            local want = math.random(got + 1, sent)
            while got < want do
              local m = mb.receive(20000)
              if m == nil then wrong = ("sender %d: nothing after %d"):format(s, got) break end
              got = got + 1
              if m[2][1] ~= s or m[2][2] ~= got then
                wrong = ("sender %d: got %s, %s where %d was due"):format(s, tostring(m[2][1]), tostring(m[2][2]), got)
              end
            end
          end
          mb.send(me, wrong or "ok")
        end)
      end
      local bad = {}
      for _ = 1, 4 do
        local r = mb.receive(120000)
        if r ~= "ok" then bad[#bad + 1] = tostring(r) end
      end
      return table.concat(bad, "; ")
    end, erl_node)
    assert.equal("", bad)
  end)

  it("carries the term zoo from Erlang to Lua and back unchanged", function()
    local same = {run(function(node)
      local mb = require "moonbeam"
      local rpc = require "moonbeam.rpc"
      local zoo = rpc.call(node, "mbpeer", "zoo", {}, 30000)
      -- each term goes back and Erlang compares it with =:=
      local bad = {}
      for i = 1, zoo.n do
        local ok = rpc.call(node, "mbpeer", "same", {zoo[i], zoo[i]}, 30000)
        if ok ~= true then bad[#bad + 1] = i end
      end
      -- and the whole list compared with a fresh copy made there
      return #bad, zoo.n, mb.typeof(zoo[8]), #zoo[36], zoo[35].n
    end, erl_node)}
    assert.same({0, 36, "bignum", 2000000, 100000}, same)
  end)

  it("sends Lua tables to Erlang and gets them back equal", function()
    local r = run(function(node)
      local mb = require "moonbeam"
      local t = {1, 2, {3, {4}}, name = "n", nested = {a = {b = "c"}}, [2.5] = true}
      mb.send({"echo", node}, mb.tuple(mb.self(), t))
      local back = mb.receive(5000)[2]
      return back[1] == 1 and back[3][2][1] == 4 and back.name == "n" and back.nested.a.b == "c"
        and back[2.5] == true
    end, erl_node)
    assert.is_true(r)
  end)

  it("sends a linked list of 100,000 nodes to Erlang and gets it back", function()
    local n = run(function(node)
      local mb = require "moonbeam"
      local list
      for i = 100000, 1, -1 do list = {value = i, next = list} end
      mb.send({"echo", node}, mb.tuple(mb.self(), list))
      local back, n = mb.receive(20000)[2], 0
      while back do
        n = n + 1
        if back.value ~= n then return -n end
        back = back.next
      end
      return n
    end, erl_node)
    assert.equal(100000, n)
  end)

  it("calls an Erlang gen_server, and a missing one fails with noproc at once", function()
    local a, b, c = run(function(node)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local put = gs.call({"kv", node}, mb.tuple(mb.atom.put, "k", 42))
      local got = gs.call({"kv", node}, mb.tuple(mb.atom.get, "k"))
      local _, e = pcall(gs.call, {"no_such", node}, "x", 10000)
      return tostring(put), got, tostring(e[1])
    end, erl_node)
    assert.same({"ok", 42, "noproc"}, {a, b, c})
  end)

  it("answers gen_server:call from Erlang to a Lua GenServer", function()
    run(function()
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      gs.start({
        init = function() return "ok", {} end,
        handle_call = function(req, _, s)
          local mb = require "moonbeam"
          if mb.typeof(req) == "tuple" and req[1] == mb.atom.put then
            s[req[2]] = req[3]
            return "reply", mb.atom.ok, s
          end
          return "reply", s[req[2]], s
        end,
      }, nil, {name = "lua_kv"})
    end)
    local me = "mbspec@" .. host
    assert.equal("ok", tostring(erl_apply("gen_server", "call", {mb.tuple(mb.atom.lua_kv, mb.atom(me)), mb.tuple(mb.atom.put, "x", 7)})))
    assert.equal(7, erl_apply("gen_server", "call", {mb.tuple(mb.atom.lua_kv, mb.atom(me)), mb.tuple(mb.atom.get, "x")}))
    run(function() require("moonbeam.gen_server").stop("lua_kv") end)
  end)

  it("runs erpc:call from Erlang on a Lua function, and reports an undefined one", function()
    local me = mb.atom("mbspec@" .. host)
    assert.equal(5, erl_apply("erpc", "call", {me, mb.atom("fixtures.spec_rpc"), mb.atom.add, mb.list(2, 3)}))
    local undef = erl_apply("rpc", "call", {me, mb.atom("fixtures.spec_rpc"), mb.atom.nope, mb.list()})
    assert.equal("badrpc", tostring(undef[1]))
    assert.matches("undef", tostring(undef[2][2][1]))
  end)

  it("answers rpc:block_call and rpc:call through rex, with Erlang's error shapes", function()
    local me = mb.atom("mbspec@" .. host)
    local mod = mb.atom("fixtures.spec_rpc")
    assert.equal(5, erl_apply("rpc", "block_call", {me, mod, mb.atom.add, mb.list(2, 3)}))
    -- {badrpc, {'EXIT', {undef, [{M, F, A, []}]}}}, from rex and from erpc alike
    for _, f in ipairs({"block_call", "call"}) do
      local r = erl_apply("rpc", f, {me, mod, mb.atom.nope, mb.list(1)})
      assert.equal("badrpc", tostring(r[1]))
      assert.equal("EXIT", tostring(r[2][1]))
      assert.equal("undef", tostring(r[2][2][1]))
      local mfa = r[2][2][2][1]
      assert.same({"fixtures.spec_rpc", "nope", 1, 0},
        {tostring(mfa[1]), tostring(mfa[2]), mfa[3].n, mfa[4].n})
    end
  end)

  it("runs erpc:call from Erlang on a Lua standard library function", function()
    local me = mb.atom("mbspec@" .. host)
    assert.equal("MOON", erl_apply("erpc", "call", {me, mb.atom.string, mb.atom.upper, mb.list("moon")}))
  end)

  it("reports a Lua module that fails to load with its reason, not as undef", function()
    local me = mb.atom("mbspec@" .. host)
    for mod, why in pairs({["fixtures.spec_rpc_broken"] = "spec_rpc_broken.lua:3:",
                           ["fixtures.spec_rpc_raises"] = "cannot load on purpose"}) do
      local r = erl_apply("rpc", "call", {me, mb.atom(mod), mb.atom.f, mb.list()})
      assert.equal("badrpc", tostring(r[1]))
      local reason = r[2][2][1]
      assert.equal("load_failed", tostring(reason[1]))
      assert.equal(mod, tostring(reason[2]))
      assert.truthy(tostring(reason[3]):find(why, 1, true), tostring(reason[3]))
    end
  end)

  it("answers the probe calls tools make to any node, as BEAM answers them", function()
    local me = mb.atom("mbspec@" .. host)
    local function probe(f, ...)
      return erl_apply("erpc", "call", {me, mb.atom.erlang, mb.atom(f), mb.list(...)})
    end
    assert.equal(me, probe("node"))
    assert.equal(me, probe("node", run(function() return require("moonbeam").self() end)))
    assert.equal(mb.atom(erl_node), probe("node", erl_apply("erlang", "self", {})))
    assert.same({erl_node}, {tostring(probe("nodes")[1])})
    local known = probe("nodes", mb.list(mb.atom.this, mb.atom.visible))
    assert.same({"mbspec@" .. host, erl_node}, {tostring(known[1]), tostring(known[2])})
    assert.is_true(probe("is_alive"))
    assert.equal("pid", mb.typeof(probe("whereis", mb.atom.net_kernel)))
    assert.equal("undefined", tostring(probe("whereis", mb.atom.nobody_here)))
    local names = {}
    for _, n in ipairs(probe("registered")) do names[tostring(n)] = true end
    assert.is_true(names.net_kernel and names.rex and names.pg)
    -- system_info: what moonbeam is, in Erlang's types (strings are lists)
    local release = probe("system_info", mb.atom.otp_release)
    assert.equal("list", mb.typeof(release))
    assert.matches("^moonbeam ", string.char(table.unpack(release)))
    assert.equal(8, probe("system_info", mb.atom.wordsize))
    assert.equal("number", type(probe("system_info", mb.atom.process_count)))
    -- what is not in the set fails as on BEAM: erpc's error
    -- {exception, badarg | undef, Stack}
    local bad = probe("system_info", mb.atom.no_such_item)
    assert.same({"error", "exception", "badarg"},
      {tostring(bad[2]), tostring(bad[3][1]), tostring(bad[3][2])})
    local undef = probe("no_such_function")
    assert.same({"error", "exception", "undef"},
      {tostring(undef[2]), tostring(undef[3][1]), tostring(undef[3][2])})
    local rpc = erl_apply("rpc", "call", {me, mb.atom.erlang, mb.atom.nodes, mb.list()})
    assert.same({erl_node}, {tostring(rpc[1])})
  end)

  it("calls Erlang functions with rpc, and reports an undefined one", function()
    local n, err = run(function(node)
      local rpc = require "moonbeam.rpc"
      local n = rpc.call(node, "lists", "sum", {{1, 2, 3}})
      local _, e = pcall(rpc.call, node, "no_module", "f", {})
      return n, tostring(e[3])
    end, erl_node)
    assert.equal(6, n)
    assert.equal("undef", err)
  end)

  it("links and monitors a remote process, which dies with its reason", function()
    local exit_reason, down_reason = run(function(node)
      local mb = require "moonbeam"
      local rpc = require "moonbeam.rpc"
      mb.trap_exit(true)
      local p = rpc.call(node, "erlang", "spawn", {mb.atom.timer, mb.atom.sleep, {60000}})
      mb.link(p)
      local ref = mb.monitor(p)
      mb.exit(p, "boom")
      local e = mb.receive(function(m) return m[1] == mb.atom.EXIT end, 5000)
      local d = mb.receive(function(m) return m[1] == mb.atom.DOWN and m[2] == ref end, 5000)
      return e and tostring(e[3]), d and tostring(d[5])
    end, erl_node)
    assert.equal("boom", exit_reason)
    assert.equal("boom", down_reason)
  end)

  it("lets an Erlang process link to and monitor a Lua process", function()
    local saw_exit, saw_down = run(function(node)
      local mb = require "moonbeam"
      local me = mb.self()
      local victim = mb.spawn(function() mb.receive() mb.exit("lua_reason") end)
      mb.send({"ctl", node}, mb.tuple(me, mb.make_ref(),
        mb.tuple(mb.atom.apply, mb.atom.mbpeer, mb.atom.watch, mb.list(me, victim))))
      mb.receive(function(m) return m[1] == mb.atom.watching end, 5000)
      mb.sleep(100)
      mb.send(victim, "go")
      local e = mb.receive(function(m) return m[1] == mb.atom.peer_saw_exit end, 5000)
      local d = mb.receive(function(m) return m[1] == mb.atom.peer_saw_down end, 5000)
      return e and tostring(e[2]), d and tostring(d[2])
    end, erl_node)
    assert.equal("lua_reason", saw_exit)
    assert.equal("lua_reason", saw_down)
  end)
end)

describe("terms Lua has no plain value for", function()
  if not have_erl then pending("erl is not installed") return end
  setup(await_ctl)

  it("arrive as opaque terms, go back unchanged, and never close the connection", function()
    local kinds = run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local echo = mb.spawn(function()
        while true do
          local m = mb.receive()
          if m == "stop" then return end
          if m[2] ~= "last" then mb.send(me, mb.typeof(m[2])) end
          mb.send(m[1], mb.tuple(mb.atom.echoed, m[2]))
        end
      end)
      mb.register("lua_echo", echo)
      return echo
    end)
    local me = mb.atom("mbspec@" .. host)
    local r = erl_apply("mbpeer", "odd_roundtrip", {mb.atom.lua_echo, me}, 60000)
    run(function() local mb = require "moonbeam" mb.send("lua_echo", "stop") end)
    local back = {}
    for i = 1, r[1].n do back[i] = tostring(r[1][i]) end
    assert.same({"same", "same", "same", "same", "same", "same", "same", "same"}, back)
    assert.equal("same", tostring(r[2]))
    assert.equal("up", tostring(r[3]))
  end)

  it("are opaque terms that print themselves", function()
    local kinds = {run(function(node)
      local mb = require "moonbeam"
      local rpc = require "moonbeam.rpc"
      local t = rpc.call(node, "mbpeer", "odd_terms", {}, 30000)
      return mb.typeof(t[1]), mb.typeof(t[2]), mb.typeof(t[3][2][1]), mb.typeof(t[4]),
        tostring(t[4]) == string.rep("a", 255), mb.typeof(t[6]), #tostring(t[6]),
        tostring(t[1]):match("^#Term<map of %d+ bytes>$") ~= nil
    end, erl_node)}
    -- a 255-byte atom is an atom; longer ones are kept as terms
    assert.same({"term", "term", "term", "atom", true, "term", 1020, true}, kinds)
  end)
end)

describe("a handshake that claims a connected node's name", function()
  if not have_erl then pending("erl is not installed") return end
  setup(await_ctl)

  it("without the cookie leaves the live connection, its links and monitors untouched", function()
    local status, after, exit_reason, down_reason, pong = run(function(node)
      local mb = require "moonbeam"
      local rpc = require "moonbeam.rpc"
      local dist = require "moonbeam.dist"
      mb.trap_exit(true)
      local p = rpc.call(node, "erlang", "spawn", {mb.atom.timer, mb.atom.sleep, {60000}})
      mb.link(p)
      local ref = mb.monitor(p)
      -- the Erlang node itself runs the raw client, claiming its own name
      local tag = mb.make_ref()
      mb.send({"ctl", node}, mb.tuple(mb.self(), tag, mb.tuple(mb.atom.apply, mb.atom.mbpeer,
        mb.atom.hostile, mb.list("mbspec", mb.atom(node)))))
      local r = mb.receive(function(m) return m[1] == tag end, 20000)[2]
      local pong = dist.ping(node)
      -- a noconnection, had there been one, would come before this exit
      mb.exit(p, "boom")
      local e = mb.receive(function(m) return m[1] == mb.atom.EXIT end, 5000)
      local d = mb.receive(function(m) return m[1] == mb.atom.DOWN and m[2] == ref end, 5000)
      if mb.typeof(r[2]) ~= "tuple" then error(require("moonbeam.inspect")(r)) end
      return tostring(r[1]), tostring(r[2][2]), e and tostring(e[3]), d and tostring(d[5]), pong
    end, erl_node)
    assert.equal("alive", status)
    assert.equal("closed", after)
    assert.equal("boom", exit_reason)
    assert.equal("boom", down_reason)
    assert.equal("pong", pong)
  end)
end)

describe("idle connections from many sockets", function()
  if not have_erl then pending("erl is not installed") return end
  setup(await_ctl)

  -- Loopback addresses 127.0.0.2 and up stand for other hosts.
  local function sources(n)
    local ips = {}
    for i = 1, n do ips[i] = mb.tuple(127, 0, 0, 1 + i) end
    return mb.list(table.unpack(ips))
  end

  it("are bounded at the distribution port, and a real node still gets in", function()
    local port = erl_apply("mbpeer", "port_of", {"mbspec"})
    local holder = erl_apply("mbpeer", "flood", {port, sources(10), 20})
    -- a new connection from the Erlang node, after all of them
    local me = mb.atom("mbspec@" .. host)
    erl_apply("net_kernel", "disconnect", {me})
    local pong = erl_apply("net_adm", "ping", {me})
    local open = erl_apply("mbpeer", "flood_open", {holder})
    erl_apply("mbpeer", "flood_stop", {holder})
    assert.equal("pong", tostring(pong))
    assert.is_true(open[1] <= 128, "open in all: " .. tostring(open[1]))
    assert.is_true(open[2] <= 16, "open from one address: " .. tostring(open[2]))
  end)

  it("are bounded at the built-in EPMD, and registrations held open do not block lookups", function()
    local registered = erl_apply("mbpeer", "register_many", {EPMD_PORT, 600})
    local holder = erl_apply("mbpeer", "flood", {EPMD_PORT, sources(20), 40})
    local found = erl_apply("mbpeer", "port_of", {"mbspec"})
    local open = erl_apply("mbpeer", "flood_open", {holder})
    erl_apply("mbpeer", "flood_stop", {holder})
    erl_apply("mbpeer", "flood_stop", {registered})
    assert.equal("number", math.type(found) and "number", tostring(found))
    assert.is_true(open[1] <= 512, "open in all: " .. tostring(open[1]))
  end)
end)

describe("distribution with an Elixir node", function()
  if not have_erl or not have_elixir then pending("elixir is not installed") return end

  it("calls and casts to an Elixir GenServer by {name, node}", function()
    local code = [[
defmodule Counter do
  use GenServer
  def init(n), do: {:ok, n}
  def handle_call(:get, _from, n), do: {:reply, n, n}
  def handle_call({:add, k}, _from, n), do: {:reply, n + k, n + k}
  def handle_cast({:add, k}, n), do: {:noreply, n + k}
end
GenServer.start(Counter, 10, name: :counter)
Process.sleep(:infinity)
]]
    local f = io.open(tmp .. "/counter.exs", "w")
    f:write(code)
    f:close()
    spawn_os(peer(("elixir --name x1@127.0.0.1 --cookie %s %s/counter.exs"):format(COOKIE, ptmp)), tmp .. "/x1.log")
    local got = {run(function(node)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      local gs = require "moonbeam.gen_server"
      for _ = 1, 200 do
        if dist.ping(node, 1000) == "pong" then
          local ok, v = pcall(gs.call, {"counter", node}, mb.tuple(mb.atom.add, 5))
          if ok then
            gs.cast({"counter", node}, mb.tuple(mb.atom.add, 100))
            return v, gs.call({"counter", node}, mb.atom.get)
          end
        end
        mb.sleep(100)
      end
    end, "x1@" .. host)}
    assert.same({15, 115}, got)
  end)
end)

describe("a connection that goes down", function()
  if not have_erl then pending("erl is not installed") return end

  it("fires links and monitors with noconnection when the node dies", function()
    spawn_os(peer(("erl -name e2@127.0.0.1 -setcookie %s -noshell -pa %s -eval 'mbpeer:start()'")
      :format(COOKIE, ptmp)), tmp .. "/e2.log")
    local pidfile = started[#started]
    local e, d, down_event = run(function(node, ospid)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      local rpc = require "moonbeam.rpc"
      for _ = 1, 100 do
        if dist.ping(node, 1000) == "pong" then break end
        mb.sleep(100)
      end
      mb.trap_exit(true)
      local p
      for _ = 1, 100 do -- until its -eval has registered echo
        p = rpc.call(node, "erlang", "whereis", {mb.atom.echo})
        if mb.typeof(p) == "pid" then break end
        mb.sleep(50)
      end
      mb.link(p)
      local ref = mb.monitor(p)
      mb.monitor_node(node, true)
      os.execute("kill -KILL " .. ospid)
      local ex = mb.receive(function(m) return m[1] == mb.atom.EXIT end, 10000)
      local dn = mb.receive(function(m) return m[1] == mb.atom.DOWN and m[2] == ref end, 10000)
      local nd = mb.receive(function(m) return m[1] == mb.atom.nodedown end, 10000)
      return ex and tostring(ex[3]), dn and tostring(dn[5]), nd and tostring(nd[2])
    end, "e2@" .. host, pidfile)
    assert.equal("noconnection", e)
    assert.equal("noconnection", d)
    assert.equal("e2@" .. host, down_event)
  end)
end)

describe("a pid of a node's previous incarnation", function()
  it("gives noproc at once to a link, from Lua and from Erlang", function()
    -- A moonbeam node that registers the same process each time it
    -- starts; its second incarnation has a new creation.
    local script = tmp .. "/incarnation.lua"
    local f = io.open(script, "w")
    f:write([[
local mb = require "moonbeam"
require("moonbeam.dist").start{name = "inc@127.0.0.1", cookie = arg[1], epmd_port = tonumber(arg[2])}
mb.register("member", mb.self())
print("UP")
io.stdout:flush()
mb.receive(60000)
]])
    f:close()
    local function incarnation(n)
      local p = io.popen(("exec %s %s %s %d > %s/inc%d.log 2>&1 & echo $!")
        :format(launcher, script, COOKIE, EPMD_PORT, tmp, n))
      local pid = p:read("l")
      p:close()
      P.track(pid)
      assert.matches("UP", log_until("inc" .. n, "UP"))
      return pid
    end
    local inc = "inc@" .. host
    local first = incarnation(1)
    local old = run(function(node)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      assert(dist.ping(node) == "pong")
      local p = require("moonbeam.rpc").call(node, "moonbeam", "whereis", {"member"})
      mb.monitor_node(node, true)
      return p
    end, inc)
    assert.equal("pid", mb.typeof(old))
    kill_os(first, "KILL")
    run(function(node)
      local mb = require "moonbeam"
      mb.monitor_node(node, true)
      assert(mb.receive(function(m) return m[1] == mb.atom.nodedown end, 10000))
    end, inc)
    incarnation(2)
    local from_lua = run(function(node, p)
      local mb = require "moonbeam"
      assert(require("moonbeam.dist").ping(node) == "pong")
      mb.trap_exit(true)
      mb.link(p)
      local e = mb.receive(function(m) return m[1] == mb.atom.EXIT end, 5000)
      return e and e[2] == p and tostring(e[3]) or "nothing"
    end, inc, old)
    assert.equal("noproc", from_lua)
    if have_erl then
      assert.equal("noproc", tostring(erl_apply("mbpeer", "link_outcome", {old})))
    end
  end)
end)

describe("a peer that stops answering", function()
  if not have_erl then pending("erl is not installed") return end

  it("is found dead by the ticks, with net_ticktime 4, while its socket stays open", function()
    -- A stopped (SIGSTOP) Erlang node keeps its connection open and says
    -- nothing: only the tick timeout can find it gone.
    local erl = spawn_os(peer(("erl -name e5@127.0.0.1 -setcookie %s -kernel net_ticktime 4 -noshell")
      :format(COOKIE)), tmp .. "/e5.log")
    local script = tmp .. "/ticker.lua"
    local f = io.open(script, "w")
    f:write([[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local peer = arg[1]
dist.start{name = "ticker@127.0.0.1", cookie = arg[2], epmd_port = tonumber(arg[3]), ticktime = 4}
local up = false
for _ = 1, 100 do
  if dist.ping(peer, 1000) == "pong" then up = true break end
  mb.sleep(100)
end
mb.monitor_node(peer, true)
print(up and "UP" or "NOT UP")
io.stdout:flush()
local m = mb.receive(function(m) return m[1] == mb.atom.nodedown end, 20000)
print(m and ("DOWN " .. tostring(m[2])) or "NO NODEDOWN")
io.stdout:flush()
]])
    f:close()
    local p = io.popen(("exec %s %s e5@%s %s %d > %s/ticker.log 2>&1 & echo $!")
      :format(launcher, script, host, COOKIE, EPMD_PORT, tmp))
    P.track(p:read("l"))
    p:close()
    local out = log_until("ticker", "UP")
    assert.matches("\nUP\n", "\n" .. out)
    kill_os(erl, "STOP")
    out = log_until("ticker", "DOWN")
    kill_os(erl, "KILL")
    assert.matches("DOWN e5@127.0.0.1", out, 1, true)
    assert.matches("net_tick_timeout", out, 1, true)
  end)
end)

describe("two nodes that connect to each other at once", function()
  it("end up with one connection, and both pings answer", function()
    -- Both wait for the same file, then ping each other: the handshakes
    -- cross, and the name comparison decides which one goes on.
    local script = tmp .. "/crossing.lua"
    local go = tmp .. "/go"
    local f = io.open(script, "w")
    f:write([[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local me, peer, go = arg[1], arg[2], arg[5]
dist.start{name = me .. "@127.0.0.1", cookie = arg[3], epmd_port = tonumber(arg[4])}
print("READY")
io.stdout:flush()
for _ = 1, 2000 do
  local g = io.open(go)
  if g then g:close() break end
  mb.sleep(5)
end
local r = dist.ping(peer, 5000)
mb.sleep(300)
print("PING " .. tostring(r) .. " NODES " .. #mb.nodes())
io.stdout:flush()
mb.receive(5000)
]])
    f:close()
    local function node(name, peer)
      local p = io.popen(("exec %s %s %s %s %s %d %s > %s/%s.log 2>&1 & echo $!")
        :format(launcher, script, name, peer, COOKIE, EPMD_PORT, go, tmp, name))
      P.track(p:read("l"))
      p:close()
    end
    node("c1", "c2@" .. host)
    node("c2", "c1@" .. host)
    log_until("c1", "READY")
    log_until("c2", "READY")
    io.open(go, "w"):close()
    local one, two = log_until("c1", "PING"), log_until("c2", "PING")
    os.remove(go)
    assert.matches("PING pong NODES 1", one, 1, true)
    assert.matches("PING pong NODES 1", two, 1, true)
  end)
end)

describe("a cookie that does not match", function()
  if not have_erl then pending("erl is not installed") return end

  it("is refused and logged, and nothing else is affected", function()
    spawn_os(peer(("erl -name e3@127.0.0.1 -setcookie wrong -noshell -eval 'R = net_adm:ping(list_to_atom(\"mbspec@%s\")), io:format(\"~p~n\", [R]), halt()'")
      :format(host)), tmp .. "/e3.log")
    assert.matches("pang", log_until("e3", "pang"))
    -- the connection to e1 still works
    assert.equal("pong", run(function(node) return require("moonbeam.dist").ping(node) end, erl_node))
  end)
end)

describe("three moonbeam nodes", function()
  it("form a cluster with no Erlang installed (the first serves EPMD)", function()
    local script = tmp .. "/member.lua"
    local f = io.open(script, "w")
    f:write([[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local me, port, cookie, peers = arg[1], tonumber(arg[2]), arg[3], {}
for i = 4, #arg do peers[#peers + 1] = arg[i] end
dist.start{name = me .. "@127.0.0.1", cookie = cookie, epmd_port = port}
mb.register("member", mb.self())
for _, p in ipairs(peers) do
  for _ = 1, 100 do if dist.ping(p, 1000) == "pong" then break end mb.sleep(100) end
end
local names = {}
for _, n in ipairs(mb.nodes()) do names[#names + 1] = tostring(n) end
table.sort(names)
print("NODES " .. table.concat(names, " "))
io.stdout:flush()
mb.receive(function(m) return m == "stop" end, 60000) -- until stopped
]])
    f:close()
    local port = EPMD_PORT + 1000
    local function member(name, ...)
      local p = io.popen(("exec %s %s %s %d %s %s > %s/%s.log 2>&1 & echo $!")
        :format(launcher, script, name, port, COOKIE, table.concat({...}, " "), tmp, name))
      local pid = p:read("l")
      p:close()
      P.track(pid)
      return pid
    end
    member("m1")
    log_until("m1", "NODES") -- m1 serves EPMD once it prints its (empty) list
    member("m2", "m1@" .. host)
    member("m3", "m1@" .. host, "m2@" .. host)
    local want = "NODES m1@" .. host .. " m2@" .. host
    assert.matches(want, log_until("m3", "NODES"), 1, true)
  end)
end)
