--- The gossip strategy, libcluster's Cluster.Strategy.Gossip: UDP
-- multicast heartbeats that say which node sent them; a node that hears
-- one connects to its sender. The heartbeat is libcluster's,
-- "heartbeat::" followed by term_to_binary(#{node => Node}), so Elixir
-- nodes running that strategy and moonbeam nodes find each other.
--
--   {strategy = "gossip", config = {
--     port = 45892, if_addr = "0.0.0.0", multicast_addr = "230.1.1.251",
--     multicast_if = nil,           -- the interface's address to send and
--                                   -- join on (default: the kernel's)
--     multicast_ttl = 1, secret = nil,
--     heartbeat_interval = 5000}}   -- heartbeats come at random, at most
--                                   -- this many ms apart, as libcluster's
--
-- With a secret, each heartbeat is encrypted as libcluster does it:
-- AES-256-CBC with the SHA-256 of the secret as the key, a random 16-byte
-- IV sent before the ciphertext, PKCS #7 padding. A heartbeat that does
-- not decrypt, does not parse, or names no node is ignored: nodes that do
-- not share the secret do not connect.
local mb = require "moonbeam"
local gen_udp = require "moonbeam.gen_udp"
local term = require "moonbeam.term"
local crypto = require "moonbeam.crypto"

local atom, typeof = mb.atom, mb.typeof
local type, tostring, tonumber, pcall = type, tostring, tonumber, pcall
local byte, rep, sub = string.byte, string.rep, string.sub

local M = {}

local PREFIX = "heartbeat::"
local HEARTBEAT = "$gossip_heartbeat"
local UDP, NODE = atom.udp, atom.node

-- PKCS #7: pad to whole 16-byte blocks with bytes that say how many.
local function pad(text)
  local n = 16 - #text % 16
  return text .. rep(string.char(n), n)
end

-- libcluster's unpadding: the last byte says how many bytes of padding,
-- at most 16, each of that value.
local function unpad(text)
  if text == "" then return nil end
  local n = byte(text, -1)
  if n > 16 or n > #text or sub(text, -n) ~= rep(string.char(n), n) then return nil end
  return sub(text, 1, #text - n)
end

--- A heartbeat of `node`, encrypted with `secret` if it is given.
function M.encode(node, secret)
  local text = PREFIX .. term.term_to_binary(mb.map{[NODE] = node})
  if not secret then return text end
  local iv = crypto.strong_rand_bytes(16)
  return iv .. crypto.aes_256_cbc(crypto.hash("sha256", secret), iv, pad(text), true)
end

--- The node a heartbeat names, or nil for anything else.
function M.decode(packet, secret)
  if secret then
    if #packet < 32 then return nil end
    local plain = crypto.aes_256_cbc(crypto.hash("sha256", secret),
      sub(packet, 1, 16), sub(packet, 17), false)
    packet = plain and unpad(plain)
    if not packet then return nil end
  end
  if sub(packet, 1, #PREFIX) ~= PREFIX then return nil end
  local ok, t = pcall(term.binary_to_term, sub(packet, #PREFIX + 1))
  if not ok or typeof(t) ~= "map" then return nil end
  local node = t[NODE]
  if typeof(node) ~= "atom" or not tostring(node):match("^[^@]+@[^@]+$") then return nil end
  return node
end

local function next_heartbeat(state)
  mb.send_after(math.random(1, state.interval), mb.self(), HEARTBEAT)
end

function M.init(config)
  local secret = config.secret
  if secret ~= nil and type(secret) ~= "string" then
    return nil, "config.secret must be a string"
  end
  local group = config.multicast_addr or "230.1.1.251"
  local iface = config.multicast_if
  local port = tonumber(config.port) or 45892
  local opts = {active = true, ip = config.if_addr or "0.0.0.0", reuseaddr = true,
                multicast_ttl = tonumber(config.multicast_ttl) or 1,
                multicast_loop = true, add_membership = {group, iface or "0.0.0.0"}}
  if iface then opts.multicast_if = iface end
  local ok, s, why = pcall(gen_udp.open, port, opts)
  if not ok or not s then
    return nil, ("cannot open the gossip socket on port %d: %s"):format(port,
      tostring(ok and why or s))
  end
  local state = {socket = s, group = group, port = port, secret = secret,
                 interval = math.max(1, math.floor(tonumber(config.heartbeat_interval) or 5000))}
  mb.send(mb.self(), HEARTBEAT) -- the first at once, as libcluster's
  return state
end

function M.handle_info(m, state, topology)
  if m == HEARTBEAT then
    local ok, why = gen_udp.send(state.socket, state.group, state.port,
      M.encode(mb.node(), state.secret))
    if not ok then topology.log("warning", "a heartbeat was not sent: %s", tostring(why)) end
    next_heartbeat(state)
  elseif typeof(m) == "tuple" and m[1] == UDP then
    local node = M.decode(m[5], state.secret)
    if node and node ~= mb.node() then topology.connect({node}) end
  end
  return state
end

function M.terminate(state)
  gen_udp.close(state.socket)
end

return M
