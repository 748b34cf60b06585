--- The kv application's callback module: start builds the supervision
-- tree and returns its top supervisor; stop runs once the tree is down.
local supervisor = require "moonbeam.supervisor"
local logger = require "moonbeam.logger"

local M = {}

--- Start the application: the top supervisor, registered as kv_sup.
-- @param start_type "temporary", "transient" or "permanent"
-- @param args the second element of `mod` in kv.app.lua
-- @return the supervisor's pid, or nil and the reason
function M.start(start_type, args)
  logger.info("kv starting (%s)", start_type)
  return supervisor.start_link("kv.supervisor", args, {name = "kv_sup"})
end

--- Called after the supervision tree has been shut down.
function M.stop()
  logger.info("kv stopped")
end

return M
