-- erl_call -a, the C node Erlang ships in erl_interface, calling into a
-- moonbeam node through its rex process ({From, {call, M, F, A, user}},
-- answered with {rex, Reply}).  Every erl_call runs under timeout(1) and
-- its own -timeout.

-- The node is this process's, shared with the other spec/dist_*_spec.lua
-- files of the run (spec/dist_node.lua).
local NODE = require("spec.dist_node").start("mbspec")
local EPMD_PORT, COOKIE, me = NODE.epmd_port, NODE.cookie, NODE.name

local P = require("spec.peer_helper").new{epmd_port = EPMD_PORT}

-- erl_call's path as the peers see it (the host's, or the root's), or nil.
local function erl_call_path()
  local prefix = P.root or ""
  local found = P.sh(("ls %s/usr/lib/erlang/lib/erl_interface-*/bin/erl_call 2>/dev/null")
    :format(prefix)):match("[^\n]+")
  return found and found:sub(#prefix + 1)
end

local erl_call = erl_call_path()

-- erl_call names itself after the host, which a Debian root without
-- /etc/hosts cannot resolve (erl_call then crashes): in a root it runs
-- in a UTS namespace of its own whose host name is 127.0.0.1.
local function in_root(cmd)
  if not P.root then return cmd end
  return ([[unshare -m -u --propagation private sh -c 'hostname 127.0.0.1 && mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' %s %s]])
    :format(P.root, cmd)
end

-- What erl_call -a prints for `apply` (module, function and arguments in
-- Erlang's syntax), and its exit status.
local function call(apply)
  local out = P.sh(("ERL_EPMD_PORT=%d %s 2>&1; echo \" rc=$?\""):format(EPMD_PORT,
    in_root(("timeout -k 5 30 %s -timeout 20 -c %s -n %s -a '%s'"):format(erl_call, COOKIE, me, apply))))
  return out:match("^(.-) rc=(%d+)%s*$")
end

teardown(P.stop_all)

describe("erl_call -a", function()
  it("runs a Lua function on the moonbeam node and prints its value", function()
    if not erl_call then return pending("no erl_call") end
    local out, rc = call("fixtures.spec_rpc add [1,2]")
    assert.equal("0", rc)
    assert.equal("3", out)
  end)

  it("prints Erlang's badrpc for a function that is not there", function()
    if not erl_call then return pending("no erl_call") end
    local out, rc = call("nosuch fn [a]")
    assert.equal("0", rc)
    assert.equal("{badrpc, {'EXIT', {undef, [{nosuch, fn, [a], []}]}}}", out:gsub("%s+", " "))
  end)

  it("prints the badrpc of a Lua error", function()
    if not erl_call then return pending("no erl_call") end
    local out, rc = call("fixtures.spec_rpc fails []")
    assert.equal("0", rc)
    assert.matches("^{badrpc, {'EXIT', {{lua_error, ", out)
  end)
end)
