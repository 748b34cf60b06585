-- A pool of workers: the script splits a job into chunks, workers take
-- chunks as they become free, and the results are printed in chunk order
-- whatever order they arrive in.
--
--   moonbeam examples/pool.lua [LIMIT] [CHUNK] [WORKERS]
--
-- The job: find the number below LIMIT (default 100000) whose Collatz
-- sequence takes the most steps to reach 1, in chunks of CHUNK numbers
-- (default 10000), with WORKERS processes (default: one per scheduler).
local mb = require "moonbeam"

local limit = math.tointeger(tonumber(arg[1])) or 100000
local chunk = math.tointeger(tonumber(arg[2])) or 10000
local nworkers = math.tointeger(tonumber(arg[3])) or mb.schedulers()
assert(limit >= 2 and chunk >= 1 and nworkers >= 1,
       "usage: pool.lua [LIMIT >= 2] [CHUNK >= 1] [WORKERS >= 1]")

local function collatz_steps(n)
  local steps = 0
  while n ~= 1 do
    if n % 2 == 0 then n = n // 2 else n = 3 * n + 1 end
    steps = steps + 1
  end
  return steps
end

-- The work of one chunk: the number in [first, last] with the most steps.
local function longest(first, last)
  local best, best_steps = first, collatz_steps(first)
  for n = first + 1, last do
    local steps = collatz_steps(n)
    if steps > best_steps then best, best_steps = n, steps end
  end
  return best, best_steps
end

-- A worker says it is ready, then does every chunk it is given, sending the
-- result with its next "ready", until it is told to stop.  `longest` and
-- `collatz_steps` are upvalues: they are copied into each worker.
local function worker(pool)
  local me = mb.self()
  mb.send(pool, {ready = me})
  while true do
    local job = mb.receive()
    if job == "stop" then return end
    local n, steps = longest(job.first, job.last)
    mb.send(pool, {ready = me, index = job.index, n = n, steps = steps})
  end
end

local jobs = {}
for first = 1, limit - 1, chunk do
  jobs[#jobs + 1] = {first = first, last = math.min(first + chunk - 1, limit - 1)}
end

for _ = 1, nworkers do
  mb.spawn(worker, mb.self())
end

-- Hand out chunks on demand, so that a slow chunk does not hold up the
-- others.  A worker is told to stop only once it has returned its last
-- result, so when every worker has stopped every result is in.
local results, next_job, stopped = {}, 1, 0
while stopped < nworkers do
  local msg = mb.receive()
  if msg.index then
    results[msg.index] = msg
  end
  local job = jobs[next_job]
  if job then
    mb.send(msg.ready, {index = next_job, first = job.first, last = job.last})
    next_job = next_job + 1
  else
    mb.send(msg.ready, "stop")
    stopped = stopped + 1
  end
end

local best = results[1]
for i, job in ipairs(jobs) do
  local r = results[i]
  print(string.format("%6d..%-6d %6d (%d steps)", job.first, job.last, r.n, r.steps))
  if r.steps > best.steps then best = r end
end
print(string.format("longest below %d: %d (%d steps), %d chunks, %d worker%s",
                    limit, best.n, best.steps, #jobs, nworkers,
                    nworkers == 1 and "" or "s"))
