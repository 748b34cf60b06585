-- Modelled on OTP's supervisor_SUITE: start order, strategies, restart
-- types, intensity, shutdown, the child API, simple_one_for_one, nesting.
local mb = require "moonbeam"

local function in_process(fn, ...) return mb.run(fn, ...) end

-- Run `body(sup_module_helpers)` in a process that has a log registered as
-- sup_log; returns body's results.
local function with_log(body, ...)
  return mb.run(function(body, ...)
    local mb = require "moonbeam"
    mb.register("sup_log", mb.self())
    local function logged(n)
      local out = {}
      for i = 1, n do
        local m = mb.receive(5000)
        out[i] = m and table.concat(m, " ", 1, m[3] and 3 or 2) or "timeout"
      end
      return out
    end
    return body(logged, ...)
  end, body, ...)
end

local function spec(id, restart, opts)
  return {id = id, start = {"sup_worker", "start_link", {id, opts}}, restart = restart}
end

local function sup_module(flags, children)
  return {init = function() return "ok", flags, children end}
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("supervisor.start_link", function()
  it("starts the children in order and returns the supervisor's pid", function()
    local order, kind = with_log(function(logged, mod)
      local mb = require "moonbeam"
      local sup = require("moonbeam.supervisor").start_link(mod)
      return logged(3), mb.typeof(sup)
    end, sup_module({strategy = "one_for_one"}, {spec("a"), spec("b"), spec("c")}))
    assert.same({"started a", "started b", "started c"}, order)
    assert.equal("pid", kind)
  end)

  it("fails with the child's reason when a child fails to start, stopping those already started", function()
    local why, log = with_log(function(logged, mod)
      local mb = require "moonbeam"
      local _, why = require("moonbeam.supervisor").start_link(mod)
      return {tostring(why[1]), tostring(why[2][1]), why[2][2], why[2][3]}, logged(3)
    end, sup_module({}, {spec("a", nil, {trap = true}), spec("b", nil, {trap = true}),
      spec("c", nil, {fail = true})}))
    assert.same({"shutdown", "failed_to_start_child", "c", "refused_to_start"}, why)
    assert.same({"started a", "started b", "stopped b shutdown"}, log)
    -- (a stops after b: the third line is b's)
  end)

  it("stops its children in reverse order when it stops", function()
    assert.same({"stopped c shutdown", "stopped b shutdown", "stopped a shutdown"},
      with_log(function(logged, mod)
        local gs = require "moonbeam.gen_server"
        require("moonbeam").trap_exit(true)
        local sup = require("moonbeam.supervisor").start_link(mod)
        logged(3)
        gs.stop(sup, "shutdown")
        return logged(3)
      end, sup_module({}, {spec("a", nil, {trap = true}), spec("b", nil, {trap = true}),
        spec("c", nil, {trap = true})})))
  end)
end)

describe("restart strategies", function()
  -- Crash child `victim`, wait for the restarts, return which pids changed.
  local function changed(strategy, victim)
    return with_log(function(logged, mod, victim)
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      local sup = sv.start_link(mod)
      logged(3)
      local before = {}
      for _, c in ipairs(sv.which_children(sup)) do before[c.id] = c.pid end
      pcall(gs.call, before[victim], "crash")
      logged(mod.starts) -- the restarted children's starts
      local after, out = {}, {}
      for _, c in ipairs(sv.which_children(sup)) do after[c.id] = c.pid end
      for _, id in ipairs({"a", "b", "c"}) do
        if after[id] ~= before[id] then out[#out + 1] = id end
      end
      mb.exit(sup, "shutdown")
      return table.concat(out, ",")
    end, {init = sup_module({strategy = strategy}, {spec("a"), spec("b"), spec("c")}).init,
          starts = ({one_for_one = 1, rest_for_one = 2, one_for_all = 3})[strategy]}, victim)
  end

  it("one_for_one restarts only the child that died", function()
    assert.equal("b", changed("one_for_one", "b"))
  end)

  it("rest_for_one restarts the child that died and those started after it", function()
    assert.equal("b,c", changed("rest_for_one", "b"))
  end)

  it("one_for_all restarts every child", function()
    assert.equal("a,b,c", changed("one_for_all", "b"))
  end)
end)

describe("restart types", function()
  local function after_exit(restart, how)
    return with_log(function(logged, mod, how)
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      local sup = sv.start_link(mod)
      logged(1)
      local pid = sv.which_children(sup)[1].pid
      pcall(gs.call, pid, how)
      local m, why = mb.receive(function(m) return m[1] == "started" end, 300)
      local n = sv.count_children(sup)
      mb.exit(sup, "shutdown")
      return m and "restarted" or "not restarted", n.specs
    end, sup_module({}, {spec("w", restart)}), how)
  end

  it("permanent children are restarted after any exit", function()
    assert.same({"restarted", 1}, {after_exit("permanent", "stop_normal")})
    assert.same({"restarted", 1}, {after_exit("permanent", "crash")})
  end)

  it("transient children are restarted only after an abnormal exit", function()
    assert.same({"not restarted", 1}, {after_exit("transient", "stop_normal")})
    assert.same({"restarted", 1}, {after_exit("transient", "crash")})
  end)

  it("temporary children are never restarted, and their spec goes", function()
    assert.same({"not restarted", 0}, {after_exit("temporary", "crash")})
  end)
end)

describe("restart intensity", function()
  it("makes the supervisor shut its children down and exit when exceeded", function()
    local reason, log = with_log(function(logged, mod)
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local gs = require "moonbeam.gen_server"
      mb.log_level("critical" == "x" and "debug" or "error")
      mb.trap_exit(true)
      local sup = sv.start_link(mod)
      logged(2)
      for i = 1, 3 do
        local pid
        for _, c in ipairs(sv.which_children(sup)) do if c.id == "a" then pid = c.pid end end
        pcall(gs.call, pid, "crash")
        if i < 3 then logged(1) end
      end
      local m = mb.receive(function(m) return m[1] == mb.atom.EXIT end, 5000)
      return tostring(m[3]), logged(1)
    end, sup_module({intensity = 2, period = 10}, {spec("a"), spec("b", nil, {trap = true})}))
    assert.equal("shutdown", reason)
    assert.same({"stopped b shutdown"}, log)
  end)

  it("lets the supervisor's own supervisor restart it, in a tree", function()
    assert.is_true(with_log(function(logged, child_mod)
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      local top = sv.start_link({init = function(m)
        return "ok", {strategy = "one_for_one", intensity = 5},
          {{id = "inner", type = "supervisor",
            start = {"moonbeam.supervisor", "start_link", {m}}}}
      end}, child_mod)
      logged(1)
      local inner = sv.which_children(top)[1].pid
      local worker = sv.which_children(inner)[1].pid
      pcall(gs.call, worker, "crash") -- restart 1 (allowed)
      logged(1)
      worker = sv.which_children(inner)[1].pid
      pcall(gs.call, worker, "crash") -- restart 2: over intensity 1
      logged(1) -- the new inner supervisor starts a new worker
      local inner2 = sv.which_children(top)[1].pid
      mb.exit(top, "shutdown")
      return inner2 ~= inner and mb.typeof(inner2) == "pid"
    end, sup_module({intensity = 1, period = 10}, {spec("w")})))
  end)
end)

describe("shutdown", function()
  it("kills a child that does not stop within its shutdown time", function()
    assert.equal("killed", with_log(function(logged)
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      mb.log_level("error")
      local sup = sv.start_link({init = function()
        return "ok", {}, {{id = "s", shutdown = 50,
          start = {"sup_worker", "start_link", {"s", {trap = true, stubborn = true}}}}}
      end})
      logged(1)
      local pid = sv.which_children(sup)[1].pid
      local ref = mb.monitor(pid)
      sv.terminate_child(sup, "s")
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      mb.exit(sup, "shutdown")
      return tostring(down[5])
    end))
  end)

  it("brutal_kill kills the child at once", function()
    assert.equal("killed", in_process(function()
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local sup = sv.start_link({init = function()
        return "ok", {}, {{id = "b", shutdown = "brutal_kill",
          start = {"sup_worker", "start_link", {"b", {trap = true}}}}}
      end})
      local ref = mb.monitor(sv.which_children(sup)[1].pid)
      sv.terminate_child(sup, "b")
      local down = mb.receive(function(m) return m[2] == ref end, 5000)
      mb.exit(sup, "shutdown")
      return tostring(down[5])
    end))
  end)
end)

describe("the child API", function()
  it("starts, terminates, restarts, deletes, lists and counts children", function()
    local r = in_process(function()
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local sup = sv.start_link({init = function() return "ok", {}, {} end})
      local function spec(id, o) return {id = id, start = {"sup_worker", "start_link", {id, o}}} end
      local out = {}
      local p1 = sv.start_child(sup, spec("x"))
      out.started = mb.typeof(p1)
      local _, dup = sv.start_child(sup, spec("x"))
      out.duplicate = tostring(dup[1])
      local _, bad = sv.start_child(sup, spec("y", {fail = true}))
      out.failed = bad
      out.terminated = sv.terminate_child(sup, "x")
      out.not_found = tostring(select(2, sv.terminate_child(sup, "nope")))
      local _, present = sv.start_child(sup, spec("x"))
      out.present = tostring(present)
      local _, running
      local p2 = sv.restart_child(sup, "x")
      out.restarted = p2 ~= p1 and mb.typeof(p2)
      out.running = tostring(select(2, sv.restart_child(sup, "x")))
      out.running_del = tostring(select(2, sv.delete_child(sup, "x")))
      out.counts = sv.count_children(sup)
      out.which = #sv.which_children(sup)
      sv.terminate_child(sup, "x")
      out.deleted = sv.delete_child(sup, "x")
      out.after = sv.count_children(sup).specs
      mb.exit(sup, "shutdown")
      return out
    end)
    assert.same({started = "pid", duplicate = "already_started", failed = "refused_to_start",
      terminated = true, not_found = "not_found", present = "already_present",
      restarted = "pid", running = "running", running_del = "running",
      counts = {specs = 1, active = 1, supervisors = 0, workers = 1}, which = 1,
      deleted = true, after = 0}, r)
  end)
end)

describe("simple_one_for_one and DynamicSupervisor", function()
  it("start children from a template with extra arguments, known by pid", function()
    assert.same({"t1", "t2", 2, 1}, {in_process(function()
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local gs = require "moonbeam.gen_server"
      local sup = sv.start_link({init = function()
        return "ok", {strategy = "simple_one_for_one"},
          {{id = "tmpl", start = {"sup_worker", "start_link", {}}}}
      end})
      local a = sv.start_child(sup, {"t1"})
      local b = sv.start_child(sup, {"t2"})
      local n = sv.count_children(sup).active
      sv.terminate_child(sup, a)
      local left = sv.count_children(sup).specs
      local ids = {gs.call(b, "id")}
      mb.exit(sup, "shutdown")
      return "t1", ids[1], n, left
    end)})
  end)

  it("DynamicSupervisor adds children with their own specs and restarts them", function()
    assert.same({2, true, 1}, {in_process(function()
      local mb = require "moonbeam"
      local ds = require "moonbeam.dynamic_supervisor"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      local sup = ds.start_link({name = "dyn"})
      local a = ds.start_child("dyn", {start = {"sup_worker", "start_link", {"a"}}})
      local b = ds.start_child(sup, {start = {"sup_worker", "start_link", {"b"}}})
      local n = ds.count_children(sup).active
      pcall(gs.call, a, "crash")
      mb.sleep(50)
      local restarted = ds.count_children(sup).active == 2
      ds.terminate_child(sup, b)
      local left = ds.count_children(sup).specs
      mb.exit(sup, "shutdown")
      return n, restarted, left
    end)})
  end)
end)

describe("OTP's documented semantics", function()
  -- Start a supervisor of `children` with `strategy`, crash child
  -- `victim`, wait for the `starts` restarts; the ids in which_children
  -- then, with "-" for those that do not run.
  local function after_crash(strategy, children, victim, starts, before)
    return with_log(function(logged, strategy, children, victim, starts, before)
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local gs = require "moonbeam.gen_server"
      mb.log_level("error")
      mb.trap_exit(true) -- the supervisor's exit at the end is not ours
      local sup = sv.start_link({init = function() return "ok", {strategy = strategy}, children end})
      logged(#children)
      if before then before(sup) end
      local pid
      for _, c in ipairs(sv.which_children(sup)) do if c.id == victim then pid = c.pid end end
      pcall(gs.call, pid, "crash")
      local started = logged(starts)
      local out = {}
      for _, c in ipairs(sv.which_children(sup)) do out[#out + 1] = c.pid and c.id or "-" end
      mb.exit(sup, "shutdown")
      return table.concat(out, ","), table.concat(started, ",")
    end, strategy, children, victim, starts, before)
  end

  it("stops a temporary child and drops its spec when a sibling's crash restarts the group", function()
    assert.same({"a,c", "started a,started c"},
      {after_crash("one_for_all", {spec("a"), spec("t", "temporary"), spec("c")}, "a", 2)})
    assert.same({"a,c", "started a,started c"},
      {after_crash("rest_for_one", {spec("a"), spec("t", "temporary"), spec("c")}, "a", 2)})
  end)

  it("starts a child stopped by terminate_child again with the others in a one_for_all restart", function()
    assert.same({"a,b,c", "started a,started b,started c"},
      {after_crash("one_for_all", {spec("a"), spec("b"), spec("c")}, "a", 3, function(sup)
        require("moonbeam.supervisor").terminate_child(sup, "b")
      end)})
  end)

  it("keeps no spec of a temporary child whose start returns ignore", function()
    assert.same({0, "ignore", 0, 1}, {in_process(function()
      local sv = require "moonbeam.supervisor"
      local mb = require "moonbeam"
      mb.trap_exit(true) -- the supervisor's exit is not ours
      local ignored = {id = "i", start = {"sup_worker", "start_link", {"i", {ignore = true}}},
                       restart = "temporary"}
      local sup = sv.start_link({init = function() return "ok", {}, {ignored} end})
      local at_init = sv.count_children(sup).specs
      local _, why = sv.start_child(sup, ignored)
      local after = sv.count_children(sup).specs
      ignored.restart = "permanent" -- a permanent one's spec stays, as in OTP
      sv.start_child(sup, ignored)
      local kept = sv.count_children(sup).specs
      mb.exit(sup, "shutdown")
      return at_init, tostring(why), after, kept
    end)})
  end)

  it("DynamicSupervisor ignores child ids and keeps to max_children", function()
    assert.same({3, "max_children", 2}, {in_process(function()
      local mb = require "moonbeam"
      local ds = require "moonbeam.dynamic_supervisor"
      mb.trap_exit(true) -- the supervisors' exits are not ours
      local one = {id = "same", start = {"sup_worker", "start_link", {"w"}}}
      local sup = ds.start_link()
      for _ = 1, 3 do assert(ds.start_child(sup, one)) end
      local n = ds.count_children(sup).active
      mb.exit(sup, "shutdown")
      local small = ds.start_link({max_children = 2})
      assert(ds.start_child(small, one))
      assert(ds.start_child(small, one))
      local pid, why = ds.start_child(small, one)
      local active = ds.count_children(small).active
      mb.exit(small, "shutdown")
      return pid == nil and n, tostring(why), active
    end)})
  end)

  it("simple_one_for_one's count_children reports one spec", function()
    assert.same({1, 2, 2}, {in_process(function()
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      mb.trap_exit(true) -- the supervisor's exit is not ours
      local sup = sv.start_link({init = function()
        return "ok", {strategy = "simple_one_for_one"},
          {{id = "tmpl", start = {"sup_worker", "start_link", {}}}}
      end})
      sv.start_child(sup, {"t1"})
      sv.start_child(sup, {"t2"})
      local n = sv.count_children(sup)
      mb.exit(sup, "shutdown")
      return n.specs, n.active, n.workers
    end)})
  end)
end)

describe("supervisor.get_childspec and check_childspecs", function()
  it("get_childspec returns a child's spec with the defaults, or not_found", function()
    assert.same({"w1", "permanent", "worker", 5000, "sup_worker", "nil", "not_found"},
      {in_process(function(mod)
        local mb = require "moonbeam"
        local sv = require "moonbeam.supervisor"
        local sup = sv.start_link(mod)
        local spec = sv.get_childspec(sup, "w1")
        local none, why = sv.get_childspec(sup, "nobody")
        mb.exit(sup, "shutdown")
        return spec.id, spec.restart, spec.type, spec.shutdown, spec.start[1],
          tostring(none), tostring(why)
      end, sup_module({}, {spec("w1")}))})
  end)

  it("get_childspec of a simple_one_for_one child, by pid, is its template", function()
    assert.same({"tmpl", "temporary", "not_found"}, {in_process(function()
      local mb = require "moonbeam"
      local sv = require "moonbeam.supervisor"
      local sup = sv.start_link({init = function()
        return "ok", {strategy = "simple_one_for_one"},
          {{id = "tmpl", restart = "temporary", start = {"sup_worker", "start_link", {}}}}
      end})
      local a = sv.start_child(sup, {"t1"})
      local spec = sv.get_childspec(sup, a)
      local _, why = sv.get_childspec(sup, "tmpl")
      mb.exit(sup, "shutdown")
      return spec.id, spec.restart, tostring(why)
    end)})
  end)

  it("check_childspecs accepts good specs and names what is wrong with bad ones", function()
    local sv = require "moonbeam.supervisor"
    assert.is_true(sv.check_childspecs({spec("a"), spec("b", "temporary")}))
    assert.is_true(sv.check_childspecs({}))
    local none, why = sv.check_childspecs({spec("a"), {id = "b"}})
    assert.is_nil(none)
    assert.equal("bad_child_spec", tostring(why[1]))
    assert.truthy(why[2]:find("start must be", 1, true))
    none, why = sv.check_childspecs({spec("a"), spec("a")})
    assert.same({"duplicate_child_name", "a"}, {tostring(why[1]), why[2]})
    none, why = sv.check_childspecs({spec("a", "sometimes")})
    assert.truthy(why[2]:find("bad restart", 1, true))
  end)
end)
