-- Hostile or unlucky input ends at most the process it reaches, with a
-- clear error: the node goes on.  Each example runs a script in a node of
-- its own (the launcher), so that a crash shows as its exit status.
local H = require "spec.launcher_helper"

-- Run `code` as a script, after the launcher's `options` and with `args`;
-- it must end normally.  Returns its stdout and stderr.
local function survives(code, options, args)
  local dir = H.tmpdir()
  local script = dir .. "/script.lua"
  H.write(script, code)
  local argv = {}
  for _, a in ipairs(options or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = script
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local status, out, err = H.run(argv, {timeout = 60})
  H.remove(dir)
  assert(status == 0, "exit status " .. tostring(status) .. "\n" .. out .. err)
  return out, err
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("a node name with a NUL byte", function()
  it("is refused where Lua gives it, and the node goes on", function()
    local out = survives([[
      local mb = require "moonbeam"
      -- a port of our own for the EPMD this node serves; another may be
      -- taken by a node of another test
      local port = tonumber(arg[1])
      while not pcall(mb.start_distribution, {name = "nul@127.0.0.1", cookie = "c",
                                              epmd_port = port}) do
        port = port + 1
        assert(port < tonumber(arg[1]) + 20, "no free port for EPMD")
      end
      print(select(2, pcall(mb.send, {"echo", "a\0b@c"}, 1)))
      print(select(2, pcall(mb.monitor, {"echo", "a\0b@c"})))
      print(select(2, pcall(mb.start_distribution, {name = "x\0y@z"})))
      print(select(2, pcall(mb.monitor_node, "a\0b@c", true)))
      print(select(2, pcall(mb.monitor_node, mb.atom("a\0b@c"), true)))
      mb.sleep(50)
      print("still here")
    ]], {}, {tostring(24000 + math.random(0, 999))})
    assert.same({
      "bad argument #1 to 'moonbeam.send' (node name with a NUL byte)",
      "bad argument #1 to 'moonbeam.monitor' (node name with a NUL byte)",
      "bad argument #1 to 'moonbeam.start_distribution' (node name with a NUL byte)",
      "bad argument #1 to 'moonbeam.monitor_node' (node name with a NUL byte)",
      "bad argument #1 to 'moonbeam.monitor_node' (node name with a NUL byte)",
      "still here",
    }, H.lines(out))
  end)
end)

describe("an error value whose __tostring raises or gives no string", function()
  it("is reported as opaque text, the process ends with it, and the node goes on", function()
    local out, err = survives([[
      local mb = require "moonbeam"
      local function down_of(opts, fn)
        opts.monitor = true
        local _, ref = mb.spawn_opt(opts, fn)
        return mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 10000)
      end
      local raising = {__tostring = function() error("no text for you") end}
      local table_text = {__tostring = function() return {} end}
      local huge = {__tostring = function() return string.rep("x", 2^28) end}
      for _, case in ipairs({{{}, raising}, {{}, table_text}, {{max_heap = 1000000}, huge}}) do
        local d = down_of(case[1], function() error(setmetatable({code = 7}, case[2])) end)
        print(mb.typeof(d[5]), d[5][1].code, d[5][2]:match("^stack traceback") ~= nil)
      end
      local d = down_of({}, function()
        mb.log("info", setmetatable({}, raising))
        require("moonbeam.logger").info(setmetatable({}, table_text))
        return "logged"
      end)
      print(d[5])
      -- a GenServer callback's bad return value, written into its reason
      local gen_server = require "moonbeam.gen_server"
      local srv = gen_server.start({
        init = function()
          debug.setmetatable(print, raising) -- every function's, here
          return "ok", nil
        end,
        handle_call = function() return "bogus", print end,
      }, nil)
      local ok, why = pcall(gen_server.call, srv, "x", 5000)
      print(ok, tostring(why[1]))
      -- what the shell prints: here every function's __tostring raises
      debug.setmetatable(print, raising)
      print(select(2, pcall(require("moonbeam.shell").format_values, {n = 2, print, 42})))
      debug.setmetatable(print, nil)
    ]])
    assert.same({"tuple\t7\ttrue", "tuple\t7\ttrue", "tuple\t7\ttrue", "normal",
      'false\t{bad_return_value, "\\"bogus\\", <function: __tostring failed>"}',
      "<function: __tostring failed>, 42"}, H.lines(out))
    local _, failed = err:gsub("%*%* %(error%) <table 0x%x+: __tostring failed>", "")
    assert.equal(2, failed)
    assert.matches("%*%* %(error%) <table 0x%x+: __tostring ran out of memory>", err)
    assert.matches("%[info%] <0%.%d+%.%d+> <table 0x%x+: __tostring failed>", err)
    assert.matches("%[info%] <0%.%d+%.%d+> <table: __tostring failed>", err)
  end)
end)

describe("a log line", function()
  it("is cut at 64 KiB, with its full size said", function()
    local _, err = survives([[
      local mb = require "moonbeam"
      mb.log("info", ("y"):rep(100000))
      local _, ref = mb.spawn_monitor(function() error(("x"):rep(2^20)) end)
      local d = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 10000)
      print(#d[5][1])
    ]])
    local lines = H.lines(err)
    local logged, crash
    for _, line in ipairs(lines) do
      if line:find("yyyy", 1, true) then logged = line end
      if line:find("xxxx", 1, true) then crash = line end
    end
    assert.truthy(#logged <= 65536 + 100)
    assert.matches(" %.%.%. %[truncated: 100%d%d%d bytes in all%]$", logged)
    assert.truthy(#crash <= 65536 + 100)
    assert.matches(" %.%.%. %[truncated: %d+ bytes in all%]$", crash)
  end)
end)

describe("the limit on processes (max_processes, as Erlang's +P)", function()
  it("makes a spawn past it fail in the spawner, and frees as processes end", function()
    local out = survives([[
      local mb = require "moonbeam"
      local start = mb.process_count()
      local held = {}
      local ok, err
      repeat
        ok, err = pcall(mb.spawn, function() mb.receive() end)
        if ok then held[#held + 1] = err end
      until not ok or #held > 1000
      print(#held + start, err)
      for _, p in ipairs(held) do mb.exit(p, "kill") end
      while mb.process_count() > start do mb.sleep(1) end
      print(pcall(mb.spawn, function() end) and "spawns again")
    ]], {"--max-processes", "100"})
    assert.same({
      "100\tspawn: too many processes (the node's limit is 100: system_limit)",
      "spawns again",
    }, H.lines(out))
  end)

  it("is 1048576 by default, and set by --max-processes, its variable or the config file", function()
    local code = "require('moonbeam').process_limit()"
    local function limit(args, env)
      local s, out, err = H.run(args, {env = env})
      assert(s == 0, out .. err)
      return out
    end
    assert.equal("1048576\n", limit({"eval", code}))
    assert.equal("5000\n", limit({"--max-processes", "5000", "eval", code}))
    assert.equal("6000\n", limit({"eval", code}, {MOONBEAM_MAX_PROCESSES = "6000"}))
    local dir = H.tmpdir()
    H.write(dir .. "/node.lua", "return {max_processes = 7000}")
    assert.equal("7000\n", limit({"--config", dir .. "/node.lua", "eval", code}))
    H.remove(dir)
    local s, _, err = H.run({"--max-processes", "0", "eval", "1"})
    assert.equal(2, s)
    assert.matches("%-%-max%-processes expects a number from 1 to 134217727", err)
  end)
end)

describe("a node whose standard output goes away", function()
  it("does not die of SIGPIPE, with run or with start", function()
    local dir = H.tmpdir()
    -- More than a pipe holds, so that the writes meet the closed pipe
    -- whenever its reader ends.
    H.write(dir .. "/talk.lua", [[
      for i = 1, 20000 do print(("line %d of a node that talks a lot"):format(i)) end
      io.stdout:flush()
      local f = assert(io.open(arg[1], "w"))
      f:write("still here\n")
      f:close()
    ]])
    H.write(dir .. "/talk_app.lua", [[
      local M = {}
      function M.start()
        local mb = require "moonbeam"
        return mb.spawn_link(function()
          for i = 1, 20000 do print(("line %d of a node that talks a lot"):format(i)) end
          io.stdout:flush()
          local f = assert(io.open(os.getenv("MB_SPEC_DONE"), "w"))
          f:write("still here\n")
          f:close()
          mb.receive()
        end)
      end
      return M
    ]])
    H.write(dir .. "/talk.app.lua", [[return {name = "talk", mod = {"talk_app"}}]])
    local run = ("(%s run %s %s; echo $? > %s) | true"):format(H.quote(H.launcher),
      H.quote(dir .. "/talk.lua"), H.quote(dir .. "/run.done"), H.quote(dir .. "/run.status"))
    assert(os.execute("timeout -k 5 60 sh -c " .. H.quote(run)))
    assert.equal("still here\n", H.read(dir .. "/run.done"))
    assert.equal("0\n", H.read(dir .. "/run.status"))

    -- start: the node runs until SIGTERM, which it must still be alive for.
    local launcher = H.launcher:match("^/") and H.launcher
      or assert(os.getenv("PWD")) .. "/" .. H.launcher
    local start = ("cd %s && (exec env MB_SPEC_DONE=%s %s start talk.app.lua & echo $! > %s; wait $!; echo $? > %s) | true")
      :format(H.quote(dir), H.quote(dir .. "/start.done"), H.quote(launcher),
        H.quote(dir .. "/start.pid"), H.quote(dir .. "/start.status"))
    os.execute("sh -c " .. H.quote(start) .. " > /dev/null 2>&1 &")
    assert.truthy(H.wait_for(function() return H.read(dir .. "/start.done") ~= "" end, 30))
    local pid = H.read(dir .. "/start.pid"):match("%d+")
    os.execute("kill -TERM " .. pid)
    local status = H.wait_for(function() return H.read(dir .. "/start.status"):match("%d+") end, 30)
    if not status then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    H.remove(dir)
    assert.equal("0", status)
  end)
end)

describe("max_heap", function()
  it("counts the messages queued for a process: a flooded one dies alone with memory_limit", function()
    local out, err = survives([[
      local mb = require "moonbeam"
      local target, ref = mb.spawn_opt({monitor = true, max_heap = 1000000}, function()
        mb.sleep(60000) -- never receives
      end)
      local chunk = ("x"):rep(1000)
      local down
      for i = 1, 100000 do -- 100 MB, were they all queued
        mb.send(target, chunk)
        if i % 100 == 0 then
          down = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 0)
          if down then break end
        end
      end
      down = down or mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 10000)
      print(down and tostring(down[5][1]), down and down[5][2])
      -- the same process trapping exits is ended all the same
      local t2, ref2 = mb.spawn_opt({monitor = true, max_heap = 1000000}, function()
        mb.trap_exit(true)
        mb.sleep(60000)
      end)
      for _ = 1, 5000 do mb.send(t2, chunk) end
      down = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref2 end, 10000)
      print(down and tostring(down[5][1]))
    ]])
    assert.same({"memory_limit\t1000000", "memory_limit"}, H.lines(out))
    assert.matches("killed: its message queue took it over its memory limit of 1000000 bytes", err)
  end)
end)

describe("code that cannot be preempted", function()
  -- A loop in a __gc holds its scheduler thread until a name is
  -- registered (or 20 s of CPU time, to stay bounded: then it says so).
  local LOOPING_GC = [[
    local mb = require "moonbeam"
    local me = mb.self()
    local function until_released()
      local start = os.clock()
      while not mb.whereis("release") do
        if os.clock() - start > 20 then print("gave up") return end
      end
    end
    local function down(ref)
      local d = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 30000)
      return d and tostring(d[5])
    end
  ]]

  it("is ended by a kill when it returns, and counted meanwhile, as its state closes too", function()
    local out = survives(LOOPING_GC .. [[
      local releaser = mb.spawn(function() mb.receive() end)
      -- a kill while a __gc runs in the middle of the process's work
      local before = mb.process_count()
      local p, ref = mb.spawn_monitor(function()
        setmetatable({}, {__gc = function() mb.send(me, "in gc") ; until_released() end})
        collectgarbage()
        mb.receive()
      end)
      assert(mb.receive(function(m) return m == "in gc" end, 10000))
      mb.exit(p, "kill")
      print(mb.is_alive(p), mb.process_count() - before)
      mb.register("release", releaser)
      print(down(ref))
      mb.unregister("release")
      -- DOWN goes out before the state closes: wait until it is uncounted
      for _ = 1, 10000 do
        if mb.process_count() <= before then break end
        mb.sleep(1)
      end
      -- a __gc that runs as the killed process's state closes
      before = mb.process_count()
      p, ref = mb.spawn_monitor(function()
        local keep = setmetatable({}, {__gc = function() mb.send(me, "closing") ; until_released() end})
        mb.send(me, "ready")
        mb.receive()
        return keep
      end)
      assert(mb.receive(function(m) return m == "ready" end, 10000))
      mb.exit(p, "kill")
      print(down(ref))
      assert(mb.receive(function(m) return m == "closing" end, 10000))
      print(mb.process_count() - before)
      mb.register("release", releaser)
      for _ = 1, 10000 do
        if mb.process_count() <= before then break end
        mb.sleep(1)
      end
      print("all gone")
    ]], {"--schedulers", "2"})
    assert.same({"true\t1", "killed", "killed", "1", "all gone"}, H.lines(out))
  end)

  it("holding the only scheduler does not keep the first SIGTERM from stopping the node", function()
    local dir = H.tmpdir()
    H.write(dir .. "/stuck.lua", LOOPING_GC .. [[
      mb.spawn(function()
        setmetatable({}, {__gc = until_released})
        print("stuck") io.stdout:flush()
        collectgarbage()
      end)
      mb.receive()
    ]])
    local job = H.start({"--schedulers", "1", "--shutdown-time", "200", dir .. "/stuck.lua"})
    local up = job:wait_output("stuck", 20)
    job:signal("TERM")
    local status = job:wait(15)
    local err = job:stderr()
    job:cleanup()
    H.remove(dir)
    assert.truthy(up)
    assert.equal(1, status)
    assert.matches("SIGTERM received: stopping the node", err)
    assert.matches("the node did not stop within 200 ms: exiting", err)
  end)

  it("does not keep an idle scheduler from the one process queued behind it", function()
    local out = survives([[
      local mb = require "moonbeam"
      local me = mb.self()
      mb.spawn(function()
        for _ = 1, 200 do mb.spawn(function() mb.send(me, "ran") end) end
        -- this scheduler is stuck until every worker has run (or 20 s)
        local start = os.clock()
        table.sort({3, 1, 2}, function(a, b)
          while not mb.whereis("all_ran") and os.clock() - start < 20 do end
          return a < b
        end)
      end)
      local n = 0
      while n < 200 and mb.receive(function(m) return m == "ran" end, 10000) do n = n + 1 end
      mb.register("all_ran", mb.self())
      print(n)
    ]], {"--schedulers", "2"})
    assert.same({"200"}, H.lines(out))
  end)
end)

describe("a process that runs out of memory with no limit of its own", function()
  -- The address space of the node is limited (ulimit -v), so that an
  -- allocation fails for real; AddressSanitizer needs more than that.
  local asan = (os.getenv("LD_PRELOAD") or ""):find("asan") ~= nil
  local it_here = asan and pending or it

  it_here("ends with out_of_memory, and the node goes on", function()
    local dir = H.tmpdir()
    H.write(dir .. "/oom.lua", [[
      local mb = require "moonbeam"
      local _, ref = mb.spawn_monitor(function()
        local t = {}
        for i = 1, 1e9 do t[i] = ("x"):rep(100000) .. i end
      end)
      local d = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 60000)
      print(d and tostring(d[5]))
      print(mb.spawn(function() end) ~= nil)
    ]])
    local cmd = ("ulimit -v 400000 && exec %s --schedulers 1 %s"):format(
      H.quote(H.launcher), H.quote(dir .. "/oom.lua"))
    local p = io.popen("timeout -k 5 60 sh -c " .. H.quote(cmd) .. " 2>" .. H.quote(dir .. "/err"))
    local out = p:read("a")
    local _, _, status = p:close()
    local err = H.read(dir .. "/err")
    H.remove(dir)
    assert.equal(0, status, err)
    assert.same({"out_of_memory", "true"}, H.lines(out))
    assert.matches("process <0%.%d+%.%d+> terminating: out of memory", err)
  end)
end)
