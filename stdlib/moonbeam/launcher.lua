--- The process side of the launcher (lua/moonbeam.c): what the first
-- process of a node runs for `moonbeam start`, `eval` and `shell`, and what
-- stops the node on SIGTERM or SIGINT. Each entry point returns the status
-- the launcher exits with.
--
--   moonbeam start app.lua   ->  start(file, start_type, env)
--   moonbeam eval CODE       ->  eval(code, env, args)
--   moonbeam shell [app.lua] ->  shell(file, start_type, env)
--   moonbeam reload NODE m.. ->  reload(node, env, modules)
--   moonbeam ping|pid|stop NODE -> ping(node), pid(node), stop(node)
--   moonbeam rpc NODE CODE   ->  rpc(node, env, {CODE})
--   SIGTERM, SIGINT          ->  stop_node()
--   settings' env, for run   ->  set_env(env)
--   --connect, --hosts, the
--   env's moonbeam.topologies ->  join(nodes, hosts_file, topologies)
--
-- `env` is the application environment of the settings, {app = {key =
-- value}}: the config file's `env` with the --env flags over it. It is set
-- before anything is loaded, so it wins over the specs' env.
local mb = require "moonbeam"
local application = require "moonbeam.application"
local inspect = require "moonbeam.inspect"

local atom, typeof = mb.atom, mb.typeof
local type, pairs, ipairs, next, tostring, select = type, pairs, ipairs, next, tostring, select
local format, concat, unpack = string.format, table.concat, table.unpack

local M = {}

local NODE_STOP = atom["$node_stop"]
local DOWN = atom.DOWN

-- How often the shell may end abnormally within a minute before the
-- launcher gives up on it.
local SHELL_RESTARTS = 10

local function say(fmt, ...)
  io.stderr:write("moonbeam: ", format(fmt, ...), "\n")
  io.stderr:flush()
end

-- ---------------------------------------------------------------------------
-- Applications

--- Set the application environment of the settings.
-- @param env {app = {key = value}}, or nil
-- @return 0
function M.set_env(env)
  for app, settings in pairs(env or {}) do
    for key, value in pairs(settings) do application.set_env(app, key, value) end
  end
  return 0
end

-- The text of an error raised inside a call: an argument error's reason.
local function error_text(e)
  e = tostring(e)
  return e:match("^bad argument #%d+ to '[^']+' %((.*)%)$") or e
end

-- Load the application of an app file: a spec table, or a name to find
-- on the path. Returns the application's name, or nil and a message.
local function load_app_file(file)
  local chunk, err = loadfile(file, "t", {})
  if not chunk then return nil, err end
  local ok, spec = pcall(chunk)
  if not ok then return nil, tostring(spec) end
  if type(spec) == "string" or typeof(spec) == "atom" then return tostring(spec) end
  if type(spec) ~= "table" then
    return nil, format("%s must return an application spec (a table) or an "
      .. "application's name, not %s", file, typeof(spec))
  end
  local done, loaded, why = pcall(application.load, spec)
  if not done then return nil, format("%s: %s", file, error_text(loaded)) end
  if not loaded and not (typeof(why) == "tuple" and why[1] == atom.already_loaded) then
    return nil, format("%s: %s", file, inspect(why))
  end
  return tostring(spec.name)
end

-- A sentence for the reason ensure_all_started gave: {app, reason}.
local function start_failure(reason)
  local app, why = reason[1], reason[2]
  local kind = typeof(why) == "tuple" and why[1]
  if kind == atom.not_found then
    return format("application %s not found (no %s.app.lua on the path)", app, app)
  elseif kind == atom.bad_app_file then
    return format("%s: %s", why[2], why[3])
  elseif kind == atom.circular_dependencies then
    return format("application %s is in a dependency cycle", app)
  end
  -- A start that raised: {error, traceback}; the log has the traceback.
  if typeof(why) == "tuple" and type(why[2]) == "string" and why[2]:find("stack traceback", 1, true) then
    why = why[1]
  end
  return format("application %s did not start: %s", app,
    type(why) == "string" and why or inspect(why))
end

-- Load and start the application of an app file, with its dependencies;
-- a permanent application's death makes the node stop hook send this
-- process {"$node_stop", reason}. Returns true, or nil (the error said).
local function boot(file, start_type, env)
  M.set_env(env)
  local name, err = load_app_file(file)
  if not name then
    say("%s", err)
    return nil
  end
  if application.get_env("moonbeam_dashboard", "enabled") then
    -- Before the application, so that the page shows it starting; its
    -- /health waits for the application if it is permanent.
    if start_type == "permanent" then application.set_env("moonbeam_dashboard", "main", name) end
    local dashboard = require "moonbeam.dashboard"
    local ok, why = dashboard.start_dashboard()
    if not ok then
      say("cannot start the dashboard: %s", start_failure({dashboard.APP, why}))
      return nil
    end
  end
  local me = mb.self()
  application.set_node_stop_hook(function(reason)
    local mb = require "moonbeam"
    mb.send(me, mb.tuple(mb.atom["$node_stop"], reason))
  end)
  local started, why = application.ensure_all_started(name, start_type)
  if not started then
    say("cannot start %s: %s", name, start_failure(why))
    return nil
  end
  return true
end

local function is_node_stop(m) return typeof(m) == "tuple" and m[1] == NODE_STOP end

local function node_stopped(m)
  local reason = m[2]
  if typeof(reason) == "tuple" and reason[1] == atom.application_terminated then
    say("the node stopped: application %s ended (%s)", tostring(reason[2]),
      inspect(reason[3], 2))
  else
    say("the node stopped: %s", inspect(reason, 2))
  end
  return 1
end

--- moonbeam start: start the application of `file` and its dependencies,
-- then wait: the node runs until a signal stops it (the launcher then
-- calls stop_node and exits 0) or a permanent application dies.
-- @return 1 when the application could not start or the node stopped
function M.start(file, start_type, env)
  if not boot(file, start_type, env) then return 1 end
  return node_stopped(mb.receive(is_node_stop))
end

--- Stop every running application, last started first: each master shuts
-- its supervision tree down. What SIGTERM and SIGINT run.
-- @return 0
function M.stop_node()
  if mb.whereis("application_controller") == nil then return 0 end
  for _, app in ipairs(application.which_applications()) do
    application.stop(app.name)
  end
  return 0
end

-- ---------------------------------------------------------------------------
-- Joining a cluster at boot

--- --connect and --hosts (or the config's connect and hosts), and the
-- topologies of the `moonbeam` application's `topologies` in the settings'
-- env: start the topologies that connect this node, not linked to this
-- process, which ends at once. The host file becomes the `moonbeam`
-- application's `hosts_file`, which net_adm.host_file reads.
-- @param nodes a list of node names (may be empty)
-- @param hosts_file a host file, or nil
-- @param configured {name = {strategy =, config =}}, or nil
-- @return 0, or 1 when the topologies could not start (the error said)
function M.join(nodes, hosts_file, configured)
  local topologies = {}
  if configured ~= nil and type(configured) ~= "table" then
    say("the moonbeam application's topologies must be a table {name = "
      .. "{strategy = ..., config = {...}}}, not %s", typeof(configured))
    configured = nil
  end
  for name, spec in pairs(configured or {}) do topologies[name] = spec end
  if nodes and #nodes > 0 then
    topologies.connect = {strategy = "epmd", config = {hosts = nodes}}
  end
  if hosts_file then
    application.set_env("moonbeam", "hosts_file", hosts_file)
    local hosts, why = require("moonbeam.net_adm").host_file(hosts_file)
    if not hosts then say("--hosts: %s", why) end
    -- Read again every 10 s, so that nodes started later are found.
    topologies.hosts = {strategy = "erlang_hosts",
                        config = {hosts_file = hosts_file, polling_interval = 10000}}
  end
  local pid, why = require("moonbeam.cluster").start(topologies, {name = "moonbeam_cluster"})
  if not pid then
    say("cannot start the cluster topologies: %s", inspect(why))
    return 1
  end
  return 0
end

-- ---------------------------------------------------------------------------
-- eval

local function pack(...) return {n = select("#", ...), ...} end

--- moonbeam eval: run `code`, an expression or statements, with `mb`
-- bound and the arguments in `...` and `arg`; print what it returns.
-- @return 0, or 1 if it does not compile or raises
function M.eval(code, env, args)
  if next(env or {}) then M.set_env(env) end
  args = args or {n = 0}
  -- This process is the code's, as a script's is: it gets `arg` too.
  _G.arg = {n = args.n, [0] = "eval", unpack(args, 1, args.n)}
  -- `mb` is bound on the code's first line, so that error positions are
  -- the code's own.
  local prefix = "local mb = require 'moonbeam'; "
  local chunk = load(prefix .. "return " .. code, "=eval", "t")
  local err
  if not chunk then chunk, err = load(prefix .. code, "=eval", "t") end
  if not chunk then
    say("%s", err)
    return 1
  end
  local r = pack(xpcall(chunk, function(e)
    return type(e) == "string" and e or inspect(e)
  end, unpack(args, 1, args.n)))
  if not r[1] then
    say("%s", r[2])
    return 1
  end
  if r.n > 1 then
    local out = {}
    for i = 2, r.n do out[#out + 1] = inspect(r[i]) end
    io.stdout:write(concat(out, ", "), "\n")
    io.stdout:flush()
  end
  return 0
end

-- ---------------------------------------------------------------------------
-- reload

--- moonbeam reload: load modules again on `node` and the nodes it is
-- connected to (code.reload_cluster, run there), print a line per node and
-- module.
-- @return 0 if every module loaded everywhere, 1 otherwise, 2 for none
function M.reload(node, _, modules)
  if modules == nil or modules.n == 0 then
    say("reload: no module named (see moonbeam reload --help)")
    return 2
  end
  if not require("moonbeam.dist").connect(node, 10000) then
    say("cannot connect to %s", node)
    return 1
  end
  local names = {unpack(modules, 1, modules.n)}
  local ok, report = pcall(require("moonbeam.rpc").call, node, "moonbeam.code",
    "reload_cluster", {names}, 120000)
  if not ok then
    say("reload on %s failed: %s", node, inspect(report))
    return 1
  end
  io.stdout:write(require("moonbeam.code").report_text(report, names))
  io.stdout:flush()
  return report.ok and 0 or 1
end

-- ---------------------------------------------------------------------------
-- Commands for a running node: ping, stop, rpc, pid

-- How long an operator command waits for the node to answer, in ms.
local ANSWER_TIME = 30000

local function connect(node)
  if require("moonbeam.dist").connect(node, 10000) then return true end
  say("cannot connect to %s", node)
  return false
end

local function remote_call(node, module, fun, args)
  local ok, r = pcall(require("moonbeam.rpc").call, node, module, fun, args or {},
    ANSWER_TIME)
  if ok then return true, r end
  -- {exception, Class, Reason} from the node, or {erpc, Reason}; a Lua
  -- error's reason is {lua_error, "message\nstack traceback..."}.
  if typeof(r) == "tuple" and r[1] == atom.exception then r = r[3] end
  if typeof(r) == "tuple" and r[1] == atom.lua_error and type(r[2]) == "string" then
    r = r[2]:match("^(.-)\nstack traceback") or r[2]
  end
  return false, type(r) == "string" and r or inspect(r, 3)
end

--- moonbeam ping: whether `node` answers, as net_adm:ping/1; prints pong
-- or pang.
-- @return 0 for pong, 1 for pang
function M.ping(node)
  local answer = require("moonbeam.dist").ping(node, 10000)
  io.stdout:write(answer, "\n")
  io.stdout:flush()
  return answer == "pong" and 0 or 1
end

--- moonbeam pid: the operating system pid of the launcher running `node`.
-- @return 0, or 1 if the node cannot be reached
function M.pid(node)
  if not connect(node) then return 1 end
  local ok, r = remote_call(node, "moonbeam.launcher", "os_pid")
  if not ok then
    say("pid on %s failed: %s", node, r)
    return 1
  end
  io.stdout:write(tostring(r), "\n")
  io.stdout:flush()
  return 0
end

--- moonbeam rpc: evaluate `code` (an expression or statements, as eval
-- takes them) on `node`, and print what it returns, as eval does.
-- @return 0, or 1 if the node cannot be reached or the code fails there
function M.rpc(node, _, args)
  local code = args and args[1]
  if not connect(node) then return 1 end
  local ok, r = remote_call(node, "moonbeam.launcher", "eval_text", {code})
  if not ok then
    say("rpc on %s: %s", node, r)
    return 1
  end
  if r ~= "" then io.stdout:write(r, "\n") end
  io.stdout:flush()
  return 0
end

--- moonbeam stop: stop `node` as SIGTERM does (its applications stop, last
-- started first, and its launcher exits 0), and wait until it is down.
-- @return 0 once it is down, 1 if it cannot be reached or does not go
function M.stop(node)
  if not connect(node) then return 1 end
  local nodeatom = mb.atom(node)
  mb.monitor_node(nodeatom, true)
  -- The node may go before it answers: the wait below tells.
  pcall(require("moonbeam.rpc").call, node, "moonbeam.launcher", "terminate", {},
    ANSWER_TIME)
  local down = mb.receive(function(m)
    return typeof(m) == "tuple" and m[1] == atom.nodedown and m[2] == nodeatom
  end, 120000)
  if down == nil then
    say("%s did not stop within 120 s", node)
    return 1
  end
  return 0
end

--- The operating system pid of this node's launcher (moonbeam pid).
function M.os_pid() return require("moonbeam.launcher_os").pid() end

--- Stop this node as SIGTERM does (moonbeam stop): the signal is raised
-- in the launcher, which stops the applications and exits 0.
function M.terminate()
  require("moonbeam.launcher_os").terminate()
  return true
end

--- Evaluate `code` as eval does, here, and give what it returns as the
-- shell prints it ("" for nothing); raises the code's error (moonbeam rpc).
function M.eval_text(code)
  if type(code) ~= "string" then error("code expected, got " .. typeof(code), 0) end
  local prefix = "local mb = require 'moonbeam'; "
  local chunk = load(prefix .. "return " .. code, "=rpc", "t")
  local err
  if not chunk then chunk, err = load(prefix .. code, "=rpc", "t") end
  if not chunk then error(err, 0) end
  local r = pack(xpcall(chunk, function(e)
    return type(e) == "string" and e or inspect(e)
  end))
  if not r[1] then error(r[2], 0) end
  local out = {}
  for i = 2, r.n do out[#out + 1] = inspect(r[i]) end
  return concat(out, ", ")
end

-- ---------------------------------------------------------------------------
-- shell

-- An exit reason, short: a crash's error without its traceback (the crash
-- report has it).
local function reason_text(reason)
  if typeof(reason) == "tuple" and reason.n == 2 and type(reason[2]) == "string"
      and reason[2]:find("^stack traceback") then
    reason = reason[1]
    if type(reason) == "string" then return reason end
  end
  return inspect(reason, 3)
end

local KEEPER, INTERRUPT = "$shell_keeper", atom["$shell_interrupt"]

--- Ctrl-C while the shell evaluates (the launcher calls it): ask the
-- process that keeps the shell to kill it and start a new one.
function M.interrupt_shell()
  local keeper = mb.whereis(KEEPER)
  if keeper then mb.send(keeper, mb.tuple(INTERRUPT)) end
  return 0
end

--- moonbeam shell: start the application of `file` if there is one, then
-- run the shell (moonbeam.shell.run) in a process of its own, registered
-- as "shell", and start a new one when it dies (its bindings are lost),
-- or when Ctrl-C interrupts what it evaluates (interrupt_shell). When the shell ends
-- (q() or the end of input), stop the node as stop_node does.
-- @return 0 when the shell ended, 1 when the node stopped or the
--   application could not start
function M.shell(file, start_type, env, remsh)
  if remsh ~= nil and not require("moonbeam.dist").connect(remsh, 10000) then
    io.stderr:write("moonbeam: cannot connect to ", remsh, "\n")
    return 1
  end
  if file ~= nil then
    if not boot(file, start_type, env) then return 1 end
  elseif next(env or {}) then
    M.set_env(env)
  end
  local ends = {}
  local banner = true
  pcall(mb.register, KEEPER, mb.self())
  while true do
    local pid, ref = mb.spawn_monitor("moonbeam.shell", "run",
      {banner = banner, remote = remsh, name = "shell"})
    banner = false
    local function down(x) return typeof(x) == "tuple" and x[1] == DOWN and x[2] == ref end
    local m = mb.receive(function(x)
      return is_node_stop(x) or down(x) or (typeof(x) == "tuple" and x[1] == INTERRUPT)
    end)
    if is_node_stop(m) then
      mb.exit(pid, "kill")
      return node_stopped(m)
    end
    local interrupted = m[1] == INTERRUPT
    if interrupted then
      -- Killed, so that a loop or a receive stops at once, and a remote
      -- session linked to it goes too.
      mb.exit(pid, "kill")
      m = mb.receive(down)
    end
    local reason = m[5]
    if reason == atom.normal then
      M.stop_node()
      return 0
    end
    if interrupted then
      io.stdout:write("** (interrupted) a new shell process starts (bindings are lost)\n")
      io.stdout:flush()
    else
      local now = mb.monotonic_time()
      ends[#ends + 1] = now
      while now - ends[1] > 60e9 do table.remove(ends, 1) end
      io.stdout:write("** (exit) ", reason_text(reason), "\n",
        "** the shell process ", tostring(pid), " ended; a new one starts "
        .. "(bindings are lost)\n")
      io.stdout:flush()
      if #ends >= SHELL_RESTARTS then
        say("the shell ended %d times within a minute; giving up", #ends)
        return 1
      end
    end
  end
end

return M
