-- The programs in examples/ run with the launcher, exit with status 0 and
-- print what they promise.
--
-- The launcher is build/bin/moonbeam, or bin/moonbeam in $MB_BUILD_DIR (set
-- by .ci/specs to the build under test).
local launcher = (os.getenv("MB_BUILD_DIR") or "build") .. "/bin/moonbeam"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Run the launcher with `args`, bounded in time; return the exit status and
-- the output (stdout and stderr together) as a list of lines.
local function moonbeam(...)
  local words = {"timeout 30", shell_quote(launcher)}
  for _, a in ipairs({...}) do words[#words + 1] = shell_quote(a) end
  local p = assert(io.popen(table.concat(words, " ") .. " 2>&1"))
  local out = p:read("a")
  local _, _, status = p:close()
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return status, lines, out
end

-- Run an example and check that it succeeded without a crash report.
local function run_ok(...)
  local status, lines, out = moonbeam(...)
  assert(status == 0, "exit status " .. tostring(status) .. "\n" .. out)
  assert(not out:find("[error]", 1, true), "a crash was reported\n" .. out)
  return lines, out
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("examples/hello.lua", function()
  it("prints the greeter's reply and who sent it", function()
    local lines = run_ok("examples/hello.lua")
    assert.equal(1, #lines)
    assert.matches("^Hello, world! %(from <0%.%d+%.%d+>%)$", lines[1])
  end)

  it("greets the name given as its argument", function()
    local lines = run_ok("examples/hello.lua", "moonbeam")
    assert.matches("^Hello, moonbeam! ", lines[1])
  end)
end)

describe("examples/ring.lua", function()
  it("passes the token around 1000 processes 10 times by default", function()
    local lines = run_ok("examples/ring.lua")
    assert.same({
      "ring of 1000 processes (1000 alive)",
      "token went around 10 times: 10000 messages",
    }, lines)
  end)

  it("takes the ring size and the number of laps as arguments", function()
    local lines = run_ok("examples/ring.lua", "50", "3")
    assert.same({
      "ring of 50 processes (50 alive)",
      "token went around 3 times: 150 messages",
    }, lines)
  end)

  it("works on a single scheduler", function()
    local lines = run_ok("--schedulers", "1", "examples/ring.lua", "200", "5")
    assert.equal("token went around 5 times: 1000 messages", lines[2])
  end)

  it("exits with status 1 and a usage message for a ring of one", function()
    local status, _, out = moonbeam("examples/ring.lua", "1")
    assert.equal(1, status)
    assert.truthy(out:find("usage: ring.lua", 1, true))
  end)
end)

describe("examples/pool.lua", function()
  -- The chunk lines, as {first, last, n, steps}, in the order printed.
  local function chunks(lines)
    local t = {}
    for _, line in ipairs(lines) do
      local first, last, n, steps = line:match("^%s*(%d+)%.%.(%d+)%s+(%d+) %((%d+) steps%)$")
      if first then
        t[#t + 1] = {tonumber(first), tonumber(last), tonumber(n), tonumber(steps)}
      end
    end
    return t
  end

  it("finds the longest Collatz sequence below 100000", function()
    local lines = run_ok("examples/pool.lua")
    assert.matches("^longest below 100000: 77031 %(350 steps%), 10 chunks, %d+ workers?$",
                   lines[#lines])
  end)

  it("prints the results in chunk order, whatever order they arrive in", function()
    local lines = run_ok("examples/pool.lua", "10000", "700", "4")
    local t = chunks(lines)
    assert.equal(15, #t)
    local expect_first = 1
    for _, c in ipairs(t) do
      assert.equal(expect_first, c[1])
      assert.is_true(c[1] <= c[3] and c[3] <= c[2])
      expect_first = c[2] + 1
    end
    assert.equal(10000, expect_first)
    assert.equal("longest below 10000: 6171 (261 steps), 15 chunks, 4 workers",
                 lines[#lines])
  end)

  it("gives the same answer with one worker", function()
    local lines = run_ok("examples/pool.lua", "10000", "1000", "1")
    assert.equal("longest below 10000: 6171 (261 steps), 10 chunks, 1 worker",
                 lines[#lines])
  end)
end)
