-- Modelled on OTP's application_SUITE: load and unload, start types,
-- dependencies, ensure_all_started, stop, the environment, and what happens
-- when an application's top supervisor dies.
--
-- The application controller is one per node, and busted runs every spec
-- file in one node: each test uses application names of its own and stops
-- and unloads what it started.
local mb = require "moonbeam"

local launcher = (os.getenv("MB_BUILD_DIR") or "build") .. "/bin/moonbeam"

-- The controller logs every start and stop: keep the specs' output quiet.
local saved_level
setup(function()
  saved_level = mb.log_level("error")
  -- The application controller lives as long as the node: started here,
  -- before the leak check's baseline, it is not counted as left behind.
  mb.run(function() require("moonbeam.application").which_applications() end)
end)
teardown(function() mb.log_level(saved_level) end)

-- A top "supervisor" for most tests: a gen_server that the tests can end
-- with any reason (mb.exit) or stop (gen_server.stop).
local top = {
  init = function(a) return "ok", a end,
  handle_call = function(req, _, s) return "reply", s.name, s end,
}

-- The application callback module of the tests. It tells the process
-- registered as app_watcher (if any) what it is asked to do. Its functions
-- require what they use: they are copied into the master process.
local app_module = {
  start = function(start_type, args)
    local mb = require "moonbeam"
    local application = require "moonbeam.application"
    local watcher = mb.whereis("app_watcher")
    if watcher then
      mb.send(watcher, {"start", args.name, start_type,
                        application.get_env(args.name, "port", "none")})
    end
    if args.fail then return nil, args.fail end
    if args.crash then error("start blew up") end
    if args.bad then return "not a pid" end
    local pid, why
    if args.supervised then
      -- A real supervision tree: a supervisor with one worker.
      pid, why = require("moonbeam.supervisor").start_link({
        init = function(a)
          return "ok", {strategy = "one_for_one"}, {
            {id = "worker", start = {"moonbeam.gen_server", "start_link",
                                     {a.top, a, {name = a.name .. "_worker"}}}},
          }
        end,
      }, args, {name = args.name .. "_top"})
    else
      pid, why = require("moonbeam.gen_server").start_link(args.top, args,
        {name = args.name .. "_top"})
    end
    if not pid then return nil, why end
    return pid, args.name .. "_state"
  end,
  prep_stop = function(state)
    local mb = require "moonbeam"
    local watcher = mb.whereis("app_watcher")
    if watcher then mb.send(watcher, {"prep_stop", state}) end
    return state .. "+prep"
  end,
  stop = function(state)
    local mb = require "moonbeam"
    local watcher = mb.whereis("app_watcher")
    if watcher then mb.send(watcher, {"stop", state}) end
  end,
}

-- An application spec for the tests.
local function app(name, opts)
  opts = opts or {}
  local args = {name = name, top = top, fail = opts.fail, crash = opts.crash,
                bad = opts.bad, supervised = opts.supervised}
  return {name = name, version = "1.0", description = "the " .. name .. " app",
          mod = (not opts.library) and {app_module, args} or nil,
          applications = opts.deps, env = opts.env}
end

-- Run `body(events, ...)` in a process registered as app_watcher; events(n)
-- returns the next n messages from the application modules, as strings.
-- Every application named in `cleanup` is stopped and unloaded afterwards.
local function with_watcher(cleanup, body, ...)
  return mb.run(function(cleanup, body, ...)
    local mb = require "moonbeam"
    local application = require "moonbeam.application"
    mb.register("app_watcher", mb.self())
    local function events(n)
      local out = {}
      for i = 1, n do
        local m = mb.receive(function(x) return type(x) == "table" end, 5000)
        if m then
          for j = 1, #m do m[j] = tostring(m[j]) end
          out[i] = table.concat(m, " ")
        else
          out[i] = "timeout"
        end
      end
      return out
    end
    local results = table.pack(pcall(body, events, ...))
    for _, name in ipairs(cleanup) do
      application.stop(name)
      application.unload(name)
    end
    mb.unregister("app_watcher")
    if not results[1] then error(results[2], 0) end
    return table.unpack(results, 2, results.n)
  end, cleanup, body, ...)
end

-- The node stop hook of the tests: tell app_watcher instead of exiting.
local function set_test_hook()
  return mb.run(function()
    return require("moonbeam.application").set_node_stop_hook(function(reason)
      local mb = require "moonbeam"
      local watcher = mb.whereis("app_watcher")
      if watcher then mb.send(watcher, {"node_stop", tostring(reason)}) end
    end)
  end)
end

local function restore_hook()
  mb.run(function() require("moonbeam.application").set_node_stop_hook(nil) end)
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("application.load", function()
  it("registers a spec table, and refuses to load it twice", function()
    assert.same({true, "already_loaded", "l1", "the l1 app", "1.0", true, "not_loaded"},
      {with_watcher({}, function(_, spec)
        local application = require "moonbeam.application"
        local first = application.load(spec)
        local _, why = application.load(spec)
        local entry
        for _, a in ipairs(application.loaded_applications()) do
          if a.name == "l1" then entry = a end
        end
        local unloaded = application.unload("l1")
        local _, again = application.unload("l1")
        return first, tostring(why[1]), why[2], entry.description, entry.version,
          unloaded, tostring(again[1])
      end, app("l1"))})
  end)

  it("raises for a spec table that is not well formed", function()
    local errors = {with_watcher({}, function()
      local application = require "moonbeam.application"
      local _, e1 = pcall(application.load, {version = "1"})
      local _, e2 = pcall(application.load, {name = "l2", mod = "l2.app"})
      local _, e3 = pcall(application.load, {name = "l2", applications = {42}})
      return e1, e2, e3
    end)}
    assert.matches("bad argument #1 to 'load' (spec has no name)", errors[1], 1, true)
    assert.matches("mod must be {module, start_args}", errors[2], 1, true)
    assert.matches("applications[1] is not a name", errors[3], 1, true)
  end)

  describe("by name", function()
    local dir

    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      local function write(file, text)
        local f = assert(io.open(dir .. "/" .. file, "w"))
        f:write(text)
        f:close()
      end
      write("fileapp.app.lua", [[
        return {name = "fileapp", version = "2.1", description = "from a file",
                env = {port = 4000}}
      ]])
      write("notatable.app.lua", "return 42\n")
      write("misnamed.app.lua", "return {name = 'other'}\n")
      write("broken.app.lua", "return {\n")
    end)

    after_each(function()
      for _, f in ipairs({"fileapp", "notatable", "misnamed", "broken"}) do
        os.remove(dir .. "/" .. f .. ".app.lua")
      end
      os.remove(dir)
    end)

    it("reads <name>.app.lua from package.path, in the calling process", function()
      assert.same({true, 4000, "2.1", true, true},
        {with_watcher({"fileapp"}, function(_, dir)
          local application = require "moonbeam.application"
          package.path = dir .. "/?.lua;" .. package.path
          local loaded = application.load("fileapp")
          local version
          for _, a in ipairs(application.loaded_applications()) do
            if a.name == "fileapp" then version = a.version end
          end
          local port = application.get_env("fileapp", "port")
          application.unload("fileapp")
          -- start loads it too: a library application, as it has no mod
          local started = application.start("fileapp")
          local running = application.which_applications()[1].name == "fileapp"
          return loaded, port, version, started, running
        end, dir)})
    end)

    it("returns not_found or bad_app_file when the file is missing or wrong", function()
      local r = {with_watcher({}, function(_, dir)
        local application = require "moonbeam.application"
        package.path = dir .. "/?.lua;" .. package.path
        local _, e1 = application.load("nosuchapp")
        local _, e2 = application.load("notatable")
        local _, e3 = application.load("misnamed")
        local _, e4 = application.load("broken")
        local _, e5 = application.start("nosuchapp")
        return tostring(e1), tostring(e2[1]), e2[3], e3[3], tostring(e4[1]), tostring(e5)
      end, dir)}
      assert.equal('{not_found, "nosuchapp"}', r[1])
      assert.equal("bad_app_file", r[2])
      assert.equal("spec must be a table", r[3])
      assert.equal("name is 'other', expected 'misnamed'", r[4])
      assert.equal("bad_app_file", r[5])
      assert.equal('{not_found, "nosuchapp"}', r[6])
    end)
  end)
end)

describe("application.start", function()
  it("calls mod.start(type, args) in a master, which the top supervisor is linked to", function()
    local r = {with_watcher({"s1"}, function(events, spec)
      local mb = require "moonbeam"
      local application = require "moonbeam.application"
      application.load(spec)
      local ok = application.start("s1")
      local top = mb.whereis("s1_top")
      local master = mb.process_info(top).links[1]
      local listed = application.which_applications()[1]
      local _, again = application.start("s1")
      return ok, events(1)[1], master ~= nil and master ~= mb.self(),
        listed[1], listed[2], listed[3], listed.name, tostring(again)
    end, app("s1", {env = {port = 81}}))}
    assert.same({true, "start s1 temporary 81", true, "s1", "the s1 app", "1.0", "s1",
                 '{already_started, "s1"}'}, r)
  end)

  it("takes the start type", function()
    assert.same({"start s2 transient none"}, with_watcher({"s2"}, function(events, spec)
      local application = require "moonbeam.application"
      application.load(spec)
      assert(application.start("s2", "transient"))
      return events(1)
    end, app("s2")))
  end)

  it("fails with {not_started, Dep} while a dependency is not running", function()
    assert.same({'{not_started, "s3_dep"}', false}, {with_watcher({"s3", "s3_dep"},
      function(_, spec, dep)
        local mb = require "moonbeam"
        local application = require "moonbeam.application"
        application.load(dep)
        application.load(spec)
        local _, why = application.start("s3")
        return tostring(why), mb.whereis("s3_top") ~= nil
      end, app("s3", {deps = {"s3_dep"}}), app("s3_dep"))})
  end)

  it("fails with start's reason when it returns nil, raises or returns no pid", function()
    local r = {with_watcher({"s4", "s5", "s6"}, function(_, a, b, c)
      local application = require "moonbeam.application"
      application.load(a)
      application.load(b)
      application.load(c)
      local _, r1 = application.start("s4")
      local _, r2 = application.start("s5")
      local _, r3 = application.start("s6")
      return r1, tostring(r2[1]), tostring(r3), #application.which_applications()
    end, app("s4", {fail = "no_way"}), app("s5", {crash = true}), app("s6", {bad = true}))}
    assert.equal("no_way", r[1])
    assert.matches("start blew up", r[2], 1, true)
    assert.equal('{bad_return, "not a pid"}', r[3])
  end)

  it("only marks a library application (one without mod) started", function()
    assert.same({true, "lib1", true}, {with_watcher({"lib1"}, function(_, spec)
      local application = require "moonbeam.application"
      application.load(spec)
      return application.start("lib1"), application.which_applications()[1].name,
        application.stop("lib1")
    end, app("lib1", {library = true}))})
  end)

  it("raises for a bad name or start type", function()
    local e1, e2 = with_watcher({}, function()
      local application = require "moonbeam.application"
      local _, e1 = pcall(application.start, "x", "forever")
      local _, e2 = pcall(application.start, 42)
      return e1, e2
    end)
    assert.matches("bad argument #2 to 'start' (temporary, transient or permanent expected, got 'forever')",
      e1, 1, true)
    assert.matches("bad argument #1 to 'start' (application name expected, got number)", e2, 1, true)
  end)
end)

describe("application.ensure_all_started", function()
  it("starts the dependencies first and returns the names it started", function()
    local r = {with_watcher({"e_top", "e_mid", "e_base"}, function(events, base, mid, top)
      local application = require "moonbeam.application"
      for _, spec in ipairs({base, mid, top}) do application.load(spec) end
      assert(application.start("e_base"))
      local first = application.ensure_all_started("e_top", "transient")
      local second = application.ensure_all_started("e_top")
      return first, second, events(3)
    end, app("e_base"), app("e_mid", {deps = {"e_base"}}),
       app("e_top", {deps = {"e_mid", "e_base"}}))}
    assert.same({"e_mid", "e_top"}, r[1])
    assert.same({}, r[2])
    assert.same({"start e_base temporary none", "start e_mid transient none",
                 "start e_top transient none"}, r[3])
  end)

  it("stops what it started when one fails, and names the one that failed", function()
    assert.same({"f_bad", "nope", false},
      {with_watcher({"f_top", "f_bad", "f_base"}, function(_, base, bad, top)
        local mb = require "moonbeam"
        local application = require "moonbeam.application"
        for _, spec in ipairs({base, bad, top}) do application.load(spec) end
        local _, why = application.ensure_all_started("f_top")
        return why[1], why[2], mb.whereis("f_base_top") ~= nil
      end, app("f_base"), app("f_bad", {fail = "nope", deps = {"f_base"}}),
         app("f_top", {deps = {"f_bad"}}))})
  end)

  it("fails with circular_dependencies for a cycle", function()
    assert.equal('{"c1", {circular_dependencies, "c1"}}',
      with_watcher({"c1", "c2"}, function(_, c1, c2)
        local application = require "moonbeam.application"
        application.load(c1)
        application.load(c2)
        local _, why = application.ensure_all_started("c1")
        return tostring(why)
      end, app("c1", {deps = {"c2"}}), app("c2", {deps = {"c1"}})))
  end)
end)

describe("application.stop", function()
  it("runs prep_stop, shuts the supervision tree down, then runs stop", function()
    local r = {with_watcher({"st1"}, function(events, spec)
      local mb = require "moonbeam"
      local application = require "moonbeam.application"
      application.load(spec)
      assert(application.start("st1"))
      local sup, worker = mb.whereis("st1_top"), mb.whereis("st1_worker")
      local alive = mb.is_alive(sup) and mb.is_alive(worker)
      local stopped = application.stop("st1")
      local _, again = application.stop("st1")
      return alive, stopped, mb.is_alive(sup), mb.is_alive(worker), events(3),
        tostring(again), #application.which_applications()
    end, app("st1", {supervised = true}))}
    assert.same({true, true, false, false}, {r[1], r[2], r[3], r[4]})
    assert.same({"start st1 temporary none", "prep_stop st1_state", "stop st1_state+prep"}, r[5])
    assert.equal('{not_started, "st1"}', r[6])
  end)
end)

describe("the application environment", function()
  it("comes from the spec, and get_env/set_env read and change it", function()
    assert.same({"dflt", 4000, 5000, "dflt", "kept", 2, "dflt", "pre"},
      {with_watcher({"env1", "env2"}, function(_, spec, spec2)
        local application = require "moonbeam.application"
        local before = application.get_env("env1", "port", "dflt")
        application.load(spec)
        local port = application.get_env("env1", "port")
        application.set_env("env1", "port", 5000)
        local changed = application.get_env("env1", "port")
        local missing = application.get_env("env1", "nokey", "dflt")
        local all = application.get_all_env("env1")
        local count = 0
        for _ in pairs(all) do count = count + 1 end
        application.set_env("env1", "port", nil)
        local removed = application.get_env("env1", "port", "dflt")
        -- set before the load: wins over the spec's value
        application.set_env("env2", "mode", "pre")
        application.load(spec2)
        return before, port, changed, missing, all.name, count, removed,
          application.get_env("env2", "mode")
      end, app("env1", {env = {port = 4000, name = "kept"}}),
         app("env2", {env = {mode = "spec"}}))})
  end)

  it("raises for a nil key", function()
    local err = with_watcher({}, function()
      local _, e = pcall(require("moonbeam.application").set_env, "env3", nil, 1)
      return e
    end)
    assert.matches("bad argument #2 to 'set_env' (key expected, got nil)", err, 1, true)
  end)
end)

describe("application.which_applications", function()
  it("lists the running applications, last started first", function()
    assert.same({"w2", "w1"}, with_watcher({"w1", "w2", "w3"}, function(_, w1, w2, w3)
      local application = require "moonbeam.application"
      for _, spec in ipairs({w1, w2, w3}) do application.load(spec) end
      application.start("w1")
      application.start("w2")
      local names = {}
      for _, a in ipairs(application.which_applications()) do names[#names + 1] = a.name end
      return names
    end, app("w1"), app("w2"), app("w3")))
  end)
end)

describe("when the top supervisor of an application dies", function()
  before_each(set_test_hook)
  after_each(restore_hook)

  -- Wait (bounded) until `name` is not running any more.
  local function gone(application, name)
    for _ = 1, 500 do
      local found = false
      for _, a in ipairs(application.which_applications()) do
        if a.name == name then found = true end
      end
      if not found then return true end
      require("moonbeam").sleep(10)
    end
    return false
  end

  it("a temporary application is stopped, and the others go on", function()
    local r = {with_watcher({"t1", "t2"}, function(events, a, b, gone)
      local mb = require "moonbeam"
      local application = require "moonbeam.application"
      application.load(a)
      application.load(b)
      application.start("t1")
      application.start("t2")
      mb.exit(mb.whereis("t1_top"), "boom")
      local ended = gone(application, "t1")
      local names = {}
      for _, x in ipairs(application.which_applications()) do names[#names + 1] = x.name end
      return ended, names, events(3)
    end, app("t1"), app("t2"), gone)}
    assert.is_true(r[1])
    assert.same({"t2"}, r[2])
    assert.same({"start t1 temporary none", "start t2 temporary none", "stop t1_state"}, r[3])
  end)

  it("a transient application stops the node when the reason is not normal", function()
    local r = {with_watcher({"tr1", "tr2", "tr3"}, function(events, a, b, c, gone)
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      local application = require "moonbeam.application"
      for _, spec in ipairs({a, b, c}) do application.load(spec) end
      application.start("tr3")
      application.start("tr1", "transient")
      application.start("tr2", "transient")
      events(3)
      -- normal: only tr1 ends
      gen_server.stop("tr1_top", "normal")
      local ended = gone(application, "tr1")
      local after_normal = #application.which_applications()
      -- abnormal: the node stops, the other applications first
      mb.exit(mb.whereis("tr2_top"), "boom")
      return ended, after_normal, events(5), #application.which_applications()
    end, app("tr1"), app("tr2"), app("tr3"), gone)}
    assert.is_true(r[1])
    assert.equal(2, r[2])
    assert.same({"stop tr1_state", "stop tr2_state", "prep_stop tr3_state",
                 "stop tr3_state+prep", 'node_stop {application_terminated, "tr2", "boom"}'}, r[3])
    assert.equal(0, r[4])
  end)

  it("a permanent application stops the node whatever the reason", function()
    local r = {with_watcher({"p1", "p2"}, function(events, a, b)
      local mb = require "moonbeam"
      local gen_server = require "moonbeam.gen_server"
      local application = require "moonbeam.application"
      application.load(a)
      application.load(b)
      application.start("p2")
      application.start("p1", "permanent")
      events(2)
      gen_server.stop("p1_top", "normal")
      return events(4), #application.which_applications()
    end, app("p1"), app("p2"))}
    assert.same({"stop p1_state", "prep_stop p2_state", "stop p2_state+prep",
                 'node_stop {application_terminated, "p1", normal}'}, r[1])
    assert.equal(0, r[2])
  end)
end)

describe("stopping the node by default", function()
  local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

  -- Run a script with the launcher; the exit status and the output.
  local function run_script(source)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(source)
    f:close()
    local p = assert(io.popen("timeout 30 " .. shell_quote(launcher) .. " " ..
      shell_quote(path) .. " 2>&1"))
    local out = p:read("a")
    local _, _, status = p:close()
    os.remove(path)
    return status, out
  end

  local script = [[
    local mb = require "moonbeam"
    local application = require "moonbeam.application"
    local top = {init = function() return "ok", 0 end}
    assert(application.load{name = "doomed", mod = {{
      start = function(_, top)
        return require("moonbeam.gen_server").start_link(top, nil, {name = "doomed_top"})
      end}, top}})
    local start_type = ...
    assert(application.start("doomed", start_type))
    mb.exit(mb.whereis("doomed_top"), "boom")
    -- A permanent application takes the node down: wait for it (the
    -- launcher's timeout bounds the wait if it does not happen).
    if start_type == "permanent" then mb.receive() end
    for _ = 1, 500 do
      if #application.which_applications() == 0 then break end
      mb.sleep(10)
    end
    print("the node is still up")
  ]]

  it("exits with status 1 when a permanent application's top supervisor dies", function()
    local status, out = run_script(script:gsub("%.%.%.", '"permanent"'))
    assert.equal(1, status, out)
    assert.matches('Stopping the node: {application_terminated, "doomed", "boom"}', out, 1, true)
    assert.is_nil(out:find("the node is still up", 1, true))
  end)

  it("goes on when a temporary application's top supervisor dies", function()
    local status, out = run_script(script:gsub("%.%.%.", '"temporary"'))
    assert.equal(0, status, out)
    assert.matches("Application doomed exited\n** (exit) boom\nType: temporary", out, 1, true)
    assert.matches("the node is still up", out, 1, true)
  end)
end)
