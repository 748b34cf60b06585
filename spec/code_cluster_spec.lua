-- Code loading across a cluster: three moonbeam nodes started by the
-- launcher on 127.0.0.1 (the first serves EPMD on a random port), each
-- running a GenServer; `moonbeam reload` loads a new version of its module
-- on all three while they run. Every node is stopped by its pid, and the
-- temporary directory removed.
local H = require "spec.launcher_helper"

local COOKIE = "reloadsecret"
local host = "127.0.0.1"

local COUNTER_V1 = [[
return {
  init = function(n) return "ok", n end,
  handle_call = function(req, _, n)
    if req == "inc" then return "reply", n + 1, n + 1 end
    return "reply", "v1:" .. n, n
  end,
}]]
local COUNTER_V2 = [[
return {
  init = function(n) return "ok", {count = n, from = 0} end,
  handle_call = function(req, _, s)
    if req == "inc" then s.count = s.count + 1 return "reply", s.count, s end
    return "reply", "v2:" .. s.count .. ":" .. s.from, s
  end,
  code_change = function(old_vsn, n) return "ok", {count = n, from = old_vsn} end,
}]]

local MEMBER = [[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local gen_server = require "moonbeam.gen_server"
assert(gen_server.start("cluster_counter", 0, {name = "counter"}))
for i = 1, #arg do
  for _ = 1, 100 do if dist.ping(arg[i], 1000) == "pong" then break end mb.sleep(100) end
end
print("READY " .. #mb.nodes())
io.stdout:flush()
mb.receive()
]]

-- Ask each node's counter for `req` from a hidden node of its own; the
-- replies joined by spaces.
local CHECK = [[
local gen_server = require "moonbeam.gen_server"
local out = {}
for i = 1, select("#", ...) do
  assert(require("moonbeam.dist").connect((select(i, ...)), 10000))
  out[#out + 1] = tostring(gen_server.call({"counter", (select(i, ...))}, arg.req or "get"))
end
return table.concat(out, " ")
]]

describe("moonbeam reload on a three-node cluster", function()
  local dir, jobs, env
  local nodes = {"m1@" .. host, "m2@" .. host, "m3@" .. host}

  before_each(function()
    dir = H.tmpdir()
    jobs = {}
    env = {LUA_PATH = dir .. "/?.lua;;", ERL_EPMD_PORT = tostring(44000 + math.random(0, 999))}
    H.write(dir .. "/cluster_counter.lua", COUNTER_V1)
    H.write(dir .. "/member.lua", MEMBER)
  end)

  after_each(function()
    for _, j in ipairs(jobs) do
      j:signal("TERM")
      j:wait(10)
      j:cleanup()
    end
    H.remove(dir)
  end)

  local function start(name, ...)
    local j = H.start({"run", "--name", name, "--cookie", COOKIE, dir .. "/member.lua", ...},
      {env = env})
    jobs[#jobs + 1] = j
    assert.truthy(j:wait_output("READY " .. select("#", ...), 30), j:stderr())
    return j
  end

  local function ask(req)
    local code = CHECK:gsub('arg.req or "get"', ("%q"):format(req))
    local status, out, err = H.run({"eval", "--name", "check" .. math.random(1e6) .. "@" .. host,
      "--hidden", "--cookie", COOKIE, code, nodes[1], nodes[2], nodes[3]}, {env = env})
    assert.equal(0, status, err)
    return (out:match('"(.*)"'))
  end

  it("loads the new version on every node; each server migrates its state; a bad version is refused everywhere", function()
    start(nodes[1])
    start(nodes[2], nodes[1])
    start(nodes[3], nodes[1], nodes[2])
    assert.equal("1 1 1", ask("inc"))
    assert.equal("2 2 2", ask("inc"))
    assert.equal("v1:2 v1:2 v1:2", ask("get"))

    H.write(dir .. "/cluster_counter.lua", COUNTER_V2)
    local status, out, err = H.run({"reload", "--cookie", COOKIE, nodes[1], "cluster_counter"},
      {env = env})
    assert.equal(0, status, err)
    for _, n in ipairs(nodes) do
      assert.matches(n .. " cluster_counter version 2", out, 1, true)
    end
    assert.equal("v2:2:1 v2:2:1 v2:2:1", ask("get"))

    H.write(dir .. "/cluster_counter.lua", "return {")
    status, out = H.run({"reload", "--cookie", COOKIE, nodes[1], "cluster_counter"}, {env = env})
    assert.equal(1, status)
    for _, n in ipairs(nodes) do
      assert.matches(n .. " cluster_counter error: ", out, 1, true)
    end
    assert.equal("3 3 3", ask("inc"))
    assert.equal("v2:3:1 v2:3:1 v2:3:1", ask("get"))
  end)
end)
