-- The dashboard (moonbeam.dashboard): its JSON API, /health, its events,
-- and what it answers to bad input, spoken to over sockets on 127.0.0.1
-- from processes of the node that serves it.  The page in a browser:
-- spec/dashboard_browser_spec.lua; the launcher's flags:
-- spec/dashboard_launcher_spec.lua.
local mb = require "moonbeam"
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- The application controller lives as long as the node: start it before
-- the first example counts processes.
mb.run(function() return #require("moonbeam.application").which_applications() end)

local helpers = [[
  local mb = require "moonbeam"
  local gen_tcp = require "moonbeam.gen_tcp"
  local application = require "moonbeam.application"
  local dashboard = require "moonbeam.dashboard"
  local supervisor = require "moonbeam.supervisor"

  local function stop()
    application.stop("moonbeam_dashboard")
    application.unload("moonbeam_dashboard")
  end

  -- Starts the dashboard afresh (an example that failed may have left
  -- one), and says its port.
  local function start(settings)
    stop()
    settings = settings or {}
    settings.listen = settings.listen or "127.0.0.1:0"
    assert(dashboard.start_dashboard(settings))
    return dashboard.port()
  end

  -- Send raw bytes, read the answer until the server closes:
  -- status, headers (lower-case names), body.
  local function raw(port, bytes)
    local s = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
    gen_tcp.send(s, bytes)
    local out = {}
    while true do
      local d = gen_tcp.recv(s, 0, 10000)
      if not d then break end
      out[#out + 1] = d
    end
    gen_tcp.close(s)
    local text = table.concat(out)
    local head, body = text:match("^(.-)\r\n\r\n(.*)$")
    if not head then return nil, text end
    local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
    local headers = {}
    for k, v in head:gmatch("\r\n([^:]+): ([^\r]*)") do headers[k:lower()] = v end
    return status, headers, body
  end

  local function get(port, path, extra)
    return raw(port, "GET " .. path .. " HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
      .. (extra or "") .. "\r\n")
  end

  -- A field of a JSON text, read by pattern (enough for these checks).
  local function field(json, name)
    return json:match('"' .. name .. '":"?([^",}]*)')
  end
]]

local function run(body)
  return in_process(function(code) return assert(load(code, "example"))() end, helpers .. body)
end

describe("the dashboard's API", function()
  it("answers the node, the processes sorted, one process and the applications' trees", function()
    assert.same({200, "nonode@nohost", "2", 200, "reductions", true, 200, "dashboard_sampler",
                 200, true, "text/html; charset=utf-8"}, {run([[
      local port = start()
      local st, _, node = get(port, "/api/node")
      local st2, _, procs = get(port, "/api/processes?sort=reductions&limit=5")
      -- Largest first: the numbers of reductions, in the order given.
      local reds, sorted = {}, true
      -- Rows are lists: pid, name, status, memory, reductions, ...
      for r in procs:gmatch('%["[^"]*","[^"]*","%a+",%d+,(%d+)') do reds[#reds + 1] = tonumber(r) end
      for i = 2, #reds do sorted = sorted and reds[i] <= reds[i - 1] end
      local sampler = tostring(mb.whereis("dashboard_sampler"))
      local st3, _, proc = get(port, "/api/process?pid=" .. sampler:gsub("[<>]", {["<"] = "%3C", [">"] = "%3E"}))
      local st4, _, apps = get(port, "/api/applications")
      local st5, h5 = get(port, "/")
      stop()
      return st, field(node, "node"), tostring(#mb.statistics().schedulers), st2,
        field(procs, "sort"), sorted and #reds == 5, st3, field(proc, "name"), st4,
        apps:find('"id":"dashboard_sampler"', 1, true) ~= nil, h5["content-type"]
    ]])})
  end)

  it("shows the function a process waits in, in the table and with its stack", function()
    assert.same({200, true, 200, true, true}, {run([[
      local port = start()
      local function wait_for_orders() return mb.receive() end
      local p = mb.spawn(function() wait_for_orders() end)
      mb.register("order_desk", p)
      for _ = 1, 1000 do -- until it waits in receive
        if mb.process_info(p).status == "waiting" then break end
        mb.sleep(1)
      end
      local st, _, procs = get(port, "/api/processes?sort=pid&limit=2000")
      local st2, _, proc = get(port, "/api/process?pid=order_desk")
      mb.exit(p, "kill")
      stop()
      -- The chunk is this example's text: its name and lines are Lua's.
      local fn = "in function 'wait_for_orders'"
      local current = proc:match('"current_function":"(.-)",')
      local stack = proc:match('"stack":(.*)$')
      return st, procs:find('"order_desk","waiting",[%d,]+"[^,]-' .. fn .. '"%]') ~= nil, st2,
        current:sub(-#fn) == fn,
        stack:find('["[C] in function \'receive\'","' .. current .. '"', 1, true) == 1
    ]])})
  end)

  it("shows the mailbox head of a waiting process, and says what it cannot show", function()
    assert.same({200, true, true}, {run([[
      local port = start()
      local me = mb.self()
      local p = mb.spawn(function()
        mb.receive(function(m) return m == "go" end)
        mb.sleep(60000)
      end)
      mb.send(p, "left by a selective receive")
      mb.send(p, "go")
      mb.send(p, "not yet looked at")
      mb.link(p)
      -- Until it has handled the link, and the messages before it, and
      -- waits again (asleep).
      for _ = 1, 2000 do
        local info = mb.process_info(p)
        if info.links[1] == me and info.status == "waiting" then break end
        mb.sleep(1)
      end
      local st, _, proc = get(port, "/api/process?pid=" .. tostring(p))
      mb.unlink(p)
      mb.exit(p, "kill")
      stop()
      return st, proc:find('"messages":["\\"not yet looked at\\""]', 1, true) ~= nil,
        proc:find('"messages_note":"1 message that a selective receive looked at', 1, true) ~= nil
    ]])})
  end)

  it("shows the head of a GenServer's mailbox and its state", function()
    assert.same({200, true, true}, {run([[
      local port = start()
      local gen_server = require "moonbeam.gen_server"
      -- A suspended server handles system messages only: the others
      -- wait in its mailbox.
      local srv = assert(gen_server.start({
        init = function() return "ok", {secret = "s3cret"} end,
        handle_info = function(_, s) return "noreply", s end,
      }))
      require("moonbeam.sys").suspend(srv)
      mb.send(srv, {hello = "mailbox"})
      mb.send(srv, "second")
      local st, _, body = get(port, "/api/state?pid=" .. tostring(srv))
      require("moonbeam.sys").resume(srv)
      gen_server.stop(srv)
      stop()
      return st, body:find("s3cret", 1, true) ~= nil,
        body:find('"messages":["{hello = \\"mailbox\\"}","\\"second\\""]', 1, true) ~= nil
    ]])})
  end)

  it("streams the node and new log lines as server-sent events", function()
    assert.same({true, true, true}, {run([[
      local port = start()
      -- Other specs may have raised the node's level: info, for now.
      local level = mb.log_level()
      mb.log_level("info")
      local s = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      gen_tcp.send(s, "GET /events?level=warning HTTP/1.1\r\nhost: x\r\n\r\n")
      require("moonbeam.logger").warning("a line for the stream")
      require("moonbeam.logger").info("a line below the level")
      mb.log_level(level)
      -- An event a second: the line comes within a few.
      local text = ""
      for _ = 1, 20 do
        local d = gen_tcp.recv(s, 0, 10000)
        if not d then break end
        text = text .. d
        if text:find("a line for the stream", 1, true) then break end
      end
      gen_tcp.close(s)
      stop()
      return text:find("text/event-stream", 1, true) ~= nil,
        text:find("event: node", 1, true) ~= nil,
        text:find("a line for the stream", 1, true) ~= nil
          and not text:find("below the level", 1, true)
    ]])})
  end)

  it("kills a process on POST /api/kill, only with its header", function()
    assert.same({400, true, 200, false, 404}, {run([[
      local port = start()
      local victim = mb.spawn(function() mb.receive() end)
      local path = "/api/kill?pid=" .. tostring(victim)
      local st = raw(port, "POST " .. path .. " HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
      local alive = mb.process_info(victim) ~= nil
      local ref = mb.monitor(victim)
      local st2 = raw(port, "POST " .. path .. " HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        .. "x-moonbeam-dashboard: 1\r\n\r\n")
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 5000)
      local st3 = raw(port, "POST " .. path .. " HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        .. "x-moonbeam-dashboard: 1\r\n\r\n")
      stop()
      return st, alive, st2, mb.process_info(victim) ~= nil, st3
    ]])})
  end)
end)

describe("tracing from the dashboard", function()
  local trace_helpers = [[
    local function post(port, path, header)
      return raw(port, "POST " .. path .. " HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        .. (header or "x-moonbeam-dashboard: 1\r\n") .. "\r\n")
    end

    -- The tracer's id from a start's answer (JSON writes < as \u003c).
    local function id_of(body) return (field(body, "id"):gsub("\\u003c", "<")) end

    -- Open the trace's event stream; its socket.
    local function follow(port, id)
      local s = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      gen_tcp.send(s, "GET /events?trace=" .. id .. " HTTP/1.1\r\nhost: x\r\n\r\n")
      return s
    end

    -- Read the stream until `text` is in it (bounded); all read so far,
    -- with JSON's \u003c as <.
    local function read_until(s, text, got)
      got = got or ""
      for _ = 1, 30 do
        if got:find(text, 1, true) then break end
        local d = gen_tcp.recv(s, 0, 10000)
        if not d then break end
        got = (got .. d):gsub("\\u003c", "<")
      end
      return got
    end

    local echo = function()
      while true do
        local m = mb.receive()
        mb.send(m, "pong")
      end
    end
  ]]

  it("starts a trace of a process, streams its events, and stops it", function()
    assert.same({200, "1", true, true, 409, 200, true}, {run(trace_helpers .. [[
      local port = start()
      local me = mb.self()
      local w = mb.spawn(echo)
      local st, _, body = post(port, "/api/trace?pid=" .. tostring(w) .. "&flags=send,receive&max=10")
      local s = follow(port, id_of(body))
      mb.send(w, me)
      assert(mb.receive(5000) == "pong")
      local text = read_until(s, 'send \\"pong\\" to ' .. tostring(me)) -- as JSON writes it
      -- One session at a time: a second start is refused, the first goes on.
      local st2 = post(port, "/api/trace?pid=" .. tostring(w))
      local st3 = post(port, "/api/trace/stop")
      text = read_until(s, "event: stopped", text)
      gen_tcp.close(s)
      mb.exit(w, "kill")
      stop()
      return st, field(body, "traced"),
        text:find("event: trace\ndata: \"[%d:.]+ " .. tostring(w) .. " receive " .. tostring(me)) ~= nil
          and text:find('send \\"pong\\" to ' .. tostring(me), 1, true) ~= nil,
        text:find("event: stopped\ndata: \"trace stopped: stopped after 2 messages\"", 1, true) ~= nil,
        st2, st3, mb.whereis("dashboard_tracer") == nil
    ]])})
  end)

  it("traces the processes whose registered names match a pattern", function()
    assert.same({200, "2", 200}, {run(trace_helpers .. [[
      local port = start()
      local a, b, c = mb.spawn(echo), mb.spawn(echo), mb.spawn(echo)
      mb.register("trace_me_a", a)
      mb.register("trace_me_b", b)
      mb.register("not_me", c)
      local st, _, body = post(port, "/api/trace?match=^trace_me_&flags=receive")
      local st2 = post(port, "/api/trace/stop")
      for _, p in ipairs({a, b, c}) do mb.exit(p, "kill") end
      stop()
      return st, field(body, "traced"), st2
    ]])})
  end)

  it("ends the trace when the page that follows it goes away", function()
    assert.same({200, true, 1}, {run(trace_helpers .. [[
      local port = start()
      local w = mb.spawn(echo)
      local st, _, body = post(port, "/api/trace?pid=" .. tostring(w) .. "&flags=receive")
      local s = follow(port, id_of(body))
      read_until(s, "text/event-stream")
      local ref = mb.monitor(mb.whereis("dashboard_tracer"))
      gen_tcp.close(s)
      -- The stream sees its client gone at its next write (within 2 s).
      local down = mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 10000)
      -- No trace runs: one that must not replace another starts.
      local n = require("moonbeam.trace").processes(w, "send", {tracer = mb.self(), replace = false})
      require("moonbeam.trace").stop()
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[1] == mb.atom.trace_stopped end, 5000)
      mb.exit(w, "kill")
      stop()
      return st, down ~= nil, n
    ]])})
  end)

  it("answers 400 to bad parameters or a missing header, 404 to an unknown process, 409 to a running trace", function()
    assert.same({400, 400, 400, 400, 400, 404, 404, 409, 404, 404}, {run(trace_helpers .. [[
      local port = start()
      local w = mb.spawn(echo)
      local path = "/api/trace?pid=" .. tostring(w)
      local out = {
        post(port, path, ""), -- no x-moonbeam-dashboard header
        post(port, path .. "&flags=sends"),
        post(port, path .. "&max=0"),
        post(port, path .. "&rate=100000"),
        post(port, "/api/trace?match=%25"), -- a malformed pattern
        post(port, "/api/trace?pid=%3C0.99999.0%3E"),
        (post(port, "/api/trace?match=^no_such_name$")),
      }
      -- A trace started elsewhere (a shell, say) is not replaced.
      require("moonbeam.trace").processes(w, "send", {tracer = mb.self()})
      out[#out + 1] = (post(port, path))
      require("moonbeam.trace").stop()
      out[#out + 1] = (post(port, "/api/trace/stop")) -- none from the dashboard
      local st = get(port, "/events?trace=%3C0.1.0%3E")
      out[#out + 1] = st
      mb.exit(w, "kill")
      stop()
      return table.unpack(out)
    ]])})
  end)
end)

describe("reloading a module from the dashboard", function()
  it("loads a module again on POST /api/reload, only with its header, and says why not", function()
    assert.same({400, 200, true, 404, 400, 422}, {run([[
      local port = start()
      local code = require "moonbeam.code"
      local function post(path, header)
        return (raw(port, "POST " .. path .. " HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
          .. (header or "x-moonbeam-dashboard: 1\r\n") .. "\r\n"))
      end
      -- A module of the node, from a file on its path.
      require "spec.spec_helper_greeter"
      local before = code.version("spec.spec_helper_greeter")
      local st = post("/api/reload?module=spec.spec_helper_greeter", "")
      local st2, _, body = raw(port, "POST /api/reload?module=spec.spec_helper_greeter HTTP/1.1\r\n"
        .. "host: x\r\nconnection: close\r\nx-moonbeam-dashboard: 1\r\n\r\n")
      local reloaded = tonumber(field(body, "version")) == before + 1
        and code.version("spec.spec_helper_greeter") == before + 1
      -- One loaded from a string has no file to load again.
      local name = "dashboard_spec_from_string_" .. os.time()
      code.load(name, "return {}")
      local out = {st, st2, reloaded, post("/api/reload?module=no_such_module_here"),
        post("/api/reload?module=os.execute('x')"), post("/api/reload?module=" .. name)}
      stop()
      return table.unpack(out)
    ]])})
  end)
end)

describe("the dashboard's /health", function()
  it("answers 200 while every permanent application runs, 503 once one does not", function()
    assert.same({200, "ok", 503, "unavailable", "false"}, {run([[
      local port = start()
      local sup = {init = function() return "ok", {strategy = "one_for_one"}, {} end}
      assert(application.load({name = "health_probe", version = "1", description = "",
        mod = {{start = function() return supervisor.start_link(sup) end}, {}}}))
      assert(application.start("health_probe", "permanent"))
      local st, _, body = get(port, "/health")
      application.stop("health_probe")
      local st2, _, body2 = get(port, "/health", "")
      application.unload("health_probe")
      stop()
      -- Without a token every request is authorised: the list is there.
      return st, field(body, "status"), st2, field(body2, "status"),
        body2:match('"running":(%a+)')
    ]])})
  end)
end)

describe("the dashboard under bad input", function()
  it("answers 404 for an unknown process, node or page, and makes no atom of a name", function()
    assert.same({404, 404, 404, 404, 502, true}, {run([[
      local port = start()
      local atoms = mb.statistics().atoms
      local a = get(port, "/api/process?pid=<0.999999.0>")
      local b = get(port, "/api/process?pid=no_such_name_" .. mb.monotonic_time())
      local made = mb.statistics().atoms - atoms
      local c = get(port, "/api/state?pid=" .. ("x"):rep(100))
      local d = get(port, "/nothing/here")
      local e = get(port, "/api/node?node=nobody@nowhere")
      stop()
      return a, b, c, d, e, made == 0
    ]])})
  end)

  it("answers 414 to a huge query, 431 to huge headers, 413 to a body, 400 to a non-HTTP head", function()
    assert.same({414, 431, 413, 400, 200}, {run([[
      local port = start()
      local a = get(port, "/api/processes?q=" .. ("x"):rep(20000))
      local b = get(port, "/api/node", ("x-filler: " .. ("y"):rep(1000) .. "\r\n"):rep(40))
      local c = raw(port, "POST /api/kill HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
      local d = raw(port, "HELLO\r\n\r\n")
      local e = get(port, "/api/node")
      stop()
      return a, b, c, d or 400, e
    ]])})
  end)

  it("answers 408 to a client that does not finish its request in time", function()
    assert.same({408, 200}, {run([[
      local port = start({request_timeout = 200})
      local slow = raw(port, "GET /api/node HTTP/1.1\r\nhost: x\r\n")
      local after = get(port, "/api/node")
      stop()
      return slow, after
    ]])})
  end)

  it("asks for the token when one is set: 401 without it or with a wrong one", function()
    assert.same({401, 401, 200, 200, true, 200, 200, 200}, {run([[
      local token = "t0ken-for-the-spec"
      local port = start({token = token})
      local a = get(port, "/api/node")
      local b = get(port, "/api/node", "authorization: Bearer wrong-token-x\r\n")
      local c = get(port, "/api/node", "authorization: Bearer " .. token .. "\r\n")
      local d, h = get(port, "/?token=" .. token)
      local cookie = (h["set-cookie"] or ""):match("^mb_token=([^;]+)")
      local e = get(port, "/api/node", "cookie: mb_token=" .. tostring(cookie) .. "\r\n")
      local f = get(port, "/api/node", "x-moonbeam-token: " .. token .. "\r\n")
      -- /health answers without the token, with its status only.
      local g, _, body = get(port, "/health")
      stop()
      return a, b, c, d, cookie == token, e, f, body:find("applications") and 0 or g
    ]])})
  end)

  it("refuses to listen on an address other than loopback without a token", function()
    assert.same({false, true}, {run([[
      stop()
      local ok, why = dashboard.start_dashboard({listen = "0.0.0.0:0"})
      application.unload("moonbeam_dashboard")
      return ok == true, tostring(why):find("needs a token", 1, true) ~= nil
    ]])})
  end)

  it("survives the crash of its acceptor and sampler: its supervisor restarts them", function()
    assert.same({200, true, 200}, {run([[
      local port = start()
      local before = get(port, "/api/node")
      local function child(id)
        for _, c in ipairs(supervisor.which_children("moonbeam_dashboard_sup")) do
          if c.id == id then return c.pid end
        end
      end
      local old = child("dashboard_acceptor")
      local ref = mb.monitor(old)
      mb.exit(old, mb.atom.kill)
      mb.exit(mb.whereis("dashboard_sampler"), mb.atom.kill)
      mb.receive(function(m) return mb.typeof(m) == "tuple" and m[2] == ref end, 5000)
      -- The new acceptor has listened once its supervisor has it.
      local new
      for _ = 1, 500 do
        new = child("dashboard_acceptor")
        if new and new ~= old then break end
        mb.sleep(10)
      end
      local after = get(dashboard.port(), "/api/node")
      stop()
      return before, new ~= nil and new ~= old, after
    ]])})
  end)
end)
