-- Distribution over TLS (Erlang's inet_tls_dist) against real peers:
-- Erlang nodes started with -proto_dist inet_tls, and moonbeam nodes run
-- by the launcher with --proto-dist tls.  Certificates are made here with
-- openssl: a CA, node certificates it signed, one signed by another CA,
-- one for another name.  Also the listen port range and address, and
-- IPv6 node names.  A node's protocol is fixed when its distribution
-- starts, so every node here is an OS process of its own (this file's
-- node may be distributed already, by another spec): the moonbeam nodes
-- print what they did and saw, and the specs read their logs.  The first,
-- the hub, serves EPMD on a test port.  Every OS process a spec starts is
-- stopped by its pid, and temp files are removed.
local mb = require "moonbeam"

local EPMD_PORT = 30000 + math.random(0, 999)
local COOKIE = "tlssecret"
local build = os.getenv("MB_BUILD_DIR") or "build"
local launcher = build .. "/bin/moonbeam"

local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}
local sh, peer, spawn_os = P.sh, P.peer, P.spawn_os
local tmp, ptmp, have_erl = P.tmp, P.ptmp, P.have_erl

local host = "127.0.0.1"
local HUB = "hub@" .. host
local have_openssl = sh("command -v openssl"):match("%S") ~= nil
local have_ipv6 = (io.open("/proc/net/if_inet6") or {read = function() return "" end})
  :read("a"):match("00000000000000000000000000000001") ~= nil

local function run(fn, ...) return mb.run(fn, ...) end

-- What tmp/<name>.log holds once it matches `what` (a plain string), or
-- after 20 s.
local function log_until(name, what) return P.log_until(name, what, true) end

-- What tmp/<name>.log holds now.
local function log_now(name)
  local f = io.open(tmp .. "/" .. name .. ".log")
  local out = f and f:read("a") or ""
  if f then f:close() end
  return out
end

-- ---- certificates ----

-- A CA, and certificates it signs: EC keys (quick to make), with both
-- TLS uses, for the names given as subjectAltName.  OTP checks the
-- server's certificate against the host of the node name as a DNS name,
-- moonbeam (as OpenSSL) against an IP address as an address: the node
-- certificates carry 127.0.0.1 as both.
local function make_certs()
  local script = ([[
set -e
cd %s
ca() { openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout $1.key -out $1.pem -days 2 -subj /CN=$1; }
cert() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout $1.key -out $1.csr -subj /CN=$1
  printf 'subjectAltName=%%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$3" > $1.ext
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem \
    -days 2 -extfile $1.ext
}
ca ca
ca otherca
cert node ca IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost,IP:::1,DNS:::1
cert stranger otherca IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost
cert misnamed ca DNS:other.example,IP:10.9.9.9
]]):format(tmp)
  local f = assert(io.open(tmp .. "/certs.sh", "w"))
  f:write(script)
  f:close()
  assert(os.execute(("sh %s/certs.sh > %s/certs.log 2>&1"):format(tmp, tmp)),
    "openssl could not make the certificates")
end

-- An ssl_dist_optfile for certificate `cert` (its files under `dir`),
-- trusting ca.pem, verifying both ways.
local function optfile(name, cert, dir)
  local text = ([[
%% TLS distribution's options for %s
[{server, [{certfile, "%s/%s.pem"}, {keyfile, "%s/%s.key"},
           {cacertfile, "%s/ca.pem"}, {verify, verify_peer},
           {fail_if_no_peer_cert, true}]},
 {client, [{certfile, "%s/%s.pem"}, {keyfile, "%s/%s.key"},
           {cacertfile, "%s/ca.pem"}, {verify, verify_peer}]}].
]]):format(name, dir, cert, dir, cert, dir, dir, cert, dir, cert, dir)
  local f = assert(io.open(tmp .. "/" .. name .. ".conf", "w"))
  f:write(text)
  f:close()
  return tmp .. "/" .. name .. ".conf", ptmp .. "/" .. name .. ".conf"
end

-- ---- peers ----

-- The script of the moonbeam nodes.  Its arguments: nodes to ping in
-- turn ("PING node result"; with a "+" after the name, then a message to
-- that node's echo process, "ECHO node reply"); then "READY", and until
-- stopped it prints "NODEUP node" and "NODEDOWN node" for every
-- connection that comes and goes, and answers {From, X} sent to "echo"
-- with {echoed, X}, as the Erlang peers' echo process does.  With "--opts" first (and the files' directory), it
-- starts TLS distribution itself with ssl_dist_opts, as Lua code does.
local function script()
  local path = tmp .. "/peer.lua"
  if io.open(path) then return path end
  local f = assert(io.open(path, "w"))
  f:write([[
local mb = require "moonbeam"
local dist = require "moonbeam.dist"
local first = 1
if arg[1] == "--opts" then
  local dir, client = arg[2], {}
  client = {certfile = dir .. "/node.pem", keyfile = dir .. "/node.key",
            cacertfile = dir .. "/ca.pem", verify = "verify_peer"}
  local server = {fail_if_no_peer_cert = true}
  for k, v in pairs(client) do server[k] = v end
  dist.start{name = arg[3], cookie = arg[4], proto_dist = "inet_tls",
             ssl_dist_opts = {server = server, client = client}}
  first = 5
end
mb.register("echo", mb.self())
for i = first, #arg do
  local node, echo = arg[i]:match("^(.-)(%+?)$")
  print("PING " .. node .. " " .. dist.ping(node, 5000))
  if echo == "+" then
    mb.send({"echo", node}, mb.tuple(mb.self(), "hello"))
    local m = mb.receive(function(m)
      return mb.typeof(m) == "tuple" and m[1] == mb.atom.echoed
    end, 5000)
    print("ECHO " .. node .. " " .. tostring(m and m[2]))
  end
  io.stdout:flush()
end
-- after the pings: dist.ping's own monitor_nodes(false) would end it
mb.monitor_nodes(true)
print("READY " .. tostring(mb.node()))
io.stdout:flush()
while true do
  local m = mb.receive()
  if mb.typeof(m) == "tuple" and (m[1] == mb.atom.nodeup or m[1] == mb.atom.nodedown) then
    print(tostring(m[1]):upper() .. " " .. tostring(m[2]))
  elseif mb.typeof(m) == "tuple" and mb.typeof(m[1]) == "pid" then
    mb.send(m[1], mb.tuple(mb.atom.echoed, m[2]))
  end
  io.stdout:flush()
end
]])
  f:close()
  return path
end

-- A moonbeam node run by the launcher with `flags` (and the cookie, when
-- there are flags: the node name is among them), the script's arguments
-- after them; its output in tmp/<name>.log.
local function moonbeam_node(name, flags, args)
  if flags ~= "" then flags = "--cookie " .. COOKIE .. " " .. flags end
  return spawn_os(("%s %s %s %s"):format(launcher, flags, script(),
    table.concat(args or {}, " ")), tmp .. "/" .. name .. ".log")
end

-- A TLS node with the options of ssl_dist_optfile `conf`.
local function tls_node(name, conf, args)
  return moonbeam_node(name, ("--name %s@%s --proto-dist tls --ssl-dist-optfile %s")
    :format(name, host, conf), args)
end

-- An Erlang node over TLS with the options of `conf` (as the peers see
-- it) that runs `eval` (then halts; "" to run on).
local function erl_node(name, conf, eval, proto)
  local flags = conf and ("-proto_dist %s -ssl_dist_optfile %s"):format(proto or "inet_tls", conf)
    or ""
  return spawn_os(peer(("erl -name %s@127.0.0.1 -setcookie %s %s -noshell -pa %s -eval '%s'")
    :format(name, COOKIE, flags, ptmp, eval)), tmp .. "/" .. name .. ".log")
end

-- Erlang code: print "RESULT Node Answer" for a ping of each node.
local function erl_pings(...)
  local calls = {}
  for _, n in ipairs{...} do
    calls[#calls + 1] = ([[io:format("RESULT %s ~p~n", [net_adm:ping(list_to_atom("%s"))])]])
      :format(n, n)
  end
  return table.concat(calls, ", ") .. ", halt()"
end

setup(function()
  mb.start{run_timeout = 60000} -- for its sleeps: this node takes no part
  if not have_openssl then return end
  make_certs()
  -- The hub: TLS distribution from Lua, with ssl_dist_opts.
  moonbeam_node("hub", "", {"--opts", tmp, HUB, COOKIE})
  assert(log_until("hub", "READY"):find("READY", 1, true), "the hub did not start")
end)

teardown(P.stop_all)

local ERL = "t1@" .. host

describe("TLS distribution with an Erlang node (inet_tls_dist)", function()
  if not have_openssl then pending("openssl is not installed") return end
  if not have_erl then pending("erl is not installed") return end

  setup(function()
    P.erlc("mbpeer.erl")
    -- It connects to the hub, which sends it nothing first.
    erl_node("t1", select(2, optfile("t1", "node", ptmp)), ([[mbpeer:start(), ]]
      .. [[io:format("PING ~p~n", [net_adm:ping(list_to_atom("%s"))]), ]]
      .. [[{echo, list_to_atom("%s")} ! {self(), hello}, ]]
      .. [[receive {echoed, hello} -> io:format("ECHO ok~n") after 10000 -> io:format("ECHO none~n") end, ]]
      .. [=[{ok, [[P]]} = init:get_argument(proto_dist), io:format("PROTO ~s~n", [P])]=]):format(HUB, HUB))
  end)

  it("accepts the Erlang node's connection and talks with it", function()
    local out = log_until("t1", "PROTO")
    assert.matches("PING pong", out, 1, true)
    assert.matches("ECHO ok", out, 1, true)
    assert.matches("PROTO inet_tls", out, 1, true)
    assert.matches("NODEUP " .. ERL, log_until("hub", "NODEUP " .. ERL), 1, true)
  end)

  it("connects to the Erlang node", function()
    log_until("t1", "PROTO")
    tls_node("c1", (optfile("c1", "node", tmp)), {ERL .. "+"})
    local out = log_until("c1", "READY")
    assert.matches("PING " .. ERL .. " pong", out, 1, true)
    assert.matches("ECHO " .. ERL .. " hello", out, 1, true)
    assert.matches("dist: node c1@127.0.0.1 up on port %d+ %(TLS%)", out)
  end)

  it("refuses, and is refused by, nodes with a certificate it must not trust", function()
    -- s1's certificate comes from another CA; w1's names another host
    tls_node("s1", (optfile("s1", "stranger", tmp)))
    tls_node("w1", (optfile("w1", "misnamed", tmp)))
    log_until("s1", "READY")
    log_until("w1", "READY")
    erl_node("t3", select(2, optfile("t3", "node", ptmp)), erl_pings("s1@" .. host, "w1@" .. host))
    local out = log_until("t3", "RESULT w1")
    assert.matches("RESULT s1@" .. host .. " pang", out, 1, true)
    assert.matches("RESULT w1@" .. host .. " pang", out, 1, true)
    assert.matches("connection from 127.0.0.1 refused: TLS handshake failed: bad_certificate",
      log_until("s1", "refused"), 1, true)
    assert.matches("connection from 127.0.0.1 refused: TLS handshake failed",
      log_until("w1", "refused"), 1, true)
    -- an Erlang node with a certificate for another name: moonbeam refuses it
    erl_node("t4", select(2, optfile("t4", "misnamed", ptmp)), [[io:format("UP~n")]])
    log_until("t4", "UP")
    tls_node("c4", (optfile("c4", "node", tmp)), {"t4@" .. host})
    out = log_until("c4", "READY")
    assert.matches("PING t4@" .. host .. " pang", out, 1, true)
    assert.matches("connection to t4@" .. host .. " failed: TLS handshake failed: "
      .. "bad_certificate (IP address mismatch)", out, 1, true)
    -- nothing else is affected
    assert.not_matches("NODEDOWN " .. ERL, log_now("hub"), 1, true)
    tls_node("c5", (optfile("c5", "node", tmp)), {ERL, HUB})
    out = log_until("c5", "READY")
    assert.matches("PING " .. ERL .. " pong", out, 1, true)
    assert.matches("PING " .. HUB .. " pong", out, 1, true)
  end)

  it("refuses a plain-TCP Erlang node, and goes on", function()
    erl_node("t2", nil, erl_pings(HUB))
    assert.matches("RESULT " .. HUB .. " pang", log_until("t2", "RESULT"), 1, true)
    assert.matches("not TLS: the node uses plain-TCP distribution",
      log_until("hub", "not TLS"), 1, true)
    assert.not_matches("NODEDOWN " .. ERL, log_now("hub"), 1, true)
  end)
end)

describe("TLS distribution between moonbeam nodes", function()
  if not have_openssl then pending("openssl is not installed") return end

  it("connects both ways, set up from the command line and from a config file", function()
    local conf = optfile("m1", "node", tmp)
    tls_node("m1", conf, {HUB .. "+"})
    local out = log_until("m1", "READY")
    assert.matches("PING " .. HUB .. " pong", out, 1, true)
    assert.matches("ECHO " .. HUB .. " hello", out, 1, true)
    assert.matches("NODEUP m1@" .. host, log_until("hub", "NODEUP m1@"), 1, true)
    -- the config file's keys: proto_dist, ssl_dist_optfile; m2 dials m1
    local cfg = tmp .. "/m2_config.lua"
    local f = assert(io.open(cfg, "w"))
    f:write(([[return {name = "m2@127.0.0.1", proto_dist = "inet_tls", ssl_dist_optfile = %q}]])
      :format(conf))
    f:close()
    moonbeam_node("m2", "--config " .. cfg, {"m1@" .. host .. "+"})
    out = log_until("m2", "READY")
    assert.matches("PING m1@" .. host .. " pong", out, 1, true)
    assert.matches("ECHO m1@" .. host .. " hello", out, 1, true)
    assert.matches("NODEUP m2@" .. host, log_until("m1", "NODEUP m2@"), 1, true)
  end)

  it("refuses a certificate from an unknown CA, both ways, with a log line", function()
    tls_node("s2", (optfile("s2", "stranger", tmp)), {HUB})
    local out = log_until("s2", "READY")
    assert.matches("PING " .. HUB .. " pang", out, 1, true)
    assert.matches("connection to " .. HUB .. " failed: TLS connection failed: bad_certificate",
      out, 1, true)
    assert.matches("connection from 127.0.0.1 refused: TLS handshake failed: bad_certificate "
      .. "(unable to get local issuer certificate)", log_until("hub", "local issuer"), 1, true)
    -- a node that dials s2 checks s2's certificate, and s2 hears of it
    tls_node("g2", (optfile("g2", "node", tmp)), {"s2@" .. host})
    out = log_until("g2", "READY")
    assert.matches("PING s2@" .. host .. " pang", out, 1, true)
    assert.matches("connection to s2@" .. host .. " failed: TLS handshake failed: bad_certificate",
      out, 1, true)
    assert.matches("connection from 127.0.0.1 refused: TLS handshake failed: bad_certificate",
      log_until("s2", "refused"), 1, true)
  end)

  it("refuses a node that shows no certificate (fail_if_no_peer_cert)", function()
    local conf = tmp .. "/n1.conf"
    local f = assert(io.open(conf, "w"))
    f:write(([[
[{server, [{certfile, "%s/node.pem"}, {keyfile, "%s/node.key"}]},
 {client, [{cacertfile, "%s/ca.pem"}, {verify, verify_peer}]}].
]]):format(tmp, tmp, tmp))
    f:close()
    tls_node("n1", conf, {HUB})
    local out = log_until("n1", "READY")
    assert.matches("PING " .. HUB .. " pang", out, 1, true)
    assert.matches("connection to " .. HUB .. " failed: TLS connection failed: bad_certificate",
      out, 1, true)
  end)

  it("refuses a certificate for another name, with a log line", function()
    tls_node("w2", (optfile("w2", "misnamed", tmp)))
    log_until("w2", "READY")
    tls_node("c2", (optfile("c2", "node", tmp)), {"w2@" .. host})
    local out = log_until("c2", "READY")
    assert.matches("PING w2@" .. host .. " pang", out, 1, true)
    assert.matches("connection to w2@" .. host .. " failed: TLS handshake failed: "
      .. "bad_certificate (IP address mismatch)", out, 1, true)
    assert.matches("connection from 127.0.0.1 refused: TLS handshake failed",
      log_until("w2", "refused"), 1, true)
  end)

  it("does not talk with a plain-TCP node, either way, with a log line", function()
    moonbeam_node("p1", "--name p1@" .. host, {HUB})
    local out = log_until("p1", "READY")
    assert.matches("PING " .. HUB .. " pang", out, 1, true)
    assert.matches("connection to " .. HUB .. " failed: closed by the node before the "
      .. "handshake's status (does it use TLS distribution?)", out, 1, true)
    tls_node("c3", (optfile("c3", "node", tmp)), {"p1@" .. host, HUB})
    out = log_until("c3", "READY")
    assert.matches("PING p1@" .. host .. " pang", out, 1, true)
    assert.matches("connection to p1@" .. host .. " failed: closed by the node in the TLS "
      .. "handshake (does it use TLS distribution?)", out, 1, true)
    assert.matches("connection from 127.0.0.1 refused: the node speaks TLS",
      log_until("p1", "speaks TLS"), 1, true)
    -- and goes on with the others
    assert.matches("PING " .. HUB .. " pong", out, 1, true)
  end)

  it("refuses to start TLS distribution with a missing certificate file", function()
    moonbeam_node("b1", ("--name b1@%s --proto-dist tls --ssl-dist-optfile %s")
      :format(host, optfile("b1", "absent", tmp)))
    local out = log_until("b1", "bad distribution settings")
    assert.matches("the server options: bad_certfile", out, 1, true)
    assert.matches("bad distribution settings", out, 1, true)
  end)
end)

describe("bad distribution settings", function()
  -- The launcher's exit status and what it said.
  local function launch(args)
    local p = io.popen(("ERL_EPMD_PORT=%d timeout 20 %s %s eval 1 2>&1; echo \"STATUS $?\"")
      :format(EPMD_PORT, launcher, args))
    local out = p:read("a")
    p:close()
    return tonumber(out:match("STATUS (%d+)")), out
  end

  it("stop the launcher with a clear message", function()
    local status, out = launch("--proto-dist udp")
    assert.equal(2, status)
    assert.matches("--proto-dist expects inet_tcp, inet_tls (or tls), inet6_tcp or inet6_tls, "
      .. "got 'udp'", out, 1, true)
    status, out = launch("--name x1@127.0.0.1 --cookie c --proto-dist tls")
    assert.equal(1, status)
    assert.matches("TLS distribution needs ssl_dist_optfile or ssl_dist_opts", out, 1, true)
    status, out = launch("--name x2@127.0.0.1 --cookie c --inet-dist-use-interface nowhere")
    assert.equal(1, status)
    assert.matches("inet_dist_use_interface: not an address: nowhere", out, 1, true)
    status, out = launch("--name x3@127.0.0.1 --cookie c --inet-dist-listen-min 9000 "
      .. "--inet-dist-listen-max 8000")
    assert.equal(1, status)
    assert.matches("start_distribution: inet_dist_listen_min and inet_dist_listen_max must "
      .. "be ports, min <= max", out, 1, true)
  end)
end)

describe("ssl_dist_optfile", function()
  local dist_tls = require "moonbeam.dist_tls"

  local function write(text)
    local name = tmp .. "/opt" .. math.random(1e6) .. ".conf"
    local f = assert(io.open(name, "w"))
    f:write(text)
    f:close()
    return name
  end

  it("reads Erlang's format into each side's options", function()
    local o = assert(dist_tls.read_optfile(write([[
% a comment
[{server, [{certfile, "s.pem"}, {keyfile, "s.key"}, {verify, verify_peer},
           {fail_if_no_peer_cert, true}]},
 {client, [{cacertfile, "ca.pem"}, {verify, verify_none}]}].
]])))
    assert.same({server = {certfile = "s.pem", keyfile = "s.key", verify = "verify_peer",
      fail_if_no_peer_cert = true}, client = {cacertfile = "ca.pem", verify = "verify_none"}}, o)
  end)

  it("says what is wrong, and where", function()
    local _, err = dist_tls.read_optfile(write("[{server, [{certfile, \"a\"}]}"))
    assert.matches(":1: '.' expected", err)
    _, err = dist_tls.read_optfile(write("[{server, [{password, \"x\"}]}]."))
    assert.matches("server option password is not supported", err)
    _, err = dist_tls.read_optfile(write("[{server, [{verify, maybe}]}]."))
    assert.matches("server option verify: bad value maybe", err)
    _, err = dist_tls.read_optfile(write("[{server, {certfile, \"a\"}}]."))
    assert.matches("server must be a list", err)
    _, err = dist_tls.read_optfile(write("[{server, []}]. [{client, []}]."))
    assert.matches("one term expected", err)
    _, err = dist_tls.read_optfile(write("[{server, [{certfile, \"a}]}]."))
    assert.matches("unterminated string", err)
    _, err = dist_tls.read_optfile(write("[{elsewhere, []}]."))
    assert.matches("unknown section elsewhere", err)
    _, err = dist_tls.read_optfile(tmp .. "/none.conf")
    assert.matches("No such file", err)
  end)
end)

describe("where distribution listens", function()
  if not have_openssl then pending("openssl is not installed") return end
  -- A port range nobody else uses: the first two ports of it.
  local base = 31000 + math.random(0, 900)

  it("takes the first free port of inet_dist_listen_min..max, on the interface given", function()
    local tls = "--proto-dist tls --ssl-dist-optfile " .. optfile("r", "node", tmp)
    moonbeam_node("r1", ("--name r1@%s --inet-dist-listen-min %d --inet-dist-listen-max %d "
      .. "--inet-dist-use-interface 127.0.0.1 %s"):format(host, base, base + 1, tls))
    local out = log_until("r1", "READY")
    local port = tonumber(out:match("r1@127.0.0.1 up on port (%d+)"))
    assert.is_true(port == base or port == base + 1, out)
    -- it listens on that address alone
    assert.matches("127.0.0.1:" .. port, sh(("ss -Hltn 'sport = :%d'"):format(port)), 1, true)
    -- a second node gets the other port, and reaches the first; a third
    -- gets none
    moonbeam_node("r2", ("--name r2@%s --inet-dist-listen-min %d --inet-dist-listen-max %d %s")
      :format(host, base, base + 1, tls), {"r1@" .. host})
    local out2 = log_until("r2", "READY")
    local other = tonumber(out2:match("up on port (%d+)"))
    assert.equal(port == base and base + 1 or base, other)
    assert.matches("PING r1@" .. host .. " pong", out2, 1, true)
    moonbeam_node("r3", ("--name r3@%s --inet-dist-listen-min %d --inet-dist-listen-max %d %s")
      :format(host, base, base + 1, tls))
    assert.matches("no free port to listen on", log_until("r3", "no free port"), 1, true)
  end)
end)

describe("IPv6 node names", function()
  if not have_ipv6 then pending("this host has no IPv6 loopback") return end

  it("connects nodes named name@::1 (inet6_tcp), moonbeam and Erlang", function()
    moonbeam_node("v1", "--name v1@::1 --proto-dist inet6_tcp")
    log_until("v1", "READY")
    moonbeam_node("v2", "--name v2@::1 --proto-dist inet6_tcp", {"v1@::1"})
    assert.matches("PING v1@::1 pong", log_until("v2", "READY"), 1, true)
    if not have_erl then return end
    spawn_os(peer(("erl -name v3@::1 -setcookie %s -proto_dist inet6_tcp -noshell -eval "
      .. "'R = net_adm:ping(list_to_atom(\"v1@::1\")), io:format(\"RESULT ~p~n\", [R]), halt()'")
      :format(COOKIE)), tmp .. "/v3.log")
    assert.matches("RESULT pong", log_until("v3", "RESULT"), 1, true)
  end)

  it("runs TLS distribution over IPv6 (inet6_tls), moonbeam and Erlang", function()
    if not have_openssl then return end
    moonbeam_node("v4", ("--name v4@::1 --proto-dist inet6_tls --ssl-dist-optfile %s")
      :format(optfile("v4", "node", tmp)))
    log_until("v4", "READY")
    moonbeam_node("v5", ("--name v5@::1 --proto-dist inet6_tls --ssl-dist-optfile %s")
      :format(optfile("v5", "node", tmp)), {"v4@::1"})
    assert.matches("PING v4@::1 pong", log_until("v5", "READY"), 1, true)
    if not have_erl then return end
    local _, conf = optfile("v6", "node", ptmp)
    spawn_os(peer(("erl -name v6@::1 -setcookie %s -proto_dist inet6_tls -ssl_dist_optfile %s "
      .. "-noshell -eval 'R = net_adm:ping(list_to_atom(\"v4@::1\")), io:format(\"RESULT ~p~n\", [R]), "
      .. "halt()'"):format(COOKIE, conf)), tmp .. "/v6.log")
    assert.matches("RESULT pong", log_until("v6", "RESULT"), 1, true)
  end)
end)
