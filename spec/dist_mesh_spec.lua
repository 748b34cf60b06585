-- The mesh: a node that connects to one member of a cluster ends up
-- connected to all of them (Erlang's connect_all), unless it is hidden or
-- started with connect_all off.  Against real Erlang peers on 127.0.0.1
-- (the host's, or a root's with MB_PEER_ROOT) and moonbeam nodes run by
-- the launcher.  Every OS process a spec starts is stopped by its pid, and
-- temp files are removed.
local mb = require "moonbeam"

-- The node is this process's, shared with the other spec/dist_*_spec.lua
-- files of the run (spec/dist_node.lua).
local NODE = require("spec.dist_node").start("mbspec")
local me, EPMD_PORT, COOKIE = NODE.name, NODE.epmd_port, NODE.cookie
local host = "127.0.0.1"
local build = os.getenv("MB_BUILD_DIR") or "build"
local launcher = build .. "/bin/moonbeam"

local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}
local tmp, ptmp, have_erl = P.tmp, P.ptmp, P.have_erl

local function run(fn, ...) return mb.run(fn, ...) end

local log_until = P.log_until

-- A node that dials `target` and prints the nodes it is connected to
-- (sorted, hidden ones included) once it has `want` of them, or after
-- `wait` ms: NODES a b ...  It starts distribution itself when given a
-- name, else the launcher's flags did.
local JOINER = [[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local target, want, wait, name, port, cookie, connect_all =
  arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4], arg[5], arg[6], arg[7]
if name then
  dist.start{name = name, cookie = cookie, epmd_port = tonumber(port),
             connect_all = connect_all ~= "false"}
end
mb.monitor_nodes(true)
for _ = 1, target ~= "-" and 200 or 0 do
  if dist.ping(target, 1000) == "pong" then break end
  mb.sleep(100)
end
local deadline = mb.monotonic_time() + wait * 1000000
while #mb.nodes("connected") < want and mb.monotonic_time() < deadline do
  mb.receive(function(m) return m[1] == mb.atom.nodeup end, 100)
end
local names = {}
for _, n in ipairs(mb.nodes("connected")) do names[#names + 1] = tostring(n) end
table.sort(names)
print("NODES " .. table.concat(names, " "))
io.stdout:flush()
mb.receive(function(m) return m == "stop" end, 30000) -- until stopped
]]

-- Run the joiner with the launcher: `flags` before the script, the
-- script's arguments after.
local function joiner(log, flags, ...)
  local p = io.popen(("ERL_EPMD_PORT=%d exec %s %s %s/joiner.lua %s > %s/%s.log 2>&1 & echo $!")
    :format(EPMD_PORT, launcher, flags, tmp, table.concat({...}, " "), tmp, log))
  P.track(p:read("l"))
  p:close()
  return log_until(log, "NODES[^\n]*\n")
end

local function erl(node, m, f, args)
  return run(function(node, m, f, args)
    local mb = require "moonbeam"
    local ref = mb.make_ref()
    mb.send({"ctl", node}, mb.tuple(mb.self(), ref, mb.tuple(mb.atom.apply, mb.atom(m),
      mb.atom(f), mb.list(table.unpack(args)))))
    local r = mb.receive(function(x) return x[1] == ref end, 20000)
    return r and r[2]
  end, node, m, f, args)
end

local function names_of(list)
  local out = {}
  for i = 1, list.n or #list do out[i] = tostring(list[i]) end
  table.sort(out)
  return out
end

setup(function()
  local f = io.open(tmp .. "/joiner.lua", "w")
  f:write(JOINER)
  f:close()
end)

teardown(P.stop_all)

describe("a moonbeam node in an Erlang cluster", function()
  if not have_erl then pending("erl is not installed") return end

  setup(function()
    P.erlc("mbpeer.erl")
    -- e1, and e2 connected to e1 only: this node dials neither yet
    for _, name in ipairs({"m_e1", "m_e2"}) do
      local join = name == "m_e2" and ', mbpeer:connect("m_e1@127.0.0.1"), io:format("CONNECTED~n")' or ""
      P.spawn_os(P.peer(("erl -name %s@127.0.0.1 -setcookie %s -noshell -pa %s -eval 'mbpeer:start()%s'")
        :format(name, COOKIE, ptmp, join)), ("%s/%s.log"):format(tmp, name))
    end
  end)

  it("connects to every member once it connects to one, and they list it", function()
    local e1, e2 = "m_e1@" .. host, "m_e2@" .. host
    -- e2 has dialled e1 before this node dials e1 (a member that joins
    -- later is announced by global, which this part does not cover)
    assert.matches("CONNECTED", log_until("m_e2", "CONNECTED"))
    local meshed = run(function(e1, e2)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      mb.monitor_nodes(true)
      -- Only e1 is dialled.
      assert(dist.ping(e1) == "pong")
      local function connected()
        for _, n in ipairs(mb.nodes()) do if tostring(n) == e2 then return true end end
      end
      for _ = 1, 100 do
        if connected() then return true end
        mb.receive(function(m) return m[1] == mb.atom.nodeup end, 100)
      end
      return false
    end, e1, e2)
    assert.is_true(meshed)
    assert.same({e1, me}, names_of(erl(e2, "erlang", "nodes", {})))
  end)

  it("does not mesh a node started with connect_all false, nor a hidden one", function()
    -- The same joiner with connect_all on meshes within the wait: the
    -- other two show that it is the setting that keeps them apart.
    local e1 = "m_e1@" .. host
    local on = joiner("j_on", "", e1, 3, 10000, "j_on@" .. host, EPMD_PORT, COOKIE, "true")
    local off = joiner("j_off", "", e1, 3, 3000, "j_off@" .. host, EPMD_PORT, COOKIE, "false")
    local flag = joiner("j_flag", ("--name j_flag@%s --cookie %s --connect-all false"):format(host, COOKIE),
      e1, 3, 3000)
    local hidden = joiner("j_hidden", ("--name j_hidden@%s --cookie %s --hidden"):format(host, COOKIE),
      e1, 3, 3000)
    assert.matches("NODES " .. table.concat({"m_e1@" .. host, "m_e2@" .. host, me}, " "),
      on, 1, true)
    assert.matches("NODES m_e1@" .. host .. "\n", off, 1, true)
    assert.matches("NODES m_e1@" .. host .. "\n", flag, 1, true)
    assert.matches("NODES m_e1@" .. host .. "\n", hidden, 1, true)
    -- and the cluster never dialled the hidden node
    assert.is_nil(tostring(erl(e1, "erlang", "nodes", {})):find("j_hidden", 1, true))
  end)
end)

describe("moonbeam nodes alone", function()
  it("mesh too: the third, dialling the second, meets the first", function()
    -- A cluster of their own, on an EPMD port of their own that the first
    -- serves.
    local port = EPMD_PORT + 1000
    joiner("n1", "", "-", 0, 0, "n1@" .. host, port, COOKIE, "true")
    joiner("n2", "", "n1@" .. host, 1, 10000, "n2@" .. host, port, COOKIE, "true")
    local three = joiner("n3", "", "n2@" .. host, 2, 10000, "n3@" .. host, port, COOKIE, "true")
    assert.matches("NODES n1@" .. host .. " n2@" .. host .. "\n", three, 1, true)
  end)
end)
