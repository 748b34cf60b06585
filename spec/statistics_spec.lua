-- mb.statistics (what the node says of itself), mb.log_tail (the last
-- lines of the log), mb.process_messages and sys.get_messages (the head
-- of a mailbox).
local mb = require "moonbeam"
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("mb.statistics", function()
  it("counts the messages receive takes and the time processes run, per scheduler", function()
    assert.same({true, true, true, true, true}, {in_process(function()
      local mb = require "moonbeam"
      local function totals()
        local s = mb.statistics()
        local msgs, busy = 0, 0
        for _, sc in ipairs(s.schedulers) do
          msgs, busy = msgs + sc.messages, busy + sc.busy_ns
        end
        return s, msgs, busy
      end
      local s0, m0, b0 = totals()
      local me = mb.self()
      local echo = mb.spawn(function()
        for _ = 1, 1000 do mb.send(me, mb.receive()) end
      end)
      for i = 1, 1000 do
        mb.send(echo, i)
        mb.receive()
      end
      -- A process that computes for a while: its time is counted busy.
      local t = mb.monotonic_time()
      while mb.monotonic_time() - t < 50e6 do end
      local s1, m1, b1 = totals()
      return m1 - m0 >= 2000, b1 - b0 >= 10e6, s1.uptime_ms >= s0.uptime_ms,
        #s1.schedulers == mb.schedulers(),
        s1.memory.processes > 0 and s1.memory.total >= s1.memory.processes
    end)})
  end)

  it("counts the blank states made ahead for spawns, which idle time refills", function()
    assert.same({true, true}, {in_process(function()
      local mb = require "moonbeam"
      local function full()
        for _ = 1, 1000 do
          if mb.statistics().blank_states == 64 then return true end
          mb.sleep(5)
        end
        return false
      end
      local before = full()
      local me = mb.self()
      for _ = 1, 100 do mb.spawn(function() mb.send(me, 1) end) end
      for _ = 1, 100 do mb.receive() end
      return before, full()
    end)})
  end)

  it("sums the memory of the processes' states", function()
    assert.same({true, true}, {in_process(function()
      local mb = require "moonbeam"
      local before = mb.statistics().memory.processes
      local holder = mb.spawn(function()
        local big = string.rep("x", 1000000)
        mb.receive(function(m) return m == big end)
      end)
      -- Once the holder has made its string, it waits.
      while mb.process_info(holder).memory < 1000000 do mb.sleep(1) end
      local grew = mb.statistics().memory.processes - before >= 1000000
      local ref = mb.monitor(holder)
      mb.exit(holder, mb.atom.kill)
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end)
      local m = mb.statistics().memory
      return grew, m.total == m.processes + m.other or m.other == 0
    end)})
  end)
end)

describe("mb.log_tail", function()
  it("returns the lines logged after a sequence number, oldest first", function()
    assert.same({"first line for log_tail", "second line for log_tail", "warning", 1, 0},
      {in_process(function()
        local mb = require "moonbeam"
        local logger = require "moonbeam.logger"
        -- Other specs may have raised the node's level.
        local level = mb.log_level()
        mb.log_level("warning")
        local all = mb.log_tail()
        local last = #all > 0 and all[#all].seq or 0
        logger.warning("first line for log_tail")
        logger.warning("second line for log_tail")
        local lines = mb.log_tail(last)
        mb.log_level(level)
        return lines[1].text:match("first line for log_tail"),
          lines[2].text:match("second line for log_tail"),
          lines[2].level, lines[2].seq - lines[1].seq, #mb.log_tail(lines[2].seq)
      end)})
  end)

  it("keeps the last 512 lines, each cut at 4 KiB", function()
    assert.same({512, true, 4096}, {in_process(function()
      local mb = require "moonbeam"
      local logger = require "moonbeam.logger"
      local level = mb.log_level()
      mb.log_level("warning")
      for i = 1, 600 do logger.warning("ring line %d", i) end
      logger.warning(string.rep("y", 4200))
      mb.log_level(level)
      local lines = mb.log_tail(0)
      local n = #lines
      return n, lines[n - 1].text:match("ring line 600$") ~= nil, #lines[n].text
    end)})
  end)
end)

describe("mb.process_messages", function()
  it("copies the calling process's own queue, leaving it as it was", function()
    assert.same({{"a", "b", "c"}, "a", "b"}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      mb.send(me, "a")
      mb.send(me, "b")
      -- "a", "b", "c" are looked at and left by a selective receive.
      mb.send(me, "c")
      mb.send(me, "d")
      assert(mb.receive(function(m) return m == "d" end, 1000))
      local head = mb.process_messages(me, 3)
      return head, mb.receive(), mb.receive()
    end)})
  end)

  it("copies another process's queue while it waits, after what a selective receive left", function()
    assert.same({{"a", "b", "c"}, 0, {"z"}, 2}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      -- Until p has handled the link (and so moved what came before it
      -- out of its inbox) and waits again.
      local function settled(p)
        for _ = 1, 2000 do
          local info = mb.process_info(p)
          if info.links[1] == me and info.status == "waiting" then return end
          mb.sleep(1)
        end
        error("never settled")
      end
      -- A sleeper's messages wait, undecoded, in its own queue.
      local sleeper = mb.spawn(function() mb.sleep(60000) end)
      for _, m in ipairs({"a", "b", "c"}) do mb.send(sleeper, m) end
      mb.link(sleeper)
      settled(sleeper)
      local head, skipped = mb.process_messages(sleeper, 10)
      -- A selective receive decodes what it looks at and leaves.
      local picky = mb.spawn(function() mb.receive(function(m) return m == "go" end) end)
      mb.send(picky, "x")
      mb.send(picky, "y")
      mb.link(picky)
      settled(picky)
      mb.send(picky, "z")
      local head2, skipped2 = mb.process_messages(picky, 10)
      for _, p in ipairs({sleeper, picky}) do
        mb.unlink(p)
        mb.exit(p, "kill")
      end
      return head, skipped, head2, skipped2
    end)})
  end)

  it("is nil for a process that is not alive, and raises for a bad count", function()
    assert.same({true, false}, {in_process(function()
      local mb = require "moonbeam"
      local p = mb.spawn(function() end)
      local ref = mb.monitor(p)
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end)
      return mb.process_messages(p) == nil, (pcall(mb.process_messages, mb.self(), -1))
    end)})
  end)
end)

describe("mb.process_table", function()
  it("answers the processes in columns, sorted and cut, with their count", function()
    assert.same({true, 2, true, "table_spec_big", true, false}, {in_process(function()
      local mb = require "moonbeam"
      local big = mb.spawn(function()
        mb.register("table_spec_big", mb.self())
        local keep = string.rep("z", 2000000)
        mb.receive(function(m) return m == keep end)
      end)
      while (mb.process_info(big) or {memory = 0}).memory < 2000000 do mb.sleep(1) end
      local count = mb.process_count()
      local t = mb.process_table("memory", 2)
      local all = mb.process_table()
      local in_order = true
      for i = 2, #all.pid do
        local a = tonumber(tostring(all.pid[i - 1]):match("^<%d+%.(%d+)"))
        local b = tonumber(tostring(all.pid[i]):match("^<%d+%.(%d+)"))
        in_order = in_order and a < b
      end
      local ref = mb.monitor(big)
      mb.exit(big, mb.atom.kill)
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end)
      return t.total == count and #all.pid == count,
        #t.pid, t.pid[1] == big and t.memory[1] >= t.memory[2], t.name[1], in_order,
        (pcall(mb.process_table, "size"))
    end)})
  end)
end)

describe("sys.get_messages", function()
  it("answers the messages waiting in a suspended GenServer's mailbox", function()
    assert.same({{"one", "two"}, {}}, {in_process(function()
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      local sys = require "moonbeam.sys"
      local srv = assert(gen_server.start({
        init = function() return "ok", nil end,
        handle_info = function(_, s) return "noreply", s end,
      }))
      sys.suspend(srv)
      mb.send(srv, "one")
      mb.send(srv, "two")
      local waiting = sys.get_messages(srv)
      sys.resume(srv)
      local after = sys.get_messages(srv)
      gen_server.stop(srv)
      return waiting, after
    end)})
  end)
end)
