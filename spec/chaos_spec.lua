-- Chaos under load (spec/fixtures/chaos.lua): workers under a supervisor,
-- clients calling them in a loop, random kills for a bounded time.  After
-- it, every acknowledged request is in the ledger, no call hung, every
-- worker is back under its one name, and no process is left behind.  In a
-- node of its own (the launcher), to choose its schedulers.
local H = require "spec.launcher_helper"

local function chaos(schedulers, ms)
  local status, out, err = H.run({"--schedulers", tostring(schedulers),
    "spec/fixtures/chaos.lua", tostring(ms)}, {timeout = 90})
  assert(status == 0, "exit status " .. tostring(status) .. "\n" .. out .. err:sub(-4000))
  local got = {}
  for _, line in ipairs(H.lines(out)) do
    local k, v = line:match("^([%w_]+)\t(.*)$")
    if k then got[k] = v end
  end
  return got
end

local expected = {
  killed_some = "true",
  acked_some = "true",
  hung = "0",
  missing = "0",
  workers = "8",
  children = "8",
  left_behind = "0",
}

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("a supervision tree under load and random kills", function()
  it("loses no acknowledged request and hangs no call, on two schedulers", function()
    assert.same(expected, chaos(2, 2000))
  end)

  it("loses no acknowledged request and hangs no call, on one scheduler", function()
    assert.same(expected, chaos(1, 1000))
  end)
end)
