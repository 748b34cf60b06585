-- instructions: one path of the runtime, done N times, for bench/instructions
-- to count under callgrind.  Setup is the same whatever N is, so that the
-- difference between two counts, divided by the difference of their N, is
-- the cost of one operation.
--   moonbeam instructions.lua OPERATION N
-- OPERATION:
--   spawn      spawn a process that tells its parent it runs, then ends
--   send       send {tag, I} to this process (left queued)
--   send_recv  send {tag, I} to this process and receive it
--   send_recv_traced  the same, this process traced for send and receive
--   selective  a selective receive past 1,000 queued messages (matcher)
--   pattern    the same through moonbeam.receive's string pattern
--   call       gen_server.call round trip to an echo server
--   gen_start  gen_server.start of an idle server, until its init ran
--   stack_read       process_info(pid, "current_function") of a process
--                    waiting in receive
--   stacktrace_read  process_info(pid, "current_stacktrace") of it
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local receive = require "moonbeam.receive"

local op = arg[1]
local n = assert(math.tointeger(tonumber(arg[2])), "N expected")
local me = mb.self()
local tag, noise, wanted = mb.atom.tag, mb.atom.noise, mb.atom.wanted
local echo = {
  init = function(state) return "ok", state end,
  handle_call = function(request, _, state) return "reply", request, state end,
}

local function ready(parent) mb.send(parent, true) end
local function is_wanted(m) return m[1] == wanted end
local ops = {}

function ops.spawn()
  for _ = 1, n do
    mb.spawn(ready, me)
    mb.receive()
  end
end

function ops.send()
  for i = 1, n do mb.send(me, mb.tuple(tag, i)) end
end

function ops.send_recv()
  for i = 1, n do
    mb.send(me, mb.tuple(tag, i))
    mb.receive()
  end
end

-- send_recv, with this process traced for both: two events an operation,
-- taken by a tracer that drops them (its work is counted too).
function ops.send_recv_traced()
  local tracer = mb.spawn(function()
    while true do
      local m = mb.receive()
      if m == "taken?" then mb.send(me, "taken") end
    end
  end)
  mb.trace_start(tracer, {})
  mb.trace_process(me, {"send", "receive"})
  ops.send_recv()
  mb.trace_stop()
  -- The events went before this question: the answer says all are taken.
  mb.send(tracer, "taken?")
  mb.receive(function(m) return m == "taken" end)
end

local function queue_noise()
  for i = 1, 1000 do mb.send(me, mb.tuple(noise, i)) end
  mb.send(me, mb.tuple(wanted, 0))
  mb.receive(is_wanted) -- the noise is now in the save queue, as it stays
end

function ops.selective()
  queue_noise()
  for i = 1, n do
    mb.send(me, mb.tuple(wanted, i))
    mb.receive(is_wanted)
  end
end

function ops.pattern()
  queue_noise()
  local clauses = { {"{wanted, N}", function(b) return b.N end} }
  for i = 1, n do
    mb.send(me, mb.tuple(wanted, i))
    receive(clauses)
  end
end

function ops.call()
  local server = assert(gen_server.start(echo, 0))
  gen_server.call(server, 0)
  for i = 1, n do gen_server.call(server, i) end
end

function ops.gen_start()
  local first = assert(gen_server.start(echo, 0)) -- loads what a start needs
  gen_server.stop(first)
  for _ = 1, n do gen_server.start(echo, 0) end
end

-- A process waiting in receive, two Lua frames deep, once it waits.
local function waiting()
  local function wait_here() return mb.receive() end
  local p = mb.spawn(function()
    mb.send(me, "ready")
    wait_here()
  end)
  mb.receive()
  while mb.process_info(p, "current_function") == "running" do mb.sleep(1) end
  return p
end

function ops.stack_read()
  local p = waiting()
  for _ = 1, n do mb.process_info(p, "current_function") end
  mb.exit(p, "kill")
end

function ops.stacktrace_read()
  local p = waiting()
  for _ = 1, n do mb.process_info(p, "current_stacktrace") end
  mb.exit(p, "kill")
end

-- Idle schedulers make blank states for spawns (up to 64), at moments
-- that follow the wall clock: the pool is let fill before and after the
-- operation, so that both counts hold the same fills but for those the
-- operation's own spawns called for.  (A node without the pool has no
-- blank_states: nothing to wait for.)
local function settle()
  for _ = 1, 2000 do
    if (mb.statistics().blank_states or 64) >= 64 then return end
    mb.sleep(5)
  end
  error("the pool of blank states did not fill")
end

assert(ops[op], "unknown operation")
settle()
ops[op]()
settle()
os.exit(0)
