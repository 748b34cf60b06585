-- LuaRocks, offline: rockspec/ builds and installs moonbeam (the Lua
-- modules, the C module and the launcher) into a tree, and the example rock
-- examples/rocks/fsm installs into it (from its rockspec, and from a packed
-- .rock) and is then found by every process of a node: with the tree's own
-- launcher, with --rocks-tree, and with the variables `luarocks path`
-- prints.
local H = require "launcher_helper"

local quote = H.quote

-- LuaRocks and CMake run with neither the specs' LD_PRELOAD (the
-- sanitizer runs) nor their LUA_PATH.
local function sh(cmd, timeout)
  local full = string.format("cd %s && timeout -k 5 %d env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH sh -c %s 2>&1",
    quote(H.root), timeout or 120, quote(cmd))
  local p = assert(io.popen(full))
  local out = p:read("a")
  local _, _, status = p:close()
  return status, out
end

local function luarocks(args, timeout)
  return sh("luarocks --lua-version 5.4 " .. args, timeout)
end

local function exists(path) return io.open(path, "r") ~= nil end

local SCRIPT = [[
-- The fsm rock from a node: the server process requires it by name, and
-- so does another process, which drives the machine.
local mb = require "moonbeam"
local fsm = require "fsm"

local switch = {}
function switch.init(n) return "off", n end
function switch.off(kind, event, n)
  if kind == "call" and event == "flip" then return "on", n + 1, "on" end
  return "off", n, "off"
end
function switch.on(kind, event, n)
  if kind == "call" and event == "flip" then return "off", n, "off" end
  return "on", n, "on"
end

local pid = assert(fsm.start_link(switch, 0, {name = "switch"}))
mb.spawn(function(parent)
  local fsm = require "fsm"
  mb.send(parent, {fsm.call("switch", "flip"), fsm.call("switch", "flip"), fsm.call("switch", "flip")})
end, mb.self())
local replies = mb.receive(5000)
print(table.concat(replies, " ") .. " -> " .. fsm.state(pid))
]]

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("luarocks", function()
  local tmp, tree, src, script, launcher

  lazy_setup(function()
    local p = io.popen("pwd")
    H.root = p:read("l")
    p:close()
    launcher = H.launcher:match("^/") and H.launcher or H.root .. "/" .. H.launcher
    tmp = H.tmpdir()
    tree, src, script = tmp .. "/tree", tmp .. "/src", tmp .. "/switch.lua"
    H.write(script, SCRIPT)
    -- A copy of the checkout (without its builds), so that the build
    -- directory of `luarocks make` is not left in it.
    local status, out = sh(string.format(
      "mkdir -p %s && tar --exclude='./build*' --exclude=./.git -cf - . | tar -C %s -xf -",
      quote(src), quote(src)))
    assert(status == 0, out)
  end)

  lazy_teardown(function() if tmp then H.remove(tmp) end end)

  it("make builds and installs moonbeam from the checkout, offline", function()
    local status, out = sh(string.format("cd %s && luarocks --lua-version 5.4 make rockspec/moonbeam-0.1.0-1.rockspec --tree %s",
      quote(src), quote(tree)), 600)
    assert(status == 0, out)
    assert.truthy(out:find("moonbeam 0.1.0-1 is now installed", 1, true), out)
    assert.truthy(exists(tree .. "/bin/moonbeam"))
    assert.truthy(exists(tree .. "/lib/lua/5.4/moonbeam.so"))
    for _, m in ipairs({"gen_server", "supervisor", "application", "shell", "launcher"}) do
      assert.truthy(exists(tree .. "/share/lua/5.4/moonbeam/" .. m .. ".lua"), m)
    end
    -- The dashboard's page, and the chart library npm installed for it.
    for _, f in ipairs({"index.html", "app.js", "style.css"}) do
      assert.truthy(exists(tree .. "/share/lua/5.4/moonbeam/dashboard/www/" .. f), f)
    end
    if os.execute("command -v npm > /dev/null 2>&1") then
      assert.truthy(exists(tree .. "/share/lua/5.4/moonbeam-dashboard/uPlot.iife.min.js"))
    end
  end)

  it("installs a launcher that finds the tree's modules", function()
    local s, out, err = H.run({"eval", "require('moonbeam.gen_server') ~= nil, mb.version"},
      {program = tree .. "/bin/moonbeam", cwd = tmp})
    assert.equal(0, s, err)
    assert.equal('true, "0.1.0"\n', out)
  end)

  it("installs a C module that a host Lua requires, along `luarocks path`", function()
    local status, out = sh(string.format(
      [[eval "$(luarocks --lua-version 5.4 path --tree %s)" && cd %s && lua5.4 -e 'local mb = require "moonbeam"; print(mb.run(function() return mb.typeof(mb.self()) end))']],
      quote(tree), quote(tmp)))
    assert(status == 0, out)
    assert.equal("pid\n", out)
  end)

  it("make installs the fsm rock from its rockspec", function()
    local status, out = sh(string.format("cd examples/rocks/fsm && luarocks --lua-version 5.4 make fsm-0.1.0-1.rockspec --tree %s",
      quote(tree)))
    assert(status == 0, out)
    assert.truthy(exists(tree .. "/share/lua/5.4/fsm.lua"))
  end)

  it("install takes the fsm rock packed as a .rock, offline", function()
    local status, out = sh(string.format("cd %s && luarocks --lua-version 5.4 pack fsm --tree %s",
      quote(tmp), quote(tree)))
    assert(status == 0, out)
    local rock = tmp .. "/fsm-0.1.0-1.all.rock"
    assert.truthy(exists(rock), out)
    status, out = luarocks("remove fsm --tree " .. quote(tree))
    assert(status == 0, out)
    assert.falsy(exists(tree .. "/share/lua/5.4/fsm.lua"))
    status, out = luarocks(string.format("install %s --tree %s", quote(rock), quote(tree)))
    assert(status == 0, out)
    assert.truthy(exists(tree .. "/share/lua/5.4/fsm.lua"))
  end)

  describe("the fsm rock is found by every process of a node", function()
    it("with the tree's launcher", function()
      local s, out, err = H.run({script}, {program = tree .. "/bin/moonbeam", cwd = tmp})
      assert.equal(0, s, err)
      assert.equal("on off on -> on\n", out)
    end)

    it("with --rocks-tree, or MOONBEAM_ROCKS_TREE", function()
      local s, out, err = H.run({"--rocks-tree", tree, script}, {cwd = tmp, program = launcher})
      assert.equal(0, s, err)
      assert.equal("on off on -> on\n", out)
      s, out, err = H.run({script}, {cwd = tmp, program = launcher,
        env = {MOONBEAM_ROCKS_TREE = "/nonexistent:" .. tree}})
      assert.equal(0, s, err)
      assert.equal("on off on -> on\n", out)
    end)

    it("with LUA_PATH and LUA_CPATH as `luarocks path` sets them", function()
      local status, out = sh(string.format([[eval "$(luarocks --lua-version 5.4 path --tree %s)" && cd %s && %s %s]],
        quote(tree), quote(tmp), quote(launcher), quote(script)), 60)
      assert(status == 0, out)
      assert.equal("on off on -> on\n", out)
    end)

    it("and not without the tree", function()
      local s, _, err = H.run({script}, {cwd = tmp, program = launcher})
      assert.equal(1, s)
      assert.truthy(err:find("module 'fsm' not found", 1, true), err)
    end)
  end)
end)
