--- Task: run a function in a process of its own and collect its result,
-- with the semantics of Elixir's Task and Task.Supervisor.
--
--   local t = task.async(function(x) return x * 2 end, 21)
--   ... -- other work, meanwhile
--   local v = task.await(t)          -- 42
--
-- An async task is linked to the process that started it (its owner) and
-- monitored by it; when its function returns, it sends the owner
-- {Ref, Result...}, where Ref is the owner's monitor of the task, sent as
-- an alias (mb.send_alias): once the owner has stopped waiting for it (the
-- result taken, the task ignored or shut down), a late result is dropped
-- and never fills its mailbox. The task learns Ref from a first message of
-- its owner, {'$task_go', Ref}. A task is a table
-- {pid = Pid, ref = Ref, owner = Pid}; only its owner may await, yield,
-- ignore or shut it down.
--
-- The task supervisor (task.supervisor_*) is a GenServer of its own: it
-- starts tasks linked to it, forgets them when they end and never restarts
-- them, and shuts them down when it stops. It does not use
-- moonbeam.supervisor.
--
-- Its callbacks, as a gen_server callback module:
--
--   supervisor_start_link       ->  init(opts)
--   supervisor_start_child,
--   supervisor_async[_nolink]   ->  handle_call({'$task_start', Owner, Fn, Args})
--   supervisor_children         ->  handle_call('$task_children')
--   supervisor_terminate_child  ->  handle_call({'$task_terminate', Pid})
--   a task ends                 ->  handle_info({'EXIT', Pid, Reason})
--   supervisor_stop, parent's
--   exit                        ->  terminate(reason): every task is shut down
local mb = require "moonbeam"
local gen = require "moonbeam.gen"
local gen_server = require "moonbeam.gen_server"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, error, select, pcall = type, error, select, pcall
local unpack, huge = table.unpack, math.huge

local M = {}

local DOWN, EXIT = atom.DOWN, atom.EXIT
local SHUTDOWN, KILLED, NOPROC = atom.shutdown, atom.killed, atom.noproc
-- The owner's go-ahead to an async task: {'$task_go', Ref}.
local GO = atom["$task_go"]
local START, CHILDREN, TERMINATE =
  atom["$task_start"], atom["$task_children"], atom["$task_terminate"]

-- ---------------------------------------------------------------------------
-- Inside a task
--
-- These functions are spawned, so they are copied into the new process with
-- their upvalues: they use only `mb` (required again there) and atoms, so
-- that a task process loads nothing but the moonbeam module.

-- Wait for the owner's go-ahead, which carries the monitor ref the result
-- is sent to. With `watch`, give up if the owner dies first (a supervised
-- task is not always linked to its owner).
local function wait_go(owner, watch)
  if not watch then
    return mb.receive(function() return true end, nil, {[GO] = true})[2]
  end
  local mon = mb.monitor(owner)
  local m = mb.receive(function(m)
    return m[1] == GO or m[2] == mon
  end, nil, {[GO] = true, [DOWN] = true})
  if m[1] == DOWN then return nil end
  mb.demonitor(mon, {flush = true})
  return m[2]
end

-- The body of an async task: wait for the ref, run, send the results.
local function async_body(owner, watch, fn, ...)
  local ref = wait_go(owner, watch)
  if ref == nil then return end
  mb.send_alias(owner, ref, mb.tuple(ref, fn(...)))
end

-- ---------------------------------------------------------------------------
-- Client side

local function check_fn(fn, fname, arg)
  if type(fn) ~= "function" then
    gen.argerror(arg, fname, "function expected, got " .. typeof(fn), 3)
  end
end

local function check_task(t, fname)
  if type(t) ~= "table" or typeof(t.pid) ~= "pid" or typeof(t.ref) ~= "ref" then
    gen.argerror(1, fname, "task expected, got " .. typeof(t), 3)
  end
  local me = mb.self()
  if t.owner ~= me then
    error(("%s: task %s must be queried from its owner %s, not %s")
      :format(fname, tostring(t.pid), tostring(t.owner), tostring(me)), 3)
  end
end

-- Raise as Elixir exits the caller: {Reason, {task, await, {Task, Timeout}}}.
local function fail(reason, t, timeout)
  error(tuple(reason, tuple(atom.task, atom.await, tuple(t, timeout))), 0)
end

-- Wait for the task's result or its DOWN: the message, or nil on timeout.
local function receive_result(ref, timeout)
  return mb.receive(function(m)
    return m[1] == ref or m[2] == ref
  end, timeout, {[ref] = true, [DOWN] = true})
end

--- Run `fn(...)` in a new process, linked to the caller and monitored by
-- it. The function and the arguments are copied into the task process (as
-- for mb.spawn).
-- @param fn a Lua function
-- @return the task: {pid = Pid, ref = Ref, owner = Pid}
function M.async(fn, ...)
  check_fn(fn, "async", 1)
  local me = mb.self()
  local pid, ref = mb.spawn_opt({link = true, monitor = true}, async_body,
    me, false, fn, ...)
  mb.send(pid, tuple(GO, ref))
  return {pid = pid, ref = ref, owner = me}
end

--- Wait for a task's result.
-- On timeout, raises {timeout, {task, await, {Task, Timeout}}} and the task
-- goes on running: it may be awaited again, yielded or shut down. If the
-- task ends without a result, raises {Reason, {task, await, ...}} with its
-- exit reason (a crash reaches a linked owner as an exit signal first: the
-- owner dies with it unless it traps exits).
-- @param t the task
-- @param timeout milliseconds (default 5000), or math.huge
-- @return what the task's function returned
function M.await(t, timeout)
  check_task(t, "await")
  timeout = timeout or 5000
  local msg = receive_result(t.ref, timeout)
  if msg == nil then fail(atom.timeout, t, timeout) end
  if msg[1] == DOWN then fail(msg[5], t, timeout) end
  mb.demonitor(t.ref, {flush = true})
  return unpack(msg, 2, msg.n)
end

--- Wait for a task's result without raising.
-- @param t the task
-- @param timeout milliseconds (default 5000), or math.huge
-- @return what the task's function returned; nil, "timeout" if it has not
--   finished in time (it goes on running); nil, "exit", reason if it ended
--   without a result. A task may return nil: tell by the second value.
function M.yield(t, timeout)
  check_task(t, "yield")
  local msg = receive_result(t.ref, timeout or 5000)
  if msg == nil then return nil, "timeout" end
  if msg[1] == DOWN then return nil, "exit", msg[5] end
  mb.demonitor(t.ref, {flush = true})
  return unpack(msg, 2, msg.n)
end

-- Wait for the DOWN of monitor `mon`.
local function receive_down(mon, timeout)
  return mb.receive(function(m) return m[2] == mon end, timeout, {[DOWN] = true})
end

--- Unlink and stop a task, then look for its result.
-- The task is sent the exit signal `shutdown` and given `timeout` ms to end
-- (it ends at once unless it traps exits), then killed; "brutal_kill" kills
-- it at once. The owner is unlinked first, so it is not taken down.
-- @param t the task
-- @param timeout milliseconds (default 5000), or "brutal_kill"
-- @return the task's results if it finished before it was stopped;
--   nil, "exit", reason if it had ended otherwise; nil, "shutdown" if it
--   was stopped
function M.shutdown(t, timeout)
  check_task(t, "shutdown")
  local brutal = timeout == "brutal_kill"
  local pid, ref = t.pid, t.ref
  mb.unlink(pid)
  local mon = mb.monitor(pid)
  local down = gen.shutdown(pid, timeout or 5000,
    function(ms) return receive_down(mon, ms or huge) end)
  local reason = down[5]
  -- A result sent before the end is in the mailbox now: signals from one
  -- process keep their order.
  local msg = mb.receive(function(m) return m[1] == ref end, 0, {[ref] = true})
  if reason == NOPROC then
    -- It had ended before: its own DOWN has the real reason, unless it was
    -- taken already (the task was awaited).
    local own = receive_down(ref, 0)
    reason = own and own[5] or SHUTDOWN
  end
  mb.demonitor(ref, {flush = true})
  if msg then return unpack(msg, 2, msg.n) end
  if reason == SHUTDOWN or (brutal and reason == KILLED) then
    return nil, "shutdown"
  end
  return nil, "exit", reason
end

--- Stop caring about a task: it goes on running, unlinked from the caller,
-- and a result it sends later is dropped. The task may no longer be
-- awaited, yielded or shut down.
-- @param t the task
-- @return the task's results if they had come; nil, "exit", reason if it
--   had ended without; nil, "running" otherwise
function M.ignore(t)
  check_task(t, "ignore")
  local msg = receive_result(t.ref, 0)
  mb.unlink(t.pid)
  if msg and msg[1] == DOWN then return nil, "exit", msg[5] end
  mb.demonitor(t.ref, {flush = true})
  if msg then return unpack(msg, 2, msg.n) end
  return nil, "running"
end

-- A result as yield_many and async_stream give it: {"ok", value...} (with
-- n) from a task's message, {"exit", reason} from its 'DOWN'.
-- (pairs, ipairs and table.pack are not kept as upvalues here: the task
-- supervisor's callbacks below are copied into its process with theirs.)

-- values i..j of t, after "ok".
local function ok_result(t, i, j)
  local r = {"ok", n = j - i + 2}
  for k = i, j do r[k - i + 2] = t[k] end
  return r
end

local function outcome(msg)
  if msg[1] == DOWN then return {"exit", msg[5], n = 2} end
  return ok_result(msg, 2, msg.n)
end

-- The same from what task.ignore or task.shutdown returned (packed): nil
-- when the task gave no result ("running", "shutdown").
local function settled(r)
  if r[1] == nil and r.n == 2 and (r[2] == "running" or r[2] == "shutdown") then
    return nil
  end
  if r[1] == nil and r.n == 3 and r[2] == "exit" then return {"exit", r[3], n = 2} end
  return ok_result(r, 1, r.n)
end

-- Nanoseconds left until `deadline` (monotonic), as milliseconds; nil for
-- no deadline.
local function ms_left(deadline)
  if deadline == nil then return nil end
  return math.max(0, (deadline - mb.monotonic_time()) / 1e6)
end

local function deadline_of(timeout)
  if timeout == nil or timeout == huge or timeout == "infinity" then return nil end
  return mb.monotonic_time() + timeout * 1e6
end

--- Wait for several tasks at once, up to `timeout` ms for them all
-- (default 5000), as Elixir's Task.yield_many.
-- @param tasks a list of tasks of the caller
-- @param opts the timeout (ms or math.huge), or a table: timeout,
--   on_timeout ("nothing": the tasks not done go on running, the default;
--   "ignore": they are ignored, see task.ignore; "kill_task": they are shut
--   down with brutal_kill)
-- @return a list in the order of `tasks`: for each, {task, result} where
--   result is {"ok", value...} (n set), {"exit", reason}, or nil when the
--   task had not finished in time
function M.yield_many(tasks, opts)
  if type(tasks) ~= "table" then
    gen.argerror(1, "yield_many", "list of tasks expected, got " .. typeof(tasks), 1)
  end
  local timeout, on_timeout = opts, "nothing"
  if type(opts) == "table" then timeout, on_timeout = opts.timeout, opts.on_timeout or "nothing" end
  if on_timeout ~= "nothing" and on_timeout ~= "ignore" and on_timeout ~= "kill_task" then
    gen.argerror(2, "yield_many", "on_timeout must be \"nothing\", \"ignore\" or \"kill_task\"", 1)
  end
  local deadline = deadline_of(timeout == nil and 5000 or timeout)
  local pending, left, labels = {}, 0, {[DOWN] = true}
  local out = {}
  for i, t in ipairs(tasks) do
    check_task(t, "yield_many")
    out[i] = {t}
    pending[t.ref], labels[t.ref] = i, true
    left = left + 1
  end
  local function ours(m)
    local r = m[1] == DOWN and m[2] or m[1]
    return typeof(r) == "ref" and pending[r] ~= nil
  end
  while left > 0 do
    local m = mb.receive(ours, ms_left(deadline), labels)
    if m == nil then break end
    local ref = m[1] == DOWN and m[2] or m[1]
    local i = pending[ref]
    if m[1] ~= DOWN then mb.demonitor(ref, {flush = true}) end
    out[i][2] = outcome(m)
    pending[ref] = nil
    left = left - 1
  end
  if left > 0 and on_timeout ~= "nothing" then
    for _, i in pairs(pending) do
      local t = out[i][1]
      -- What came meanwhile is the task's result after all.
      out[i][2] = settled(on_timeout == "ignore" and table.pack(M.ignore(t))
        or table.pack(M.shutdown(t, "brutal_kill")))
    end
  end
  return out
end

--- Run `fn(x)` in a task for each element x of `input`, at most
-- `max_concurrency` at a time, as Elixir's Task.async_stream: an iterator
-- giving, for each element, "ok", value (fn's first result) or "exit",
-- reason:
--
--   for tag, v in task.async_stream({1, 2, 3}, function(x) return x * 2 end) do
--
-- The tasks are linked to the caller, as task.async's. Elements are taken
-- from `input` only as tasks are started.
-- @param input a list, or an iterator function giving one element a call
--   (nil at the end)
-- @param fn a Lua function, copied into each task
-- @param opts optional table: max_concurrency (default mb.schedulers()),
--   ordered (default true: results in the order of the input; false: as
--   they come), timeout (ms each task may run, default 5000, or math.huge),
--   on_timeout ("exit", the default: every task is shut down and the
--   caller raises {timeout, {task, async_stream, {timeout}}}; "kill_task":
--   the task is shut down and its element gives "exit", timeout)
function M.async_stream(input, fn, opts)
  check_fn(fn, "async_stream", 2)
  opts = opts or {}
  if type(opts) ~= "table" then
    gen.argerror(3, "async_stream", "table expected, got " .. typeof(opts), 1)
  end
  local next_input
  if type(input) == "function" then
    next_input = input
  elseif type(input) == "table" then
    local i = 0
    next_input = function() i = i + 1 return input[i] end
  else
    gen.argerror(1, "async_stream", "list or iterator expected, got " .. typeof(input), 1)
  end
  local max = opts.max_concurrency or mb.schedulers()
  if type(max) ~= "number" or max < 1 then
    gen.argerror(3, "async_stream", "max_concurrency must be a number of at least 1", 1)
  end
  local ordered = opts.ordered ~= false
  local timeout = opts.timeout == nil and 5000 or opts.timeout
  local on_timeout = opts.on_timeout or "exit"
  if on_timeout ~= "exit" and on_timeout ~= "kill_task" then
    gen.argerror(3, "async_stream", "on_timeout must be \"exit\" or \"kill_task\"", 1)
  end
  -- running: ref -> {i =, t =, deadline =}; ready: results by index
  -- (ordered) or in arrival order.
  local running, nrunning, started, exhausted = {}, 0, 0, false
  local ready, next_out, queue, qhead, qtail = {}, 1, {}, 1, 0
  local function fill()
    while not exhausted and nrunning < max do
      local x = next_input()
      if x == nil then exhausted = true return end
      started = started + 1
      local t = M.async(fn, x)
      running[t.ref] = {i = started, t = t, deadline = deadline_of(timeout)}
      nrunning = nrunning + 1
    end
  end
  local function done(e, tag, value)
    running[e.t.ref] = nil
    nrunning = nrunning - 1
    if ordered then
      ready[e.i] = {tag, value}
    else
      qtail = qtail + 1
      queue[qtail] = {tag, value}
    end
  end
  local function ours(m)
    local r = m[1] == DOWN and m[2] or m[1]
    return typeof(r) == "ref" and running[r] ~= nil
  end
  local function timed_out()
    local now = mb.monotonic_time()
    for _, e in pairs(running) do
      if e.deadline and e.deadline <= now then
        if on_timeout == "exit" then
          for _, o in pairs(running) do M.shutdown(o.t, "brutal_kill") end
          running, nrunning, exhausted = {}, 0, true
          error(tuple(atom.timeout, tuple(atom.task, atom.async_stream, tuple(timeout))), 0)
        end
        local r = settled(table.pack(M.shutdown(e.t, "brutal_kill")))
        if r == nil or r[1] == "exit" then
          done(e, "exit", atom.timeout)
        else
          done(e, "ok", r[2])
        end
      end
    end
  end
  return function()
    while true do
      if ordered and ready[next_out] then
        local r = ready[next_out]
        ready[next_out], next_out = nil, next_out + 1
        return r[1], r[2]
      elseif not ordered and queue[qhead] then
        local r = queue[qhead]
        queue[qhead], qhead = nil, qhead + 1
        return r[1], r[2]
      end
      fill()
      if nrunning == 0 then return nil end
      local first
      local labels = {[DOWN] = true}
      for ref, e in pairs(running) do
        labels[ref] = true
        if e.deadline and (first == nil or e.deadline < first) then first = e.deadline end
      end
      local m = mb.receive(ours, ms_left(first), labels)
      if m == nil then
        timed_out()
      else
        local ref = m[1] == DOWN and m[2] or m[1]
        if m[1] ~= DOWN then mb.demonitor(ref, {flush = true}) end
        local r = outcome(m)
        done(running[ref], r[1], r[2])
      end
    end
  end
end

--- Start `fn(...)` in a process that nobody waits for (fire and forget).
-- @return the pid
function M.start(fn, ...)
  check_fn(fn, "start", 1)
  return mb.spawn(fn, ...)
end

--- Start `fn(...)` in a process linked to the caller, as a process in a
-- supervision tree; nobody waits for a result.
-- @return the pid
function M.start_link(fn, ...)
  check_fn(fn, "start_link", 1)
  return mb.spawn_link(fn, ...)
end

-- ---------------------------------------------------------------------------
-- The task supervisor
--
-- The callbacks are copied into the supervisor process: like the task
-- bodies they use only module tables, atoms and Lua functions.

local Supervisor = {}

function Supervisor.init(opts)
  mb.trap_exit(true)
  return "ok", {children = {}, count = 0, max = opts.max_children,
    shutdown = opts.shutdown or 5000}
end

-- Stop one child as a supervisor does: shutdown, then kill after the
-- grace time. The child's 'EXIT' (it is linked) says when it has ended.
local function stop_child(pid, grace)
  local function its_exit(m) return m[2] == pid end
  gen.shutdown(pid, grace, function(ms)
    return mb.receive(its_exit, ms or huge, {[EXIT] = true})
  end)
end

function Supervisor.handle_call(req, _, s)
  if req == CHILDREN then
    local list, n = {}, 0
    for pid in pairs(s.children) do n = n + 1 list[n] = pid end
    return "reply", list, s
  end
  local kind = mb.typeof(req) == "tuple" and req[1]
  if kind == START then
    if s.max and s.count >= s.max then return "reply", false, s end
    local owner, args = req[2], req[4]
    local pid
    if owner then
      pid = mb.spawn_link(async_body, owner, true, req[3],
        table.unpack(args, 1, args.n))
    else
      pid = mb.spawn_link(req[3], table.unpack(args, 1, args.n))
    end
    s.children[pid] = true
    s.count = s.count + 1
    return "reply", pid, s
  elseif kind == TERMINATE then
    local pid = req[2]
    if not s.children[pid] then return "reply", false, s end
    stop_child(pid, s.shutdown)
    s.children[pid] = nil
    s.count = s.count - 1
    return "reply", true, s
  end
  return "reply", false, s
end

function Supervisor.handle_info(msg, s)
  if mb.typeof(msg) == "tuple" and msg[1] == EXIT and s.children[msg[2]] then
    s.children[msg[2]] = nil
    s.count = s.count - 1
  end
  return "noreply", s
end

function Supervisor.terminate(_, s)
  -- All at once, then wait for all within one grace time, as OTP does for
  -- simple_one_for_one children.
  local left = s.count
  if left == 0 then return end
  local grace = s.shutdown
  for pid in pairs(s.children) do
    mb.exit(pid, grace == "brutal_kill" and "kill" or "shutdown")
  end
  local deadline = grace ~= "brutal_kill" and mb.monotonic_time() + grace * 1e6
  while left > 0 do
    local wait = deadline and math.max(0, (deadline - mb.monotonic_time()) / 1e6) or huge
    local m = mb.receive(function(m) return s.children[m[2]] end, wait, {[EXIT] = true})
    if m == nil then break end
    s.children[m[2]] = nil
    left = left - 1
  end
  for pid in pairs(s.children) do mb.exit(pid, "kill") end
end

--- Start a task supervisor linked to the caller.
-- @param opts optional: name (register it), max_children (refuse more
--   tasks), shutdown (ms a task is given to end when stopped, default
--   5000, or "brutal_kill")
-- @return its pid, or nil and the reason
function M.supervisor_start_link(opts)
  opts = opts or {}
  local function bad(what)
    error("bad argument #1 to 'supervisor_start_link' (" .. what .. ")", 3)
  end
  if type(opts) ~= "table" then bad("table expected, got " .. typeof(opts)) end
  local grace, max = opts.shutdown, opts.max_children
  if grace ~= nil and grace ~= "brutal_kill" and
      not (type(grace) == "number" and grace >= 0) then
    bad("shutdown must be a number of ms or \"brutal_kill\"")
  end
  if max ~= nil and not (type(max) == "number" and max >= 0) then
    bad("max_children must be a number")
  end
  return gen_server.start_link(Supervisor, opts, opts)
end

local function start_under(sup, owner, fn, ...)
  return gen_server.call(sup, tuple(START, owner, fn,
    {n = select("#", ...), ...}))
end

--- Start `fn(...)` under the supervisor, linked to it but not to the
-- caller; nobody waits for a result.
-- @param sup the supervisor (pid or name)
-- @return the pid, or nil, "max_children"
function M.supervisor_start_child(sup, fn, ...)
  check_fn(fn, "supervisor_start_child", 2)
  local pid = start_under(sup, false, fn, ...)
  if not pid then return nil, "max_children" end
  return pid
end

local function supervised_async(sup, link, fn, ...)
  local me = mb.self()
  local pid = start_under(sup, me, fn, ...)
  if not pid then return nil, "max_children" end
  local ref = mb.monitor(pid)
  -- The task waits for the go-ahead, so it is alive here unless the
  -- supervisor has just stopped it: then the link fails and the DOWN
  -- tells await why.
  if link then pcall(mb.link, pid) end
  mb.send(pid, tuple(GO, ref))
  return {pid = pid, ref = ref, owner = me}
end

--- Start an async task under the supervisor, linked to the caller as well:
-- await it as a task from task.async.
-- @param sup the supervisor (pid or name)
-- @return the task, or nil, "max_children"
function M.supervisor_async(sup, fn, ...)
  check_fn(fn, "supervisor_async", 2)
  return supervised_async(sup, true, fn, ...)
end

--- Start an async task under the supervisor, not linked to the caller: a
-- crash of the task does not reach the caller, and await raises with the
-- task's reason (yield returns it).
-- @param sup the supervisor (pid or name)
-- @return the task, or nil, "max_children"
function M.supervisor_async_nolink(sup, fn, ...)
  check_fn(fn, "supervisor_async_nolink", 2)
  return supervised_async(sup, false, fn, ...)
end

--- The pids of the tasks running under the supervisor, in no order.
function M.supervisor_children(sup)
  return gen_server.call(sup, CHILDREN)
end

--- Stop one task of the supervisor (shutdown, then kill after the
-- supervisor's shutdown time).
-- @return true, or nil, "not_found"
function M.supervisor_terminate_child(sup, pid)
  if typeof(pid) ~= "pid" then
    error("bad argument #2 to 'supervisor_terminate_child' (pid expected, got "
      .. typeof(pid) .. ")", 2)
  end
  if gen_server.call(sup, tuple(TERMINATE, pid), huge) then return true end
  return nil, "not_found"
end

--- Stop the supervisor: its tasks are shut down first.
-- @param timeout ms to wait for it (default infinity)
function M.supervisor_stop(sup, reason, timeout)
  return gen_server.stop(sup, reason, timeout)
end

return M
