-- Agent, modelled on the cases of Elixir's agent_test.exs. Each example runs
-- in a process of its own (mb.run), stops the agents it starts, and leaves
-- no process behind.
local mb = require "moonbeam"

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("agent.start_link", function()
  it("runs fn in the agent for the initial state, links it and registers its name", function()
    assert.same({true, true, true, "initial"}, {in_process(function()
      local mb = require "moonbeam"
      local agent = require "moonbeam.agent"
      local me = mb.self()
      local pid = agent.start_link(function()
        return {ran_in_agent = require("moonbeam").self() ~= me, text = "initial"}
      end, {name = "store"})
      local state = agent.get("store", function(s) return s end)
      local linked = mb.process_info(me).links[1] == pid
      agent.stop(pid, nil, 5000)
      return mb.whereis("store") == nil and mb.typeof(pid) == "pid",
        state.ran_in_agent, linked, state.text
    end)})
  end)

  it("returns nil and the reason when fn raises, and the caller survives", function()
    assert.same({true, true}, {in_process(function()
      local agent = require "moonbeam.agent"
      local pid, why = agent.start_link(function() error("no state for you") end)
      return pid == nil, tostring(why[1]):find("no state for you", 1, true) ~= nil
    end)})
  end)

  it("refuses a name that is taken with {already_started, Pid}", function()
    assert.same({"already_started", true}, {in_process(function()
      local agent = require "moonbeam.agent"
      local first = agent.start_link(function() return 1 end, {name = "taken_agent"})
      local none, why = agent.start_link(function() return 2 end, {name = "taken_agent"})
      agent.stop(first, nil, 5000)
      return tostring(why[1]), none == nil and why[2] == first
    end)})
  end)

  it("start starts an agent not linked to the caller", function()
    assert.same({0, 7}, {in_process(function()
      local mb = require "moonbeam"
      local agent = require "moonbeam.agent"
      local pid = agent.start(function() return 7 end)
      local links = #mb.process_info(mb.self()).links
      local v = agent.get(pid, function(n) return n end)
      agent.stop(pid, nil, 5000)
      return links, v
    end)})
  end)

  it("raises when it is not given a function", function()
    assert.is_true(in_process(function()
      local agent = require "moonbeam.agent"
      local ok, e = pcall(agent.start_link, {})
      return not ok and e:find("bad argument #1 to 'start_link' (function expected, got table)", 1, true) ~= nil
    end))
  end)
end)

describe("agent.get", function()
  it("returns fn(state), computed in the agent, and leaves the state as it was", function()
    assert.same({3, 6, 3}, {in_process(function()
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return {1, 2} end)
      local factor = 2 -- an upvalue, copied with the function
      local a = agent.get(pid, function(s) s[3] = 3 return #s end)
      local b = agent.get(pid, function(s) return #s * factor end)
      local c = agent.get(pid, function(s) return s[3] end)
      agent.stop(pid, nil, 5000)
      return a, b, c
    end)})
  end)

  it("raises timeout when the agent is busy, and noproc once it is gone", function()
    assert.same({"timeout", "noproc"}, {in_process(function()
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return 0 end)
      agent.cast(pid, function(n) require("moonbeam").sleep(200) return n end)
      local _, e1 = pcall(agent.get, pid, function(n) return n end, 10)
      agent.stop(pid, nil, 5000)
      local _, e2 = pcall(agent.get, pid, function(n) return n end)
      return tostring(e1[1]), tostring(e2[1])
    end)})
  end)

  it("ends the agent with {Error, Traceback} when fn raises, and raises that in the caller", function()
    assert.same({true, true, false}, {in_process(function()
      local mb = require "moonbeam"
      local agent = require "moonbeam.agent"
      mb.log_level("error")
      mb.trap_exit(true)
      local pid = agent.start_link(function() return 0 end)
      local _, e = pcall(agent.get, pid, function() error("bad read") end)
      local exit = mb.receive(function(m) return m[2] == pid end, 5000, {[mb.atom.EXIT] = true})
      return tostring(e[1][1]):find("bad read", 1, true) ~= nil,
        tostring(exit[3][1]):find("bad read", 1, true) ~= nil, mb.is_alive(pid)
    end)})
  end)

  it("raises when it is not given a function", function()
    assert.is_true(in_process(function()
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return 0 end)
      local ok, e = pcall(agent.get, pid, "state")
      agent.stop(pid, nil, 5000)
      return not ok and e:find("bad argument #2 to 'get' (function expected, got string)", 1, true) ~= nil
    end))
  end)
end)

describe("agent.update", function()
  it("sets the state to fn(state) and returns true once it is done", function()
    assert.same({true, 11}, {in_process(function()
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return 10 end)
      local ok = agent.update(pid, function(n) return n + 1 end)
      local v = agent.get(pid, function(n) return n end)
      agent.stop(pid, nil, 5000)
      return ok, v
    end)})
  end)
end)

describe("agent.get_and_update", function()
  it("replies with fn's first result and keeps its second as the state", function()
    assert.same({"old", "new"}, {in_process(function()
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return "old" end)
      local reply = agent.get_and_update(pid, function(s) return s, "new" end)
      local v = agent.get(pid, function(s) return s end)
      agent.stop(pid, nil, 5000)
      return reply, v
    end)})
  end)
end)

describe("agent.cast", function()
  it("changes the state without waiting, in order with the calls that follow", function()
    assert.same({true, 3}, {in_process(function()
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return 0 end)
      local r = agent.cast(pid, function(n) return n + 1 end)
      agent.cast(pid, function(n) return n + 2 end)
      local v = agent.get(pid, function(n) return n end)
      agent.stop(pid, nil, 5000)
      return r, v
    end)})
  end)

  it("does nothing for an agent that does not exist", function()
    assert.is_true(in_process(function()
      local agent = require "moonbeam.agent"
      return agent.cast("no_such_agent", function(n) return n end)
    end))
  end)
end)

describe("agent.stop", function()
  it("stops the agent and returns once it has ended", function()
    assert.same({true, false}, {in_process(function()
      local mb = require "moonbeam"
      local agent = require "moonbeam.agent"
      local pid = agent.start_link(function() return 0 end)
      return agent.stop(pid, nil, 5000), mb.is_alive(pid)
    end)})
  end)
end)
