-- dashboard: what the dashboard costs a busy node.  R rings of P
-- processes pass tokens round without end (the node is busy); the hops
-- made in a window of W ms are counted, in rounds that alternate: without
-- the dashboard, then with it started (its sampler reads the counters
-- each second) and a client attached as the page is (the event stream
-- read, and the process table fetched every 2 s, as the page does while
-- it shows it).  Compares the medians, of hops per second and of CPU
-- time per hop.  Before the rounds, the dashboard's own work in one
-- second is timed on the node (dashboard_work, in % of the schedulers'
-- time), a figure that other load on the machine does not blur.  Goal:
-- a cost under 2 %.
--
--   moonbeam dashboard.lua [R] [P] [W] [ROUNDS]
--
-- No Erlang twin: bench/run does not run it.  Run by hand:
--   LUA_PATH_5_4="bench/?.lua;$(lua5.4 -e 'io.write(package.path)')" \
--     build/bin/moonbeam bench/dashboard.lua
local mb = require "moonbeam"
local bench = require "bench"
local gen_tcp = require "moonbeam.gen_tcp"
local application = require "moonbeam.application"
local dashboard = require "moonbeam.dashboard"

require("moonbeam.logger").set_level("warning")

local rings = math.tointeger(tonumber(arg[1])) or mb.schedulers() * 2
local procs = math.tointeger(tonumber(arg[2])) or 1000
local window = math.tointeger(tonumber(arg[3])) or 3000
local rounds = math.tointeger(tonumber(arg[4])) or 5

-- A ring member passes what it gets on; the head counts the laps and
-- answers {count, laps} to {"count", from}.
local function relay(nxt)
  while true do mb.send(nxt, mb.receive()) end
end

local function head(size)
  local nxt = mb.self()
  for _ = 2, size do nxt = mb.spawn(relay, nxt) end
  local laps = 0
  mb.receive(function(m) return m == "go" end)
  mb.send(nxt, "token")
  while true do
    local m = mb.receive()
    if m == "token" then
      laps = laps + 1
      mb.send(nxt, m)
    else
      mb.send(m[2], {"count", laps})
    end
  end
end

local heads = {}
for i = 1, rings do heads[i] = mb.spawn(head, procs) end

local function hops()
  local total = 0
  for _, h in ipairs(heads) do
    mb.send(h, {"count", mb.self()})
    total = total + mb.receive(function(m) return type(m) == "table" and m[1] == "count" end)[2]
  end
  return total * procs
end

-- The node's CPU time (user + system, all threads), in seconds: on a
-- machine shared with other work, CPU time per hop moves less than hops
-- per second of wall time.
local function cpu()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  local fields = {}
  for x in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime: ticks of 10 ms
end

-- Hops per second of wall time, and nanoseconds of CPU per hop.
local function measure()
  local h0, t0, c0 = hops(), bench.now(), cpu()
  mb.sleep(window)
  local h1, t1, c1 = hops(), bench.now(), cpu()
  return (h1 - h0) / (t1 - t0), (c1 - c0) / (h1 - h0) * 1e9
end

-- The client: what the page does with the node view and the process
-- table open.
local function client(port)
  local mb = require "moonbeam"
  local gen_tcp = require "moonbeam.gen_tcp"
  local stream = assert(gen_tcp.connect("127.0.0.1", port, {active = true}, 5000))
  gen_tcp.send(stream, "GET /events HTTP/1.1\r\nhost: bench\r\n\r\n")
  local function get(path)
    local s = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
    gen_tcp.send(s, "GET " .. path .. " HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
    while gen_tcp.recv(s, 0, 5000) do end
    gen_tcp.close(s)
  end
  local next_poll = 0
  while true do
    local now = mb.monotonic_time() // 1000000
    if now >= next_poll then
      get("/api/processes?sort=memory&limit=500")
      next_poll = now + 2000
    end
    mb.receive(math.max(1, next_poll - now)) -- the stream's events, read
  end
end

-- What the dashboard does in one second with a client attached, done
-- in a loop on the node while the rings wait (its processes are there,
-- idle): the sampler's reading, one event (the node and the log), and
-- half a process table, each encoded.  CPU seconds per second of
-- dashboard, from the process's CPU time, which other work on the
-- machine does not inflate as it does wall time.
local function work_per_second()
  local data = require "moonbeam.dashboard.data"
  local json = require "moonbeam.dashboard.json"
  local c0, n = cpu(), 0
  while cpu() - c0 < 1 do
    n = n + 1
    mb.statistics()
    json.encode(data.node(true))
    json.encode(data.log(0, "info"))
    if n % 2 == 0 then json.encode(data.processes("memory", 500)) end
  end
  return (cpu() - c0) / n
end

-- The cost of one process_info(pid, item) that reads a stack: of a ring
-- member waiting in receive (the rings wait for "go"), in ns of CPU.
local function stack_read_ns(item)
  local p = heads[1]
  for _ = 1, 10000 do -- until it has made its ring and waits for "go"
    if mb.process_info(p).status == "waiting" then break end
    mb.sleep(1)
  end
  assert(mb.process_info(p).status == "waiting")
  local n, c0 = 200000, cpu()
  for _ = 1, n do mb.process_info(p, item) end
  return (cpu() - c0) / n * 1e9
end

-- The process table (500 rows of data.processes), in ms of CPU per
-- table, with its current function column, and without: each row's read
-- of the stack replaced by an empty text.
local function table_ms(with_function)
  local data = require "moonbeam.dashboard.data"
  local info = mb.process_info
  if not with_function then
    mb.process_info = function(p, item) if item then return "" end return info(p) end
  end
  local n, c0 = 0, cpu()
  while cpu() - c0 < 1 do
    n = n + 1
    data.processes("memory", 500)
  end
  mb.process_info = info
  return (cpu() - c0) / n * 1e3
end

local read_function, read_stack = stack_read_ns("current_function"),
  stack_read_ns("current_stacktrace")
local table_plain, table_function = table_ms(false), table_ms(true)
assert(dashboard.start_dashboard({listen = "127.0.0.1:0"}))
local work = work_per_second()
application.stop("moonbeam_dashboard")
application.unload("moonbeam_dashboard")
for _, h in ipairs(heads) do mb.send(h, "go") end

local without, with, cpu_without, cpu_with = {}, {}, {}, {}
for r = 1, rounds do
  without[r], cpu_without[r] = measure()
  assert(dashboard.start_dashboard({listen = "127.0.0.1:0"}))
  local c = mb.spawn(client, dashboard.port())
  mb.sleep(1000) -- the client connected, the sampler has a sample
  with[r], cpu_with[r] = measure()
  mb.exit(c, mb.atom.kill)
  application.stop("moonbeam_dashboard")
  application.unload("moonbeam_dashboard")
end

local function median(t)
  local s = {table.unpack(t)}
  table.sort(s)
  return s[(#s + 1) // 2]
end

local a, b = median(without), median(with)
local ca, cb = median(cpu_without), median(cpu_with)
bench.note("%d rings of %d processes on %d schedulers, %d rounds of %d ms each way",
  rings, procs, mb.schedulers(), rounds, window)
for r = 1, rounds do
  bench.note("round %d: %.0f hops/s without, %.0f with (%+.2f %%); CPU %.0f ns/hop without, %.0f with",
    r, without[r], with[r], (without[r] - with[r]) / without[r] * 100, cpu_without[r], cpu_with[r])
end
bench.note("the dashboard's work: %.2f ms of CPU per second, on %d processes", work * 1e3,
  mb.process_count())
bench.report("dashboard_work", work / mb.schedulers() * 100, "%_of_schedulers", "lower")
bench.report("stack_read_function", read_function, "ns", "lower")
bench.report("stack_read_stacktrace", read_stack, "ns", "lower")
bench.report("process_table_500", table_plain, "ms", "lower")
bench.report("process_table_500_with_function", table_function, "ms", "lower")
bench.report("ring_throughput", a, "hops/s", "higher")
bench.report("ring_throughput_dashboard", b, "hops/s", "higher")
bench.report("dashboard_cost", (a - b) / a * 100, "%", "lower")
bench.report("ring_cpu", ca, "ns/hop", "lower")
bench.report("ring_cpu_dashboard", cb, "ns/hop", "lower")
bench.report("dashboard_cpu_cost", (cb - ca) / ca * 100, "%", "lower")
