-- The commands an operator runs against a running node: moonbeam ping,
-- stop, rpc, pid and remote, against a node that runs and one that does
-- not.
local H = require "spec.launcher_helper"

describe("commands for a running node", function()
  local port, node, job, dir
  local env

  -- A node named op@127.0.0.1 running a script that waits, serving epmd on
  -- a test port (another program may hold one: a failed start tries
  -- another).
  local function start_target()
    dir = H.tmpdir()
    local script = dir .. "/target.lua"
    H.write(script, 'local mb = require "moonbeam"\nmb.register("keeper", mb.self())\n'
      .. 'mb.receive(60000)\n')
    node = "op@127.0.0.1"
    for _ = 1, 3 do
      port = tostring(27000 + math.random(0, 2999))
      env = {ERL_EPMD_PORT = port}
      job = H.start({"run", "--name", node, "--cookie", "oc", script}, {env = env})
      local up = H.wait_for(function()
        if job:stderr():find("cannot start distribution", 1, true) then return "failed" end
        local s, names = H.run({"epmd-names"}, {env = env, timeout = 10})
        return s == 0 and names:find("name op at", 1, true) and "up"
      end, 10)
      if up == "up" then return end
      job:cleanup()
    end
    error("the target node did not come up: " .. job:stderr())
  end

  local function run(args, opts)
    opts = opts or {}
    opts.env = env
    return H.run(args, opts)
  end

  before_each(start_target)
  after_each(function()
    job:cleanup()
    H.remove(dir)
  end)

  it("ping answers pong and exits 0 for a running node, pang and 1 for a stopped one", function()
    local s, out, err = run({"ping", node, "--cookie", "oc"})
    assert.equal(0, s, err)
    assert.equal("pong\n", out)
    s, out = run({"ping", "nobody@127.0.0.1", "--cookie", "oc"})
    assert.equal(1, s)
    assert.equal("pang\n", out)
    s, out = run({"ping", node, "--cookie", "wrong"})
    assert.equal(1, s)
    assert.equal("pang\n", out)
  end)

  it("pid prints the operating system pid of the node's launcher", function()
    local s, out, err = run({"pid", node, "--cookie", "oc"})
    assert.equal(0, s, err)
    assert.equal(tostring(job.pid) .. "\n", out)
  end)

  it("rpc evaluates on the node and prints what it returns; an error there exits 1", function()
    local s, out, err = run({"rpc", node, "mb.node(), mb.whereis('keeper') ~= nil, {1, 'two'}",
      "--cookie", "oc"})
    assert.equal(0, s, err)
    assert.equal('op@127.0.0.1, true, {1, "two"}\n', out)
    s, out, err = run({"rpc", node, "local x = 1", "--cookie", "oc"})
    assert.equal(0, s, err)
    assert.equal("", out)
    s, out, err = run({"rpc", node, "error('no such thing')", "--cookie", "oc"})
    assert.equal(1, s)
    assert.equal("", out)
    assert.same({"moonbeam: rpc on op@127.0.0.1: rpc:1: no such thing"}, H.said(err))
  end)

  it("take the node from --name, or from the config file", function()
    local s, out, err = run({"--name", node, "--cookie", "oc", "rpc", "1 + 1"})
    assert.equal(0, s, err)
    assert.equal("2\n", out)
    local config = dir .. "/node.lua"
    H.write(config, 'return {name = "op@127.0.0.1", cookie = "oc"}\n')
    s, out, err = run({"ping", "--config", config})
    assert.equal(0, s, err)
    assert.equal("pong\n", out)
    s, _, err = run({"pid"})
    assert.equal(2, s)
    assert.same({"moonbeam: pid: missing node (give NODE, --name or --sname; see moonbeam pid --help)"},
      H.said(err))
  end)

  it("remote opens a shell on the node, as shell --remsh", function()
    local s, out, err = run({"remote", node, "--cookie", "oc"},
      {input = "mb.node(), mb.whereis('keeper') ~= nil\nq()\n"})
    assert.equal(0, s, err)
    assert.matches("op@127%.0%.0%.1, true\n", out)
  end)

  it("stop stops the node as SIGTERM does and waits until it is down; then it is stopped", function()
    local s, out, err = run({"stop", node, "--cookie", "oc"})
    assert.equal(0, s, err)
    assert.equal("", out)
    assert.equal(0, job:wait(10))
    assert.matches("SIGTERM received: stopping the node", job:stderr())
    s, out = run({"ping", node, "--cookie", "oc"})
    assert.equal(1, s)
    assert.equal("pang\n", out)
    for _, cmd in ipairs({{"stop"}, {"pid"}, {"rpc", "1"}, {"remote"}}) do
      local args = {cmd[1], node, "--cookie", "oc"}
      if cmd[2] then table.insert(args, 3, cmd[2]) end
      s, out, err = run(args)
      assert.equal(1, s, cmd[1])
      assert.equal("", out)
      assert.same({"moonbeam: cannot connect to op@127.0.0.1"}, H.said(err))
    end
  end)
end)
