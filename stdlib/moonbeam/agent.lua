--- Agent: a process that holds a state, read and changed by functions sent
-- to it, with the semantics of Elixir's Agent.
--
--   local counter = agent.start_link(function() return 0 end)
--   agent.update(counter, function(n) return n + 1 end)
--   agent.get(counter, function(n) return n end)       -- 1
--
-- An agent is a GenServer. The functions travel in messages: each is copied
-- into the agent's process with its upvalues (as for mb.spawn), and runs
-- there, on the agent's state, one at a time. The state itself never leaves
-- the agent; only what get returns is copied back. Client functions and
-- what the agent does with the function `fn` they send:
--
--   start / start_link   init: state = fn()
--   get                  call: replies fn(state)
--   update               call: state = fn(state), replies true
--   get_and_update       call: reply, state = fn(state)
--   cast                 cast: state = fn(state)
--   stop                 gen_server.stop
--
-- A function that raises ends the agent with reason {Error, Traceback}, as
-- any GenServer callback does: the caller of get/update raises that reason,
-- and processes linked to the agent get its exit signal.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof

local M = {}

local GET, UPDATE, GET_AND_UPDATE, CAST =
  atom.get, atom.update, atom.get_and_update, atom.cast

-- The GenServer callbacks. They are copied into the agent's process, so
-- they use only atoms, the functions they are given and globals (a local
-- holding a C function could not be copied).
local Server = {}

function Server.init(fn) return "ok", fn() end

function Server.handle_call(req, _, state)
  local kind, fn = req[1], req[2]
  if kind == GET then
    return "reply", fn(state), state
  elseif kind == UPDATE then
    return "reply", true, fn(state)
  elseif kind == GET_AND_UPDATE then
    local reply, new = fn(state)
    return "reply", reply, new
  end
  error("agent: unknown request " .. tostring(req))
end

function Server.handle_cast(req, state)
  if req[1] == CAST then return "noreply", req[2](state) end
  return "noreply", state
end

local type, error = type, error

local gen = require "moonbeam.gen"

local function check_fn(fn, fname, arg)
  if type(fn) ~= "function" then
    gen.argerror(arg, fname, "function expected, got " .. typeof(fn), 3)
  end
end

--- Start an agent linked to the caller, with the state `fn()`.
-- @param fn a function returning the initial state; it runs in the agent
-- @param opts optional: name (register the agent), timeout (for fn, ms)
-- @return the pid, or nil and the reason (fn's error, {already_started, Pid})
function M.start_link(fn, opts)
  check_fn(fn, "start_link", 1)
  return gen_server.start_link(Server, fn, opts)
end

--- Start an agent not linked to the caller.
-- @see start_link
function M.start(fn, opts)
  check_fn(fn, "start", 1)
  return gen_server.start(Server, fn, opts)
end

--- Read the agent: `fn(state)` runs in the agent and its result is copied
-- back; the state is unchanged.
-- @param agent pid or registered name
-- @param fn function(state) -> value
-- @param timeout ms (default 5000)
-- @return fn's result; raises as gen_server.call does on failure
function M.get(agent, fn, timeout)
  check_fn(fn, "get", 2)
  return gen_server.call(agent, tuple(GET, fn), timeout)
end

--- Change the state to `fn(state)` and wait until it is done.
-- @param fn function(state) -> new state
-- @return true
function M.update(agent, fn, timeout)
  check_fn(fn, "update", 2)
  return gen_server.call(agent, tuple(UPDATE, fn), timeout)
end

--- Read and change the state in one step.
-- @param fn function(state) -> reply, new state
-- @return the reply
function M.get_and_update(agent, fn, timeout)
  check_fn(fn, "get_and_update", 2)
  return gen_server.call(agent, tuple(GET_AND_UPDATE, fn), timeout)
end

--- Change the state to `fn(state)` without waiting; never fails, even if
-- there is no such agent.
-- @return true
function M.cast(agent, fn)
  check_fn(fn, "cast", 2)
  gen_server.cast(agent, tuple(CAST, fn))
  return true
end

--- Stop the agent and wait until it has ended.
-- @param reason default "normal"
-- @param timeout ms (default infinity)
-- @return true; raises {noproc, ...} or {timeout, ...}
function M.stop(agent, reason, timeout)
  return gen_server.stop(agent, reason, timeout)
end

return M
