-- Chat between moonbeam nodes over mutual TLS: socket-based distribution,
-- with no Erlang distribution and no shared cookie.  Each node has its own
-- certificate and trusts only its peer's, so only those nodes can talk; any
-- term goes from a process of one node to a named process of the other
-- over one channel.
--
--   moonbeam examples/chat/chat.lua NAME DIR PEER listen PORT [LINE...]
--   moonbeam examples/chat/chat.lua NAME DIR PEER connect HOST PORT [LINE...]
--
-- DIR holds NAME.pem and NAME.key (this node's certificate and key) and
-- PEER.pem (the only certificate this node accepts; its name must be
-- PEER).  Once connected, each node sends its LINEs, then the lines typed
-- on its standard input, to the other's `chat` process, which prints them
-- as "<PEER> line".  A line "=EXPR" sends the value of the Lua expression
-- EXPR instead (with `mb` and `A` = mb.atom in scope), which `chat`
-- prints with moonbeam.inspect; "@DEST ..." sends to the process
-- registered as DEST instead of `chat`.  The listening node serves any
-- number of peers at once, one process per connection, and sends its
-- lines to all of them.
--
-- Each connection is a process, its session: a local process sends it
-- {To, Msg} and Msg goes to the process registered as To on the other
-- node (on the connecting node the session is registered as `peer`).
-- Frames ({packet, 4}) hold {To, Msg} in Erlang's external term format;
-- what arrives is read with binary_to_term's `safe`, so a peer cannot fill
-- the atom table, and a frame that is not such a term closes that
-- connection only.
local mb = require "moonbeam"
local ssl = require "moonbeam.ssl"
local port = require "moonbeam.port"
local term = require "moonbeam.term"
local inspect = require "moonbeam.inspect"

local A = mb.atom
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

local function log(text) io.stderr:write("chat: " .. text .. "\n") end

-- The chat process: prints what the peers' processes send it.
local printer = mb.spawn(function()
  while true do
    local msg = mb.receive()
    local text = type(msg) == "string" and msg or inspect(msg)
    io.stdout:write(("<%s> %s\n"):format(peer, text))
    io.stdout:flush()
  end
end)
mb.register("chat", printer)

-- A typed line as {To, Msg}, or nil and why.
local function parse(line)
  local to, rest = line:match("^@(%S+)%s+(.*)$")
  to, rest = to or "chat", rest or line
  if rest:sub(1, 1) ~= "=" then return mb.tuple(to, rest) end
  local f, err = load("return " .. rest:sub(2), "=line", "t", {mb = mb, A = A})
  if not f then return nil, err end
  local ok, v = pcall(f)
  if not ok then return nil, v end
  return mb.tuple(to, v)
end

-- One connection, owned by its own process: frames both ways until it
-- closes.  Local processes send it {To, Msg}.  A function given to spawn
-- takes copies of its upvalues: it loads the modules it uses itself.
local function session(s, who)
  local mb, ssl, term = require "moonbeam", require "moonbeam.ssl", require "moonbeam.term"
  local A = mb.atom
  local function deliver(frame)
    local t, why = term.binary_to_term(frame, "safe")
    if mb.typeof(t) ~= "tuple" or t.n ~= 2 or type(t[1]) ~= "string" and mb.typeof(t[1]) ~= "atom" then
      return false, why or "not a {To, Msg} tuple"
    end
    local to = mb.whereis(tostring(t[1]))
    if to then mb.send(to, t[2]) end
    return true
  end
  while true do
    local m = mb.receive()
    if mb.typeof(m) ~= "tuple" then
      -- not ours
    elseif m[1] == A.ssl and m[2] == s then
      local ok, why = deliver(m[3])
      if not ok then
        log(("bad frame from %s: %s; closing"):format(who, why))
        ssl.close(s)
        return
      end
      ssl.setopts(s, {active = "once"})
    elseif (m[1] == A.ssl_closed or m[1] == A.ssl_error) and m[2] == s then
      log(who .. " left")
      return
    elseif m.n == 2 then
      local ok, frame = pcall(term.term_to_binary, m)
      if ok then ssl.send(s, frame) else log(frame) end
    end
  end
end

-- A session process for socket s, which owns it from now on; nil if the
-- peer has already gone.
local function start_session(s, who)
  local pid = mb.spawn(session, s, who)
  local ok, why = ssl.controlling_process(s, pid)
  if not ok then
    mb.exit(pid, A.kill)
    log(("%s left: %s"):format(who, why))
    return nil
  end
  log(who .. " joined")
  return pid
end

local input = port.open({spawn = "exec cat /proc/$PPID/fd/0"}, {packet = "line"})

-- The main process relays our lines, then standard input (messages from
-- a port running cat on the launcher's own input, its parent's fd 0, so
-- that no scheduler waits on a read), to every session alive.  It returns
-- when a session of a node that connected ends.
local sessions = {}
local function relay(connected)
  while true do
    local m = mb.receive()
    if mb.typeof(m) ~= "tuple" then
      -- not ours
    elseif m[1] == A.joined then
      sessions[m[2]] = true
      mb.monitor(m[2])
      for _, l in ipairs(lines) do
        local msg, why = parse(l)
        if msg then mb.send(m[2], msg) else log("bad line: " .. why) end
      end
    elseif m[1] == A.DOWN then
      sessions[m[3]] = nil
      if connected then return end
    elseif m[1] == input and m[2][1] == A.data then
      local msg, why = parse((m[2][2]:gsub("\n$", "")))
      if not msg then log("bad line: " .. why) end
      for pid in pairs(msg and sessions or {}) do mb.send(pid, msg) end
    end
  end
end

if mode == "listen" then
  local l = assert(ssl.listen(tonumber(arg[5]), tls))
  log(("%s listening on port %d"):format(name, ssl.port(l)))
  -- The acceptor, a process of its own: one session per peer.
  local main, n = mb.self(), 0
  mb.spawn(function()
    local mb, ssl = require "moonbeam", require "moonbeam.ssl"
    while true do
      local s, why = ssl.accept(l)
      if s then
        n = n + 1
        local pid = start_session(s, ("%s#%d"):format(peer, n))
        if pid then mb.send(main, mb.tuple(mb.atom.joined, pid)) end
      else
        log("refused a connection: " .. tostring(why))
      end
    end
  end)
  relay(false)
else
  tls.server_name_indication = peer
  local s, why = ssl.connect(arg[5], tonumber(arg[6]), tls, 10000)
  if not s then
    log("cannot reach " .. peer .. ": " .. tostring(why))
    os.exit(1)
  end
  local pid = start_session(s, peer)
  if not pid then os.exit(1) end
  mb.register("peer", pid)
  mb.send(mb.self(), mb.tuple(A.joined, pid))
  relay(true)
end
