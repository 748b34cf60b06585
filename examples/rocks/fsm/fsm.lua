--- fsm: a finite-state machine behaviour, on top of moonbeam's GenServer.
--
-- The callback module (a table of functions, or the name of a module that
-- returns one) has init and one function per state. Client functions and
-- the callbacks they trigger:
--
--   fsm.start / start_link    ->  init(args)
--        returns the first state and the data; or nil and a reason, and
--        the start fails with that reason
--   fsm.call(server, event)   ->  module[state]("call", event, data)
--   fsm.cast(server, event)   ->  module[state]("cast", event, data)
--   any other message         ->  module[state]("info", message, data)
--
-- A state function returns the next state (the same one to stay), the new
-- data and, for a call, the reply. A state with no function, or a state
-- function that raises, stops the server (and the caller of a call gets
-- the exit).
--
--   fsm.state(server)         ->  the current state, from the server
--   fsm.stop(server)          ->  stops it, as gen_server.stop
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, tostring, error, require = type, tostring, error, require

local M = {}

local EVENT, STATE = atom["$fsm_event"], atom["$fsm_state"]

--- Start a state machine, not linked to the caller.
-- @param module the callback module: a table, or a module name
-- @param args given to init
-- @param opts as gen_server.start's: name, timeout
-- @return pid, or nil and the reason
function M.start(module, args, opts)
  return gen_server.start("fsm", {module = module, args = args}, opts)
end

--- Start a state machine linked to the caller.
-- @see start
function M.start_link(module, args, opts)
  return gen_server.start_link("fsm", {module = module, args = args}, opts)
end

--- Send an event and wait for the state function's reply.
-- @param server pid or registered name
-- @param event any value that can be sent
-- @param timeout milliseconds (default 5000)
function M.call(server, event, timeout)
  return gen_server.call(server, tuple(EVENT, event), timeout)
end

--- Send an event without waiting.
function M.cast(server, event) gen_server.cast(server, event) end

--- The current state of a state machine.
function M.state(server, timeout) return gen_server.call(server, tuple(STATE), timeout) end

--- Stop a state machine.
function M.stop(server, reason, timeout) return gen_server.stop(server, reason, timeout) end

-- ---------------------------------------------------------------------------
-- The GenServer callbacks: this module is the server's callback module, so
-- the server process requires "fsm" by name, along its node's path.

local function run(s, kind, event)
  local f = s.module[s.state]
  if type(f) ~= "function" then
    error("fsm: the callback module has no function for state " .. tostring(s.state), 0)
  end
  local state, data, reply = f(kind, event, s.data)
  if state == nil then
    error("fsm: state " .. tostring(s.state) .. " returned no next state", 0)
  end
  s.state, s.data = state, data
  return reply
end

function M.init(a)
  local module = a.module
  if type(module) == "string" then module = require(module) end
  local state, data = module.init(a.args)
  if state == nil then return "stop", data end
  return "ok", {module = module, state = state, data = data}
end

function M.handle_call(request, _, s)
  if typeof(request) == "tuple" and request[1] == STATE then
    return "reply", s.state, s
  end
  return "reply", run(s, "call", request[2]), s
end

function M.handle_cast(event, s)
  run(s, "cast", event)
  return "noreply", s
end

function M.handle_info(message, s)
  run(s, "info", message)
  return "noreply", s
end

return M
