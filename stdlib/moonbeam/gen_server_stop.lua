--- The rare paths of a GenServer (see moonbeam.gen_server_event): ending
-- the server, with terminate and the crash report, a callback's bad
-- return, an unexpected message.  A server loads this module the first
-- time one of them happens, so that an idle server does not carry it.
local mb = require "moonbeam"
local gen = require "moonbeam.gen_base"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local pcall, tostring, require = pcall, tostring, require

local M = {}

local NORMAL, SHUTDOWN = atom.normal, atom.shutdown

-- The reasons that end a server quietly; as strings, they are the atoms.
local QUIET = {normal = NORMAL, shutdown = SHUTDOWN}

local function is_normal(reason)
  return reason == NORMAL or reason == SHUTDOWN or
    (typeof(reason) == "tuple" and reason[1] == SHUTDOWN)
end

-- A readable report, as Elixir's: the error and its traceback apart.
local function report(name, reason, last, state)
  require("moonbeam.logger").crash_report(
    ("GenServer %s terminating"):format(name and tostring(name) or tostring(mb.self())),
    reason, {{"Last message", last}, {"State", require("moonbeam.inspect")(state)}})
end

-- End the server: run terminate (if any), reply to a call that asked for
-- the stop (after terminate, as OTP does), report an abnormal end, exit.
function M.terminate(s, reason, last, from, reply)
  reason = QUIET[reason] or reason
  local cb = s.mod.terminate
  if cb then
    local ok, err = pcall(cb, reason, s.state)
    if not ok then reason = tuple(err, "in terminate") end
  end
  if from then gen.reply(from, reply) end
  if not is_normal(reason) then report(s.name, reason, last, s.state) end
  mb.exit(reason)
end

-- What a callback returned (r from run: r[2]... are its values), for the
-- reason {bad_return_value, Text}: "nothing", or the values as the shell
-- prints them.
function M.returned(r)
  if r.n < 2 then return "nothing" end
  local inspect = require "moonbeam.inspect"
  local vals = {}
  for i = 2, r.n do vals[#vals + 1] = inspect(r[i]) end
  return table.concat(vals, ", ")
end

function M.bad_return(s, r, last)
  M.terminate(s, tuple(atom.bad_return_value, M.returned(r)), last)
end

function M.default_info(msg, state)
  mb.log("warning", "GenServer " .. tostring(mb.self()) ..
    " received an unexpected message: " .. tostring(msg))
  return "noreply", state
end

return M
