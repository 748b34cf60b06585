--- The static strategy, libcluster's Cluster.Strategy.Epmd: connect to
-- the nodes of a list, found through EPMD as any connection is. Unlike
-- libcluster's, it keeps them connected: a node that is down is dialled
-- again with backoff, also after a disconnect (moonbeam.cluster.topology).
--
--   {strategy = "epmd", config = {hosts = {"a@10.0.0.1", "b@10.0.0.2"}}}
local type, ipairs = type, ipairs

local M = {}

function M.init(config, topology)
  local hosts = config.hosts or {}
  if type(hosts) ~= "table" then
    return nil, "config.hosts must be a list of node names"
  end
  for i, n in ipairs(hosts) do
    if not tostring(n):match("^[^@]+@[^@]+$") then
      return nil, ("config.hosts[%d] is not a node name (name@host): %s"):format(i, tostring(n))
    end
  end
  topology.connect(hosts)
  return {hosts = hosts}
end

return M
