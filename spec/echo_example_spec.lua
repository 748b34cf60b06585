-- examples/echo/echo.lua against real peers: Erlang's gen_tcp as a client
-- of it, and moonbeam's gen_tcp as a client of an Erlang gen_tcp server.
-- Every OS process started here is stopped by its pid; only 127.0.0.1.
local mb = require "moonbeam"
local H = require "spec.launcher_helper"

local have_erl = os.execute("command -v erl > /dev/null 2>&1") == true

-- Start the echo server on a free port; returns the job and the port.
local function start_echo()
  local job = H.start({"examples/echo/echo.lua", "0"})
  assert(job:wait_output("echo: listening on", 20), job:stderr())
  return job, tonumber(job:stdout():match("listening on 127%.0%.0%.1:(%d+)"))
end

-- Run an Erlang expression with erl, bounded; returns what it printed.
local function erl_eval(expr)
  local st, out, err = H.run({"-noshell", "-eval", expr}, {program = "erl", timeout = 60})
  return st, out, err
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("examples/echo", function()
  local job, port
  before_each(function() job, port = start_echo() end)
  after_each(function() job:cleanup() end)

  it("echoes to an Erlang gen_tcp client, on 20 connections at once", function()
    if not have_erl then pending("erl is not installed") return end
    -- Each connection sends its own packets and must get exactly them back.
    local st, out, err = erl_eval(([[
      Port = %d,
      Self = self(),
      Conn = fun(I) ->
        {ok, S} = gen_tcp:connect({127,0,0,1}, Port, [binary, {active, false}, {packet, 0}]),
        Msgs = [<<"conn ", (integer_to_binary(I))/binary, " msg ", (integer_to_binary(J))/binary, "\n">>
                || J <- lists:seq(1, 50)],
        Ok = lists:all(fun(M) ->
               ok = gen_tcp:send(S, M),
               {ok, Back} = gen_tcp:recv(S, byte_size(M), 10000),
               Back =:= M
             end, Msgs),
        gen_tcp:close(S),
        Self ! {done, I, Ok}
      end,
      [spawn(fun() -> Conn(I) end) || I <- lists:seq(1, 20)],
      Results = [receive {done, I, R} -> R after 30000 -> timeout end || I <- lists:seq(1, 20)],
      io:format("~p~n", [Results]),
      halt().
    ]]):format(port))
    assert.equal(0, st, err)
    assert.equal("[" .. ("true,"):rep(19) .. "true]", out:gsub("%s", ""))
  end)

  it("keeps serving the others when one client drops mid-stream", function()
    assert.same({"first", "third"}, {mb.run(function(p)
      local gen_tcp = require "moonbeam.gen_tcp"
      local a = assert(gen_tcp.connect("127.0.0.1", p, {active = false}, 5000))
      local b = assert(gen_tcp.connect("127.0.0.1", p, {active = false}, 5000))
      gen_tcp.send(a, "first")
      local r1 = gen_tcp.recv(a, 5, 5000)
      gen_tcp.send(b, ("x"):rep(100000)) -- and never read it back
      gen_tcp.close(b)
      local c = assert(gen_tcp.connect("127.0.0.1", p, {active = false}, 5000))
      gen_tcp.send(c, "third")
      return r1, gen_tcp.recv(c, 5, 5000)
    end, port)})
  end)
end)

describe("moonbeam's gen_tcp against an Erlang gen_tcp server", function()
  it("speaks {packet, 4} with it both ways", function()
    if not have_erl then pending("erl is not installed") return end
    -- The server answers each packet reversed, then ends when the client
    -- closes.
    local server = H.start({"-noshell", "-eval", [[
      {ok, L} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false}, {ip, {127,0,0,1}}]),
      {ok, Port} = inet:port(L),
      io:format("port ~p~n", [Port]),
      {ok, S} = gen_tcp:accept(L, 20000),
      Loop = fun Loop() ->
        case gen_tcp:recv(S, 0, 20000) of
          {ok, D} -> ok = gen_tcp:send(S, list_to_binary(lists:reverse(binary_to_list(D)))), Loop();
          {error, closed} -> halt(0)
        end
      end,
      Loop().
    ]]}, {program = "erl"})
    local ok, err = pcall(function()
      assert(server:wait_output("port ", 30), server:stderr())
      local p = tonumber(server:stdout():match("port (%d+)"))
      assert.same({"gnip", ("ab"):rep(5000):reverse(), true}, {mb.run(function(pt)
        local gen_tcp = require "moonbeam.gen_tcp"
        local s = assert(gen_tcp.connect("127.0.0.1", pt, {packet = 4, active = false}, 5000))
        gen_tcp.send(s, "ping")
        local a = gen_tcp.recv(s, 0, 5000)
        gen_tcp.send(s, ("ab"):rep(5000))
        local b = gen_tcp.recv(s, 0, 5000)
        return a, b, gen_tcp.close(s)
      end, p)})
      assert.equal(0, server:wait(30))
    end)
    server:cleanup()
    assert(ok, err)
  end)
end)
