--- Version 2 of examples/kv's store (kv.server), loaded into the running
-- node by main.lua: the same calls and casts, and two new ones.
--
--   kv.server.put(key, value)  ->  cast {put, Key, Value}
--   kv.server.get(key)         ->  call {get, Key}, replies the value
--   kv.server.delete(key)      ->  cast {delete, Key}         (new)
--   kv.server.stats()          ->  call stats: {keys =, gets =} (new)
--
-- Version 1 kept the entries as the whole state; version 2 keeps
-- {data = entries, gets = count of gets since the upgrade}, and its
-- code_change turns the one into the other.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local application = require "moonbeam.application"
local pattern = require "moonbeam.pattern"

local atom, tuple = mb.atom, mb.tuple
local match = pattern.match

local M = {}

function M.start_link()
  return gen_server.start_link("kv.server", nil, {name = "kv"})
end

function M.put(key, value)
  gen_server.cast("kv", tuple(atom.put, key, value))
end

function M.get(key)
  return gen_server.call("kv", tuple(atom.get, key))
end

function M.delete(key)
  gen_server.cast("kv", tuple(atom.delete, key))
end

function M.stats()
  return gen_server.call("kv", atom.stats)
end

-- GenServer callbacks

function M.init()
  local data = {}
  for k, v in pairs(application.get_env("kv", "initial", {})) do data[k] = v end
  return "ok", {data = data, gets = 0}
end

function M.handle_call(request, _, s)
  if request == atom.stats then
    local keys = 0
    for _ in pairs(s.data) do keys = keys + 1 end
    return "reply", {keys = keys, gets = s.gets}, s
  end
  local b = match("{get, Key}", request)
  if b then
    s.gets = s.gets + 1
    return "reply", s.data[b.Key], s
  end
  return "reply", nil, s
end

function M.handle_cast(request, s)
  local b = match("{put, Key, Value}", request)
  if b then s.data[b.Key] = b.Value end
  b = match("{delete, Key}", request)
  if b then s.data[b.Key] = nil end
  return "noreply", s
end

--- From version 1 (the entries themselves) to version 2.
function M.code_change(_, store)
  return "ok", {data = store, gets = 0}
end

return M
