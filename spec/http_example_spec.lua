-- examples/http: an application serving HTTP in front of the kv store,
-- started with `moonbeam start` and spoken to with curl.  Every OS process
-- started here is stopped by its pid; only 127.0.0.1.
local H = require "spec.launcher_helper"

local have_curl = H.have_curl

local function start_http(args)
  local argv = {"start", "examples/http/http.app.lua"}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local job = H.start(argv)
  assert(job:wait_output("http: listening on", 20), job:stderr())
  local port = tonumber((job:stdout() .. job:stderr()):match("listening on 127%.0%.0%.1:(%d+)"))
  return job, port
end

local curl = H.curl

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("examples/http", function()
  if not have_curl then
    it("needs curl", function() pending("curl is not installed") end)
    return
  end

  it("serves GET /, and GET/PUT /kv/KEY backed by the kv server", function()
    local job, port = start_http({"--env", "http.port=0"})
    local ok, err = pcall(function()
      local base = "http://127.0.0.1:" .. port
      assert.same({200, "Hello from moonbeam!\n"}, {curl(base .. "/")})
      assert.same({404, "not found\n"}, {curl(base .. "/kv/moon")})
      assert.same({204, ""}, {curl("-X PUT --data-binary beam " .. base .. "/kv/moon")})
      assert.same({200, "beam"}, {curl(base .. "/kv/moon")})
      -- the kv application's own environment is there too
      assert.same({200, "Lua"}, {curl(base .. "/kv/language")})
      assert.same({405, ""}, {curl("-X DELETE " .. base .. "/kv/moon")})
      -- two requests on one connection (curl keeps it alive)
      local code = curl(base .. "/kv/moon " .. base .. "/")
      assert.equal(200, code)
    end)
    job:cleanup()
    assert(ok, err)
  end)

  it("takes its port from a config file's env", function()
    local dir = H.tmpdir()
    H.write(dir .. "/node.lua", "return {env = {http = {port = 0}}}\n")
    local job, port = start_http({"--config", dir .. "/node.lua"})
    local ok, err = pcall(function()
      assert.is_true(port ~= 8080 and port > 0)
      assert.same({200, "Hello from moonbeam!\n"}, {curl("http://127.0.0.1:" .. port .. "/")})
    end)
    job:cleanup()
    H.remove(dir)
    assert(ok, err)
  end)

  it("closes a connection that sends garbage, and serves the next", function()
    local job, port = start_http({"--env", "http.port=0"})
    local ok, err = pcall(function()
      assert.same({"closed", 200}, {require("moonbeam").run(function(p)
        local gen_tcp = require "moonbeam.gen_tcp"
        local s = assert(gen_tcp.connect("127.0.0.1", p, {active = false}, 5000))
        gen_tcp.send(s, "\1\2\3 not http at all\r\n\r\n")
        local _, why = gen_tcp.recv(s, 0, 5000)
        return tostring(why)
      end, port), (curl("http://127.0.0.1:" .. port .. "/"))})
    end)
    job:cleanup()
    assert(ok, err)
  end)
end)
