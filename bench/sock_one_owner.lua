-- An echo server whose sockets all belong to one process, for
-- bench/sockets idle: what a socket costs without a process of its own.
--   moonbeam bench/sock_one_owner.lua
local mb = require "moonbeam"
local gen_tcp = require "moonbeam.gen_tcp"

local l = assert(gen_tcp.listen(0, {ip = "127.0.0.1", active = false, backlog = 1024}))
io.stdout:write(("listening on 127.0.0.1:%d\n"):format(gen_tcp.port(l)))
io.stdout:flush()
local me = mb.self()
mb.spawn(function()
  while true do
    local s = assert(gen_tcp.accept(l))
    gen_tcp.controlling_process(s, me)
    mb.send(me, {"new", s})
  end
end)
local tcp = mb.atom.tcp
while true do
  local m = mb.receive()
  if m[1] == "new" then
    gen_tcp.setopts(m[2], {active = true})
  elseif m[1] == tcp then
    gen_tcp.send(m[2], m[3])
  end
end
