-- moonbeam.logger: levels, formatted messages, and the reports behaviours
-- write. What it writes goes to stderr, so most specs run a small script
-- with the launcher and read its output.
local mb = require "moonbeam"

local launcher = (os.getenv("MB_BUILD_DIR") or "build") .. "/bin/moonbeam"

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Run `source` as a script with the launcher, bounded in time; return the
-- exit status and its output (stdout and stderr) as a list of lines.
local function run_script(source)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('local logger = require "moonbeam.logger"\n', source)
  f:close()
  local p = assert(io.popen("timeout 30 " .. shell_quote(launcher) .. " " ..
    shell_quote(path) .. " 2>&1"))
  local out = p:read("a")
  local _, _, status = p:close()
  os.remove(path)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return status, lines, out
end

-- A log line's parts: level, pid and text, or nil if it is not one.
local function parse(line)
  local level, pid, text = line:match("^%d%d:%d%d:%d%d%.%d%d%d %[(%a+)%] (<0%.%d+%.%d+>) (.*)$")
  return level, pid, text
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("logger levels", function()
  it("set_level sets the node's minimum level and returns the previous one", function()
    assert.same({true, "warning", "warning", true, false},
      {mb.run(function()
        local logger = require "moonbeam.logger"
        local before = logger.level()
        local prev = logger.set_level("warning")
        local now = logger.level()
        local back = logger.set_level(require("moonbeam").atom.info)
        local error_on, debug_on = logger.enabled("error"), logger.enabled("debug")
        logger.set_level(before)
        return prev == before, now, back, error_on, debug_on
      end)})
  end)

  it("raises for an unknown level", function()
    local e1, e2 = mb.run(function()
      local logger = require "moonbeam.logger"
      local _, e1 = pcall(logger.set_level, "fatal")
      local _, e2 = pcall(logger.log, 3, "x")
      return e1, e2
    end)
    assert.matches("bad argument #1 to 'set_level' (debug, info, notice, warning or error expected, got 'fatal')",
      e1, 1, true)
    assert.matches("bad argument #1 to 'log' (debug, info, notice, warning or error expected, got number)",
      e2, 1, true)
  end)

  it("drops messages below the level, before formatting them", function()
    local status, lines = run_script([[
      logger.debug("hidden %s", "debug")
      logger.info("shown %s", "info")
      logger.set_level("debug")
      logger.debug("shown %s", "debug")
      logger.set_level("error")
      logger.warning("hidden %d", 1)
      -- not formatted, so the bad argument goes unnoticed
      logger.info("hidden %d", "not a number")
      logger.error("shown %s", "error")
    ]])
    assert.equal(0, status)
    local texts = {}
    for _, line in ipairs(lines) do
      local level, _, text = parse(line)
      texts[#texts + 1] = level .. ": " .. text
    end
    assert.same({"info: shown info", "debug: shown debug", "error: shown error"}, texts)
  end)
end)

describe("logger.debug, info, notice, warning, error", function()
  it("write one line each: time, level, pid and the formatted message", function()
    local status, lines = run_script([[
      local mb = require "moonbeam"
      logger.set_level("debug")
      logger.debug("%d + %d = %d", 1, 2, 3)
      logger.info("pid %s", tostring(mb.self()))
      logger.notice("100% plain: no arguments, no formatting")
      logger.warning(mb.tuple(mb.atom.ok, 1))
      logger.error("%q", "quoted")
      logger.log("info", "via %s", "log")
    ]])
    assert.equal(0, status)
    local got = {}
    for i, line in ipairs(lines) do
      local level, pid, text = parse(line)
      assert.truthy(level, line)
      got[i] = level .. " " .. text
      if i == 2 then assert.equal("pid " .. pid, text) end
    end
    got[2] = got[2]:gsub("<.*>", "PID")
    assert.same({"debug 1 + 2 = 3", "info pid PID",
                 "notice 100% plain: no arguments, no formatting",
                 "warning {ok, 1}", 'error "quoted"', "info via log"}, got)
  end)

  it("raises for a format that is not a string when there are arguments", function()
    local err = mb.run(function()
      local _, e = pcall(require("moonbeam.logger").error, {}, 1)
      return e
    end)
    assert.matches("bad argument #1 to 'error' (format string expected, got table)", err, 1, true)
  end)
end)

describe("reports", function()
  it("a crash report shows the error, its traceback and the fields, in one entry", function()
    local status, lines, out = run_script([[
      local mb = require "moonbeam"
      local _, ref = mb.spawn_monitor(function() error("worker failed") end)
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      logger.crash_report("Child worker of Supervisor demo terminated", down[5],
        {{"Pid", down[4]}, {"Restart", "permanent"}})
    ]])
    assert.equal(0, status, out)
    -- The worker's own crash report comes first; ours starts at its title.
    local first
    for i, line in ipairs(lines) do
      if line:find("Child worker of Supervisor demo terminated", 1, true) then first = i end
    end
    assert.truthy(first, out)
    local level, _, title = parse(lines[first])
    assert.equal("error", level)
    assert.equal("Child worker of Supervisor demo terminated", title)
    assert.equal("** (exit) an exception was raised:", lines[first + 1])
    assert.matches("^    %*%* %(error%) .*worker failed$", lines[first + 2])
    assert.equal("    stack traceback:", lines[first + 3])
    assert.matches("^        ", lines[first + 4])
    assert.matches("^Pid: <0%.%d+%.%d+>$", lines[#lines - 1])
    assert.equal("Restart: permanent", lines[#lines])
  end)

  it("an exit reason that is not a crash reads ** (exit) reason", function()
    local status, lines = run_script([[
      local mb = require "moonbeam"
      logger.crash_report("Supervisor demo shutting down", mb.atom.shutdown)
      logger.crash_report("Child x of Supervisor demo failed to start",
        mb.tuple(mb.atom.already_started, "x"), {{"Start Call", "x.start_link()"}})
      print(logger.format_reason("gone"))
    ]])
    assert.equal(0, status)
    assert.equal("** (exit) gone", lines[#lines])
    table.remove(lines)
    lines[1] = select(3, parse(lines[1]))
    lines[3] = select(3, parse(lines[3]))
    assert.same({"Supervisor demo shutting down", "** (exit) shutdown",
                 "Child x of Supervisor demo failed to start",
                 '** (exit) {already_started, "x"}', "Start Call: x.start_link()"}, lines)
  end)

  it("a progress report is an info entry of a title and fields", function()
    local status, lines = run_script([[
      local mb = require "moonbeam"
      logger.progress_report("Child kv of Supervisor kv_sup started",
        {{"Pid", "<0.9.0>"}, {"Restart", "permanent"}, {"Type", "worker"}})
      logger.set_level("warning")
      logger.progress_report("not shown")
      logger.report("warning", "Application kv exited", mb.atom.normal, {{"Type", "temporary"}})
      logger.report("info", "not shown either")
    ]])
    assert.equal(0, status)
    local level, _, title = parse(lines[1])
    assert.same({"info", "Child kv of Supervisor kv_sup started"}, {level, title})
    assert.same({"Pid: <0.9.0>", "Restart: permanent", "Type: worker"},
      {lines[2], lines[3], lines[4]})
    level, _, title = parse(lines[5])
    assert.same({"warning", "Application kv exited"}, {level, title})
    assert.same({"** (exit) normal", "Type: temporary"}, {lines[6], lines[7]})
    assert.equal(7, #lines)
  end)

  it("raises for a field that is not a {label, value} pair", function()
    local err = mb.run(function()
      local _, e = pcall(require("moonbeam.logger").progress_report, "title", {"oops"})
      return e
    end)
    assert.matches("bad field #1 in report ({label, value} expected)", err, 1, true)
  end)
end)
