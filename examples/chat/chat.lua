-- Chat between two moonbeam nodes over mutual TLS: socket-based
-- distribution, with no Erlang distribution and no shared cookie.  Each
-- node has its own certificate and trusts only the other's, so only those
-- two can talk; a message from a process of one node goes to a named
-- process of the other over that one channel.
--
--   moonbeam examples/chat/chat.lua NAME DIR PEER listen PORT [LINE...]
--   moonbeam examples/chat/chat.lua NAME DIR PEER connect HOST PORT [LINE...]
--
-- DIR holds NAME.pem and NAME.key (this node's certificate and key) and
-- PEER.pem (the only certificate this node accepts; its name must be
-- PEER).  Once connected, each node sends its LINEs, then the lines typed
-- on its standard input, to the other's `chat` process, which prints them
-- as "<PEER> line".  The listening node serves one peer after another.
--
-- Frames ({packet, 4}) are "DEST\0TEXT": TEXT for the process registered
-- as DEST on the receiving node.
local mb = require "moonbeam"
local ssl = require "moonbeam.ssl"
local port = require "moonbeam.port"

local name, dir, peer, mode = arg[1], arg[2], arg[3], arg[4]
if not (name and dir and peer and (mode == "listen" or mode == "connect")) then
  io.stderr:write("usage: chat.lua NAME DIR PEER (listen PORT | connect HOST PORT) [LINE...]\n")
  os.exit(2)
end
local lines, first = {}, mode == "listen" and 6 or 7
for i = first, arg.n or #arg do lines[#lines + 1] = arg[i] end

local tls = {certfile = dir .. "/" .. name .. ".pem", keyfile = dir .. "/" .. name .. ".key",
             cacertfile = dir .. "/" .. peer .. ".pem", verify = "verify_peer",
             fail_if_no_peer_cert = true, packet = 4, active = "once"}

-- The chat process: prints what the peer's processes send it.
local printer = mb.spawn(function()
  while true do
    local text = mb.receive()
    io.stdout:write(("<%s> %s\n"):format(peer, text))
    io.stdout:flush()
  end
end)
mb.register("chat", printer)

-- Standard input as messages: a port running cat on the launcher's own
-- input (its parent's fd 0), so that no scheduler waits on a read.
local input = port.open({spawn = "exec cat /proc/$PPID/fd/0"}, {packet = "line"})

-- One connection: send our lines, then relay both ways until it closes.
local function session(s)
  local function say(text) ssl.send(s, "chat\0" .. text) end
  for _, l in ipairs(lines) do say(l) end
  while true do
    local m = mb.receive()
    if m[1] == mb.atom.ssl and m[2] == s then
      local dest, text = m[3]:match("^([^%z]+)%z(.*)$")
      local to = dest and mb.whereis(dest)
      if to then mb.send(to, text) end
      ssl.setopts(s, {active = "once"})
    elseif (m[1] == mb.atom.ssl_closed or m[1] == mb.atom.ssl_error) and m[2] == s then
      io.stderr:write("chat: " .. peer .. " left\n")
      return
    elseif input and m[1] == input and m[2][1] == mb.atom.data then
      say((m[2][2]:gsub("\n$", "")))
    end
  end
end

if mode == "listen" then
  local l = assert(ssl.listen(tonumber(arg[5]), tls))
  io.stderr:write(("chat: %s listening on port %d\n"):format(name, ssl.port(l)))
  while true do
    local s, why = ssl.accept(l)
    if s then
      io.stderr:write("chat: " .. peer .. " joined\n")
      session(s)
    else
      io.stderr:write("chat: refused a connection: " .. tostring(why) .. "\n")
    end
  end
else
  tls.server_name_indication = peer
  local s, why = ssl.connect(arg[5], tonumber(arg[6]), tls, 10000)
  if not s then
    io.stderr:write("chat: cannot reach " .. peer .. ": " .. tostring(why) .. "\n")
    os.exit(1)
  end
  io.stderr:write("chat: joined " .. peer .. "\n")
  session(s)
end
