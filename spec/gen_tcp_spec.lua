-- gen_tcp: sockets owned by processes, on 127.0.0.1 and ports the kernel
-- picks.  Each example runs in a process of its own and leaves no process
-- behind; its sockets close with the processes that own them.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

-- Shared by the examples, inside their processes: a listener on a free
-- port, and a process that connects to it and runs fn(sock).
local helpers = [[
  local mb = require "moonbeam"
  local gen_tcp = require "moonbeam.gen_tcp"
  local function listener(opts)
    opts = opts or {}
    opts.ip = "127.0.0.1"
    local l = assert(gen_tcp.listen(0, opts))
    return l, gen_tcp.port(l)
  end
  local function client(port, opts, fn)
    local me = mb.self()
    return mb.spawn(function()
      local c = assert(gen_tcp.connect("127.0.0.1", port, opts, 5000))
      fn(c, me)
    end)
  end
  return mb, gen_tcp, listener, client
]]

-- The helpers and the example make one chunk, so that functions sent to
-- other processes refer only to modules and globals.
local function run(body)
  return in_process(function(code)
    return assert(load(code, "example"))()
  end, helpers:gsub("return mb, gen_tcp, listener, client\n", "") .. body)
end

describe("gen_tcp.connect and accept", function()
  it("deliver data as {tcp, Sock, Data} to the owner in active mode", function()
    assert.same({"tcp", true, "hello"}, {run([[
      local l, port = listener()
      client(port, {}, function(c) gen_tcp.send(c, "hello"); mb.receive(5000) end)
      local s = assert(gen_tcp.accept(l, 5000))
      local m = mb.receive(5000)
      gen_tcp.close(l)
      return tostring(m[1]), m[2] == s, m[3]
    ]])})
  end)

  it("resolve a host name without blocking, as inet does (IPv4)", function()
    assert.same({"127.0.0.1", true}, {run([[
      local l, port = listener({active = false})
      local c = assert(gen_tcp.connect("localhost", port, {}, 5000))
      local s = assert(gen_tcp.accept(l, 5000))
      local ip, p = gen_tcp.peername(c)
      local _, sp = gen_tcp.sockname(s)
      return ip, p == sp
    ]])})
  end)

  it("return nil, econnrefused when nothing listens", function()
    assert.same({"nil", "econnrefused"}, {run([[
      local l, port = listener()
      gen_tcp.close(l)
      local c, why = gen_tcp.connect("127.0.0.1", port, {}, 5000)
      return tostring(c), tostring(why)
    ]])})
  end)

  it("return nil, nxdomain for a name that does not resolve", function()
    assert.same({"nil", "nxdomain"}, {run([[
      local c, why = gen_tcp.connect("no-such-host.invalid", 80, {}, 5000)
      return tostring(c), tostring(why)
    ]])})
  end)

  it("give up with timeout on a listener whose queue is full", function()
    assert.same("timeout", run([[
      local l, port = listener({backlog = 1, active = false})
      -- Connections that are never accepted fill the queue; then the
      -- kernel drops the SYNs and a connect can only time out.
      for _ = 1, 64 do
        local c, why = gen_tcp.connect("127.0.0.1", port, {}, 300)
        if not c then return tostring(why) end
      end
      return "never timed out"
    ]]))
  end)

  it("raise on an unknown option, a mistake in the program", function()
    local ok, err = pcall(run, [[
      return gen_tcp.listen(0, {activ = true})
    ]])
    assert.is_false(ok)
    assert.matches("unknown socket option 'activ'", tostring(err))
  end)

  -- Acceptors queued in order: each asks with the raw binding (which
  -- queues the accept and returns at once) before the next starts.
  local acceptors = [[
      local sock = require "moonbeam.socket"
      local me = mb.self()
      local function acceptor(l, name, timeout)
        local pid = mb.spawn(function()
          local ref = sock.accept(l, timeout)
          mb.send(me, "asked")
          local s, why = gen_tcp.await(ref)
          if not s then mb.send(me, name .. " " .. tostring(why)) return end
          local m = mb.receive(5000)
          mb.send(me, name .. " got " .. tostring(m and m[3]))
        end)
        assert(mb.receive(5000) == "asked")
        return pid
      end
      local function connect_and_say(port, text)
        client(port, {}, function(c) gen_tcp.send(c, text); mb.receive(5000) end)
      end
  ]]

  it("serves acceptors waiting on one listening socket in order", function()
    assert.same({"a got one", "b got two", "c got three"}, {run(acceptors .. [[
      local l, port = listener()
      acceptor(l, "a", 5000); acceptor(l, "b", 5000); acceptor(l, "c", 5000)
      local got = {}
      for _, text in ipairs({"one", "two", "three"}) do
        connect_and_say(port, text)
        got[#got + 1] = mb.receive(5000)
      end
      gen_tcp.close(l)
      return table.unpack(got)
    ]])})
  end)

  it("times out a queued acceptor alone, skips one that ended, and answers closed to the rest", function()
    assert.same({"b timeout", "d got one", "e closed"}, {run(acceptors .. [[
      local l, port = listener()
      local a = acceptor(l, "a", nil)
      acceptor(l, "b", 50)
      local b_said = mb.receive(5000)
      -- a ends while waiting; c ends while queued; d is next
      local c = acceptor(l, "c", nil)
      mb.monitor(a); mb.monitor(c)
      mb.exit(a, mb.atom.kill)
      mb.exit(c, mb.atom.kill)
      for _ = 1, 2 do
        assert(mb.receive(function(m) return m[1] == mb.atom.DOWN end, 5000))
      end
      acceptor(l, "d", nil)
      acceptor(l, "e", nil)
      connect_and_say(port, "one")
      local d_said = mb.receive(5000)
      gen_tcp.close(l)
      return b_said, d_said, mb.receive(5000)
    ]])})
  end)
end)

describe("gen_tcp passive mode", function()
  it("takes exactly n raw bytes with recv, and data left over stays", function()
    assert.same({"abc", "defg"}, {run([[
      local l, port = listener({active = false})
      client(port, {}, function(c) gen_tcp.send(c, "abcdefg"); mb.receive(5000) end)
      local s = assert(gen_tcp.accept(l, 5000))
      return gen_tcp.recv(s, 3, 5000), gen_tcp.recv(s, 4, 5000)
    ]])})
  end)

  it("times out a recv and keeps the socket usable", function()
    assert.same({"nil", "timeout", "late"}, {run([[
      local l, port = listener({active = false})
      local cl = client(port, {}, function(c, me)
        mb.receive(5000); gen_tcp.send(c, "late"); mb.receive(5000)
      end)
      local s = assert(gen_tcp.accept(l, 5000))
      local d, why = gen_tcp.recv(s, 0, 50)
      mb.send(cl, "go")
      return tostring(d), tostring(why), gen_tcp.recv(s, 0, 5000)
    ]])})
  end)

  it("frames {packet, 4} both ways: the header is added and taken off", function()
    assert.same({"\0\0\0\5hello", "world"}, {run([[
      local l, port = listener({active = false})
      client(port, {packet = 4, active = false}, function(c, me)
        gen_tcp.send(c, "hello")
        mb.send(me, gen_tcp.recv(c, 0, 5000))
      end)
      local s = assert(gen_tcp.accept(l, 5000))
      local raw = gen_tcp.recv(s, 9, 5000)
      gen_tcp.send(s, "\0\0\0\5world")
      return raw, mb.receive(5000)
    ]])})
  end)

  it("frames lines, newline included, across reads", function()
    assert.same({"one\n", "two\n", "three\n"}, {run([[
      local l, port = listener({active = false, packet = "line"})
      client(port, {}, function(c)
        gen_tcp.send(c, "one\ntw"); gen_tcp.send(c, "o\nthree\n"); mb.receive(5000)
      end)
      local s = assert(gen_tcp.accept(l, 5000))
      return gen_tcp.recv(s, 0, 5000), gen_tcp.recv(s, 0, 5000),
        gen_tcp.recv(s, 0, 5000)
    ]])})
  end)

  it("returns nil, closed after the peer closes, once the data are taken", function()
    assert.same({"bye", "nil", "closed"}, {run([[
      local l, port = listener({active = false})
      client(port, {}, function(c) gen_tcp.send(c, "bye"); gen_tcp.close(c) end)
      local s = assert(gen_tcp.accept(l, 5000))
      local d = gen_tcp.recv(s, 3, 5000)
      local again, why = gen_tcp.recv(s, 0, 5000)
      return d, tostring(again), tostring(why)
    ]])})
  end)

  it("refuses recv in active mode with einval", function()
    assert.same("einval", run([[
      local l, port = listener()
      local c = assert(gen_tcp.connect("127.0.0.1", port, {}, 5000))
      local _, why = gen_tcp.recv(c, 0, 100)
      return tostring(why)
    ]]))
  end)
end)

describe("gen_tcp active once and N", function()
  it("delivers one packet with once; the next waits in the kernel for recv", function()
    assert.same({"a\n", 0, "b\n"}, {run([[
      local l, port = listener({active = "once", packet = "line"})
      client(port, {}, function(c) gen_tcp.send(c, "a\nb\n"); mb.receive(5000) end)
      local s = assert(gen_tcp.accept(l, 5000))
      local m = mb.receive(5000)
      -- now passive: the second line was not sent as a message
      local queued = mb.process_info(mb.self()).message_queue_len
      return m[3], queued, gen_tcp.recv(s, 0, 5000)
    ]])})
  end)

  it("sends {tcp_passive, Sock} when an {active, N} count is spent", function()
    assert.same({"1\n", "2\n", "tcp_passive", true}, {run([[
      local l, port = listener({active = 2, packet = "line"})
      client(port, {}, function(c) gen_tcp.send(c, "1\n2\n3\n"); mb.receive(5000) end)
      local s = assert(gen_tcp.accept(l, 5000))
      local a, b, p = mb.receive(5000), mb.receive(5000), mb.receive(5000)
      return a[3], b[3], tostring(p[1]), p[2] == s
    ]])})
  end)

  it("sends {tcp_closed, Sock} when the peer closes", function()
    assert.same({"tcp", "tcp_closed"}, {run([[
      local l, port = listener()
      client(port, {}, function(c) gen_tcp.send(c, "x"); gen_tcp.close(c) end)
      assert(gen_tcp.accept(l, 5000))
      local a = mb.receive(5000)
      local b = mb.receive(5000)
      return tostring(a[1]), tostring(b[1])
    ]])})
  end)
end)

describe("gen_tcp ownership", function()
  it("closes a socket when its owner ends", function()
    assert.same({"nil", "closed"}, {run([[
      local l, port = listener({active = false})
      local owner = client(port, {}, function(c) mb.receive() end)
      local s = assert(gen_tcp.accept(l, 5000))
      mb.exit(owner, "kill")
      local d, why = gen_tcp.recv(s, 0, 5000)
      return tostring(d), tostring(why)
    ]])})
  end)

  it("refuses controlling_process to a process that is not the owner", function()
    assert.same({"nil", "not_owner"}, {run([[
      local l = listener()
      local me = mb.self()
      mb.spawn(function()
        local ok, why = gen_tcp.controlling_process(l, mb.self())
        mb.send(me, {tostring(ok), tostring(why)})
      end)
      local r = mb.receive(5000)
      return r[1], r[2]
    ]])})
  end)

  it("hands a socket over with controlling_process, in order, keeping nothing", function()
    assert.same({"one\n", "two\n", "three\n", 0}, {run([[
      local l, port = listener({packet = "line"})
      local me = mb.self()
      -- passive, so that the heir's end closing it sends nothing here
      local c = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      local s = assert(gen_tcp.accept(l, 5000))
      -- some of these may already be in this mailbox when it hands over
      gen_tcp.send(c, "one\ntwo\n")
      local heir = mb.spawn(function()
        local got = {}
        for i = 1, 3 do got[i] = mb.receive(5000)[3] end
        mb.send(me, got)
      end)
      assert(gen_tcp.controlling_process(s, heir))
      gen_tcp.send(c, "three\n")
      local got = mb.receive(5000)
      return got[1], got[2], got[3],
        mb.process_info(mb.self()).message_queue_len
    ]])})
  end)

  it("goes on with the new owner when the old one ends in the middle of a handover", function()
    assert.same({"after\n"}, {run([[
      local l, port = listener({packet = "line"})
      local me = mb.self()
      local c = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      local heir = mb.spawn(function()
        local m = mb.receive(5000)
        mb.send(me, m and m[3] or "nothing")
      end)
      -- the old owner hands over with the raw binding, then ends before
      -- delivery resumes (gen_tcp.controlling_process resumes it)
      local old = mb.spawn(function()
        local s = assert(gen_tcp.accept(l, 5000))
        assert(gen_tcp.await(require("moonbeam.socket").controlling_process(s, heir)))
      end)
      mb.monitor(old)
      assert(mb.receive(function(m) return m[1] == mb.atom.DOWN end, 5000))
      gen_tcp.send(c, "after\n")
      return mb.receive(5000)
    ]])})
  end)
end)

describe("gen_tcp and memory limits", function()
  it("ends an owner that goes over max_heap with data in flight, alone, and closes its socket", function()
    assert.same({"memory_limit", true, true}, {run([[
      local l, port = listener()
      local me = mb.self()
      local victim = mb.spawn_opt({monitor = true, max_heap = 2000000}, function()
        local s = assert(gen_tcp.accept(l, 5000))
        mb.send(me, "accepted")
        -- what arrives stays queued, counted against the limit
        mb.receive(function(m) return m == "never" end)
      end)
      local c = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      assert(mb.receive(function(m) return m == "accepted" end, 5000))
      local chunk = ("x"):rep(65536)
      for _ = 1, 1000 do -- 64 MB at most; sends fail once it is closed
        if not gen_tcp.send(c, chunk) then break end
      end
      local down = mb.receive(function(m)
        return type(m) == "table" and m[1] == mb.atom.DOWN
      end, 5000)
      -- the peer sees the close (after what was in flight, if anything)
      local why
      repeat
        local data
        data, why = gen_tcp.recv(c, 0, 5000)
      until not data
      gen_tcp.close(c)
      return tostring(down[5][1]),
        why == mb.atom.closed or why == mb.atom.econnreset or tostring(why),
        mb.is_alive(mb.self())
    ]])})
  end)
end)

describe("gen_tcp bad input", function()
  it("closes a socket that announces a packet over packet_size, and only it", function()
    assert.same({"tcp_error", "emsgsize", "tcp_closed", "still here"}, {run([[
      local l, port = listener({packet = 4, packet_size = 1024})
      client(port, {}, function(c)
        gen_tcp.send(c, "\127\255\255\255garbage"); mb.receive(5000)
      end)
      assert(gen_tcp.accept(l, 5000))
      local e = mb.receive(5000)
      local closed = mb.receive(5000)
      -- the listener still serves the next peer
      client(port, {}, function(c) gen_tcp.send(c, "\0\0\0\10still here"); mb.receive(5000) end)
      assert(gen_tcp.accept(l, 5000))
      local ok = mb.receive(5000)
      return tostring(e[1]), tostring(e[3]), tostring(closed[1]), ok[3]
    ]])})
  end)

  it("closes a socket whose line grows past packet_size", function()
    assert.same({"nil", "emsgsize"}, {run([[
      local l, port = listener({packet = "line", packet_size = 100, active = false})
      client(port, {}, function(c) gen_tcp.send(c, ("x"):rep(500)); mb.receive(5000) end)
      local s = assert(gen_tcp.accept(l, 5000))
      local d, why = gen_tcp.recv(s, 0, 5000)
      return tostring(d), tostring(why)
    ]])})
  end)

  it("makes a sender to a peer that reads nothing wait, then fail with send_timeout", function()
    assert.same("timeout", run([[
      local l, port = listener({active = false, recbuf = 4096})
      local c = assert(gen_tcp.connect("127.0.0.1", port,
        {send_timeout = 200, sndbuf = 4096}, 5000))
      local s = assert(gen_tcp.accept(l, 5000))
      local chunk = ("x"):rep(65536)
      for _ = 1, 1000 do
        local ok, why = gen_tcp.send(c, chunk)
        if not ok then return tostring(why) end
      end
      return "never blocked"
    ]]))
  end)
end)

describe("gen_tcp on other address families", function()
  local H = require "spec.launcher_helper"

  it("serves a Unix-domain socket at a path, with the same API", function()
    local dir = H.tmpdir()
    local ok, a, b, c = pcall(run, ([[
      local path = %q
      local l = assert(gen_tcp.listen({path = path}, {packet = "line", active = false}))
      local me = mb.self()
      mb.spawn(function()
        local c = assert(gen_tcp.connect({path = path}, nil, {packet = "line"}, 5000))
        gen_tcp.send(c, "over a path\n")
        mb.send(me, mb.receive(5000)[3])
      end)
      local s = assert(gen_tcp.accept(l, 5000))
      local line = gen_tcp.recv(s, 0, 5000)
      gen_tcp.send(s, "back\n")
      local name = gen_tcp.sockname(l)
      gen_tcp.close(l)
      return line, mb.receive(5000), name == path
    ]]):format(dir .. "/s.sock"))
    H.remove(dir)
    assert(ok, a)
    assert.same({"over a path\n", "back\n", true}, {a, b, c})
  end)

  it("connects over IPv6 loopback when the host has it", function()
    local v = run([[
      local l, why = gen_tcp.listen(0, {ip = "::1", active = false})
      if not l then return "no IPv6: " .. tostring(why) end
      local c = assert(gen_tcp.connect("::1", gen_tcp.port(l), {}, 5000))
      local s = assert(gen_tcp.accept(l, 5000))
      gen_tcp.send(c, "six")
      local ip = gen_tcp.peername(s)
      return gen_tcp.recv(s, 3, 5000) .. " " .. ip
    ]])
    if v:match("^no IPv6") then pending(v) return end
    assert.equal("six ::1", v)
  end)
end)

describe("gen_tcp {packet = \"http\"}", function()
  it("takes a request head as {http_request, Method, Uri, Version, Headers}, the body raw", function()
    assert.same({"http_request", "POST", "/a?b=1", 1, 1, "host", "x", "hello", "tail"}, {run([[
      local l, port = listener({packet = "http", active = false})
      client(port, {}, function(c)
        gen_tcp.send(c, "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhellotail")
        mb.receive(5000)
      end)
      local s = assert(gen_tcp.accept(l, 5000))
      local h = assert(gen_tcp.recv(s, 0, 5000))
      gen_tcp.setopts(s, {packet = "raw"})
      local body = gen_tcp.recv(s, 5, 5000)
      return tostring(h[1]), h[2], h[3], h[4][1], h[4][2], h[5][1][1], h[5][1][2],
        body, gen_tcp.recv(s, 4, 5000)
    ]])})
  end)

  it("delivers response heads as {http, Sock, {http_response, ...}} in active mode", function()
    assert.same({"http", "http_response", 404, "Not Found", "server"}, {run([[
      local l, port = listener({active = false})
      client(port, {}, function(c)
        gen_tcp.send(c, "HTTP/1.1 404 Not Found\r\nServer: y\r\n\r\n")
        mb.receive(5000)
      end)
      local s = assert(gen_tcp.accept(l, 5000))
      gen_tcp.setopts(s, {packet = "http_response", active = "once"})
      local m = mb.receive(5000)
      return tostring(m[1]), tostring(m[3][1]), m[3][3], m[3][4], m[3][5][1][1]
    ]])})
  end)

  it("closes the socket with http_error on a malformed head", function()
    assert.same({"tcp_error", "http_error", "tcp_closed"}, {run([[
      local l, port = listener({packet = "http"})
      client(port, {}, function(c) gen_tcp.send(c, "GET / HTTP/1.1\r\nBad Header\r\n\r\n"); mb.receive(5000) end)
      assert(gen_tcp.accept(l, 5000))
      local a, b = mb.receive(5000), mb.receive(5000)
      return tostring(a[1]), tostring(a[3]), tostring(b[1])
    ]])})
  end)
end)
