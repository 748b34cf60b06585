--- DynamicSupervisor (Elixir's): a supervisor that starts with no children
-- and to which children are added one at a time, each with its own child
-- spec; children are known by pid (a spec's id is ignored: one spec
-- started N times gives N children). Built on moonbeam.supervisor.
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
                  period = flags.period, max_children = flags.max_children,
                  anonymous = true}, {}
  end,
}

--- Start a dynamic supervisor linked to the caller.
-- @param opts optional: name, intensity (default 3), period (default 5),
--   max_children (default: no limit)
-- @return pid, or nil and the reason
function M.start_link(opts)
  opts = opts or {}
  return supervisor.start_link(callbacks, {intensity = opts.intensity, period = opts.period,
    max_children = opts.max_children}, {name = opts.name})
end

--- Start a child from its spec (the id is ignored: children are known by
-- pid). @return pid, or nil and the reason (max_children when the
-- supervisor has that many children already)
function M.start_child(sup, spec) return supervisor.start_child(sup, spec) end

--- Stop a child, known by its pid; its spec goes with it.
-- @return true, or nil and not_found
function M.terminate_child(sup, pid) return supervisor.terminate_child(sup, pid) end

M.which_children = supervisor.which_children
M.count_children = supervisor.count_children

return M
