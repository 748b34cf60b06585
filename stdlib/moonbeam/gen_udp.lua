--- UDP sockets owned by processes, with gen_udp's API.
--
--   local gen_udp = require "moonbeam.gen_udp"
--   local s = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
--   gen_udp.send(s, "127.0.0.1", 4000, "ping")
--   local ip, port, data = gen_udp.recv(s, 0, 1000)
--
-- As with gen_tcp, the socket belongs to the process that opened it and
-- closes when that process ends.  In active mode (the default) datagrams
-- arrive as {udp, Sock, Address, Port, Data} (Address a string), and
-- {udp_passive, Sock} when an {active = N} count is spent; once and N stop
-- reading until the owner asks again, and the kernel keeps (or drops)
-- what comes meanwhile, as UDP does.  Options: active, ip, reuseaddr,
-- sndbuf, recbuf, inet6, and for IPv4 multicast, as inet's:
-- add_membership = {group, interface} (addresses as strings: join the
-- group on the interface of that address), multicast_if = address (send
-- on that interface), multicast_ttl = n, multicast_loop = true/false.
local sock = require "moonbeam.socket"
local gen_tcp = require "moonbeam.gen_tcp"

local M = {}

local await = gen_tcp.await

--- Open a socket on port (0: any free port).
-- @return the socket, or nil, reason
function M.open(port, opts)
  return await(sock.udp_open(port, opts))
end

--- Send a datagram to host:port: an IPv4 or IPv6 address, or a name,
-- resolved on the I/O loop's thread pool (never on a scheduler).
-- @return true, or nil, reason (nxdomain for a name without an address)
function M.send(s, ip, port, data)
  return await(sock.udp_send(s, ip, port, data))
end

--- Take a datagram in passive mode.
-- @return address, port, data; or nil, reason (timeout, closed, einval
--   when active)
function M.recv(s, length, timeout)
  local v, why = await(sock.recv(s, length or 0, timeout))
  if not v then return nil, why end
  return v[1], v[2], v[3]
end

M.setopts = gen_tcp.setopts
M.close = gen_tcp.close
M.controlling_process = gen_tcp.controlling_process
M.sockname = gen_tcp.sockname
M.port = gen_tcp.port

return M
