--- The plumbing every behaviour shares, as OTP's gen and proc_lib:
-- starting a process and waiting for its init, calls with a monitor, and
-- replies.
--
-- Message shapes are Erlang's, so that Erlang and Elixir processes can talk
-- to ours once nodes are connected:
--   call   {'$gen_call', {From, Tag}, Request}   reply {Tag, Reply}
--   cast   {'$gen_cast', Request}
-- Tag is the caller's monitor ref of the server; the reply is sent to that
-- ref as an alias (mb.send_alias), so a reply that comes after the caller
-- gave up is dropped and never pollutes its mailbox.
local mb = require "moonbeam"
local base = require "moonbeam.gen_base"

local atom, tuple, typeof, call = mb.atom, mb.tuple, mb.typeof, mb.call
local type, error = type, error

local M = {}

local GEN_CALL, GEN_CAST = atom["$gen_call"], atom["$gen_cast"]
local DOWN, ACK = atom.DOWN, atom["$gen_ack"]
M.GEN_CALL, M.GEN_CAST = GEN_CALL, GEN_CAST
-- The options of every call's demonitor (read, never kept or changed).
local FLUSH = {flush = true}
-- What a start waits for: the first elements its receive decodes (read,
-- never changed), and spawn_opt's options when there is no max_heap.
local START_LABELS = {[ACK] = true, [DOWN] = true}
local SPAWN_LINKED = {link = true, monitor = true}
local SPAWN_ALONE = {link = false, monitor = true}

-- What a behaviour's process needs (see moonbeam.gen_base): reply, ack,
-- register_name, take_name, callback_module, tag and pack.
for k, f in pairs(base) do M[k] = f end

--- The address of a server: a pid, a registered name (string or atom),
-- {Name, Node} for a process registered on another node (returned as
-- it is: sends and monitors go by name), {"global", Name} for a name
-- registered with moonbeam.global, or {"via", Module, Name} for a name
-- that require(Module).whereis_name(Name) looks up.
-- @return the pid or {Name, Node}, or nil if no process has the name
function M.whereis(server)
  local t = typeof(server)
  if t == "pid" then return server end
  if t == "string" or t == "atom" then return mb.whereis(server) end
  local kind = (t == "table" or t == "tuple") and base.name_kind(server)
  if kind == "global" then return require("moonbeam.global").whereis_name(server[2]) end
  if kind == "via" then return require(tostring(server[2])).whereis_name(server[3]) end
  if (t == "table" or t == "tuple") and server[1] ~= nil and server[2] ~= nil then
    if tostring(server[2]) == tostring(mb.node()) then return mb.whereis(server[1]) end
    return server
  end
  error("bad server (pid, registered name or {Name, Node} expected, got " .. t .. ")", 3)
end

--- Raise a misuse of an API, as luaL_argerror does:
-- "bad argument #n to 'fname' (msg)". The one way the library words it.
-- @param level the level the caller would give error (1: the caller of
--   the function that calls argerror's caller is blamed at 2, and so on)
function M.argerror(n, fname, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), (level or 1) + 1)
end

--- Stop a process as a parent does: the exit signal shutdown, then kill
-- after `grace` ms if it has not ended ("brutal_kill": kill at once;
-- "infinity": wait as long as it takes). `ended(timeout)` waits up to
-- timeout ms (nil: no limit) for the caller's sign that the process ended
-- (its 'DOWN' or its 'EXIT') and returns it, or nil.
-- @return what `ended` returned last, and true if the process was killed
function M.shutdown(pid, grace, ended)
  if grace == "brutal_kill" then
    mb.exit(pid, "kill")
    return ended(nil), true
  end
  mb.exit(pid, "shutdown")
  local r = ended(grace ~= "infinity" and grace or nil)
  if r ~= nil then return r, false end
  mb.exit(pid, "kill")
  return ended(nil), true
end

--- Raise a call's failure in the caller, as OTP exits the caller with
-- {Reason, {Module, call, [Server, Request]}}.
function M.fail(reason, module, server, request)
  error(tuple(reason, tuple(atom[module], atom.call, tuple(server, request))), 0)
end

-- The Lua path of a call, for what mb.call leaves to it: names, servers
-- on other nodes, a traced caller.
local function call_lua(server, request, timeout, module, label)
  local pid, me = M.whereis(server), mb.self()
  if pid == nil then M.fail(atom.noproc, module, server, request) end
  if pid == me then M.fail(atom.calling_self, module, server, request) end
  if pid ~= server then
    local ok, r = call(pid, label, request, timeout)
    if ok then return r end
    if ok == false then M.fail(r, module, server, request) end
  end
  local ref = mb.monitor(pid)
  local sent, err = pcall(mb.send, pid, tuple(label, tuple(me, ref), request))
  if not sent then -- an unsendable request: no monitor left behind
    mb.demonitor(ref, FLUSH)
    error(err, 2)
  end
  local msg, why = mb.receive(function(m)
    return m[1] == ref or m[2] == ref
  end, timeout, {[ref] = true, [DOWN] = true})
  if why == "timeout" then
    mb.demonitor(ref, FLUSH)
    M.fail(atom.timeout, module, server, request)
  end
  if msg[1] == DOWN then M.fail(msg[5], module, server, request) end
  mb.demonitor(ref, FLUSH)
  return msg[2]
end

--- Call a server and wait for its reply.
-- @param server pid or registered name
-- @param request any sendable value
-- @param timeout milliseconds (default 5000), or math.huge
-- @param module name used in the failure reason (default "gen_server")
-- @param label the message's tag (default $gen_call; sys uses system), as
--   OTP's gen:call/4
-- @return the reply; raises {noproc | timeout | calling_self | Reason, {...}}
--   on failure
function M.call(server, request, timeout, module, label)
  timeout, label = timeout or 5000, label or GEN_CALL
  -- A server of this node, by pid: all in C (mb.call).
  local ok, r = call(server, label, request, timeout)
  if ok then return r end
  module = module or "gen_server"
  if ok == nil then return call_lua(server, request, timeout, module, label) end
  M.fail(r, module, server, request)
end

--- Send a cast: {'$gen_cast', Request}, to a pid or name; never fails.
function M.cast(server, request)
  local ok, to = pcall(M.whereis, server)
  if ok and to then pcall(mb.send, to, tuple(GEN_CAST, request)) end
end

-- ---------------------------------------------------------------------------
-- Starting

--- Start a process running `behaviour.init_it(starter, ref, parent, ...)`
-- and wait until it acknowledges (gen.ack) that its init is done.
-- @param behaviour module name of the behaviour (e.g. "moonbeam.pg"), or
--   its init_it function itself, spawned with its code (a module the new
--   process then need not load)
-- @param link whether to link the new process to the caller, or "monitor"
--   to keep the monitor of the start (OTP's start_monitor)
-- @param opts table: name (register under it), timeout (ms, default
--   infinity), max_heap
-- @return pid (and the monitor's ref for "monitor"), or nil and the reason
function M.start(behaviour, link, opts, ...)
  local name, timeout, max_heap
  if opts then name, timeout, max_heap = opts.name, opts.timeout, opts.max_heap end
  local keep_monitor = link == "monitor"
  link = link == true
  local me = mb.self()
  local ref = mb.make_ref()
  local spawn_opts = max_heap and {link = link, monitor = true, max_heap = max_heap}
    or link and SPAWN_LINKED or SPAWN_ALONE
  local pid, mon
  if type(behaviour) == "function" then
    pid, mon = mb.spawn_opt(spawn_opts, behaviour, me, ref,
      link and me or nil, name, ...)
  else
    pid, mon = mb.spawn_opt(spawn_opts, behaviour, "init_it", me, ref,
      link and me or nil, name, ...)
  end
  local msg, why = mb.receive(function(m)
    return m[2] == ref or m[2] == mon
  end, timeout, START_LABELS)
  if why == "timeout" then
    if link then mb.unlink(pid) end
    mb.exit(pid, "kill")
    mb.demonitor(mon, FLUSH)
    return nil, atom.timeout
  end
  if msg[1] ~= DOWN and msg[3] == true then
    if keep_monitor then return pid, mon end
    mb.demonitor(mon, FLUSH)
    return pid
  end
  mb.demonitor(mon, FLUSH)
  if msg[1] == DOWN then return nil, msg[5] end
  return nil, msg[4]
end

--- Deep equality of two values (tables compared by contents).
function M.equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in pairs(a) do if not M.equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

return M
