local mb = require "moonbeam"

-- Run fn in a process and return what it returns (mb.run), and check
-- that every example leaves no process behind.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("links", function()
  it("propagate an abnormal exit to the linked process, with the same reason", function()
    assert.same({"boom-reason", false}, {in_process(function()
      local mb = require "moonbeam"
      mb.trap_exit(true)
      local middle = mb.spawn_link(function()
        mb.spawn_link(function() mb.exit("boom-reason") end)
        mb.receive()
      end)
      local m = mb.receive(5000)
      return m[3], mb.is_alive(middle)
    end)})
  end)

  it("are bidirectional", function()
    assert.same({mb.atom.EXIT, "parent-died"}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local watcher = mb.spawn(function()
        mb.trap_exit(true)
        local child = mb.spawn_link(function() mb.receive() end)
        mb.send(me, child)
        local m = mb.receive(5000)
        mb.send(me, m)
      end)
      local child = mb.receive(5000)
      -- the child, linked to the watcher, is killed: the watcher hears of it
      mb.exit(child, "parent-died")
      local m = mb.receive(5000)
      return m[1], m[3]
    end)})
  end)

  it("do nothing to a process that does not trap exits when the reason is normal", function()
    assert.is_true(in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local survivor = mb.spawn(function()
        local child = mb.spawn_link(function() end)
        -- The child's exit signal comes before its DOWN: both are its own.
        local ref = mb.monitor(child)
        mb.receive(function(m) return m[2] == ref end, 5000)
        mb.send(me, "still here")
      end)
      return mb.receive(5000) == "still here"
    end))
  end)

  it("turn exit signals into {'EXIT', pid, reason} messages for a process trapping exits", function()
    local kind, same, reason, alive = in_process(function()
      local mb = require "moonbeam"
      mb.trap_exit(true)
      local p = mb.spawn_link(function() end)
      local m = mb.receive(5000)
      return mb.typeof(m), m[2] == p, tostring(m[3]), true
    end)
    assert.equal("tuple", kind)
    assert.is_true(same)
    assert.equal("normal", reason)
  end)

  it("are removed by unlink, so a later exit does not arrive", function()
    assert.same({nil, "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      mb.trap_exit(true)
      local p = mb.spawn_link(function() mb.receive() ; mb.exit("late") end)
      mb.unlink(p)
      mb.send(p, "go")
      return mb.receive(200)
    end)})
  end)

  it("to a dead process raise noproc in a process that does not trap exits", function()
    local ok, err = pcall(in_process, function()
      local mb = require "moonbeam"
      local p, down = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == down end, 5000) -- it has ended
      mb.link(p)
    end)
    assert.is_false(ok)
    assert.matches("link: noproc", err)
  end)

  it("to a dead process give {'EXIT', pid, noproc} to a process trapping exits", function()
    assert.same({true, "noproc"}, {in_process(function()
      local mb = require "moonbeam"
      mb.trap_exit(true)
      local p, down = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == down end, 5000) -- it has ended
      mb.link(p)
      local m = mb.receive(1000)
      return m[2] == p, tostring(m[3])
    end)})
  end)

  it("take down a chain of 10,000 processes from one end, leaving no process behind", function()
    local before, after, hits = in_process(function()
      local mb = require "moonbeam"
      local before = mb.process_count()
      local me = mb.self()
      -- each process reports itself and spawns the next, linked
      local function node(n, top)
        mb.send(top, {n, mb.self()})
        if n > 0 then mb.spawn_link(node, n - 1, top) end
        mb.receive()
      end
      local head = mb.spawn(node, 10000 - 1, me)
      local refs, tail_ref = {}, nil
      for _ = 1, 10000 do
        local m = mb.receive(10000)
        local ref = mb.monitor(m[2])
        refs[ref] = true
        if m[1] == 0 then tail_ref = ref end
      end
      mb.exit(head, "kill")
      -- every process's DOWN says it has ended; the tail's gives the reason
      local tail_down
      for _ = 1, 10000 do
        local down = mb.receive(function(m)
          return mb.typeof(m) == "tuple" and refs[m[2]]
        end, 30000)
        if down[2] == tail_ref then tail_down = down end
      end
      -- a DOWN goes out before its process's state closes and it is
      -- uncounted: give the last ones a bounded while to close
      for _ = 1, 10000 do
        if mb.process_count() <= before then break end
        mb.sleep(1)
      end
      return before, mb.process_count(), tostring(tail_down[5])
    end)
    assert.equal(before, after)
    assert.equal("killed", hits)
  end)

  it("bring one 'EXIT' message to a trapping process at the far end of a chain of 10,000", function()
    local exits, reason, extra = in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local far = mb.spawn(function()
        mb.trap_exit(true)
        local function node(n)
          if n == 0 then mb.send(me, "built") mb.receive() return end
          mb.spawn_link(node, n - 1)
          mb.receive()
        end
        local first = mb.spawn_link(node, 10000 - 1)
        mb.send(me, first)
        local m = mb.receive(30000)
        local _, more = mb.receive(200)
        mb.send(me, {m, more})
      end)
      local first = mb.receive(10000)
      assert(mb.receive(10000) == "built")
      -- an abnormal exit at the other end travels down the whole chain
      local last = nil
      mb.exit(first, "boom")
      local r = mb.receive(30000)
      return r[1][1] == mb.atom.EXIT and 1 or 0, r[1][3], r[2]
    end)
    assert.equal(1, exits)
    -- the chain's far end is the first spawned: it dies with the reason
    -- it was given, and the trapping parent receives exactly one message
    assert.equal("boom", reason)
    assert.equal("timeout", extra)
  end)
end)

describe("exit", function()
  it("with kill cannot be trapped and kills with reason killed", function()
    assert.equal("killed", in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local p, ref = mb.spawn_monitor(function()
        mb.trap_exit(true)
        mb.send(me, "trapping")
        mb.receive()
      end)
      assert(mb.receive(5000) == "trapping")
      mb.exit(p, "kill")
      return tostring(mb.receive(5000)[5])
    end))
  end)

  it("with normal does nothing to a process that does not trap exits", function()
    assert.is_true(in_process(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function()
        local from = mb.receive()
        mb.send(from, "pong")
        mb.receive()
      end)
      mb.exit(p, "normal")
      -- The exit signal comes to p before the ping: an answer means it
      -- survived it.
      mb.send(p, mb.self())
      local alive = mb.receive(5000) == "pong"
      mb.send(p, "stop")
      return alive
    end))
  end)

  it("with normal reaches a trapping process as a message", function()
    assert.equal("normal", in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local p = mb.spawn(function() mb.trap_exit(true) mb.send(me, "ready") mb.send(me, mb.receive()) end)
      assert(mb.receive(5000) == "ready")
      mb.exit(p, "normal")
      return tostring(mb.receive(5000)[3])
    end))
  end)

  it("with one argument ends the caller with that reason, past any pcall", function()
    assert.equal("my-reason", in_process(function()
      local mb = require "moonbeam"
      local p, ref = mb.spawn_monitor(function()
        pcall(mb.exit, "my-reason")
        mb.sleep(10000)
      end)
      return mb.receive(5000)[5]
    end))
  end)

  it("kills promptly a process in a long receive, a sleep, or a busy loop", function()
    assert.same({"killed", "killed", "killed"}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local victims = {
        mb.spawn(function() mb.send(me, "ready") mb.receive(3600000) end),
        mb.spawn(function() mb.send(me, "ready") mb.sleep(3600000) end),
        mb.spawn(function() mb.send(me, "ready") while true do end end),
      }
      local refs = {}
      for i, v in ipairs(victims) do refs[i] = mb.monitor(v) end
      for _ = 1, 3 do assert(mb.receive(5000) == "ready") end
      for _, v in ipairs(victims) do mb.exit(v, "kill") end
      local reasons = {}
      for i = 1, 3 do
        local m = mb.receive(function(m) return m[2] == refs[i] end, 5000)
        reasons[i] = tostring(m[5])
      end
      return table.unpack(reasons)
    end)})
  end)
end)

describe("monitors", function()
  it("deliver {'DOWN', ref, 'process', pid, reason} when the target dies", function()
    local shape = in_process(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function() mb.receive() mb.exit("done") end)
      local ref = mb.monitor(p)
      mb.send(p, "go")
      local m = mb.receive(5000)
      return m[1] == mb.atom.DOWN and m[2] == ref and m[3] == mb.atom.process and
        m[4] == p and m[5] == "done" and m.n == 5
    end)
    assert.is_true(shape)
  end)

  -- In a launcher of its own: the specs' node may have been made
  -- distributed by an earlier spec.
  it("of {Name, Node} on a node that is not distributed: noconnection for another node, the local name for nonode@nohost", function()
    local H = require "spec.launcher_helper"
    local dir = H.tmpdir()
    H.write(dir .. "/names.lua", [=[
      local mb = require "moonbeam"
      assert(tostring(mb.node()) == "nonode@nohost")
      local me = mb.self()
      local local_one = mb.spawn(function()
        local m = mb.receive(5000)
        mb.send(me, {"got", m})
        mb.receive(5000)
      end)
      mb.register("named_here", local_one)
      -- the same name on another node is not this process
      local ref = mb.monitor({"named_here", "other@elsewhere"})
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      local ok, err = pcall(mb.send, {"named_here", "other@elsewhere"}, "wrong")
      assert(not ok)
      -- the process got nothing, and still runs
      local stray = mb.receive(200)
      -- nonode@nohost is this node
      local mon = mb.monitor({"named_here", "nonode@nohost"})
      mb.send({"named_here", "nonode@nohost"}, "hello")
      local got = mb.receive(function(m) return m[1] == "got" end, 5000)
      mb.send(local_one, "stop")
      local gone = mb.receive(function(m) return m[2] == mon end, 5000)
      -- a name with no process: noproc at once, the name in the DOWN
      local none = mb.monitor({"nobody", "nonode@nohost"})
      local nodown = mb.receive(function(m) return m[2] == none end, 5000)
      print(tostring(down[5]), tostring(down[4][1]) .. " " .. tostring(down[4][2]),
        tostring(err):match("not distributed"),
        stray == nil and "nothing" or "something", got[2],
        gone and tostring(gone[5]) == "normal" and "stopped",
        tostring(nodown[5]), tostring(nodown[4][1]) .. " " .. tostring(nodown[4][2]))
    ]=])
    local status, out, err = H.run({dir .. "/names.lua"})
    H.remove(dir)
    assert.equal(0, status, err)
    assert.same({"noconnection", "named_here other@elsewhere", "not distributed", "nothing",
      "hello", "stopped", "noproc", "nobody nonode@nohost"},
      H.lines((out:gsub("\t", "\n"))))
  end)

  it("deliver DOWN with noproc at once for a dead process", function()
    assert.equal("noproc", in_process(function()
      local mb = require "moonbeam"
      local p, down = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == down end, 5000) -- it has ended
      mb.monitor(p)
      return tostring(mb.receive(1000)[5])
    end))
  end)

  it("are removed by demonitor, and flush removes a DOWN already queued", function()
    assert.same({"timeout", "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function() mb.receive() end)
      local ref = mb.monitor(p)
      mb.demonitor(ref)
      mb.send(p, "stop")
      local _, a = mb.receive(100)
      local q = mb.spawn(function() end)
      local ref2 = mb.monitor(q)
      mb.sleep(50) -- the DOWN is queued by now
      mb.demonitor(ref2, {flush = true})
      local _, b = mb.receive(100)
      return a, b
    end)})
  end)

  it("come and go in the watched process's monitored_by at once, without waking it", function()
    assert.same({1, 0, 0, true}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local p = mb.spawn(function()
        while true do
          local m = mb.receive()
          if m == "count" then mb.send(me, #mb.process_info(mb.self()).monitored_by) end
        end
      end)
      -- Set at once: p, asked after the monitor, counts it.
      local ref = mb.monitor(p)
      mb.send(p, "count")
      local during = mb.receive(5000)
      mb.demonitor(ref)
      local after = #mb.process_info(p).monitored_by
      -- Set and ended while p waits: none left when it counts again.
      local refs = {}
      for i = 1, 100 do refs[i] = mb.monitor(p) end
      for i = 1, 100 do mb.demonitor(refs[i]) end
      mb.send(p, "count")
      local later = mb.receive(5000)
      mb.exit(p, "kill")
      local _, none = mb.receive(100)
      return during, after, later, none == "timeout"
    end)})
  end)

  it("come with spawn_monitor before the process runs", function()
    assert.is_true(in_process(function()
      local mb = require "moonbeam"
      local p, ref = mb.spawn_monitor(function() end)
      local m = mb.receive(5000)
      return m[2] == ref and m[4] == p and m[5] == mb.atom.normal
    end))
  end)

  it("all fire once when 100,000 of them watch one process", function()
    assert.same({100000, "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local target = mb.spawn(function() mb.receive() end)
      local refs = {}
      for i = 1, 100000 do refs[mb.monitor(target)] = true end
      mb.send(target, "die")
      local n = 0
      for i = 1, 100000 do
        local m = mb.receive(10000)
        if m and refs[m[2]] then refs[m[2]] = nil n = n + 1 end
      end
      local _, extra = mb.receive(100)
      return n, extra
    end)})
  end)
end)

describe("registered names", function()
  it("register, find, and route messages to a process", function()
    assert.same({true, "pong", true}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local p = mb.spawn(function() local from = mb.receive() mb.send(from, "pong") end)
      mb.register("pinger", p)
      local found = mb.whereis("pinger") == p and mb.whereis(mb.atom.pinger) == p
      local listed = false
      for _, n in ipairs(mb.registered()) do listed = listed or n == "pinger" end
      mb.send("pinger", me)
      local reply = mb.receive(5000)
      return found, reply, listed
    end)})
  end)

  it("refuse a taken name, a second name and a dead pid with clear errors", function()
    local e1, e2, e3 = in_process(function()
      local mb = require "moonbeam"
      local a = mb.spawn(function() mb.receive() end)
      local b = mb.spawn(function() mb.receive() end)
      mb.register("taken", a)
      local _, e1 = pcall(mb.register, "taken", b)
      local _, e2 = pcall(mb.register, "other", a)
      local d, down = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == down end, 5000) -- it has ended
      local _, e3 = pcall(mb.register, "dead", d)
      mb.send(a, 1) mb.send(b, 1)
      return e1, e2, e3
    end)
    assert.matches("the name 'taken' is already registered", e1)
    assert.matches("already has a registered name", e2)
    assert.matches("is not alive", e3)
  end)

  it("are strings or atoms, not numbers", function()
    local ok, err = pcall(mb.register, 42, nil)
    assert.is_false(ok)
    assert.matches("name %(string or atom%) expected, got number", err)
  end)

  it("are freed when their process dies, and unregister frees them too", function()
    assert.same({true, true, "no process registered"}, {in_process(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function() mb.receive() end)
      mb.register("short_lived", p)
      local ref = mb.monitor(p)
      mb.send(p, "bye")
      mb.receive(5000)
      local freed = mb.whereis("short_lived") == nil
      local q = mb.spawn(function() mb.receive() end)
      mb.register("short_lived", q)
      mb.unregister("short_lived")
      local unreg = mb.whereis("short_lived") == nil
      mb.send(q, 1)
      local _, err = pcall(mb.send, "short_lived", 1)
      return freed, unreg, err:match("no process registered")
    end)})
  end)
end)

describe("process_info", function()
  it("reports status, queue length, memory, reductions, links, monitors, name and trap_exit", function()
    local info = in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local p = mb.spawn(function()
        mb.trap_exit(true)
        mb.register("inspected", mb.self())
        local n = 0
        for i = 1, 100000 do n = n + i end
        mb.send(me, "ready")
        mb.receive(function() return false end)
      end)
      mb.link(p)
      local ref = mb.monitor(p)
      assert(mb.receive(5000) == "ready")
      mb.send(p, "one") mb.send(p, "two")
      mb.sleep(50)
      local i = mb.process_info(p)
      local r = {
        status = i.status, queue = i.message_queue_len, memory = i.memory > 0,
        reductions = i.reductions > 0, linked = i.links[1] == me,
        monitored_by = i.monitored_by[1] == me, name = i.registered_name,
        trap = i.trap_exit, mine = mb.process_info(me).monitors[1] == p,
      }
      mb.unlink(p)
      mb.exit(p, "kill")
      return r
    end)
    assert.same({status = "waiting", queue = 2, memory = true, reductions = true,
      linked = true, monitored_by = true, name = "inspected", trap = true, mine = true}, info)
  end)

  it("returns nil for a dead process, and processes() lists the live ones", function()
    assert.same({true, true, false}, {in_process(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function() mb.receive() end)
      local listed = false
      for _, q in ipairs(mb.processes()) do listed = listed or q == p end
      local ref = mb.monitor(p)
      mb.send(p, 1)
      mb.receive(5000)
      local found = false
      for _, q in ipairs(mb.processes()) do found = found or q == p end
      return listed, mb.process_info(p) == nil, found
    end)})
  end)
end)

describe("a memory limit", function()
  it("kills the process that exceeds it, alone, with reason {memory_limit, bytes}", function()
    assert.same({"memory_limit", 1000000, "alive"}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local bystander = mb.spawn(function() local from = mb.receive() mb.send(from, "alive") end)
      local hog, ref = mb.spawn_opt({monitor = true, max_heap = 1000000}, function()
        local t = {}
        for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end
      end)
      local m = mb.receive(10000)
      mb.send(bystander, me)
      return tostring(m[5][1]), m[5][2], mb.receive(5000)
    end)})
  end)

  it("is enforced even if the process catches the memory error", function()
    assert.equal("memory_limit", in_process(function()
      local mb = require "moonbeam"
      local hog, ref = mb.spawn_opt({monitor = true, max_heap = 500000}, function()
        pcall(function()
          local t = {}
          for i = 1, 1e9 do t[i] = {} end
        end)
        while true do end
      end)
      return tostring(mb.receive(10000)[5][1])
    end))
  end)
end)
