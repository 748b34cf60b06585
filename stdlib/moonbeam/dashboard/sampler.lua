--- The dashboard's sampler: a GenServer, registered as dashboard_sampler,
-- that reads mb.statistics() once a period (1 s) and keeps the last
-- samples (5 minutes) for the charts.  Reading the counters costs the
-- node nothing between two samples: the schedulers only bump counters
-- they own, and utilisation is sampled by the watchdog (see core/stats.c).
--
-- A sample: {t = ms since the node started, util = {per scheduler, 0..1},
-- util_avg, messages = per second, runs = per second, processes,
-- memory = bytes in all, memory_processes, run_queue}.
local mb = require "moonbeam"
local gen_server = require "moonbeam.gen_server"

local TICK = mb.atom["$dashboard_tick"]

local M = {}

M.PERIOD_MS = 1000
M.KEEP = 300

--- Start the sampler, linked to the caller.
function M.start_link(period)
  return gen_server.start_link("moonbeam.dashboard.sampler", period or M.PERIOD_MS,
    {name = "dashboard_sampler"})
end

-- A sample: the rates between the previous reading and this one.
local function sample(prev, now)
  local dt_ms = now.uptime_ms - prev.uptime_ms
  if dt_ms <= 0 then dt_ms = 1 end
  local util, sum, msgs, runs, queue = {}, 0, 0, 0, 0
  for i, s in ipairs(now.schedulers) do
    local p = prev.schedulers[i]
    local u = (s.busy_ns - p.busy_ns) / (dt_ms * 1e6)
    if u > 1 then u = 1 end
    util[i], sum = u, sum + u
    msgs = msgs + (s.messages - p.messages)
    runs = runs + (s.runs - p.runs)
    queue = queue + s.run_queue
  end
  return {
    t = now.uptime_ms, util = util, util_avg = #util > 0 and sum / #util or 0,
    messages = msgs * 1000 // dt_ms, runs = runs * 1000 // dt_ms,
    processes = now.processes, memory = now.memory.total,
    memory_processes = now.memory.processes,
    run_queue = queue,
  }
end

--- gen_server callback.
function M.init(period)
  mb.send_after(period, mb.self(), TICK)
  return "ok", {period = period, last = mb.statistics(), samples = {}, first = 1}
end

--- gen_server callback: "history" answers the samples, oldest first;
-- "latest" the last one (nil before the first).
function M.handle_call(req, _, s)
  if req == "latest" then
    return "reply", s.samples[#s.samples], s
  elseif req == "history" then
    local out = {}
    for i = s.first, #s.samples do out[#out + 1] = s.samples[i] end
    return "reply", out, s
  end
  return "reply", nil, s
end

--- gen_server callback: each tick takes a sample.
function M.handle_info(msg, s)
  if msg == TICK then
    local now = mb.statistics()
    s.samples[#s.samples + 1] = sample(s.last, now)
    s.last = now
    -- Keep KEEP samples; compact once twice as many piled up.
    if #s.samples - s.first + 1 > M.KEEP then s.first = s.first + 1 end
    if s.first > M.KEEP then
      table.move(s.samples, s.first, #s.samples, 1)
      for i = #s.samples - s.first + 2, #s.samples do s.samples[i] = nil end
      s.first = 1
    end
    mb.send_after(s.period, mb.self(), TICK)
  end
  return "noreply", s
end

return M
