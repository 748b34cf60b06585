-- mb.call: the client side of a GenServer call to a server of this node,
-- in one primitive (moonbeam.gen.call uses it).  The servers here are
-- plain processes, so that the messages on the wire are seen as they are.

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("mb.call", function()
  it("sends {'$gen_call', {self(), Tag}, Request} and returns true and the reply", function()
    assert.same({true, "pong", true, true, true, "ping", true}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local me = mb.self()
      local server = mb.spawn(function()
        local m = mb.receive()
        mb.send(me, mb.tuple(mb.atom.got, m))
        gen.reply(m[2], "pong")
      end)
      local ok, reply = mb.call(server, mb.atom["$gen_call"], "ping", 5000)
      local got = mb.receive(function(m) return m[1] == mb.atom.got end, 5000)[2]
      local from = got[2]
      return ok, reply, got[1] == mb.atom["$gen_call"], from[1] == me,
        mb.typeof(from[2]) == "ref", got[3], mb.typeof(from) == "tuple"
    end)})
  end)

  it("takes a reply sent as a plain message {Tag, Reply}, as Erlang servers send it", function()
    assert.same({true, "plain"}, {in_process(function()
      local mb = require "moonbeam"
      local server = mb.spawn(function()
        local m = mb.receive()
        local from = m[2]
        mb.send(from[1], mb.tuple(from[2], "plain"))
      end)
      return mb.call(server, mb.atom["$gen_call"], "x", 5000)
    end)})
  end)

  it("returns a nil reply", function()
    assert.same({true, nil, 2}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local server = mb.spawn(function() gen.reply(mb.receive()[2], nil) end)
      local ok, r = mb.call(server, mb.atom["$gen_call"], "x", 5000)
      return ok, r, select("#", mb.call(server, mb.atom["$gen_call"], "x", 0))
    end)})
  end)

  it("leaves the other messages queued, in order, and takes only its own reply", function()
    assert.same({"pong", "a", "not_mine", "b", "c"}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local me = mb.self()
      mb.send(me, "a")
      mb.send(me, mb.tuple(mb.make_ref(), "not_mine"))
      local server = mb.spawn(function()
        local from = mb.receive()[2]
        mb.send(me, "b") -- comes before the reply
        gen.reply(from, "pong")
        mb.send(me, "c")
      end)
      local ok, r = mb.call(server, mb.atom["$gen_call"], "ping", 5000)
      local mon = mb.monitor(server)
      mb.receive(function(m) return m[2] == mon end, 5000)
      local rest = {}
      for _ = 1, 4 do
        local m = mb.receive(0)
        rest[#rest + 1] = type(m) == "table" and m[2] or m
      end
      return r, rest[1], rest[2], rest[3], rest[4]
    end)})
  end)

  it("leaves no 'DOWN' of its monitor when the server ends just after replying", function()
    assert.same({"bye", "my_down", "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local server = mb.spawn(function()
        local m = mb.receive()
        gen.reply(m[2], "bye")
        mb.receive() -- the test's monitor, set up after the call
      end)
      local _, r = mb.call(server, mb.atom["$gen_call"], "x", 5000)
      local mon = mb.monitor(server)
      mb.exit(server, "kill")
      -- Signals from one process keep their order: the call's 'DOWN', had
      -- it been kept, would come before this one.
      local down = mb.receive(5000)
      local _, why = mb.receive(0)
      return r, down[2] == mon and "my_down" or tostring(down[1]), why
    end)})
  end)

  it("returns false and noproc for a process that has ended", function()
    assert.same({false, "noproc", "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local dead, mon = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == mon end, 5000)
      local ok, why = mb.call(dead, mb.atom["$gen_call"], "x", 5000)
      local _, empty = mb.receive(0)
      return ok, tostring(why), empty
    end)})
  end)

  it("returns false and the server's exit reason when it ends during the call", function()
    assert.same({false, "went_away", "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local server = mb.spawn(function()
        mb.receive()
        mb.exit("went_away")
      end)
      local ok, why = mb.call(server, mb.atom["$gen_call"], "x", 5000)
      local _, empty = mb.receive(0)
      return ok, why, empty
    end)})
  end)

  it("returns false and timeout, and a reply after it never reaches the mailbox", function()
    assert.same({false, "timeout", false, "timeout", "timeout"}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local me = mb.self()
      local server = mb.spawn(function()
        for _ = 1, 2 do
          local m = mb.receive()
          mb.receive(function(x) return x == "answer" end)
          gen.reply(m[2], "late")
          mb.send(me, "replied")
        end
      end)
      local ok0, why0 = mb.call(server, mb.atom["$gen_call"], 1, 0)
      local ok, why = mb.call(server, mb.atom["$gen_call"], 2, 20)
      mb.send(server, "answer")
      mb.send(server, "answer")
      -- The server has replied to both calls by the time it says so twice.
      mb.receive(function(m) return m == "replied" end, 5000)
      mb.receive(function(m) return m == "replied" end, 5000)
      local _, empty = mb.receive(0)
      return ok0, tostring(why0), ok, tostring(why), empty
    end)})
  end)

  it("returns nothing for what the Lua path does: a name, the caller itself, another node's pid", function()
    assert.same({0, 0, 0, 0}, {in_process(function()
      local mb = require "moonbeam"
      mb.register("call_spec_name", mb.self())
      local by_name = select("#", mb.call("call_spec_name", mb.atom["$gen_call"], 1, 10))
      local to_self = select("#", mb.call(mb.self(), mb.atom["$gen_call"], 1, 10))
      local other = mb.spawn(function() mb.receive() end)
      local bad_timeout = select("#", mb.call(other, mb.atom["$gen_call"], 1, -1))
      mb.exit(other, "kill")
      local remote = select("#", mb.call({"x", "other@host"}, mb.atom["$gen_call"], 1, 10))
      mb.unregister("call_spec_name")
      return by_name, to_self, bad_timeout, remote
    end)})
  end)

  it("leaves no monitor on the Lua path either (a traced caller) for a request that cannot be sent", function()
    assert.same({false, true, 0}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local server = mb.spawn(function() mb.receive() end)
      local tracer = mb.spawn(function() while mb.receive() ~= "stop" do end end)
      require("moonbeam.trace").processes(mb.self(), "send", {tracer = tracer})
      local ok, err = pcall(gen.call, server, {co = coroutine.create(print)}, 1000)
      require("moonbeam.trace").stop()
      local monitors = #mb.process_info(mb.self()).monitors
      mb.exit(server, "kill")
      mb.send(tracer, "stop")
      return ok, tostring(err):find("cannot send a coroutine", 1, true) ~= nil, monitors
    end)})
  end)

  it("raises as send does for a request that cannot be sent, with no monitor left", function()
    assert.same({false, true, 0}, {in_process(function()
      local mb = require "moonbeam"
      local server = mb.spawn(function() mb.receive() end)
      local ok, err = pcall(mb.call, server, mb.atom["$gen_call"], {co = coroutine.create(print)}, 10)
      local monitors = #mb.process_info(mb.self()).monitors
      mb.exit(server, "kill")
      return ok, tostring(err):find("cannot send a coroutine at msg[3].co", 1, true) ~= nil, monitors
    end)})
  end)

  it("shows the caller in the server's monitored_by while it waits, and forgets it after the reply or the timeout", function()
    assert.same({true, true, 0, false, "timeout", 0}, {in_process(function()
      local mb = require "moonbeam"
      local gen = require "moonbeam.gen"
      local me = mb.self()
      local server = mb.spawn(function()
        for _ = 1, 2 do
          local m = mb.receive()
          local by = mb.process_info(mb.self()).monitored_by
          mb.send(me, mb.tuple(mb.atom.watched, #by == 1 and by[1] == me))
          if m[3] == "answer" then gen.reply(m[2], true) end
        end
        mb.receive()
      end)
      local ok = mb.call(server, mb.atom["$gen_call"], "answer", 5000)
      local seen = mb.receive(function(m) return m[1] == mb.atom.watched end, 5000)[2]
      local after = #mb.process_info(server).monitored_by
      local ok2, why = mb.call(server, mb.atom["$gen_call"], "silence", 20)
      mb.receive(function(m) return m[1] == mb.atom.watched end, 5000)
      local after2 = #mb.process_info(server).monitored_by
      mb.exit(server, "kill")
      return ok, seen, after, ok2, tostring(why), after2
    end)})
  end)
end)
