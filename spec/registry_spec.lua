-- Registry, modelled on the cases of Elixir's registry_test.exs. Each
-- example runs in a process of its own (mb.run), stops the registries and
-- processes it starts, and leaves no process behind.
local mb = require "moonbeam"

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("registry.start_link", function()
  it("starts a registry linked to the caller, registered under its name", function()
    assert.same({true, true}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "unique", name = "reg_named"})
      local named = mb.whereis("reg_named") == reg
      local linked = mb.process_info(mb.self()).links[1] == reg
      registry.stop(reg, nil, 5000)
      return named, linked
    end)})
  end)

  it("raises without a keys option of unique or duplicate", function()
    assert.same({true, true}, {in_process(function()
      local registry = require "moonbeam.registry"
      local ok1, e1 = pcall(registry.start_link, {keys = "many"})
      local ok2, e2 = pcall(registry.start_link)
      return not ok1 and e1:find('keys must be "unique" or "duplicate", got many', 1, true) ~= nil,
        not ok2 and e2:find("table expected, got nil", 1, true) ~= nil
    end)})
  end)
end)

describe("registry.register in a unique registry", function()
  it("registers the calling process with its value, as lookup shows", function()
    assert.same({true, 1, true, "value", 0}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "unique"})
      local ok = registry.register(reg, "alice", "value")
      local found = registry.lookup(reg, "alice")
      local none = registry.lookup(reg, "bob")
      registry.stop(reg, nil, 5000)
      return ok, #found, found[1][1] == mb.self(), found[1][2], #none
    end)})
  end)

  it("refuses a key that is taken with {already_registered, Pid}, to its owner too", function()
    assert.same({"already_registered", true, "already_registered", true}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "unique"})
      local me = mb.self()
      registry.register(reg, "k", 1)
      local _, again = registry.register(reg, "k", 2)
      local other = mb.spawn(function()
        local mb = require "moonbeam"
        local _, why = require("moonbeam.registry").register(reg, "k", 3)
        mb.send(me, why)
      end)
      local why = mb.receive(5000)
      registry.stop(reg, nil, 5000)
      return tostring(again[1]), again[2] == me, tostring(why[1]), why[2] == me
    end)})
  end)

  it("lets one process hold several keys, listed by keys", function()
    assert.same({"a,b,c", 3, 0}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "unique"})
      for _, k in ipairs({"a", "b", "c"}) do registry.register(reg, k) end
      local keys = registry.keys(reg, mb.self())
      table.sort(keys)
      local count = registry.count(reg)
      local none = #registry.keys(reg, reg)
      registry.stop(reg, nil, 5000)
      return table.concat(keys, ","), count, none
    end)})
  end)

  it("takes keys of any kind but tables, which raise", function()
    assert.same({4, true}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "unique"})
      registry.register(reg, 1, "int")
      registry.register(reg, mb.atom.worker, "atom")
      registry.register(reg, mb.self(), "pid")
      registry.register(reg, true, "bool")
      local n = 0
      for _, k in ipairs({1, mb.atom.worker, mb.self(), true}) do
        n = n + #registry.lookup(reg, k)
      end
      local ok, e = pcall(registry.register, reg, mb.tuple("user", 1))
      registry.stop(reg, nil, 5000)
      return n, not ok and e:find("bad argument #2 to 'register' (key must be", 1, true) ~= nil
    end)})
  end)
end)

describe("registry.register in a duplicate registry", function()
  it("keeps one entry per registration, from one process or several", function()
    assert.same({"1,2,3", "topic,topic"}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "duplicate"})
      local me = mb.self()
      registry.register(reg, "topic", 1)
      registry.register(reg, "topic", 2)
      local other = mb.spawn(function()
        local mb = require "moonbeam"
        require("moonbeam.registry").register(reg, "topic", 3)
        mb.send(me, "registered")
        mb.receive()
      end)
      assert(mb.receive(5000) == "registered")
      local values = {}
      for _, e in ipairs(registry.lookup(reg, "topic")) do values[#values + 1] = e[2] end
      table.sort(values)
      local keys = registry.keys(reg, me)
      mb.send(other, "stop")
      registry.stop(reg, nil, 5000)
      return table.concat(values, ","), table.concat(keys, ",")
    end)})
  end)
end)

describe("registry.unregister", function()
  it("removes the caller's entries under the key, and leaves others' alone", function()
    assert.same({true, 1, 0, 0}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "duplicate"})
      local me = mb.self()
      registry.register(reg, "topic", "mine")
      registry.register(reg, "topic", "mine too")
      local other = mb.spawn(function()
        local mb = require "moonbeam"
        require("moonbeam.registry").register(reg, "topic", "theirs")
        mb.send(me, "registered")
        mb.receive()
      end)
      assert(mb.receive(5000) == "registered")
      local ok = registry.unregister(reg, "topic")
      local left = registry.lookup(reg, "topic")
      local mine = #registry.keys(reg, me)
      registry.unregister(reg, "never registered")
      mb.send(other, "stop")
      registry.stop(reg, nil, 5000)
      return ok, #left, mine, left[1][2] == "theirs" and 0 or 1
    end)})
  end)


  it("stops the registry's monitor of a process that has no entries left", function()
    assert.equal(1, in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "unique"})
      registry.register(reg, "a")
      registry.register(reg, "b")
      local function watchers() return #mb.process_info(mb.self()).monitored_by end
      local before = watchers()
      registry.unregister(reg, "a")
      local still = watchers() -- one key left: still monitored
      -- The demonitor reaches the caller before the reply of unregister.
      registry.unregister(reg, "b")
      local diff = before - watchers()
      registry.stop(reg, nil, 5000)
      return still == before and diff
    end))
  end)
end)

describe("registry.dispatch", function()
  it("calls fn in the caller with the entries, and not at all when there are none", function()
    assert.same({3, false, true}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local reg = registry.start_link({keys = "duplicate"})
      for i = 1, 3 do registry.register(reg, "topic", i) end
      local me = mb.self()
      local got = 0
      registry.dispatch(reg, "topic", function(entries)
        for _, e in ipairs(entries) do mb.send(e[1], e[2]) end
      end)
      for _ = 1, 3 do got = got + (mb.receive(5000) and 1 or 0) end
      local called = false
      local ok = registry.dispatch(reg, "nobody", function() called = true end)
      registry.stop(reg, nil, 5000)
      return got, called, ok
    end)})
  end)
end)

describe("when a registered process ends", function()
  it("its entries are removed and a unique key is free again", function()
    assert.same({1, 0, 0, true}, {in_process(function()
      local mb = require "moonbeam"
      local registry = require "moonbeam.registry"
      local unique = registry.start_link({keys = "unique"})
      local dup = registry.start_link({keys = "duplicate"})
      local me = mb.self()
      local pid, ref = mb.spawn_monitor(function()
        local mb = require "moonbeam"
        local registry = require "moonbeam.registry"
        registry.register(unique, "job", "x")
        registry.register(dup, "jobs", "x")
        registry.register(dup, "jobs", "y")
        mb.send(me, "registered")
        mb.receive()
        error("worker fails")
      end)
      assert(mb.receive(5000) == "registered")
      local before = #registry.lookup(unique, "job")
      mb.send(pid, "fail")
      mb.receive(function(m) return m[2] == ref end, 5000)
      -- The registry hears of the end by its own monitor: wait for it.
      local left
      for _ = 1, 1000 do
        left = registry.count(unique) + registry.count(dup)
        if left == 0 then break end
        mb.sleep(1)
      end
      local keys = #registry.keys(dup, pid)
      local taken = registry.register(unique, "job", "mine")
      registry.stop(unique, nil, 5000)
      registry.stop(dup, nil, 5000)
      return before, left, keys, taken
    end)})
  end)
end)
