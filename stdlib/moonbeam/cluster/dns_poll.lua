--- The DNS polling strategy, libcluster's Cluster.Strategy.DNSPoll: every
-- `polling_interval` ms (5000 by default) ask for the A records of
-- `query`, and keep connected exactly the nodes `<node_basename>@<ip>`
-- (long names); a node whose address is gone is disconnected.
--
--   {strategy = "dns_poll", config = {query = "app.internal",
--     node_basename = "app", polling_interval = 5000,
--     nameserver = "10.0.0.2:53"}}   -- default: /etc/resolv.conf's first
--
-- A name server that does not answer (or answers an error) leaves the
-- nodes as they are, with a log line; libcluster's resolver takes that as
-- no addresses and disconnects them.
local mb = require "moonbeam"
local dns = require "moonbeam.cluster.dns"

local type, ipairs, tonumber = type, ipairs, tonumber

local M = {}

M.POLL_INTERVAL = 5000

local function nonempty(s) return type(s) == "string" and s ~= "" end

function M.init(config)
  if not nonempty(config.query) or not nonempty(config.node_basename) then
    return nil, "config.query and config.node_basename must be non-empty strings"
  end
  local ns = config.nameserver or dns.system_server()
  local host, port
  if type(ns) == "table" then
    host, port = ns[1], tonumber(ns[2])
  else
    host, port = tostring(ns):match("^([^:]+):(%d+)$")
    host, port = host or tostring(ns), tonumber(port) or 53
  end
  if not nonempty(host) or not port then
    return nil, "config.nameserver must be \"address[:port]\" or {address, port}"
  end
  return {query = config.query, base = config.node_basename, host = host,
          port = port or 53, timeout = tonumber(config.timeout) or 2000}
end

function M.poll(state, topology)
  local ips, why = dns.a_records(state.query, state.host, state.port, state.timeout)
  if not ips then
    -- Said once as a warning, then at debug level until it changes.
    why = tostring(why)
    topology.log(state.failing == why and "debug" or "warning",
      "cannot resolve %s at %s:%d: %s", state.query, state.host, state.port, why)
    state.failing = why
    return state
  end
  if state.failing then
    topology.log("info", "%s resolves again at %s:%d", state.query, state.host, state.port)
    state.failing = nil
  end
  local nodes = {}
  for _, ip in ipairs(ips) do
    local node = mb.atom(state.base .. "@" .. ip)
    if node ~= mb.node() then nodes[#nodes + 1] = node end
  end
  topology.set_nodes(nodes)
  return state
end

return M
