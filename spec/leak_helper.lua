-- For specs whose examples must leave no process behind: after each one,
-- the node's count of processes goes back (within 2 s) to what it was
-- before it.  Usage, at the top of a spec file:
--   local in_process = require("spec.leak_helper")
--     .no_process_left_behind(before_each, after_each)
-- (busted's hooks live in the spec file's environment, not in this one's).
local mb = require "moonbeam"
local assert = require "luassert"

local H = {}

-- Wait (bounded) until the node has no more processes than `before`.
local function settled(before)
  return mb.run(function(n)
    for _ = 1, 1000 do
      if mb.process_count() <= n + 1 then return true end
      mb.sleep(2)
    end
    return ("%d processes left behind"):format(mb.process_count() - 1 - n)
  end, before)
end

-- Install the check around every example of the calling file, and return
-- a function that runs fn(...) in a process of its own (mb.run).
function H.no_process_left_behind(before_each, after_each)
  local baseline
  before_each(function() baseline = mb.process_count() end)
  after_each(function() assert.is_true(settled(baseline)) end)
  return function(fn, ...) return mb.run(fn, ...) end
end

return H
