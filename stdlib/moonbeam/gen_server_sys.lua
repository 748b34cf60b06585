--- The code change and system messages of a GenServer (see
-- moonbeam.gen_server_event): moving to a new version of the callback
-- module between two messages, and OTP's {system, From, Request} as
-- moonbeam.sys sends them.  A server loads this module the first time its
-- module changes or a system message comes, so that an idle server does
-- not carry it.
local mb = require "moonbeam"
local gen = require "moonbeam.gen_base"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local pcall, tostring, require = pcall, tostring, require
local generation = require("moonbeam.codecache").generation

local M = {}

local EXIT, SYSTEM = atom.EXIT, atom.system

local function stop_paths() return require "moonbeam.gen_server_stop" end

--- Move the server to the current version of its module, if it holds an
-- older one: code_change migrates the state, or the old version stays.
-- `force` (from sys.change_code, with the old_vsn it passes) calls
-- code_change even when the module did not change, as OTP does.
-- @return true, or nil and why the change failed
function M.upgrade(s, extra, force, vsn)
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
    why = r[1] and tuple(atom.bad_return_value, stop_paths().returned(r)) or r[2]
  end
  if why == nil then return true end
  mb.log("warning", ("GenServer %s: code change of %s failed, the old version "
    .. "stays: %s"):format(tostring(s.name or mb.self()),
    tostring(s.modname or "its module"), tostring(why)))
  return nil, why
end

local function is_system(m) return typeof(m) == "tuple" and m[1] == SYSTEM end

-- Suspended: only system messages (and the parent's exit) are handled,
-- until resume; other messages wait in the mailbox.
local function suspended(s)
  while true do
    local msg = mb.receive(function(m)
      return is_system(m) or (typeof(m) == "tuple" and m[1] == EXIT and m[2] == s.parent)
    end)
    if msg[1] == EXIT then return stop_paths().terminate(s, msg[3], msg) end
    if gen.tag(msg[3]) == "resume" then return gen.reply(msg[2], atom.ok) end
    M.system(s, msg)
  end
end

--- Handle a system message, {system, From, Request}.
function M.system(s, msg)
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
  elseif tag == "get_messages" then
    local n = typeof(req) == "tuple" and math.tointeger(req[2]) or 10
    if n < 0 or n > 1000 then n = 10 end
    local ok, messages = pcall(mb.process_messages, mb.self(), n)
    gen.reply(from, ok and messages or tuple(atom.error, messages))
  elseif tag == "replace_state" then
    local ok, new = pcall(req[2], s.state)
    if ok then s.state = new end
    gen.reply(from, tuple(ok and atom.ok or atom.error, new))
  elseif tag == "change_code" then
    local ok, why = M.upgrade(s, req[4], true, req[3])
    gen.reply(from, ok and atom.ok or tuple(atom.error, why))
  else
    gen.reply(from, tuple(atom.error, atom.unknown_system_msg))
  end
end

return M
