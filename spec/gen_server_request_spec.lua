-- gen_server's asynchronous requests, as OTP 25 documents them:
-- send_request, wait_response, receive_response, check_response, and
-- collections of request ids.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- A server that answers {"echo", v} at once, holds "hold" until it is
-- cast "release", and dies on "die".
local holder = {
  init = function() return "ok", {} end,
  handle_call = function(req, from, held)
    if req == "hold" then held[#held + 1] = from return "noreply", held end
    if req == "die" then require("moonbeam").exit("died_in_call") end
    if req == "count" then return "reply", #held, held end
    return "reply", req[2], held
  end,
  handle_cast = function(msg, held)
    local gs = require "moonbeam.gen_server"
    for i = 1, #held do gs.reply(held[i], "released") end
    return "noreply", {}
  end,
}

describe("gen_server.send_request", function()
  it("sends a call whose reply receive_response returns", function()
    assert.same({"reply", 42, "reply", "b"}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local r1 = gs.send_request(pid, {"echo", 42})
      local r2 = gs.send_request(pid, {"echo", "b"})
      local t2, v2 = gs.receive_response(r2, 5000)
      local t1, v1 = gs.receive_response(r1, 5000)
      gs.stop(pid)
      return t1, v1, t2, v2
    end, holder)})
  end)

  it("reaches a server by its registered name", function()
    assert.same({"reply", "named"}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, nil, {name = "req_named"})
      local t, v = gs.wait_response(gs.send_request("req_named", {"echo", "named"}), 5000)
      gs.stop(pid)
      return t, v
    end, holder)})
  end)

  it("answers error {noproc, Server} for a server that is not there", function()
    assert.same({"error", "noproc", "no_such_server"}, {in_process(function()
      local gs = require "moonbeam.gen_server"
      local t, e = gs.receive_response(gs.send_request("no_such_server", "x"), 5000)
      return t, tostring(e[1]), e[2]
    end)})
  end)

  it("answers error {Reason, Server} when the server dies first", function()
    assert.same({"error", "died_in_call", true}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start(cb)
      local t, e = gs.receive_response(gs.send_request(pid, "die"), 5000)
      return t, tostring(e[1]), e[2] == pid
    end, holder)})
  end)

  it("raises on a request that cannot be sent, leaving no monitor", function()
    assert.same({false, true, "timeout"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local ok = pcall(gs.send_request, pid, {"echo", print})
      gs.stop(pid)
      -- no 'DOWN' of a monitor made for the request came with the stop
      return ok, not mb.is_alive(pid), select(2, mb.receive(0))
    end, holder)})
  end)
end)

describe("gen_server.wait_response", function()
  it("keeps the request on timeout, so that its reply can be waited for again", function()
    assert.same({"timeout", "reply", "released"}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local req = gs.send_request(pid, "hold")
      local first = gs.wait_response(req, 0)
      gs.cast(pid, "release")
      local t, v = gs.wait_response(req, 5000)
      gs.stop(pid)
      return first, t, v
    end, holder)})
  end)

  it("refuses a timeout that is not milliseconds or infinity", function()
    assert.is_truthy(in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local req = gs.send_request(pid, {"echo", 1})
      local ok, err = pcall(gs.wait_response, req, -1)
      assert(gs.wait_response(req, "infinity") == "reply")
      gs.stop(pid)
      return not ok and tostring(err):match("bad argument #2 to 'wait_response'")
    end, holder))
  end)
end)

describe("gen_server.receive_response", function()
  it("abandons the request on timeout: a late reply is dropped", function()
    assert.same({"timeout", 1, "timeout"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local req = gs.send_request(pid, "hold")
      local first = gs.receive_response(req, 0)
      -- the server still holds the request; it replies when released,
      -- before it answers the call that follows
      local held = gs.call(pid, "count")
      gs.cast(pid, "release")
      gs.call(pid, {"echo", "sync"})
      gs.stop(pid)
      return first, held, select(2, mb.receive(0))
    end, holder)})
  end)
end)

describe("gen_server.check_response", function()
  it("tells the response to a request from other messages", function()
    assert.same({"no_reply", "no_reply", "reply", "checked", "timeout"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      mb.send(mb.self(), "not a reply")
      local req = gs.send_request(pid, {"echo", "checked"})
      gs.send_request(pid, {"echo", "other"})
      gs.call(pid, {"echo", "sync"}) -- both replies are queued now
      local a = gs.check_response(mb.receive(0), req)
      local t, v = gs.check_response(mb.receive(0), req)
      local b = gs.check_response(mb.receive(0), req) -- the reply to the other
      local empty = select(2, mb.receive(0))
      gs.stop(pid)
      return a, b, t, v, empty
    end, holder)})
  end)
end)

describe("gen_server request id collections", function()
  it("collects requests under labels and answers each once, then no_request", function()
    assert.same({3, "a=1 b=2 c=3", "no_request", 0}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local coll = gs.reqids_new()
      for i, label in ipairs({"a", "b", "c"}) do
        coll = gs.send_request(pid, {"echo", i}, label, coll)
      end
      local size = gs.reqids_size(coll)
      local got = {}
      for _ = 1, 3 do
        local t, v, label
        t, v, label, coll = gs.receive_response(coll, 5000, true)
        assert(t == "reply")
        got[#got + 1] = label .. "=" .. v
      end
      table.sort(got)
      local last = gs.receive_response(coll, 5000, true)
      gs.stop(pid)
      return size, table.concat(got, " "), last, gs.reqids_size(coll)
    end, holder)})
  end)

  it("keeps an answered request in the collection when delete is false", function()
    assert.same({"reply", "kept", "x", 1, "x"}, {in_process(function(cb)
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local coll = gs.reqids_add(gs.send_request(pid, {"echo", "kept"}), "x", gs.reqids_new())
      local t, v, label = gs.wait_response(coll, 5000, false)
      local list = gs.reqids_to_list(coll)
      gs.stop(pid)
      return t, v, label, #list, list[1][2]
    end, holder)})
  end)

  it("abandons every request of the collection when receive_response times out", function()
    assert.same({"timeout", "timeout"}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local coll = gs.reqids_new()
      coll = gs.send_request(pid, "hold", 1, coll)
      coll = gs.send_request(pid, "hold", 2, coll)
      local first = gs.receive_response(coll, 0, true)
      gs.cast(pid, "release")
      gs.call(pid, {"echo", "sync"})
      gs.stop(pid)
      return first, select(2, mb.receive(0))
    end, holder)})
  end)

  it("checks a message against the collection, and refuses an id added twice", function()
    assert.same({"no_reply", "reply", "c", "y", false}, {in_process(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb)
      local req = gs.send_request(pid, {"echo", "c"})
      local coll = gs.reqids_add(req, "y", gs.reqids_new())
      local twice = pcall(gs.reqids_add, req, "z", coll)
      gs.call(pid, {"echo", "sync"})
      local a = gs.check_response("other", coll, true)
      local t, v, label = gs.check_response(mb.receive(0), coll, true)
      gs.stop(pid)
      return a, t, v, label, twice
    end, holder)})
  end)
end)
