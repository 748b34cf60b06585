--- Tracing from the dashboard: one trace at a time, started from a
-- process's page, its events streamed to that page, ended when the page
-- goes away.
--
--   POST /api/trace?pid=P&flags=send,receive&max=100&rate=50
--        (or match=PATTERN for the processes registered under a name that
--        matches) -> start: a tracer process, registered as
--        dashboard_tracer, under dashboard_conns, traces with
--        moonbeam.trace and answers {id, traced}
--   GET  /events?trace=ID -> the events, one server-sent event "trace" per
--        line (trace.format), and "stopped" last; the first stream to
--        attach gets them, and when it goes (its client closed it) the
--        trace stops
--   POST /api/trace/stop -> the tracer stops its trace
--
-- The trace is bounded as every trace is (moonbeam.trace): at most `max`
-- events (DEFAULT_MAX, at most MAX_MAX) and `rate` a second (DEFAULT_RATE,
-- at most MAX_RATE); it does not replace a trace that runs (one started
-- from a shell, say): that is a 409.  A tracer no stream attaches to
-- within ATTACH_MS stops its trace, and so does one whose application
-- stops.
local mb = require "moonbeam"
local trace = require "moonbeam.trace"
local ds = require "moonbeam.dynamic_supervisor"
local data = require "moonbeam.dashboard.data"

local typeof, atom = mb.typeof, mb.atom
local tostring, tonumber, ipairs, pcall, type = tostring, tonumber, ipairs, pcall, type
local format, concat = string.format, table.concat

local M = {}

M.DEFAULT_MAX, M.MAX_MAX = 100, 10000
M.DEFAULT_RATE, M.MAX_RATE = 50, 1000 -- events a second
M.ATTACH_MS = 10000
M.MAX_LINE = 2000
local NAME = "dashboard_tracer"
local KINDS = {"send", "receive", "call", "spawn", "exit", "link"}
local STARTED, ATTACH, LINE, STOPPED = "$dashboard_trace_started", "$dashboard_trace_attach",
  "$dashboard_trace", "$dashboard_trace_stopped"

local function known_kind(k)
  for _, kind in ipairs(KINDS) do if kind == k then return true end end
  return false
end

-- An integer query parameter within [1, most], or the default.
local function bounded(text, default, most, what)
  if text == nil or text == "" then return default end
  local n = math.tointeger(tonumber(text))
  if not n or n < 1 or n > most then
    return nil, format("%s must be an integer from 1 to %d", what, most)
  end
  return n
end

--- The trace a request asks for, from its query: {pids, flags, max,
-- rate}, or nil, an HTTP status and why.
function M.parse(q)
  local pids = {}
  if q.pid and q.pid ~= "" then
    local p = data.pid(q.pid)
    if not p then return nil, 404, "no such process" end
    pids[1] = p
  elseif q.match and q.match ~= "" then
    if #q.match > 64 or not pcall(string.find, "", q.match) then
      return nil, 400, "match must be a Lua pattern of at most 64 characters"
    end
    for _, name in ipairs(mb.registered()) do
      if tostring(name):find(q.match) then pids[#pids + 1] = mb.whereis(name) end
    end
    if #pids == 0 then return nil, 404, "no registered name matches " .. q.match end
  else
    return nil, 400, "pid or match is needed"
  end
  local flags = {}
  for k in (q.flags or concat(KINDS, ",")):gmatch("[^,]+") do
    if not known_kind(k) then
      return nil, 400, "unknown kind '" .. k:sub(1, 32) .. "' (" .. concat(KINDS, ", ") .. ")"
    end
    flags[#flags + 1] = k
  end
  if #flags == 0 then return nil, 400, "flags: at least one kind is needed" end
  local max, why = bounded(q.max, M.DEFAULT_MAX, M.MAX_MAX, "max")
  if not max then return nil, 400, why end
  local rate
  rate, why = bounded(q.rate, M.DEFAULT_RATE, M.MAX_RATE, "rate")
  if not rate then return nil, 400, why end
  return {pids = pids, flags = flags, max = max, rate = rate}
end

local function line_of(m)
  local line = trace.format(m) or ""
  if #line > M.MAX_LINE then line = line:sub(1, M.MAX_LINE) .. " ..." end
  return line
end

-- The tracer's life once its trace runs: wait for a stream, then pass
-- it each event as a line, until the trace stops, the stream goes, or
-- the application stops.
local function serve(session, parent)
  local DOWN, EXIT = atom.DOWN, atom.EXIT
  local function is(m, tag) return type(m) == "table" and m[1] == tag end
  local function from_parent(m) return typeof(m) == "tuple" and m[1] == EXIT and m[2] == parent end
  -- The events wait in the mailbox meanwhile (at most max of them).
  local attach = mb.receive(function(m)
    return is(m, ATTACH) or is(m, "stop") or from_parent(m)
  end, M.ATTACH_MS)
  if not is(attach, ATTACH) then
    trace.stop(session) -- no stream came, or a stop or the dashboard's end did first
    return
  end
  local stream = attach[2]
  local ref = mb.monitor(stream)
  mb.send(stream, {ATTACH, mb.self()})
  local stopping = false
  while true do
    local m = mb.receive()
    local kind = typeof(m) == "tuple" and m[1]
    if kind == atom.trace_ts then
      mb.send(stream, {LINE, line_of(m)})
    elseif kind == atom.trace_stopped then
      mb.send(stream, {STOPPED, line_of(m)})
      return
    elseif kind == DOWN and m[2] == ref or from_parent(m) then
      trace.stop(session) -- the page went, or the dashboard stops
      return
    elseif is(m, "stop") and not stopping then
      stopping = true
      trace.stop(session) -- its trace_stopped comes next
    elseif is(m, ATTACH) then
      mb.send(m[2], {ATTACH, false}) -- one stream only
    end
  end
end

--- The tracer process (under dashboard_conns): it answers `starter`
-- {STARTED, {id, traced}} or {STARTED, nil, status, why}.
function M.run(starter, parent, pids, flags, max, rate)
  local function answer(...) mb.send(starter, {STARTED, ...}) end
  if not pcall(mb.register, NAME, mb.self()) then
    return answer(nil, 409, "a trace from the dashboard is running")
  end
  mb.trap_exit(true)
  local n, tracer, session = trace.processes(pids, flags,
    {tracer = mb.self(), max = max, rate = {rate, 1000}, replace = false})
  if n == nil then
    return answer(nil, 409, format("a trace is already running (its tracer is %s)",
      tostring(session)))
  end
  if n == 0 then return answer(nil, 404, "no such process") end -- it ended meanwhile
  answer({id = tostring(tracer), traced = n})
  return serve(session, parent)
end

--- For dashboard_conns: start the tracer, linked to it.
function M.start_link(starter, pids, flags, max, rate)
  return mb.spawn_link("moonbeam.dashboard.tracer", "run", starter, mb.self(), pids, flags,
    max, rate)
end

--- Start a trace from a request's query (in a connection process).
-- @return {id = the tracer's pid as text, traced = count}, or nil, an HTTP
--   status and why
function M.start(q)
  local t, status, why = M.parse(q)
  if not t then return nil, status, why end
  if mb.whereis(NAME) then return nil, 409, "a trace from the dashboard is running" end
  local pid = ds.start_child("dashboard_conns", {
    start = {"moonbeam.dashboard.tracer", "start_link", {mb.self(), t.pids, t.flags, t.max,
                                                          t.rate}},
    restart = "temporary"})
  if not pid then return nil, 503, "the dashboard cannot start a tracer now" end
  local got = mb.receive(function(m) return type(m) == "table" and m[1] == STARTED end, 5000)
  if not got then return nil, 500, "the tracer did not answer" end
  if got[2] == nil then return nil, got[3], got[4] end
  return got[2]
end

--- Stop the dashboard's trace; false if none runs.
function M.stop()
  local t = mb.whereis(NAME)
  if not t then return false end
  mb.send(t, {"stop"})
  return true
end

--- Attach the calling process (a connection's event stream) to the
-- tracer whose id is `id`: it then gets {LINE, text} for each event and
-- {STOPPED, text} last.
-- @return the tracer's pid and the ref of a monitor of it, or nil and why
function M.attach(id)
  local t = mb.whereis(NAME)
  if not t or tostring(t) ~= id then return nil, "no such trace" end
  local ref = mb.monitor(t)
  mb.send(t, {ATTACH, mb.self()})
  local m = mb.receive(function(m)
    return type(m) == "table" and m[1] == ATTACH
      or typeof(m) == "tuple" and m[1] == atom.DOWN and m[2] == ref
  end, 5000)
  if type(m) ~= "table" or m[2] ~= t then
    mb.demonitor(ref, {flush = true})
    return nil, "no such trace, or another page follows it"
  end
  return t, ref
end

M.LINE, M.STOPPED = LINE, STOPPED

return M
