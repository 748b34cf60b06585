-- A supervision tree in which a worker crashes on purpose and is restarted
-- by its supervisor, while its siblings carry on.
--
--   moonbeam examples/supervision_tree.lua
--
--   demo_sup         one_for_one
--   ├── clock        a worker counting ticks
--   └── workers_sup  one_for_one, a supervisor
--       ├── counter  a worker keeping a count
--       └── flaky    a worker that crashes when told to
--
-- The log (stderr) shows each worker start, the crash report of flaky and
-- its second start; stdout shows the tree before and after.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"
local supervisor = require "moonbeam.supervisor"
local receive = require "moonbeam.receive"

-- The workers' callback module, a table: each worker process gets a copy.
-- It finds its modules with require, since a copied function cannot take
-- C functions along as upvalues.
local worker = {}

function worker.init(name)
  require("moonbeam.logger").info("worker %s started", name)
  return "ok", {name = name, count = 0}
end

function worker.handle_call(request, _, s)
  if request == "count" then return "reply", s.count, s end
  if request == "bump" then
    s.count = s.count + 1
    return "reply", s.count, s
  end
  return "reply", nil, s
end

function worker.handle_cast(request, s)
  if request == "crash" then error("worker " .. s.name .. " crashed on purpose") end
  return "noreply", s
end

-- A child spec for a worker registered under its id.
local function worker_spec(name)
  return {id = name, start = {"moonbeam.gen_server", "start_link", {worker, name, {name = name}}}}
end

-- The supervisors' callback modules.
local workers_sup = {
  init = function(specs)
    return "ok", {strategy = "one_for_one", intensity = 3, period = 5}, specs
  end,
}

local demo_sup = {
  init = function(a)
    return "ok", {strategy = "one_for_one", intensity = 3, period = 5}, {
      a.clock,
      {id = "workers_sup", type = "supervisor",
       start = {"moonbeam.supervisor", "start_link",
                {a.workers_sup, a.workers, {name = "workers_sup"}}}},
    }
  end,
}

local function show(sup, indent)
  for _, child in ipairs(supervisor.which_children(sup)) do
    print(("%s%s %s %s"):format(indent, child.id, child.type, tostring(child.pid)))
    if child.type == "supervisor" then show(child.pid, indent .. "  ") end
  end
end

local sup = assert(supervisor.start_link(demo_sup, {
  clock = worker_spec("clock"),
  workers_sup = workers_sup,
  workers = {worker_spec("counter"), worker_spec("flaky")},
}, {name = "demo_sup"}))
print("the tree:")
show(sup, "  ")

gen_server.call("counter", "bump")
gen_server.call("counter", "bump")

-- Crash flaky, and wait until it is down...
local flaky = mb.whereis("flaky")
local ref = mb.monitor(flaky)
gen_server.cast("flaky", "crash")
local reason = receive {
  {"{'DOWN', ^Ref, process, _, Reason}", function(b) return b.Reason end},
  pins = {Ref = ref},
  after = {5000, function() error("flaky did not crash") end},
}
print("flaky " .. tostring(flaky) .. " crashed: " .. tostring(reason[1]))

-- ...then until its supervisor has started it again.
local again
for _ = 1, 500 do
  again = mb.whereis("flaky")
  if again and again ~= flaky then break end
  mb.sleep(10)
end
assert(again and again ~= flaky, "flaky was not restarted")
print("flaky restarted as " .. tostring(again) ..
  ", count " .. gen_server.call("flaky", "count"))
print("counter kept its count: " .. gen_server.call("counter", "count"))
print("the tree:")
show(sup, "  ")

-- Stopping the top supervisor stops the tree, last child first.
gen_server.stop(sup)
print("stopped: " .. tostring(mb.whereis("counter") == nil and mb.whereis("flaky") == nil))
