-- The launcher, bin/moonbeam: its commands and their help, settings from
-- flags, environment variables and a config file, starting a node from an
-- application file, and stopping it with SIGTERM and SIGINT.
local H = require "launcher_helper"

local run, said, lines = H.run, H.said, H.lines

-- Applications for `moonbeam start`, in a directory of their own: store,
-- and web, which depends on it. Each has a supervisor with one worker
-- that traps exits, so that a shutdown runs its terminate; everything
-- they do is printed.
local APPS = [[
local mb = require "moonbeam"
local supervisor = require "moonbeam.supervisor"
local gen_server = require "moonbeam.gen_server"
local application = require "moonbeam.application"

local M = {}

local function say(...)
  io.stdout:write(table.concat({...}, " "), "\n")
  io.stdout:flush()
end

local worker = {
  init = function(name)
    require("moonbeam").trap_exit(true)
    return "ok", name
  end,
  terminate = function(reason, name)
    io.stdout:write(name, " worker terminate ", tostring(reason), "\n")
    io.stdout:flush()
  end,
}

function M.start_worker(name)
  return gen_server.start_link(worker, name, {name = name .. "_worker"})
end

-- The supervisors' callback.
function M.init(name)
  return "ok", {strategy = "one_for_one"},
    {{id = name, start = {"apps", "start_worker", {name}}}}
end

-- The applications' callbacks.
function M.start(start_type, name)
  if name == "broken" then error("no database") end
  say(name, "start", start_type, tostring(application.get_env(name, "port")))
  if name == "fragile" then
    -- A top process that dies soon.
    return gen_server.start_link({
      init = function()
        mb.send_after(100, mb.self(), "die")
        return "ok", 0
      end,
      handle_info = function(_, s) return "stop", "boom", s end,
    }, nil)
  end
  local pid, why = supervisor.start_link("apps", name, {name = name .. "_sup"})
  if not pid then return nil, why end
  return pid, name
end

function M.stop(name) say(name, "stop") end

return M
]]

local FILES = {
  ["apps.lua"] = APPS,
  ["store.app.lua"] = [[return {name = "store", mod = {"apps", "store"}, env = {port = 1}}]],
  ["web.app.lua"] = [[return {name = "web", mod = {"apps", "web"}, applications = {"store"},
    env = {port = 80}}]],
  ["broken.app.lua"] = [[return {name = "broken", mod = {"apps", "broken"},
    applications = {"store"}}]],
  ["fragile.app.lua"] = [[return {name = "fragile", mod = {"apps", "fragile"},
    applications = {"store"}}]],
  ["lost.app.lua"] = [[return {name = "lost", applications = {"nowhere"}}]],
  ["byname.lua"] = [[return "web"]],
  ["syntax.app.lua"] = "return {name = 'syntax',\n",
  ["number.app.lua"] = "return 42\n",
  ["script.lua"] = [[
local mb = require "moonbeam"
print("args", arg.n, ...)
if ... == "crash" then error("crashed on purpose") end
if ... == "linked" then
  mb.spawn_link(function() require("moonbeam").exit("linked_died") end)
  mb.receive()
end
]],
}

local dir

lazy_setup(function()
  dir = H.tmpdir()
  for name, text in pairs(FILES) do H.write(dir .. "/" .. name, text) end
end)

lazy_teardown(function() if dir then H.remove(dir) end end)

local function file(name) return dir .. "/" .. name end

-- Exactly one line of the launcher's own on stderr, and the status.
local function fails_with(status, pattern, s, out, err)
  assert.equal(status, s, out .. err)
  local msgs = said(err)
  assert.equal(1, #msgs, err)
  assert.matches(pattern, msgs[1])
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("moonbeam --help", function()
  it("lists the commands and the options, and exits 0", function()
    local s, out = run({"--help"})
    assert.equal(0, s)
    for _, word in ipairs({"run script.lua", "start app.lua", "eval CODE", "shell",
                           "epmd-names", "--schedulers", "--config", "--rocks-tree",
                           "--env", "MOONBEAM_LOG_LEVEL"}) do
      assert.truthy(out:find(word, 1, true), word)
    end
  end)

  for _, cmd in ipairs({"run", "start", "eval", "shell", "epmd-names"}) do
    it("has help for " .. cmd .. ", as `" .. cmd .. " --help` and `help " .. cmd .. "`", function()
      local s, out = run({cmd, "--help"})
      assert.equal(0, s)
      assert.matches("^usage: moonbeam " .. cmd:gsub("%-", "%%-"), out)
      local s2, out2 = run({"help", cmd})
      assert.equal(0, s2)
      assert.equal(out, out2)
    end)
  end

  it("prints the version", function()
    local s, out = run({"--version"})
    assert.equal(0, s)
    assert.matches("^moonbeam %d+%.%d+%.%d+\n$", out)
  end)

  it("exits 2 with a message for an unknown option, a missing argument or no command", function()
    local s, _, err = run({"--frobnicate", "x.lua"})
    assert.equal(2, s)
    assert.matches("unknown option %-%-frobnicate", err)
    s, _, err = run({"start"})
    assert.equal(2, s)
    assert.matches("start: missing application file", err)
    s, _, err = run({"--schedulers"})
    assert.equal(2, s)
    assert.matches("%-%-schedulers expects N", err)
    s, _, err = run({"--schedulers", "lots", "x.lua"})
    assert.equal(2, s)
    assert.matches("expects a number of threads", err)
    s, _, err = run({"eval", "--type", "permanent", "1"})
    assert.equal(2, s)
    assert.matches("%-%-type is not an option of eval", err)
    s, _, err = run({})
    assert.equal(2, s)
    assert.matches("^usage:", err)
  end)
end)

describe("moonbeam run", function()
  it("runs a script with its arguments, as `moonbeam script.lua` does", function()
    local s, out = run({"run", file("script.lua"), "a", "--schedulers", "b"})
    assert.equal(0, s)
    assert.equal("args\t3\ta\t--schedulers\tb\n", out)
    s, out = run({"--schedulers", "2", file("script.lua"), "x"})
    assert.equal(0, s)
    assert.equal("args\t1\tx\n", out)
  end)

  it("exits 1 when the script crashes", function()
    local s, _, err = run({"run", file("script.lua"), "crash"})
    assert.equal(1, s)
    assert.truthy(err:find("crashed on purpose", 1, true))
  end)

  it("exits 1 and says why when an exit signal through a link ends the script", function()
    local s, _, err = run({"run", file("script.lua"), "linked"})
    assert.equal(1, s)
    assert.truthy(err:find("** (EXIT) linked_died", 1, true), err)
  end)

  it("exits 1 with one message when the script is missing", function()
    fails_with(1, "^moonbeam: cannot open .*nosuch%.lua: No such file", run({"run", file("nosuch.lua")}))
  end)
end)

describe("moonbeam eval", function()
  it("prints what an expression gives, with inspect", function()
    local s, out = run({"eval", "1 + 2, 'two', {a = {1, 2}}, mb.tuple('ok', 3)"})
    assert.equal(0, s)
    assert.equal('3, "two", {a = {1, 2}}, {"ok", 3}\n', out)
  end)

  it("runs statements, with the arguments in ... and arg", function()
    local s, out = run({"eval", "local a, b = ...; print(a .. b, arg.n); return #arg", "x", "y"})
    assert.equal(0, s)
    assert.equal("xy\t2\n2\n", out)
    s, out = run({"eval", "local x = 1"})
    assert.equal(0, s)
    assert.equal("", out)
  end)

  it("runs the code as a process of a node", function()
    -- run refuses to be called inside a process.
    local s, out = run({"eval", "mb.typeof(mb.self()), (pcall(mb.run, function() end))"})
    assert.equal(0, s)
    assert.equal('"pid", false\n', out)
  end)

  it("exits 1 with one message for an error or a syntax error", function()
    fails_with(1, "^moonbeam: eval:1: boom$", run({"eval", "error('boom')"}))
    fails_with(1, "^moonbeam: eval:1: .*near <eof>$", run({"eval", "x ="}))
    fails_with(1, "^moonbeam: {code = 7}$", run({"eval", "error({code = 7})"}))
  end)
end)

describe("settings", function()
  local config

  before_each(function()
    config = file("config.lua")
    H.write(config, [[
return {
  schedulers = 3,
  max_heap = "1M",
  log_level = "warning",
  env = {demo = {port = 4001, host = "db.local"}},
}
]])
  end)

  it("come from the config file", function()
    local s, out = run({"--config", config, "eval",
      "mb.schedulers(), mb.log_level(), mb.process_info(mb.self()).max_heap"})
    assert.equal(0, s)
    assert.equal('3, "warning", 1048576\n', out)
  end)

  it("from environment variables over the config file, and from flags over both", function()
    local code = "mb.schedulers(), mb.log_level()"
    local env = {MOONBEAM_SCHEDULERS = "2", MOONBEAM_CONFIG = config, MOONBEAM_LOG_LEVEL = "error"}
    local s, out = run({"eval", code}, {env = env})
    assert.equal(0, s)
    assert.equal('2, "error"\n', out)
    s, out = run({"--schedulers", "1", "eval", "--log-level", "notice", code}, {env = env})
    assert.equal(0, s)
    assert.equal('1, "notice"\n', out)
  end)

  it("default to one scheduler per core and the info level", function()
    local s, out = run({"eval", "mb.log_level()"})
    assert.equal(0, s)
    assert.equal('"info"\n', out)
  end)

  it("take sizes in bytes or with K, M or G", function()
    local code = "mb.process_info(mb.self()).max_heap"
    for size, bytes in pairs({["8388608"] = 8388608, ["16384K"] = 16777216, ["32m"] = 33554432, ["1G"] = 1073741824}) do
      local s, out = run({"--max-heap", size, "eval", code})
      assert.equal(0, s)
      assert.equal(bytes .. "\n", out)
    end
  end)

  it("set application environments from the config's env, with --env over it", function()
    local code = [[local application = require "moonbeam.application"
      return application.get_env("demo", "port"), application.get_env("demo", "host"),
        application.get_env("demo", "debug"), application.get_env("other", "name")]]
    local s, out = run({"--config", config, "eval", "--env", "demo.port=5000",
      "--env", "demo.debug=true", "--env", "other.name=plain text", code})
    assert.equal(0, s)
    assert.equal('5000, "db.local", true, "plain text"\n', out)
  end)

  it("set application environments for a script too", function()
    H.write(file("env.lua"), [[
local application = require "moonbeam.application"
print(application.get_env("demo", "port"))
]])
    local s, out = run({"--config", config, file("env.lua")})
    assert.equal(0, s)
    assert.equal("4001\n", out)
  end)

  it("stop the launcher with one message when the config file is wrong", function()
    local bad = file("bad_config.lua")
    H.write(bad, "return {schedulers = 2, schedular = 3}")
    fails_with(1, "bad_config%.lua: unknown setting 'schedular'", run({"--config", bad, "eval", "1"}))
    H.write(bad, "return {log_level = 'loud'}")
    fails_with(1, "log_level expects debug, info", run({"--config", bad, "eval", "1"}))
    H.write(bad, "return {env = {demo = 3}}")
    fails_with(1, "env must be a table", run({"--config", bad, "eval", "1"}))
    H.write(bad, "return 3")
    fails_with(1, "must return a table of settings", run({"--config", bad, "eval", "1"}))
    H.write(bad, "return {")
    fails_with(1, "bad_config%.lua:1: .*<eof>", run({"--config", bad, "eval", "1"}))
    fails_with(1, "cannot open .*nosuch%.lua", run({"--config", file("nosuch.lua"), "eval", "1"}))
  end)

  it("stop the launcher with one message when a variable is wrong", function()
    fails_with(1, "^moonbeam: MOONBEAM_MAX_HEAP expects a size", run({"eval", "1"},
      {env = {MOONBEAM_MAX_HEAP = "big"}}))
  end)

  it("put LuaRocks trees and LUA_PATH on the path of every process", function()
    local tree = file("tree")
    local code = [[local p = mb.spawn(function(parent)
        require("moonbeam").send(parent, package.path .. "|" .. package.cpath) end, mb.self())
      return mb.receive(5000)]]
    local s, out = run({"--rocks-tree", tree, "eval", code},
      {env = {LUA_PATH = "/x/?.lua;;", LUA_CPATH = "/y/?.so"}})
    assert.equal(0, s)
    local path, cpath = out:match('^"(.*)|(.*)"\n$')
    assert.truthy(path:find(tree .. "/share/lua/5.4/?.lua;", 1, true))
    assert.truthy(path:find(";/x/?.lua;", 1, true))
    assert.truthy(path:find(";./?.lua", 1, true), "the default path, for ;;")
    assert.truthy(cpath:find(tree .. "/lib/lua/5.4/?.so;/y/?.so", 1, true))
    assert.falsy(cpath:find("./?.so", 1, true), "no default cpath without ;;")
  end)
end)

describe("moonbeam start", function()
  local job

  after_each(function()
    if job then job:cleanup() end
    job = nil
  end)

  -- Start web (and store) and wait until both run.
  local function start_web(args)
    job = H.start(args or {"start", file("web.app.lua")})
    assert(job:wait_output("Application web started"), job:stdout() .. job:stderr())
    return job
  end

  for _, signal in ipairs({"TERM", "INT"}) do
    it("stops the applications, last started first, on SIG" .. signal .. ", and exits 0", function()
      start_web()
      job:signal(signal)
      assert.equal(0, job:wait())
      assert.same({
        "store start permanent 1",
        "web start permanent 80",
        "web worker terminate shutdown",
        "web stop",
        "store worker terminate shutdown",
        "store stop",
      }, lines(job:stdout()))
      assert.truthy(job:stderr():find("SIG" .. signal .. " received: stopping the node", 1, true))
    end)
  end

  it("starts the application an app file names", function()
    start_web({"start", file("byname.lua")})
    job:signal("TERM")
    assert.equal(0, job:wait())
    assert.equal("store start permanent 1", lines(job:stdout())[1])
  end)

  it("takes the start type and application settings", function()
    H.write(file("web_config.lua"), "return {env = {web = {port = 8080}}}")
    start_web({"start", file("web.app.lua"), "--type", "transient",
      "--config", file("web_config.lua"), "--env", "store.port=2"})
    job:signal("TERM")
    assert.equal(0, job:wait())
    assert.same({"store start transient 2", "web start transient 8080"},
      {lines(job:stdout())[1], lines(job:stdout())[2]})
  end)

  it("exits 1 when a permanent application dies, stopping the others first", function()
    job = H.start({"start", file("fragile.app.lua")})
    assert.equal(1, job:wait())
    local out = job:stdout()
    assert.truthy(out:find("store worker terminate shutdown\nstore stop\n", 1, true), out)
    local msgs = said(job:stderr())
    assert.same({'moonbeam: the node stopped: application fragile ended ("boom")'}, msgs)
  end)

  it("keeps running when a temporary application dies", function()
    job = H.start({"start", "--type", "temporary", file("fragile.app.lua")})
    assert(job:wait_output("Application fragile exited"))
    job:signal("TERM")
    assert.equal(0, job:wait())
    assert.truthy(job:stdout():find("store stop", 1, true))
  end)

  it("exits 1 with one message when the file is missing", function()
    fails_with(1, "^moonbeam: cannot open .*nosuch%.app%.lua: No such file",
      run({"start", file("nosuch.app.lua")}))
  end)

  it("exits 1 with one message when the file does not compile", function()
    fails_with(1, "^moonbeam: .*syntax%.app%.lua:2: .*near <eof>$", run({"start", file("syntax.app.lua")}))
  end)

  it("exits 1 with one message when the file returns no spec", function()
    fails_with(1, "must return an application spec %(a table%) or an application's name, not number",
      run({"start", file("number.app.lua")}))
  end)

  it("exits 1 with one message when a dependency is missing", function()
    fails_with(1, "^moonbeam: cannot start lost: application nowhere not found %(no nowhere%.app%.lua on the path%)$",
      run({"start", file("lost.app.lua")}))
  end)

  it("exits 1 with one message when an application fails to start, and stops its dependencies", function()
    local s, out, err = run({"start", file("broken.app.lua")})
    fails_with(1, "^moonbeam: cannot start broken: application broken did not start: .*apps%.lua:%d+: no database$",
      s, out, err)
    assert.same({"store start permanent 1", "store worker terminate shutdown", "store stop"}, lines(out))
  end)
end)

describe("distribution", function()
  local port = tostring(23000 + math.random(0, 999))
  local env = "ERL_EPMD_PORT=" .. port .. " "

  -- Runs `body` as a script on a node named `alive`@127.0.0.1, and waits
  -- until epmd lists that name, so that a later node cannot be the one
  -- serving epmd (its registrations would go when it exits).  Returns the
  -- node's OS pid, its script's path and what epmd-names printed.
  local function start_node(alive, cookie, body)
    local script = os.tmpname()
    local f = io.open(script, "w")
    f:write(body)
    f:close()
    local p = io.popen(env .. "exec " .. H.launcher .. " run --name " .. alive ..
      "@127.0.0.1 --cookie " .. cookie .. " " .. script .. " > /dev/null 2>&1 & echo $!")
    local pid = p:read("l")
    p:close()
    local names = ""
    for _ = 1, 50 do
      local q = io.popen(env .. "timeout 10 " .. H.launcher .. " epmd-names 2>/dev/null")
      names = q:read("a")
      q:close()
      if names:match("name " .. alive .. " at") then break end
      os.execute("sleep 0.1")
    end
    return pid, script, names
  end

  -- Stops the node and waits (5 s at most) until it has exited: the
  -- epmd it may serve goes with it, before the next test starts a node.
  local function stop_node(pid, script)
    os.execute("kill " .. pid .. " 2>/dev/null")
    for _ = 1, 50 do
      -- Gone, or a zombie waiting for whoever adopted it to reap it
      -- (read from /proc: no tool runs here under the sanitizers' preload).
      local f = io.open("/proc/" .. pid .. "/stat")
      local stat = f and f:read("a") or ""
      if f then f:close() end
      if stat == "" or stat:match("%) (%a)") == "Z" then break end
      os.execute("sleep 0.1")
    end
    os.remove(script)
  end

  it("starts a named node that lists itself with epmd-names, and a remote shell evaluates there", function()
    local pid, script, names = start_node("lsrv", "lc",
      'local mb = require "moonbeam"\nmb.register("keeper", mb.self())\nmb.receive(15000)\n')
    local sh = io.popen("printf 'return mb.node(), mb.whereis(\"keeper\") ~= nil\\nq()\\n' | " ..
      env .. "timeout 20 " .. H.launcher .. " shell --remsh lsrv@127.0.0.1 --cookie lc 2>/dev/null")
    local out = sh:read("a")
    sh:close()
    stop_node(pid, script)
    assert.matches("name lsrv at port %d+", names)
    assert.matches("lsrv@127%.0%.0%.1, true", out)
  end)

  it("a remote shell writes in the user's terminal, keeps its mailbox and outlives a DOWN", function()
    local pid, script = start_node("rsrv", "rc", 'require("moonbeam").receive(15000)\n')
    local input = table.concat({
      'print("printed", "remotely")',
      'local p = mb.spawn(function() end); mb.monitor(p)',
      'mb.send(mb.self(), "kept")',
      '"after the DOWN"',
      'flush()',
      'help()',
      'regs()',
      'q()',
    }, "\n") .. "\n"
    local s, out, err = run({"shell", "--remsh", "rsrv@127.0.0.1", "--cookie", "rc"},
      {env = {ERL_EPMD_PORT = port}, input = input})
    stop_node(pid, script)
    assert.equal(0, s, err)
    assert.truthy(out:find("printed\tremotely\n", 1, true), out)
    assert.truthy(out:find('"after the DOWN"', 1, true), out)
    assert.truthy(out:find('Shell got {DOWN, #Ref<', 1, true), out)
    assert.truthy(out:find('Shell got "kept"', 1, true), out)
    assert.truthy(out:find("Shell helpers:", 1, true), out)
    assert.matches("Name%s+Pid%s+Status\nglobal_name_server +<[%d.]+> +%a+\nnet_kernel ", out)
  end)

  it("starts a hidden node with --hidden: the node it reaches lists it among hidden nodes only", function()
    local pid, script = start_node("open", "hc", 'require("moonbeam").receive(10000)\n')
    local ask = 'local rpc = require "moonbeam.rpc"\n' ..
      'return rpc.call("open@127.0.0.1", "moonbeam", "nodes", {}), ' ..
      'rpc.call("open@127.0.0.1", "moonbeam", "nodes", {"hidden"})'
    local s1, hidden = run({"--name", "shy@127.0.0.1", "--cookie", "hc", "--hidden", "eval", ask},
      {env = {ERL_EPMD_PORT = port}})
    local s2, visible = run({"--name", "bold@127.0.0.1", "--cookie", "hc", "eval", ask},
      {env = {ERL_EPMD_PORT = port}})
    stop_node(pid, script)
    assert.equal(0, s1)
    assert.equal("[], [shy@127.0.0.1]\n", hidden)
    assert.equal(0, s2)
    assert.equal("[bold@127.0.0.1], []\n", visible)
  end)

  it("refuses --hidden without a node name", function()
    fails_with(2, "^moonbeam: %-%-hidden needs %-%-sname or %-%-name$", run({"--hidden", "eval", "1"}))
  end)

  it("refuses a name already registered with epmd, with one message", function()
    local pid, script = start_node("dup", "c", 'require("moonbeam").receive(10000)\n')
    local s, _, err = run({"--name", "dup@127.0.0.1", "--cookie", "c", "eval", "1"},
      {env = {ERL_EPMD_PORT = port}})
    stop_node(pid, script)
    assert.equal(1, s)
    assert.matches("already registered with epmd", err)
  end)
end)

