--- The net_kernel process of a distributed node. Other nodes' pings
-- (net_adm:ping, Node.ping) are calls {is_auth, Node} to the process
-- registered as net_kernel; it answers yes. Other requests are answered
-- with an error rather than left waiting.
local mb = require "moonbeam"
local gen = require "moonbeam.gen"

local M = {}

--- Run the net_kernel process (started by mb.start_distribution).
-- @param connect_all whether global connects to the nodes it learns of
--   (the mesh; false for connect_all = false and for hidden nodes)
function M.start(connect_all)
  if not pcall(mb.register, "net_kernel", mb.self()) then return end
  mb.spawn("moonbeam.rpc", "rex")
  mb.spawn("moonbeam.global", "start", connect_all ~= false)
  local GEN_CALL, is_auth = mb.atom["$gen_call"], mb.atom.is_auth
  while true do
    local m = mb.receive()
    if mb.typeof(m) == "tuple" and m[1] == GEN_CALL then
      local req = m[3]
      if mb.typeof(req) == "tuple" and req[1] == is_auth then
        gen.reply(m[2], mb.atom.yes)
      else
        gen.reply(m[2], mb.tuple(mb.atom.error, mb.atom.not_supported))
      end
    end
  end
end

return M
