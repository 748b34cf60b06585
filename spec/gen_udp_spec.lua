-- gen_udp: datagrams to and from processes, on 127.0.0.1 and ports the
-- kernel picks.  Each example runs in a process of its own and leaves no
-- process behind.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("gen_udp", function()
  it("delivers {udp, Sock, Address, Port, Data} to the owner in active mode", function()
    assert.same({"udp", true, "127.0.0.1", true, "ping"}, {in_process(function()
      local mb = require "moonbeam"
      local gen_udp = require "moonbeam.gen_udp"
      local a = assert(gen_udp.open(0, {ip = "127.0.0.1"}))
      local b = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
      assert(gen_udp.send(b, "127.0.0.1", gen_udp.port(a), "ping"))
      local m = mb.receive(5000)
      return tostring(m[1]), m[2] == a, m[3], m[4] == gen_udp.port(b), m[5]
    end)})
  end)

  it("takes datagrams one at a time with recv in passive mode, and times out", function()
    assert.same({"one", "two", "nil", "timeout"}, {in_process(function()
      local gen_udp = require "moonbeam.gen_udp"
      local a = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
      local b = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
      gen_udp.send(b, "127.0.0.1", gen_udp.port(a), "one")
      gen_udp.send(b, "127.0.0.1", gen_udp.port(a), "two")
      local _, _, d1 = gen_udp.recv(a, 0, 5000)
      local _, _, d2 = gen_udp.recv(a, 0, 5000)
      local none, why = gen_udp.recv(a, 0, 50)
      return d1, d2, tostring(none), tostring(why)
    end)})
  end)

  it("stops after one datagram with active once; the rest wait for recv", function()
    assert.same({"x", 0, "y"}, {in_process(function()
      local mb = require "moonbeam"
      local gen_udp = require "moonbeam.gen_udp"
      local a = assert(gen_udp.open(0, {ip = "127.0.0.1", active = "once"}))
      local b = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
      gen_udp.send(b, "127.0.0.1", gen_udp.port(a), "x")
      gen_udp.send(b, "127.0.0.1", gen_udp.port(a), "y")
      local m = mb.receive(5000)
      local queued = mb.process_info(mb.self()).message_queue_len
      local _, _, d = gen_udp.recv(a, 0, 5000)
      return m[5], queued, d
    end)})
  end)

  it("sends {udp_passive, Sock} when an {active, N} count is spent", function()
    assert.same({"udp", "udp", "udp_passive"}, {in_process(function()
      local mb = require "moonbeam"
      local gen_udp = require "moonbeam.gen_udp"
      local a = assert(gen_udp.open(0, {ip = "127.0.0.1", active = 2}))
      local b = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
      for i = 1, 3 do gen_udp.send(b, "127.0.0.1", gen_udp.port(a), tostring(i)) end
      local t = {}
      for i = 1, 3 do t[i] = tostring(mb.receive(5000)[1]) end
      return t[1], t[2], t[3]
    end)})
  end)

  it("closes a socket when its owner ends: its port is free again", function()
    assert.same(true, in_process(function()
      local mb = require "moonbeam"
      local gen_udp = require "moonbeam.gen_udp"
      local me = mb.self()
      local owner, ref = mb.spawn_monitor(function()
        local s = assert(gen_udp.open(0, {ip = "127.0.0.1"}))
        mb.send(me, gen_udp.port(s))
        mb.receive()
      end)
      local port = mb.receive(5000)
      mb.exit(owner, "kill")
      mb.receive(function(m) return m[2] == ref end, 5000)
      -- The owner's exit queued the close on the I/O loop before its DOWN
      -- was sent, so this open comes after it.
      local s, why = gen_udp.open(port, {ip = "127.0.0.1"})
      if not s then return tostring(why) end
      gen_udp.close(s)
      return true
    end))
  end)

  it("raises on a datagram too large", function()
    assert.is_false(in_process(function()
      local gen_udp = require "moonbeam.gen_udp"
      local s = assert(gen_udp.open(0, {ip = "127.0.0.1"}))
      return (pcall(gen_udp.send, s, "127.0.0.1", 9, ("x"):rep(70000)))
    end))
  end)

  it("sends to a host name, resolved off the schedulers, and answers nxdomain for none", function()
    assert.same({true, "127.0.0.1", "by name", "nxdomain"}, {in_process(function()
      local gen_udp = require "moonbeam.gen_udp"
      local a = assert(gen_udp.open(0, {ip = "127.0.0.1", active = false}))
      local b = assert(gen_udp.open(0, {ip = "127.0.0.1"}))
      local ok = gen_udp.send(b, "localhost", gen_udp.port(a), "by name")
      local ip, _, data = gen_udp.recv(a, 0, 5000)
      local _, why = gen_udp.send(b, "no-such-host.invalid", 9, "x")
      return ok, ip, data, tostring(why)
    end)})
  end)
  it("joins a multicast group and hears datagrams sent to it on the loopback", function()
    assert.same({"to the group", "127.0.0.1"}, {in_process(function()
      local gen_udp = require "moonbeam.gen_udp"
      local group = "239.255.77.77"
      local member = assert(gen_udp.open(0, {active = false, reuseaddr = true,
        add_membership = {group, "127.0.0.1"}}))
      local sender = assert(gen_udp.open(0, {multicast_if = "127.0.0.1", multicast_ttl = 1,
        multicast_loop = true}))
      assert(gen_udp.send(sender, group, gen_udp.port(member), "to the group"))
      local ip, _, data = gen_udp.recv(member, 0, 5000)
      return data, ip
    end)})
  end)

  it("refuses a multicast option that is not an IPv4 address", function()
    local ok, err = pcall(in_process, function()
      return require("moonbeam.gen_udp").open(0, {add_membership = {"not an address"}})
    end)
    assert.is_false(ok)
    assert.matches("bad option add_membership %(an IPv4 address as a string expected%)", tostring(err))
  end)
end)
