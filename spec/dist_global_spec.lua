-- global against real Erlang peers on 127.0.0.1: global:sync() completes
-- with a moonbeam node in the cluster, names registered on either side are
-- seen on both, go when their process or node goes, and conflicts resolve
-- as OTP resolves them.  Every OS process started here is stopped by its
-- pid, and every wait is bounded.
local mb = require "moonbeam"

-- The node is this process's, shared with the other spec/dist_*_spec.lua
-- files of the run (spec/dist_node.lua); its name is mbspec@127.0.0.1,
-- which the conflicts below order between c* and z* nodes.
local NODE = require("spec.dist_node").start("mbspec")
local EPMD_PORT, COOKIE = NODE.epmd_port, NODE.cookie
local host = "127.0.0.1"
local me = NODE.name

local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}
local tmp, ptmp = P.tmp, P.ptmp

local function run(fn, ...) return mb.run(fn, ...) end

-- Start an Erlang peer running mbpeer (its ctl process applies what we
-- ask) and wait, bounded, until it answers.
local function start_erl(name, extra)
  P.spawn_os(P.peer(("erl -name %s@127.0.0.1 -setcookie %s -noshell -pa %s %s -eval 'mbpeer:start()'")
    :format(name, COOKIE, ptmp, extra or "")), tmp .. "/" .. name .. ".log")
  return name .. "@" .. host
end

-- Ask node's ctl process to apply M:F(A); nil if no answer within timeout.
local function erl_apply(node, m, f, args, timeout)
  return run(function(node, m, f, args, timeout)
    local mb = require "moonbeam"
    local ref = mb.make_ref()
    mb.send({"ctl", node}, mb.tuple(mb.self(), ref,
      mb.tuple(mb.atom.apply, mb.atom(m), mb.atom(f), mb.list(table.unpack(args)))))
    local r = mb.receive(function(x) return x[1] == ref end, timeout or 20000)
    return r and r[2]
  end, node, m, f, args, timeout)
end

-- Wait (bounded) until node's ctl answers; the connection is then up.
local function await(node)
  for _ = 1, 100 do
    if erl_apply(node, "erlang", "node", {}, 200) ~= nil then return end
  end
  error("the Erlang peer " .. node .. " did not come up")
end

-- Poll fn() (bounded, 10 s) until it returns true.
local function eventually(fn)
  for _ = 1, 200 do
    if fn() then return true end
    run(function() require("moonbeam").sleep(50) end)
  end
  return false
end

local function lua_sleeper()
  return run(function()
    local mb = require "moonbeam"
    return mb.spawn(function() require("moonbeam").receive(function(m) return m == "stop" end) end)
  end)
end

local function global(fn, ...)
  return run(function(fn, ...)
    return require("moonbeam.global")[fn](...)
  end, fn, ...)
end

local A = mb.atom

setup(function()
  if P.have_erl then
    P.erlc("mbpeer.erl")
    P.erlc("mbglobal.erl")
  end
end)

teardown(P.stop_all)

-- Stop a peer's OS process and wait (bounded) until its node is gone.
local function stop_erl(node, pid)
  P.kill_os(pid, "KILL")
  return eventually(function()
    for _, n in ipairs(run(function() return require("moonbeam").nodes() end)) do
      if tostring(n) == node then return false end
    end
    return true
  end)
end

describe("moonbeam.global's arguments", function()
  it("raise on a missing name, a value that is not a pid, or a resolve it cannot name", function()
    local errs = run(function()
      local mb = require "moonbeam"
      local global = require "moonbeam.global"
      local out = {}
      for i, args in ipairs{{nil, mb.self()}, {"n", "not a pid"}, {"n", mb.self(), function() end}} do
        local ok, err = pcall(global.register_name, table.unpack(args, 1, 3))
        out[i] = not ok and tostring(err) or "no error"
      end
      return out
    end)
    assert.matches("bad argument #1 to 'register_name' (name expected, got nil)", errs[1], 1, true)
    assert.matches("bad argument #2 to 'register_name' (pid expected, got string)", errs[2], 1, true)
    assert.matches("bad argument #3 to 'register_name' (resolve:", errs[3], 1, true)
  end)
end)

describe("global with an Erlang node", function()
  local e1, pid1
  setup(function()
    if not P.have_erl then return end
    e1 = start_erl("g1")
    pid1 = P.started[#P.started]
    await(e1)
  end)

  it("lets global:sync() on the Erlang node return, and sync here too", function()
    if not P.have_erl then return pending("no erl") end
    assert.equal(A.ok, erl_apply(e1, "mbglobal", "sync", {10000}))
    assert.is_true(global("sync"))
  end)

  it("shows a name registered from Lua to Erlang, and removes it when the process ends", function()
    if not P.have_erl then return pending("no erl") end
    local pid = lua_sleeper()
    assert.is_true(global("register_name", "lua_db", pid))
    assert.equal(pid, erl_apply(e1, "mbglobal", "whereis", {A.lua_db}))
    assert.equal(pid, global("whereis_name", "lua_db"))
    -- a second name for the same pid is refused, as OTP refuses it
    assert.is_false(global("register_name", "lua_db2", pid))
    -- and the name is taken
    assert.is_false(global("register_name", "lua_db", lua_sleeper()))
    run(function(p) require("moonbeam").send(p, "stop") end, pid)
    assert.is_true(eventually(function()
      return erl_apply(e1, "mbglobal", "whereis", {A.lua_db}) == A.undefined
    end))
    assert.is_nil(global("whereis_name", "lua_db"))
  end)

  it("finds a name registered on Erlang, sends to it, and forgets it when it is unregistered", function()
    if not P.have_erl then return pending("no erl") end
    local r = erl_apply(e1, "mbglobal", "reg", {A.erl_db})
    assert.equal(A.yes, r[1])
    assert.equal(r[2], global("whereis_name", "erl_db"))
    assert.equal(r[2], global("send", "erl_db", "hi"))
    local names = {}
    for _, n in ipairs(global("registered_names")) do names[tostring(n)] = true end
    assert.is_true(names.erl_db)
    erl_apply(e1, "global", "unregister_name", {A.erl_db})
    assert.is_nil(global("whereis_name", "erl_db"))
  end)

  it("raises {badarg, {Name, Msg}} on a send to a name nobody has", function()
    if not P.have_erl then return pending("no erl") end
    local err = run(function()
      local ok, err = pcall(require("moonbeam.global").send, "nobody_here", "msg")
      assert(not ok)
      return err
    end)
    assert.equal(A.badarg, err[1])
    assert.equal(A.nobody_here, err[2][1])
    assert.equal("msg", err[2][2])
  end)

  it("unregisters and re-registers from Lua, seen on Erlang", function()
    if not P.have_erl then return pending("no erl") end
    local a, b = lua_sleeper(), lua_sleeper()
    assert.is_true(global("register_name", "moving", a))
    assert.is_true(global("re_register_name", "moving", b))
    assert.equal(b, erl_apply(e1, "mbglobal", "whereis", {A.moving}))
    assert.is_true(global("unregister_name", "moving"))
    assert.equal(A.undefined, erl_apply(e1, "mbglobal", "whereis", {A.moving}))
  end)

  it("sets and deletes locks that Erlang's global:set_lock respects", function()
    if not P.have_erl then return pending("no erl") end
    local got = run(function(e1)
      local mb = require "moonbeam"
      local global = require "moonbeam.global"
      local id = {mb.atom.res, mb.self()}
      local set = global.set_lock(id)
      -- Erlang may not take the same resource for another requester now
      local ref = mb.make_ref()
      mb.send({"ctl", e1}, mb.tuple(mb.self(), ref, mb.tuple(mb.atom.apply, mb.atom.global,
        mb.atom.set_lock, mb.list(mb.tuple(mb.atom.res, mb.atom.other), mb.list(mb.atom(e1), mb.node()), 0))))
      local theirs = mb.receive(function(x) return x[1] == ref end, 20000)
      global.del_lock(id)
      return {set, theirs and theirs[2]}
    end, e1)
    assert.is_true(got[1])
    assert.is_false(got[2])
    local r = global("trans", {"res2", "me"}, function() return 42 end)
    assert.equal(42, r)
  end)

  it("lives through messages of every wrong shape sent to global_name_server", function()
    if not P.have_erl then return pending("no erl") end
    local gns = run(function() return require("moonbeam").whereis("global_name_server") end)
    assert.is_true(erl_apply(e1, "mbglobal", "garbage", {A[me]}) > 20)
    -- the same server still answers, and still speaks with Erlang
    local pid = lua_sleeper()
    assert.is_true(global("register_name", "after_garbage", pid))
    assert.equal(pid, erl_apply(e1, "mbglobal", "whereis", {A.after_garbage}))
    assert.equal(gns, run(function() return require("moonbeam").whereis("global_name_server") end))
    assert.equal(A.ok, erl_apply(e1, "mbglobal", "sync", {10000}))
    run(function(p) require("moonbeam").send(p, "stop") end, pid)
  end)

  it("lives through 3,000 random messages of global's tags, and still syncs", function()
    if not P.have_erl then return pending("no erl") end
    local gns = run(function() return require("moonbeam").whereis("global_name_server") end)
    assert.equal(3000, erl_apply(e1, "mbglobal", "fuzz", {A[me], 13, 3000}, 60000))
    local pid = lua_sleeper()
    assert.is_true(global("register_name", "after_fuzz", pid))
    assert.equal(pid, erl_apply(e1, "mbglobal", "whereis", {A.after_fuzz}))
    assert.equal(gns, run(function() return require("moonbeam").whereis("global_name_server") end))
    assert.equal(A.ok, erl_apply(e1, "mbglobal", "sync", {10000}))
    assert.is_true(global("sync"))
    run(function(p) require("moonbeam").send(p, "stop") end, pid)
  end)

  it("forgets the names of a node that goes down", function()
    if not P.have_erl then return pending("no erl") end
    local e2 = start_erl("g2")
    local pid2 = P.started[#P.started]
    await(e2)
    assert.equal(A.ok, erl_apply(e2, "mbglobal", "sync", {10000}))
    local r = erl_apply(e2, "mbglobal", "reg", {A.on_g2})
    assert.equal(A.yes, r[1])
    assert.equal(r[2], global("whereis_name", "on_g2"))
    assert.equal(r[2], erl_apply(e1, "mbglobal", "whereis", {A.on_g2}))
    assert.is_true(stop_erl(e2, pid2))
    assert.is_true(eventually(function() return global("whereis_name", "on_g2") == nil end))
  end)
end)

describe("global with an Elixir node", function()
  it("calls a Lua GenServer by {:global, name} and gets messages at its global name", function()
    if not (P.have_erl and P.have_elixir) then return pending("no elixir") end
    local server = run(function()
      local gs = require "moonbeam.gen_server"
      return assert(gs.start("spec.fixtures.global_support", 7, {name = {"global", "lua_counter"}}))
    end)
    local f = io.open(tmp .. "/x2.exs", "w")
    f:write(([[
target = :"%s"
true = Enum.any?(1..100, fn _ -> Node.connect(target) || (Process.sleep(100) && false) end)
:ok = :global.sync()
IO.puts("CALLED #{GenServer.call({:global, :lua_counter}, :get)}")
:yes = :global.register_name(:ex_proc, self())
IO.puts("REGISTERED")
receive do
  m -> IO.puts("GOT #{inspect(m)}")
end
Process.sleep(:infinity)
]]):format(me))
    f:close()
    P.spawn_os(P.peer(("elixir --name x2@127.0.0.1 --cookie %s %s/x2.exs"):format(COOKIE, ptmp)), tmp .. "/x2.log")
    local os_pid = P.started[#P.started]
    local function log() local fh = io.open(tmp .. "/x2.log"); local t = fh and fh:read("a") or ""; if fh then fh:close() end; return t end
    assert.is_true(eventually(function() return log():match("REGISTERED") ~= nil end), log())
    assert.matches("CALLED 7", log(), 1, true)
    assert.equal("x2@" .. host, require("moonbeam.global").node_of(global("whereis_name", "ex_proc")))
    global("send", "ex_proc", "hello from lua")
    assert.is_true(eventually(function() return log():match("GOT") ~= nil end), log())
    assert.matches('GOT "hello from lua"', log(), 1, true)
    run(function(p) require("moonbeam.gen_server").stop(p) end, server)
    assert.is_true(stop_erl("x2@" .. host, os_pid))
  end)
end)

describe("a GenServer named {global, Name}", function()
  local e1
  setup(function()
    if not P.have_erl then return end
    e1 = start_erl("gs1")
    await(e1)
  end)
  teardown(function()
    if e1 then stop_erl(e1, P.started[#P.started]) end
  end)

  it("is called from Erlang with gen_server:call({global, Name}) and from Lua by the same name", function()
    if not P.have_erl then return pending("no erl") end
    assert.equal(A.ok, erl_apply(e1, "mbglobal", "sync", {10000}))
    local pid = run(function()
      local gs = require "moonbeam.gen_server"
      return assert(gs.start("spec.fixtures.global_support", 40, {name = {"global", "counter"}}))
    end)
    assert.equal(pid, erl_apply(e1, "mbglobal", "whereis", {A.counter}))
    assert.equal(40, erl_apply(e1, "gen_server", "call", {mb.tuple(A.global, A.counter), A.get}))
    erl_apply(e1, "gen_server", "cast", {mb.tuple(A.global, A.counter), 2})
    assert.equal(42, run(function()
      return require("moonbeam.gen_server").call({"global", "counter"}, "get")
    end))
    -- a second server by that name is not started: the first has it
    local second = run(function()
      local gs = require "moonbeam.gen_server"
      return {gs.start("spec.fixtures.global_support", 0, {name = {"global", "counter"}})}
    end)
    assert.is_nil(second[1])
    assert.equal(A.already_started, second[2][1])
    assert.equal(pid, second[2][2])
    run(function(p) require("moonbeam.gen_server").stop(p) end, pid)
    assert.is_true(eventually(function()
      return erl_apply(e1, "mbglobal", "whereis", {A.counter}) == A.undefined
    end))
    -- and a call by the name now fails with noproc
    local ok, err = run(function()
      return pcall(require("moonbeam.gen_server").call, {"global", "counter"}, "get")
    end)
    assert.is_false(ok)
    assert.equal(A.noproc, err[1])
  end)
end)

-- Two sides that registered the same name before they met.
describe("a name registered on both sides before they connect", function()
  -- node names order the sides: c* < mbspec < z*
  -- Start a peer that registers `clash` itself before any connection
  -- (mbglobal:reg runs in its -eval), then connect and sync.
  local function meet(ename, resolve)
    P.spawn_os(P.peer(("erl -name %s@127.0.0.1 -setcookie %s -noshell -pa %s -eval 'mbpeer:start(), {yes, P} = mbglobal:reg(clash), register(clash_owner, P)'")
      :format(ename, COOKIE, ptmp)), tmp .. "/" .. ename .. ".log")
    local os_pid = P.started[#P.started]
    local node = ename .. "@" .. host
    local lua_pid = lua_sleeper()
    assert.is_true(global("register_name", "clash", lua_pid, resolve))
    -- wait until the peer has registered its own (its ctl is up after)
    await(node)
    assert.equal(A.ok, erl_apply(node, "mbglobal", "sync", {10000}))
    assert.is_true(global("sync"))
    return node, os_pid, lua_pid
  end

  local function alive(pid)
    return run(function(p) return require("moonbeam").process_info(p) ~= nil end, pid)
  end

  it("keeps the process of the smaller node and kills the other, when Erlang resolves", function()
    if not P.have_erl then return pending("no erl") end
    local node, os_pid, lua_pid = meet("c1")
    local kept = erl_apply(node, "mbglobal", "whereis", {A.clash})
    assert.equal(erl_apply(node, "erlang", "whereis", {A.clash_owner}), kept)
    assert.equal(kept, global("whereis_name", "clash"))
    assert.is_true(eventually(function() return not alive(lua_pid) end))
    assert.is_true(stop_erl(node, os_pid))
  end)

  it("keeps the process of the smaller node and kills the other, when moonbeam resolves", function()
    if not P.have_erl then return pending("no erl") end
    local node, os_pid, lua_pid = meet("z1")
    assert.equal(lua_pid, global("whereis_name", "clash"))
    assert.is_true(eventually(function()
      return erl_apply(node, "mbglobal", "whereis", {A.clash}) == lua_pid
    end))
    assert.is_true(alive(lua_pid))
    -- the Erlang process that had the name was killed
    assert.is_true(eventually(function()
      return erl_apply(node, "erlang", "whereis", {A.clash_owner}) == A.undefined
    end))
    run(function(p) require("moonbeam").send(p, "stop") end, lua_pid)
    assert.is_true(eventually(function() return global("whereis_name", "clash") == nil end))
    assert.is_true(stop_erl(node, os_pid))
  end)

  it("runs the Lua registration's own resolve function when moonbeam resolves", function()
    if not P.have_erl then return pending("no erl") end
    -- resolve_seen keeps what keep_other tells it until asked
    local seen = run(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function()
        local mb = require "moonbeam"
        local m = mb.receive(function(m) return mb.typeof(m) == "tuple" end, 30000)
        local ask = mb.receive(function(m) return type(m) == "table" and m.ask end, 30000)
        if ask then mb.send(ask.ask, m or "nothing") end
      end)
      mb.register("resolve_seen", p)
      return p
    end)
    local node, os_pid, lua_pid = meet("z2", {"spec.fixtures.global_support", "keep_other"})
    local kept = global("whereis_name", "clash")
    assert.equal(erl_apply(node, "erlang", "whereis", {A.clash_owner}), kept)
    local told = run(function(p)
      local mb = require "moonbeam"
      mb.send(p, {ask = mb.self()})
      return mb.receive(5000)
    end, seen)
    assert.equal(A.resolved, told[1])
    assert.equal(A.clash, told[2])
    assert.equal(kept, erl_apply(node, "mbglobal", "whereis", {A.clash}))
    -- keep_other kills nobody
    assert.is_true(alive(lua_pid))
    run(function(p, q)
      local mb = require "moonbeam"
      mb.exit(p, "kill")
      mb.send(q, "stop")
    end, seen, lua_pid)
    assert.is_true(stop_erl(node, os_pid))
  end)
end)

describe("a cluster of three", function()
  local build = os.getenv("MB_BUILD_DIR") or "build"

  -- Ask node `via` to run M:F(A) on node `on` with rpc:call, so that this
  -- node opens no connection of its own to `on`.
  local function erl_rpc(via, on, m, f, args)
    return erl_apply(via, "rpc", "call", {A[on], A[m], A[f], mb.list(table.unpack(args)), 20000}, 25000)
  end

  local function has(list, node)
    for _, n in ipairs(list or {}) do if tostring(n) == node then return true end end
    return false
  end

  it("of moonbeam and two Erlang nodes: joining one member meshes with both, and every sync returns", function()
    if not P.have_erl then return pending("no erl") end
    local t1 = start_erl("t1")
    local pid_t1 = P.started[#P.started]
    local t2 = "t2@" .. host
    P.spawn_os(P.peer(("erl -name t2@127.0.0.1 -setcookie %s -noshell -pa %s -eval 'mbpeer:start(), pong = mbglobal:wait_ping(list_to_atom(\"%s\"), 100)'")
      :format(COOKIE, ptmp, t1)), tmp .. "/t2.log")
    local pid_t2 = P.started[#P.started]
    -- t1 and t2 are one cluster before this node joins it through t1
    assert.is_true(eventually(function()
      return has(erl_apply(t1, "erlang", "nodes", {}, 1000), t2)
    end))
    assert.equal(A.ok, erl_rpc(t1, t2, "mbglobal", "sync", {10000}))
    local r = erl_rpc(t1, t2, "mbglobal", "reg", {A.on_t2})
    assert.equal(A.yes, r[1])
    await(t1)
    -- global connects t2 and this node
    local seen
    assert.is_true(eventually(function()
      seen = erl_rpc(t1, t2, "erlang", "nodes", {})
      return has(seen, me)
    end), tostring(seen))
    assert.equal(A.ok, erl_rpc(t1, t2, "mbglobal", "sync", {10000}))
    assert.equal(A.ok, erl_apply(t1, "mbglobal", "sync", {10000}))
    assert.is_true(global("sync"))
    assert.equal(r[2], global("whereis_name", "on_t2"))
    local pid = lua_sleeper()
    assert.is_true(global("register_name", "on_mb", pid))
    assert.equal(pid, erl_rpc(t1, t2, "mbglobal", "whereis", {A.on_mb}))
    assert.equal(pid, erl_apply(t1, "mbglobal", "whereis", {A.on_mb}))
    run(function(p) require("moonbeam").send(p, "stop") end, pid)
    assert.is_true(stop_erl(t2, pid_t2))
    assert.is_true(stop_erl(t1, pid_t1))
  end)

  it("stays out of overlapping partitions when two Erlang members lose each other", function()
    if not P.have_erl then return pending("no erl") end
    local p1, p2 = start_erl("p1"), start_erl("p2")
    local os1, os2 = P.started[#P.started - 1], P.started[#P.started]
    await(p1)
    await(p2)
    assert.equal(A.ok, erl_apply(p1, "mbglobal", "connect", {A[p2], 10000}))
    assert.equal(A.ok, erl_apply(p2, "mbglobal", "sync", {10000}))
    assert.is_true(global("sync"))
    local gns = run(function() return require("moonbeam").whereis("global_name_server") end)
    -- p1 drops p2: p1 tells this node (lost_connection), which must not
    -- stay connected to both
    erl_apply(p1, "erlang", "disconnect_node", {A[p2]})
    local nodes = function() return run(function() return require("moonbeam").nodes() end) end
    assert.is_true(eventually(function()
      local n = nodes()
      return not (has(n, p1) and has(n, p2))
    end))
    assert.equal(gns, run(function() return require("moonbeam").whereis("global_name_server") end))
    assert.is_true(stop_erl(p1, os1))
    assert.is_true(stop_erl(p2, os2))
  end)

  it("of two moonbeam nodes and an Erlang node: names of each are seen on all", function()
    if not P.have_erl then return pending("no erl") end
    local e = start_erl("t3")
    local pid_e = P.started[#P.started]
    await(e)
    assert.equal(A.ok, erl_apply(e, "mbglobal", "sync", {10000}))
    local script = tmp .. "/m2.lua"
    local f = io.open(script, "w")
    f:write([[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local global = require "moonbeam.global"
local me, port, cookie, peer = arg[1], tonumber(arg[2]), arg[3], arg[4]
dist.start{name = me, cookie = cookie, epmd_port = port}
assert(global.register_name("on_m2", mb.self()))
for _ = 1, 100 do if dist.ping(peer, 1000) == "pong" then break end mb.sleep(100) end
global.sync()
print("SYNCED " .. tostring(global.whereis_name("on_m1")))
io.stdout:flush()
mb.receive(30000) -- until stopped
]])
    f:close()
    local m1_pid = lua_sleeper()
    assert.is_true(global("register_name", "on_m1", m1_pid))
    local p = io.popen(("ERL_EPMD_PORT=%d exec %s/bin/moonbeam %s m2@127.0.0.1 %d %s %s > %s/m2.log 2>&1 & echo $!")
      :format(EPMD_PORT, build, script, EPMD_PORT, COOKIE, e, tmp))
    local m2_os = P.track(p:read("l"))
    p:close()
    local out = ""
    assert.is_true(eventually(function()
      local fh = io.open(tmp .. "/m2.log")
      out = fh and fh:read("a") or ""
      if fh then fh:close() end
      return out:match("SYNCED") ~= nil
    end), out)
    -- m2 sees this node's name, through the Erlang node
    assert.matches("SYNCED <", out, 1, true)
    local on_m2 = erl_apply(e, "mbglobal", "whereis", {A.on_m2})
    assert.equal("m2@" .. host, require("moonbeam.global").node_of(on_m2))
    assert.is_true(eventually(function() return global("whereis_name", "on_m2") == on_m2 end))
    assert.equal(A.ok, erl_apply(e, "mbglobal", "sync", {10000}))
    assert.is_true(global("sync"))
    run(function(p) require("moonbeam").send(p, "stop") end, m1_pid)
    assert.is_true(stop_erl("m2@" .. host, m2_os))
    assert.is_true(eventually(function() return global("whereis_name", "on_m2") == nil end))
    assert.is_true(stop_erl(e, pid_e))
  end)
end)
