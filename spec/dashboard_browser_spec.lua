-- The dashboard in a real browser: a node started with the dashboard, and
-- headless Chromium (Debian's chromium, driven by playwright-core, which
-- the build installs with npm) that loads the page, reloads a module,
-- sorts the process table, opens a process and sees the function it waits
-- in, traces it from its page and by a name pattern from the process
-- table, sees a supervision tree, kills a process after confirming, and
-- follows its crash in the live log (spec/dashboard_browser.js).  The screenshot is written to a temporary
-- directory, removed at the end; set MB_DASHBOARD_SCREENSHOT to a file
-- name to keep a copy there.  Every OS process started here is stopped by
-- its pid (the browser by playwright, when the script ends or is killed).
local H = require "spec.launcher_helper"

local function found(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p:read("l")
  p:close()
  return out
end

local chromium = os.getenv("MB_CHROMIUM") or found("command -v chromium")
local node = found("command -v node")
local modules = H.build .. "/npm/node_modules"
local playwright = io.open(modules .. "/playwright-core/package.json") ~= nil

describe("the dashboard in headless Chromium", function()
  local missing = not chromium and "Debian's chromium package"
    or not node and "node (Debian's nodejs package)"
    or not playwright and "playwright-core in " .. modules .. " (the build runs npm ci)"
  if missing then
    it("needs a browser", function()
      pending("the browser spec cannot run: " .. missing .. " is not installed (.ci/deps installs it)")
    end)
    return
  end

  it("loads the page, sorts processes, opens and traces one, shows a tree, and follows a crash in the log", function()
    local job = H.start({"start", "spec/fixtures/dashboard/demo.app.lua",
                         "--dashboard", "127.0.0.1:0"})
    assert(job:wait_output("Application demo started", 20), job:stderr())
    local port = job:stderr():match("dashboard: listening on http://127%.0%.0%.1:(%d+)/")
    local dir = H.tmpdir()
    local ok, err = pcall(function()
      assert(port, job:stderr())
      -- The sanitizers' preload of .ci/test is not the browser's to have.
      local status, out, errout = H.run({"-u", "LD_PRELOAD", "NODE_PATH=" .. modules,
        "HOME=" .. dir, node, "spec/dashboard_browser.js",
        "http://127.0.0.1:" .. port .. "/", dir, chromium},
        {program = "env", timeout = 150})
      assert.equal(0, status, out .. errout)
      assert.same({
        "ok load the page",
        "ok see the charts",
        "ok reload a module from the node view",
        "ok sort the process table by reductions",
        "ok open the process registered as counter",
        "ok see the function the counter waits in, and its stack",
        "ok trace the counter from its page, see a send, and stop",
        "ok trace the processes whose names match a pattern, from the process table",
        "ok see the supervision tree",
        "ok kill the process, confirmed, and follow the crash in the log",
        "ok take a screenshot",
      }, (function()
        local steps = {}
        for line in out:gmatch("[^\n]+") do
          steps[#steps + 1] = line:gsub(" <%d+%.%d+%.%d+>$", "")
        end
        return steps
      end)())
      local png = H.read(dir .. "/dashboard.png")
      assert.equal("\137PNG", png:sub(1, 4))
      local keep = os.getenv("MB_DASHBOARD_SCREENSHOT")
      if keep then H.write(keep, png) end
      -- The node saw the kill, and its supervisor restarted the counter.
      assert.matches("Child counter of Supervisor demo_sup terminated", job:stderr(), 1, true)
    end)
    job:signal("TERM")
    local status = job:wait(30)
    job:cleanup()
    H.remove(dir)
    assert(ok, err)
    assert.equal(0, status)
  end)
end)
