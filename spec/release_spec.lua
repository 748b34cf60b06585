-- moonbeam release: a directory that runs an application from anywhere,
-- with a clean environment, and the systemd unit of docs/operations.md.
local H = require "spec.launcher_helper"

-- An application whose server takes its greeting from a module of a
-- LuaRocks tree.
local function write_app(dir)
  os.execute("mkdir -p " .. H.quote(dir .. "/src"))
  H.write(dir .. "/src/hello.app.lua", [[
return {name = "hello", version = "1.0.0", description = "Greets",
  mod = {"hello_app", {}}, applications = {}}
]])
  H.write(dir .. "/src/hello_app.lua", [[
local supervisor = require "moonbeam.supervisor"
local M = {}
function M.start()
  return supervisor.start_link({init = function()
    return "ok", {strategy = "one_for_one"}, {
      {id = "greeter", start = {"moonbeam.gen_server", "start_link",
        {"hello_server", 0, {name = "greeter"}}}},
    }
  end})
end
function M.stop() end
return M
]])
  H.write(dir .. "/src/hello_server.lua", [[
local greeting = require "greeting"
local M = {}
function M.init() return "ok", greeting.text end
function M.handle_call(who, _, text) return "reply", text .. ", " .. who, text end
return M
]])
  os.execute("mkdir -p " .. H.quote(dir .. "/tree/share/lua/5.4"))
  H.write(dir .. "/tree/share/lua/5.4/greeting.lua", 'return {text = "hello from a rock"}\n')
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local _, _, status = p:close()
  return status, out
end

describe("moonbeam release", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.remove(dir) end)

  it("builds a directory that runs from another place with a clean environment", function()
    write_app(dir)
    local port = tostring(28000 + math.random(0, 1999))
    H.write(dir .. "/node.lua", 'return {name = "hello@127.0.0.1", cookie = "rel", '
      .. 'log_format = "json"}\n')
    local s, out, err = H.run({"release", dir .. "/src/hello.app.lua", "--output", dir .. "/built",
      "--rocks-tree", dir .. "/tree", "--config", dir .. "/node.lua"})
    assert.equal(0, s, err)
    assert.matches("bin/hello start|stop|remote|rpc|pid|ping", out, 1, true)
    -- Moved elsewhere, the source and the build gone from its reach.
    assert(os.execute("mv " .. H.quote(dir .. "/built") .. " " .. H.quote(dir .. "/moved")))
    assert(os.execute("rm -r " .. H.quote(dir .. "/src") .. " " .. H.quote(dir .. "/tree")))
    local bin = dir .. "/moved/bin/hello"
    -- Only the libraries of the system, found by the loader.
    local status, libs = sh("ldd " .. H.quote(dir .. "/moved/bin/moonbeam"))
    assert.equal(0, status)
    for line in libs:gmatch("[^\n]+") do
      local path = line:match("=> (%S+)") or line:match("^%s*(/%S+)")
      if line:find("not found", 1, true) then error("a library is missing: " .. line) end
      if path then assert.matches("^/lib", (path:gsub("^/usr", ""))) end
    end
    local clean = {HOME = dir, ERL_EPMD_PORT = port}
    for _, v in ipairs({"LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4", "LUA_CPATH_5_4",
                        "MB_BUILD_DIR", "MOONBEAM_CONFIG", "MOONBEAM_ROCKS_TREE"}) do
      clean[v] = false
    end
    local node = H.start({"start"}, {program = bin, env = clean, cwd = "/"})
    finally(function() node:cleanup() end)
    local up = H.wait_for(function()
      local st, o = H.run({"ping"}, {program = bin, env = clean, timeout = 10})
      return st == 0 and o == "pong\n"
    end, 15)
    assert.truthy(up, node:stderr())
    s, out, err = H.run({"rpc", 'require("moonbeam.gen_server").call("greeter", "operator")'},
      {program = bin, env = clean})
    assert.equal(0, s, err)
    assert.equal('"hello from a rock, operator"\n', out)
    -- moonbeam's modules and the rock's come from the release.
    s, out = H.run({"rpc", "package.searchpath('moonbeam.launcher', package.path), "
      .. "package.searchpath('greeting', package.path)"}, {program = bin, env = clean})
    assert.equal(string.format('"%s/moved/bin/../share/lua/5.4/moonbeam/launcher.lua", '
      .. '"%s/moved/rocks/share/lua/5.4/greeting.lua"\n', dir, dir), out)
    s, out = H.run({"pid"}, {program = bin, env = clean})
    assert.equal(0, s)
    assert.equal(tostring(node.pid) .. "\n", out)
    s, out = H.run({"remote"}, {program = bin, env = clean, input = "mb.node()\nq()\n"})
    assert.equal(0, s)
    assert.matches("hello@127%.0%.0%.1\n", out)
    s, _, err = H.run({"stop"}, {program = bin, env = clean})
    assert.equal(0, s, err)
    assert.equal(0, node:wait(15))
    -- Its config's log format: JSON lines.
    assert.matches('{"time":"[^"]+","level":"notice","msg":"SIGTERM received: stopping the node"}',
      node:stderr())
    s, out = H.run({"ping"}, {program = bin, env = clean})
    assert.equal(1, s)
    assert.equal("pang\n", out)
    s, _, err = H.run({"nonsense"}, {program = bin, env = clean})
    assert.equal(2, s)
    assert.matches("usage: .*start|stop|remote|rpc CODE|pid|ping", err)
  end)

  it("names the node after the application when no config is given", function()
    write_app(dir)
    local s, _, err = H.run({"release", dir .. "/src/hello.app.lua", "--output", dir .. "/out"})
    assert.equal(0, s, err)
    assert.equal('-- The settings of the hello release (docs/operations.md).\n'
      .. 'return {\n  sname = "hello",\n}\n', H.read(dir .. "/out/etc/config.lua"))
    assert.truthy(H.read(dir .. "/out/app/hello_server.lua"):find("greeting", 1, true))
  end)

  it("refuses a missing --output and an application file without a name", function()
    write_app(dir)
    local s, _, err = H.run({"release", dir .. "/src/hello.app.lua"})
    assert.equal(2, s)
    assert.same({"moonbeam: release: --output DIR is missing (see moonbeam release --help)"},
      H.said(err))
    H.write(dir .. "/bad.lua", "return {version = '1'}\n")
    s, _, err = H.run({"release", dir .. "/bad.lua", "--output", dir .. "/o"})
    assert.equal(1, s)
    assert.matches("must return an application spec with a name", err)
  end)

  it("has a systemd unit example in the docs that systemd-analyze verifies", function()
    local ok = sh("command -v systemd-analyze")
    if ok ~= 0 then
      pending("systemd-analyze is not installed (Debian: systemd)")
      return
    end
    write_app(dir)
    local s, _, err = H.run({"release", dir .. "/src/hello.app.lua", "--output", dir .. "/opt/hello"})
    assert.equal(0, s, err)
    local doc = H.read("docs/operations.md")
    local unit = doc:match("```ini\n(%[Unit%].-)```")
    assert(unit, "docs/operations.md has no ```ini block with a unit")
    -- The example's release lives in /opt/hello: here, in the test's own.
    unit = unit:gsub("/opt/hello", dir .. "/opt/hello")
    H.write(dir .. "/hello.service", unit)
    local status, out = sh("cd " .. H.quote(dir) .. " && SYSTEMD_LOG_COLOR=0 systemd-analyze verify ./hello.service")
    assert.equal(0, status, out)
    assert.equal("", out)
  end)
end)
