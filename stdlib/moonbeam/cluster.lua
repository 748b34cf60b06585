--- Clusters that form by themselves: discovery strategies, as Elixir's
-- libcluster has them, each run by a process per topology.
--
--   local cluster = require "moonbeam.cluster"
--   cluster.start_link{
--     static = {strategy = "epmd", config = {hosts = {"a@10.0.0.1", "b@10.0.0.2"}}},
--     lan    = {strategy = "gossip", config = {secret = "s3cret"}},
--   }
--
-- A topology names a strategy and its config. The strategies:
--
--   "epmd" (libcluster's Cluster.Strategy.Epmd)     moonbeam.cluster.epmd
--   "dns_poll" (Cluster.Strategy.DNSPoll)           moonbeam.cluster.dns_poll
--   "gossip" (Cluster.Strategy.Gossip)              moonbeam.cluster.gossip
--   "erlang_hosts" (Cluster.Strategy.ErlangHosts)   moonbeam.cluster.erlang_hosts
--
-- or the name of any module that implements the strategy behaviour (the
-- callbacks run in the topology's process, a GenServer of
-- moonbeam.cluster.topology):
--
--   init(config, topology)          -> state, or nil and a reason (the
--                                      topology logs it and stops)
--   poll(state, topology)           -> state   optional: every
--                                      config.polling_interval ms, or
--                                      the module's POLL_INTERVAL
--   handle_info(msg, state, topology) -> state optional: other messages
--   terminate(state, topology)      optional
--
-- A strategy says which nodes it wants through its topology:
--
--   topology.connect(nodes)   connect to these nodes, and keep them connected:
--                             retried with backoff while they are down, and
--                             after a disconnect
--   topology.set_nodes(nodes) the nodes wanted are exactly these: the others
--                             this topology connected are let go and
--                             disconnected (DNSPoll's behaviour)
--   topology.name, topology.config, topology.log(level, fmt, ...)
--
-- Membership changes reach subscribers as net_kernel's do:
-- mb.monitor_nodes(true) delivers {nodeup, Node} and {nodedown, Node}.
local mb = require "moonbeam"
local supervisor = require "moonbeam.supervisor"

local type, pairs, ipairs, tostring, pcall = type, pairs, ipairs, tostring, pcall
local sort = table.sort

local M = {}

--- The modules of the strategies known by name; libcluster's names are
-- accepted too.
M.STRATEGIES = {
  epmd = "moonbeam.cluster.epmd",
  dns_poll = "moonbeam.cluster.dns_poll",
  gossip = "moonbeam.cluster.gossip",
  erlang_hosts = "moonbeam.cluster.erlang_hosts",
  ["Cluster.Strategy.Epmd"] = "moonbeam.cluster.epmd",
  ["Cluster.Strategy.DNSPoll"] = "moonbeam.cluster.dns_poll",
  ["Cluster.Strategy.Gossip"] = "moonbeam.cluster.gossip",
  ["Cluster.Strategy.ErlangHosts"] = "moonbeam.cluster.erlang_hosts",
}

--- The module of a strategy's name, or nil and a message.
function M.strategy_module(name)
  if type(name) ~= "string" then
    return nil, "a strategy is named by a string, got " .. mb.typeof(name)
  end
  local module = M.STRATEGIES[name] or name
  local ok, m = pcall(require, module)
  if not ok or type(m) ~= "table" or type(m.init) ~= "function" then
    return nil, ("unknown strategy '%s' (epmd, dns_poll, gossip, erlang_hosts, "
      .. "or a module with init(config, topology))"):format(name)
  end
  return module
end

-- Supervisor callback: a worker per topology, in the order of their names.
function M.init(topologies)
  local names = {}
  for name in pairs(topologies) do names[#names + 1] = tostring(name) end
  sort(names)
  local children = {}
  for _, name in ipairs(names) do
    local spec = topologies[name]
    children[#children + 1] = {
      id = name,
      start = {"moonbeam.cluster.topology", "start_link",
               {name, type(spec) == "table" and spec or {}}},
    }
  end
  return "ok", {strategy = "one_for_one", intensity = 10, period = 60}, children
end

--- Start the topologies under a supervisor linked to the caller: for an
-- application's supervision tree, as libcluster's Cluster.Supervisor.
-- A topology whose strategy is unknown or whose config is wrong logs why
-- and starts nothing; the others run.
-- @param topologies {name = {strategy = "epmd", config = {...}}, ...}
-- @param opts optional: name (register the supervisor locally)
-- @return the supervisor's pid, or nil and a reason
function M.start_link(topologies, opts)
  if type(topologies) ~= "table" then
    error("bad argument #1 to 'start_link' (a table of topologies expected)", 2)
  end
  return supervisor.start_link("moonbeam.cluster", topologies, opts)
end

--- A child spec of the topologies, for a supervisor's children.
function M.child_spec(topologies, id)
  return {id = id or "cluster", type = "supervisor",
          start = {"moonbeam.cluster", "start_link", {topologies}}}
end

--- Start the topologies as start_link does, not linked to the caller.
function M.start(topologies, opts)
  return supervisor.start("moonbeam.cluster", topologies, opts)
end


return M
