local mb = require "moonbeam"

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("a process", function()
  it("runs a function and hands its results to run()", function()
    assert.same({5, "x"}, {mb.run(function(a, b) return a + b, "x" end, 2, 3)})
  end)

  it("ends with its error and a traceback as reason when it raises", function()
    local ok, err = pcall(mb.run, function()
      local function inner() error("boom") end
      inner()
    end)
    assert.is_false(ok)
    assert.matches("process crashed: .*boom", err)
    assert.matches("stack traceback", err)
    assert.matches("inner", err)
  end)

  it("has its own globals", function()
    _G.shared_by_host = 1
    assert.is_nil(mb.run(function() return shared_by_host end))
    assert.same({nil, 2}, {mb.run(function()
      local mb = require "moonbeam"
      counter = 1
      local child = mb.spawn(function(parent)
        counter = (counter or 0) + 1
        mb.send(parent, counter)
      end, mb.self())
      return counter == 1 and nil, mb.receive(1000) + 1
    end)})
  end)

  it("started with a function gets its arguments and no global arg (a script's own)", function()
    assert.same({true, true, 7}, {mb.run(function(n)
      local mb = require "moonbeam"
      mb.spawn(function(parent, x) mb.send(parent, {rawget(_G, "arg") == nil, x}) end, mb.self(), n)
      local got = mb.receive(5000)
      return rawget(_G, "arg") == nil, got[1], got[2]
    end, 7)})
  end)

  it("gets its arguments as given: their count, nils in place, a table given twice as one", function()
    local t = {k = "v"}
    assert.same({6, 1, true, "x", true, true}, {mb.run(function(...)
      local n, a, b, u, x, v, c = select("#", ...), ...
      return n, a, b == nil and c == nil, x, u == v, u.k == "v"
    end, 1, nil, t, "x", t, nil)})
  end)

  it("refuses an argument it cannot copy, naming its place", function()
    local ok, err = pcall(mb.spawn, function() end, 1, {x = coroutine.create(print)})
    assert.is_false(ok)
    assert.matches("spawn: cannot send a coroutine at args[2].x", err, 1, true)
  end)

  it("gets the standard libraries on first use", function()
    assert.same({"HELLO", 3, "table"}, {mb.run(function()
      return string.upper("hello"), math.max(1, 3), type(table)
    end)})
    assert.equal("abc", mb.run(function() return ("ABC"):lower() end))
  end)

  it("gets each standard library from require, as the globals give it", function()
    assert.same({true, 10}, {mb.run(function()
      local names = {"os", "math", "table", "string", "io", "utf8", "coroutine", "debug",
                     "package", "_G"}
      local same = true
      for _, name in ipairs(names) do
        local lib = require(name)
        same = same and type(lib) == "table" and lib == _G[name] and lib == package.loaded[name]
      end
      return same, #names
    end)})
    assert.equal(os.getenv("HOME"), mb.run(function() return require("os").getenv("HOME") end))
  end)

  it("loads a module that requires the standard libraries it uses", function()
    assert.equal("MOON!!1", mb.run(function()
      package.path = "spec/fixtures/?.lua;" .. package.path
      return require("uses_stdlib").shout("moon")
    end))
  end)

  it("names moonbeam's own modules and their lines in tracebacks", function()
    local tb = mb.run(function()
      local gen_server = require "moonbeam.gen_server"
      local pid = gen_server.start({
        init = function() return "ok", nil end,
        handle_call = function(_, _, s) return "reply", debug.traceback(), s end,
      })
      local tb = gen_server.call(pid, "trace")
      gen_server.stop(pid)
      return tb
    end)
    assert.matches("moonbeam/gen_server_loop%.lua:%d+: in ", tb)
    assert.falsy(tb:find("<?:", 1, true), tb)
  end)

  it("says where it looked for a module it cannot find, each place once", function()
    local msg = mb.run(function()
      return select(2, pcall(require, "no_such_module_here"))
    end)
    assert.matches("module 'no_such_module_here' not found", msg)
    local seen, n = {}, 0
    for place in msg:gmatch("\n\t([^\n]+)") do
      assert.is_nil(seen[place], "listed twice: " .. place)
      seen[place] = true
      n = n + 1
    end
    assert.truthy(n > 2, msg)
  end)

  it("prints its pid Erlang-style, and equal pids are one value", function()
    local s, same, keyed = mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local t = {[me] = "me"}
      local child = mb.spawn(function(p) mb.send(p, mb.self()) end, me)
      local reported = mb.receive(1000)
      return tostring(me), reported == child, t[mb.self()]
    end)
    assert.matches("^<0%.%d+%.%d+>$", s)
    assert.is_true(same)
    assert.equal("me", keyed)
  end)


  it("orders and prints the pids and refs it makes, and refuses to order them with others", function()
    local r = mb.run(function()
      local mb = require "moonbeam"
      local a = mb.spawn(function() end)
      local b = mb.spawn(function() end)
      local r1, r2 = mb.make_ref(), mb.make_ref()
      local ok_pid, err_pid = pcall(function() return a < 1 end)
      local ok_ref, err_ref = pcall(function() return r1 <= {} end)
      return {a < b, b <= a, a <= a, r1 < r2, r2 < r1, r1 <= r1,
        tostring(r1), tostring(a), ok_pid, err_pid, ok_ref, err_ref,
        mb.typeof(a), mb.typeof(r1)}
    end)
    assert.same({true, false, true, true, false, true}, {table.unpack(r, 1, 6)})
    assert.matches("^#Ref<0%.%d+%.%d+%.0>$", r[7])
    assert.matches("^<0%.%d+%.%d+>$", r[8])
    assert.is_false(r[9])
    assert.matches("moonbeam%.pid expected", r[10])
    assert.is_false(r[11])
    assert.matches("moonbeam%.ref expected", r[12])
    assert.same({"pid", "ref"}, {r[13], r[14]})
  end)
  it("spawns a module function with arguments", function()
    assert.equal("HI!", mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      package.loaded["greeter"] = nil
      mb.spawn("spec_helper_greeter", "shout", me, "hi")
      return mb.receive(2000)
    end))
  end)

  it("crashes the new process, not the spawner, for a missing module or function", function()
    local alive_after, r1, r2 = mb.run(function()
      local mb = require "moonbeam"
      local a = mb.spawn("no_such_module_xyz", "f")
      local b = mb.spawn("spec_helper_greeter", "no_such_function")
      mb.sleep(50)
      return true, mb.is_alive(a), mb.is_alive(b)
    end)
    assert.is_true(alive_after)
    assert.is_false(r1)
    assert.is_false(r2)
  end)

  it("refuses to spawn a function with an upvalue it cannot copy, naming it", function()
    local co = coroutine.create(function() end)
    local ok, err = pcall(mb.spawn, function() return co end)
    assert.is_false(ok)
    assert.matches("cannot send a coroutine at function<upvalue co>", err, 1, true)
    local insert = table.insert
    ok, err = pcall(mb.spawn, function() insert({}, 1) end)
    assert.is_false(ok)
    assert.matches("C function", err)
    assert.matches("<upvalue insert>", err, 1, true)
  end)

  it("copies upvalues and rebinds globals and modules in the child", function()
    local base = {10, 20}
    local s = "str"
    assert.same({30, "STR", true}, {mb.run(function()
      return base[1] + base[2], string.upper(s), type(print) == "function"
    end)})
  end)

  it("is counted while alive and uncounted after it ends", function()
    local during, after = mb.run(function()
      local mb = require "moonbeam"
      local before = mb.process_count()
      local pids = {}
      for i = 1, 50 do pids[i] = mb.spawn(function() mb.receive() end) end
      local during = mb.process_count() - before
      for i = 1, 50 do mb.send(pids[i], "stop") end
      for _ = 1, 200 do
        if mb.process_count() == before then break end
        mb.sleep(5)
      end
      return during, mb.process_count() - before
    end)
    assert.equal(50, during)
    assert.equal(0, after)
  end)
end)

describe("preemption", function()
  it("lets other processes run while one spins forever, on one scheduler too", function()
    assert.equal("pong", mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local spinners = {}
      -- Each spinner runs a pure Lua loop; it looks at its mailbox only
      -- every 10 million iterations, so that the spec can stop it.
      for i = 1, 4 do
        spinners[i] = mb.spawn(function()
          local n = 0
          while true do
            n = n + 1
            if n % 10000000 == 0 and mb.receive(0) then return end
          end
        end)
      end
      mb.spawn(function() mb.send(me, "pong") end)
      local got = mb.receive(5000)
      for i = 1, 4 do mb.send(spinners[i], "stop") end
      return got
    end))
  end)

  it("preempts a spinning coroutine inside a process", function()
    assert.equal("pong", mb.run(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local spinners = {}
      for i = 1, 2 do
        spinners[i] = mb.spawn(function()
          coroutine.wrap(function()
            local n = 0
            while true do
              n = n + 1
              if n % 10000000 == 0 and mb.receive(0) then return end
            end
          end)()
        end)
      end
      mb.spawn(function() mb.send(me, "pong") end)
      local got = mb.receive(5000)
      for i = 1, 2 do mb.send(spinners[i], "stop") end
      return got
    end))
  end)
end)

describe("coroutines in a process", function()
  it("can receive and sleep inside a coroutine", function()
    assert.same({true, "hello!", true, "done"}, {mb.run(function()
      local mb = require "moonbeam"
      local co = coroutine.create(function(suffix)
        local m = mb.receive(1000)
        mb.sleep(1)
        coroutine.yield(m .. suffix)
        return "done"
      end)
      mb.send(mb.self(), "hello")
      local ok1, v1 = coroutine.resume(co, "!")
      local ok2, v2 = coroutine.resume(co)
      return ok1, v1, ok2, v2
    end)})
  end)

  it("keeps coroutine.wrap generators working", function()
    assert.same({1, 2, 3}, {mb.run(function()
      local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      return gen(), gen(), gen()
    end)})
  end)
end)
