-- gen_server.enter_loop (a process started some other way becomes a
-- server) and the "hibernate" action of init and the callbacks, as OTP
-- documents them.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- Answers "get" with its state; "set" replaces it; every return carries
-- the action the state names (state.action), so that one module tries
-- them all.  A weak table (state.weak) tells whether a full collection
-- ran since the last callback made garbage.
local sleeper = {
  init = function(action) return "ok", {n = 0}, action end,
  handle_call = function(req, _, st)
    if req == "get" then return "reply", st.n, st, st.action end
    if req == "garbage" then
      -- no collection but a full one from here on (restarted below)
      collectgarbage("stop")
      st.weak = setmetatable({}, {__mode = "v"})
      st.weak[1] = {"garbage"}
      return "reply", true, st, "hibernate"
    end
    if req == "collected" then
      collectgarbage("restart")
      return "reply", st.weak[1] == nil, st
    end
    if req == "cast_then_get" then return "reply", st.n, st end
    return "reply", nil, st
  end,
  handle_cast = function(k, st)
    st.n = st.n + k
    return "noreply", st, "hibernate"
  end,
  handle_info = function(msg, st)
    if msg == "bump" then st.n = st.n + 100 end
    return "noreply", st, "hibernate"
  end,
}

describe("the hibernate action", function()
  it("is taken from init, handle_call, handle_cast and handle_info, and the server goes on", function()
    assert.same({0, 5, 105}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start_link(cb, "hibernate"))
      local a = gs.call(pid, "get")
      gs.cast(pid, 5)
      local b = gs.call(pid, "get")
      mb.send(pid, "bump")
      local c = gs.call(pid, "get")
      gs.stop(pid)
      return a, b, c
    end, sleeper)})
  end)

  it("collects the server's garbage before it waits", function()
    assert.is_true(in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start_link(cb))
      gs.call(pid, "garbage")
      local collected = gs.call(pid, "collected")
      gs.stop(pid)
      return collected
    end, sleeper))
  end)

  it("is also the atom hibernate", function()
    assert.equal(0, in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = assert(gs.start_link(cb, mb.atom.hibernate))
      local n = gs.call(pid, "get")
      gs.stop(pid)
      return n
    end, sleeper))
  end)
end)

describe("gen_server.enter_loop", function()
  it("makes a spawned process a server with the state it gives", function()
    assert.same({7, 8}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local me = mb.self()
      local pid = mb.spawn(function(cb, me)
        local mb = require "moonbeam"
        mb.send(me, "ready")
        require("moonbeam.gen_server").enter_loop(cb, {}, {n = 7})
      end, cb, me)
      assert(mb.receive(5000) == "ready")
      local a = gs.call(pid, "get")
      gs.cast(pid, 1)
      local b = gs.call(pid, "get")
      gs.stop(pid)
      return a, b
    end, sleeper)})
  end)

  it("takes the name the process registered, and an action", function()
    assert.same({3, true}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local me = mb.self()
      mb.spawn(function(cb, me)
        local mb = require "moonbeam"
        mb.register("entered", mb.self())
        mb.send(me, "ready")
        require("moonbeam.gen_server").enter_loop(cb, nil, {n = 3}, "entered", "hibernate")
      end, cb, me)
      assert(mb.receive(5000) == "ready")
      local n = gs.call("entered", "get")
      local pid = mb.whereis("entered")
      gs.stop("entered")
      return n, not mb.is_alive(pid)
    end, sleeper)})
  end)

  it("fails with process_not_registered when the process does not have the name", function()
    assert.equal("process_not_registered", in_process(function(cb)
      local mb = require "moonbeam"
      local pid, ref = mb.spawn_monitor(function(cb)
        require("moonbeam.gen_server").enter_loop(cb, {}, {n = 0}, "not_mine")
      end, cb)
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      return down and tostring(down[5])
    end, sleeper))
  end)
end)
