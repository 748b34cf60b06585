-- A ring of N processes passes a token around M times.
--
--   moonbeam examples/ring.lua [N] [M]      (defaults: 1000 processes, 10 laps)
--
-- The script itself is one member of the ring: it spawns the other N - 1,
-- each knowing only the next member, and starts the token.  The token is a
-- hop counter that every member increments as it passes it on.
local mb = require "moonbeam"

local n = math.tointeger(tonumber(arg[1])) or 1000
local laps = math.tointeger(tonumber(arg[2])) or 10
assert(n >= 2 and laps >= 1, "usage: ring.lua [N >= 2] [M >= 1]")

-- A member forwards everything to the next one: the token one hop further,
-- and "stop", after which it ends.
local function member(next_pid)
  while true do
    local msg = mb.receive()
    if msg == "stop" then
      mb.send(next_pid, "stop")
      return
    end
    mb.send(next_pid, msg + 1)
  end
end

-- Build the ring backwards, so that every member is spawned knowing its
-- successor; the last one spawned follows this script.
local first = mb.self()
for _ = 1, n - 1 do
  first = mb.spawn(member, first)
end
print(string.format("ring of %d processes (%d alive)", n, mb.process_count()))

-- Each lap starts and ends here, so this process counts the laps.
local token = 0
for lap = 1, laps do
  mb.send(first, token + 1)
  token = mb.receive()
  assert(token == lap * n, "token lost or duplicated")
end

-- Stop the members: "stop" goes round once and comes back.
mb.send(first, "stop")
assert(mb.receive() == "stop")
print(string.format("token went around %d time%s: %d messages", laps,
                    laps == 1 and "" or "s", token))
