--- Helpers shared by the moonbeam side of the benchmarks: a wall clock,
-- the resident set size, and the result lines that bench/run reads.
-- The Erlang side has the same helpers in bench.erl.
local M = {}

-- The clock: moonbeam's monotonic_time (nanoseconds), as Erlang's.
local mb = require "moonbeam"
local ok, system = pcall(require, "system")
if mb.monotonic_time then
  M.now = function() return mb.monotonic_time() / 1e9 end
  M.clock = "monotonic_time"
  M.fine_clock = true
elseif ok and system.monotime then
  M.now = system.monotime
  M.clock = "CLOCK_MONOTONIC (lua-system)"
  M.fine_clock = true
else
  M.now = function()
    local p = io.popen("date +%s%N")
    local ns = p:read("n")
    p:close()
    return ns / 1e9
  end
  M.clock = "date +%s%N (coarse: lua-system not found)"
  M.fine_clock = false
end

--- Resident set size of this OS process.
-- @return bytes
function M.rss()
  local f = assert(io.open("/proc/self/status"))
  local kb = f:read("a"):match("VmRSS:%s*(%d+) kB")
  f:close()
  return tonumber(kb) * 1024
end

--- Print one figure as a line that bench/run collects.
-- @param name figure name, the same on the Erlang side
-- @param value number
-- @param unit unit of the value, without spaces
-- @param better "lower" or "higher"
function M.report(name, value, unit, better)
  print(string.format("RESULT %s %.6g %s %s", name, value, unit, better))
end

--- Print a line that bench/run shows as it is.
function M.note(fmt, ...)
  print("# " .. string.format(fmt, ...))
end

--- The p-th percentile (0..100) of a sorted array, nearest rank.
function M.percentile(sorted, p)
  local i = math.max(1, math.ceil(#sorted * p / 100))
  return sorted[i]
end

--- The output of a shell command.
function M.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

--- s quoted for the shell.
function M.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

return M
