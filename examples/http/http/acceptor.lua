--- The acceptor: listens on the application's ip and port and gives each
-- connection to a new http.connection process under http_conns, which then
-- owns its socket.
local mb = require "moonbeam"
local gen_tcp = require "moonbeam.gen_tcp"
local application = require "moonbeam.application"
local ds = require "moonbeam.dynamic_supervisor"
local logger = require "moonbeam.logger"

local M = {}

--- Start the acceptor, linked to its supervisor.
function M.start_link()
  return mb.spawn_link("http.acceptor", "run")
end

local CONNECTION = {start = {"http.connection", "start_link", {}}, restart = "temporary"}

--- The acceptor's loop.  A port that cannot be had crashes it, and the
-- supervisor's restarts then give up and stop the application.
function M.run()
  local ip = application.get_env("http", "ip", "127.0.0.1")
  local port = application.get_env("http", "port", 8080)
  local l = assert(gen_tcp.listen(port, {ip = ip, packet = "http", active = false,
                                         nodelay = true, backlog = 1024}))
  logger.notice("http: listening on %s:%d", ip, gen_tcp.port(l))
  while true do
    local s = assert(gen_tcp.accept(l))
    local pid = ds.start_child("http_conns", CONNECTION)
    if pid and gen_tcp.controlling_process(s, pid) then
      mb.send(pid, {"socket", s})
    else
      gen_tcp.close(s)
    end
  end
end

return M
