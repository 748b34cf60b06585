--- TLS sockets owned by processes, with the API of gen_tcp (and of
-- Erlang's ssl where it differs), on OpenSSL.
--
--   local ssl = require "moonbeam.ssl"
--   local s = assert(ssl.connect("example.org", 443, {active = false}))
--   ssl.send(s, "GET / HTTP/1.1\r\nhost: example.org\r\n\r\n")
--
-- A client checks the server's certificate by default, against the
-- system's trusted certificates (or cacertfile), and the name connected to
-- (or server_name_indication), which it also sends as SNI.  A server gives
-- certfile and keyfile; with verify = "verify_peer" it asks for a client
-- certificate, and with fail_if_no_peer_cert = true it refuses a client
-- without one (mutual TLS).  ALPN: alpn_advertised_protocols (client) and
-- alpn_preferred_protocols (server), lists of names.
--
-- Messages are gen_tcp's with ssl in place of tcp: {ssl, Sock, Data},
-- {ssl_closed, Sock}, {ssl_error, Sock, Reason}, {ssl_passive, Sock}.
-- accept returns once the handshake is done; a peer that does not finish
-- it within handshake_timeout (15 s) is dropped, and accept returns nil,
-- timeout.  Failures: nil and bad_certificate, handshake_failure,
-- no_application_protocol, bad_certfile, bad_keyfile, bad_cacertfile, or
-- gen_tcp's reasons.
local sock = require "moonbeam.socket"
local gen_tcp = require "moonbeam.gen_tcp"

local pairs = pairs

local M = {}

local await = gen_tcp.await

local function with_tls(opts)
  local o = {tls = true}
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

--- Connect and complete the handshake.
-- @return the socket, or nil, reason
function M.connect(host, port, opts, timeout)
  return await(sock.connect(host, port, with_tls(opts), timeout))
end

--- Listen for TLS connections (certfile and keyfile are needed).
function M.listen(port, opts)
  return await(sock.listen(port, with_tls(opts)))
end

--- Accept a connection and complete its handshake.
-- @return the socket, or nil, reason (the handshake's failure, timeout)
function M.accept(lsock, timeout)
  return await(sock.accept(lsock, timeout))
end

--- The protocol ALPN chose, or nil, not_found.
function M.negotiated_protocol(s)
  return await(sock.sockname(s, 2))
end

--- The subject of the peer's certificate ("/CN=..."), or nil, not_found.
function M.peer_subject(s)
  return await(sock.sockname(s, 3))
end

M.send = gen_tcp.send
M.recv = gen_tcp.recv
M.setopts = gen_tcp.setopts
M.close = gen_tcp.close
M.shutdown = gen_tcp.shutdown
M.controlling_process = gen_tcp.controlling_process
M.sockname = gen_tcp.sockname
M.peername = gen_tcp.peername
M.port = gen_tcp.port

return M
