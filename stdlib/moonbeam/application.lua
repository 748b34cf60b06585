--- Applications: components that are loaded, started and stopped as a
-- unit, with OTP's application semantics.
--
-- An application is described by a spec, a Lua table, given to
-- application.load or kept in a file `<name>.app.lua` on package.path:
--
--   return {
--     name = "kv", version = "1.0.0", description = "a key-value store",
--     mod = {"kv.application", start_args},  -- the callback module
--     applications = {"logger_app"},        -- started before this one
--     env = {port = 4000},                  -- application.get_env
--   }
--
-- The callback module (a module name, or a table of functions) has:
--
--   application.start / ensure_all_started  ->  start(type, start_args)
--        returns the pid of the top supervisor [, state], or nil, reason
--   application.stop                        ->  prep_stop(state) (optional,
--        returns the new state), then the top supervisor is shut down,
--        then stop(state) (optional)
--   application.change_spec                 ->  config_change(changed, new,
--        removed) (optional, for a running application): the keys of the
--        environment whose value changed, the new ones (each a table of
--        key -> value) and the removed keys (a list)
--
-- An application without `mod` is a library: starting it only marks it
-- started.
--
-- A process registered as `application_controller`, started on first use,
-- keeps the loaded and started applications and their environments. Each
-- started application has an application master process, which calls
-- start and links to the top supervisor. When that supervisor ends
-- without application.stop, the start type decides:
--
--   "temporary"  the exit is logged; the other applications go on
--   "transient"  the node stops if the reason is not `normal`
--   "permanent"  the node stops
--
-- Stopping the node stops the other applications, last started first,
-- then calls the node stop hook (application.on_node_stop by default,
-- which exits the operating system process with status 1).
local mb = require "moonbeam"
local gen = require "moonbeam.gen"
local gen_server = require "moonbeam.gen_server"
local logger = require "moonbeam.logger"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local pcall, xpcall, select = pcall, xpcall, select
local format, insert, remove, unpack = string.format, table.insert, table.remove, table.unpack
local traceback = debug.traceback

local M = {}

local CONTROLLER = "application_controller"
local EXIT, NORMAL, SHUTDOWN = atom.EXIT, atom.normal, atom.shutdown
local STARTED, STOP = atom["$app_started"], atom["$app_stop"]
local NODE_STOP_TIMEOUT = atom["$node_stop_timeout"]

-- How long a master waits for its top supervisor to shut down before it
-- kills it, and how long the node stop waits for every application.
local SHUTDOWN_TIMEOUT = 30000
local NODE_STOP_LIMIT = 60000

local START_TYPES = {temporary = true, transient = true, permanent = true}

-- ---------------------------------------------------------------------------
-- Checking arguments and specs

-- An application name: a string, or an atom (as its string).
local function check_name(name, fname, argn)
  if typeof(name) == "atom" then return tostring(name) end
  if type(name) ~= "string" then
    gen.argerror(argn, fname, "application name expected, got " .. typeof(name), 3)
  end
  return name
end

local function check_type(t, fname, argn)
  if t == nil then return "temporary" end
  local s = typeof(t) == "atom" and tostring(t) or t
  if not START_TYPES[s] then
    gen.argerror(argn, fname, "temporary, transient or permanent expected, got " ..
      (type(s) == "string" and "'" .. s .. "'" or typeof(t)), 3)
  end
  return s
end

local function is_name(v) return type(v) == "string" or typeof(v) == "atom" end

-- A spec, checked and normalised (names as strings, defaults filled in),
-- or nil and what is wrong with it.
local function check_spec(spec)
  if type(spec) ~= "table" then return nil, "spec must be a table" end
  if not is_name(spec.name) then return nil, "spec has no name" end
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.name = tostring(spec.name)
  for _, key in ipairs({"version", "description"}) do
    if s[key] == nil then s[key] = "" end
    if type(s[key]) ~= "string" then return nil, key .. " must be a string" end
  end
  local mod = s.mod
  if mod ~= nil then
    if type(mod) ~= "table" or (type(mod[1]) ~= "string" and type(mod[1]) ~= "table") then
      return nil, "mod must be {module, start_args}"
    end
  end
  local deps = {}
  if s.applications ~= nil and type(s.applications) ~= "table" then
    return nil, "applications must be a list of names"
  end
  for i, d in ipairs(s.applications or {}) do
    if not is_name(d) then return nil, "applications[" .. i .. "] is not a name" end
    deps[i] = tostring(d)
  end
  s.applications = deps
  if s.env ~= nil and type(s.env) ~= "table" then return nil, "env must be a table" end
  s.env = s.env or {}
  return s
end

-- The file `<name>.app.lua` on package.path (or, failing that, the module
-- `<name>.app` as require finds it: `<name>/app.lua`).
local function find_spec_file(name)
  local path = package.searchpath(name .. ".app", package.path, "")
  return path or package.searchpath(name .. ".app", package.path)
end

-- Read an application spec from its file, in the calling process. The file
-- is data: it runs with an empty environment.
local function read_spec_file(name)
  local path = find_spec_file(name)
  if not path then return nil, tuple(atom.not_found, name) end
  local chunk, err = loadfile(path, "t", {})
  local ok, spec = false, err
  if chunk then ok, spec = pcall(chunk) end
  if not ok then return nil, tuple(atom.bad_app_file, path, tostring(spec)) end
  local s, why = check_spec(spec)
  if s and s.name ~= name then
    s, why = nil, format("name is '%s', expected '%s'", s.name, name)
  end
  if not s then return nil, tuple(atom.bad_app_file, path, why) end
  return s
end

-- ---------------------------------------------------------------------------
-- The application master: one process per started application

-- An error in a callback becomes {Error, Traceback}, as a crash's reason.
local function on_error(e) return tuple(e, traceback(nil, 2)) end

-- Call an optional callback of the application module; an error is logged.
local function callback(name, module, fname, ...)
  local f = module[fname]
  if type(f) ~= "function" then return true end
  local r = gen.pack(xpcall(f, on_error, ...))
  if not r[1] then
    logger.crash_report(format("Application %s: %s failed", name, fname), r[2])
  end
  return r[1], r[2]
end

local function await_exit(pid, timeout)
  return mb.receive(function(m)
    return typeof(m) == "tuple" and m[1] == EXIT and m[2] == pid
  end, timeout, {[EXIT] = true})
end

-- Shut the top supervisor down as a parent does: exit signal shutdown, then
-- wait for it to end, killing it if it takes too long.
local function shutdown_sup(name, sup)
  local _, killed = gen.shutdown(sup, SHUTDOWN_TIMEOUT, function(ms)
    return await_exit(sup, ms or SHUTDOWN_TIMEOUT)
  end)
  if killed then
    logger.warning("Application %s: the top supervisor %s did not stop within %d ms; killed",
      name, tostring(sup), SHUTDOWN_TIMEOUT)
  end
end

-- Start the application, tell the controller how it went, then watch the
-- top supervisor until it ends or the controller says stop.
local function master(controller, name, mod, start_type)
  mb.trap_exit(true)
  local me = mb.self()
  local function started(ok, reason)
    mb.send(controller, tuple(STARTED, me, ok, reason))
  end
  local r = gen.pack(xpcall(function()
    local module = gen.callback_module(mod[1])
    if type(module) ~= "table" or type(module.start) ~= "function" then
      error(format("application module %s has no start function", tostring(mod[1])), 0)
    end
    return module, module.start(start_type, mod[2])
  end, on_error))
  local module, sup, state = r[2], r[3], r[4]
  if not r[1] or typeof(sup) ~= "pid" then
    local reason = r[2]
    if r[1] then
      reason = sup == nil and r[4] or tuple(atom.bad_return, tostring(sup))
      if reason == nil then reason = tuple(atom.bad_return, "nil") end
    end
    started(false, reason)
    -- Whatever start left linked to this process goes with it.
    mb.exit(SHUTDOWN)
  end
  mb.link(sup)
  started(true, sup)
  while true do
    local m = mb.receive()
    if typeof(m) == "tuple" and m[1] == EXIT then
      if m[2] == sup then
        callback(name, module, "stop", state)
        mb.exit(m[3])
      elseif m[2] == controller then
        shutdown_sup(name, sup)
        callback(name, module, "stop", state)
        mb.exit(m[3])
      end
    elseif typeof(m) == "tuple" and m[1] == STOP then
      if type(module.prep_stop) == "function" then
        local ok, new_state = callback(name, module, "prep_stop", state)
        if ok then state = new_state end
      end
      shutdown_sup(name, sup)
      callback(name, module, "stop", state)
      return
    end
  end
end

-- ---------------------------------------------------------------------------
-- The application controller: a gen_server whose callback module is this
-- module (M.init, M.handle_call and M.handle_info, at the end)

-- Replies are {true, value} or {false, reason}: see `request`.
local function ok(v) return {true, v == nil and true or v} end
local function fail(reason) return {false, reason} end

local function remove_value(list, v)
  for i = #list, 1, -1 do
    if list[i] == v then remove(list, i) end
  end
end

local function run_hook(s, reason)
  local hook = s.hook or M.on_node_stop
  local done, err = pcall(hook, reason)
  if not done then
    logger.error("application: the node stop hook failed: %s", tostring(err))
  end
end

-- Stopping the node: stop the running applications one at a time, last
-- started first, then run the hook.
local function continue_node_stop(s)
  if s.node_stopping == nil then return end
  for name in pairs(s.stopping) do
    if s.running[name] then return end -- wait for its master to end
  end
  local last = s.order[#s.order]
  if last == nil then
    local reason = s.node_stopping
    s.node_stopping, s.node_stop_token = nil, nil
    return run_hook(s, reason)
  end
  local app = s.running[last]
  if app.master then
    s.stopping[last] = {}
    mb.send(app.master, tuple(STOP))
  else
    s.running[last] = nil
    remove(s.order)
    return continue_node_stop(s)
  end
end

local function stop_node(s, reason)
  if s.node_stopping ~= nil then return end
  logger.error("Stopping the node: %s", tostring(reason))
  s.node_stopping = reason
  -- The token tells this stop's deadline from an earlier one's.
  s.node_stop_token = mb.make_ref()
  mb.send_after(NODE_STOP_LIMIT, mb.self(), tuple(NODE_STOP_TIMEOUT, s.node_stop_token))
  continue_node_stop(s)
end

-- A master has ended.
local function master_exited(s, pid, reason)
  local name = s.masters[pid]
  if name == nil then return end
  s.masters[pid] = nil
  local st = s.starting[name]
  if st and st.master == pid then
    -- Ended before it said how the start went.
    s.starting[name] = nil
    for _, from in ipairs(st.waiters) do gen_server.reply(from, fail(reason)) end
    return
  end
  local app = s.running[name]
  if not app or app.master ~= pid then return end
  s.running[name] = nil
  remove_value(s.order, name)
  local stopping = s.stopping[name]
  if stopping then
    s.stopping[name] = nil
    logger.notice("Application %s exited: stopped", name)
    for _, from in ipairs(stopping) do gen_server.reply(from, ok()) end
    return continue_node_stop(s)
  end
  logger.report("notice", format("Application %s exited", name), reason,
    {{"Type", app.type}})
  if app.type == "permanent" or (app.type == "transient" and reason ~= NORMAL) then
    stop_node(s, tuple(atom.application_terminated, name, reason))
  end
end

local function start_app(s, name, start_type, from)
  local spec = s.loaded[name]
  if spec == nil then return fail(tuple(atom.not_loaded, name)) end
  if s.running[name] then return fail(tuple(atom.already_started, name)) end
  if s.starting[name] then
    insert(s.starting[name].waiters, from)
    return nil
  end
  for _, dep in ipairs(spec.applications) do
    if not s.running[dep] then return fail(tuple(atom.not_started, dep)) end
  end
  if spec.mod == nil then
    s.running[name] = {type = start_type}
    insert(s.order, name)
    logger.progress_report(format("Application %s started", name), {{"Type", start_type}})
    return ok()
  end
  local pid = mb.spawn_link("moonbeam.application", "master", mb.self(), name,
    spec.mod, start_type)
  s.masters[pid] = name
  s.starting[name] = {master = pid, type = start_type, waiters = {from}}
  return nil
end

local function master_started(s, pid, started, reason)
  local name = s.masters[pid]
  local st = name and s.starting[name]
  if not st or st.master ~= pid then return end
  s.starting[name] = nil
  if started then
    s.running[name] = {type = st.type, master = pid, sup = reason}
    insert(s.order, name)
    logger.progress_report(format("Application %s started", name), {{"Type", st.type}})
    gen_server.reply(st.waiters[1], ok())
    for i = 2, #st.waiters do
      gen_server.reply(st.waiters[i], fail(tuple(atom.already_started, name)))
    end
  else
    s.masters[pid] = nil
    logger.report("notice", format("Application %s failed to start", name), reason,
      {{"Type", st.type}})
    for _, from in ipairs(st.waiters) do gen_server.reply(from, fail(reason)) end
  end
end

local function stop_app(s, name, from)
  local app = s.running[name]
  if app == nil then return fail(tuple(atom.not_started, name)) end
  if app.master == nil then
    s.running[name] = nil
    remove_value(s.order, name)
    logger.notice("Application %s exited: stopped", name)
    return ok()
  end
  if s.stopping[name] then
    insert(s.stopping[name], from)
  else
    s.stopping[name] = {from}
    mb.send(app.master, tuple(STOP))
  end
  return nil
end

local function app_list(s, names)
  local out = {}
  for _, name in ipairs(names) do
    local spec, run = s.loaded[name], s.running[name]
    out[#out + 1] = {name, spec.description, spec.version,
      name = name, description = spec.description, version = spec.version,
      type = run and run.type, sup = run and run.sup}
  end
  return out
end

local requests = {}

function requests.load(s, _, spec)
  local name = spec.name
  if s.loaded[name] then return fail(tuple(atom.already_loaded, name)) end
  s.loaded[name] = spec
  -- Values set with set_env before the load win over the spec's.
  local env = s.env[name] or {}
  for k, v in pairs(spec.env) do
    if env[k] == nil then env[k] = v end
  end
  s.env[name] = env
  return ok()
end

-- A new spec for a loaded application (an upgrade): it replaces the old
-- one and its environment, as OTP's change_application_data does (values
-- set with set_env are replaced too). Returns the differences of the
-- environment, and the callback module if the application runs.
function requests.change_spec(s, _, spec)
  local name = spec.name
  local old = s.loaded[name]
  if not old then return fail(tuple(atom.not_loaded, name)) end
  local before, env = s.env[name] or {}, {}
  for k, v in pairs(spec.env) do env[k] = v end
  local changed, added, removed = {}, {}, {}
  for k, v in pairs(env) do
    if before[k] == nil then added[k] = v
    elseif not gen.equal(before[k], v) then changed[k] = v end
  end
  for k in pairs(before) do
    if env[k] == nil then removed[#removed + 1] = k end
  end
  s.loaded[name], s.env[name] = spec, env
  return ok({changed = changed, new = added, removed = removed,
             mod = s.running[name] and spec.mod and spec.mod[1] or nil})
end

function requests.unload(s, _, name)
  if s.running[name] or s.starting[name] then return fail(tuple(atom.running, name)) end
  if not s.loaded[name] then return fail(tuple(atom.not_loaded, name)) end
  s.loaded[name], s.env[name] = nil, nil
  return ok()
end

function requests.info(s, _, name)
  local spec = s.loaded[name]
  return ok({loaded = spec ~= nil, running = s.running[name] ~= nil,
             applications = spec and spec.applications or {}})
end

function requests.start(s, from, name, start_type) return start_app(s, name, start_type, from) end

function requests.stop(s, from, name) return stop_app(s, name, from) end

function requests.get_env(s, _, name, key)
  local env = s.env[name]
  return ok({env and env[key]})
end

function requests.get_all_env(s, _, name)
  local out = {}
  for k, v in pairs(s.env[name] or {}) do out[k] = v end
  return ok(out)
end

function requests.set_env(s, _, name, key, value)
  local env = s.env[name] or {}
  s.env[name] = env
  env[key] = value
  return ok()
end

function requests.unset_env(s, _, name, key)
  if s.env[name] then s.env[name][key] = nil end
  return ok()
end

function requests.which(s)
  local names = {}
  for i = #s.order, 1, -1 do names[#names + 1] = s.order[i] end
  return ok(app_list(s, names))
end

function requests.loaded(s)
  local names = {}
  for name in pairs(s.loaded) do names[#names + 1] = name end
  table.sort(names)
  return ok(app_list(s, names))
end

function requests.set_hook(s, _, hook)
  s.hook = hook
  return ok()
end

-- The controller's callbacks, exported at the end of the file.
local controller = {}

function controller.init()
  mb.trap_exit(true)
  return "ok", {
    loaded = {},    -- name -> spec
    env = {},       -- name -> environment
    running = {},   -- name -> {type =, master =}
    order = {},     -- running names, in start order
    starting = {},  -- name -> {master =, type =, waiters = {from...}}
    stopping = {},  -- name -> {from...}
    masters = {},   -- master pid -> name
  }
end

function controller.handle_call(req, from, s)
  local r = requests[req[1]](s, from, unpack(req, 2, req.n))
  if r == nil then return "noreply", s end
  return "reply", r, s
end

function controller.handle_info(msg, s)
  if typeof(msg) == "tuple" then
    if msg[1] == EXIT then
      master_exited(s, msg[2], msg[3])
    elseif msg[1] == STARTED then
      master_started(s, msg[2], msg[3], msg[4])
    elseif msg[1] == NODE_STOP_TIMEOUT and msg[2] == s.node_stop_token then
      local reason = s.node_stopping
      s.node_stopping, s.node_stop_token = nil, nil
      logger.error("Stopping the node: the applications did not stop within %d ms",
        NODE_STOP_LIMIT)
      run_hook(s, reason)
    end
  end
  return "noreply", s
end

-- ---------------------------------------------------------------------------
-- Client side

-- The controller's pid, starting it if there is none.
local function controller_pid()
  for _ = 1, 3 do
    local pid = mb.whereis(CONTROLLER)
    if pid then return pid end
    local why
    pid, why = gen_server.start("moonbeam.application", nil, {name = CONTROLLER})
    if pid then return pid end
    if not (typeof(why) == "tuple" and why[1] == atom.already_started) then
      error("application: cannot start the application controller: " .. tostring(why), 0)
    end
  end
  error("application: cannot start the application controller", 0)
end

-- Send a request to the controller; unpack {true, v} / {false, reason}.
local function request(...)
  local r = gen_server.call(controller_pid(), {n = select("#", ...), ...}, math.huge)
  if r[1] then return r[2] end
  return nil, r[2]
end

local function info(name) return request("info", name) end

-- Load the application from its file unless it is loaded.
local function ensure_loaded(name)
  if info(name).loaded then return true end
  local spec, why = read_spec_file(name)
  if not spec then return nil, why end
  local done, err = request("load", spec)
  if done or (typeof(err) == "tuple" and err[1] == atom.already_loaded) then return true end
  return nil, err
end

--- Load an application: give the controller its spec, without starting
-- it. Loading sets its environment.
-- @param app a spec table, or the application's name: its spec is read
--   from the file `<name>.app.lua` on package.path, in the calling process
-- @return true, or nil and {already_loaded, Name}, {not_found, Name} or
--   {bad_app_file, Path, Why}; a spec table that is not well formed raises
function M.load(app)
  if type(app) == "table" then
    local spec, why = check_spec(app)
    if not spec then error("bad argument #1 to 'load' (" .. why .. ")", 2) end
    return request("load", spec)
  end
  local name = check_name(app, "load", 1)
  local spec, why = read_spec_file(name)
  if not spec then return nil, why end
  return request("load", spec)
end

--- Change a loaded application's spec in an upgrade: the new spec (its
-- version, description, dependencies and environment) replaces the old,
-- and if the application runs, its callback module's config_change(changed,
-- new, removed) is called in the calling process with the differences of
-- the environment (as OTP's release handler does).
-- @param app a spec table, or the application's name (its file
--   `<name>.app.lua` is read again)
-- @return true, or nil and {not_loaded, Name}, {not_found, Name},
--   {bad_app_file, Path, Why} or the error config_change raised
function M.change_spec(app)
  local spec, why
  if type(app) == "table" then
    spec, why = check_spec(app)
    if not spec then error("bad argument #1 to 'change_spec' (" .. why .. ")", 2) end
  else
    spec, why = read_spec_file(check_name(app, "change_spec", 1))
    if not spec then return nil, why end
  end
  local diff, err = request("change_spec", spec)
  if not diff then return nil, err end
  if diff.mod ~= nil then
    local mod = gen.callback_module(diff.mod)
    local done, cerr = callback(spec.name, mod, "config_change", diff.changed,
      diff.new, diff.removed)
    if not done then return nil, cerr end
  end
  return true
end

--- Unload a stopped application: forget its spec and environment.
-- @return true, or nil and {not_loaded, Name} or {running, Name}
function M.unload(name)
  return request("unload", check_name(name, "unload", 1))
end

--- Start an application (loading it first if needed). Its dependencies
-- must have been started.
-- @param name the application's name
-- @param start_type "temporary" (default), "transient" or "permanent"
-- @return true, or nil and the reason: {not_started, Dep},
--   {already_started, Name}, {not_found, Name}, or what its start returned
function M.start(name, start_type)
  name = check_name(name, "start", 1)
  start_type = check_type(start_type, "start", 2)
  local loaded, why = ensure_loaded(name)
  if not loaded then return nil, why end
  return request("start", name, start_type)
end

--- Start an application unless it is running.
-- @return true, or nil and the reason, as start
function M.ensure_started(name, start_type)
  name = check_name(name, "ensure_started", 1)
  start_type = check_type(start_type, "ensure_started", 2)
  local started, why = M.start(name, start_type)
  if started or (typeof(why) == "tuple" and why[1] == atom.already_started) then
    return true
  end
  return nil, why
end

--- Start an application and, first, every application it depends on,
-- directly or not, that is not running.
-- @param name the application's name
-- @param start_type for all of them (default "temporary")
-- @return the list of the names started, in start order; or nil and
--   {Name, Reason} for the first that failed (those started by this call
--   are stopped again)
function M.ensure_all_started(name, start_type)
  name = check_name(name, "ensure_all_started", 1)
  start_type = check_type(start_type, "ensure_all_started", 2)
  local started, visiting = {}, {}
  local failed -- the application that could not be started
  local function visit(app)
    if visiting[app] then
      failed = app
      return nil, tuple(atom.circular_dependencies, app)
    end
    local loaded, why = ensure_loaded(app)
    if not loaded then
      failed = app
      return nil, why
    end
    local i = info(app)
    if i.running then return true end
    visiting[app] = true
    for _, dep in ipairs(i.applications) do
      local done, err = visit(dep)
      if not done then return nil, err end
    end
    visiting[app] = nil
    local done, err = request("start", app, start_type)
    if done then
      started[#started + 1] = app
    elseif not (typeof(err) == "tuple" and err[1] == atom.already_started) then
      failed = app
      return nil, err
    end
    return true
  end
  local done, err = visit(name)
  if done then return started end
  for i = #started, 1, -1 do M.stop(started[i]) end
  return nil, tuple(failed, err)
end

--- Stop a running application: its top supervisor is shut down (and with
-- it the whole tree), then its module's stop(state) is called.
-- @return true, or nil and {not_started, Name}
function M.stop(name)
  return request("stop", check_name(name, "stop", 1))
end

--- A value of an application's environment.
-- @param app the application's name
-- @param key the key
-- @param default returned when the key has no value (or the application is
--   not loaded)
function M.get_env(app, key, default)
  app = check_name(app, "get_env", 1)
  if mb.whereis(CONTROLLER) == nil then return default end
  local v = request("get_env", app, key)[1]
  if v == nil then return default end
  return v
end

--- A copy of an application's whole environment (empty if none).
function M.get_all_env(app)
  return request("get_all_env", check_name(app, "get_all_env", 1))
end

--- Set a value in an application's environment (loaded or not: a value set
-- before the load wins over the spec's). nil removes the key.
-- @return true
function M.set_env(app, key, value)
  app = check_name(app, "set_env", 1)
  if key == nil then error("bad argument #2 to 'set_env' (key expected, got nil)", 2) end
  if value == nil then return request("unset_env", app, key) end
  return request("set_env", app, key, value)
end

--- The running applications, last started first: a list of
-- {name, description, version}, also readable as fields `name`,
-- `description`, `version`; the fields `type` (the start type) and `sup`
-- (the top supervisor's pid, nil for a library) say how each runs.
function M.which_applications() return request("which") end

--- The loaded applications (running or not), by name: a list of
-- {name, description, version} as which_applications.
function M.loaded_applications() return request("loaded") end

--- What stopping the node does by default, once the controller has logged
-- why and stopped the other applications: exit the operating system
-- process with status 1. Runs in the controller process.
-- @param reason {application_terminated, Name, Reason}
function M.on_node_stop(reason) -- luacheck: no unused args
  os.exit(1)
end

--- Replace what stopping the node does.
-- @param hook a function(reason), copied with its upvalues into the
--   controller process, where it runs; nil for the default
--   (application.on_node_stop)
-- @return true
function M.set_node_stop_hook(hook)
  if hook ~= nil and type(hook) ~= "function" then
    error("bad argument #1 to 'set_node_stop_hook' (function expected, got "
      .. typeof(hook) .. ")", 2)
  end
  return request("set_hook", hook)
end

-- ---------------------------------------------------------------------------
-- Internal entry points. They are in the module table because the processes
-- that run them are started by module name (a function copied into a new
-- process could not take this module's local C functions with it).

--- gen_server callback of the application controller; not for users.
M.init = controller.init

--- gen_server callback of the application controller; not for users.
M.handle_call = controller.handle_call

--- gen_server callback of the application controller; not for users.
M.handle_info = controller.handle_info

--- Entry point of an application master process; not for users.
M.master = master

return M
