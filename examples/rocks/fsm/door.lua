-- A code lock, driven by fsm: digits open it when they make the code, and
-- it locks itself again after a while.
--
--   moonbeam --rocks-tree DIR door.lua     (fsm installed in the tree DIR)
local mb = require "moonbeam"
local fsm = require "fsm"

local door = {}

function door.init(code) return "locked", {code = code, typed = ""} end

function door.locked(kind, event, data)
  if kind == "call" and event.digit then
    local typed = data.typed .. event.digit
    if typed == data.code then
      mb.send_after(event.open_for or 1000, mb.self(), "lock")
      return "open", {code = data.code, typed = ""}, "open"
    end
    if #typed >= #data.code then typed = "" end
    return "locked", {code = data.code, typed = typed}, "locked"
  end
  return "locked", data, "locked"
end

function door.open(kind, event, data)
  if kind == "info" and event == "lock" then return "locked", data end
  return "open", data, "open"
end

local pid = assert(fsm.start_link(door, "123", {name = "door"}))
-- Another process presses the buttons: it requires fsm too.
mb.spawn(function(parent)
  local fsm = require "fsm"
  local replies = {}
  for _, d in ipairs({"1", "2", "3"}) do
    replies[#replies + 1] = fsm.call("door", {digit = d, open_for = 50})
  end
  mb.send(parent, table.concat(replies, " "))
end, mb.self())
print("buttons: " .. mb.receive(5000))
print("state: " .. fsm.state(pid))
mb.sleep(200)
print("later: " .. fsm.state(pid))
