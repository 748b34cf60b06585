-- gen_server.multi_call and abcast, as OTP documents them: a locally
-- registered name called or cast on many nodes at once, on this node and
-- against a real Erlang peer on 127.0.0.1 (its net_kernel is a
-- gen_server).  Every OS process a spec starts is stopped by its pid, and
-- temp files are removed.
local mb = require "moonbeam"

local NODE = require("spec.dist_node").start("mbspec")
local COOKIE = NODE.cookie
local P = require("spec.peer_helper").new{epmd_port = NODE.epmd_port}
local have_erl = P.have_erl
local PEER = "gmulti1@127.0.0.1"

local run = function(fn, ...) return mb.run(fn, ...) end

-- A server that answers a call with its node's name and reports casts
-- to whoever asked with {"watch", pid}.
local named = {
  init = function() return "ok", false end,
  handle_call = function(req, _, watcher)
    if req == "node" then return "reply", tostring(require("moonbeam").node()), watcher end
    if req == "slow" then return "noreply", watcher end
    return "reply", req, watcher
  end,
  handle_cast = function(msg, watcher)
    local mb = require "moonbeam"
    if type(msg) == "table" and msg[1] == "watch" then return "noreply", msg[2] end
    if watcher then mb.send(watcher, msg) end
    return "noreply", watcher
  end,
}

teardown(P.stop_all)

describe("gen_server.multi_call", function()
  it("calls the name on each node and lists the nodes without a reply as bad", function()
    assert.same({1, NODE.name, NODE.name, 1, "nosuch@127.0.0.1"}, {run(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, nil, {name = "multi_here"})
      local replies, bad = gs.multi_call({mb.node(), "nosuch@127.0.0.1"}, "multi_here", "node", 5000)
      gs.stop(pid)
      return #replies, tostring(replies[1][1]), replies[1][2], #bad, tostring(bad[1])
    end, named)})
  end)

  it("calls this node and the connected ones when no nodes are given", function()
    assert.same({"multi_default", 0}, {run(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, nil, {name = "multi_default"})
      local replies, bad = gs.multi_call("multi_default", "multi_default")
      gs.stop(pid)
      -- this node replied; a connected node without the name is bad
      local mine
      for _, r in ipairs(replies) do if r[1] == mb.node() then mine = r[2] end end
      return mine, #replies - 1
    end, named)})
  end)

  it("counts a node whose server has no such name, or does not reply in time, as bad", function()
    assert.same({0, 1, 0, 1, "timeout"}, {run(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local r1, b1 = gs.multi_call({mb.node()}, "multi_nobody", "node", 5000)
      local pid = gs.start_link(cb, nil, {name = "multi_slow"})
      local r2, b2 = gs.multi_call({mb.node()}, "multi_slow", "slow", 0)
      gs.stop(pid)
      -- the abandoned request left nothing in the mailbox
      return #r1, #b1, #r2, #b2, select(2, mb.receive(0))
    end, named)})
  end)

  it("calls a gen_server of an Erlang node by its registered name", function()
    if not have_erl then pending("erl is not installed") return end
    P.spawn_os(P.peer(("erl -name %s -setcookie %s -noshell"):format(PEER, COOKIE)),
      P.tmp .. "/gmulti1.log")
    assert.same({"pong", 2, "yes", "yes", 0}, {run(function(peer)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      local gs = require "moonbeam.gen_server"
      local up
      for _ = 1, 100 do
        up = dist.ping(peer, 1000)
        if up == "pong" then break end
        mb.sleep(100)
      end
      local replies, bad = gs.multi_call({mb.node(), peer}, "net_kernel",
        mb.tuple(mb.atom.is_auth, mb.node()), 10000)
      local got = {}
      for _, r in ipairs(replies) do got[tostring(r[1])] = tostring(r[2]) end
      return up, #replies, got[tostring(mb.node())], got[peer], #bad
    end, PEER)})
  end)
end)

describe("gen_server.abcast", function()
  it("casts to the name on each node and never fails", function()
    assert.same({"hello", "timeout"}, {run(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, nil, {name = "abcast_here"})
      gs.cast(pid, {"watch", mb.self()})
      gs.abcast({mb.node(), "nosuch@127.0.0.1"}, "abcast_here", "hello")
      gs.abcast({mb.node()}, "abcast_nobody", "lost")
      local got = mb.receive(5000)
      gs.call(pid, "sync")
      gs.stop(pid)
      return got, select(2, mb.receive(0))
    end, named)})
  end)

  it("casts to this node when no nodes are given", function()
    assert.equal("default", run(function(cb)
      local mb = require "moonbeam"
      local gs = require "moonbeam.gen_server"
      local pid = gs.start_link(cb, nil, {name = "abcast_default"})
      gs.cast(pid, {"watch", mb.self()})
      gs.abcast("abcast_default", "default")
      local got = mb.receive(5000)
      gs.stop(pid)
      return got
    end, named))
  end)
end)
