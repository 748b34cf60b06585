--- TCP sockets owned by processes, with gen_tcp's API.
--
--   local gen_tcp = require "moonbeam.gen_tcp"
--   local l = assert(gen_tcp.listen(0, {packet = "line", active = false}))
--   local sock = assert(gen_tcp.accept(l))
--   local line = gen_tcp.recv(sock, 0, 5000)   -- "hello\n", or nil, reason
--   gen_tcp.send(sock, line)
--
-- A socket is owned by the process that opened or accepted it (its
-- controlling process) and is closed when that process ends.  In active
-- mode (the default, as in gen_tcp) data arrive as messages to the owner:
--
--   {tcp, Sock, Data}        one packet (raw: what one read returned)
--   {tcp_closed, Sock}       the peer closed; the socket is gone
--   {tcp_error, Sock, Why}   before tcp_closed, when the stream failed
--   {tcp_passive, Sock}      an {active = N} count is spent
--
-- `active = "once"` or a count N are the backpressure: nothing more is read
-- from the peer until the owner asks again with setopts.  With
-- `active = false`, recv takes packets one at a time.
--
-- Options (a table): active (true | false | "once" | N), packet (0 or
-- "raw", 1, 2, 4, "line"), packet_size (largest packet or line: 64 KiB for
-- lines and 8 MiB for length prefixes unless given), nodelay, keepalive,
-- reuseaddr, sndbuf, recbuf, backlog, send_timeout (ms), ip (listen
-- address), inet6, mode = "binary" (data are always strings).
--
-- Functions that can fail at run time return nil and a reason atom
-- (closed, timeout, econnrefused, nxdomain, emsgsize, not_owner, ...), as
-- gen_tcp returns {error, Reason}; misuse (a bad option, not a socket)
-- raises.  See docs/sockets.md.
local mb = require "moonbeam"
local sock = require "moonbeam.socket"

local receive, send, self = mb.receive, mb.send, mb.self
local atom, typeof = mb.atom, mb.typeof
local OK = atom.ok
local type = type

local M = {}

--- Wait for the I/O loop's answer to the request `ref` (what the
-- moonbeam.socket functions return), as gen_udp, ssl and port do too.
-- @return its value (true when there is none), or nil and the reason
-- The prefilter {[ref] = true} lets through only tables that start with
-- ref, so the matcher has nothing left to check (and no closure is made
-- per call).
local function yes() return true end

local function await(ref)
  local msg = receive(yes, nil, {[ref] = true})
  if msg[2] == OK then
    if msg[3] == nil then return true end
    return msg[3]
  end
  return nil, msg[3]
end
M.await = await

--- Connect to host:port, or to a Unix-domain socket.
-- @param host an IPv4 or IPv6 address, or a name (resolved off the
--   schedulers; IPv4 unless opts.inet6); or {path = "/run/x.sock"} for a
--   Unix-domain socket (Erlang's {local, Path})
-- @param port 1..65535 (ignored with a path)
-- @param opts options table (see above), or nil
-- @param timeout ms, or nil for none
-- @return the socket, owned by the caller; or nil, reason
function M.connect(host, port, opts, timeout)
  return await(sock.connect(host, port, opts, timeout))
end

--- Listen on a port (0: any free port; see M.port), or on a Unix-domain
-- socket: {path = "/run/x.sock"} (the file must not exist; remove it
-- after closing).
-- @return the listening socket, or nil, reason (eaddrinuse, ...)
function M.listen(port, opts)
  return await(sock.listen(port, opts))
end

--- Wait for the next connection; it belongs to the caller and has the
-- listening socket's options.  Processes waiting on one listening socket
-- are served in the order they asked (a pool of acceptors).
-- @param timeout ms, or nil for none
-- @return the socket, or nil, reason (timeout, closed)
function M.accept(lsock, timeout)
  return await(sock.accept(lsock, timeout))
end

--- Send data (with its length prefix in packet 1/2/4 mode).  Returns once
-- the kernel has the bytes: a slow peer makes the sender wait.
-- @return true, or nil, reason
function M.send(s, data)
  return await(sock.send(s, data))
end

--- Take a packet in passive mode.
-- @param length in raw mode, exactly this many bytes (0: what is there)
-- @param timeout ms, or nil for none
-- @return the data, or nil, reason (closed, timeout, einval when active)
function M.recv(s, length, timeout)
  return await(sock.recv(s, length or 0, timeout))
end

--- Change options (inet:setopts), e.g. {active = "once"}.
-- @return true, or nil, reason
function M.setopts(s, opts)
  return await(sock.setopts(s, opts))
end

--- Close the socket; always true, as gen_tcp:close returns ok.
function M.close(s)
  await(sock.close(s))
  return true
end

--- Close one direction: "read", "write" or "read_write".
function M.shutdown(s, how)
  return await(sock.shutdown(s, how))
end

local function pass_on(s, to)
  local tags = {[atom.tcp] = true, [atom.tcp_closed] = true,
                [atom.tcp_error] = true, [atom.tcp_passive] = true,
                [atom.udp] = true, [atom.udp_passive] = true,
                [atom.ssl] = true, [atom.ssl_closed] = true,
                [atom.ssl_error] = true, [atom.ssl_passive] = true}
  while true do
    local msg = receive(function(m)
      return type(m) == "table" and m[2] == s
    end, 0, tags)
    if msg == nil then break end
    send(to, msg)
  end
  -- A port's messages lead with the port: {Port, {data, Data}}.
  while true do
    local msg = receive(function(m)
      return type(m) == "table" and m[1] == s
    end, 0, {[s] = true})
    if msg == nil then return end
    send(to, msg)
  end
end

--- Make another process the owner.  Only the owner may; the socket's
-- messages already in the caller's mailbox go to the new owner first, in
-- order, as gen_tcp does.
-- @return true, or nil, reason (not_owner, closed)
function M.controlling_process(s, pid)
  if typeof(pid) ~= "pid" then
    error("bad argument #2 to 'controlling_process' (pid expected, got "
      .. typeof(pid) .. ")", 2)
  end
  local ok, why = await(sock.controlling_process(s, pid))
  if not ok then return nil, why end
  if pid ~= self() then pass_on(s, pid) end
  -- Delivery resumes, to the new owner.
  return await(sock.setopts(s, {}))
end

local function name(ask, s)
  local v, why = await(ask(s))
  if not v then return nil, why end
  return v[1], v[2]
end

--- The local address and port: "127.0.0.1", 4000 (inet:sockname); a
-- Unix-domain socket's path and 0.
function M.sockname(s) return name(sock.sockname, s) end

--- The peer's address and port (inet:peername).
function M.peername(s) return name(sock.peername, s) end

--- The local port number (inet:port).
function M.port(s)
  local _, port = name(sock.sockname, s)
  return port
end

--- Is v a socket?
M.is_socket = sock.is_socket

return M
