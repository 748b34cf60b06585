--- System messages to GenServers and supervisors, as OTP's `sys` module:
-- an upgrade suspends a set of processes in order, changes their code, and
-- resumes them.
--
--   sys.suspend(server)                  the server handles only system
--                                        messages until resume
--   sys.resume(server)
--   sys.get_state(server)                its state (a supervisor's own)
--   sys.get_messages(server, [n])        the first n (10) messages waiting
--                                        in its mailbox, as copies
--   sys.replace_state(server, fn)        state = fn(state); the new state
--   sys.change_code(server, module, old_vsn, extra)
--                                        the server moves to the current
--                                        version of its module and calls
--                                        code_change(old_vsn, state, extra)
--
-- Each is a call with the label `system` ({system, From, Request}), so a
-- server handles them in the order they come, between two messages.
local mb = require "moonbeam"
local gen = require "moonbeam.gen"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local error = error

local M = {}

local SYSTEM = atom.system

local function call(server, request, timeout)
  return gen.call(server, request, timeout or 5000, "sys", SYSTEM)
end

--- Suspend a server: until resume it handles only system messages, and
-- other messages wait in its mailbox.
-- @return true; raises as gen_server.call does
function M.suspend(server, timeout)
  return call(server, atom.suspend, timeout) == atom.ok
end

--- Resume a suspended server.
function M.resume(server, timeout)
  return call(server, atom.resume, timeout) == atom.ok
end

--- The server's state.
function M.get_state(server, timeout)
  return call(server, atom.get_state, timeout)
end

--- The first n messages (10 by default, at most 1000) waiting in the
-- server's mailbox, oldest first, as copies: what it has not handled yet
-- (the system message asking is not among them).  Not in OTP's sys:
-- observer reads a process's messages with process_info.
function M.get_messages(server, n, timeout)
  return call(server, tuple(atom.get_messages, n or 10), timeout)
end

--- Replace the server's state by fn(state), run in the server; raises
-- {callback_failed, Error} if fn raises (the state is then kept).
-- @return the new state
function M.replace_state(server, fn, timeout)
  if type(fn) ~= "function" then
    gen.argerror(2, "replace_state", "function expected, got " .. typeof(fn), 2)
  end
  local r = call(server, tuple(atom.replace_state, fn), timeout)
  if r[1] ~= atom.ok then error(tuple(atom.callback_failed, r[2]), 0) end
  return r[2]
end

--- Have the server move to the current version of its module and call its
-- code_change(old_vsn, state, extra) (even when the module did not change,
-- as OTP does). Suspend the server first, as OTP asks: a server that is
-- not suspended may move to the new version by itself, before this
-- message, and with no extra.
-- @return true, or nil and the reason the change failed
function M.change_code(server, module, old_vsn, extra, timeout)
  local r = call(server, tuple(atom.change_code, module, old_vsn, extra), timeout)
  if r == atom.ok then return true end
  return nil, r[2]
end

return M
