--- Tracing processes, as erlang:trace/3 delivers events and recon_trace
-- bounds them: what chosen processes do arrives as messages at a tracer
-- process, and a count and a rate limit stop the tracing by themselves, so
-- that tracing a busy node cannot take it down.
--
--   local trace = require "moonbeam.trace"
--   trace.processes("kv", {"call", "send"}, {max = 20})  -- prints lines
--   trace.processes({match = "^worker"}, "all", {rate = {100, 1000}})
--   trace.stop()
--
-- Events, each a tuple whose last element is the time in microseconds
-- since the epoch (erlang:system_time(microsecond)):
--
--   {trace_ts, Pid, send, Msg, To, Ts}          Pid sent Msg to To
--   {trace_ts, Pid, receive, Msg, Ts}           Pid took Msg from its mailbox
--   {trace_ts, Pid, call, Request, From, Ts}    a GenServer took a call
--   {trace_ts, Pid, spawn, Pid2, What, Ts}      "module.function" or "function"
--   {trace_ts, Pid, exit, Reason, Ts}           Pid ended
--   {trace_ts, Pid, link, Pid2, Ts}             also unlink
--
-- and last, once: {trace_stopped, Why, Count}, Why being max, rate,
-- stopped (trace.stop), replaced (a new trace started) or tracer_down.
local mb = require "moonbeam"
local inspect = require "moonbeam.inspect"

local atom, typeof = mb.atom, mb.typeof
local type, ipairs, tostring = type, ipairs, tostring
local format = string.format

local M = {}

local TRACE_TS, TRACE_STOPPED = atom.trace_ts, atom.trace_stopped
local ALL = {"send", "receive", "call", "spawn", "exit", "link"}

--- The most messages a trace sends when no `max` is given.
M.DEFAULT_MAX = 100

-- The tracer the last trace.processes of this process started, for wait.
local printer

local function when(ts)
  local s = ts // 1000000
  return os.date("!%H:%M:%S", s) .. format(".%06d", ts % 1000000)
end

local function show(v) return inspect(v, 4) end

--- One event as a line of text (no newline):
-- `10:41:08.205513 <0.2.0> send "pong" to <0.1.0>`.
-- @param m a message the tracer got
-- @return a string, or nil for a message that is not a trace message
function M.format(m)
  if typeof(m) ~= "tuple" then return nil end
  if m[1] == TRACE_STOPPED then
    return format("trace stopped: %s after %d messages", tostring(m[2]), m[3])
  end
  if m[1] ~= TRACE_TS then return nil end
  local what = tostring(m[3])
  local head = when(m[m.n]) .. " " .. tostring(m[2]) .. " " .. what .. " "
  if what == "send" then
    return head .. show(m[4]) .. " to " .. show(m[5])
  elseif what == "call" then
    local from = m[5]
    return head .. show(m[4]) .. " from " .. show(typeof(from) == "tuple" and from[1] or from)
  elseif what == "spawn" then
    return head .. tostring(m[4]) .. " (" .. m[5] .. ")"
  end
  return head .. show(m[4])
end

local function flag_list(flags)
  if flags == nil or flags == "all" then return ALL end
  if type(flags) == "string" then return {flags} end
  if type(flags) ~= "table" then
    error("bad argument #2 to 'processes' (flags expected: a list, a name or \"all\", got "
      .. typeof(flags) .. ")", 3)
  end
  return flags
end

-- The pids a spec names: a pid, a registered name, a list of them, or
-- {match = PATTERN}, every registered name matching the Lua pattern.
local function pids_of(spec, out)
  if typeof(spec) == "pid" then
    out[#out + 1] = spec
  elseif type(spec) == "string" or typeof(spec) == "atom" then
    local pid = mb.whereis(spec)
    if pid then out[#out + 1] = pid end
  elseif type(spec) == "table" and spec.match ~= nil then
    for _, name in ipairs(mb.registered()) do
      if tostring(name):find(spec.match) then
        local pid = mb.whereis(name)
        if pid then out[#out + 1] = pid end
      end
    end
  elseif type(spec) == "table" then
    for _, s in ipairs(spec) do pids_of(s, out) end
  else
    error("bad argument #1 to 'processes' (pid, name, list or {match = pattern} expected, got "
      .. typeof(spec) .. ")", 3)
  end
  return out
end

-- The default tracer: prints each event as a line, or for a remote
-- shell's session sends it to the user's shell as the session's own output
-- (owner and tag, see moonbeam.shell.remote_output); ends with the trace.
local function print_events(owner, tag)
  local mb = require "moonbeam"
  local trace = require "moonbeam.trace"
  local out = print
  if owner ~= nil then
    local OUTPUT = mb.atom["$shell_output"]
    out = function(line) mb.send(owner, mb.tuple(OUTPUT, tag, line .. "\n")) end
  end
  while true do
    local m = mb.receive()
    local line = trace.format(m)
    if line then out(line) end
    if mb.typeof(m) == "tuple" and m[1] == mb.atom.trace_stopped then return end
  end
end

local function remote_output()
  local shell = package.loaded["moonbeam.shell"]
  if shell == nil then return nil end
  return shell.remote_output()
end

--- Trace processes: start a trace session (stopping the one running, as
-- recon_trace does) and set the flags of each process `spec` names now.
-- @param spec a pid, a registered name, a list of them, or {match =
--   "pattern"}: the processes registered under a name that matches
-- @param flags a list of "send", "receive", "call", "spawn", "exit",
--   "link" (link and unlink), one of them, or "all" (the default)
-- @param opts optional: max (messages before the trace stops, default
--   DEFAULT_MAX; math.huge for none), rate ({Max, Ms}: more than Max
--   messages within Ms stops it), tracer (a local pid that gets the
--   events; default: a process that prints each as a line, see format),
--   replace (false: leave a running trace alone, and fail)
-- @return the number of processes traced (when none, the trace stops at
--   once), the tracer's pid and the session's number; or, with replace =
--   false while a trace runs, nil, "a trace is already running" and its
--   tracer
function M.processes(spec, flags, opts)
  opts = opts or {}
  flags = flag_list(flags)
  local pids = pids_of(spec, {})
  local tracer = opts.tracer
  if tracer == nil then
    tracer = mb.spawn(print_events, remote_output())
    printer = tracer
  end
  local max = opts.max or M.DEFAULT_MAX
  if max == math.huge then max = nil end
  local ok, session, why, running = pcall(mb.trace_start, tracer,
    {max = max, rate = opts.rate, replace = opts.replace ~= false})
  if not ok or session == nil then
    if opts.tracer == nil then mb.exit(tracer, "kill") end
    if not ok then error(session, 2) end
    return nil, why, running
  end
  local n = 0
  for _, pid in ipairs(pids) do
    if mb.trace_process(pid, flags) then n = n + 1 end
  end
  -- Nothing to trace: the trace ends at once, and its tracer with it.
  if n == 0 then mb.trace_stop(session) end
  return n, tracer, session
end

--- Stop the running trace; its tracer gets {trace_stopped, stopped, Count}.
-- @param session optional: stop it only if it is this one (the number
--   processes returned)
-- @return true if a trace was running (that one)
function M.stop(session) return mb.trace_stop(session) end

--- Wait until the printing tracer that this process started last has
-- ended (the trace stopped), so that a remote shell shows its lines as
-- they come.
-- @param timeout milliseconds (default: until it ends)
-- @return true when it ended, false at the timeout
function M.wait(timeout)
  if printer == nil then return true end
  local ref = mb.monitor(printer)
  local DOWN = atom.DOWN
  local m = mb.receive(function(x)
    return typeof(x) == "tuple" and x[1] == DOWN and x[2] == ref
  end, timeout)
  if m == nil then
    mb.demonitor(ref, {flush = true})
    return false
  end
  printer = nil
  return true
end

return M
