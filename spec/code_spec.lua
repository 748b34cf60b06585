-- moonbeam.code: versions of a module on a node, upgrades, and the
-- two-versions rule (modelled on OTP's code_SUITE: load_file, purge,
-- soft_purge, old code killed).
local mb = require "moonbeam"

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- The node's module cache outlives an example: each one takes a module
-- name of its own.
local count = 0
local function fresh_name()
  count = count + 1
  return ("code_spec_mod%d_%d"):format(count, os.time())
end

-- Source of a module whose v() returns n.
local function source(n)
  return ("return {v = function() return %d end}"):format(n)
end

-- A process that requires `name`, tells `parent` the value of v(), then on
-- "upgrade" calls code.upgrade() and reports what it upgraded and v() again,
-- and on "stop" ends.
local function holder(parent, name)
  local mb = require "moonbeam"
  local code = require "moonbeam.code"
  local m = require(name)
  mb.send(parent, {mb.self(), m.v(), code.held(name)})
  while true do
    local msg = mb.receive()
    if msg == "stop" then return end
    local done = code.upgrade()
    mb.send(parent, {mb.self(), m.v(), code.held(name), done})
  end
end

describe("code.load", function()
  it("makes versions 1, 2, 3 that later requires get", function()
    local name = fresh_name()
    assert.same({1, 1, 2, 2, 3}, {in_process(function(name, src1, src2, holder)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      local v1 = code.load(name, src1)
      local a = mb.spawn(holder, mb.self(), name)
      local got1 = mb.receive()
      local v2 = code.load(name, src2)
      local b = mb.spawn(holder, mb.self(), name)
      local got2 = mb.receive()
      mb.send(a, "stop") mb.send(b, "stop")
      return v1, got1[2], v2, got2[2], got2[3] + 1
    end, name, source(1), source(2), holder)})
  end)

  it("reads the file package.path finds, and code.which names it", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir)
    local name = fresh_name()
    local path = dir .. "/" .. name .. ".lua"
    local f = assert(io.open(path, "w")) f:write(source(7)) f:close()
    local ok, res = pcall(in_process, function(dir, name, path)
      local code = require "moonbeam.code"
      package.path = dir .. "/?.lua;" .. package.path
      local first = require(name).v()
      local f = assert(io.open(path, "w")) f:write("return {v = function() return 8 end}") f:close()
      local again = require(name).v() -- loaded: the file is not read again
      local v = code.reload(name)
      package.loaded[name] = nil
      return {first, again, v, require(name).v(), code.which(name) == path,
        code.version(name), code.which("no_such_module_here")}
    end, dir, name, path)
    os.remove(path)
    os.remove(dir)
    assert.is_true(ok, res)
    assert.same({7, 7, 2, 8, true, 2}, res)
  end)

  it("refuses a version that does not compile or raises, and the old one goes on serving", function()
    local name = fresh_name()
    local r = {in_process(function(name, src1)
      local code = require "moonbeam.code"
      local gen_server = require "moonbeam.gen_server"
      code.load(name, [[
        return {
          init = function(n) return "ok", n end,
          handle_call = function(req, _, n) return "reply", "old:" .. n, n end,
        }]])
      local pid = gen_server.start(name, 5)
      local bad1, err1 = code.load(name, "return {")
      local bad2, err2 = code.load(name, "error('refused on purpose')")
      local reply = gen_server.call(pid, "hello")
      local v = code.version(name)
      local later = (function() package.loaded[name] = nil return require(name) end)()
      gen_server.stop(pid)
      return bad1, err1, bad2, err2, reply, v, later.handle_call(nil, nil, 1)
    end, name, source(1))}
    assert.is_nil(r[1])
    assert.matches("unexpected symbol", r[2])
    assert.is_nil(r[3])
    assert.matches("refused on purpose", r[4])
    assert.equal("old:5", r[5])
    assert.equal(1, r[6])
    assert.equal("reply", r[7])
  end)

  it("raises on a name that is not a string", function()
    local ok, err = pcall(in_process, function()
      return require("moonbeam.code").load(42)
    end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'load' %(string expected, got number%)", tostring(err))
  end)
end)

describe("the two-versions rule", function()
  it("kills, with reason killed, a process still on version 1 when version 3 is loaded, and spares version 2's", function()
    local name = fresh_name()
    assert.same({"killed", true, 2, false, true}, {in_process(function(name, src, holder)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      code.load(name, src(1))
      local old = mb.spawn(holder, mb.self(), name)
      mb.receive()
      code.load(name, src(2))
      local mid = mb.spawn(holder, mb.self(), name)
      mb.receive()
      local soft_before = code.soft_purge(name) -- old still on version 1
      local ref_old = mb.monitor(old)
      local ref_mid = mb.monitor(mid)
      code.load(name, src(3))
      local down = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref_old end, 5000)
      -- mid holds version 2, now the old one: alive, and it can still talk.
      mb.send(mid, "upgrade")
      local reply = mb.receive(function(m) return type(m) == "table" and m[1] == mid end, 5000)
      mb.send(mid, "stop")
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref_mid end, 5000)
      return tostring(down[5]), reply[2] == 3, reply[3] - 1, soft_before, code.soft_purge(name)
    end, name, source, holder)})
  end)

  it("purge kills the holders of the old version; soft_purge kills nobody", function()
    local name = fresh_name()
    assert.same({false, true, "killed", true, false}, {in_process(function(name, src, holder)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      code.load(name, src(1))
      local old = mb.spawn(holder, mb.self(), name)
      mb.receive()
      code.load(name, src(2))
      local soft = code.soft_purge(name)
      local alive = mb.process_info(old) ~= nil
      local ref = mb.monitor(old)
      local purged = code.purge(name)
      local down = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 5000)
      return soft, alive, tostring(down[5]), purged, code.purge(name)
    end, name, source, holder)})
  end)
end)

describe("code.upgrade", function()
  it("moves a plain process to the current version, through the module table it kept", function()
    local name = fresh_name()
    assert.same({1, 2, 1, 2, {name}}, {in_process(function(name, src, holder)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      code.load(name, src(1))
      local p = mb.spawn(holder, mb.self(), name)
      local first = mb.receive()
      code.load(name, src(2))
      mb.send(p, "upgrade")
      local after = mb.receive()
      mb.send(p, "stop")
      local done = {}
      for _, n in ipairs(after[4]) do if n == name then done[#done + 1] = n end end
      return first[2], after[2], first[3], after[3], done
    end, name, source, holder)})
  end)
end)

-- A counter server: version 1 keeps a number; version 2 keeps a table, and
-- its code_change turns the number into it, noting the version it came from.
local COUNTER_V1 = [[
  return {
    init = function(n) return "ok", n end,
    handle_call = function(req, _, n)
      if req == "inc" then return "reply", n + 1, n + 1 end
      if req == "get" then return "reply", {count = n, vsn = 1}, n end
    end,
  }]]
local COUNTER_V2 = [[
  return {
    init = function(n) return "ok", {count = n, from = 0} end,
    handle_call = function(req, _, s)
      if req == "inc" then s.count = s.count + 1 return "reply", s.count, s end
      if req == "get" then return "reply", {count = s.count, vsn = 2, from = s.from, extra = s.extra}, s end
    end,
    code_change = function(old_vsn, n, extra)
      if extra == "refuse" then error("no thanks") end
      return "ok", {count = n, from = old_vsn, extra = extra}
    end,
  }]]

describe("a GenServer started by module name", function()
  it("moves to a new version under load between two messages: no call lost or failed, state migrated by code_change", function()
    local name = fresh_name()
    local r = in_process(function(name, v1, v2)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      local gen_server = require "moonbeam.gen_server"
      code.load(name, v1)
      local server = gen_server.start(name, 0)
      local parent = mb.self()
      local clients = {}
      for i = 1, 4 do
        clients[i] = mb.spawn(function()
          local gs = require "moonbeam.gen_server"
          local ok_calls, failed, last = 0, 0, 0
          local told = false
          while true do
            local ok, n = pcall(gs.call, server, "inc")
            if ok and n > last then ok_calls, last = ok_calls + 1, n else failed = failed + 1 end
            if ok_calls == 50 and not told then told = true mb.send(parent, "running") end
            if mb.receive(0) == "stop" then break end
          end
          mb.send(parent, {ok_calls, failed})
        end)
      end
      for _ = 1, 4 do assert(mb.receive(5000) == "running") end
      local before = gen_server.call(server, "get")
      local version = code.load(name, v2)
      -- Let the clients go on against the new version for a while.
      local after
      for _ = 1, 1000 do
        after = gen_server.call(server, "get")
        if after.vsn == 2 and after.count >= before.count + 200 then break end
      end
      for _, c in ipairs(clients) do mb.send(c, "stop") end
      local total, failed = 0, 0
      for _ = 1, 4 do
        local t = mb.receive(5000)
        total, failed = total + t[1], failed + t[2]
      end
      local final = gen_server.call(server, "get")
      gen_server.stop(server)
      return {version = version, before_vsn = before.vsn, vsn = final.vsn,
        from = final.from, extra = final.extra, count = final.count,
        total = total, failed = failed, held = final.vsn}
    end, name, COUNTER_V1, COUNTER_V2)
    assert.equal(2, r.version)
    assert.equal(1, r.before_vsn)
    assert.equal(2, r.vsn)
    assert.equal(1, r.from)          -- code_change got old_vsn 1
    assert.is_nil(r.extra)           -- and no extra
    assert.equal(0, r.failed)
    assert.equal(r.total, r.count)   -- every call counted once, none lost
  end)

  it("stays on the old version with its state when code_change raises", function()
    local name = fresh_name()
    local r = {in_process(function(name, v1, v2)
      local code = require "moonbeam.code"
      local gen_server = require "moonbeam.gen_server"
      code.load(name, v1)
      local server = gen_server.start(name, 3)
      code.load(name, v2:gsub('if extra == "refuse" then', 'if true then'))
      local got = gen_server.call(server, "get")
      local inc = gen_server.call(server, "inc")
      gen_server.stop(server)
      return got.vsn, got.count, inc
    end, name, COUNTER_V1, COUNTER_V2)}
    assert.same({1, 3, 4}, r)
  end)
end)
