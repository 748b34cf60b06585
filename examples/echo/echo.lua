-- A TCP echo server: one process per connection, under a supervisor.
--
--   moonbeam examples/echo/echo.lua PORT [IP]
--
-- PORT 0 takes any free port; IP is the address to listen on (127.0.0.1
-- unless given).  It prints "echo: listening on IP:PORT" once it accepts,
-- and runs until it is stopped.
--
--   echo_sup            one_for_one
--   ├── echo_conns      a dynamic supervisor: one temporary child per
--   │                   connection, echoing what it reads
--   └── echo_acceptor   listens, accepts, and hands each socket to a new
--                       child of echo_conns
--
-- A connection process reads with {active, once}: it takes the next
-- packet only when it has sent the last one back, so a client that sends
-- faster than it reads is slowed down by TCP, not buffered here.
local mb = require "moonbeam"
local supervisor = require "moonbeam.supervisor"

local port = tonumber(arg and arg[1])
local ip = arg and arg[2] or "127.0.0.1"
if port == nil or port < 0 or port > 65535 then
  io.stderr:write("usage: moonbeam examples/echo/echo.lua PORT [IP]\n")
  os.exit(2)
end

-- A connection: wait for the socket from the acceptor, then echo until the
-- peer closes.  Started by echo_conns, linked to it.
local function start_connection()
  local mb = require "moonbeam"
  return mb.spawn_link(function()
    local mb = require "moonbeam"
    local gen_tcp = require "moonbeam.gen_tcp"
    local tcp, tcp_closed, tcp_error = mb.atom.tcp, mb.atom.tcp_closed, mb.atom.tcp_error
    local sock = mb.receive(function(m) return m[1] == "socket" end)[2]
    gen_tcp.setopts(sock, {active = "once"})
    while true do
      local m = mb.receive()
      if m[1] == tcp and m[2] == sock then
        if not gen_tcp.send(sock, m[3]) then return end
        gen_tcp.setopts(sock, {active = "once"})
      elseif (m[1] == tcp_closed or m[1] == tcp_error) and m[2] == sock then
        return
      end
    end
  end)
end

-- The acceptor: listen, then accept for ever.  Each socket goes to a new
-- connection process, which owns it from then on.
local function start_acceptor(listen_ip, listen_port)
  local mb = require "moonbeam"
  return mb.spawn_link(function()
    local gen_tcp = require "moonbeam.gen_tcp"
    local ds = require "moonbeam.dynamic_supervisor"
    local l = assert(gen_tcp.listen(listen_port, {ip = listen_ip, active = false,
                                                  nodelay = true, backlog = 1024}))
    io.stdout:write(("echo: listening on %s:%d\n"):format(listen_ip, gen_tcp.port(l)))
    io.stdout:flush()
    while true do
      local s = assert(gen_tcp.accept(l))
      local pid = ds.start_child("echo_conns", {start = start_connection,
                                                restart = "temporary"})
      if pid and gen_tcp.controlling_process(s, pid) then
        mb.send(pid, {"socket", s})
      else
        gen_tcp.close(s)
      end
    end
  end)
end

local echo_sup = {
  init = function(a)
    return "ok", {strategy = "one_for_one", intensity = 3, period = 5}, {
      {id = "echo_conns", type = "supervisor",
       start = {"moonbeam.dynamic_supervisor", "start_link", {{name = "echo_conns"}}}},
      {id = "echo_acceptor", start = function() return a.acceptor(a.ip, a.port) end},
    }
  end,
}

local sup = assert(supervisor.start_link(echo_sup,
  {acceptor = start_acceptor, ip = ip, port = port}, {name = "echo_sup"}))

-- Run until the tree ends (it does not, unless it fails for good).
local ref = mb.monitor(sup)
mb.receive(function(m) return m[2] == ref end)
io.stderr:write("echo: the supervisor ended\n")
os.exit(1)
