-- A worker for spec/supervisor_spec.lua: a GenServer that reports its
-- start and its end to the process registered as "sup_log" (if any).
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"

local M = {}

local function log(...)
  local to = mb.whereis("sup_log")
  if to then mb.send(to, {...}) end
end

function M.start_link(id, opts)
  opts = opts or {}
  if opts.fail then return nil, "refused_to_start" end
  if opts.ignore then return nil, "ignore" end
  return gen_server.start_link(M, {id = id, opts = opts})
end

function M.init(a)
  if a.opts.trap then mb.trap_exit(true) end
  log("started", a.id)
  return "ok", a
end

function M.handle_call(req, _, s)
  if req == "crash" then error("crashed on purpose") end
  if req == "stop_normal" then return "stop", "normal", "ok", s end
  if req == "id" then return "reply", s.id, s end
  return "reply", nil, s
end

function M.handle_info(msg, s)
  -- a worker that ignores shutdown: it traps exits and does not stop
  return "noreply", s
end

function M.terminate(reason, s)
  if s.opts.stubborn then mb.sleep(10000) end
  -- a crash's reason is a tuple; only orderly ends are logged
  if mb.typeof(reason) == "atom" then log("stopped", s.id, tostring(reason)) end
end

return M
