--- The store: a GenServer registered as `kv`, holding a table.
--
--   kv.server.put(key, value)  ->  cast {put, Key, Value}
--   kv.server.get(key)         ->  call {get, Key}, replies the value
--
-- It starts with the entries of the application's `initial` environment.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local application = require "moonbeam.application"
local pattern = require "moonbeam.pattern"

local atom, tuple = mb.atom, mb.tuple
local match = pattern.match

local M = {}

--- Start the store, linked to the caller (its supervisor).
-- @return pid, or nil and the reason
function M.start_link()
  return gen_server.start_link("kv.server", nil, {name = "kv"})
end

--- Store a value under a key; returns at once.
function M.put(key, value)
  gen_server.cast("kv", tuple(atom.put, key, value))
end

--- The value under a key, or nil.
function M.get(key)
  return gen_server.call("kv", tuple(atom.get, key))
end

-- GenServer callbacks

function M.init()
  local store = {}
  for k, v in pairs(application.get_env("kv", "initial", {})) do store[k] = v end
  return "ok", store
end

function M.handle_call(request, _, store)
  local b = match("{get, Key}", request)
  if b then return "reply", store[b.Key], store end
  return "reply", nil, store
end

function M.handle_cast(request, store)
  local b = match("{put, Key, Value}", request)
  if b then store[b.Key] = b.Value end
  return "noreply", store
end

return M
