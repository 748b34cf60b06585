--- The kv application's top supervisor: one worker, the store, restarted
-- alone if it crashes (one_for_one), at most 3 times in 5 seconds.
local M = {}

--- Supervisor callback: the restart strategy and the children.
function M.init()
  return "ok", {strategy = "one_for_one", intensity = 3, period = 5}, {
    {id = "kv", start = {"kv.server", "start_link", {}}, restart = "permanent",
     shutdown = 5000, type = "worker"},
  }
end

return M
