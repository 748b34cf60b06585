-- A real network partition: two network namespaces made here, joined by a
-- veth pair on a 10.x network of their own, a moonbeam node in each (the
-- fixture partition_node.lua), the link cut and restored. Needs root and
-- `ip netns` (iproute2); without them the spec is pending. The namespaces
-- and every process started here go in teardown, also when a check fails.
local mb = require "moonbeam"
local H = require "spec.launcher_helper"

local P = require("spec.peer_helper").new{epmd_port = 4369}
local tag = tostring(math.random(100000, 999999))
local NS = {"mbpa" .. tag, "mbpb" .. tag}
local DEV = {"mbva" .. tag:sub(-5), "mbvb" .. tag:sub(-5)}
local NET = ("10.%d.%d."):format(math.random(64, 127), math.random(0, 255))
local NAME = {"pa@" .. NET .. "1", "pb@" .. NET .. "2"}
local COOKIE = "partition"
local made = false

local function ok(cmd) return os.execute(cmd .. " >/dev/null 2>&1") == true end

-- Make the namespaces and the link between them; false and why when this
-- machine does not allow it (not root, no network namespaces, no veth).
local function make_network()
  if P.sh("id -u"):match("^%s*(%d+)") ~= "0" then return false, "not root" end
  made = true -- from here on, teardown removes what was made
  local steps = {
    ("ip netns add %s"):format(NS[1]),
    ("ip netns add %s"):format(NS[2]),
    ("ip link add %s type veth peer name %s"):format(DEV[1], DEV[2]),
    ("ip link set %s netns %s"):format(DEV[1], NS[1]),
    ("ip link set %s netns %s"):format(DEV[2], NS[2]),
  }
  for i = 1, 2 do
    local ns = "ip netns exec " .. NS[i] .. " "
    steps[#steps + 1] = ns .. "ip link set lo up"
    steps[#steps + 1] = ns .. ("ip addr add %s%d/24 dev %s"):format(NET, i, DEV[i])
    steps[#steps + 1] = ns .. ("ip link set %s up"):format(DEV[i])
  end
  for _, step in ipairs(steps) do
    if not ok(step) then return false, "'" .. step .. "' fails here" end
  end
  return true
end

-- Node i's events (its log, on failure, is in node<i>.log).
local function log(i) return H.read(P.tmp .. "/node" .. i .. ".events") end

-- How many lines of node i's log are `line`.
local function times(i, line)
  local n = 0
  for l in log(i):gmatch("[^\n]+") do if l == line then n = n + 1 end end
  return n
end

-- Wait (at most 30 s) until node i's log holds `line` n times.
local function logged(i, line, n)
  for _ = 1, 300 do
    if times(i, line) >= n then return true end
    mb.run(function() require("moonbeam").sleep(100) end)
  end
  return false
end

teardown(function()
  P.stop_all() -- the nodes, by pid, and the temp files
  if made then
    -- Deleting a namespace deletes its end of the veth pair, and the pair
    -- with it; a pair never moved is deleted by name.
    for i = 1, 2 do os.execute("ip netns del " .. NS[i] .. " 2>/dev/null") end
    os.execute("ip link del " .. DEV[1] .. " 2>/dev/null")
  end
end)

describe("a network partition", function()
  it("takes both nodes down within the tick window, fires links and monitors once, and heals", function()
    local can, why = make_network()
    if not can then
      pending("network namespaces cannot be made here: " .. why)
      return
    end
    local launcher = H.launcher:match("^/") and H.launcher
      or (P.sh("pwd"):gsub("%s+$", "") .. "/" .. H.launcher)
    assert(os.execute(("cp spec/fixtures/partition_node.lua %s/"):format(P.tmp)))
    for i = 1, 2 do
      P.spawn_os(("ip netns exec %s %s %s/partition_node.lua %s %s %s %s/node%d.events"):format(
        NS[i], launcher, P.tmp, NAME[i], NAME[3 - i], COOKIE, P.tmp, i), P.tmp .. "/node" .. i .. ".log")
    end
    for i = 1, 2 do
      assert.is_true(logged(i, "nodeup " .. NAME[3 - i], 1), "no nodeup on node " .. i .. ":\n" .. log(i))
      assert.is_true(logged(i, "linked", 1), "no link on node " .. i .. ":\n" .. log(i))
    end

    -- The cut: the link goes down on one side; neither node hears the other.
    assert(ok(("ip netns exec %s ip link set %s down"):format(NS[1], DEV[1])))
    for i = 1, 2 do
      assert.is_true(logged(i, "nodedown " .. NAME[3 - i], 1), "no nodedown on node " .. i .. ":\n" .. log(i))
      assert.is_true(logged(i, "DOWN noconnection", 1), "no DOWN on node " .. i .. ":\n" .. log(i))
      assert.is_true(logged(i, "EXIT noconnection", 1), "no EXIT on node " .. i .. ":\n" .. log(i))
    end

    -- The heal: the strategy on each side connects again.
    assert(ok(("ip netns exec %s ip link set %s up"):format(NS[1], DEV[1])))
    for i = 1, 2 do
      assert.is_true(logged(i, "nodeup " .. NAME[3 - i], 2), "no second nodeup on node " .. i .. ":\n" .. log(i))
      assert.is_true(logged(i, "linked", 2), "no second link on node " .. i .. ":\n" .. log(i))
    end
    -- The monitors and links of the first connection fired once each, and
    -- each node's "svc" is still the one process that held it.
    for i = 1, 2 do
      assert.equal(1, times(i, "DOWN noconnection"))
      assert.equal(1, times(i, "EXIT noconnection"))
      assert.equal(1, times(i, "nodedown " .. NAME[3 - i]))
    end
  end)
end)
