--- The http application's callback module: the top supervisor.
--
--   http_sup          one_for_one
--   ├── http_conns    a dynamic supervisor: one temporary child per
--   │                 connection
--   └── http_acceptor listens and hands each connection to a new child
local supervisor = require "moonbeam.supervisor"

local M = {}

--- The supervision tree, registered as http_sup.
function M.start()
  return supervisor.start_link("http.application", nil, {name = "http_sup"})
end

function M.stop() end

--- The supervisor's callback.
function M.init()
  return "ok", {strategy = "one_for_one", intensity = 3, period = 5}, {
    {id = "http_conns", type = "supervisor",
     start = {"moonbeam.dynamic_supervisor", "start_link", {{name = "http_conns"}}}},
    {id = "http_acceptor", start = {"http.acceptor", "start_link", {}}},
  }
end

return M
