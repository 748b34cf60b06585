local mb = require "moonbeam"

-- Send `value` to a fresh process that sends it back; return the copy.
local function echo(value)
  return mb.run(function(v)
    local mb = require "moonbeam"
    local me = mb.self()
    local p = mb.spawn(function() local m = mb.receive(); mb.send(m[1], m[2]) end)
    mb.send(p, {me, v})
    return mb.receive(2000)
  end, value)
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("send", function()
  it("copies nil, booleans and numbers, keeping integer and float subtypes", function()
    assert.is_nil(echo(nil))
    assert.is_true(echo(true))
    assert.is_false(echo(false))
    assert.equal(math.type(7), math.type(echo(7)))
    assert.equal("float", math.type(echo(7.0)))
    assert.equal(math.maxinteger, echo(math.maxinteger))
    assert.equal(math.mininteger, echo(math.mininteger))
    assert.equal(-3.5, echo(-3.5))
    assert.equal(1/0, echo(1/0))
    local nan = echo(0/0)
    assert.is_true(nan ~= nan)
  end)

  it("copies strings byte for byte", function()
    local s = "a\0b\255\n" .. string.rep("x", 100000)
    assert.equal(s, echo(s))
    assert.equal("", echo(""))
  end)

  it("copies nested tables with any keys", function()
    local t = {1, 2, {3, {4}}, name = "n", [true] = "t", [2.5] = "f", [{}] = nil, nested = {a = {b = {c = 1}}}}
    assert.same(t, echo(t))
  end)

  it("copies a linked list of 100,000 nodes, and names the path past the nesting limit", function()
    assert.same({100000, true}, {mb.run(function()
      local mb = require "moonbeam"
      local list
      for i = 100000, 1, -1 do list = {value = i, next = list} end
      local me = mb.self()
      mb.send(me, list)
      local got, n, ordered = mb.receive(5000), 0, true
      while got do
        n = n + 1
        ordered = ordered and got.value == n
        got = got.next
      end
      local deep = {}
      for _ = 1, 200000 do deep = {deep} end -- one level past the limit
      local ok, err = pcall(mb.send, me, {x = deep})
      return ordered and n, not ok and err:find("nested more than 200000 levels deep at msg.x[1][1]", 1, true) ~= nil
    end)})
  end)

  it("copies tables with holes", function()
    local t = {1, nil, 3, [10] = 10}
    assert.same(t, echo(t))
  end)

  it("keeps shared sub-tables shared and cycles intact", function()
    local same, cyc = mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local shared = {x = 1}
      local t = {a = shared, b = shared}
      t.self = t
      local p = mb.spawn(function() local m = mb.receive(); mb.send(m[1], m[2]) end)
      mb.send(p, {me, t})
      local c = mb.receive(2000)
      return c.a == c.b and c.a ~= shared, c.self == c
    end)
    assert.is_true(same)
    assert.is_true(cyc)
  end)

  it("copies tuples, lists, maps and atoms with their markers", function()
    assert.same({"tuple", "list", "map", "atom", 3, "ok"}, {mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local v = {mb.tuple(1, nil, 3), mb.list("a"), mb.map{k = 1}, mb.atom("ok")}
      mb.send(me, v)
      local c = mb.receive(1000)
      return mb.typeof(c[1]), mb.typeof(c[2]), mb.typeof(c[3]), mb.typeof(c[4]), c[1].n, tostring(c[4])
    end)})
  end)

  it("copies pids and refs so that they stay equal", function()
    assert.same({true, true}, {mb.run(function()
      local mb = require "moonbeam"
      local me, ref = mb.self(), mb.make_ref()
      mb.send(me, {me, ref})
      local c = mb.receive(1000)
      return c[1] == me, c[2] == ref
    end)})
  end)

  it("copies functions with their upvalues", function()
    assert.equal(42, mb.run(function()
      local mb = require "moonbeam"
      local k = 40
      local function add(x) return x + k end
      mb.send(mb.self(), add)
      local f = mb.receive(1000)
      return f(2)
    end))
  end)

  it("drops metatables other than moonbeam's markers", function()
    assert.is_nil(mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), setmetatable({}, {__index = function() return 1 end}))
      return getmetatable(mb.receive(1000))
    end))
  end)

  it("raises in the sender with the path to an unsendable value, and sends nothing", function()
    local err, left = mb.run(function()
      local mb = require "moonbeam"
      local msg = {handlers = {function() end, coroutine.create(print)}}
      local ok, err = pcall(mb.send, mb.self(), msg)
      return err, select(2, mb.receive(0))
    end)
    assert.matches("cannot send a coroutine at msg.handlers[2]", err, 1, true)
    assert.equal("timeout", left)
  end)

  it("names C functions, foreign userdata and bad keys in its errors", function()
    local e1, e2, e3 = mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local _, e1 = pcall(mb.send, me, {f = print})
      local _, e2 = pcall(mb.send, me, {io.stdout})
      local _, e3 = pcall(mb.send, me, {[coroutine.create(print)] = 1})
      return e1, e2, e3
    end)
    assert.matches("cannot send a C function .* at msg.f", e1)
    assert.matches("cannot send a userdata at msg[1]", e2, 1, true)
    assert.matches("cannot send a coroutine used as a key at msg", e3, 1, true)
  end)

  it("refuses a destination that is not a pid", function()
    local ok, err = pcall(mb.send, {}, "x")
    assert.is_false(ok)
    assert.matches("bad argument #1 to '[%w.]*send' %(pid or registered name expected, got table%)", err)
  end)

  it("drops messages to a dead process silently", function()
    assert.is_true(mb.run(function()
      local mb = require "moonbeam"
      local p, down = mb.spawn_monitor(function() end)
      mb.receive(function(m) return m[2] == down end, 5000) -- it has ended
      mb.send(p, "lost")
      return true
    end))
  end)

  it("delivers messages from one process to another in the order sent", function()
    assert.is_true(mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local n = 10000
      for s = 1, 4 do
        mb.spawn(function() for i = 1, n do mb.send(me, {s, i}) end end)
      end
      local last = {0, 0, 0, 0}
      for _ = 1, 4 * n do
        local m = mb.receive(5000)
        if m[2] ~= last[m[1]] + 1 then return false end
        last[m[1]] = m[2]
      end
      return true
    end))
  end)

  it("does not let a sender with a huge message stop the node", function()
    assert.equal(10 * 1024 * 1024, mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), string.rep("z", 10 * 1024 * 1024))
      return #mb.receive(5000)
    end))
  end)
end)

describe("receive", function()
  it("returns the first message", function()
    assert.same({"a", "b"}, {mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), "a")
      mb.send(mb.self(), "b")
      return mb.receive(), mb.receive()
    end)})
  end)

  it("picks the first matching message and leaves the others queued in order", function()
    assert.same({3, 1, 2, 4}, {mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      for i = 1, 4 do mb.send(me, i) end
      local three = mb.receive(function(m) return m == 3 end, 1000)
      return three, mb.receive(0), mb.receive(0), mb.receive(0)
    end)})
  end)

  it("waits for a matching message that arrives later", function()
    assert.same({"wanted", "other"}, {mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      mb.send(me, "other")
      mb.spawn(function() mb.sleep(20); mb.send(me, "wanted") end)
      return mb.receive(function(m) return m == "wanted" end, 2000), mb.receive(0)
    end)})
  end)

  it("times out with nil, 'timeout' and leaves non-matching messages", function()
    assert.same({nil, "timeout", "x"}, {mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), "x")
      local a, b = mb.receive(function() return false end, 30)
      return a, b, mb.receive(0)
    end)})
  end)

  it("polls with a timeout of 0", function()
    assert.same({nil, "timeout"}, {mb.run(function()
      local mb = require "moonbeam"
      return mb.receive(0)
    end)})
  end)

  it("tells a nil message from a timeout by the second value", function()
    assert.equal(1, mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), nil)
      return select("#", mb.receive(0))
    end))
  end)

  it("rejects a negative timeout", function()
    local ok, err = pcall(mb.run, function()
      local mb = require "moonbeam"
      return mb.receive(-1)
    end)
    assert.is_false(ok)
    assert.matches("timeout must not be negative", err)
  end)

  it("keeps a message when the matcher raises", function()
    assert.same({false, "kept"}, {mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), "kept")
      local ok = pcall(mb.receive, function() error("bad matcher") end, 0)
      return ok, mb.receive(0)
    end)})
  end)

  it("cannot be called outside a process", function()
    local ok, err = pcall(mb.receive, 0)
    assert.is_false(ok)
    assert.matches("not called inside a moonbeam process", err)
  end)
end)

describe("timers", function()
  it("sleep suspends the process and keeps its messages", function()
    assert.equal("kept", mb.run(function()
      local mb = require "moonbeam"
      mb.send(mb.self(), "kept")
      mb.sleep(20)
      return mb.receive(0)
    end))
  end)

  it("send_after delivers a message later", function()
    assert.same({"timeout", "tick"}, {mb.run(function()
      local mb = require "moonbeam"
      mb.send_after(50, mb.self(), "tick")
      local _, early = mb.receive(0)
      return early, mb.receive(2000)
    end)})
  end)

  it("cancel_timer stops a pending timer and returns the time left", function()
    local left, got, again = mb.run(function()
      local mb = require "moonbeam"
      local t = mb.send_after(500, mb.self(), "never")
      local left = mb.cancel_timer(t)
      local _, got = mb.receive(700)
      return left, got, mb.cancel_timer(t)
    end)
    assert.is_true(left > 0 and left <= 500)
    assert.equal("timeout", got)
    assert.is_false(again)
  end)

  it("send_after to a name looks the name up when the timer fires", function()
    assert.equal("late", mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      mb.send_after(50, "late_comer", "late")
      local p = mb.spawn(function() mb.send(me, mb.receive(2000)) end)
      mb.register("late_comer", p)
      return mb.receive(2000)
    end))
  end)

  it("cancel_timer returns false for a timer that already fired", function()
    assert.same({"tick", false}, {mb.run(function()
      local mb = require "moonbeam"
      local t = mb.send_after(1, mb.self(), "tick")
      return mb.receive(1000), mb.cancel_timer(t)
    end)})
  end)
end)

describe("whereis", function()
  it("looks a string up without making it an atom, and gives nil for no process", function()
    local before, after, n, found, gone = mb.run(function()
      local mb = require "moonbeam"
      local before = mb.statistics().atoms
      local misses = 0
      for i = 1, 1000 do
        local p = mb.whereis(("whereis_probe_%d_%d"):format(i, math.random(1e9)))
        if p == nil then misses = misses + 1 end
      end
      local after = mb.statistics().atoms
      local p = mb.spawn(function() mb.receive() end)
      mb.register("whereis_named", p)
      local found = mb.whereis("whereis_named") == p and mb.whereis(mb.atom.whereis_named) == p
      mb.exit(p, "kill")
      local ref = mb.monitor(p)
      mb.receive(function(m) return m[2] == ref end, 2000)
      return before, after, select("#", mb.whereis("nobody_by_this_name")), found,
        mb.whereis("whereis_named")
    end)
    assert.equal(before, after)
    assert.equal(1, n)
    assert.is_true(found)
    assert.is_nil(gone)
  end)
end)
