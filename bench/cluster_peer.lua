-- A node of bench/cluster.lua: `cluster_peer.lua MODE N I ROUND CTL_PORT
-- GOSSIP_PORT INTERVAL`, started with --name cROUND_I@127.0.0.1. Says
-- "ready I PORT" to the driver's UDP port, starts its topology on "go",
-- says "meshed I" once connected to the N-1 others, and runs on until
-- stopped.
local mb = require "moonbeam"
local gen_udp = require "moonbeam.gen_udp"

local mode, n, i, round, ctl_port, gossip_port, interval = arg[1], tonumber(arg[2]),
  tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7])

local s = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
gen_udp.send(s, "127.0.0.1", ctl_port, ("ready %d %d"):format(i, gen_udp.port(s)))
repeat
  local _, _, data = gen_udp.recv(s, 0)
until data == "go"

mb.monitor_nodes(true)
local config
if mode == "static" then
  local hosts = {}
  for k = 1, n do
    if k ~= i then hosts[#hosts + 1] = ("c%d_%d@127.0.0.1"):format(round, k) end
  end
  config = {strategy = "epmd", config = {hosts = hosts, backoff_min = 50, backoff_max = 500}}
else
  config = {strategy = "gossip", config = {port = gossip_port, multicast_if = "127.0.0.1",
    heartbeat_interval = interval, secret = "bench"}}
end
require("moonbeam.cluster").start{bench = config}
while #mb.nodes() < n - 1 do mb.receive() end
gen_udp.send(s, "127.0.0.1", ctl_port, ("meshed %d"):format(i))
-- The node lives as long as this process: it takes what comes until the
-- driver stops it.
while true do mb.receive() end
