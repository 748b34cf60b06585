--- Distribution for Lua code: start it, connect to nodes, ping them.
--
--   local dist = require "moonbeam.dist"
--   dist.start{sname = "a", cookie = "secret"}
--   assert(dist.ping("b@localhost") == "pong")
local mb = require "moonbeam"
local gen = require "moonbeam.gen"

local M = {}

--- Make this node a distributed node.
-- @param opts {name = "a@host" | sname = "a", cookie =, hidden =,
--   ticktime = (seconds), port =}; the cookie defaults to ~/.erlang.cookie
-- @return this node's name (an atom)
function M.start(opts) return mb.start_distribution(opts) end

--- Connect to a node, waiting until the connection is up.
-- @param node "name@host"
-- @param timeout milliseconds (default 7000)
-- @return true, or false if the node could not be reached
function M.connect(node, timeout)
  node = type(node) == "string" and mb.atom(node) or node
  local ref = mb.node_watch(node)
  local m = mb.receive(function(m) return m[1] == ref end, timeout or 7000)
  if m == nil and not mb.node_unwatch(node, ref) then
    -- Told just as the wait ended: take the answer.
    m = mb.receive(function(m) return m[1] == ref end)
  end
  return m ~= nil and m[2] == true
end

--- Ping a node as net_adm:ping does: "pong" if it answers, "pang" if not.
function M.ping(node, timeout)
  node = type(node) == "string" and mb.atom(node) or node
  if not M.connect(node, timeout) then return "pang" end
  local ok, r = pcall(gen.call, {mb.atom.net_kernel, node},
    mb.tuple(mb.atom.is_auth, mb.node()), timeout or 7000)
  if ok and r == mb.atom.yes then return "pong" end
  return "pang"
end

M.node, M.nodes, M.disconnect = mb.node, mb.nodes, mb.disconnect
M.monitor_node, M.monitor_nodes = mb.monitor_node, mb.monitor_nodes

return M
