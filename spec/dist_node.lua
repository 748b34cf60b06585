-- The distributed node of a busted run.  A process holds one node and
-- starts distribution once, and busted runs every spec file in one
-- process: the first spec file that needs distribution starts it (on a
-- random test EPMD port, which the node serves itself, with a test
-- cookie), and the next ones use the same node.  What was chosen is kept
-- in the Lua registry, which busted's insulation of each file leaves alone.
--
--   local N = require("spec.dist_node").start("mbspec")
--   -- N.name ("mbspec@127.0.0.1", or the name the first file gave),
--   -- N.epmd_port, N.cookie
local mb = require "moonbeam"

local M = {}

local KEY = "moonbeam spec distributed node"

--- Start the node's distribution, or find it started.
-- @param name the node's name before "@127.0.0.1", if this call starts it
function M.start(name)
  local reg = debug.getregistry()
  if reg[KEY] then return reg[KEY] end
  local n = {epmd_port = 21000 + math.random(0, 3999), cookie = "specsecret"}
  mb.start{run_timeout = 60000}
  n.name = tostring(mb.run(function(name, port, cookie)
    return require("moonbeam").start_distribution{name = name, cookie = cookie, epmd_port = port}
  end, name .. "@127.0.0.1", n.epmd_port, n.cookie))
  reg[KEY] = n
  return n
end

return M
