--- A small DNS client for the DNS polling strategy: the A records of a
-- name, asked of one name server over UDP (gen_udp), so that the server
-- and its port can be chosen, which the system's resolver does not allow.
--
--   local dns = require "moonbeam.cluster.dns"
--   dns.a_records("app.internal", "127.0.0.1", 53)  --> {"10.0.0.5", ...}
local mb = require "moonbeam"
local gen_udp = require "moonbeam.gen_udp"
local crypto = require "moonbeam.crypto"

local byte, char, pack, unpack = string.byte, string.char, string.pack, string.unpack
local concat, format = table.concat, string.format
local pcall = pcall

local M = {}

local TYPE_A, CLASS_IN = 1, 1
local RCODES = {[1] = "formerr", [2] = "servfail", [3] = "nxdomain",
                [4] = "notimp", [5] = "refused"}

--- A query for the A records of `name` with the id `id`.
function M.query(id, name)
  local labels = {}
  for label in name:gsub("%.$", ""):gmatch("[^.]+") do
    if #label > 63 then return nil, "a label longer than 63 bytes" end
    labels[#labels + 1] = char(#label) .. label
  end
  -- id, flags (recursion desired), one question, no other records
  return pack(">I2I2I2I2I2I2", id, 0x0100, 1, 0, 0, 0) .. concat(labels)
    .. "\0" .. pack(">I2I2", TYPE_A, CLASS_IN)
end

-- The position after the name at `pos` (labels, or a pointer that ends it).
local function skip_name(msg, pos)
  while true do
    local len = byte(msg, pos)
    if len == nil then error("truncated name") end
    if len == 0 then return pos + 1 end
    if len >= 0xC0 then return pos + 2 end
    if len >= 0x40 then error("bad label") end
    pos = pos + 1 + len
  end
end

local function parse(msg, id)
  local rid, flags, qd, an = unpack(">I2I2I2I2", msg)
  if rid ~= id or flags & 0x8000 == 0 then return nil, "not the answer" end
  local rcode = flags & 0x0F
  if rcode == 3 then return {} end -- no such name: no address
  if rcode ~= 0 then return nil, RCODES[rcode] or ("rcode " .. rcode) end
  local pos = 13
  for _ = 1, qd do pos = skip_name(msg, pos) + 4 end
  local out = {}
  for _ = 1, an do
    pos = skip_name(msg, pos)
    local rtype, class, _, rdlen, next_pos = unpack(">I2I2I4I2", msg, pos)
    if next_pos + rdlen - 1 > #msg then error("truncated record") end
    if rtype == TYPE_A and class == CLASS_IN and rdlen == 4 then
      out[#out + 1] = format("%d.%d.%d.%d", byte(msg, next_pos, next_pos + 3))
    end
    pos = next_pos + rdlen
  end
  return out
end

--- Parse an answer to the query with id `id`.
-- @return a list of IPv4 addresses (strings); or nil and a reason
function M.parse(msg, id)
  if #msg < 12 then return nil, "a truncated answer" end
  local ok, r, why = pcall(parse, msg, id)
  if not ok then return nil, "a malformed answer" end
  return r, why
end

--- The A records of `name`, asked of server:port.
-- @param timeout ms to wait for the answer (default 2000)
-- @return a list of IPv4 addresses (strings), empty for a name that does
--   not exist; or nil and a reason (timeout, servfail, ...)
function M.a_records(name, server, port, timeout)
  local id = unpack(">I2", crypto.strong_rand_bytes(2))
  local q, why = M.query(id, name)
  if not q then return nil, why end
  local s, err = gen_udp.open(0, {active = false})
  if not s then return nil, err end
  local ok, serr = gen_udp.send(s, server, port or 53, q)
  if not ok then
    gen_udp.close(s)
    return nil, serr
  end
  local deadline = mb.monotonic_time() + math.floor(timeout or 2000) * 1000000
  local result, reason = nil, "timeout"
  while true do
    local left = (deadline - mb.monotonic_time()) // 1000000
    if left <= 0 then break end
    local addr, why_or_port, data = gen_udp.recv(s, 0, left)
    if not addr then
      reason = why_or_port or "timeout"
      break
    end
    -- Only the server's answer counts (when it is given as an address).
    local r, rwhy = nil, "not the answer"
    if addr == server or not server:match("^[%d.]+$") then r, rwhy = M.parse(data, id) end
    if r or rwhy ~= "not the answer" then
      result, reason = r, rwhy
      break
    end
  end
  gen_udp.close(s)
  if result then return result end
  return nil, reason
end

--- The first name server of /etc/resolv.conf, or 127.0.0.1.
function M.system_server()
  local f = io.open("/etc/resolv.conf")
  if f then
    for line in f:lines() do
      local ip = line:match("^%s*nameserver%s+(%S+)")
      if ip then
        f:close()
        return ip
      end
    end
    f:close()
  end
  return "127.0.0.1"
end


return M
