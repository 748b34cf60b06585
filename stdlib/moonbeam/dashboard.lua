--- The dashboard: a web page served by the node, showing the node, its
-- processes, applications and supervision trees, the cluster and the log,
-- live.  It is an application of its own, moonbeam_dashboard, started by
-- `moonbeam start app.lua --dashboard 127.0.0.1:4040` (or the config key
-- `dashboard`) before the node's application, as a temporary application:
-- a crash in it is restarted by its supervisor, and if it gives up the
-- node goes on without it.
--
--   moonbeam_dashboard_sup     one_for_one
--   ├── dashboard_sampler      reads mb.statistics() each second
--   ├── dashboard_conns        one temporary child per connection
--   └── dashboard_acceptor     listens, hands each connection on
--
-- Its environment: listen ("IP:PORT"), token (needed when IP is not a
-- loopback address), request_timeout (ms, 10000).  See docs/dashboard.md.
local supervisor = require "moonbeam.supervisor"
local application = require "moonbeam.application"

local M = {}

local APP = "moonbeam_dashboard"
M.APP = APP

--- The application's spec, for application.load.
M.spec = {
  name = APP,
  version = "1.0.0",
  description = "the node's dashboard in the browser",
  mod = {"moonbeam.dashboard", {}},
  env = {listen = "127.0.0.1:4040", request_timeout = 10000},
}

--- Is `ip` a loopback address (127.0.0.0/8, ::1, localhost)?
function M.is_loopback(ip)
  return ip == "localhost" or ip == "::1" or ip:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

--- Split "IP:PORT" ("[::1]:4040" for IPv6; a bare port means 127.0.0.1).
-- @return ip, port; or nil and what is wrong
function M.parse_listen(text)
  if type(text) == "number" then text = tostring(math.tointeger(text) or text) end
  if type(text) ~= "string" then return nil, "an address IP:PORT expected" end
  local ip, port = text:match("^%[([%x:.]+)%]:(%d+)$")
  if not ip then ip, port = text:match("^([%w.-]+):(%d+)$") end
  if not ip and text:match("^%d+$") then ip, port = "127.0.0.1", text end
  port = tonumber(port)
  if not ip or not port or port > 65535 then
    return nil, "an address IP:PORT expected, got '" .. text .. "'"
  end
  if ip == "localhost" then ip = "127.0.0.1" end
  return ip, port
end

-- A token: printable, without spaces or quotes, 8 to 256 characters.
local function good_token(t)
  return type(t) == "string" and #t >= 8 and #t <= 256 and t:match("^[%w%-._~+/=]+$") ~= nil
end

--- application callback: check the settings, start the tree.
function M.start()
  local ip, port = M.parse_listen(application.get_env(APP, "listen"))
  if not ip then return nil, "dashboard: " .. port end
  local token = application.get_env(APP, "token")
  if token == "" then token = nil end
  if token ~= nil and not good_token(token) then
    return nil, "dashboard: the token must be 8 to 256 letters, digits or -._~+/="
  end
  if token == nil and not M.is_loopback(ip) then
    return nil, "dashboard: listening on " .. ip .. ", which is not a loopback address, "
      .. "needs a token (--dashboard-token or the config key dashboard_token)"
  end
  application.set_env(APP, "ip", ip)
  application.set_env(APP, "port", port)
  application.set_env(APP, "token", token)
  return supervisor.start_link("moonbeam.dashboard", nil, {name = "moonbeam_dashboard_sup"})
end

function M.stop() end

--- supervisor callback.
function M.init()
  return "ok", {strategy = "one_for_one", intensity = 5, period = 10}, {
    {id = "dashboard_sampler", start = {"moonbeam.dashboard.sampler", "start_link", {}}},
    {id = "dashboard_conns", type = "supervisor",
     start = {"moonbeam.dynamic_supervisor", "start_link",
              {{name = "dashboard_conns", max_children = 64, intensity = 1000, period = 1}}}},
    {id = "dashboard_acceptor", start = {"moonbeam.dashboard.http", "start_link", {}}},
  }
end

--- Start the dashboard on this node (loading it first), as the launcher
-- does.
-- @param settings optional: listen, token, request_timeout
-- @return true, or nil and the reason
function M.start_dashboard(settings)
  local ok, why = application.load(M.spec)
  if not ok and not (tostring(why and why[1]) == "already_loaded") then return nil, why end
  for k, v in pairs(settings or {}) do application.set_env(APP, k, v) end
  return application.start(APP, "temporary")
end

--- The port the dashboard listens on, once it does (nil before).
function M.port()
  return application.get_env(APP, "bound_port")
end

return M
