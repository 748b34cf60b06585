--- The part of moonbeam.gen that runs inside a behaviour's own process:
-- acknowledging the start, registering the name, replying to calls.
-- Every GenServer loads it, so it holds nothing else; moonbeam.gen, which
-- callers load, offers these functions too (the same ones) next to the
-- client side of the protocol.
local mb = require "moonbeam"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, select, pcall, require = type, select, pcall, require

local M = {}

-- atom(name) rather than atom[name]: the table form keeps each atom in
-- mb.atom, where a server would keep it after this module is dropped.
local ACK = atom("$gen_ack")

--- Reply to a call, from the process handling it (or any other).
-- @param from the From of the call ({Pid, Tag})
-- @param reply any sendable value
function M.reply(from, reply)
  local pid, tag = from[1], from[2]
  if typeof(tag) == "ref" then
    mb.send_alias(pid, tag, tuple(tag, reply))
  else
    mb.send(pid, tuple(tag, reply))
  end
end

--- Tell the starter how init went: ok (true) or failed with reason.
function M.ack(starter, ref, ok, reason)
  mb.send(starter, tuple(ACK, ref, ok, reason))
end

--- "global" for a name {"global", Name}, "via" for {"via", Module,
-- Name} (strings or atoms), or nil.
function M.name_kind(name)
  if type(name) ~= "table" and typeof(name) ~= "tuple" then return nil end
  local k = name[1]
  k = (type(k) == "string" or typeof(k) == "atom") and tostring(k)
  if k == "global" and name[2] ~= nil and name[3] == nil then return "global" end
  if k == "via" and name[3] ~= nil and name[4] == nil then return "via" end
  return nil
end

--- Register the calling process under opts' name, or say who has it.
-- The name is a local name, {"global", Name} (moonbeam.global) or
-- {"via", Module, Name} (require(Module).register_name(Name, Pid)).
-- @return true, or false and {already_started, Pid}
function M.register_name(name)
  if name == nil then return true end
  local kind = M.name_kind(name)
  if kind then
    local mod = kind == "global" and require("moonbeam.global") or require(tostring(name[2]))
    local n = name[#name]
    local r = mod.register_name(n, mb.self())
    if r == true or r == atom.yes then return true end
    return false, tuple(atom.already_started, mod.whereis_name(n))
  end
  if pcall(mb.register, name, mb.self()) then return true end
  return false, tuple(atom.already_started, mb.whereis(name))
end

--- In a new process's init_it: take `name` (see register_name); when it
-- is taken already, unlink from the parent, tell the starter why and
-- return false, as OTP's proc_lib does.
function M.take_name(starter, ref, parent, name)
  local ok, why = M.register_name(name)
  if ok then return true end
  if parent then mb.unlink(parent) end
  M.ack(starter, ref, false, why)
  return false
end

--- The callback module: a table, or the name of a module to require.
function M.callback_module(module)
  if type(module) == "string" then return require(module) end
  return module
end

--- The tag of a callback's return, as a string: "ok", "reply", "stop"...
-- Both strings and atoms are accepted.
function M.tag(v)
  if type(v) == "string" then return v end
  if typeof(v) == "atom" then return tostring(v) end
  return nil
end

--- Pack a callback's results (they may hold nils).
function M.pack(...) return {n = select("#", ...), ...} end

return M
