--- GenServer: a process that keeps state and serves calls, casts and other
-- messages through callbacks, with OTP's gen_server semantics.
--
-- The callback module is a table of functions (or the name of a module
-- returning one). Client functions and the callbacks they trigger:
--
--   gen_server.start / start_link  ->  init(args)
--   gen_server.call                ->  handle_call(request, from, state)
--   gen_server.cast                ->  handle_cast(request, state)
--   any other message, timeouts    ->  handle_info(msg, state)
--   a {continue = x} return        ->  handle_continue(x, state)
--   gen_server.stop, a stop return,
--   the parent's exit when trapping ->  terminate(reason, state)
--
-- Callbacks return a tag (a string or an atom of the same name) and values:
--
--   init             "ok", state [, timeout | {continue = x}]
--                    "ignore"  |  "stop", reason
--   handle_call      "reply", reply, state [, timeout | {continue = x}]
--                    "noreply", state [, timeout | {continue = x}]
--                    "stop", reason, reply, state  |  "stop", reason, state
--   handle_cast,     "noreply", state [, timeout | {continue = x}]
--   handle_info,     "stop", reason, state
--   handle_continue
--
-- A timeout (milliseconds) makes handle_info receive the atom `timeout`
-- when no message comes in that time. Any other return stops the server
-- with reason {bad_return_value, Text}, Text naming the values returned
-- ("nothing" for none). handle_cast, handle_info,
-- handle_continue and terminate are optional.
--
-- Code change: a server whose module was given by name moves to a new
-- version of it (moonbeam.code.load) between two messages, before handling
-- the next one:
--
--   code_change      (old_vsn, state, extra)  ->  "ok", new_state
--                    (optional; without it the state is kept)
--
-- old_vsn is the version number the server held; extra is nil, or what
-- sys.change_code passes. A code_change that raises or returns anything
-- else leaves the server on the old version with its old state.
local mb = require "moonbeam"
local gen = require "moonbeam.gen"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, pcall, error, tostring = type, pcall, error, tostring
local traceback = debug.traceback

local M = {}

local GEN_CALL, GEN_CAST = gen.GEN_CALL, gen.GEN_CAST
local EXIT, STOP, SYSTEM = atom.EXIT, atom["$gen_stop"], atom.system
local NORMAL, SHUTDOWN, TIMEOUT = atom.normal, atom.shutdown, atom.timeout
local generation = require("moonbeam.codecache").generation

-- ---------------------------------------------------------------------------
-- Client side

--- Start a server, not linked to the caller.
-- @param module callback module (table or module name)
-- @param args passed to init
-- @param opts optional: name (register locally), timeout (for init, ms)
-- @return pid, or nil and the reason (init's stop reason, ignore,
--   {already_started, Pid})
function M.start(module, args, opts)
  return gen.start("moonbeam.gen_server", false, opts, module, args)
end

--- Start a server linked to the caller; returns once init has finished.
-- @see start
function M.start_link(module, args, opts)
  return gen.start("moonbeam.gen_server", true, opts, module, args)
end

--- Call a server and wait for its reply (default timeout 5000 ms).
-- Raises {noproc, ...} if the server is dead or unknown, {timeout, ...} if
-- no reply comes in time, {Reason, ...} if the server dies meanwhile.
function M.call(server, request, timeout)
  return gen.call(server, request, timeout, "gen_server")
end

--- Send a request without waiting; never fails.
function M.cast(server, request) gen.cast(server, request) end

--- Reply to a call later (after a "noreply" from handle_call).
-- @param from the from handed to handle_call
function M.reply(from, reply) gen.reply(from, reply) end

--- Stop a server: terminate(reason) runs, then the server exits; returns
-- when it has. Raises noproc if there is no such server, timeout if it does
-- not stop in time (default infinity).
function M.stop(server, reason, timeout)
  local pid = gen.whereis(server)
  if pid == nil then gen.fail(atom.noproc, "gen_server", server, "stop") end
  reason = reason == nil and NORMAL or reason
  local ref = mb.monitor(pid)
  mb.send(pid, tuple(STOP, reason))
  local msg, why = mb.receive(function(m) return m[2] == ref end, timeout,
    {[atom.DOWN] = true})
  if why == "timeout" then
    mb.demonitor(ref, {flush = true})
    gen.fail(TIMEOUT, "gen_server", server, "stop")
  end
  -- As proc_lib:stop: the server must have ended with the reason asked for.
  local got = msg[5]
  if got == atom.noproc then gen.fail(atom.noproc, "gen_server", server, "stop") end
  local want = type(reason) == "string" and atom[reason] or reason
  if not gen.equal(got, want) and not (type(reason) == "string" and got == reason) then
    gen.fail(got, "gen_server", server, "stop")
  end
  return true
end

-- ---------------------------------------------------------------------------
-- Server side

-- The reasons that end a server quietly; as strings, they are the atoms.
local QUIET = {normal = NORMAL, shutdown = SHUTDOWN}

local function is_normal(reason)
  return reason == NORMAL or reason == SHUTDOWN or
    (typeof(reason) == "tuple" and reason[1] == SHUTDOWN)
end

-- A readable report, as Elixir's: the error and its traceback apart.
local function report(name, reason, last, state)
  require("moonbeam.logger").crash_report(
    ("GenServer %s terminating"):format(name and tostring(name) or tostring(mb.self())),
    reason, {{"Last message", last}, {"State", require("moonbeam.inspect")(state)}})
end

-- End the server: run terminate (if any), reply to a call that asked for
-- the stop (after terminate, as OTP does), report an abnormal end, exit.
local function terminate(s, reason, last, from, reply)
  reason = QUIET[reason] or reason
  local cb = s.mod.terminate
  if cb then
    local ok, err = pcall(cb, reason, s.state)
    if not ok then reason = tuple(err, "in terminate") end
  end
  if from then gen.reply(from, reply) end
  if not is_normal(reason) then report(s.name, reason, last, s.state) end
  mb.exit(reason)
end

-- An error in a callback becomes the reason {Error, Traceback}, as a
-- process that raises gets.
local function on_error(e) return tuple(e, traceback(nil, 2)) end

-- Run a callback; an error in it ends the server.
local function run(s, last, fn, ...)
  local r = gen.pack(xpcall(fn, on_error, ...))
  if not r[1] then terminate(s, r[2], last) end
  return r
end

-- Apply the timeout-or-continue part of a return.
local function next_action(s, x)
  if x == nil then s.timeout = nil return true end
  if type(x) == "number" then s.timeout = x return true end
  if type(x) == "table" and x.continue ~= nil then
    s.timeout = nil
    s.continue = {x.continue}
    return true
  end
  return false
end

-- What a callback returned (r from run: r[2]... are its values), for the
-- reason {bad_return_value, Text}: "nothing", or the values as the shell
-- prints them.
local function returned(r)
  if r.n < 2 then return "nothing" end
  local inspect = require "moonbeam.inspect"
  local vals = {}
  for i = 2, r.n do vals[#vals + 1] = inspect(r[i]) end
  return table.concat(vals, ", ")
end

local function bad_return(s, r, last)
  terminate(s, tuple(atom.bad_return_value, returned(r)), last)
end

-- handle_cast / handle_info / handle_continue results: noreply or stop.
local function handle_noreply(s, r, last)
  local tag = gen.tag(r[2])
  if tag == "noreply" and r.n <= 4 then
    s.state = r[3]
    if next_action(s, r[4]) then return end
  elseif tag == "stop" and r.n == 4 then
    s.state = r[4]
    terminate(s, r[3], last)
  end
  bad_return(s, r, last)
end

local function handle_call(s, msg)
  local from, request = msg[2], msg[3]
  local r = run(s, msg, s.mod.handle_call, request, from, s.state)
  local tag = gen.tag(r[2])
  if tag == "reply" and r.n <= 5 then
    gen.reply(from, r[3])
    s.state = r[4]
    if next_action(s, r[5]) then return end
  elseif tag == "stop" and r.n == 5 then
    s.state = r[5]
    terminate(s, r[3], msg, from, r[4])
  elseif tag == "noreply" or tag == "stop" then
    return handle_noreply(s, r, msg)
  end
  bad_return(s, r, msg)
end

local function default_info(msg, state)
  mb.log("warning", "GenServer " .. tostring(mb.self()) ..
    " received an unexpected message: " .. tostring(msg))
  return "noreply", state
end

local system -- below, with the code change

local function dispatch(s, msg)
  local kind = typeof(msg) == "tuple" and msg[1] or nil
  if kind == GEN_CALL then
    return handle_call(s, msg)
  elseif kind == GEN_CAST then
    local cb = s.mod.handle_cast or function(_, st) return "noreply", st end
    return handle_noreply(s, run(s, msg, cb, msg[2], s.state), msg)
  elseif kind == STOP then
    return terminate(s, msg[2], msg)
  elseif kind == EXIT and msg[2] == s.parent then
    return terminate(s, msg[3], msg)
  elseif kind == SYSTEM then
    return system(s, msg)
  end
  local cb = s.mod.handle_info or default_info
  return handle_noreply(s, run(s, msg, cb, msg, s.state), msg)
end

-- Move the server to the current version of its module, if it holds an
-- older one: code_change migrates the state, or the old version stays.
-- `force` (from sys.change_code, with the old_vsn it passes) calls
-- code_change even when the module did not change, as OTP does.
-- Returns true, or nil and why the change failed.
local function upgrade(s, extra, force, vsn)
  s.gen = generation()
  local mod, old_vsn, restore
  if s.modname then
    mod, old_vsn, restore = require("moonbeam.code_swap").swap(s.modname)
  end
  local why = old_vsn -- the error, when mod is nil
  if mod == nil and why == nil and force then
    mod, old_vsn, restore = s.mod, vsn, function() end
  end
  if mod ~= nil then
    local cb = mod.code_change
    if cb == nil then return true end
    local r = gen.pack(pcall(cb, old_vsn, s.state, extra))
    if r[1] and gen.tag(r[2]) == "ok" and r.n <= 3 then
      s.state = r[3]
      return true
    end
    restore()
    why = r[1] and tuple(atom.bad_return_value, returned(r)) or r[2]
  end
  if why == nil then return true end
  mb.log("warning", ("GenServer %s: code change of %s failed, the old version "
    .. "stays: %s"):format(tostring(s.name or mb.self()),
    tostring(s.modname or "its module"), tostring(why)))
  return nil, why
end

-- System messages, as OTP's sys sends them: {system, From, Request}.
local function is_system(m) return typeof(m) == "tuple" and m[1] == SYSTEM end

-- Suspended: only system messages (and the parent's exit) are handled,
-- until resume; other messages wait in the mailbox.
local function suspended(s)
  while true do
    local msg = mb.receive(function(m)
      return is_system(m) or (typeof(m) == "tuple" and m[1] == EXIT and m[2] == s.parent)
    end)
    if msg[1] == EXIT then return terminate(s, msg[3], msg) end
    if gen.tag(msg[3]) == "resume" then return gen.reply(msg[2], atom.ok) end
    system(s, msg)
  end
end

function system(s, msg)
  local from, req = msg[2], msg[3]
  local tag = gen.tag(typeof(req) == "tuple" and req[1] or req)
  if tag == "suspend" then
    gen.reply(from, atom.ok)
    if not s.suspended then
      s.suspended = true
      suspended(s)
      s.suspended = nil
    end
  elseif tag == "resume" then
    gen.reply(from, atom.ok)
  elseif tag == "get_state" then
    gen.reply(from, s.state)
  elseif tag == "replace_state" then
    local ok, new = pcall(req[2], s.state)
    if ok then s.state = new end
    gen.reply(from, tuple(ok and atom.ok or atom.error, new))
  elseif tag == "change_code" then
    local ok, why = upgrade(s, req[4], true, req[3])
    gen.reply(from, ok and atom.ok or tuple(atom.error, why))
  else
    gen.reply(from, tuple(atom.error, atom.unknown_system_msg))
  end
end

local function loop(s)
  while true do
    if s.continue then
      local c = s.continue[1]
      s.continue = nil
      handle_noreply(s, run(s, c, s.mod.handle_continue, c, s.state), c)
    else
      local msg, why = mb.receive(s.timeout)
      if s.gen and s.gen ~= generation() then upgrade(s) end
      if why == "timeout" and s.timeout then
        s.timeout = nil
        local cb = s.mod.handle_info or default_info
        handle_noreply(s, run(s, TIMEOUT, cb, TIMEOUT, s.state), TIMEOUT)
      else
        dispatch(s, msg)
      end
    end
  end
end

--- Entry point of a new server process (see gen.start); not for users.
function M.init_it(starter, ref, parent, name, module, args)
  local ok, why = gen.register_name(name)
  if not ok then
    if parent then mb.unlink(parent) end
    gen.ack(starter, ref, false, why)
    return
  end
  local s = {name = name, parent = parent,
    modname = type(module) == "string" and module or nil}
  local r = gen.pack(xpcall(function()
    s.mod = gen.callback_module(module)
    s.gen = s.modname and generation()
    return s.mod.init(args)
  end, on_error))
  local tag = r[1] and gen.tag(r[2])
  if tag == "ok" and r.n <= 4 then
    s.state = r[3]
    if next_action(s, r[4]) then
      gen.ack(starter, ref, true)
      return loop(s)
    end
  end
  -- init failed: the starter hears why, and (as OTP 26 does) is not
  -- brought down by the exit that follows.
  local reason
  if not r[1] then
    reason = r[2]
  elseif tag == "ignore" and r.n == 2 then
    reason = atom.ignore
  elseif tag == "stop" and r.n == 3 then
    reason = r[3]
  else
    reason = tuple(atom.bad_return_value, returned(r))
  end
  if parent then mb.unlink(parent) end
  gen.ack(starter, ref, false, reason)
  if reason == atom.ignore then return end
  mb.exit(reason)
end

return M
