local mb = require "moonbeam"
local P = require "moonbeam.pattern"
local A = mb.atom

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("pattern.match", function()
  it("matches number, string, atom, boolean and nil literals", function()
    assert.same({}, P.match("42", 42))
    assert.same({}, P.match("-1.5", -1.5))
    assert.same({}, P.match('"a \\"b\\"\\n"', 'a "b"\n'))
    assert.same({}, P.match("ok", A.ok))
    assert.same({}, P.match(":ok", A.ok))
    assert.same({}, P.match("'EXIT'", A.EXIT))
    assert.same({}, P.match("true", true))
    assert.same({}, P.match("false", false))
    assert.same({}, P.match("nil", nil))
    assert.is_nil(P.match("42", 43))
    assert.is_nil(P.match("ok", "ok"))
    assert.is_nil(P.match("false", nil))
  end)

  it("binds variables and ignores the wildcard", function()
    assert.same({From = "me", Rest = 3}, P.match("{From, _, Rest}", mb.tuple("me", 2, 3)))
    assert.same({}, P.match("_", {anything = true}))
  end)

  it("requires a repeated variable to match equal values", function()
    assert.same({X = 1}, P.match("{X, X}", mb.tuple(1, 1)))
    assert.is_nil(P.match("{X, X}", mb.tuple(1, 2)))
    assert.same({X = {1, {2}}}, P.match("[X, X]", {{1, {2}}, {1, {2}}}))
  end)

  it("matches tuples of exactly their size, marked or plain", function()
    assert.same({V = 5}, P.match("{ok, V}", mb.tuple(A.ok, 5)))
    assert.same({V = 5}, P.match("{ok, V}", {A.ok, 5}))
    assert.is_nil(P.match("{ok, V}", mb.tuple(A.ok, 5, 6)))
    assert.is_nil(P.match("{ok, V}", mb.list(A.ok, 5)))
    assert.same({V = 1}, P.match("{V, nil}", mb.tuple(1, nil)))
  end)

  it("matches lists with a tail", function()
    local b = P.match("[H | T]", {1, 2, 3})
    assert.equal(1, b.H)
    assert.equal("list", mb.typeof(b.T))
    assert.same({2, 3}, {b.T[1], b.T[2]})
    assert.same({A = 1, B = 2}, P.match("[A, B]", mb.list(1, 2)))
    assert.is_nil(P.match("[A, B]", {1, 2, 3}))
    assert.is_nil(P.match("[A | T]", {}))
    assert.is_nil(P.match("[A]", mb.tuple(1)))
  end)

  it("matches maps by chosen keys, leaving other keys alone", function()
    assert.same({N = "bob"}, P.match("#{name => N}", {[A.name] = "bob", age = 3}))
    assert.same({N = "bob"}, P.match('%{"name" => N}', {name = "bob"}))
    assert.same({N = "bob", Age = 3}, P.match("{name = N, age = Age}", {name = "bob", age = 3}))
    assert.is_nil(P.match("{name = N}", {nom = "bob"}))
    assert.same({V = "x"}, P.match("#{1 => V}", {"x"}))
  end)

  it("matches nested patterns", function()
    local msg = mb.tuple(A.call, mb.tuple(mb.self and "pid", "ref"), {op = "get", keys = {"a", "b"}})
    assert.same({From = "pid", Key = "a"},
      P.match('{call, {From, _}, {op = "get", keys = [Key | _]}}', msg))
  end)

  it("pins values given from Lua", function()
    assert.same({V = 9}, P.match("{reply, ^ref, V}", mb.tuple(A.reply, "r1", 9), {ref = "r1"}))
    assert.is_nil(P.match("{reply, ^ref, V}", mb.tuple(A.reply, "r2", 9), {ref = "r1"}))
  end)

  it("accepts the table form and plain functions with the same semantics", function()
    local form = P.tuple(A.ok, P.var("V"), P.any)
    assert.same({V = 1}, P.match(form, mb.tuple(A.ok, 1, 2)))
    assert.is_nil(P.match(form, mb.tuple(A.error, 1, 2)))
    assert.same({H = 1}, P.match(P.list({P.var("H")}, P.any), {1, 2}))
    assert.same({N = 1}, P.match(P.map{n = P.var("N")}, {n = 1}))
    assert.same({R = 1}, P.match(P.tuple(P.pin("r"), P.var("R")), {"x", 1}, {r = "x"}))
    local even = function(v) return type(v) == "number" and v % 2 == 0 and {Even = v} end
    assert.same({Even = 4}, P.match(even, 4))
    assert.is_nil(P.match(even, 3))
    assert.same({E = 2}, P.match(P.tuple(P.var("E"), function(v) return v == "x" end), {2, "x"}))
  end)

  it("keeps no bindings from a match that raised", function()
    assert.is_false(pcall(P.match, "{X, ^r}", {1, "a"}))
    assert.same({X = 2}, P.match("{X, ^r}", {2, "a"}, {r = "a"}))
  end)

  it("raises for a pin with no value, and reads decimal escapes as Lua does", function()
    local ok, err = pcall(P.match, "{^Ref}", {1}, {})
    assert.is_false(ok)
    assert.matches("no value was given for it", err)
    assert.same({}, P.match('"\\065\\0"', "A\0"))
  end)

  it("compiles a pattern string once", function()
    assert.equal(P.compile("{a, B}"), P.compile("{a, B}"))
  end)

  it("points at the column and says what was expected on a syntax error", function()
    local cases = {
      {"{ok, ", "column 6.*expected a pattern at the end"},
      {"{ok V}", "column 5.*expected .*','"},
      {"[1, 2 |]", "column 8.*expected a pattern before ']'"},
      {"#{a => }", "column 8.*expected a pattern"},
      {"@", "column 1.*expected a pattern before '@'"},
      {"{a} x", "column 5.*expected the end of the pattern"},
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(P.match, c[1], 1)
      assert.is_false(ok)
      assert.matches(c[2], err)
    end
  end)
end)

describe("receive with clauses", function()
  local function in_process(fn) return mb.run(fn) end

  it("takes the first message that matches any clause, leaving the others in order", function()
    assert.same({3, "one", "two"}, {in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      local me = mb.self()
      mb.send(me, "one")
      mb.send(me, mb.tuple(mb.atom.add, 1, 2))
      mb.send(me, "two")
      local sum = receive {
        {"{add, A, B}", function(b) return b.A + b.B end},
      }
      return sum, mb.receive(0), mb.receive(0)
    end)})
  end)

  it("tries clauses in order for each message, oldest message first", function()
    assert.same({"second-clause", 2}, {in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      local me = mb.self()
      mb.send(me, {n = 1})
      mb.send(me, {n = 2})
      -- the second clause matches the oldest message: it wins over the
      -- first clause's match of a younger one
      local a = receive {
        {"{n = 2}", function() return "first-clause" end},
        {"{n = 1}", function() return "second-clause" end},
      }
      local b = receive { {"{n = N}", function(b) return b.N end} }
      return a, b
    end)})
  end)

  it("applies guards, and a guard that raises does not match", function()
    assert.same({"big", "small"}, {in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      local me = mb.self()
      mb.send(me, 5)
      mb.send(me, 50)
      local clauses = {
        {"N", when = function(b) return b.N.bad.field end, function() return "boom" end},
        {"N", when = function(b) return b.N > 10 end, function() return "big" end},
      }
      local first = receive(clauses)
      local second = receive { {"N", function() return "small" end} }
      return first, second
    end)})
  end)

  it("runs the after clause when nothing matches in time, leaving the mailbox as it was", function()
    assert.same({"timed out", "x"}, {in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      mb.send(mb.self(), "x")
      local r = receive {
        {"{never, _}", function() return "no" end},
        after = {30, function() return "timed out" end},
      }
      return r, mb.receive(0)
    end)})
  end)

  it("returns nil, 'timeout' for a bare after, and bindings and message without a handler", function()
    local a, why, b, msg = in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      local a, why = receive { {"{x}"}, after = 0 }
      mb.send(mb.self(), {"y"})
      local b, msg = receive { {"{Y}"} }
      return a, why, b, msg
    end)
    assert.is_nil(a)
    assert.equal("timeout", why)
    assert.same({Y = "y"}, b)
    assert.same({"y"}, msg)
  end)

  it("waits for a message that arrives later and matches a pinned ref", function()
    assert.equal(42, in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      local me, ref = mb.self(), mb.make_ref()
      mb.send(me, mb.tuple(mb.atom.reply, mb.make_ref(), 0))
      mb.spawn(function() mb.sleep(10) mb.send(me, mb.tuple(mb.atom.reply, ref, 42)) end)
      return receive {
        {"{reply, ^Ref, V}", function(b) return b.V end},
        pins = {Ref = ref},
        after = 5000,
      }
    end))
  end)

  it("matches 'EXIT' and 'DOWN' system messages", function()
    assert.same({"exit", "down"}, {in_process(function()
      local mb = require "moonbeam"
      local receive = require "moonbeam.receive"
      mb.trap_exit(true)
      mb.spawn_link(function() mb.exit("bye") end)
      local e = receive { {"{'EXIT', _Pid, \"bye\"}", function() return "exit" end}, after = 5000 }
      mb.spawn_monitor(function() end)
      local d = receive { {"{'DOWN', _Ref, process, _Pid, normal}", function() return "down" end}, after = 5000 }
      return e, d
    end)})
  end)
end)
