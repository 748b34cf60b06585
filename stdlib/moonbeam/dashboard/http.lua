--- The dashboard's HTTP server: an acceptor, and one process per
-- connection under the dynamic supervisor dashboard_conns, as
-- examples/http does.
--
--   GET  /                     the page (www/index.html), /app.js, /style.css
--   GET  /vendor/FILE          the chart library installed by the build
--   GET  /health               200 when every permanent application runs,
--                              else 503; a small JSON body
--   GET  /api/node             data.node()          (?node=NAME: another
--   GET  /api/processes        data.processes()      moonbeam node, over
--   GET  /api/process?pid=P    data.process()        distribution)
--   GET  /api/state?pid=P      data.state()
--   GET  /api/applications     data.applications()
--   GET  /api/cluster          data.cluster()
--   GET  /api/log?after=N      data.log()
--   POST /api/kill?pid=P       data.kill()
--   POST /api/trace?pid=P&...  start a trace (see moonbeam.dashboard.tracer)
--   POST /api/trace/stop       stop it
--   POST /api/reload?module=M  data.reload()
--   GET  /events               server-sent events: a sample and the new
--                              log lines each second
--   GET  /events?trace=ID      the trace's events, as they come
--
-- Bad input gets an HTTP error and closes that connection only: an
-- unknown process 404, a request line longer than MAX_URI 414, headers
-- larger than MAX_HEADERS 431, a body 413, a head not complete within
-- request_timeout (10 s; also how long a kept-alive connection may stay
-- idle) 408, a missing or wrong token 401, more than
-- MAX_CONNS connections 503.  A head larger than HEAD_LIMIT is not read
-- at all: the socket layer closes the connection (see docs/sockets.md).
local mb = require "moonbeam"
local gen_tcp = require "moonbeam.gen_tcp"
local application = require "moonbeam.application"
local ds = require "moonbeam.dynamic_supervisor"
local logger = require "moonbeam.logger"
local json = require "moonbeam.dashboard.json"
local data = require "moonbeam.dashboard.data"
local tracer = require "moonbeam.dashboard.tracer"

local format, concat = string.format, table.concat
local tostring, tonumber, pcall, type, ipairs = tostring, tonumber, pcall, type, ipairs

local M = {}

local APP = "moonbeam_dashboard"
M.MAX_URI = 8192
M.MAX_HEADERS = 16384
M.MAX_BODY = 4096
M.HEAD_LIMIT = 65536
M.MAX_CONNS = 64
local EVENT_MS = 1000

local REASONS = {[200] = "OK", [204] = "No Content", [302] = "Found", [400] = "Bad Request",
                 [401] = "Unauthorized", [404] = "Not Found", [405] = "Method Not Allowed",
                 [409] = "Conflict", [422] = "Unprocessable Content",
                 [408] = "Request Timeout", [413] = "Payload Too Large",
                 [414] = "URI Too Long", [431] = "Request Header Fields Too Large",
                 [500] = "Internal Server Error", [502] = "Bad Gateway",
                 [503] = "Service Unavailable"}

local TYPES = {html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8",
               css = "text/css; charset=utf-8", json = "application/json"}

-- ---------------------------------------------------------------------------
-- The acceptor

local ACK = mb.atom["$dashboard_listening"]

--- Start the acceptor, linked to its supervisor; it returns once the
-- acceptor listens, so that the port is known when the application has
-- started.
-- @return pid, or nil and why it cannot listen
function M.start_link()
  local pid = mb.spawn_link("moonbeam.dashboard.http", "accept_loop", mb.self())
  local ack = mb.receive(function(m)
    return mb.typeof(m) == "tuple" and m[1] == ACK and m[2] == pid
  end, 10000)
  if ack == nil then
    mb.exit(pid, mb.atom.kill)
    return nil, "dashboard: the acceptor did not start"
  end
  if ack[3] ~= true then return nil, ack[3] end
  return pid
end

local CONNECTION = {start = {"moonbeam.dashboard.http", "start_connection", {}},
                    restart = "temporary"}

-- A one-off answer from the acceptor, for a connection it cannot serve.
local function refuse(s, status, text)
  gen_tcp.send(s, format("HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\n"
    .. "content-length: %d\r\nconnection: close\r\n\r\n%s", status, REASONS[status], #text, text))
  gen_tcp.close(s)
end

--- The acceptor's loop: listens on the application's address and gives
-- each connection to a new connection process.
function M.accept_loop(parent)
  local ip = application.get_env(APP, "ip", "127.0.0.1")
  local port = application.get_env(APP, "port", 4040)
  local l, why = gen_tcp.listen(port, {ip = ip, packet = "http", active = false,
    packet_size = M.HEAD_LIMIT, nodelay = true, send_timeout = 5000})
  if not l then
    mb.send(parent, mb.tuple(ACK, mb.self(), format("dashboard: cannot listen on %s:%d: %s",
      ip, port, tostring(why))))
    return
  end
  local bound = gen_tcp.port(l)
  application.set_env(APP, "bound_port", bound)
  logger.notice("dashboard: listening on http://%s:%d/", ip:find(":") and "[" .. ip .. "]" or ip, bound)
  mb.send(parent, mb.tuple(ACK, mb.self(), true))
  while true do
    local s = assert(gen_tcp.accept(l))
    local pid = ds.start_child("dashboard_conns", CONNECTION)
    if pid and gen_tcp.controlling_process(s, pid) then
      mb.send(pid, {"socket", s})
    else
      refuse(s, 503, "too many connections\n")
    end
  end
end

-- ---------------------------------------------------------------------------
-- Requests

local function unescape(s)
  return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local t = {}
  for k, v in (q or ""):gmatch("([^&=]+)=?([^&]*)") do t[unescape(k)] = unescape(v) end
  return t
end

local function parse_cookies(text)
  local t = {}
  for k, v in (text or ""):gmatch("([^%s;=]+)=([^;]*)") do t[k] = v end
  return t
end

-- Equal strings, compared in a time that does not depend on where they
-- differ.
local function same(a, b)
  if type(a) ~= "string" or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (a:byte(i) ~ b:byte(i)) end
  return diff == 0
end

-- The token the request carries: a header, the query, then a cookie.
local function token_of(req)
  local h = req.headers
  local bearer = h["authorization"] and h["authorization"]:match("^[Bb]earer%s+(%S+)")
  return bearer or h["x-moonbeam-token"] or req.query.token or parse_cookies(h["cookie"]).mb_token
end

local function send_response(s, status, body, ctype, extra, close)
  body = body or ""
  local head = {format("HTTP/1.1 %d %s", status, REASONS[status] or "Error"),
                "content-type: " .. (ctype or TYPES.json),
                "content-length: " .. #body,
                "cache-control: no-store",
                "x-content-type-options: nosniff"}
  for _, line in ipairs(extra or {}) do head[#head + 1] = line end
  if close then head[#head + 1] = "connection: close" end
  return gen_tcp.send(s, concat(head, "\r\n") .. "\r\n\r\n" .. body)
end

local function json_error(status, text)
  return status, json.encode({error = text})
end

-- ---------------------------------------------------------------------------
-- Static files

local asset_dirs

-- The directories of the page and of the vendor files: found along
-- package.path, next to this module, as the launcher and the rock install
-- them.
local function find_assets()
  if asset_dirs then return asset_dirs end
  local www, vendor
  for template in package.path:gmatch("[^;]+") do
    local dir = template:match("^(.*)%?%.lua$")
    if dir then
      if not www then
        local f = io.open(dir .. "moonbeam/dashboard/www/index.html")
        if f then f:close() www = dir .. "moonbeam/dashboard/www/" end
      end
      if not vendor then
        local f = io.open(dir .. "moonbeam-dashboard/VERSIONS")
        if f then f:close() vendor = dir .. "moonbeam-dashboard/" end
      end
    end
  end
  asset_dirs = {www = www, vendor = vendor}
  return asset_dirs
end

local function read_file(path)
  local f = path and io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local STATIC = {["/"] = "index.html", ["/index.html"] = "index.html",
                ["/app.js"] = "app.js", ["/style.css"] = "style.css"}

local function static(path)
  local dirs = find_assets()
  local name = STATIC[path]
  local file
  if name then
    file = dirs.www and dirs.www .. name
  else
    name = path:match("^/vendor/([%w][%w._-]*)$")
    if not name then return nil end
    file = dirs.vendor and dirs.vendor .. name
  end
  local text = read_file(file)
  if not text then return nil end
  return 200, text, TYPES[name:match("%.(%w+)$")] or "application/octet-stream"
end

-- ---------------------------------------------------------------------------
-- The API

-- Call data[fn](...) here or on another moonbeam node.
local function fetch(node, fn, ...)
  if node == nil or node == "" or node == tostring(mb.node()) then
    return pcall(data[fn], ...)
  end
  if tostring(mb.node()) == "nonode@nohost" or #node > 255 or not node:match("^[%w_.-]+@[%w_.-]+$") then
    return false, "no such node"
  end
  local known = false
  for _, n in ipairs(mb.nodes("connected")) do known = known or tostring(n) == node end
  if not known then return false, "no such node" end
  local rpc = require "moonbeam.rpc"
  return pcall(rpc.call, node, "moonbeam.dashboard.data", fn, {...}, 5000)
end

--- The answer to /health: every permanent application runs.
function M.health()
  local expected = {}
  local main = application.get_env(APP, "main")
  if main then expected[#expected + 1] = main end
  local running, permanent = {}, {}
  local ok, apps = pcall(application.which_applications)
  for _, app in ipairs(ok and apps or {}) do
    running[app.name] = true
    if app.type == "permanent" then permanent[#permanent + 1] = app.name end
  end
  for _, name in ipairs(application.get_env(APP, "permanent", {})) do
    expected[#expected + 1] = name
  end
  local apps_out, healthy, seen = {}, ok, {}
  for _, list in ipairs({permanent, expected}) do
    for _, name in ipairs(list) do
      if not seen[name] then
        seen[name] = true
        apps_out[#apps_out + 1] = {name = name, running = running[name] == true}
        healthy = healthy and running[name] == true
      end
    end
  end
  -- The permanent applications seen running are expected from now on.
  local known = application.get_env(APP, "permanent", {})
  local added = false
  for _, name in ipairs(permanent) do
    local have = false
    for _, k in ipairs(known) do have = have or k == name end
    if not have then known[#known + 1] = name added = true end
  end
  if added then application.set_env(APP, "permanent", known) end
  return healthy, apps_out
end

local ROUTES = {}

ROUTES["/health"] = function(req)
  local healthy, apps = M.health()
  local body = {status = healthy and "ok" or "unavailable"}
  if req.authorized then body.applications = apps end
  return healthy and 200 or 503, json.encode(body)
end

local function answer(ok, value, why)
  if not ok then return json_error(502, tostring(value)) end
  if value == nil then return json_error(404, why or "not found") end
  return 200, json.encode(value)
end

ROUTES["/api/node"] = function(req) return answer(fetch(req.query.node, "node")) end
ROUTES["/api/processes"] = function(req)
  return answer(fetch(req.query.node, "processes", req.query.sort, tonumber(req.query.limit)))
end
ROUTES["/api/process"] = function(req)
  return answer(fetch(req.query.node, "process", req.query.pid or ""))
end
ROUTES["/api/state"] = function(req)
  return answer(fetch(req.query.node, "state", req.query.pid or ""))
end
ROUTES["/api/applications"] = function(req) return answer(fetch(req.query.node, "applications")) end
ROUTES["/api/cluster"] = function(req) return answer(fetch(nil, "cluster")) end
ROUTES["/api/log"] = function(req)
  return answer(fetch(req.query.node, "log", tonumber(req.query.after) or 0, req.query.level))
end

local POSTS = {}
POSTS["/api/kill"] = function(req)
  local ok, killed = fetch(req.query.node, "kill", req.query.pid or "")
  if not ok then return json_error(502, tostring(killed)) end
  if not killed then return json_error(404, "no such process") end
  return 200, json.encode({killed = req.query.pid})
end

POSTS["/api/reload"] = function(req)
  local name = req.query.module or ""
  if #name > 128 or not name:match("^[%a_][%w_.]*$") then
    return json_error(400, "module: a module's name, as require takes it, expected")
  end
  local ok, r = fetch(req.query.node, "reload", name)
  if not ok then return json_error(502, tostring(r)) end
  if r.not_loaded then return json_error(404, "the node has no module " .. name) end
  if r.error then return json_error(422, r.error) end
  return 200, json.encode(r)
end

-- Tracing is for this node: its tracer must be a process of the traced
-- node, and the events come to this one's streams.
local function local_node(req)
  local node = req.query.node
  return node == nil or node == "" or node == tostring(mb.node())
end

POSTS["/api/trace"] = function(req)
  if not local_node(req) then
    return json_error(400, "tracing from the dashboard is for the node that serves it")
  end
  local t, status, why = tracer.start(req.query)
  if not t then return json_error(status, why) end
  return 200, json.encode(t)
end
POSTS["/api/trace/stop"] = function()
  if not tracer.stop() then return json_error(404, "no trace from the dashboard is running") end
  return 200, json.encode({stopping = true})
end

-- ---------------------------------------------------------------------------
-- Server-sent events

local function event(s, name, value)
  return gen_tcp.send(s, "event: " .. name .. "\ndata: " .. json.encode(value) .. "\n\n")
end

-- A trace's stream: each event as it comes, a comment each second
-- meanwhile (a client that went is seen when a write fails: this process
-- ends, and the tracer, which monitors it, stops the trace), and
-- "stopped" last.
local function trace_events(s, req)
  local t, ref = tracer.attach(req.query.trace)
  if not t then
    local why = ref
    send_response(s, 404, json.encode({error = why}), TYPES.json, nil, true)
    return
  end
  if not gen_tcp.send(s, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
      .. "cache-control: no-store\r\nconnection: close\r\n\r\n") then
    return
  end
  while true do
    local m = mb.receive(EVENT_MS)
    if m == nil then
      if not gen_tcp.send(s, ": waiting\n\n") then return end
    elseif type(m) == "table" and m[1] == tracer.LINE then
      if not event(s, "trace", m[2]) then return end
    elseif type(m) == "table" and m[1] == tracer.STOPPED then
      event(s, "stopped", m[2])
      return
    elseif mb.typeof(m) == "tuple" and m[1] == mb.atom.DOWN and m[2] == ref then
      return
    end
  end
end

-- The stream: a sample (the latest of the sampler's history, with the
-- node's counts) and the new log lines, each second, until the client
-- goes.
local function events(s, req)
  if req.query.trace then return trace_events(s, req) end
  local node = req.query.node
  local level = req.query.level
  if not gen_tcp.send(s, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
      .. "cache-control: no-store\r\nconnection: close\r\n\r\n") then
    return
  end
  local after = tonumber(req.query.after) or 0
  while true do
    local ok, n = fetch(node, "node", true)
    if ok and n then
      if not event(s, "node", n) then return end
    end
    local lok, lines = fetch(node, "log", after, level)
    if lok and lines and #lines > 0 then
      after = lines[#lines].seq
      if not event(s, "log", lines) then return end
    end
    -- A message (none is expected) or the period: then the next round.
    mb.receive(EVENT_MS)
  end
end

-- ---------------------------------------------------------------------------
-- A connection

--- Start a connection process, linked to dashboard_conns; it waits for
-- its socket from the acceptor.
function M.start_connection()
  return mb.spawn_link("moonbeam.dashboard.http", "serve")
end

local function header_table(list)
  local t, size = {}, 0
  for i = 1, #list do
    local name, value = list[i][1], list[i][2]
    size = size + #name + #value + 4
    t[name] = t[name] and t[name] .. ", " .. value or value
  end
  return t, size
end

-- Route one request: status, body, content type, extra header lines.
local function route(req, token)
  local path = req.path
  if path == "/health" then return ROUTES[path](req) end
  if token and not req.authorized then
    return json_error(401, "a token is needed: the header 'authorization: Bearer TOKEN', "
      .. "or ?token=TOKEN")
  end
  local extra
  if token and req.query.token then
    extra = {format("set-cookie: mb_token=%s; HttpOnly; SameSite=Strict; Path=/", token)}
  end
  if req.method == "GET" then
    local fn = ROUTES[path]
    if fn then
      local status, body = fn(req)
      return status, body, TYPES.json, extra
    end
    local status, body, ctype = static(path)
    if status then return status, body, ctype, extra end
    return json_error(404, "no such page")
  elseif req.method == "POST" then
    local fn = POSTS[path]
    if not fn then return json_error(404, "no such page") end
    -- A header a form or an image of another site cannot send: the
    -- browser asks first, and this server does not answer CORS.
    if req.headers["x-moonbeam-dashboard"] ~= "1" then
      return json_error(400, "the header 'x-moonbeam-dashboard: 1' is needed")
    end
    return fn(req)
  end
  return json_error(405, "GET or POST only")
end

-- Read and check one request head; nil and the status to answer (nil
-- for none) when the connection must close.
local function read_request(s, timeout)
  local head, why = gen_tcp.recv(s, 0, timeout)
  if not head then
    if tostring(why) == "timeout" then return nil, 408 end
    return nil
  end
  if mb.typeof(head) ~= "tuple" or head[1] ~= mb.atom.http_request then return nil, 400 end
  local method, uri, version = head[2], head[3], head[4]
  if #uri > M.MAX_URI then return nil, 414 end
  local headers, size = header_table(head[5])
  if size > M.MAX_HEADERS then return nil, 431 end
  local path, query = uri:match("^([^?#]*)%??([^#]*)")
  local len = tonumber(headers["content-length"] or "0")
  if not len or len < 0 then return nil, 400 end
  if len > M.MAX_BODY then return nil, 413 end
  if len > 0 then
    gen_tcp.setopts(s, {packet = "raw"})
    local body = gen_tcp.recv(s, len, timeout)
    if not body then return nil, 408 end
    gen_tcp.setopts(s, {packet = "http"})
  end
  local conn = (headers["connection"] or ""):lower()
  return {method = method, path = path or "/", query = parse_query(query), headers = headers,
          close = conn == "close" or (version[2] == 0 and conn ~= "keep-alive")}
end

local ERRORS = {[400] = "a malformed request", [408] = "the request did not come in time",
                [413] = "the request body is too large",
                [414] = "the request line is too long",
                [431] = "the request's headers are too large"}

--- The connection's loop.
function M.serve()
  local s = mb.receive(function(m) return m[1] == "socket" end)[2]
  local token = application.get_env(APP, "token")
  local timeout = application.get_env(APP, "request_timeout", 10000)
  while true do
    local req, status = read_request(s, timeout)
    if not req then
      if status then
        send_response(s, status, json.encode({error = ERRORS[status]}), TYPES.json, nil, true)
      end
      gen_tcp.close(s)
      return
    end
    req.authorized = token == nil or same(token_of(req), token)
    if req.method == "GET" and req.path == "/events" and (not token or req.authorized) then
      events(s, req)
      gen_tcp.close(s)
      return
    end
    local ok, st, body, ctype, extra = pcall(route, req, token)
    if not ok then
      logger.warning("dashboard: %s %s failed: %s", req.method, req.path, tostring(st))
      st, body, ctype = 500, json.encode({error = "internal error"}), TYPES.json
    end
    if not send_response(s, st, body, ctype, extra, req.close) or req.close then
      gen_tcp.close(s)
      return
    end
  end
end

return M
