-- The node's log as the launcher's settings shape it: the time, the date
-- and time, JSON lines, and a log file rotated by size; crash, supervisor
-- and progress reports in each.
local H = require "spec.launcher_helper"
local json = require "dkjson"

-- A script that logs a line, a progress report (an application starts), a
-- supervisor report and a crash report (its child crashes), waits until
-- the supervisor has restarted the child, and has a process raise (the
-- core's crash report).
local REPORTS = [[
local mb = require "moonbeam"
local logger = require "moonbeam.logger"
local application = require "moonbeam.application"
local supervisor = require "moonbeam.supervisor"
logger.info("plain \"line\"")
assert(application.load{name = "quiet", version = "1", description = "",
  mod = {{start = function()
    return supervisor.start_link({init = function()
      return "ok", {strategy = "one_for_one"}, {}
    end})
  end}, {}}})
assert(application.start("quiet"))
local me = mb.self()
supervisor.start_link({init = function()
  return "ok", {strategy = "one_for_one", intensity = 5, period = 5}, {
    {id = "fragile", start = {"moonbeam.gen_server", "start_link", {{
      init = function(to)
        local mb = require "moonbeam"
        mb.send(to, "started")
        return "ok", to
      end,
      handle_cast = function() error("cracked") end,
    }, me, {name = "fragile"}}}},
  }
end})
mb.receive(function(m) return m == "started" end)
require("moonbeam.gen_server").cast("fragile", "go")
mb.receive(function(m) return m == "started" end)
local _, ref = mb.spawn_monitor(function() error("raw") end)
mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end)
]]

local function script(dir, body)
  local path = dir .. "/script.lua"
  H.write(path, body)
  return path
end

describe("log formats", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.remove(dir) end)

  it("writes JSON lines with the time, level, pid, kind of report and text", function()
    local s, _, err = H.run({"--log-format", "json", "run", script(dir, REPORTS)})
    assert.equal(0, s, err)
    local events = {}
    for _, line in ipairs(H.lines(err)) do
      local e, _, why = json.decode(line)
      assert(e, "not a JSON object: " .. line .. " (" .. tostring(why) .. ")")
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$", e.time)
      events[#events + 1] = e
    end
    local function find(pred)
      for _, e in ipairs(events) do if pred(e) then return e end end
    end
    local plain = find(function(e) return e.msg == 'plain "line"' end)
    assert.same({"info", nil}, {plain.level, plain.kind})
    assert.matches("^<0%.%d+%.%d+>$", plain.pid)
    local progress = find(function(e) return e.kind == "progress_report" end)
    assert.matches("^Application quiet started\nType: temporary", progress.msg)
    assert.equal("info", progress.level)
    local sup = find(function(e) return e.kind == "supervisor_report" end)
    assert.equal("error", sup.level)
    assert.matches("^Child fragile of Supervisor <0%.%d+%.%d+> terminated\n", sup.msg)
    assert.matches("cracked", sup.msg)
    local crash = find(function(e) return e.kind == "crash_report" end)
    assert.equal("error", crash.level)
    assert.matches("cracked", crash.msg)
    -- The core's report of a process that raised names it in `pid` too.
    local core = find(function(e) return e.kind == "crash_report" and e.msg:find("^process <") end)
    assert.equal(core.msg:match("^process (<[%d.]+>)"), core.pid)
  end)

  it("writes the date and time with --log-format date, and the time alone by default", function()
    local body = 'require("moonbeam.logger").crash_report("Something broke", "why")\n'
    local s, _, err = H.run({"--log-format", "date", "run", script(dir, body)})
    assert.equal(0, s, err)
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d %[error%] <0%.%d+%.%d+> Something broke\n"
      .. "%*%* %(exit%) why\n$", err)
    s, _, err = H.run({"run", script(dir, body)})
    assert.equal(0, s, err)
    assert.matches("^%d%d:%d%d:%d%d%.%d%d%d %[error%] <0%.%d+%.%d+> Something broke\n", err)
  end)

  it("logs to a file set in the config, rotated by size, keeping the files it says", function()
    local log = dir .. "/node.log"
    local config = dir .. "/node.lua"
    H.write(config, string.format(
      'return {log_file = %q, log_file_size = 2000, log_files = 2, log_format = "json"}\n', log))
    local body = 'local logger = require "moonbeam.logger"\n'
      .. 'for i = 1, 100 do logger.info("line %03d %s", i, ("x"):rep(60)) end\n'
    local s, _, err = H.run({"--config", config, "run", script(dir, body)})
    assert.equal(0, s, err)
    assert.equal("", err)
    local numbers = {}
    for _, name in ipairs({log .. ".2", log .. ".1", log}) do
      local text = H.read(name)
      assert(text ~= "", name .. " is empty")
      assert(#text < 2000 + 200, name .. " is bigger than the rotation size")
      for _, line in ipairs(H.lines(text)) do
        local e = assert(json.decode(line), line)
        numbers[#numbers + 1] = tonumber(e.msg:match("^line (%d+)"))
      end
    end
    assert.falsy(io.open(log .. ".3"))
    -- The newest lines, in order, ending with the last one.
    assert.equal(100, numbers[#numbers])
    for i = 2, #numbers do assert.equal(numbers[i - 1] + 1, numbers[i]) end
    assert(#numbers < 100, "older files were dropped")
  end)

  it("refuses a log file it cannot open, and a format it does not know", function()
    local s, _, err = H.run({"--log-file", dir .. "/no/such/dir/node.log", "eval", "1"})
    assert.equal(1, s)
    assert.same({"moonbeam: cannot open the log file " .. dir
      .. "/no/such/dir/node.log: No such file or directory"}, H.said(err))
    s, _, err = H.run({"--log-format", "xml", "eval", "1"})
    assert.equal(2, s)
    assert.same({"moonbeam: --log-format expects time, date or json, got 'xml'"}, H.said(err))
  end)
end)
