-- Modelled on OTP's gen_server_SUITE: start, call, cast, info, reply,
-- timeouts, continue, stop and terminate, bad returns.
local mb = require "moonbeam"

-- Run fn in a process (mb.run), and check that every example leaves no
-- process behind: a server an example starts, it stops.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)


-- The callback module the specs start (a table: it is copied into the
-- server process with its functions).
local counter = {
  init = function(args)
    if args == "ignore" then return "ignore" end
    if args == "stop" then return "stop", "init_said_no" end
    if args == "crash" then error("init blew up") end
    if args == "bad" then return "what" end
    if args == "continue" then return "ok", 0, {continue = "bump"} end
    if args == "timeout" then return "ok", 0, 30 end
    return "ok", args or 0
  end,
  handle_call = function(req, from, n)
    if req == "get" then return "reply", n, n end
    if req == "inc" then return "reply", n + 1, n + 1 end
    if req == "later" then
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      mb.spawn(function() mb.sleep(10) gen_server.reply(from, "deferred") end)
      return "noreply", n
    end
    if req == "stop" then return "stop", "normal", "bye", n end
    if req == "crash" then error("handle_call blew up") end
    if req == "bad" then return "nonsense" end
    if req == "slow" then require("moonbeam").sleep(300) return "reply", "slow", n end
    if req == "die" then require("moonbeam").exit("died_in_call") end
  end,
  handle_cast = function(msg, n)
    if msg == "inc" then return "noreply", n + 1 end
    if msg == "stop" then return "stop", "cast_stop", n end
  end,
  handle_info = function(msg, n)
    local mb = require "moonbeam"
    if msg == mb.atom.timeout then return "noreply", n + 100 end
    if type(msg) == "table" and msg.report then mb.send(msg.report, n) end
    return "noreply", n
  end,
  handle_continue = function(c, n)
    if c == "bump" then return "noreply", n + 10 end
  end,
  terminate = function(reason, n)
    local mb = require "moonbeam"
    local watcher = mb.whereis("terminate_watcher")
    if watcher then mb.send(watcher, {reason = tostring(reason), state = n}) end
  end,
}

describe("gen_server.start_link", function()
  it("returns the pid once init has finished, and registers a name", function()
    assert.same({true, 5, true}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 5, {name = "counter1"})
      local results = {mb.typeof(pid) == "pid", gs.call("counter1", "get"), mb.whereis("counter1") == pid}
      gs.stop(pid)
      return table.unpack(results)
    end, counter)})
  end)

  it("returns nil and the reason when init stops, fails or returns garbage", function()
    assert.same({"init_said_no", "init blew up", "bad_return_value", "ignore", true},
      {in_process(function(cb)
        local mb = require "moonbeam"
        local gs = require "moonbeam.gen_server"
        local _, r1 = gs.start_link(cb, "stop")
        local _, r2 = gs.start_link(cb, "crash")
        local _, r3 = gs.start_link(cb, "bad")
        local _, r4 = gs.start_link(cb, "ignore")
        -- the caller was not brought down by the failed inits
        return r1, tostring(r2[1]):match("init blew up"), tostring(r3[1]), tostring(r4), true
      end, counter)})
  end)

  it("refuses a name that is taken with {already_started, Pid}", function()
    assert.is_true(in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 0, {name = "taken_gs"})
      local none, why = gs.start_link(cb, 0, {name = "taken_gs"})
      gs.stop(pid)
      return none == nil and tostring(why[1]) == "already_started" and why[2] == pid
    end, counter))
  end)

  it("runs handle_continue before any message", function()
    assert.equal(10, in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, "continue")
      local n = gs.call(pid, "get")
      gs.stop(pid)
      return n
    end, counter))
  end)

  it("gives handle_info a timeout when no message comes in time", function()
    assert.equal(100, in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, "timeout")
      mb.sleep(100)
      local n = gs.call(pid, "get")
      gs.stop(pid)
      return n
    end, counter))
  end)
end)

describe("gen_server.start_monitor", function()
  it("returns the pid and a monitor that reports the server's end", function()
    assert.same({"down", "server_done", false}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid, mon = gs.start_monitor(cb, 1)
      assert(mb.typeof(mon) == "ref" and gs.call(pid, "get") == 1)
      -- not linked: the caller does not trap exits and survives the stop
      gs.stop(pid, "server_done")
      local down = mb.receive(function(m)
        return m[1] == mb.atom.DOWN and m[2] == mon
      end, 5000)
      return down and "down", tostring(down[5]), mb.is_alive(pid)
    end, counter)})
  end)

  it("leaves no monitor and no 'DOWN' behind when init fails", function()
    assert.same({"init_said_no", "init blew up", "nothing queued"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local none, r1 = gs.start_monitor(cb, "stop")
      assert(none == nil)
      local _, r2 = gs.start_monitor(cb, "crash")
      return r1, tostring(r2[1]):match("init blew up"),
        mb.receive(100) == nil and "nothing queued"
    end, counter)})
  end)
end)

describe("gen_server.start, in the new process", function()
  it("runs init without loading the behaviour's Lua side", function()
    local loaded = in_process(function()
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local me = mb.self()
      local pid = assert(gs.start({
        init = function(parent)
          local mb = require "moonbeam"
          local got = {}
          for _, m in ipairs({"moonbeam.gen_base", "moonbeam.gen_server_loop",
              "moonbeam.gen_server_event", "moonbeam.gen", "moonbeam.gen_server"}) do
            got[m] = debug.getregistry()._LOADED[m] ~= nil
          end
          mb.send(parent, got)
          return "ok", 0
        end,
      }, me))
      local got = mb.receive(function(m) return type(m) == "table" end, 5000)
      gs.stop(pid)
      return got
    end)
    assert.same({["moonbeam.gen_base"] = false, ["moonbeam.gen_server_loop"] = false,
      ["moonbeam.gen_server_event"] = false, ["moonbeam.gen"] = false,
      ["moonbeam.gen_server"] = false}, loaded)
  end)

  it("registers a name given as an atom, and refuses it once taken", function()
    assert.same({true, 3, "already_started", true}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start(cb, 3, {name = mb.atom.atom_named}))
      local none, why = gs.start(cb, 0, {name = mb.atom.atom_named})
      local r = {mb.whereis("atom_named") == pid, gs.call(mb.atom.atom_named, "get"),
        none == nil and tostring(why[1]), why[2] == pid}
      gs.stop(pid)
      return table.unpack(r)
    end, counter)})
  end)

  it("registers a {via, Module, Name} name through the module, and refuses it once taken", function()
    assert.same({true, 4, "already_started", true, true}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local via = {"via", "spec.fixtures.via_names", "v1"}
      local pid = assert(gs.start_link(cb, 4, {name = via}))
      local none, why = gs.start_link(cb, 0, {name = via})
      local r = {mb.whereis("via_names.v1") == pid, gs.call(via, "get"),
        none == nil and tostring(why[1]), why[2] == pid}
      gs.stop(pid)
      r[5] = mb.whereis("via_names.v1") == nil
      return table.unpack(r)
    end, counter)})
  end)

  it("keeps none of the Lua side once started through it", function()
    assert.same({false, false}, {in_process(function()
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start({
        init = function() return "ok", 0 end,
        handle_call = function(_, _, n)
          local loaded = debug.getregistry()._LOADED
          return "reply", {loaded["moonbeam.gen_server_event"] ~= nil,
            loaded["moonbeam.gen_base"] ~= nil}, n
        end,
      }, nil, {name = {"via", "spec.fixtures.via_names", "lua_side"}}))
      local r = gs.call(pid, "loaded")
      gs.stop(pid)
      return table.unpack(r)
    end)})
  end)

  it("loads a callback module given by name, and fails the start when it cannot", function()
    assert.same({7, true, true}, {in_process(function()
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start("spec.fixtures.global_support", 7))
      local n = gs.call(pid, "get")
      gs.stop(pid)
      local none, why = gs.start("spec.fixtures.no_such_module_here", 0)
      return n, none == nil and tostring(why[1]):find("no_such_module_here", 1, true) ~= nil,
        tostring(why[2]):find("stack traceback", 1, true) ~= nil
    end)})
  end)

  it("takes init's tag as a string or an atom, with or without a state", function()
    assert.same({5, true}, {in_process(function()
      local gs = require "moonbeam.gen_server"
      local get = function(_, _, n) return "reply", n, n end
      local a = assert(gs.start({
        init = function(n) return require("moonbeam").atom.ok, n end,
        handle_call = get}, 5))
      local b = assert(gs.start({init = function() return "ok" end, handle_call = get}))
      local r = {gs.call(a, "get"), gs.call(b, "get") == nil}
      gs.stop(a)
      gs.stop(b)
      return table.unpack(r)
    end)})
  end)

  it("runs handle_continue for a {continue = x} table with a metatable", function()
    assert.equal(10, in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      cb.init = function()
        return "ok", 0, setmetatable({}, {__index = {continue = "bump"}})
      end
      local pid = assert(gs.start(cb))
      local n = gs.call(pid, "get")
      gs.stop(pid)
      return n
    end, counter))
  end)

  it("fails the start with bad_return_value for an init timeout it does not know", function()
    assert.same({"bad_return_value", true}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      cb.init = function() return "ok", 0, "doze" end
      local none, why = gs.start_link(cb)
      return tostring(why[1]), none == nil
    end, counter)})
  end)

  it("waits in a function of moonbeam/gen_server_loop.lua once idle", function()
    local fn = in_process(function()
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start({init = function() return "ok", 0 end}))
      local f
      for _ = 1, 1000 do -- until the server waits in its loop
        f = mb.process_info(pid, "current_function")
        if f ~= "running" then break end
        mb.sleep(1)
      end
      gs.stop(pid)
      return f
    end)
    assert.matches("^moonbeam/gen_server_loop%.lua:%d+ in function ", fn)
  end)
end)

describe("gen_server.call", function()
  it("returns the reply and lets handle_call change the state", function()
    assert.same({1, 2, 2}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 0)
      local a, b, c = gs.call(pid, "inc"), gs.call(pid, "inc"), gs.call(pid, "get")
      gs.stop(pid)
      return a, b, c
    end, counter)})
  end)

  it("waits for a reply sent later with gen_server.reply", function()
    assert.equal("deferred", in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 0)
      local r = gs.call(pid, "later")
      gs.stop(pid)
      return r
    end, counter))
  end)

  it("fails at once with noproc for a dead or unknown server", function()
    assert.same({"noproc", "noproc"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local dead, down = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == down end, 5000) -- it has ended
      local _, e1 = pcall(gs.call, dead, "get")
      local _, e2 = pcall(gs.call, "nobody_here", "get")
      return tostring(e1[1]), tostring(e2[1])
    end, counter)})
  end)

  it("fails with timeout, and the late reply never reaches the caller's mailbox", function()
    assert.same({"timeout", "timeout", "slow"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 0)
      local ok, e = pcall(gs.call, pid, "slow", 50)
      -- The server answers in order: by the second reply, the late first
      -- one has been sent, and would be in the mailbox.
      local second = gs.call(pid, "slow")
      local _, empty = mb.receive(0)
      gs.stop(pid)
      return tostring(e[1]), empty, second
    end, counter)})
  end)

  it("fails with the server's reason when it dies during the call", function()
    assert.equal("died_in_call", in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      mb.trap_exit(true)
      local pid = gs.start_link(cb, 0)
      local ok, e = pcall(gs.call, pid, "die")
      return e[1]
    end, counter))
  end)

  it("stops the server with {Error, Traceback} when a callback raises", function()
    assert.same({true, true}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      mb.trap_exit(true)
      local pid = gs.start_link(cb, 0)
      local _, e = pcall(gs.call, pid, "crash")
      local reason = e[1]
      return tostring(reason[1]):match("handle_call blew up") ~= nil,
        tostring(reason[2]):match("traceback") ~= nil
    end, counter)})
  end)

  it("stops the server with bad_return_value on a bad callback return", function()
    assert.equal("bad_return_value", in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      mb.trap_exit(true)
      local pid = gs.start_link(cb, 0)
      local _, e = pcall(gs.call, pid, "bad")
      return tostring(e[1][1])
    end, counter))
  end)
end)

describe("gen_server's failures name their cause", function()
  it("names what a callback returned when it is not a return it knows", function()
    assert.same({"bad_return_value", "nothing", "bad_return_value", "\"what\", 1"},
      {in_process(function()
        local mb = require "moonbeam"
        local gs = require "moonbeam.gen_server"
        mb.log_level("error")
        local cb = {
          init = function() return "ok", 0 end,
          handle_call = function(req) if req == "two" then return "what", 1 end end,
        }
        local reasons = {}
        for _, req in ipairs({"none", "two"}) do
          local pid = gs.start(cb)
          local _, e = pcall(gs.call, pid, req)
          reasons[#reasons + 1] = tostring(e[1][1])
          reasons[#reasons + 1] = e[1][2]
        end
        return table.unpack(reasons)
      end)})
  end)

  it("fails a call a server makes to itself at once with calling_self", function()
    assert.same({"calling_self", "gen_server", true}, {in_process(function()
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start({
        init = function() return "ok", 0 end,
        handle_call = function(req, _, st)
          if req == "self" then
            local ok, e = pcall(gs.call, mb.self(), "inner", math.huge)
            return "reply", {ok, e}, st
          end
          return "reply", "inner reply", st
        end,
      })
      local r = gs.call(pid, "self", 2000)
      gs.stop(pid)
      return tostring(r[2][1]), tostring(r[2][2][1]), r[1] == false
    end)})
  end)
end)

describe("gen_server.cast and handle_info", function()
  it("casts change the state without a reply, in order with calls", function()
    assert.equal(3, in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 0)
      for _ = 1, 3 do gs.cast(pid, "inc") end
      local n = gs.call(pid, "get")
      gs.stop(pid)
      return n
    end, counter))
  end)

  it("passes other messages to handle_info", function()
    assert.equal(7, in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, 7)
      mb.send(pid, {report = mb.self()})
      local n = mb.receive(1000)
      gs.stop(pid)
      return n
    end, counter))
  end)

  it("casting to an unknown name does nothing", function()
    assert.is_true(in_process(function()
      local gs = require "moonbeam.gen_server"
      gs.cast("no_such_server", "x")
      return true
    end))
  end)
end)

describe("stopping", function()
  it("gen_server.stop runs terminate with the reason and returns when the server is gone", function()
    assert.same({"normal", 4, false}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      mb.register("terminate_watcher", mb.self())
      local pid = gs.start(cb, 4)
      gs.stop(pid)
      local t = mb.receive(1000)
      return t.reason, t.state, mb.is_alive(pid)
    end, counter)})
  end)

  it("stop of a dead server raises noproc", function()
    assert.equal("noproc", in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start(cb, 0)
      gs.stop(pid)
      local _, e = pcall(gs.stop, pid)
      return tostring(e[1])
    end, counter))
  end)

  it("a stop return from handle_call runs terminate, then replies", function()
    assert.same({"bye", "normal"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      mb.register("terminate_watcher", mb.self())
      local pid = gs.start(cb, 0)
      local reply = gs.call(pid, "stop")
      return reply, mb.receive(1000).reason
    end, counter)})
  end)

  it("a stop return from handle_cast terminates with its reason", function()
    assert.equal("cast_stop", in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      mb.register("terminate_watcher", mb.self())
      local pid = gs.start(cb, 0)
      gs.cast(pid, "stop")
      return mb.receive(1000).reason
    end, counter))
  end)

  it("calls terminate on shutdown from the parent when trapping exits", function()
    assert.equal("shutdown", in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local me = mb.self()
      local trapping = {}
      for k, v in pairs(cb) do trapping[k] = v end
      trapping.init = function(n) require("moonbeam").trap_exit(true) return "ok", n end
      mb.register("terminate_watcher", me)
      local parent = mb.spawn(function()
        local pid = gs.start_link(trapping, 0)
        mb.send(me, "started")
        mb.receive()
      end)
      assert(mb.receive(1000) == "started")
      mb.exit(parent, "shutdown")
      return mb.receive(1000).reason
    end, counter))
  end)
end)

describe("an idle gen_server", function()
  it("has opened neither the package nor the debug library", function()
    local idle, failed = in_process(function()
      local gen_server = require "moonbeam.gen_server"
      local probe = {
        init = function(n) return "ok", n end,
        handle_call = function(req, _, n)
          if req == "fail" then error("asked to") end
          return "reply", {package = rawget(_G, "package") ~= nil,
            debug = rawget(_G, "debug") ~= nil}, n
        end,
      }
      -- The first server of a node may compile the server's modules (the
      -- package library does that); the next ones load them from the cache.
      gen_server.stop(assert(gen_server.start(probe, 0)))
      local server = assert(gen_server.start(probe, 0))
      local r = gen_server.call(server, "libraries")
      local ref = mb.monitor(server)
      pcall(gen_server.call, server, "fail")
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      return r, down[5]
    end)
    assert.same({package = false, debug = false}, idle)
    -- A callback's error still ends the server with its traceback.
    assert.matches("asked to", tostring(failed[1]))
    assert.matches("stack traceback", tostring(failed[2]))
  end)
end)
