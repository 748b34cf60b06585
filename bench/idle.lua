-- idle: the CPU time an idle node uses, first with nothing running (one
-- process sleeps in a timer), then with distribution up (it listens,
-- serves EPMD, and its net_kernel waits for pings).
--   moonbeam idle.lua [SECONDS]
-- Each figure is the node's CPU time over SECONDS (default 10), user plus
-- system, of all its threads: `idle_cpu` from /proc/self/stat (utime +
-- stime, in clock ticks of 10 ms), `idle_cpu_ns` from the threads'
-- /proc/self/task/*/schedstat (nanoseconds, to the microsecond).  The node settles for a
-- second before each measure.
local mb = require "moonbeam"
local bench = require "bench"

local secs = math.tointeger(tonumber(arg[1])) or 10
local tick_ms = 10 -- getconf CLK_TCK: 100 on Linux

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- utime + stime of the whole process, in milliseconds.
local function stat_ms()
  local s = read("/proc/self/stat")
  -- after "(comm)", field 3 is the state; utime and stime are 14 and 15
  local fields = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) * tick_ms
end

-- The node's threads, listed before a measure: listing forks a shell,
-- which costs the node CPU time.
local function threads()
  local pid = read("/proc/self/stat"):match("^(%d+)")
  local p = io.popen("ls /proc/" .. pid .. "/task")
  local tids = {}
  for tid in p:lines() do tids[#tids + 1] = tid end
  p:close()
  return tids
end

-- The CPU time of these threads, in nanoseconds.
local function threads_ns(tids)
  local total = 0
  for _, tid in ipairs(tids) do
    local s = read("/proc/self/task/" .. tid .. "/schedstat")
    if s then total = total + tonumber(s:match("^(%d+)")) end
  end
  return total
end

local function measure(name)
  mb.sleep(1000)
  local tids = threads()
  local ms0, ns0 = stat_ms(), threads_ns(tids)
  mb.sleep(secs * 1000)
  local ms1, ns1 = stat_ms(), threads_ns(tids)
  local per = secs == 10 and "10s" or secs .. "s"
  bench.report(name, ms1 - ms0, "ms/" .. per, "lower")
  bench.report(name .. "_ns", (ns1 - ns0) / 1e6, "ms/" .. per, "lower")
end

measure("idle_cpu")
mb.start_distribution{name = "idle@127.0.0.1", cookie = os.getenv("DIST_COOKIE") or "idle",
  epmd_port = tonumber(os.getenv("ERL_EPMD_PORT"))}
measure("idle_cpu_dist")
bench.note("goal: under 10 ms of CPU per 10 s, idle")
