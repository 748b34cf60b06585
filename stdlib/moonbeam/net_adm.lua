--- Erlang's net_adm for Lua: the hosts of a cluster from a host file,
-- the nodes EPMD knows on a host, and the nodes that answer a ping.
--
--   local net_adm = require "moonbeam.net_adm"
--   net_adm.host_file()          --> {atom "a.example.com", ...}
--   net_adm.names("127.0.0.1")   --> {{"kv", 40213}, ...}
--   net_adm.world()              --> the nodes that answered, this one too
--
-- The host file is Erlang's `.hosts.erlang`: Erlang terms, one host name
-- (an atom) a term, each ended by a full stop:
--
--   'a.example.com'.
--   'b.example.com'.  % comments run to the end of the line
--
-- It is read from the path of the `moonbeam` application's `hosts_file`
-- (the launcher's --hosts sets it) if that is set, else from the current
-- directory, else from the home directory, as net_adm reads it.
local mb = require "moonbeam"
local gen_tcp = require "moonbeam.gen_tcp"
local dist = require "moonbeam.dist"

local format, concat = string.format, table.concat
local type, ipairs, tostring = type, ipairs, tostring

local M = {}

local FILE = ".hosts.erlang"
local NAMES_REQ = "\0\1n" -- EPMD's NAMES_REQ: length 1, then 110
local NAMES_TIMEOUT = 5000

-- ---------------------------------------------------------------------------
-- The host file: Erlang terms, each an atom (or a string) and a full stop.

-- Erlang's escapes in quoted atoms and strings, the ones a host name can
-- need.
local ESCAPES = {n = "\n", t = "\t", s = " ", ["\\"] = "\\", ["'"] = "'", ['"'] = '"'}

-- Read a quoted atom or string starting at i (the opening quote); returns
-- the text and the position after the closing quote, or nil.
local function quoted(text, i)
  local q, out, j = text:sub(i, i), {}, i + 1
  while j <= #text do
    local c = text:sub(j, j)
    if c == q then return concat(out), j + 1 end
    if c == "\\" then
      local e = text:sub(j + 1, j + 1)
      out[#out + 1] = ESCAPES[e] or e
      j = j + 2
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
  return nil
end

--- Parse the text of a host file.
-- @param text the file's contents
-- @param name the file's name, for the errors
-- @return a list of host names (atoms), or nil and "file:line: why"
function M.parse_hosts(text, name)
  local hosts, i, line = {}, 1, 1
  local function fail(why) return nil, format("%s:%d: %s", name, line, why) end
  local term, term_line -- the host of the term being read, until its full stop
  while i <= #text do
    local c = text:sub(i, i)
    if c == "\n" then
      line, i = line + 1, i + 1
    elseif c:match("%s") then
      i = i + 1
    elseif c == "%" then
      i = (text:find("\n", i, true) or #text + 1)
    elseif c == "'" or c == '"' then
      if term then return fail("a full stop expected after " .. term) end
      local s, j = quoted(text, i)
      if not s then return fail("a quote is not closed") end
      term_line = line
      line = line + select(2, text:sub(i, j - 1):gsub("\n", ""))
      term, i = s, j
    elseif c:match("%l") then
      if term then return fail("a full stop expected after " .. term) end
      local s = text:match("^[%w_@]+", i)
      term, term_line, i = s, line, i + #s
    elseif c == "." and term then
      local after = text:sub(i + 1, i + 1)
      if after ~= "" and not after:match("%s") and after ~= "%" then
        return fail("a full stop must end a term")
      end
      if term == "" then return fail("an empty host name") end
      hosts[#hosts + 1] = mb.atom(term)
      term, i = nil, i + 1
    else
      return fail(format("a host name (an atom such as 'host.example.com') "
        .. "expected, got '%s'", text:match("^%S+", i)))
    end
  end
  if term then
    line = term_line
    return fail("a full stop expected after " .. term)
  end
  return hosts
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- The configured host file, if there is one.
local function configured_file()
  if mb.whereis("application_controller") == nil then return nil end
  local v = require("moonbeam.application").get_env("moonbeam", "hosts_file")
  return type(v) == "string" and v or nil
end

--- The hosts of the host file, as net_adm:host_file/0.
-- @param path a file to read instead of the configured or usual ones
-- @return a list of host names (atoms); or nil and a message: the file
--   does not parse, or none was found ("no .hosts.erlang in ...")
function M.host_file(path)
  local candidates
  path = path or configured_file()
  if path then
    candidates = {path}
  else
    candidates = {FILE}
    local home = os.getenv("HOME")
    if home and home ~= "" then candidates[2] = home .. "/" .. FILE end
  end
  for _, file in ipairs(candidates) do
    local text = read_file(file)
    if text then return M.parse_hosts(text, file) end
  end
  return nil, format("no %s in %s", path and "host file" or FILE,
    concat(candidates, " or "))
end

-- ---------------------------------------------------------------------------
-- Hosts and nodes

--- This host's name, as net_adm:localhost/0: the host part of this node's
-- name once distribution is started, else the name the system gives.
function M.localhost()
  local node = tostring(mb.node())
  if node ~= "nonode@nohost" then return (node:match("@(.*)$")) end
  local f = io.open("/proc/sys/kernel/hostname")
  local name = f and f:read("l")
  if f then f:close() end
  return name or os.getenv("HOSTNAME") or "localhost"
end

-- Parse EPMD's answer to NAMES_REQ: "name N at port P\n" lines.
local function parse_names(text)
  local out = {}
  for name, port in text:gmatch("name (%S+) at port (%d+)") do
    out[#out + 1] = {name, tonumber(port)}
  end
  return out
end

--- The names EPMD on `host` has registered, as net_adm:names/1.
-- @param host a host name or address (default: this host)
-- @return a list of {name, port} pairs; or nil and "address" when no
--   EPMD answers there, as net_adm's {error, address}
function M.names(host)
  host = host and tostring(host) or M.localhost()
  local s = gen_tcp.connect(host, mb.epmd_port(), {active = false}, NAMES_TIMEOUT)
  if not s then return nil, "address" end
  local ok = gen_tcp.send(s, NAMES_REQ)
  local chunks = {}
  while ok do
    local data = gen_tcp.recv(s, 0, NAMES_TIMEOUT)
    if not data then break end
    chunks[#chunks + 1] = data
  end
  gen_tcp.close(s)
  local text = concat(chunks)
  if #text < 4 then return nil, "address" end
  return parse_names(text:sub(5))
end

--- Ping a node, as net_adm:ping/1.
-- @return "pong" if it answers, "pang" if not
function M.ping(node)
  node = type(node) == "string" and mb.atom(node) or node
  if node == mb.node() and tostring(node) ~= "nonode@nohost" then return "pong" end
  return dist.ping(node)
end

--- The nodes of the hosts that answer a ping, as net_adm:world_list/1,2:
-- names(host) on each host, then ping on each node found. This node
-- counts if EPMD on one of the hosts knows it.
-- @param hosts a list of host names (atoms or strings)
-- @param verbose true: print each host's nodes, as net_adm's verbose
-- @return a list of node names (atoms)
function M.world_list(hosts, verbose)
  local found = {}
  for _, host in ipairs(hosts) do
    host = tostring(host)
    local names = M.names(host)
    if verbose then
      io.stdout:write(format("%s: %s\n", host, names and #names .. " node(s)"
        or "no epmd answers"))
    end
    for _, entry in ipairs(names or {}) do
      local node = mb.atom(entry[1] .. "@" .. host)
      if M.ping(node) == "pong" then
        found[#found + 1] = node
        if verbose then io.stdout:write(format("  %s pong\n", node)) end
      end
    end
  end
  return found
end

--- world_list on the hosts of the host file, as net_adm:world/0,1.
-- Raises when the host file cannot be read or does not parse.
function M.world(verbose)
  local hosts, why = M.host_file()
  if not hosts then error("world: " .. why, 2) end
  return M.world_list(hosts, verbose)
end

return M
