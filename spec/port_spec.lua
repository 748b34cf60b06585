-- Ports: programs whose input and output belong to a process.  Each
-- example runs in a process of its own and leaves no process behind; the
-- programs started end with their input, or are waited for by pid.
local in_process = require("spec.leak_helper")
  .no_process_left_behind(before_each, after_each)

describe("port.open", function()
  it("delivers output as {Port, {data, Data}}, then {Port, {exit_status, N}}", function()
    assert.same({true, "data", "hello\n", "exit_status", 3}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local p = assert(port.open({spawn = "echo hello; exit 3"}))
      local a = mb.receive(5000)
      local b = mb.receive(5000)
      return a[1] == p, tostring(a[2][1]), a[2][2], tostring(b[2][1]), b[2][2]
    end)})
  end)

  it("writes commands to the program's input and frames its output by line", function()
    assert.same({"MOON\n", "BEAM\n", 0}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local p = assert(port.open({spawn_executable = "tr", args = {"a-z", "A-Z"}},
                                 {packet = "line"}))
      port.command(p, "moon\nbe")
      port.command(p, "am\n")
      -- tr writes its output when its input ends (a pipe is buffered)
      assert(port.eof(p))
      local a, b = mb.receive(5000), mb.receive(5000)
      local st = mb.receive(5000)
      return a[2][2], b[2][2], st[2][2]
    end)})
  end)

  it("returns nil, enoent for a program that does not exist", function()
    assert.same({"nil", "enoent"}, {in_process(function()
      local port = require "moonbeam.port"
      local p, why = port.open({spawn_executable = "/nonexistent/program"})
      return tostring(p), tostring(why)
    end)})
  end)

  it("reports a program ended by a signal as 128 + the signal", function()
    assert.same(128 + 9, in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      assert(port.open({spawn = "kill -9 $$"}))
      return mb.receive(5000)[2][2]
    end))
  end)

  it("closes the port when its owner ends: the program's input ends", function()
    -- cat prints its pid first, then copies its input until it ends.
    assert.same({true, 0}, {in_process(function()
      local mb = require "moonbeam"
      local me = mb.self()
      local owner = mb.spawn(function()
        local port = require "moonbeam.port"
        local p = assert(port.open({spawn = "echo $$; exec cat"}, {packet = "line"}))
        mb.send(me, mb.receive(5000)[2][2])
        mb.receive()
      end)
      local pid = tonumber(mb.receive(5000))
      -- A second port watches the first program with a shell loop that
      -- ends when it is gone (bounded: 10 s).
      local port = require "moonbeam.port"
      local w = assert(port.open({spawn = ("for i in $(seq 200); do kill -0 %d 2>/dev/null || exit 0; sleep 0.05; done; exit 1"):format(pid)}))
      mb.exit(owner, "kill")
      local st = mb.receive(function(m) return m[1] == w end, 15000)
      return pid ~= nil, st[2][2]
    end)})
  end)

  it("hands a port over with port.connect", function()
    assert.same("handed\n", in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local me = mb.self()
      local p = assert(port.open({spawn = "read x; echo $x"}, {packet = "line"}))
      local heir = mb.spawn(function()
        mb.send(me, mb.receive(5000)[2][2])
        mb.receive(5000) -- the exit status
      end)
      assert(port.connect(p, heir))
      port.command(p, "handed\n")
      return mb.receive(5000)
    end))
  end)
end)

describe("mb.send to a port", function()
  it("writes {Owner, {command, Data}} to the program, from the owner or any process", function()
    assert.same({"moon\n", "beam\n"}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local A = mb.atom
      local me = mb.self()
      local p = assert(port.open({spawn = "exec cat"}, {packet = "line"}))
      mb.send(p, mb.tuple(me, mb.tuple(A.command, "moon\n")))
      local a = mb.receive(5000)
      -- another process may send it, naming the owner
      local w = mb.spawn(function()
        local mb = require "moonbeam"
        mb.send(p, mb.tuple(me, mb.tuple(mb.atom.command, "beam\n")))
      end)
      local b = mb.receive(5000)
      port.close(p)
      return a[2][2], b[2][2]
    end)})
  end)

  it("closes the port on {Owner, close} and answers {Port, closed}", function()
    assert.same({true, "closed", "closed"}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local p = assert(port.open({spawn = "exec cat"}))
      mb.send(p, mb.tuple(mb.self(), mb.atom.close))
      local m = mb.receive(5000)
      local ok, why = port.command(p, "x")
      return m[1] == p, tostring(m[2]), tostring(why)
    end)})
  end)

  it("hands the port over on {Owner, {connect, New}}: {Port, connected} to the old owner, output to the new", function()
    assert.same({true, "connected", "hi\n"}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local A = mb.atom
      local me = mb.self()
      local p = assert(port.open({spawn = "exec cat"}, {packet = "line"}))
      local new = mb.spawn(function()
        local mb = require "moonbeam"
        local m = mb.receive(5000)
        mb.send(me, m[2][2])
        require("moonbeam.port").close(p)
      end)
      mb.send(p, mb.tuple(me, mb.tuple(A.connect, new)))
      local c = mb.receive(5000)
      -- the new owner may send commands now; the old may not
      mb.send(p, mb.tuple(new, mb.tuple(A.command, "hi\n")))
      local data = mb.receive(5000)
      return c[1] == p, tostring(c[2]), data
    end)})
  end)

  it("raises for a message a port does not take", function()
    assert.is_true(in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local p = assert(port.open({spawn = "exec cat"}))
      local ok, err = pcall(mb.send, p, mb.tuple(mb.self(), "data"))
      port.close(p)
      return not ok and err:find("bad argument #2 to", 1, true) ~= nil and err:find("{Pid, close}", 1, true) ~= nil or err
    end))
  end)
end)

describe("port.open options", function()
  it("frames output with line = N as {eol, Line} and {noeol, Part}, as Erlang's {line, N}", function()
    assert.same({"eol:one", "noeol:abcd", "eol:ef", "eol:", "noeol:tail", "exit_status"},
      {in_process(function()
        local mb = require "moonbeam"
        local port = require "moonbeam.port"
        local p = assert(port.open({spawn = "printf 'one\\nabcdef\\n\\ntail'"}, {line = 4}))
        local out = {}
        while true do
          local m = mb.receive(5000)
          if m[2][1] ~= mb.atom.data then out[#out + 1] = tostring(m[2][1]) break end
          out[#out + 1] = tostring(m[2][2][1]) .. ":" .. m[2][2][2]
        end
        return table.unpack(out)
      end)})
  end)

  it("joins standard error to the output with stderr_to_stdout", function()
    assert.same({"out", "err"}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local p = assert(port.open({spawn = "echo out; echo err >&2"},
                                 {line = 100, stderr_to_stdout = true}))
      local a, b = mb.receive(5000), mb.receive(5000)
      mb.receive(5000) -- exit_status
      return a[2][2][2], b[2][2][2]
    end)})
  end)

  it("sets and unsets environment variables with env", function()
    assert.same({"moon|unset|beam"}, {in_process(function()
      local mb = require "moonbeam"
      local port = require "moonbeam.port"
      local p = assert(port.open(
        {spawn = 'echo "$MB_SPEC_A|${HOME-unset}|$MB_SPEC_B"'},
        {line = 100, env = {MB_SPEC_A = "moon", HOME = false, {"MB_SPEC_B", "beam"}}}))
      local a = mb.receive(5000)
      mb.receive(5000) -- exit_status
      return a[2][2][2]
    end)})
  end)
end)
