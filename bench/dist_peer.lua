-- dist_peer: the moonbeam node at the other end of dist.lua's
-- measurements; dist.erl's peer/1 is its Erlang twin and answers the same
-- requests.  dist.lua starts it and stops it by its pid.
--   ERL_EPMD_PORT=P moonbeam dist_peer.lua NAME@127.0.0.1 COOKIE
-- With BENCH_DIST_TLS=DIR, over TLS distribution (DIR/ssl_dist.conf).
--
-- Requests, to the process registered as bench_peer:
--   {hello, From, Node}  monitor Node (the node ends when Node goes down);
--                        reply {hello, self()}
--   {echo, From}         start a process that sends every message back to
--                        From; reply {ready, Pid}
--   {sink, From, N}      start a process that takes N messages, then sends
--                        {done, N} to From; reply {ready, Pid}
--   {source, From, N}    send the integers 1..N to From
--   {pg_members, From, N, Group}
--                        N new processes join Group in the default pg
--                        scope; reply {ready, N}
--   stop                 end the node
local mb = require "moonbeam"

-- The name first: once the node answers a ping, bench_peer is there.
local name, cookie = arg[1], arg[2]
mb.register("bench_peer", mb.self())
local tls_dir = os.getenv("BENCH_DIST_TLS") -- TLS distribution's figures
mb.start_distribution{name = name, cookie = cookie,
                      epmd_port = tonumber(os.getenv("ERL_EPMD_PORT")),
                      proto_dist = tls_dir and "inet_tls" or nil,
                      ssl_dist_optfile = tls_dir and tls_dir .. "/ssl_dist.conf"}

local A = mb.atom
local send, receive, tuple = mb.send, mb.receive, mb.tuple

-- Spawned: each process requires what it uses (functions are copied
-- without their upvalues' C functions).
local function echo(from)
  local mb = require "moonbeam"
  local send, receive = mb.send, mb.receive
  while true do send(from, receive()) end
end

local function sink(from, n)
  local mb = require "moonbeam"
  local receive = mb.receive
  for _ = 1, n do receive() end
  mb.send(from, mb.tuple(mb.atom.done, n))
end

while true do
  local m = receive()
  local tag = mb.typeof(m) == "tuple" and m[1] or m
  if tag == A.hello then
    mb.monitor_node(m[3], true)
    send(m[2], tuple(A.hello, mb.self()))
  elseif tag == A.echo then
    send(m[2], tuple(A.ready, mb.spawn(echo, m[2])))
  elseif tag == A.sink then
    send(m[2], tuple(A.ready, mb.spawn(sink, m[2], m[3])))
  elseif tag == A.source then
    for i = 1, m[3] do send(m[2], i) end
  elseif tag == A.pg_members then
    local pids = {}
    for i = 1, m[3] do pids[i] = mb.spawn(function() require("moonbeam").receive() end) end
    require("moonbeam.pg").join(m[4], pids)
    send(m[2], tuple(A.ready, m[3]))
  elseif tag == A.nodedown or tag == A.stop then
    break -- the node ends with its first process
  end
end
