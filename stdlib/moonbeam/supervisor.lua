--- Supervisor: a process that starts, watches and restarts children, with
-- OTP's supervisor semantics. Like OTP's, it is itself a gen_server
-- callback module (the callbacks at the end of this file).
--
-- The callback module of a supervisor has one function:
--
--   supervisor.start / start_link  ->  init(args)
--
-- init returns "ok", flags, children (or "ignore"), where
--   flags    = {strategy = "one_for_one" | "one_for_all" | "rest_for_one"
--                         | "simple_one_for_one",
--               intensity = 3, period = 5}      (at most `intensity`
--               restarts in `period` seconds; Elixir's defaults)
--   children = a list of child specs:
--     {id = "kv",                                 -- any value, unique
--      start = {"module.name", "fname", {args}}   -- or a function;
--                                                 -- returns pid, or nil
--                                                 -- and a reason ("ignore"
--                                                 -- to start nothing)
--      restart = "permanent" | "transient" | "temporary",  -- permanent
--      shutdown = ms | "brutal_kill" | "infinity", -- 5000 for a worker,
--                                                  -- infinity for a
--                                                  -- supervisor
--      type = "worker" | "supervisor"}             -- worker
--
-- Children start in order and stop in reverse order. With
-- simple_one_for_one, `children` holds one template spec and start_child
-- appends its arguments to the template's.
--
-- sys.change_code(sup, module, old_vsn, extra) calls init(args) again, in
-- the current version of the callback module, and takes its flags and child
-- specs, as OTP's supervisor does: a running child keeps its process under
-- its new spec; a new spec's child is not started (start it with
-- restart_child); a child whose spec is gone stays as it was.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local gen = require "moonbeam.gen"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local insert, remove, unpack = table.insert, table.remove, table.unpack

local M = {}

local EXIT, NORMAL, SHUTDOWN, KILLED = atom.EXIT, atom.normal, atom.shutdown, atom.killed

-- ---------------------------------------------------------------------------
-- Client side

--- Start a supervisor linked to the caller.
-- @param module callback module (table or module name) with init(args)
-- @param args passed to init
-- @param opts optional: name (register locally)
-- @return pid, or nil and the reason ({shutdown, {failed_to_start_child,
--   Id, Reason}} when a child fails to start)
function M.start_link(module, args, opts)
  return gen_server.start_link("moonbeam.supervisor", {module = module, args = args}, opts)
end

--- Start a supervisor not linked to the caller.
-- @see start_link
function M.start(module, args, opts)
  return gen_server.start("moonbeam.supervisor", {module = module, args = args}, opts)
end

local function call(sup, req) return gen_server.call(sup, req, math.huge) end

-- Calls return {ok, value} or {false, reason}: unpack into Lua's style.
local function result(r)
  if r[1] then return r[2] end
  return nil, r[2]
end

--- Start a new child: a child spec, or for simple_one_for_one the extra
-- arguments (a list) appended to the template's.
-- @return pid, or nil and the reason (already_present, {already_started,
--   Pid}, or the start function's reason)
function M.start_child(sup, spec) return result(call(sup, {"start_child", spec})) end

--- Stop a child, by id (or by pid for simple_one_for_one); its spec stays
-- (except for temporary children), and a one_for_all or rest_for_one
-- restart of its siblings starts it again, as in OTP.
-- @return true, or nil and not_found
function M.terminate_child(sup, id) return result(call(sup, {"terminate_child", id})) end

--- Start again a child that was terminated.
-- @return pid, or nil and running | not_found | the start's reason
function M.restart_child(sup, id) return result(call(sup, {"restart_child", id})) end

--- Remove the spec of a terminated child.
-- @return true, or nil and running | not_found
function M.delete_child(sup, id) return result(call(sup, {"delete_child", id})) end

--- The children, in start order: a list of {id =, pid =, type =}; pid is
-- nil for a child that is not running.
function M.which_children(sup) return call(sup, {"which_children"}) end

--- Counts: {specs =, active =, supervisors =, workers =}.
function M.count_children(sup) return call(sup, {"count_children"}) end

--- The child spec of the child `id` (for simple_one_for_one, a child's
-- pid: its template), with the defaults filled in, as OTP's
-- get_childspec.
-- @return the spec (a table), or nil and not_found
function M.get_childspec(sup, id) return result(call(sup, {"get_childspec", id})) end

-- ---------------------------------------------------------------------------
-- Children

local DEFAULTS = {restart = "permanent", type = "worker"}

local function check_spec(spec)
  if type(spec) ~= "table" then return nil, "child spec must be a table" end
  if spec.id == nil then return nil, "child spec has no id" end
  local st = spec.start
  if type(st) ~= "function" and
      not (type(st) == "table" and type(st[1]) == "string" and type(st[2]) == "string") then
    return nil, "child spec " .. tostring(spec.id) ..
      ": start must be {module, function, {args}} or a function"
  end
  local c = {}
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(spec) do c[k] = v end
  if c.shutdown == nil then c.shutdown = c.type == "supervisor" and "infinity" or 5000 end
  local r = c.restart
  if r ~= "permanent" and r ~= "transient" and r ~= "temporary" then
    return nil, "child spec " .. tostring(spec.id) .. ": bad restart " .. tostring(r)
  end
  return c
end

--- Check a list of child specs as a supervisor's init would, without
-- starting anything, as OTP's check_childspecs.
-- @return true, or nil and {bad_child_spec, "what is wrong"} or
--   {duplicate_child_name, id}
function M.check_childspecs(specs)
  if type(specs) ~= "table" then
    return nil, tuple(atom.bad_child_spec, "child specs must be a list")
  end
  local seen = {}
  for _, spec in ipairs(specs) do
    local c, why = check_spec(spec)
    if not c then return nil, tuple(atom.bad_child_spec, why) end
    if seen[c.id] then return nil, tuple(atom.duplicate_child_name, c.id) end
    seen[c.id] = true
  end
  return true
end

-- Call the child's start: returns pid, or nil and a reason.
local function start_one(c, extra)
  local st = c.start
  local ok, pid, why
  if type(st) == "function" then
    ok, pid, why = pcall(st, unpack(extra or {}))
  else
    local args = {unpack(st[3] or {})}
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    ok, pid, why = pcall(function()
      local mod = require(st[1])
      local f = mod[st[2]]
      if type(f) ~= "function" then
        error(("%s.%s is not a function"):format(st[1], st[2]), 0)
      end
      return f(unpack(args))
    end)
  end
  if not ok then return nil, tuple(pid, "in start") end
  if typeof(pid) == "pid" then return pid end
  if why == nil and (pid == "ignore" or pid == atom.ignore) then why = atom.ignore end
  if why == "ignore" then why = atom.ignore end
  return nil, why == nil and tuple(atom.bad_start_return, tostring(pid)) or why
end

local function log_child(s, c, pid, what, reason)
  require("moonbeam.logger").supervisor_report(
    ("Child %s of Supervisor %s %s"):format(tostring(c.id),
      tostring(s.name or mb.self()), what), reason,
    {{"Pid", pid}, {"Restart", c.restart}, {"Shutdown", c.shutdown}, {"Type", c.type}})
end

-- Stop a running child as its shutdown says.  As OTP does, it is watched
-- with a monitor (a child may have unlinked itself); its EXIT, if one
-- comes, is taken out of the mailbox too.
local function shutdown(c)
  local pid = c.pid
  if not pid then return end
  c.pid = nil
  local ref = mb.monitor(pid)
  local DOWN = atom.DOWN
  local function down(timeout)
    return mb.receive(function(m) return m[1] == DOWN and m[2] == ref end,
      timeout, {[DOWN] = true})
  end
  gen.shutdown(pid, c.shutdown, down)
  mb.receive(function(m) return m[1] == EXIT and m[2] == pid end, 0, {[EXIT] = true})
end

local function is_abnormal(reason)
  return not (reason == NORMAL or reason == SHUTDOWN or
    (typeof(reason) == "tuple" and reason[1] == SHUTDOWN))
end

-- The list of children in start order; s.dynamic children are keyed by pid.
local function find(s, key)
  for i, c in ipairs(s.children) do
    if c.id == key or (c.pid ~= nil and c.pid == key) then return c, i end
  end
  return nil
end

local function start_child_record(s, c, extra)
  local pid, why = start_one(c, extra)
  if pid then
    c.pid = pid
    s.by_pid[pid] = c
  end
  return pid, why
end

local function stop_children(s, from)
  for i = #s.children, from or 1, -1 do
    local c = s.children[i]
    if c.pid then
      s.by_pid[c.pid] = nil
      shutdown(c)
    end
  end
end

-- ---------------------------------------------------------------------------
-- Restarts

-- Count a restart; false when the intensity is exceeded.
local function add_restart(s)
  local now = mb.monotonic_time() / 1e9
  local kept = {}
  for _, t in ipairs(s.restarts) do
    if now - t <= s.period then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = now
  s.restarts = kept
  return #kept <= s.intensity
end

local function remove_child(s, c)
  for i, x in ipairs(s.children) do
    if x == c then remove(s.children, i) return end
  end
end

-- Temporary children from the i-th on, stopped for a restart of their
-- group, are not restarted: their specs go, as in OTP.
local function drop_temporary(s, first)
  for i = #s.children, first, -1 do
    if s.children[i].restart == "temporary" then remove(s.children, i) end
  end
end

-- Start children i.. in order again; a failure counts as another restart.
local function restart_from(s, first, only_one)
  local last = only_one and first or #s.children
  for i = first, last do
    local c = s.children[i]
    if c and c.pid == nil then
      local pid, why = start_child_record(s, c, c.extra)
      if not pid and why ~= atom.ignore then
        log_child(s, c, nil, "failed to restart", why)
        return false
      end
    end
  end
  return true
end

local function restart(s, c)
  while true do
    if not add_restart(s) then
      mb.log("error", ("Supervisor %s: reached its maximum restart intensity (%d in %d s), shutting down")
        :format(tostring(s.name or mb.self()), s.intensity, s.period))
      stop_children(s)
      return false
    end
    local _, i = find(s, c.id)
    if s.strategy == "one_for_all" then
      stop_children(s)
      drop_temporary(s, 1)
      if restart_from(s, 1) then return true end
    elseif s.strategy == "rest_for_one" then
      stop_children(s, i + 1)
      drop_temporary(s, i + 1)
      if restart_from(s, i) then return true end
    else
      if restart_from(s, i, true) then return true end
    end
  end
end

local function child_exited(s, c, reason)
  local pid = c.pid
  s.by_pid[pid] = nil
  c.pid = nil
  if is_abnormal(reason) then log_child(s, c, pid, "terminated", reason) end
  local r = c.restart
  if r == "temporary" or (r == "transient" and not is_abnormal(reason)) then
    if r == "temporary" or s.dynamic or s.anonymous then remove_child(s, c) end
    return true
  end
  return restart(s, c)
end

-- ---------------------------------------------------------------------------
-- gen_server callbacks (for the supervisor process itself)

--- gen_server callback; not for users.
function M.init(a)
  mb.trap_exit(true)
  local mod = gen.callback_module(a.module)
  local tag, flags, specs = mod.init(a.args)
  tag = gen.tag(tag)
  if tag == "ignore" then return "ignore" end
  if tag ~= "ok" or type(flags) ~= "table" then
    return "stop", tuple(atom.bad_return, tostring(tag))
  end
  local s = {
    strategy = flags.strategy or "one_for_one",
    intensity = flags.intensity or 3,
    period = flags.period or 5,
    children = {}, by_pid = {}, restarts = {},
    name = mb.process_info(mb.self()).registered_name,
    module = a.module, args = a.args, -- init again by code_change
    anonymous = flags.anonymous, -- a DynamicSupervisor: children by pid
    max_children = flags.max_children, -- a DynamicSupervisor's limit
  }
  local strategies = {one_for_one = true, one_for_all = true, rest_for_one = true,
                      simple_one_for_one = true}
  if not strategies[s.strategy] then
    return "stop", tuple(atom.bad_strategy, tostring(s.strategy))
  end
  if s.strategy == "simple_one_for_one" then
    local t, why = check_spec((specs or {})[1])
    if not t or #specs ~= 1 then
      return "stop", tuple(atom.bad_child_spec, why or "simple_one_for_one needs one template")
    end
    s.template, s.dynamic, s.strategy = t, true, "one_for_one"
    return "ok", s
  end
  for _, spec in ipairs(specs or {}) do
    local c, why = check_spec(spec)
    if not c then return "stop", tuple(atom.bad_child_spec, why) end
    if find(s, c.id) then return "stop", tuple(atom.duplicate_child_name, c.id) end
    insert(s.children, c)
    local pid, err = start_child_record(s, c)
    if not pid and err ~= atom.ignore then
      stop_children(s)
      return "stop", tuple(SHUTDOWN, tuple(atom.failed_to_start_child, c.id, err))
    end
    -- An ignored temporary child would never start: OTP keeps no spec.
    if not pid and c.restart == "temporary" then remove(s.children) end
  end
  return "ok", s
end

local handlers = {}

function handlers.start_child(s, arg)
  local c, why
  if s.template then
    c = {}
    for k, v in pairs(s.template) do c[k] = v end
    c.extra = arg or {}
    c.id = nil
  else
    if s.anonymous and type(arg) == "table" then
      -- A DynamicSupervisor's children are known by pid: the spec's id,
      -- if any, is ignored, so one spec may start any number of them.
      local a = {}
      for k, v in pairs(arg) do a[k] = v end
      a.id, arg = true, a
    end
    c, why = check_spec(arg)
    if not c then return {false, tuple(atom.bad_child_spec, why)} end
    local old = not s.anonymous and find(s, c.id)
    if old then
      return {false, old.pid and tuple(atom.already_started, old.pid) or atom.already_present}
    end
  end
  if s.max_children and #s.children >= s.max_children then
    return {false, atom.max_children}
  end
  local pid, err = start_child_record(s, c, c.extra)
  if pid then
    if s.template or s.anonymous then c.id = pid end
    insert(s.children, c)
    return {true, pid}
  end
  if err == atom.ignore and not s.template and not s.anonymous and c.restart ~= "temporary" then
    insert(s.children, c)
  end
  return {false, err}
end

function handlers.terminate_child(s, key)
  local c = find(s, key)
  if not c then return {false, atom.not_found} end
  -- A child terminated by pid (a dynamic child) has no spec to keep.
  local by_pid = c.pid ~= nil and c.pid == key and c.id ~= key
  if c.pid then
    s.by_pid[c.pid] = nil
    shutdown(c)
  end
  if c.restart == "temporary" or s.template or s.anonymous or by_pid then remove_child(s, c) end
  return {true, true}
end

function handlers.restart_child(s, id)
  local c = find(s, id)
  if not c or s.template then return {false, atom.not_found} end
  if c.pid then return {false, atom.running} end
  local pid, why = start_child_record(s, c)
  if pid then return {true, pid} end
  return {false, why}
end

function handlers.delete_child(s, id)
  local c = find(s, id)
  if not c or s.template then return {false, atom.not_found} end
  if c.pid then return {false, atom.running} end
  remove_child(s, c)
  return {true, true}
end

function handlers.which_children(s)
  local out = {}
  for _, c in ipairs(s.children) do
    out[#out + 1] = {id = c.id, pid = c.pid, type = c.type}
  end
  return out
end

-- The spec fields of a child record: what get_childspec returns.
local SPEC_FIELDS = {"id", "start", "restart", "shutdown", "type", "significant", "modules"}

function handlers.get_childspec(s, key)
  local c = find(s, key)
  if not c then return {false, atom.not_found} end
  -- A simple_one_for_one child's spec is its template's.
  local from = s.template or c
  local spec = {}
  for _, k in ipairs(SPEC_FIELDS) do spec[k] = from[k] end
  return {true, spec}
end

function handlers.count_children(s)
  -- simple_one_for_one has one spec, its template, as in OTP.
  local n = {specs = s.template and 1 or #s.children, active = 0, supervisors = 0, workers = 0}
  for _, c in ipairs(s.children) do
    if c.pid then n.active = n.active + 1 end
    if c.type == "supervisor" then n.supervisors = n.supervisors + 1
    else n.workers = n.workers + 1 end
  end
  return n
end

--- gen_server callback; not for users.
function M.handle_call(req, _, s)
  local h = type(req) == "table" and handlers[req[1]]
  if not h then return "reply", {false, atom.unknown_call}, s end
  return "reply", h(s, req[2]), s
end

--- gen_server callback; not for users.
function M.handle_info(msg, s)
  if typeof(msg) == "tuple" and msg[1] == EXIT then
    local c = s.by_pid[msg[2]]
    if c and not child_exited(s, c, msg[3]) then
      return "stop", SHUTDOWN, s
    end
  end
  return "noreply", s
end

local STRATEGIES = {one_for_one = true, one_for_all = true, rest_for_one = true}

-- Take the flags and child specs a new init returned (see the header).
local function update_specs(s, flags, specs)
  if s.template then
    if flags.strategy ~= "simple_one_for_one" then
      return nil, tuple(atom.bad_strategy, tostring(flags.strategy))
    end
    local t, why = check_spec((specs or {})[1])
    if not t or #specs ~= 1 then return nil, tuple(atom.bad_child_spec, why) end
    s.template = t
  else
    local strategy = flags.strategy or "one_for_one"
    if not STRATEGIES[strategy] then return nil, tuple(atom.bad_strategy, tostring(strategy)) end
    local children, taken = {}, {}
    for _, spec in ipairs(specs or {}) do
      local c, why = check_spec(spec)
      if not c then return nil, tuple(atom.bad_child_spec, why) end
      local old = find(s, c.id)
      if old then c.pid, c.extra, taken[old] = old.pid, old.extra, true end
      children[#children + 1] = c
    end
    for _, old in ipairs(s.children) do
      if not taken[old] then children[#children + 1] = old end
    end
    s.strategy, s.children = strategy, children
    for _, c in ipairs(children) do if c.pid then s.by_pid[c.pid] = c end end
  end
  s.intensity, s.period = flags.intensity or 3, flags.period or 5
  return true
end

--- gen_server callback (sys.change_code); not for users: init again with
-- the current version of the callback module, and take its specs.
function M.code_change(_, s, _)
  if type(s.module) == "string" then
    local mod, err = require("moonbeam.code").swap(s.module)
    if mod == nil and err ~= nil then error(err, 0) end
  end
  local tag, flags, specs = gen.callback_module(s.module).init(s.args)
  tag = gen.tag(tag)
  if tag == "ignore" then return "ok", s end
  if tag ~= "ok" or type(flags) ~= "table" then
    error(tuple(atom.bad_return, tostring(tag)), 0)
  end
  local ok, why = update_specs(s, flags, specs)
  if not ok then error(why, 0) end
  return "ok", s
end

--- gen_server callback; not for users: children stop in reverse order.
function M.terminate(_, s)
  stop_children(s)
end

return M
