--- The host-file strategy, libcluster's Cluster.Strategy.ErlangHosts: the
-- nodes that EPMD knows on each host of the host file (.hosts.erlang, see
-- moonbeam.net_adm), connected and kept connected. The file and the hosts
-- are read again every `polling_interval` ms (libcluster's `timeout` is
-- taken too) if that is set, else once.
--
--   {strategy = "erlang_hosts", config = {hosts_file = "cluster.hosts",
--     polling_interval = 10000, name_match = "app"}}
--
-- name_match, as libcluster's: a string (the node's name part contains
-- it) or a list of strings (the name part is one of them).
local mb = require "moonbeam"
local net_adm = require "moonbeam.net_adm"

local type, ipairs, tostring = type, ipairs, tostring

local M = {}

local function matcher(spec)
  if type(spec) == "string" then
    return function(name) return name:find(spec, 1, true) ~= nil end
  elseif type(spec) == "table" then
    local set = {}
    for _, n in ipairs(spec) do set[tostring(n)] = true end
    return function(name) return set[name] == true end
  end
  return function() return true end
end

function M.init(config)
  if config.polling_interval == nil and type(config.timeout) == "number" then
    config.polling_interval = config.timeout -- the topology reads it after init
  end
  if config.name_match ~= nil and type(config.name_match) ~= "string"
      and type(config.name_match) ~= "table" then
    return nil, "config.name_match must be a string or a list of names"
  end
  return {file = config.hosts_file, match = matcher(config.name_match)}
end

function M.poll(state, topology)
  local hosts, why = net_adm.host_file(state.file)
  if not hosts then
    topology.log("warning", "%s", why)
    return state
  end
  local nodes = {}
  for _, host in ipairs(hosts) do
    for _, entry in ipairs(net_adm.names(host) or {}) do
      local node = mb.atom(entry[1] .. "@" .. tostring(host))
      if node ~= mb.node() and state.match(entry[1]) then nodes[#nodes + 1] = node end
    end
  end
  topology.connect(nodes)
  return state
end

return M
