-- Task and the task supervisor, modelled on the cases of Elixir's
-- task_test.exs and task/supervisor_test.exs. Each example runs in a
-- process of its own (mb.run) and leaves no process behind: the count of
-- processes is back where it was after each one.
local mb = require "moonbeam"

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("task.async and task.await", function()
  it("returns every value the function returned, computed in another process", function()
    assert.same({42, "two", true}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local me = mb.self()
      local t = task.async(function(x, y)
        return x * y, "two", require("moonbeam").self() ~= me
      end, 6, 7)
      return task.await(t)
    end)})
  end)

  it("links the task to the caller and has the caller monitor it", function()
    assert.same({true, true, true, true}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local me = mb.self()
      local t = task.async(function()
        local info = require("moonbeam").process_info(require("moonbeam").self())
        return info.links[1], info.monitored_by[1]
      end)
      local link, monitor = task.await(t)
      return t.owner == me, mb.typeof(t.ref) == "ref", link == me, monitor == me
    end)})
  end)

  it("raises timeout and leaves the task running", function()
    assert.same({"timeout", "await", true, "done"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() return require("moonbeam").receive(5000) end)
      local ok, e = pcall(task.await, t, 10)
      local alive = mb.is_alive(t.pid)
      mb.send(t.pid, "done")
      return tostring(e[1]), tostring(e[2][2]), alive, task.await(t, 5000)
    end)})
  end)

  it("raises the task's exit reason when it crashes and the caller traps exits", function()
    assert.same({true, "await", true}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      mb.trap_exit(true)
      local t = task.async(function() error("task blew up") end)
      local ok, e = pcall(task.await, t, 5000)
      local exit = mb.receive(5000)
      return tostring(e[1][1]):find("task blew up", 1, true) ~= nil,
        tostring(e[2][2]), exit[1] == mb.atom.EXIT and exit[2] == t.pid
    end)})
  end)

  it("takes a caller that does not trap exits down with a crashed task", function()
    assert.equal("gave up", in_process(function()
      local mb = require "moonbeam"
      local _, ref = mb.spawn_monitor(function()
        local task = require "moonbeam.task"
        task.await(task.async(function() require("moonbeam").exit("gave up") end), 5000)
      end)
      return mb.receive(function(m) return m[2] == ref end, 5000)[5]
    end))
  end)

  it("leaves nothing in the caller's mailbox once the result is taken", function()
    assert.same({1, "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() return 1 end)
      local v = task.await(t)
      mb.sleep(20) -- the task's DOWN would be here by now
      return v, select(2, mb.receive(0))
    end)})
  end)

  it("raises when the function is not a function or the caller does not own the task", function()
    assert.same({true, true}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local ok1, e1 = pcall(task.async, 42)
      local t = task.async(function() return 1 end)
      local _, ref = mb.spawn_monitor(function(t)
        require("moonbeam.task").await(t, 10)
      end, t)
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      task.await(t)
      return not ok1 and e1:find("function expected, got number", 1, true) ~= nil,
        tostring(down[5][1]):find("must be queried from its owner", 1, true) ~= nil
    end)})
  end)
end)

describe("task.yield", function()
  it("returns nil and timeout without raising, then the result once it comes", function()
    assert.same({"timeout", true, "late"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() return require("moonbeam").receive(5000) end)
      local none, why = task.yield(t, 10)
      local alive = mb.is_alive(t.pid)
      mb.send(t.pid, "late")
      return why, none == nil and alive, task.yield(t, 5000)
    end)})
  end)

  it("returns nil, exit and the reason when the task ended without a result", function()
    assert.same({"exit", "gave up"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      mb.trap_exit(true)
      local t = task.async(function() require("moonbeam").exit("gave up") end)
      local _, what, reason = task.yield(t, 5000)
      mb.receive(5000) -- the 'EXIT'
      return what, reason
    end)})
  end)
end)

describe("task.shutdown", function()
  it("stops a running task; the caller is unlinked first and survives", function()
    assert.same({"shutdown", false, "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() require("moonbeam").receive() end)
      local _, why = task.shutdown(t)
      return why, mb.is_alive(t.pid), select(2, mb.receive(20))
    end)})
  end)

  it("returns the result of a task that had already finished", function()
    assert.equal("finished", in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() return "finished" end)
      local ref = mb.monitor(t.pid)
      -- the task has ended, its result is queued
      mb.receive(function(m) return m[2] == ref end, 5000, {[mb.atom.DOWN] = true})
      return task.shutdown(t)
    end))
  end)

  it("kills a task that traps exits after the grace time, or at once with brutal_kill", function()
    assert.same({"exit", "killed", "shutdown", false, false}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local function stubborn(owner)
        local mb = require "moonbeam"
        mb.trap_exit(true)
        mb.send(owner, "trapping")
        while true do mb.receive() end
      end
      local t1 = task.async(stubborn, mb.self())
      local t2 = task.async(stubborn, mb.self())
      assert(mb.receive(5000) == "trapping" and mb.receive(5000) == "trapping")
      local _, what, reason = task.shutdown(t1, 20)
      local _, why = task.shutdown(t2, "brutal_kill")
      return what, tostring(reason), why, mb.is_alive(t1.pid), mb.is_alive(t2.pid)
    end)})
  end)

  it("returns nil, exit and the reason of a task that had crashed", function()
    assert.same({"exit", "crashed"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      mb.trap_exit(true)
      local t = task.async(function() require("moonbeam").exit("crashed") end)
      mb.receive(5000) -- the 'EXIT': it has ended
      local _, what, reason = task.shutdown(t)
      return what, reason
    end)})
  end)
end)

describe("task.ignore", function()
  it("unlinks a running task and drops the result it sends later", function()
    assert.same({"running", false, true, "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() return require("moonbeam").receive(5000) end)
      local _, why = task.ignore(t)
      local linked = #mb.process_info(mb.self()).links > 0
      local ref = mb.monitor(t.pid)
      mb.send(t.pid, "late result")
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      return why, linked, down ~= nil, select(2, mb.receive(0))
    end)})
  end)

  it("returns the result if it had come already", function()
    assert.equal("early", in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local t = task.async(function() return "early" end)
      local ref = mb.monitor(t.pid)
      mb.receive(function(m) return m[2] == ref end, 5000, {[mb.atom.DOWN] = true})
      return task.ignore(t)
    end))
  end)
end)

describe("task.start and task.start_link", function()
  it("start runs the function in a process not linked to the caller", function()
    assert.same({"ran", 0}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local pid = task.start(function(me) require("moonbeam").send(me, "ran") end, mb.self())
      local msg = mb.receive(5000)
      return msg, #mb.process_info(mb.self()).links
    end)})
  end)

  it("start_link links it to the caller", function()
    assert.equal("linked", in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      mb.trap_exit(true)
      local pid = task.start_link(function() require("moonbeam").exit("linked") end)
      return mb.receive(5000)[3]
    end))
  end)
end)

describe("the task supervisor", function()
  it("starts children not linked to the caller and forgets them when they end", function()
    assert.same({1, 0, 0}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link({name = "tasks"})
      local pid = task.supervisor_start_child("tasks", function() require("moonbeam").receive() end)
      local during = #task.supervisor_children(sup)
      local links = 0
      for _, p in ipairs(mb.process_info(mb.self()).links) do
        if p == pid then links = links + 1 end
      end
      mb.monitor(pid)
      mb.send(pid, "go")
      mb.receive(5000) -- its DOWN
      local after
      for _ = 1, 1000 do -- until the supervisor has handled its 'EXIT'
        after = #task.supervisor_children(sup)
        if after == 0 then break end
        mb.sleep(1)
      end
      task.supervisor_stop(sup, nil, 5000)
      return during, links, after
    end)})
  end)

  it("runs async tasks linked to the caller, awaited like any task", function()
    assert.same({"under supervision", true}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link()
      local t = task.supervisor_async(sup, function(x)
        local mb = require "moonbeam"
        local linked = #mb.process_info(mb.self()).links == 2
        return x, linked
      end, "under supervision")
      local a, b = task.await(t, 5000)
      task.supervisor_stop(sup, nil, 5000)
      return a, b
    end)})
  end)

  it("async_nolink: a crash reaches the caller only through await or yield", function()
    assert.same({"exit", "bad luck", "bad luck", true}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link()
      local function fails() require("moonbeam").exit("bad luck") end
      local _, what, reason = task.yield(task.supervisor_async_nolink(sup, fails), 5000)
      local ok, e = pcall(task.await, task.supervisor_async_nolink(sup, fails), 5000)
      local alive = mb.is_alive(sup)
      task.supervisor_stop(sup, nil, 5000)
      return what, reason, e[1], alive
    end)})
  end)

  it("raises on options that make no sense", function()
    assert.same({true, true}, {in_process(function()
      local task = require "moonbeam.task"
      local ok1, e1 = pcall(task.supervisor_start_link, {shutdown = "soon"})
      local ok2, e2 = pcall(task.supervisor_start_link, {max_children = "many"})
      return not ok1 and e1:find('shutdown must be a number of ms or "brutal_kill"', 1, true) ~= nil,
        not ok2 and e2:find("max_children must be a number", 1, true) ~= nil
    end)})
  end)

  it("refuses more than max_children tasks with nil, max_children", function()
    assert.same({"max_children", "max_children"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link({max_children = 1})
      local function wait() require("moonbeam").receive() end
      task.supervisor_start_child(sup, wait)
      local _, why1 = task.supervisor_start_child(sup, wait)
      local _, why2 = task.supervisor_async(sup, wait)
      task.supervisor_stop(sup, nil, 5000)
      return why1, why2
    end)})
  end)

  it("terminate_child stops one task, and says not_found for another pid", function()
    assert.same({true, false, "not_found", 0}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link()
      local pid = task.supervisor_start_child(sup, function() require("moonbeam").receive() end)
      local ok = task.supervisor_terminate_child(sup, pid)
      local alive = mb.is_alive(pid)
      local _, why = task.supervisor_terminate_child(sup, mb.self())
      local left = #task.supervisor_children(sup)
      task.supervisor_stop(sup, nil, 5000)
      return ok, alive, why, left
    end)})
  end)

  it("shuts its tasks down when it stops, killing those that outstay the grace time", function()
    assert.same({"shutdown", "killed"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link({shutdown = 20})
      local polite = task.supervisor_start_child(sup, function() require("moonbeam").receive() end)
      local stubborn = task.supervisor_start_child(sup, function(owner)
        local mb = require "moonbeam"
        mb.trap_exit(true)
        mb.send(owner, "trapping")
        while true do mb.receive() end
      end, mb.self())
      assert(mb.receive(5000) == "trapping")
      local r1, r2 = mb.monitor(polite), mb.monitor(stubborn)
      task.supervisor_stop(sup, nil, 5000)
      local d1 = mb.receive(function(m) return m[2] == r1 end, 5000)
      local d2 = mb.receive(function(m) return m[2] == r2 end, 5000)
      return tostring(d1[5]), tostring(d2[5])
    end)})
  end)

  it("takes its tasks down with it when it is killed", function()
    assert.equal("killed", in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local sup = task.supervisor_start_link()
      mb.unlink(sup)
      local pid = task.supervisor_start_child(sup, function() require("moonbeam").receive() end)
      local ref = mb.monitor(pid)
      mb.exit(sup, "kill")
      return tostring(mb.receive(function(m) return m[2] == ref end, 5000)[5])
    end))
  end)
end)

describe("task.yield_many", function()
  it("gives each task's result in the tasks' order, nil for one still running", function()
    assert.same({"ok", 1, "exit", "gave up", "none", true, "ok", "late"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      mb.trap_exit(true)
      local fast = task.async(function() return 1 end)
      local bad = task.async(function() require("moonbeam").exit("gave up") end)
      local slow = task.async(function() return require("moonbeam").receive(5000) end)
      local r = task.yield_many({fast, bad, slow}, 100)
      local alive = mb.is_alive(slow.pid)
      mb.send(slow.pid, "late")
      local again = task.yield_many({slow}, 5000)
      assert(r[1][1] == fast and r[3][1] == slow)
      return r[1][2][1], r[1][2][2], r[2][2][1], tostring(r[2][2][2]),
        r[3][2] == nil and "none", alive, again[1][2][1], again[1][2][2]
    end)})
  end)

  it("shuts down the tasks not done in time with on_timeout kill_task", function()
    assert.same({"ok", "none", false}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      local fast = task.async(function() return 1 end)
      local slow = task.async(function() return require("moonbeam").receive() end)
      local r = task.yield_many({fast, slow}, {timeout = 50, on_timeout = "kill_task"})
      return r[1][2][1], r[2][2] == nil and "none", mb.is_alive(slow.pid)
    end)})
  end)
end)

describe("task.async_stream", function()
  it("maps a list through tasks, results in the input's order", function()
    assert.same({"ok 2", "ok 4", "ok 6", "ok 8"}, {in_process(function()
      local task = require "moonbeam.task"
      local out = {}
      for tag, v in task.async_stream({1, 2, 3, 4}, function(x) return x * 2 end) do
        out[#out + 1] = tag .. " " .. v
      end
      return table.unpack(out)
    end)})
  end)

  it("runs at most max_concurrency tasks at a time, and takes an iterator", function()
    assert.same({4, 2}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      -- The gate lets tasks go two at a time, and counts how many were
      -- in at once at most.
      local gate = mb.spawn(function()
        local mb = require "moonbeam"
        local held, inside, peak = {}, 0, 0
        while true do
          local m = mb.receive()
          if m[1] == "in" then
            inside = inside + 1
            if inside > peak then peak = inside end
            held[#held + 1] = m[2]
            if #held == 2 then
              for _, p in ipairs(held) do mb.send(p, "go") end
              held = {}
            end
          elseif m[1] == "out" then
            inside = inside - 1
          else
            mb.send(m[2], peak)
            return
          end
        end
      end)
      local i = 0
      local function input() i = i + 1 if i <= 4 then return i end end
      local n = 0
      for tag in task.async_stream(input, function(x)
        local mb = require "moonbeam"
        mb.send(gate, {"in", mb.self()})
        mb.receive(5000)
        mb.send(gate, {"out"})
        return x
      end, {max_concurrency = 2}) do
        if tag == "ok" then n = n + 1 end
      end
      mb.send(gate, {"peak", mb.self()})
      return n, mb.receive(5000)
    end)})
  end)

  it("gives results as they come with ordered = false", function()
    assert.same({"slow fast", "fast slow"}, {in_process(function()
      local mb = require "moonbeam"
      local task = require "moonbeam.task"
      -- The slow element waits until the fast one's task has ended (its
      -- result is in the caller's mailbox by then).
      local function run(ordered)
        local helper = mb.spawn(function()
          local mb = require "moonbeam"
          local who = {}
          for _ = 1, 2 do local m = mb.receive() who[m[1]] = m[2] end
          local ref = mb.monitor(who.fast)
          mb.receive(function(m) return m[2] == ref end)
          mb.send(who.slow, "go")
        end)
        local out = {}
        for _, v in task.async_stream({"slow", "fast"}, function(x)
          local mb = require "moonbeam"
          mb.send(helper, {x, mb.self()})
          if x == "slow" then mb.receive(5000) end
          return x
        end, {ordered = ordered, max_concurrency = 2}) do
          out[#out + 1] = v
        end
        return table.concat(out, " ")
      end
      return run(true), run(false)
    end)})
  end)

  it("gives exit, timeout for a task that overruns with on_timeout kill_task", function()
    assert.same({"ok 1", "exit timeout", "ok 3"}, {in_process(function()
      local task = require "moonbeam.task"
      local out = {}
      for tag, v in task.async_stream({1, 2, 3}, function(x)
        if x == 2 then require("moonbeam").receive() end
        return x
      end, {timeout = 50, on_timeout = "kill_task"}) do
        out[#out + 1] = tag .. " " .. tostring(v)
      end
      return table.unpack(out)
    end)})
  end)

  it("raises {timeout, {task, async_stream, {timeout}}} by default, leaving no task", function()
    assert.same({false, "timeout", "async_stream", 50}, {in_process(function()
      local task = require "moonbeam.task"
      local ok, err = pcall(function()
        for _ in task.async_stream({1, 2}, function() require("moonbeam").receive() end,
          {timeout = 50}) do end
      end)
      return ok, tostring(err[1]), tostring(err[2][2]), err[2][3][1]
    end)})
  end)
end)
