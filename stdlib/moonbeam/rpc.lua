--- Remote procedure calls, both ways, as Erlang's erpc does them: a spawn
-- request for erpc:execute_call/4, whose process ends with
-- {ResRef, return, Value}.
--
--   local rpc = require "moonbeam.rpc"
--   local n = rpc.call("e@localhost", "erlang", "length", {{1, 2, 3}})
--
-- Other nodes' rpc:call/erpc:call into this node run a Lua function:
-- module M is require(M), function F its field F; calls of the Erlang
-- module erlang are the probes of moonbeam.probe.
local mb = require "moonbeam"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local unpack = table.unpack

local M = {}

local function fail(reason) error(tuple(atom.erpc, reason), 0) end

--- Call module.fun(args...) on node and return its result.
-- Raises {erpc, Reason} on a failure of the call itself (noconnection,
-- timeout), and the remote error as Erlang's erpc reports it:
-- {exception, Class, Reason} with Class error, exit or throw.
-- @param node "name@host" or atom
-- @param module, fun names (strings or atoms)
-- @param args a list of arguments
-- @param timeout milliseconds (default infinity)
function M.call(node, module, fun, args, timeout)
  local resref = mb.make_ref()
  local req = mb.spawn_request(node, "erpc", "execute_call",
    mb.list(resref, atom(tostring(module)), atom(tostring(fun)), mb.list(unpack(args or {}))))
  local SPAWN_REPLY, DOWN = atom.spawn_reply, atom.DOWN
  local reply, why = mb.receive(function(m) return m[1] == SPAWN_REPLY and m[2] == req end,
    timeout, {[SPAWN_REPLY] = true})
  if why == "timeout" then
    mb.demonitor(req, {flush = true})
    fail(atom.timeout)
  end
  if reply[3] == atom.error then
    mb.demonitor(req, {flush = true})
    fail(reply[4])
  end
  local down
  down, why = mb.receive(function(m) return m[1] == DOWN and m[2] == req end,
    timeout, {[DOWN] = true})
  if why == "timeout" then
    mb.demonitor(req, {flush = true})
    mb.exit(reply[4], "kill")
    fail(atom.timeout)
  end
  local r = down[5]
  if typeof(r) == "tuple" and r[1] == resref then
    if r[2] == atom["return"] then return r[3] end
    error(tuple(atom.exception, r[2], r[3]), 0)
  end
  fail(r)
end

--- Ask node to run module.fun(args...) without waiting for it.
function M.cast(node, module, fun, args)
  mb.spawn_request(node, "erpc", "execute_cast",
    mb.list(atom(tostring(module)), atom(tostring(fun)), mb.list(unpack(args or {}))),
    {reply = false})
end

-- The function a spawn request from another node names: the function, or
-- nil and the reason. A module that is not found, or lacks the function,
-- is {undef, [{M, F, A, []}]} as in Erlang; a module that is there but
-- fails to load (a syntax error, an error while it runs) is
-- {load_failed, M, Message}, and is logged.
-- Erlang modules whose calls from other nodes a stdlib module answers:
-- global:resolve_it/4 when global resolves a name conflict.
local ERLANG_MODULES = {global = "moonbeam.global"}

local function lookup(m, f, a)
  local probe = require("moonbeam.probe").lookup(m, f, a and (a.n or #a) or 0)
  if probe then return probe end
  if tostring(m) == "erlang" then
    return nil, atom.undef, mb.list(tuple(m, f, a or mb.list(), mb.list()))
  end
  local ok, mod = pcall(require, ERLANG_MODULES[tostring(m)] or tostring(m))
  if not ok and not tostring(mod):find("module '" .. tostring(m) .. "' not found", 1, true) then
    mb.log("error", "rpc: module " .. tostring(m) .. " failed to load: " .. tostring(mod))
    return nil, tuple(atom.load_failed, m, tostring(mod))
  end
  local fn = ok and type(mod) == "table" and mod[tostring(f)]
  if type(fn) ~= "function" then
    return nil, atom.undef, mb.list(tuple(m, f, a or mb.list(), mb.list()))
  end
  return fn
end

-- Run M:F(A) for another node: true and the value, or false, the reason
-- and the stack (Erlang's error exception).
local function apply(m, f, a)
  local fn, why, stack = lookup(m, f, a)
  if fn == nil then return false, why, stack or mb.list() end
  local ok, v = xpcall(fn, function(e)
    return require("moonbeam.probe").reason(e) and e or debug.traceback(e, 2)
  end, unpack(a, 1, a.n or #a))
  if ok then return true, v end
  local reason = require("moonbeam.probe").reason(v)
  if reason ~= nil then return false, reason, mb.list() end
  return false, tuple(atom.lua_error, tostring(v)), mb.list()
end

--- Entry point of processes spawned for other nodes; not for users.
-- @param m, f the module and function the request named (atoms)
-- @param a the argument list
function M.spawned(m, f, a)
  a = a or {}
  if m == atom.erpc and f == atom.execute_call then
    local resref = a[1]
    local ok, v, stack = apply(a[2], a[3], a[4] or mb.list())
    if ok then mb.exit(tuple(resref, atom["return"], v)) end
    mb.exit(tuple(resref, atom.error, v, stack))
  elseif m == atom.erpc and f == atom.execute_cast then
    local fn = lookup(a[1], a[2])
    if fn then fn(unpack(a[3] or {}, 1, (a[3] or {}).n)) end
    return
  end
  -- spawn(Node, M, F, Args) from Erlang: run the Lua function.
  local fn, why, stack = lookup(m, f, a)
  if fn == nil then error(tuple(why, stack), 0) end
  return fn(unpack(a, 1, a.n or #a))
end

-- A request {call | block_call, M, F, A, GroupLeader} to rex: M:F(A)'s
-- value, or Erlang's rex answer to an exception.
local function rex_apply(req)
  local a = typeof(req[4]) == "list" and req[4] or mb.list()
  local ok, v, stack = apply(req[2], req[3], a)
  if not ok then v = tuple(atom.badrpc, tuple(atom.EXIT, tuple(v, stack))) end
  return v
end

--- The rex server of a distributed node (started with net_kernel), for
-- rpc:block_call, and rpc:call from nodes that do not
-- use spawn requests: a gen_server call {call, M, F, A, GroupLeader} (or
-- block_call) is answered with M:F(A)'s value, or as Erlang's rex
-- answers an exception: {badrpc, {'EXIT', {Reason, Stack}}}.  The older
-- form C nodes send (erl_call -a, ei_rpc), {From, {call, M, F, A, GL}},
-- is answered with {rex, Reply} to From, and {From, features_request}
-- with {features_reply, Node, [erpc]}, as Erlang's rex answers them.
-- Requests run one at a time, in the rex process.  Other messages are
-- dropped.  Not for users.
function M.rex()
  if not pcall(mb.register, "rex", mb.self()) then return end
  local gen = require "moonbeam.gen"
  local GEN_CALL, call, block_call = atom["$gen_call"], atom.call, atom.block_call
  local function is_call(req)
    return typeof(req) == "tuple" and #req == 5 and (req[1] == call or req[1] == block_call)
      and typeof(req[2]) == "atom" and typeof(req[3]) == "atom"
  end
  while true do
    local msg = mb.receive()
    local is_tuple = typeof(msg) == "tuple" and #msg >= 2
    if is_tuple and msg[1] == GEN_CALL and is_call(msg[3]) then
      gen.reply(msg[2], rex_apply(msg[3]))
    elseif is_tuple and #msg == 2 and typeof(msg[1]) == "pid" then
      local req = msg[2]
      if is_call(req) and req[1] == call then
        mb.send(msg[1], tuple(atom.rex, rex_apply(req)))
      elseif req == atom.features_request then
        mb.send(msg[1], tuple(atom.features_reply, mb.node(), mb.list(atom.erpc)))
      end
    end
  end
end

return M
