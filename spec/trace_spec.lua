-- Tracing processes (moonbeam.trace): the events and their shapes, as
-- erlang:trace/3 sends them, the limits recon_trace sets, and what happens
-- when the traced process or the tracer dies.
local mb = require "moonbeam"
local H = require "spec.launcher_helper"

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- The events a tracer (this process) got until {trace_stopped, ...}, each
-- as a list {What, ...} without the trace_ts tag, the pid and the time;
-- the stop as {"stopped", Why, Count}.
local function collect(seconds)
  local mb = require "moonbeam"
  local got = {}
  while true do
    local m = mb.receive(function(m)
      return mb.typeof(m) == "tuple" and (m[1] == mb.atom.trace_ts or m[1] == mb.atom.trace_stopped)
    end, (seconds or 5) * 1000)
    if m == nil then
      got[#got + 1] = {"no stop"}
      return got
    end
    if m[1] == mb.atom.trace_stopped then
      got[#got + 1] = {"stopped", tostring(m[2]), m[3]}
      return got
    end
    assert(math.type(m[m.n]) == "integer" and m[m.n] > 1.6e15, "a time in microseconds")
    local e = {tostring(m[3])}
    for i = 4, m.n - 1 do e[#e + 1] = m[i] end
    got[#got + 1] = e
  end
end

describe("moonbeam.trace", function()
  it("delivers sends, receives, spawns, links and the exit of a traced process, then stops", function()
    local got, ids = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local me = mb.self()
      local w = mb.spawn(function()
        local from = mb.receive()
        mb.send(from, "pong")
        mb.link(from)
        mb.unlink(from)
        mb.spawn("spec.spec_helper_greeter", "shout", from, "hi")
        mb.exit("done")
      end)
      local n = trace.processes(w, "all", {tracer = me, max = 6})
      assert(n == 1)
      mb.send(w, me)
      local got = collect()
      mb.receive(function(m) return m == "HI!" end)
      return got, {me = tostring(me)}
    end)
    for _, e in ipairs(got) do
      for i, v in ipairs(e) do if mb.typeof(v) == "pid" then e[i] = tostring(v) end end
    end
    local spawned = got[5] and got[5][2]
    assert.same({
      {"receive", ids.me},
      {"send", "pong", ids.me},
      {"link", ids.me},
      {"unlink", ids.me},
      {"spawn", spawned, "spec.spec_helper_greeter.shout"},
      {"exit", "done"},
      {"stopped", "max", 6},
    }, got)
  end)

  it("reports the requests a GenServer takes as call events, with their From", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      local trace = require "moonbeam.trace"
      local server = {
        init = function(n) return "ok", n end,
        handle_call = function(req, _, n) return "reply", n + req, n + req end,
      }
      local pid = gen_server.start(server, 1, {name = "traced_counter"})
      trace.processes("traced_counter", {"call"}, {tracer = mb.self()})
      local r = gen_server.call("traced_counter", 41)
      trace.stop()
      local got = collect()
      gen_server.stop(pid)
      return {r, got[1][1], got[1][2], got[1][3][1] == mb.self(), got[2]}
    end)
    assert.same({42, "call", 41, true, {"stopped", "stopped", 1}}, got)
  end)

  it("reports a GenServer's reply, sent to the caller's alias, as a send to the caller", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      local trace = require "moonbeam.trace"
      local pid = gen_server.start({
        init = function() return "ok", 0 end,
        handle_call = function(req, _, n) return "reply", req * 2, n end,
      })
      trace.processes(pid, {"send"}, {tracer = mb.self()})
      local r = gen_server.call(pid, 21)
      trace.stop()
      local got = collect()
      gen_server.stop(pid)
      local reply = got[1][2]
      return {r, got[1][1], mb.typeof(reply) == "tuple" and reply[2], got[1][3] == mb.self(), got[2]}
    end)
    assert.same({42, "send", 42, true, {"stopped", "stopped", 1}}, got)
  end)

  it("reports a GenServer's acknowledgement of its start as a send when its init traces it", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      local trace = require "moonbeam.trace"
      local pid = assert(gen_server.start({
        init = function(tracer)
          local mb = require "moonbeam"
          require("moonbeam.trace").processes(mb.self(), {"send"}, {tracer = tracer})
          return "ok", 0
        end,
      }, mb.self()))
      trace.stop()
      local got = collect()
      gen_server.stop(pid)
      local ack = got[1][2]
      return {got[1][1], mb.typeof(ack) == "tuple" and tostring(ack[1]), ack[3], ack.n,
        got[1][3] == mb.self(), got[2]}
    end)
    assert.same({"send", "$gen_ack", true, 4, true, {"stopped", "stopped", 1}}, got)
  end)

  it("traces the processes whose registered name matches a pattern, and no others", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local function echo() local m = mb.receive() mb.send(m[1], m[2]) end
      local a, b, c = mb.spawn(echo), mb.spawn(echo), mb.spawn(echo)
      mb.register("trace_w1", a)
      mb.register("trace_w2", b)
      mb.register("other_w3", c)
      local n = trace.processes({match = "^trace_w"}, {"send"}, {tracer = mb.self(), max = 2})
      for i, p in ipairs({c, a, b}) do mb.send(p, mb.tuple(mb.self(), i)) end
      local got = collect()
      for _ = 1, 3 do mb.receive(function(m) return math.type(m) == "integer" end) end
      table.sort(got, function(x, y) return tostring(x[2]) < tostring(y[2]) end)
      return {n, got}
    end)
    assert.same({2, {{"send", 2, nil}, {"send", 3, nil}, {"stopped", "max", 2}}},
      {got[1], {{got[2][1][1], got[2][1][2]}, {got[2][2][1], got[2][2][2]}, got[2][3]}})
  end)

  it("stops by itself when the rate limit is passed", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local me = mb.self()
      local w = mb.spawn(function()
        mb.receive() -- "go", once it is traced
        for i = 1, 10 do mb.send(me, i) end
      end)
      -- Three messages within a minute: more than two passes the rate.
      trace.processes(w, {"send"}, {tracer = me, rate = {2, 60000}, max = math.huge})
      mb.send(w, "go")
      local got = collect()
      for _ = 1, 10 do mb.receive(function(m) return math.type(m) == "integer" end) end
      return got
    end)
    assert.same({{"send", 1, nil}, {"send", 2, nil}, {"stopped", "rate", 2}},
      {{got[1][1], got[1][2]}, {got[2][1], got[2][2]}, got[3]})
  end)

  it("stops cleanly when the traced process dies, and traces again afterwards", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local me = mb.self()
      local w = mb.spawn(function() mb.receive() end)
      trace.processes(w, {"receive", "exit"}, {tracer = me})
      mb.exit(w, "kill")
      local first = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[1] == mb.atom.trace_ts end, 5000)
      local running = trace.stop()
      local stop = collect()
      -- A new trace on a new process works as the first did.
      local v = mb.spawn(function() mb.receive() end)
      trace.processes(v, {"receive"}, {tracer = me, max = 1})
      mb.send(v, "again")
      local second = collect()
      return {tostring(first[3]), tostring(first[4]), running, stop, second}
    end)
    assert.same({"exit", "killed", true, {{"stopped", "stopped", 1}},
                 {{"receive", "again"}, {"stopped", "max", 1}}}, got)
  end)

  it("stops cleanly when the tracer dies: the traced process runs on", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local me = mb.self()
      local tracer = mb.spawn(function() mb.receive() end)
      local w = mb.spawn(function()
        while true do
          local m = mb.receive()
          if m == "stop" then return end
          mb.send(me, m)
        end
      end)
      trace.processes(w, {"send", "receive"}, {tracer = tracer})
      local ref = mb.monitor(tracer)
      mb.exit(tracer, "kill")
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end)
      mb.send(w, "one")
      local echoed = mb.receive(function(m) return m == "one" end, 5000)
      -- The first event found no tracer and ended the session.
      local still = trace.stop()
      mb.send(w, "two")
      local again = mb.receive(function(m) return m == "two" end, 5000)
      mb.send(w, "stop")
      return {echoed, still, again}
    end)
    assert.same({"one", false, "two"}, got)
  end)

  it("ends at once when nothing matches, and leaves no printing tracer behind on a bad option", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local n = trace.processes({match = "^no_such_name"}, "all", {tracer = mb.self()})
      local stop = collect()
      -- The printing tracer started for it is killed (the leak check says).
      local ok, err = pcall(trace.processes, mb.self(), "send", {max = 0})
      return {n, stop, ok, err}
    end)
    assert.same({0, {{"stopped", "stopped", 0}}, false}, {got[1], got[2], got[3]})
    assert.matches("max must be a positive integer", got[4])
  end)

  it("leaves a running trace alone when told not to replace it, and stops only its own session", function()
    local got = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local me = mb.self()
      local w = mb.spawn(function() mb.receive() end)
      local n, tracer, session = trace.processes(w, "all", {tracer = me})
      local none, why, running = trace.processes(w, "all", {tracer = me, replace = false})
      -- Another session's number stops nothing; its own stops it.
      local other = trace.stop(session + 1)
      local own = trace.stop(session)
      local stop = collect()
      mb.exit(w, "kill")
      return {n, tracer == me, none, why, running == me, other, own, stop}
    end)
    assert.same({1, true, nil, "a trace is already running", true, false, true,
                 {{"stopped", "stopped", 0}}}, got)
  end)

  it("refuses unknown flags and a dead tracer with clear errors", function()
    local errs = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local dead = mb.spawn(function() end)
      local ref = mb.monitor(dead)
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end)
      local _, e1 = pcall(trace.processes, mb.self(), {"sends"}, {tracer = mb.self()})
      local _, e2 = pcall(trace.processes, mb.self(), "send", {tracer = dead})
      local _, e3 = pcall(trace.processes, 42)
      trace.stop()
      return {e1, e2, e3}
    end)
    assert.matches("unknown flag 'sends'", errs[1])
    assert.matches("noproc", errs[2])
    assert.matches("pid, name, list or {match = pattern} expected, got number", errs[3])
  end)

  it("formats events as lines", function()
    local lines = in_process(function()
      local mb = require "moonbeam"
      local trace = require "moonbeam.trace"
      local p = mb.self()
      local ts = 1796121668205511
      return {
        trace.format(mb.tuple(mb.atom.trace_ts, p, mb.atom.send, {1, 2}, p, ts)),
        trace.format(mb.tuple(mb.atom.trace_ts, p, mb.atom["receive"], "hi", ts)),
        trace.format(mb.tuple(mb.atom.trace_stopped, mb.atom.max, 3)),
        trace.format("not a trace message"),
        tostring(p),
        trace.format(mb.tuple(mb.atom.trace_ts, p, mb.atom.call, "get", mb.tuple(p, "tag"), ts)),
        trace.format(mb.tuple(mb.atom.trace_ts, p, mb.atom.call, "get", "odd", ts)),
      }
    end)
    local p = lines[5]
    assert.equal("10:41:08.205511 " .. p .. ' call "get" from ' .. p, lines[6])
    assert.equal("10:41:08.205511 " .. p .. ' call "get" from "odd"', lines[7])
    assert.same({
      "10:41:08.205511 " .. p .. " send {1, 2} to " .. p,
      "10:41:08.205511 " .. p .. ' receive "hi"',
      "trace stopped: max after 3 messages",
    }, {lines[1], lines[2], lines[3], lines[4]})
  end)

  it("prints lines by default, in the user's terminal from a remote shell", function()
    local port = tostring(24000 + math.random(0, 999))
    local dir = H.tmpdir()
    local script = dir .. "/target.lua"
    H.write(script, [[
local mb = require "moonbeam"
mb.register("pinger", mb.spawn(function()
  while true do local m = mb.receive(); mb.send(m, "pong") end
end))
mb.receive(30000)
]])
    local target = H.start({"run", "--name", "tt@127.0.0.1", "--cookie", "tc", script},
      {env = {ERL_EPMD_PORT = port}})
    -- One finally (a second would replace it): the node, then its files.
    finally(function()
      target:cleanup()
      H.remove(dir)
    end)
    local up = H.wait_for(function()
      local s, names = H.run({"epmd-names"}, {env = {ERL_EPMD_PORT = port}, timeout = 10})
      return s == 0 and names:find("name tt at", 1, true)
    end, 10)
    assert.truthy(up, target:stderr())
    local input = table.concat({
      'trace = require "moonbeam.trace"',
      'trace.processes("pinger", {"receive", "send"}, {max = 2})',
      'mb.send("pinger", mb.self())',
      'trace.wait(5000)',
      'q()',
    }, "\n") .. "\n"
    local s, out, err = H.run({"shell", "--remsh", "tt@127.0.0.1", "--cookie", "tc"},
      {env = {ERL_EPMD_PORT = port}, input = input, timeout = 30})
    assert.equal(0, s, err)
    assert.matches("%d%d:%d%d:%d%d%.%d+ <0%.%d+%.0> receive <[%d.]+>\n", out)
    assert.matches("%d%d:%d%d:%d%d%.%d+ <0%.%d+%.0> send \"pong\" to <[%d.]+>\n", out)
    assert.truthy(out:find("trace stopped: max after 2 messages\n", 1, true), out)
    -- Nothing of it went to the target's own output.
    assert.falsy(target:stdout():find("trace stopped", 1, true))
  end)
end)
