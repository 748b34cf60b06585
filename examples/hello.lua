-- Hello, world with two processes: the script spawns a greeter, sends it a
-- greeting and prints the reply.
--
--   moonbeam examples/hello.lua [name]
local mb = require "moonbeam"

local name = ... or "world"

-- The greeter runs in a process of its own, with its own Lua state: it
-- waits for one message, answers the sender and ends.
local function greeter()
  local msg = mb.receive()
  mb.send(msg.from, {
    text = "Hello, " .. msg.name .. "!",
    by = mb.self(),
  })
end

local pid = mb.spawn(greeter)

-- Messages are copied: the greeter gets its own copy of this table.  It
-- cannot know who sent it, so the message says where to reply.
mb.send(pid, {from = mb.self(), name = name})

-- Wait at most a second for the answer.
local reply, err = mb.receive(1000)
assert(reply, err)
assert(reply.by == pid)
print(reply.text .. " (from " .. tostring(reply.by) .. ")")
