--- DynamicSupervisor (Elixir's): a supervisor that starts with no children
-- and to which children are added one at a time, each with its own child
-- spec; children are known by pid. Built on moonbeam.supervisor.
--
--   local ds = require "moonbeam.dynamic_supervisor"
--   local sup = ds.start_link({name = "workers", intensity = 3, period = 5})
--   local pid = ds.start_child(sup, {id = "w", start = {"my.worker", "start_link", {}}})
--   ds.terminate_child(sup, pid)
local supervisor = require "moonbeam.supervisor"

local M = {}

-- The callback module of every dynamic supervisor: no children at start.
local callbacks = {
  init = function(flags)
    return "ok", {strategy = "one_for_one", intensity = flags.intensity,
                  period = flags.period, anonymous = true}, {}
  end,
}

--- Start a dynamic supervisor linked to the caller.
-- @param opts optional: name, intensity (default 3), period (default 5)
-- @return pid, or nil and the reason
function M.start_link(opts)
  opts = opts or {}
  return supervisor.start_link(callbacks, {intensity = opts.intensity, period = opts.period},
    {name = opts.name})
end

--- Start a child from its spec (the id is optional: children are known by
-- pid). @return pid, or nil and the reason
function M.start_child(sup, spec)
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  if s.id == nil then s.id = {} end -- unique: a table is equal only to itself
  return supervisor.start_child(sup, s)
end

--- Stop a child, known by its pid; its spec goes with it.
-- @return true, or nil and not_found
function M.terminate_child(sup, pid) return supervisor.terminate_child(sup, pid) end

M.which_children = supervisor.which_children
M.count_children = supervisor.count_children

return M
