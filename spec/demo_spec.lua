-- .ci/demo: it builds the launcher only, starts a node from an application
-- file (a GenServer under a supervisor), and prints how to reach it; the
-- spec starts the node as the demo does (not .ci/demo itself, which
-- installs packages and builds) and follows the hint from a second
-- moonbeam node and from erl.  Every node uses a test EPMD port, served
-- by the demo's node, and is stopped by its pid.
local H = require "launcher_helper"

local quote = H.quote

local demo = H.read(".ci/demo")

-- The launcher commands of the demo's hint, with the launcher under test.
local function hint_line(prefix)
  for line in demo:gmatch("[^\n]+") do
    local l = line:match("^%s+(.*)$")
    if l and l:sub(1, #prefix) == prefix then return l end
  end
  error(".ci/demo's hint has no line starting with " .. prefix)
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe(".ci/demo", function()
  it("builds the launcher only, not every test", function()
    assert.truthy(demo:find("--target moonbeam", 1, true))
    assert.falsy(demo:find(".ci/build", 1, true))
  end)

  it("starts a node from an application file that a second node and erl reach as its hint says", function()
    local args = {}
    for w in demo:match("\nexec build/bin/moonbeam ([^\n]-) \"%$@\"\n"):gmatch("%S+") do
      args[#args + 1] = w
    end
    assert.equal("start", args[1])
    assert.matches("%.app%.lua$", args[2])
    local port = tostring(22000 + math.random(0, 999))
    local job = H.start(args, {env = {ERL_EPMD_PORT = port}})
    finally(function()
      job:signal("TERM")
      job:wait(10)
      job:cleanup()
    end)
    assert(job:wait_output("Application kv started", 20), job:stderr())

    local eval = hint_line("build/bin/moonbeam --name b@127.0.0.1"):gsub("^build/bin/moonbeam",
      function() return quote(H.launcher) end)
    local p = assert(io.popen("ERL_EPMD_PORT=" .. port .. " timeout -k 5 30 " .. eval .. " 2>/dev/null"))
    local out = p:read("a")
    p:close()
    assert.equal('"Lua"\n', out)

    if os.execute("command -v erl > /dev/null") ~= true then return end
    local call = hint_line("gen_server:call(")
    p = assert(io.popen("ERL_EPMD_PORT=" .. port .. " timeout -k 5 30 env -u LD_PRELOAD erl -name e@127.0.0.1 "
      .. "-setcookie demo -noshell -eval " .. quote("io:format(\"~p~n\", [" .. call:gsub("%.$", "")
      .. "]), halt().") .. " 2>&1"))
    out = p:read("a")
    p:close()
    assert.equal('<<"Lua">>\n', out)
  end)
end)
