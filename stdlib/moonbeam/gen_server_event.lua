--- The Lua side of a GenServer's process (see moonbeam.gen_server_loop):
-- what mb.gen_init and mb.gen_serve, in C, leave to Lua.  A server loads
-- it when that happens and drops it again after, with the modules it
-- loads: ending the server (terminate, the crash report, a bad return)
-- loads moonbeam.gen_server_stop, a code change or a system message
-- moonbeam.gen_server_sys.  An idle server keeps none of them.
--
-- mb.gen_init starts a server with no name or a free local one whose init
-- returns "ok", State [, Timeout | {continue = x}]; init_it below does
-- the rest of starts: global and via names, a name taken, and whatever
-- else init did.  mb.gen_serve waits and dispatches: calls, casts, infos
-- and timeouts whose callbacks return "reply" or "noreply" never leave
-- it.  What it does not handle (system messages, $gen_stop, the parent's
-- 'EXIT', {continue = x}, stop, a bad return, an error in a callback, a
-- new version of the module) it hands to M.event below.  The callback
-- contract is at the top of moonbeam.gen_server.
local mb = require "moonbeam"
local gen = require "moonbeam.gen_base"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, xpcall, require = type, xpcall, require

local M = {}

-- atom(name) rather than atom[name]: the table form keeps each atom in
-- mb.atom, where the server would keep it after this module is dropped.
local GEN_CALL, GEN_CAST = atom("$gen_call"), atom("$gen_cast")
local EXIT, STOP, SYSTEM = atom("EXIT"), atom("$gen_stop"), atom("system")
local TIMEOUT, HIBERNATE = atom("timeout"), atom("hibernate")
local generation = require("moonbeam.codecache").generation

-- The rare paths, loaded when they happen (moonbeam.gen_server_stop).
local function stop_paths() return require "moonbeam.gen_server_stop" end

-- The code change and system messages (moonbeam.gen_server_sys), loaded
-- the same way.
local function sys_paths() return require "moonbeam.gen_server_sys" end

local function terminate(s, reason, last, from, reply)
  return stop_paths().terminate(s, reason, last, from, reply)
end

local function bad_return(s, r, last)
  return stop_paths().bad_return(s, r, last)
end

local function default_info(msg, state)
  return stop_paths().default_info(msg, state)
end

-- An error in a callback becomes the reason {Error, Traceback}, as a
-- process that raises gets.  The debug library is looked up here, when a
-- callback fails, so that a server that never fails does not carry it.
local function on_error(e) return tuple(e, debug.traceback(nil, 2)) end

-- Run a callback; an error in it ends the server.
local function run(s, last, fn, ...)
  local r = gen.pack(xpcall(fn, on_error, ...))
  if not r[1] then terminate(s, r[2], last) end
  return r
end

-- Apply the timeout-or-continue part of a return.  "hibernate" is OTP's
-- garbage collection before the wait: here a full collection of the
-- server's Lua state, then a wait with no timeout.
local function next_action(s, x)
  if x == nil then s.timeout = nil return true end
  if type(x) == "number" then s.timeout = x return true end
  if x == "hibernate" or x == HIBERNATE then
    s.timeout = nil
    collectgarbage("collect")
    return true
  end
  if type(x) == "table" and x.continue ~= nil then
    s.timeout = nil
    s.continue = {x.continue}
    return true
  end
  return false
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

-- What handle_call returned (r, from run), for the call msg.
local function call_result(s, msg, r)
  local from = msg[2]
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

local function handle_call(s, msg)
  return call_result(s, msg, run(s, msg, s.mod.handle_call, msg[3], msg[2], s.state))
end

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
    return sys_paths().system(s, msg)
  end
  local cb = s.mod.handle_info or default_info
  return handle_noreply(s, run(s, msg, cb, msg, s.state), msg)
end

-- A message or receive's timeout (why), as mb.receive gave them.
local function message(s, msg, why)
  if s.gen and s.gen ~= generation() then sys_paths().upgrade(s) end
  if why == "timeout" and s.timeout then
    s.timeout = nil
    local cb = s.mod.handle_info or default_info
    return handle_noreply(s, run(s, TIMEOUT, cb, TIMEOUT, s.state), TIMEOUT)
  end
  return dispatch(s, msg)
end

--- What mb.gen_serve hands to Lua (see its comment in lua/lgenserve.c);
-- not for users.
-- @param kind "message" (a: the message, b: why), "continue", "call" (a:
--   the call, b: handle_call's outcome as run gives it) or "noreply" (a:
--   the message, b: the outcome of handle_cast or handle_info)
function M.event(s, kind, a, b)
  if kind == "message" then return message(s, a, b) end
  if kind == "continue" then
    local c = s.continue[1]
    s.continue = nil
    return handle_noreply(s, run(s, c, s.mod.handle_continue, c, s.state), c)
  end
  if not b[1] then terminate(s, b[2], a) end
  if kind == "call" then return call_result(s, a, b) end
  return handle_noreply(s, b, a)
end

--- The server table of a process that becomes a server
-- (gen_server.enter_loop), its action applied; not for users.
-- @return s, or nil and what is wrong with the action
function M.enter(module, name, state, action)
  local s = {name = name, state = state,
    modname = type(module) == "string" and module or nil}
  s.mod = gen.callback_module(module)
  s.gen = s.modname and generation()
  if not next_action(s, action) then return nil, action end
  return s
end

--- The start of a server that mb.gen_init left to Lua (see
-- moonbeam.gen_server_loop); not for users.  Without s, the whole start:
-- the name, then init.  With s and r (init ran; r is its outcome, as
-- gen.pack(xpcall(...)) gives it), what follows init.
-- @return s when the server is started and acknowledged, for the loop;
--   nothing when it ends instead (ignore: at once, with reason normal)
function M.init_it(starter, ref, parent, name, module, args, s, r)
  if s == nil then
    if not gen.take_name(starter, ref, parent, name) then return end
    s = {name = name, parent = parent,
      modname = type(module) == "string" and module or nil}
    r = gen.pack(xpcall(function()
      s.mod = gen.callback_module(module)
      s.gen = s.modname and generation()
      return s.mod.init(args)
    end, on_error))
  end
  local tag = r[1] and gen.tag(r[2])
  if tag == "ok" and r.n <= 4 then
    s.state = r[3]
    if next_action(s, r[4]) then
      gen.ack(starter, ref, true)
      return s
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
    reason = tuple(atom.bad_return_value, stop_paths().returned(r))
  end
  if parent then mb.unlink(parent) end
  gen.ack(starter, ref, false, reason)
  if reason == atom.ignore then return end
  mb.exit(reason)
end

return M
