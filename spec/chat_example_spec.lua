-- examples/chat: two moonbeam nodes talking over mutual TLS, each trusting
-- only the other's certificate; a third node with a certificate of its own
-- is refused; any term goes across, and the listening node serves several
-- peers at once.  The certificates are made here with openssl in a temporary
-- directory; every node started is stopped by its pid; only 127.0.0.1.
local H = require "spec.launcher_helper"

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("examples/chat", function()
  local dir, jobs

  before_each(function()
    dir, jobs = H.tmpdir(), {}
    for _, n in ipairs({"alice", "bob", "mallory"}) do
      assert(os.execute(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout %s.key -out %s.pem -days 2 -subj '/CN=%s' -addext 'subjectAltName=DNS:%s' > /dev/null 2>&1")
        :format(H.quote(dir), n, n, n, n)))
    end
  end)

  after_each(function()
    for _, j in ipairs(jobs) do j:cleanup() end
    H.remove(dir)
  end)

  local function node(...)
    local job = H.start({"examples/chat/chat.lua", ...}, {input = true})
    jobs[#jobs + 1] = job
    return job
  end

  local function output(job) return job:stdout() .. job:stderr() end

  it("carries messages both ways between the two, and refuses a third", function()
    local alice = node("alice", dir, "bob", "listen", "0", "welcome")
    assert(alice:wait_output("listening on port", 20), output(alice))
    local port = output(alice):match("listening on port (%d+)")

    -- mallory trusts alice, but alice trusts only bob
    local mallory = node("mallory", dir, "alice", "connect", "127.0.0.1", port, "let me in")
    assert(alice:wait_output("refused a connection: bad_certificate", 20), output(alice))
    assert.is_nil(output(alice):find("let me in", 1, true))
    assert.is_not_nil(mallory:wait(20))

    local bob = node("bob", dir, "alice", "connect", "127.0.0.1", port, "hello alice")
    assert(alice:wait_output("<bob> hello alice", 20), output(alice))
    assert(bob:wait_output("<alice> welcome", 20), output(bob))
  end)

  it("carries terms, not only text, to a named process of the other node", function()
    local alice = node("alice", dir, "bob", "listen", "0")
    assert(alice:wait_output("listening on port", 20), output(alice))
    local port = output(alice):match("listening on port (%d+)")
    local bob = node("bob", dir, "alice", "connect", "127.0.0.1", port,
      '=mb.tuple(A.ok, {1, 2.5, "x", mb.tuple()}, mb.map{n = -7, [A.error] = mb.list(A.normal, nil)}, false)')
    assert(alice:wait_output('<bob> {ok, [1, 2.5, "x", {}], %{[error] = [normal, nil], n = -7}, false}', 20),
           output(alice))
    -- and back, to a name given in the line
    alice:type('@chat =mb.map{[A.ok] = {"from", "alice"}}\n')
    assert(bob:wait_output('<alice> %{[ok] = ["from", "alice"]}', 20), output(bob))
    -- an atom alice has never seen is refused (binary_to_term's safe):
    -- that connection closes, and alice goes on
    bob:type("=A.an_atom_alice_never_saw\n")
    assert(alice:wait_output("bad frame from bob#1: malformed external term", 20), output(alice))
    assert.equal(0, bob:wait(20))
    local bob2 = node("bob", dir, "alice", "connect", "127.0.0.1", port, "again")
    assert(alice:wait_output("<bob> again", 20), output(alice))
  end)

  it("serves several peers at once, one process each, and refuses a third certificate meanwhile", function()
    local alice = node("alice", dir, "bob", "listen", "0")
    assert(alice:wait_output("listening on port", 20), output(alice))
    local port = output(alice):match("listening on port (%d+)")
    local bob1 = node("bob", dir, "alice", "connect", "127.0.0.1", port, "one")
    assert(alice:wait_output("<bob> one", 20), output(alice))
    local bob2 = node("bob", dir, "alice", "connect", "127.0.0.1", port, "two")
    assert(alice:wait_output("<bob> two", 20), output(alice))
    local mallory = node("mallory", dir, "alice", "connect", "127.0.0.1", port, "let me in")
    assert(alice:wait_output("refused a connection: bad_certificate", 20), output(alice))
    assert.is_not_nil(mallory:wait(20))
    -- both are still served
    alice:type("to both\n")
    assert(bob1:wait_output("<alice> to both", 20), output(bob1))
    assert(bob2:wait_output("<alice> to both", 20), output(bob2))
    bob1:type("still here\n")
    assert(alice:wait_output("<bob> still here", 20), output(alice))
    assert.is_nil(output(alice):find("let me in", 1, true))
  end)

  it("does not connect to a node whose certificate it does not trust", function()
    local mallory = node("mallory", dir, "alice", "listen", "0")
    assert(mallory:wait_output("listening on port", 20), output(mallory))
    local port = output(mallory):match("listening on port (%d+)")
    -- bob expects alice: mallory's certificate is not hers
    local bob = node("bob", dir, "alice", "connect", "127.0.0.1", port, "secret")
    assert.equal(1, bob:wait(20))
    assert.is_not_nil(output(bob):find("cannot reach alice: bad_certificate", 1, true))
    assert.is_nil(output(mallory):find("secret", 1, true))
  end)
end)
