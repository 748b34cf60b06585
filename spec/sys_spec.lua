-- moonbeam.sys: system messages to GenServers and supervisors (modelled on
-- OTP's sys_SUITE: suspend, resume, get_state, replace_state, change_code).
local mb = require "moonbeam"

local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- The application controller lives as long as the node: started here,
-- before the leak check's baseline, it is not counted as left behind.
setup(function()
  mb.run(function() require("moonbeam.application").which_applications() end)
end)

local count = 0
local function fresh_name()
  count = count + 1
  return ("sys_spec_mod%d_%d"):format(count, os.time())
end

local V1 = [[
  return {
    init = function(n) return "ok", n end,
    handle_call = function(req, _, n)
      if req == "get" then return "reply", n, n end
      if req == "inc" then return "reply", n + 1, n + 1 end
    end,
  }]]
local V2 = [[
  return {
    init = function(n) return "ok", {n = n} end,
    handle_call = function(req, _, s)
      if req == "get" then return "reply", s, s end
      if req == "inc" then s.n = s.n + 1 return "reply", s.n, s end
    end,
    code_change = function(old_vsn, n, extra)
      return "ok", {n = n, old_vsn = old_vsn, extra = extra}
    end,
  }]]

describe("sys.suspend and sys.resume", function()
  it("hold a server's other messages until resume, while it answers system messages", function()
    local name = fresh_name()
    assert.same({true, 7, "waiting", 8, true}, {in_process(function(name, v1)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      local gen_server = require "moonbeam.gen_server"
      local sys = require "moonbeam.sys"
      code.load(name, v1)
      local server = gen_server.start(name, 7)
      local suspended = sys.suspend(server)
      local parent = mb.self()
      mb.spawn(function()
        mb.send(parent, require("moonbeam.gen_server").call(server, "inc"))
      end)
      -- The call waits in the suspended server's mailbox (bounded wait).
      for _ = 1, 2000 do
        if mb.process_info(server).message_queue_len == 1 then break end
        mb.sleep(1)
      end
      local state = sys.get_state(server)
      local early = mb.receive(0) or "waiting"
      local resumed = sys.resume(server)
      local late = mb.receive(5000)
      gen_server.stop(server)
      return suspended, state, early, late, resumed
    end, name, V1)})
  end)
end)

describe("sys.replace_state", function()
  it("sets the state to fn(state) and returns it; a raising fn keeps the state", function()
    local r = {in_process(function()
      local gen_server = require "moonbeam.gen_server"
      local sys = require "moonbeam.sys"
      local server = gen_server.start({
        init = function(n) return "ok", n end,
        handle_call = function(_, _, n) return "reply", n, n end,
      }, 1)
      local new = sys.replace_state(server, function(n) return n * 10 end)
      local ok, err = pcall(sys.replace_state, server, function() error("nope") end)
      local after = gen_server.call(server, "get")
      gen_server.stop(server)
      return new, ok, tostring(err[1]), after
    end)}
    assert.same({10, false, "callback_failed", 10}, r)
  end)
end)

describe("sys.change_code", function()
  it("upgrades a set of suspended servers in order, with extra, and they resume on the new version", function()
    local name = fresh_name()
    local r = in_process(function(name, v1, v2)
      local code = require "moonbeam.code"
      local gen_server = require "moonbeam.gen_server"
      local sys = require "moonbeam.sys"
      code.load(name, v1)
      local servers = {}
      for i = 1, 3 do servers[i] = gen_server.start(name, i) end
      for _, s in ipairs(servers) do sys.suspend(s) end
      code.load(name, v2)
      local changed = {}
      for _, s in ipairs(servers) do changed[#changed + 1] = sys.change_code(s, name, 1, "release-2") end
      for _, s in ipairs(servers) do sys.resume(s) end
      local states = {}
      for i, s in ipairs(servers) do
        gen_server.call(s, "inc")
        states[i] = gen_server.call(s, "get")
        gen_server.stop(s)
      end
      return {changed = changed, states = states}
    end, name, V1, V2)
    assert.same({true, true, true}, r.changed)
    for i = 1, 3 do
      assert.same({n = i + 1, old_vsn = 1, extra = "release-2"}, r.states[i])
    end
  end)

  it("returns the error and keeps the old version when code_change raises", function()
    local name = fresh_name()
    local r = {in_process(function(name, v1, v2)
      local code = require "moonbeam.code"
      local gen_server = require "moonbeam.gen_server"
      local sys = require "moonbeam.sys"
      code.load(name, v1)
      local s = gen_server.start(name, 4)
      sys.suspend(s)
      code.load(name, v2:gsub("return \"ok\", {n = n", "error(\"bad extra\") return \"ok\", {n = n"))
      local ok, why = sys.change_code(s, name, 1, nil)
      sys.resume(s)
      local got = gen_server.call(s, "get")
      gen_server.stop(s)
      return ok, tostring(why):match("bad extra") ~= nil, got
    end, name, V1, V2)}
    assert.same({nil, true, 4}, r)
  end)
end)

describe("sys on a supervisor", function()
  it("suspends, reads the state of and resumes a supervisor", function()
    local r = {in_process(function()
      local supervisor = require "moonbeam.supervisor"
      local sys = require "moonbeam.sys"
      local sup = supervisor.start({
        init = function() return "ok", {strategy = "one_for_one"}, {} end,
      })
      local suspended = sys.suspend(sup)
      local state = sys.get_state(sup)
      local resumed = sys.resume(sup)
      local children = #supervisor.which_children(sup)
      require("moonbeam.gen_server").stop(sup)
      return suspended, type(state), resumed, children
    end)}
    assert.same({true, "table", true, 0}, r)
  end)
end)

describe("an upgrade of a supervisor's specs (sys.change_code)", function()
  it("calls init again: a running child keeps its process under its new spec, a new child is not started", function()
    local name = fresh_name()
    local child = [[
      local function start()
        local mb = require "moonbeam"
        return mb.spawn_link(function() require("moonbeam").receive() end)
      end
      return {init = function()
        return "ok", {strategy = "one_for_one"}, {%s}
      end}]]
    local r = in_process(function(name, v1, v2)
      local code = require "moonbeam.code"
      local supervisor = require "moonbeam.supervisor"
      local sys = require "moonbeam.sys"
      code.load(name, v1)
      local sup = supervisor.start(name)
      local before = supervisor.which_children(sup)
      sys.suspend(sup)
      code.load(name, v2)
      local changed = sys.change_code(sup, name, 1, nil)
      sys.resume(sup)
      local after = supervisor.which_children(sup)
      local state = sys.get_state(sup)
      local b = supervisor.restart_child(sup, "b")
      local n = #supervisor.which_children(sup)
      require("moonbeam.gen_server").stop(sup)
      return {changed = changed, same_pid = before[1].pid == after[1].pid,
        ids = {after[1].id, after[2].id}, b_before = after[2].pid == nil,
        shutdown = state.children[1].shutdown, b_started = b ~= nil, n = n,
        strategy = state.strategy}
    end, name,
      child:format('{id = "a", start = start}'),
      child:format('{id = "a", start = start, shutdown = "brutal_kill"}, {id = "b", start = start}')
        :gsub('"one_for_one"', '"one_for_all"'))
    assert.same({changed = true, same_pid = true, ids = {"a", "b"}, b_before = true,
      shutdown = "brutal_kill", b_started = true, n = 2, strategy = "one_for_all"}, r)
  end)
end)

describe("application.change_spec", function()
  it("replaces a running application's spec and calls config_change with the changes of its environment", function()
    local name = fresh_name()
    local r = in_process(function(name)
      local mb = require "moonbeam"
      local code = require "moonbeam.code"
      local application = require "moonbeam.application"
      mb.register("config_change_watcher", mb.self())
      code.load(name, [[
        return {
          start = function()
            return require("moonbeam.supervisor").start_link({
              init = function() return "ok", {strategy = "one_for_one"}, {} end})
          end,
          config_change = function(changed, new, removed)
            local mb = require "moonbeam"
            mb.send(mb.whereis("config_change_watcher"), {changed, new, removed})
          end,
        }]])
      local app = name .. "_app"
      assert(application.load({name = app, version = "1", mod = {name}, env = {a = 1, b = 2, gone = 0}}))
      assert(application.start(app))
      local done = application.change_spec({name = app, version = "2", mod = {name},
        env = {a = 1, b = 3, c = 4}})
      local got = mb.receive(5000)
      local version = application.loaded_applications()
      local v
      for _, a in ipairs(version) do if a.name == app then v = a.version end end
      local b = application.get_env(app, "b")
      application.stop(app)
      application.unload(app)
      local not_loaded = {application.change_spec({name = app})}
      mb.unregister("config_change_watcher")
      return {done = done, changed = got[1], new = got[2], removed = got[3],
        version = v, b = b, err = tostring(not_loaded[2][1])}
    end, name)
    assert.same({done = true, changed = {b = 3}, new = {c = 4}, removed = {"gone"},
      version = "2", b = 3, err = "not_loaded"}, r)
  end)
end)

describe("a GenServer's system-message handling", function()
  it("is loaded for a system message and dropped after it, never kept by an idle server", function()
    local r = {in_process(function()
      local gen_server = require "moonbeam.gen_server"
      local sys = require "moonbeam.sys"
      local server = gen_server.start({
        init = function(n) return "ok", n end,
        handle_call = function(_, _, n)
          local loaded = {}
          for _, m in ipairs({"moonbeam.gen_server_sys", "moonbeam.gen_server_stop",
              "moonbeam.gen", "moonbeam.code_swap", "moonbeam.gen_server_loop",
              "moonbeam.gen_base", "moonbeam.gen_server_event"}) do
            loaded[m] = package.loaded[m] ~= nil
          end
          return "reply", loaded, n
        end,
      }, 1)
      local idle = gen_server.call(server, "loaded")
      local state = sys.get_state(server)
      local after = gen_server.call(server, "loaded")
      gen_server.stop(server)
      return idle, state, after
    end)}
    local none = {["moonbeam.gen_server_sys"] = false, ["moonbeam.gen_server_stop"] = false,
      ["moonbeam.gen"] = false, ["moonbeam.code_swap"] = false,
      ["moonbeam.gen_server_loop"] = false, ["moonbeam.gen_base"] = false,
      ["moonbeam.gen_server_event"] = false}
    assert.same({none, 1, none}, r)
  end)
end)
