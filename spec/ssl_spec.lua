-- moonbeam.ssl: TLS sockets owned by processes.  The certificates are made
-- here with the openssl command (a test CA, a server and a client
-- certificate, and a second CA nobody trusts) in a temporary directory
-- removed at the end; peers are moonbeam's and Erlang's ssl, on 127.0.0.1.
local mb = require "moonbeam"
local H = require "spec.launcher_helper"
-- every process an example starts ends with it
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

local have_erl = os.execute("command -v erl > /dev/null 2>&1") == true
local dir

local function sh(cmd)
  assert(os.execute("cd " .. H.quote(dir) .. " && " .. cmd .. " > /dev/null 2>&1"), cmd)
end

-- A key and a certificate signed by ca (or self-signed when ca is nil).
local function cert(name, cn, ca, san)
  sh(("openssl req -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj '/CN=%s'")
    :format(name, name, cn))
  if san then H.write(dir .. "/" .. name .. ".ext", "subjectAltName=" .. san .. "\n") end
  local ext = san and (" -extfile " .. name .. ".ext") or ""
  if ca then
    sh(("openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -out %s.pem -days 2%s")
      :format(name, ca, ca, name, ext))
  else
    sh(("openssl x509 -req -in %s.csr -signkey %s.key -out %s.pem -days 2%s")
      :format(name, name, name, ext))
  end
end

setup(function()
  dir = H.tmpdir()
  cert("ca", "moonbeam test ca")
  cert("other_ca", "untrusted ca")
  cert("server", "localhost", "ca", "DNS:localhost,IP:127.0.0.1")
  cert("client", "client", "ca")
end)

teardown(function() H.remove(dir) end)

-- Run body (Lua source) in a process with `ssl`, `gen_tcp`, `mb` and the
-- certificate directory `d` (ending in "/") as locals.
local function run(body, ...)
  return mb.run(function(code, d, ...)
    local prelude = "local mb, ssl, gen_tcp, d = ...; "
    return assert(load(prelude .. code, "example"))(require "moonbeam",
      require "moonbeam.ssl", require "moonbeam.gen_tcp", d, ...)
  end, body, dir .. "/", ...)
end

-- A TLS server that accepts one connection and answers each packet in
-- upper case; `opts` are its listen options.  Its result goes to `me`.
-- It keeps its socket open until finish(), which waits for its end.
local server = [[
  local servers = {}
  local function finish()
    for _, pid in ipairs(servers) do
      local ref = mb.monitor(pid)
      mb.send(pid, "finish")
      assert(mb.receive(function(m)
        return type(m) == "table" and m[1] == mb.atom.DOWN and m[2] == ref
      end, 5000))
    end
  end
  local function serve(opts, me)
    opts.ip = "127.0.0.1"
    opts.certfile = opts.certfile or d .. "server.pem"
    opts.keyfile = opts.keyfile or d .. "server.key"
    local l = assert(ssl.listen(0, opts))
    local port = ssl.port(l)
    servers[#servers + 1] = mb.spawn(function()
      local s, why = ssl.accept(l, 5000)
      if not s then mb.send(me, {"server", tostring(why)}) end
      local data = s and ssl.recv(s, 0, 5000)
      if data then ssl.send(s, data:upper()) end
      if s then
        mb.send(me, {"server", data or "no data", ssl.peer_subject(s) or "no cert",
                     ssl.negotiated_protocol(s) or "none"})
      end
      mb.receive(function(m) return m == "finish" end, 5000)
    end)
    return port, l
  end
]]

describe("moonbeam.ssl", function()
  it("talks to a server whose certificate its CA signed, by IP and by name", function()
    assert.same({"HELLO", "ssl", "HELLO", "hello", "NAME"}, {run(server .. [[
      local me = mb.self()
      local port = serve({active = false}, me)
      local c = assert(ssl.connect("127.0.0.1", port, {cacertfile = d .. "ca.pem", active = false}, 5000))
      ssl.send(c, "hello")
      local back = ssl.recv(c, 0, 5000)
      local srv = mb.receive(function(m) return m[1] == "server" end, 5000)
      -- by name (checked and sent as SNI), active mode
      port = serve({active = false}, me)
      local c2 = assert(ssl.connect("localhost", port, {cacertfile = d .. "ca.pem"}, 5000))
      ssl.send(c2, "name")
      local m = mb.receive(function(m) return m[2] == c2 end, 5000)
      local result = {back, tostring(m[1]), back, srv[2], m[3]}
      finish()
      return table.unpack(result, 1, 5)
    ]])})
  end)

  it("verifies by default: refuses a server its CA did not sign, or another name", function()
    assert.same({"nil", "bad_certificate", "nil", "bad_certificate"}, {run(server .. [[
      local me = mb.self()
      local port = serve({}, me)
      local c, why = ssl.connect("127.0.0.1", port, {cacertfile = d .. "other_ca.pem"}, 5000)
      port = serve({}, me)
      local c2, why2 = ssl.connect("127.0.0.1", port,
        {cacertfile = d .. "ca.pem", server_name_indication = "other.example"}, 5000)
      local result = {tostring(c), tostring(why), tostring(c2), tostring(why2)}
      finish()
      return table.unpack(result, 1, 5)
    ]])})
  end)

  it("does mutual TLS: the server refuses a client without a certificate", function()
    assert.same({"bad_certificate", "HI", "/CN=client"}, {run(server .. [[
      local me = mb.self()
      local strict = {verify = "verify_peer", fail_if_no_peer_cert = true,
                      cacertfile = d .. "ca.pem", active = false}
      local port = serve(strict, me)
      -- with TLS 1.3 the client may finish first; the server decides
      ssl.connect("127.0.0.1", port, {cacertfile = d .. "ca.pem"}, 5000)
      local refused = mb.receive(function(m) return m[1] == "server" end, 5000)
      port = serve({verify = "verify_peer", fail_if_no_peer_cert = true,
                    cacertfile = d .. "ca.pem", active = false}, me)
      local c = assert(ssl.connect("127.0.0.1", port, {cacertfile = d .. "ca.pem",
        certfile = d .. "client.pem", keyfile = d .. "client.key", active = false}, 5000))
      ssl.send(c, "hi")
      local back = ssl.recv(c, 0, 5000)
      local ok = mb.receive(function(m) return m[1] == "server" end, 5000)
      local result = {refused[2], back, ok[3]}
      finish()
      return table.unpack(result, 1, 5)
    ]])})
  end)

  it("negotiates ALPN: the server's first choice that the client offers", function()
    assert.same({"h2", "h2"}, {run(server .. [[
      local me = mb.self()
      local port = serve({alpn_preferred_protocols = {"h2", "http/1.1"}, active = false}, me)
      local c = assert(ssl.connect("127.0.0.1", port, {cacertfile = d .. "ca.pem",
        alpn_advertised_protocols = {"http/1.1", "h2"}, active = false}, 5000))
      ssl.send(c, "x")
      local srv = mb.receive(function(m) return m[1] == "server" end, 5000)
      local result = {ssl.negotiated_protocol(c), srv[4]}
      finish()
      return table.unpack(result, 1, 5)
    ]])})
  end)

  it("drops a peer that stops half-way through the handshake, and only it", function()
    assert.same({"timeout", "handshake_failure", "FINE"}, {run([[
      local l = assert(ssl.listen(0, {ip = "127.0.0.1", certfile = d .. "server.pem",
        keyfile = d .. "server.key", handshake_timeout = 200, active = false}))
      local port = ssl.port(l)
      -- the start of a ClientHello record, then nothing
      local half = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      gen_tcp.send(half, "\22\3\1\2\0\1\0\1\252")
      local _, why1 = ssl.accept(l, 5000)
      -- plain text where a handshake should be
      local junk = assert(gen_tcp.connect("127.0.0.1", port, {active = false}, 5000))
      gen_tcp.send(junk, "GET / HTTP/1.1\r\n\r\n")
      local _, why2 = ssl.accept(l, 5000)
      -- the listener still serves
      local me = mb.self()
      mb.spawn(function()
        local c = assert(ssl.connect("127.0.0.1", port, {cacertfile = d .. "ca.pem", active = false}, 5000))
        ssl.send(c, "fine")
        mb.send(me, ssl.recv(c, 0, 5000))
      end)
      local s = assert(ssl.accept(l, 5000))
      ssl.send(s, ssl.recv(s, 0, 5000):upper())
      return tostring(why1), tostring(why2), mb.receive(5000)
    ]])})
  end)
end)

describe("moonbeam.ssl with Erlang's ssl", function()
  it("serves an Erlang ssl client that verifies it", function()
    if not have_erl then pending("erl is not installed") return end
    local me_port
    local result = {run(server .. [[
      local me = mb.self()
      local port = serve({active = false}, me)
      local erl = require("moonbeam.port").open({spawn_executable = "erl", args = {"-noshell", "-eval", ([=[
        ssl:start(),
        {ok, S} = ssl:connect("localhost", %d, [binary, {active, false}, {verify, verify_peer},
                                                {cacertfile, "%sca.pem"}], 10000),
        ok = ssl:send(S, <<"from erlang">>),
        {ok, Back} = ssl:recv(S, 0, 10000),
        io:format("~s~n", [Back]),
        halt().]=]):format(port, d)}}, {packet = "line"})
      local out = mb.receive(function(m) return m[1] == erl end, 30000)
      local srv = mb.receive(function(m) return m[1] == "server" end, 5000)
      mb.receive(function(m) return m[1] == erl end, 30000) -- its exit status
      local result = {out[2][2], srv[2]}
      finish()
      return table.unpack(result, 1, 5)
    ]])}
    assert.same({"FROM ERLANG\n", "from erlang"}, result)
  end)

  it("connects to an Erlang ssl server, verifying it", function()
    if not have_erl then pending("erl is not installed") return end
    local job = H.start({"-noshell", "-eval", ([[
      ssl:start(),
      {ok, L} = ssl:listen(0, [binary, {active, false}, {ip, {127,0,0,1}}, {reuseaddr, true},
                               {certfile, "%s/server.pem"}, {keyfile, "%s/server.key"}]),
      {ok, {_, Port}} = ssl:sockname(L),
      io:format("port ~p~n", [Port]),
      {ok, T} = ssl:transport_accept(L, 20000),
      {ok, S} = ssl:handshake(T, 20000),
      {ok, D} = ssl:recv(S, 0, 20000),
      ok = ssl:send(S, string:reverse(binary_to_list(D))),
      {error, closed} = ssl:recv(S, 0, 20000),
      halt(0).
    ]]):format(dir, dir)}, {program = "erl"})
    local ok, err = pcall(function()
      assert(job:wait_output("port ", 30), job:stderr())
      local port = tonumber(job:stdout():match("port (%d+)"))
      assert.same("olleh", run([[
        local port = select(5, ...)
        local c = assert(ssl.connect("localhost", port, {cacertfile = d .. "ca.pem", active = false}, 10000))
        ssl.send(c, "hello")
        local back = ssl.recv(c, 0, 10000)
        ssl.close(c)
        return back
      ]], port))
      assert.equal(0, job:wait(30))
    end)
    job:cleanup()
    assert(ok, err)
  end)
end)
