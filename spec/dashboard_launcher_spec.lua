-- The dashboard started by the launcher: `moonbeam start app.lua
-- --dashboard IP:PORT`, its token, its config keys, and the views of
-- another moonbeam node fetched over distribution.  Spoken to with curl on
-- 127.0.0.1; every OS process started here is stopped by its pid.
local H = require "spec.launcher_helper"

local have_curl, curl = H.have_curl, H.curl
local APP = "spec/fixtures/dashboard/demo.app.lua"

-- Start the demo application with the dashboard; the job and the port
-- the dashboard listens on.
local function start(args, opts)
  local argv = {"start", APP}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local job = H.start(argv, opts)
  assert(job:wait_output("Application demo started", 20), job:stderr())
  local port = tonumber(job:stderr():match("dashboard: listening on http://127%.0%.0%.1:(%d+)/"))
  return job, port
end

describe("moonbeam start --dashboard", function()
  if not have_curl then
    it("needs curl", function() pending("curl is not installed") end)
    return
  end

  it("serves the page, the API and /health on a loopback address", function()
    local job, port = start({"--dashboard", "127.0.0.1:0"})
    local ok, err = pcall(function()
      local base = "http://127.0.0.1:" .. port
      local code, body = curl(base .. "/health")
      assert.equal(200, code)
      assert.matches('"status":"ok"', body)
      assert.matches('{"name":"demo","running":true}', body, 1, true) -- keys in order
      code, body = curl(base .. "/")
      assert.equal(200, code)
      assert.matches("<title>moonbeam dashboard</title>", body, 1, true)
      code, body = curl(base .. "/api/applications")
      assert.equal(200, code)
      assert.matches('"id":"counter"', body, 1, true)
    end)
    job:signal("TERM")
    local status = job:wait(30)
    job:cleanup()
    assert(ok, err)
    assert.equal(0, status)
  end)

  it("refuses to start on an address other than loopback without a token", function()
    local status, _, err = H.run({"start", APP, "--dashboard", "0.0.0.0:0"})
    assert.equal(1, status)
    assert.matches("moonbeam: cannot start the dashboard: .*needs a token", err)
  end)

  it("takes its address and token from the config file, and asks for the token", function()
    local dir = H.tmpdir()
    H.write(dir .. "/node.lua",
      'return {dashboard = "127.0.0.1:0", dashboard_token = "spec-token-123"}\n')
    local job, port = start({"--config", dir .. "/node.lua"})
    local ok, err = pcall(function()
      local base = "http://127.0.0.1:" .. port
      assert.equal(401, (curl(base .. "/api/node")))
      assert.equal(401, (curl("-H 'authorization: Bearer nope-nope-nope' " .. base .. "/api/node")))
      assert.equal(200, (curl("-H 'authorization: Bearer spec-token-123' " .. base .. "/api/node")))
      assert.equal(200, (curl("'" .. base .. "/api/node?token=spec-token-123'")))
    end)
    job:cleanup()
    H.remove(dir)
    assert(ok, err)
  end)

  it("shows another moonbeam node of the cluster, fetched over distribution", function()
    local epmd = tostring(24000 + math.random(0, 999))
    local suffix = tostring(math.random(100000, 999999))
    local b_name = "dashb" .. suffix .. "@127.0.0.1"
    local env = {ERL_EPMD_PORT = epmd}
    -- Node b first: it serves epmd for both.
    local b = H.start({"start", APP, "--name", b_name, "--cookie", "dashc"}, {env = env})
    assert(b:wait_output("Application demo started", 20), b:stderr())
    local a, port = start({"--name", "dasha" .. suffix .. "@127.0.0.1", "--cookie", "dashc",
      "--dashboard", "127.0.0.1:0", "--env", "demo.peer=" .. b_name}, {env = env})
    local ok, err = pcall(function()
      local base = "http://127.0.0.1:" .. port
      local code, body = curl(base .. "/api/cluster")
      assert.equal(200, code)
      assert.matches('"kind":"moonbeam"', body, 1, true)
      assert.matches('"name":"' .. b_name .. '"', body, 1, true)
      assert.matches('"visible":true', body, 1, true)
      code, body = curl(base .. "/api/node?node=" .. b_name)
      assert.equal(200, code)
      assert.matches('"node":"' .. b_name .. '"', body, 1, true)
      code, body = curl(base .. "/api/applications?node=" .. b_name)
      assert.equal(200, code)
      assert.matches('"id":"counter"', body, 1, true)
      code, body = curl(base .. "/api/processes?sort=memory&node=" .. b_name)
      assert.equal(200, code)
      assert.matches('"counter","waiting"', body, 1, true)
    end)
    a:cleanup()
    b:signal("TERM")
    b:wait(30)
    b:cleanup()
    assert(ok, err)
  end)
end)
