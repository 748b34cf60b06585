--- Logger: leveled log lines and readable reports, over the core's logger
-- (mb.log, mb.log_level), as Elixir's Logger is over OTP's.
--
--   local logger = require "moonbeam.logger"
--   logger.info("listening on port %d", port)
--   logger.set_level("debug")
--
-- Each call writes one line (or one multi-line report) on stderr, prefixed
-- by the time, the level and the pid of the calling process; lines from
-- different processes never mix. The launcher's settings choose the format
-- (the time, the date and time, or JSON lines) and a log file rotated by
-- size instead of stderr (docs/operations.md, Logs). The level is the node's: setting it in one
-- process sets it for all.
--
-- Levels, from lowest to highest: debug, info, notice, warning, error. The
-- default minimum is info. A message below the minimum is dropped before
-- it is formatted.
--
-- Reports are the multi-line entries behaviours write when a process
-- crashes or starts, modelled on Elixir's:
--
--   12:00:00.000 [error] <0.7.0> Child worker of Supervisor demo_sup terminated
--   ** (exit) an exception was raised:
--       ** (error) worker.lua:12: boom
--       stack traceback:
--           worker.lua:12: in function <worker.lua:10>
--   Pid: <0.9.0>
--   Restart: permanent
local mb = require "moonbeam"
local gen = require "moonbeam.gen"

local typeof, mb_log, mb_log_level = mb.typeof, mb.log, mb.log_level
local type, select, tostring, error, ipairs = type, select, tostring, error, ipairs
local pcall = pcall
local format, concat = string.format, table.concat

-- tostring, except that a __tostring that raises or gives no string
-- makes opaque text: a report must not fail on the value it reports.
local function text(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return format("<%s: __tostring failed>", type(v))
end

local M = {}

local RANK = {debug = 1, info = 2, notice = 3, warning = 4, error = 5}

--- The levels, lowest first.
M.levels = {"debug", "info", "notice", "warning", "error"}

-- A level given as a string or an atom; raises for anything else.
local function check_level(level, fname, argn)
  local name = typeof(level) == "atom" and tostring(level) or level
  if type(name) ~= "string" or RANK[name] == nil then
    gen.argerror(argn, fname, "debug, info, notice, warning or error expected, got " ..
      (type(name) == "string" and "'" .. name .. "'" or typeof(level)), 3)
  end
  return name
end

local function enabled(level)
  return RANK[level] >= RANK[mb_log_level()]
end

-- The text of a message: fmt formatted with the arguments, or, with no
-- arguments, fmt itself (so that a "%" in a plain message is harmless).
local function message(fname, fmt, ...)
  if select("#", ...) == 0 then return text(fmt) end
  if type(fmt) ~= "string" then
    gen.argerror(1, fname, "format string expected, got " .. typeof(fmt), 3)
  end
  return format(fmt, ...)
end

--- A value as text, as tostring gives it, for reports and logs: a
-- __tostring that raises or gives no string makes opaque text instead
-- ("<table: __tostring failed>").
-- @param v any value
-- @return a string
M.text = text

--- Log a message at `level`.
-- @param level "debug", "info", "notice", "warning" or "error" (or the atom)
-- @param fmt a string.format format, or with no further arguments any value
--   (written as by tostring)
-- @param ... the format's arguments
function M.log(level, fmt, ...)
  level = check_level(level, "log", 1)
  if enabled(level) then mb_log(level, message("log", fmt, ...)) end
end

local function at(level)
  return function(fmt, ...)
    if enabled(level) then mb_log(level, message(level, fmt, ...)) end
  end
end

--- Log at level debug: `logger.debug(fmt, ...)`, as string.format.
-- @function debug
M.debug = at("debug")

--- Log at level info.
-- @function info
M.info = at("info")

--- Log at level notice.
-- @function notice
M.notice = at("notice")

--- Log at level warning.
-- @function warning
M.warning = at("warning")

--- Log at level error.
-- @function error
M.error = at("error")

--- Set the node's minimum level.
-- @param level one of `logger.levels` (string or atom)
-- @return the previous level
function M.set_level(level)
  return mb_log_level(check_level(level, "set_level", 1))
end

--- The node's minimum level, as a string.
function M.level() return mb_log_level() end

--- Whether a message at `level` would be written now.
function M.enabled(level) return enabled(check_level(level, "enabled", 1)) end

-- ---------------------------------------------------------------------------
-- Reports

local function indent(text, prefix)
  return prefix .. text:gsub("\n", "\n" .. prefix)
end

-- A crash's exit reason is {Error, Traceback}: split it so that the
-- traceback reads as lines, not as one quoted string.
local function is_crash(reason)
  return typeof(reason) == "tuple" and reason.n == 2 and type(reason[2]) == "string"
    and reason[2]:find("^stack traceback") ~= nil
end

--- The lines that say why a process ended, as Elixir writes them:
-- `** (exit) shutdown`, or for a process that raised
-- `** (exit) an exception was raised:` followed by the error and its
-- traceback, indented.
-- @param reason an exit reason
-- @return a string (several lines, no final newline)
function M.format_reason(reason)
  if is_crash(reason) then
    return "** (exit) an exception was raised:\n" ..
      indent("** (error) " .. text(reason[1]) .. "\n" ..
        reason[2]:gsub("\t", "    "), "    ")
  end
  return "** (exit) " .. text(reason)
end

-- Fields are checked whether or not the report is written, so that a bad
-- one shows at once, not the day the level is lowered.
local function check_fields(fields)
  if fields == nil then return end
  if type(fields) ~= "table" then
    error("bad fields in report (list of {label, value} expected, got " ..
      typeof(fields) .. ")", 3)
  end
  for i, f in ipairs(fields) do
    if type(f) ~= "table" or f[1] == nil then
      error(format("bad field #%d in report ({label, value} expected)", i), 3)
    end
  end
end

local function report_text(title, reason, has_reason, fields)
  local lines = {text(title)}
  if has_reason then lines[#lines + 1] = M.format_reason(reason) end
  for _, f in ipairs(fields or {}) do
    lines[#lines + 1] = text(f[1]) .. ": " .. text(f[2])
  end
  return concat(lines, "\n")
end

--- Log a multi-line report at `level`: the title, the reason (see
-- format_reason) if there is one, and a "Label: value" line per field.
-- @param level a level
-- @param title the first line, such as "Child kv of Supervisor kv_sup started"
-- @param reason an exit reason, or nil for none
-- @param fields a list of {label, value} pairs, in the order to print
function M.report(level, title, reason, fields)
  level = check_level(level, "report", 1)
  check_fields(fields)
  if enabled(level) then
    mb_log(level, report_text(title, reason, reason ~= nil, fields))
  end
end

--- Log a crash report (level error): something ended abnormally.
--
--   logger.crash_report("Child worker of Supervisor demo_sup terminated",
--     reason, {{"Pid", pid}, {"Restart", "permanent"}})
-- @param title the first line
-- @param reason the exit reason
-- @param fields optional list of {label, value} pairs
function M.crash_report(title, reason, fields)
  check_fields(fields)
  if enabled("error") then
    mb_log("error", report_text(title, reason, true, fields), "crash_report")
  end
end

--- Log a supervisor report (level error): a supervisor's child ended
-- abnormally, or could not start, as OTP's supervisor reports say.
--
--   logger.supervisor_report("Child worker of Supervisor demo_sup terminated",
--     reason, {{"Pid", pid}, {"Restart", "permanent"}})
-- @param title the first line
-- @param reason the exit reason
-- @param fields optional list of {label, value} pairs
function M.supervisor_report(title, reason, fields)
  check_fields(fields)
  if enabled("error") then
    mb_log("error", report_text(title, reason, true, fields), "supervisor_report")
  end
end

--- Log a progress report (level info): something started or stopped as
-- planned.
--
--   logger.progress_report("Child kv of Supervisor kv_sup started",
--     {{"Pid", pid}, {"Start Call", "kv.server.start_link()"}})
-- @param title the first line
-- @param fields optional list of {label, value} pairs
function M.progress_report(title, fields)
  check_fields(fields)
  if enabled("info") then
    mb_log("info", report_text(title, nil, false, fields), "progress_report")
  end
end

return M
