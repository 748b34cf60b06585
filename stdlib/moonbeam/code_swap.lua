--- The step that moves a process to the current version of a module:
-- moonbeam.code.swap, in a module of its own so that a GenServer that
-- upgrades between two messages loads this and not all of moonbeam.code.
local cache = require "moonbeam.codecache"

local type, pcall, pairs, tostring = type, pcall, pairs, tostring
local setmetatable, getmetatable = setmetatable, getmetatable

local M = {}

-- Replace the contents of table t by those of u.
local function refill(t, u)
  for k in pairs(t) do t[k] = nil end
  for k, v in pairs(u) do t[k] = v end
  local mt = getmetatable(u)
  if type(mt) == "table" or mt == nil then setmetatable(t, mt) end
end

--- Move the calling process to the current version of one module, if it
-- holds an older one: the new version runs in this process and takes the
-- place of the old in package.loaded. A module table is updated in place,
-- so that code which kept it (`local kv = require "kv"`) calls the new
-- functions through it, as a fully-qualified call does in Erlang; local
-- functions captured by old code stay old.
-- @return the module, the version it held and a function that puts the
--   old version back; or nil (nothing to do); or nil and the error
function M.swap(name)
  local held = cache.held()[name]
  local current = cache.info(name)
  if held == nil or current == nil or held >= current then return nil end
  local chunk, version, path = cache.load(name)
  if chunk == nil then return nil end
  local ok, new = pcall(chunk, name, path or nil)
  if not ok then
    cache.hold(name, held)
    return nil, ("error loading module '%s' version %d: %s")
      :format(name, version, tostring(new))
  end
  if new == nil then new = true end
  local old = package.loaded[name]
  local keep
  if type(old) == "table" and type(new) == "table" then
    keep = {}
    refill(keep, old)
    refill(old, new)
    new = old
  end
  package.loaded[name] = new
  return new, held, function()
    if keep then refill(old, keep) end
    package.loaded[name] = old
    cache.hold(name, held)
  end
end

return M
