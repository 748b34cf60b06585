-- Exit signals against link and monitor requests: every monitor gets its
-- 'DOWN' and every link of a process trapping exits its 'EXIT', whatever
-- order the signals reach the target in, on one scheduler and on two.
-- The races run in a node of their own (the launcher), to choose its
-- number of schedulers.
local H = require "spec.launcher_helper"

local ROUNDS = "2000"

local function lost_answers(schedulers)
  local status, out, err = H.run({"--schedulers", tostring(schedulers),
    "spec/fixtures/signal_race.lua", ROUNDS}, {timeout = 120})
  assert(status == 0, "exit status " .. tostring(status) .. "\n" .. out .. err)
  local lost = {}
  for _, line in ipairs(H.lines(out)) do
    local name, n = line:match("^(.-)\t(%d+)$")
    if name then lost[name] = tonumber(n) end
  end
  return lost
end

local expected = {
  ["kill+monitor"] = 0,
  ["kill+link"] = 0,
  ["kill+monitor, waiting target"] = 0,
  ["third-party kill+monitor"] = 0,
  ["third-party kill+link"] = 0,
}

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("a monitor or link request racing an exit signal", function()
  it("is always answered on one scheduler", function()
    assert.same(expected, lost_answers(1))
  end)

  it("is always answered on two schedulers", function()
    assert.same(expected, lost_answers(2))
  end)
end)
