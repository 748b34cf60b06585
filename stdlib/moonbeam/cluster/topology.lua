--- The process of one cluster topology (moonbeam.cluster): a GenServer
-- that runs a strategy's callbacks and keeps the nodes the strategy wants
-- connected. Connections are dialled with monitor_node, so that no call
-- waits on one; a node that cannot be reached, or that goes down, is
-- dialled again after a backoff that doubles from `backoff_min` to
-- `backoff_max` ms (config keys; 500 and 30000 by default), and starts
-- again from `backoff_min` once it is up.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local logger = require "moonbeam.logger"

local atom, typeof = mb.atom, mb.typeof
local type, pairs, ipairs, tostring, pcall = type, pairs, ipairs, tostring, pcall
local min = math.min

local M = {}

local NODEUP, NODEDOWN = atom.nodeup, atom.nodedown
local RETRY, POLL = "$cluster_retry", "$cluster_poll"

--- Start a topology's process linked to the caller.
-- @param name the topology's name
-- @param spec {strategy = name, config = {...}}
function M.start_link(name, spec)
  return gen_server.start_link("moonbeam.cluster.topology", {name = name, spec = spec})
end

local function as_node(n) return type(n) == "string" and atom(n) or n end

-- The handle a strategy gets: what it may ask of the topology.
local function handle(s)
  local t = {name = s.name, config = s.config, self = mb.self()}
  function t.log(level, fmt, ...)
    logger.log(level, "cluster %s: " .. fmt, s.name, ...)
  end
  function t.connect(nodes)
    for _, n in ipairs(nodes) do
      n = as_node(n)
      if n ~= mb.node() and not s.wanted[n] then
        s.wanted[n] = true
        M.dial(s, n)
      end
    end
  end
  function t.set_nodes(nodes)
    local now = {}
    for _, n in ipairs(nodes) do now[as_node(n)] = true end
    for n in pairs(s.wanted) do
      if not now[n] then
        s.wanted[n], s.backoff[n] = nil, nil
        if s.up[n] then
          t.log("info", "disconnecting from %s", tostring(n))
          mb.disconnect(n)
        end
      end
    end
    t.connect(nodes)
  end
  return t
end

-- Up: visible. nodes("connected") would count a connection still being
-- set up, which may fail without a nodedown to monitor_nodes.
local function connected(n)
  for _, c in ipairs(mb.nodes()) do
    if c == n then return true end
  end
  return false
end

--- Dial a wanted node unless it is connected or being dialled.
function M.dial(s, n)
  if s.dialling[n] or s.retrying[n] then return end
  if connected(n) then
    s.up[n] = true
    return
  end
  s.dialling[n] = true
  mb.monitor_node(n, true)
end

local function retry_later(s, n)
  if not s.wanted[n] or s.retrying[n] then return end
  local wait = s.backoff[n] or s.backoff_min
  s.backoff[n] = min(wait * 2, s.backoff_max)
  s.retrying[n] = true
  mb.send_after(wait, mb.self(), mb.tuple(RETRY, n))
end

local function call(s, fname, ...)
  local f = s.module[fname]
  if type(f) ~= "function" then return true end
  local ok, r = pcall(f, ...)
  if not ok then
    s.topology.log("error", "the strategy's %s raised: %s", fname, tostring(r))
    return false
  end
  if fname ~= "terminate" and r ~= nil then s.state = r end
  return true
end

-- ---------------------------------------------------------------------------
-- GenServer callbacks

function M.init(args)
  local name, spec = tostring(args.name), args.spec
  local cluster = require "moonbeam.cluster"
  local module, why = cluster.strategy_module(spec.strategy)
  if not module then
    logger.error("cluster %s: %s; the topology does not start", name, why)
    return "ignore"
  end
  if mb.node() == atom("nonode@nohost") then
    logger.error("cluster %s: this node is not distributed (start it with a "
      .. "name); the topology does not start", name)
    return "ignore"
  end
  local config = type(spec.config) == "table" and spec.config or {}
  local s = {name = name, config = config, module = require(module),
             wanted = {}, up = {}, dialling = {}, retrying = {}, backoff = {},
             backoff_min = tonumber(config.backoff_min) or 500,
             backoff_max = tonumber(config.backoff_max) or 30000}
  s.topology = handle(s)
  mb.monitor_nodes(true)
  local ok, state, err = pcall(s.module.init, config, s.topology)
  if not ok or state == nil then
    logger.error("cluster %s: strategy %s did not start: %s; the topology "
      .. "does not start", name, spec.strategy, tostring(ok and err or state))
    return "ignore"
  end
  s.state = state
  s.interval = tonumber(config.polling_interval) or s.module.POLL_INTERVAL
  if type(s.module.poll) == "function" then mb.send(mb.self(), POLL) end
  return "ok", s
end

local function nodedown(s, n)
  local was_up = s.up[n]
  s.up[n] = nil
  if s.dialling[n] then
    s.dialling[n] = nil
    if not was_up then
      local level = s.backoff[n] and "debug" or "warning"
      s.topology.log(level, "unable to connect to %s", tostring(n))
    end
  end
  if was_up and s.wanted[n] then
    s.topology.log("info", "%s is down; reconnecting", tostring(n))
    s.backoff[n] = nil
  end
  retry_later(s, n)
end

local function nodeup(s, n)
  if s.dialling[n] then
    s.dialling[n] = nil
    mb.monitor_node(n, false)
  end
  if s.wanted[n] and not s.up[n] then
    s.topology.log("info", "connected to %s", tostring(n))
  end
  s.up[n] = true
  s.backoff[n] = nil
end

function M.handle_info(m, s)
  if m == POLL then
    call(s, "poll", s.state, s.topology)
    if s.interval then mb.send_after(s.interval, mb.self(), POLL) end
  elseif typeof(m) == "tuple" and m[1] == NODEUP then
    nodeup(s, m[2])
  elseif typeof(m) == "tuple" and m[1] == NODEDOWN then
    nodedown(s, m[2])
  elseif typeof(m) == "tuple" and m[1] == RETRY then
    local n = m[2]
    s.retrying[n] = nil
    if s.wanted[n] then M.dial(s, n) end
  else
    call(s, "handle_info", m, s.state, s.topology)
  end
  return "noreply", s
end

function M.terminate(_, s)
  call(s, "terminate", s.state, s.topology)
end


return M
