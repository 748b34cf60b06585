--- One HTTP/1.1 connection: read a request head ({packet, http}), its body
-- in raw mode, answer, and again while the client keeps the connection.
local mb = require "moonbeam"
local gen_tcp = require "moonbeam.gen_tcp"
local kv = require "kv.server"

local M = {}

local MAX_BODY = 1024 * 1024
local IDLE_MS = 60000

--- Start a connection process, linked to http_conns; it waits for its
-- socket from the acceptor.
function M.start_link()
  return mb.spawn_link("http.connection", "run")
end

local REASONS = {[200] = "OK", [204] = "No Content", [400] = "Bad Request",
                 [404] = "Not Found", [405] = "Method Not Allowed",
                 [413] = "Payload Too Large"}

local COMMAND = mb.atom.command

-- Answer a request.  On a connection that stays open the answer goes as
-- a message to the socket, as Erlang's Port ! {self(), {command, Data}}:
-- the I/O loop writes it in order with what follows, and the process
-- need not wait for the loop's answer (a write that fails shows as the
-- socket closed at the next recv).  Before a close, it waits, so that
-- the answer is out before the socket closes.
local function respond(s, status, body, close)
  body = body or ""
  local text = ("HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s")
    :format(status, REASONS[status], #body, close and "connection: close\r\n" or "", body)
  if close then return gen_tcp.send(s, text) end
  mb.send(s, mb.tuple(mb.self(), mb.tuple(COMMAND, text)))
  return true
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- The routes: status and body for a request.
function M.route(method, path, body)
  if path == "/" then
    if method ~= "GET" then return 405 end
    return 200, "Hello from moonbeam!\n"
  end
  local key = path:match("^/kv/(.+)$")
  if not key then return 404, "not found\n" end
  key = unescape(key)
  if method == "GET" then
    local v = kv.get(key)
    if v == nil then return 404, "not found\n" end
    return 200, tostring(v)
  elseif method == "PUT" then
    kv.put(key, body)
    return 204
  end
  return 405
end

-- The head's headers as a table of lower-case names.
local function header_table(list)
  local t = {}
  for i = 1, #list do t[list[i][1]] = list[i][2] end
  return t
end

--- The connection's loop.
function M.run()
  local s = mb.receive(function(m) return m[1] == "socket" end)[2]
  while true do
    local head = gen_tcp.recv(s, 0, IDLE_MS)
    if not head then return end -- closed, idle, or not HTTP
    local method, uri, version = head[2], head[3], head[4]
    local h = header_table(head[5])
    local conn = (h["connection"] or ""):lower()
    local close = conn == "close" or (version[2] == 0 and conn ~= "keep-alive")
    local len = tonumber(h["content-length"] or "0")
    if not len or len < 0 or len > MAX_BODY then
      respond(s, len and 413 or 400, nil, true)
      return
    end
    local body = ""
    if len > 0 then
      gen_tcp.setopts(s, {packet = "raw"})
      body = gen_tcp.recv(s, len, IDLE_MS)
      if not body then return end
      gen_tcp.setopts(s, {packet = "http"})
    end
    local status, text = M.route(method, uri:match("^[^?]*"), body)
    if not respond(s, status, text, close) or close then
      gen_tcp.close(s)
      return
    end
  end
end

return M
