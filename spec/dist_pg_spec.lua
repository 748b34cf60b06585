-- pg across nodes: Lua processes and Erlang processes in the same groups,
-- seen alike from every node, against real Erlang peers on 127.0.0.1
-- (the host's, or a root's with MB_PEER_ROOT).  Every OS process a spec
-- starts is stopped by its pid, and temp files are removed.
local mb = require "moonbeam"

-- The node is this process's, shared with the other spec/dist_*_spec.lua
-- files of the run (spec/dist_node.lua).
local NODE = require("spec.dist_node").start("mbspec")
local me, EPMD_PORT, COOKIE = NODE.name, NODE.epmd_port, NODE.cookie
local host = "127.0.0.1"

local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}
local tmp, ptmp, have_erl = P.tmp, P.ptmp, P.have_erl

local function run(fn, ...) return mb.run(fn, ...) end

-- An Erlang peer running mbpeer, with the default pg scope: its OS pid,
-- once its ctl process answers.
local function start_peer(name)
  local pid = P.spawn_os(P.peer(("erl -name %s@127.0.0.1 -setcookie %s -noshell -kernel start_pg true -pa %s -eval 'mbpeer:start()'")
    :format(name, COOKIE, ptmp)), ("%s/%s.log"):format(tmp, name))
  local up = run(function(node)
    local mb = require "moonbeam"
    local dist = require "moonbeam.dist"
    for _ = 1, 200 do
      if dist.ping(node, 1000) == "pong" and mb.whereis("pg") then
        local ref = mb.make_ref()
        mb.send({"ctl", node}, mb.tuple(mb.self(), ref, mb.tuple(mb.atom.apply,
          mb.atom.erlang, mb.atom.whereis, mb.list(mb.atom.pg))))
        local r = mb.receive(function(m) return m[1] == ref end, 200)
        if r and mb.typeof(r[2]) == "pid" then return true end
      end
      mb.sleep(100)
    end
    return false
  end, name .. "@" .. host)
  assert(up, name .. " did not come up")
  return pid
end

-- Ask peer `name` to apply M:F(A) and return the result.
local function erl(name, m, f, args, timeout)
  return run(function(node, m, f, args, timeout)
    local mb = require "moonbeam"
    local ref = mb.make_ref()
    mb.send({"ctl", node}, mb.tuple(mb.self(), ref, mb.tuple(mb.atom.apply, mb.atom(m),
      mb.atom(f), mb.list(table.unpack(args, 1, args.n or #args)))))
    local r = mb.receive(function(x) return x[1] == ref end, timeout or 20000)
    return r and r[2]
  end, name .. "@" .. host, m, f, args, timeout)
end

-- The members of a group as this node sees them, sorted by their text,
-- once there are n of them (waiting on pg.monitor, at most 10 s).
local function await_members(scope, group, n)
  return run(function(scope, group, n)
    local mb = require "moonbeam"
    local pg = require "moonbeam.pg"
    local ref, now = pg.monitor(scope, group)
    local deadline = mb.monotonic_time() + 10 * 1000000000
    while now.n ~= n and mb.monotonic_time() < deadline do
      mb.receive(function(m) return m[1] == ref end, 500)
      now = pg.get_members(scope, group)
    end
    pg.demonitor(scope, ref)
    local out = {}
    for i = 1, now.n do out[i] = tostring(now[i]) end
    table.sort(out)
    return out
  end, scope, group, n)
end

-- The same for an Erlang peer's view, as text.
local function erl_members(name, scope, group, n)
  local r = erl(name, "mbpeer", "pg_await", {mb.atom(scope), group, n})
  local list = mb.typeof(r) == "tuple" and r[2] or r
  local out = {}
  for i = 1, list.n do out[i] = tostring(list[i]) end
  table.sort(out)
  return out
end

-- A Lua process that joins group in scope and waits to be told to end:
-- its pid.
local function lua_member(scope, group)
  return run(function(scope, group)
    local mb = require "moonbeam"
    local pg = require "moonbeam.pg"
    local p = mb.spawn(function()
      local m = mb.receive()
      if m == "leave" then pg.leave(scope, group, mb.self()) mb.receive() end
    end)
    pg.join(scope, group, p)
    return p
  end, scope, group)
end

local function tell(pid, msg) run(function(p, m) require("moonbeam").send(p, m) end, pid, msg) end

setup(function()
  if have_erl then
    P.erlc("mbpeer.erl")
    start_peer("p1")
  end
end)

teardown(P.stop_all)

describe("pg with Erlang nodes", function()
  if not have_erl then pending("erl is not installed") return end
  local scope_pid

  setup(function()
    scope_pid = tostring(erl("p1", "erlang", "whereis", {mb.atom.pg}))
  end)

  it("shows a Lua member to Erlang and an Erlang member to Lua, in the default scope", function()
    local lua = lua_member("pg", "jobs")
    local erlp = erl("p1", "mbpeer", "pg_member", {mb.atom.pg, "jobs"})
    local want = {tostring(lua), tostring(erlp)}
    table.sort(want)
    assert.same(want, await_members("pg", "jobs", 2))
    assert.same(want, erl_members("p1", "pg", "jobs", 2))
    -- which_groups and the local view, on both sides
    local groups, loc = run(function()
      local pg = require "moonbeam.pg"
      local g = pg.which_groups()
      local out = {}
      for i = 1, g.n do out[i] = tostring(g[i]) end
      return out, tostring(pg.get_local_members("jobs")[1])
    end)
    assert.same({"jobs"}, groups)
    assert.equal(tostring(lua), loc)
    local theirs = erl("p1", "pg", "get_local_members", {"jobs"})
    assert.same({tostring(erlp)}, {tostring(theirs[1])})
    assert.equal(1, theirs.n)
    local their_groups = erl("p1", "pg", "which_groups", {})
    assert.same({"jobs"}, {their_groups[1]})
    tell(lua, "leave")
    tell(erlp, mb.atom.stop)
    assert.same({}, await_members("pg", "jobs", 0))
    assert.same({}, erl_members("p1", "pg", "jobs", 0))
    tell(lua, "end")
  end)

  it("keeps named scopes apart, and a scope started later syncs what is there", function()
    erl("p1", "pg", "start", {mb.atom.chat})
    local erlp = erl("p1", "mbpeer", "pg_member", {mb.atom.chat, mb.atom.lobby})
    -- this node's chat scope starts after the Erlang member joined
    local lua = run(function()
      local mb = require "moonbeam"
      local pg = require "moonbeam.pg"
      local sup = mb.spawn(function() pg.start_link("chat") mb.receive() mb.exit("shutdown") end)
      for _ = 1, 100 do if mb.whereis("chat") then break end mb.sleep(10) end
      local p = mb.spawn(function() mb.receive() end)
      pg.join("chat", mb.atom.lobby, p)
      return mb.tuple(sup, p)
    end)
    local want = {tostring(lua[2]), tostring(erlp)}
    table.sort(want)
    assert.same(want, await_members("chat", mb.atom.lobby, 2))
    assert.same(want, erl_members("p1", "chat", mb.atom.lobby, 2))
    -- nothing of it in the default scope
    assert.same({}, await_members("pg", mb.atom.lobby, 0))
    assert.same({}, erl_members("p1", "pg", mb.atom.lobby, 0))
    -- a process that ends leaves, on both sides
    tell(lua[2], "end")
    assert.same({tostring(erlp)}, erl_members("p1", "chat", mb.atom.lobby, 1))
    erl("p1", "erlang", "exit", {erlp, mb.atom.kill})
    assert.same({}, await_members("chat", mb.atom.lobby, 0))
    tell(lua[1], "end") -- the scope goes with the process it is linked to
  end)

  it("sees members of Lua and two Erlang nodes alike on all three, and drops a node's when it goes", function()
    local p2 = start_peer("p2")
    -- the Erlang nodes know each other too (pg's view is not transitive)
    assert.is_true(erl("p1", "net_kernel", "connect_node", {mb.atom("p2@" .. host)}))
    local a = lua_member("pg", "all")
    local b = erl("p1", "mbpeer", "pg_member", {mb.atom.pg, "all"})
    local c = erl("p2", "mbpeer", "pg_member", {mb.atom.pg, "all"})
    local want = {tostring(a), tostring(b), tostring(c)}
    table.sort(want)
    assert.same(want, await_members("pg", "all", 3))
    assert.same(want, erl_members("p1", "pg", "all", 3))
    assert.same(want, erl_members("p2", "pg", "all", 3))
    P.kill_os(p2, "KILL")
    local left = {tostring(a), tostring(b)}
    table.sort(left)
    assert.same(left, await_members("pg", "all", 2))
    assert.same(left, erl_members("p1", "pg", "all", 2))
    tell(a, "end")
    erl("p1", "erlang", "exit", {b, mb.atom.kill})
    assert.same({}, await_members("pg", "all", 0))
  end)

  it("tells a Lua monitor of the scope about Erlang joins and leaves", function()
    local events = run(function(node)
      local mb = require "moonbeam"
      local pg = require "moonbeam.pg"
      local ref = pg.monitor_scope()
      local tag = mb.make_ref()
      mb.send({"ctl", node}, mb.tuple(mb.self(), tag, mb.tuple(mb.atom.apply, mb.atom.mbpeer,
        mb.atom.pg_member, mb.list(mb.atom.pg, "watched"))))
      local p = mb.receive(function(m) return m[1] == tag end, 10000)[2]
      local j = mb.receive(function(m) return m[1] == ref end, 10000)
      mb.exit(p, "kill")
      local l = mb.receive(function(m) return m[1] == ref end, 10000)
      pg.demonitor(ref)
      return {tostring(j[2]), j[3], j[4][1] == p, tostring(l[2]), l[3], l[4][1] == p}
    end, "p1@" .. host)
    assert.same({"join", "watched", true, "leave", "watched", true}, events)
  end)

  it("drops what a scope does not expect from a real peer, and goes on", function()
    local before = run(function() return require("moonbeam").whereis("pg") end)
    local sent = erl("p1", "mbpeer", "pg_garbage", {mb.atom.pg, mb.atom(me)})
    assert.is_true(sent > 20)
    -- the scope is the same process, and still works both ways
    local lua = lua_member("pg", "after")
    assert.same({tostring(lua)}, erl_members("p1", "pg", "after", 1))
    assert.equal(before, run(function() return require("moonbeam").whereis("pg") end))
    -- nothing the garbage named became a member
    assert.same({}, await_members("pg", mb.atom.g, 0))
    assert.same({}, await_members("pg", mb.atom.garbage, 0))
    tell(lua, "end")
    assert.same({}, erl_members("p1", "pg", "after", 0))
  end)

  it("never made the Erlang node's scope crash", function()
    assert.equal(scope_pid, tostring(erl("p1", "erlang", "whereis", {mb.atom.pg})))
  end)
end)

describe("pg between moonbeam nodes", function()
  it("shows each node's members to the other, and drops them when the node goes", function()
    -- A launcher node with one member in group "both", which prints the
    -- members it sees once there are two.
    local script = tmp .. "/pgpeer.lua"
    local f = io.open(script, "w")
    f:write([[
local mb = require "moonbeam"
local pg = require "moonbeam.pg"
mb.start_distribution{name = "pgpeer@127.0.0.1", cookie = arg[1], epmd_port = tonumber(arg[2])}
pg.join("both", mb.self())
assert(require("moonbeam.dist").ping(arg[3]) == "pong")
local ref, now = pg.monitor("both")
while now.n < 2 do
  mb.receive(function(m) return m[1] == ref end, 10000)
  now = pg.get_members("both")
end
local names = {}
for i = 1, now.n do names[i] = tostring(mb.node(now[i])) end
table.sort(names)
print("MEMBERS " .. table.concat(names, " "))
io.stdout:flush()
mb.receive(function(m) return m == "stop" end, 60000)
]])
    f:close()
    local lua = lua_member("pg", "both")
    local p = io.popen(("exec %s %s %s %d %s > %s/pgpeer.log 2>&1 & echo $!")
      :format((os.getenv("MB_BUILD_DIR") or "build") .. "/bin/moonbeam", script, COOKIE,
        EPMD_PORT, me, tmp))
    local pid = P.track(p:read("l"))
    p:close()
    -- this node sees the peer's member, the peer sees this node's
    local mine = await_members("pg", "both", 2)
    local out = ""
    for _ = 1, 200 do
      local lf = io.open(tmp .. "/pgpeer.log")
      out = lf and lf:read("a") or ""
      if lf then lf:close() end
      if out:find("MEMBERS") then break end
      run(function() require("moonbeam").sleep(100) end)
    end
    assert.equal(2, #mine)
    assert.matches("MEMBERS " .. me .. " pgpeer@127.0.0.1", out, 1, true)
    P.kill_os(pid, "KILL")
    assert.same({tostring(lua)}, await_members("pg", "both", 1))
    tell(lua, "end")
  end)
end)
