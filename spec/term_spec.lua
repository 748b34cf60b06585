-- moonbeam.term: term_to_binary and binary_to_term, checked against bytes
-- that OTP's term_to_binary writes, and against malformed input.
local mb = require "moonbeam"
local term = require "moonbeam.term"
local A = mb.atom
-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("moonbeam.term", function()
  it("writes what OTP's term_to_binary writes", function()
    -- term_to_binary({ok, [1,2,3], <<"x">>}) in OTP 25
    assert.equal("\131h\3w\2okk\0\3\1\2\3m\0\0\0\1x",
                 term.term_to_binary(mb.tuple(A.ok, {1, 2, 3}, "x")))
    assert.equal("\131j", term.term_to_binary({}))
    assert.equal("\131b\255\255\255\255", term.term_to_binary(-1))
  end)

  it("reads back tuples, lists, maps, numbers, strings and atoms", function()
    local v = mb.tuple(A.chat, {1, 2.5, "text", mb.tuple()},
                       mb.map{[A.name] = "moon", count = 3}, false, nil)
    local back = term.binary_to_term(term.term_to_binary(v))
    assert.equal("tuple", mb.typeof(back))
    assert.equal(5, back.n)
    assert.equal(A.chat, back[1])
    assert.equal("list", mb.typeof(back[2]))
    assert.same({1, 2.5, "text"}, {back[2][1], back[2][2], back[2][3]})
    assert.equal("tuple", mb.typeof(back[2][4]))
    assert.equal("moon", back[3][A.name])
    assert.equal(3, back[3].count)
    assert.is_false(back[4])
    assert.is_nil(back[5])
  end)

  it("reads a pid and a ref as the same pid and ref", function()
    assert.is_true(mb.run(function()
      local mb = require "moonbeam"
      local term = require "moonbeam.term"
      local me, r = mb.self(), mb.make_ref()
      local back = term.binary_to_term(term.term_to_binary(mb.tuple(me, r)))
      return back[1] == me and back[2] == r
    end))
  end)

  it("raises for a value that has no term, naming where it is", function()
    assert.has_error(function() term.term_to_binary({f = print}) end,
                     "term_to_binary: cannot send a function to another node at term.f")
  end)

  it("returns nil and a reason for bytes that are not one whole term", function()
    for _, bad in ipairs({"", "x", "\131", "\131h\3w\2ok", "\131jj",
                          "\131m\255\255\255\255", "\131l\0\0\0\5j",
                          "\131t\255\255\255\255"}) do
      local v, why = term.binary_to_term(bad)
      assert.is_nil(v)
      assert.is_string(why)
      assert.truthy(why:find("malformed external term", 1, true), why)
    end
  end)

  it("never raises on random or damaged input", function()
    local good = term.term_to_binary(mb.tuple(A.ok, {1, {2, "x"}},
                                              mb.map{a = 1.5}))
    math.randomseed(14)
    for _ = 1, 20000 do
      local b = {}
      for i = 1, #good do
        b[i] = math.random(8) == 1 and string.char(math.random(0, 255))
               or good:sub(i, i)
      end
      local s = table.concat(b):sub(1, math.random(#good))
      local ok, v, why = pcall(term.binary_to_term, s)
      assert(ok, v)
      assert(v ~= nil or why == nil or type(why) == "string")
    end
  end)

  it("with safe, refuses an atom this node does not know and makes none", function()
    local name = "never_seen_atom_" .. tostring(os.time())
    local bytes = "\131w" .. string.char(#name) .. name
    local v, why = term.binary_to_term(bytes, "safe")
    assert.is_nil(v)
    assert.truthy(why:find("does not know", 1, true), why)
    assert.is_nil((term.binary_to_term(bytes, {"safe"})))
    -- known atoms pass; without safe the atom is made
    assert.equal(A.ok, term.binary_to_term("\131w\2ok", {safe = true}))
    assert.equal(name, tostring(term.binary_to_term(bytes)))
    assert.equal(name, tostring(term.binary_to_term(bytes, "safe")))
  end)

  it("raises for an unknown option", function()
    assert.has_error(function() term.binary_to_term("\131j", "unsafe") end)
    assert.has_error(function() term.binary_to_term("\131j", {"used"}) end)
  end)
end)
