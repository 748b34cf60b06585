-- The application examples run with the launcher and print what they
-- promise: examples/kv/ (an application, its supervisor and a GenServer)
-- and examples/supervision_tree.lua (a crash, and the restart in the log).
--
-- The launcher is build/bin/moonbeam, or bin/moonbeam in $MB_BUILD_DIR.
local launcher = (os.getenv("MB_BUILD_DIR") or "build") .. "/bin/moonbeam"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Run the launcher on `script` with LUA_PATH set to `lua_path` (unset if
-- nil), bounded in time; return the exit status, stdout's lines and the
-- whole output (stdout, then stderr).
local function moonbeam(script, lua_path)
  local env = lua_path and ("LUA_PATH=" .. shell_quote(lua_path)) or "env -u LUA_PATH"
  local err = os.tmpname()
  local p = assert(io.popen(("%s timeout 30 %s %s 2>%s"):format(env,
    shell_quote(launcher), shell_quote(script), shell_quote(err))))
  local out = p:read("a")
  local _, _, status = p:close()
  local f = assert(io.open(err))
  local log = f:read("a")
  f:close()
  os.remove(err)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return status, lines, log
end

-- The texts of the log lines at `level` (the first line of each entry).
local function logged(log, level)
  local out = {}
  for text in log:gmatch("%d%d:%d%d:%d%d%.%d%d%d %[" .. level .. "%] <[%d.]+> ([^\n]*)") do
    out[#out + 1] = text
  end
  return out
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("examples/kv", function()
  it("starts the kv application, stores and reads values, and stops it", function()
    local status, lines, log = moonbeam("examples/kv/main.lua", "examples/kv/?.lua;;")
    assert.equal(0, status, log)
    assert.equal(8, #lines, table.concat(lines, "\n"))
    assert.matches("^the store is <0%.%d+%.%d+>, under kv_sup <0%.%d+%.%d+>$", lines[7])
    assert.same({
      "started: kv",
      "running: kv 1.0.0 (An in-memory key-value store)",
      "moon = beam",
      "answer = 42",
      "language = Lua (from the environment)",
      "missing = nil",
      "stopped: kv alive = false, applications running = 0",
    }, {lines[1], lines[2], lines[3], lines[4], lines[5], lines[6], lines[8]})
    assert.same({}, logged(log, "error"))
    assert.same({"kv starting (temporary)", "Application kv started", "kv stopped"},
      logged(log, "info"))
    assert.same({"Application kv exited: stopped"}, logged(log, "notice"))
  end)

  it("says how to run it when its modules are not on the path", function()
    local status, lines, log = moonbeam("examples/kv/main.lua", nil)
    assert.equal(2, status)
    assert.same({}, lines)
    assert.matches("kv.server not found on the path; run it from examples/kv", log, 1, true)
  end)
end)

describe("examples/supervision_tree.lua", function()
  local status, lines, log

  setup(function()
    status, lines, log = moonbeam("examples/supervision_tree.lua", nil)
  end)

  it("prints the tree, the crash and the restarted worker", function()
    assert.equal(0, status, log)
    local pid = "<0%.%d+%.%d+>"
    local expect = {
      "^the tree:$",
      "^  clock worker " .. pid .. "$",
      "^  workers_sup supervisor " .. pid .. "$",
      "^    counter worker " .. pid .. "$",
      "^    flaky worker " .. pid .. "$",
      "^flaky " .. pid .. " crashed: .*worker flaky crashed on purpose$",
      "^flaky restarted as " .. pid .. ", count 0$",
      "^counter kept its count: 2$",
      "^the tree:$",
      "^  clock worker " .. pid .. "$",
      "^  workers_sup supervisor " .. pid .. "$",
      "^    counter worker " .. pid .. "$",
      "^    flaky worker " .. pid .. "$",
      "^stopped: true$",
    }
    assert.equal(#expect, #lines, table.concat(lines, "\n"))
    for i, pattern in ipairs(expect) do assert.matches(pattern, lines[i]) end
    -- flaky has a new pid; the others kept theirs
    local before, after = lines[5]:match("<.*>"), lines[13]:match("<.*>")
    assert.are_not.equal(before, after)
    assert.equal(lines[7]:match("<.*>"), after)
    assert.equal(lines[4]:match("<.*>"), lines[12]:match("<.*>"))
    assert.equal(lines[2]:match("<.*>"), lines[10]:match("<.*>"))
  end)

  it("shows the crash and the restart in the log", function()
    assert.same({"worker clock started", "worker counter started", "worker flaky started",
                 "worker flaky started"}, logged(log, "info"))
    local errors = logged(log, "error")
    assert.truthy(#errors >= 1, log)
    assert.equal("GenServer flaky terminating", errors[1])
    assert.matches("worker flaky crashed on purpose", log, 1, true)
    -- the second start of flaky comes after its crash report
    local crash = log:find("GenServer flaky terminating", 1, true)
    local restart = select(2, log:find("worker flaky started.-worker flaky started"))
    assert.truthy(restart and restart > crash, log)
  end)
end)

describe("examples/upgrade", function()
  it("upgrades the kv store while clients call it: entries kept, new calls, no call failed", function()
    local status, lines, log = moonbeam("examples/upgrade/main.lua", "examples/kv/?.lua;;")
    assert.equal(0, status, log)
    assert.same({
      "version 1: moon = beam",
      "loaded version 2 of kv.server while it serves",
      "moon = nil, sun = star, language = Lua (kept by code_change)",
      "clients made 400 or more calls, 0 failed; keys = 2",
    }, lines)
    assert.same({}, logged(log, "error"))
  end)
end)
