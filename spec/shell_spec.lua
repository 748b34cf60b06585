-- The shell: `moonbeam shell`, driven through a pipe (no line editing, the
-- prompts still written), and through a terminal in tmux when there is
-- one; and the sessions of moonbeam.shell, used directly.
local H = require "launcher_helper"
local mb = require "moonbeam"

-- Run `moonbeam shell` on `input`; return its status, what it printed
-- without the prompts and the banner (as lines), and stderr.
local function shell(input, args, opts)
  opts = opts or {}
  opts.input = input
  local argv = {"shell"}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local status, raw, err = H.run(argv, opts)
  local out = raw:gsub("mb%(%d+%)> ", ""):gsub("%.%.%.%(%d+%)> ", "")
  local lines = H.lines(out)
  if lines[1] and lines[1]:match("^moonbeam .* shell") then table.remove(lines, 1) end
  return status, lines, err, raw
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("moonbeam shell", function()
  it("prints a banner and a prompt, and exits 0 at the end of input", function()
    local status, out = H.run({"shell"}, {input = ""})
    assert.equal(0, status)
    assert.matches("^moonbeam %d+%.%d+%.%d+ shell, process <0%.%d+%.%d+>%. help%(%) for help", out)
    assert.matches("mb%(1%)> $", out)
  end)

  it("prints what an expression gives, with inspect", function()
    local status, lines = shell('1 + 1\n"moon" .. "beam"\n{1, 2, x = {y = true}}\nmb.atom.ok, nil\n=10\n')
    assert.equal(0, status)
    assert.same({"2", '"moonbeam"', "{1, 2, x = {y = true}}", "ok, nil", "10"}, lines)
  end)

  it("takes statements that end with an expression as complete input, and gives its values", function()
    local _, lines = shell("local m = 40 + 2; m\nm, m + 1\nlocal a = 1\nlocal b = a + 1\na + b\n")
    assert.same({"42", "42, 43", "3"}, lines)
  end)

  it("ends a table longer than the print limit with ...", function()
    local _, lines = shell("local t = {}; for i = 1, 60 do t[i] = i end\nt\n")
    assert.matches("^{1, 2, 3, .*, 50, %.%.%.}$", lines[1])
  end)

  it("prints nothing for statements", function()
    local _, lines = shell("local x = 1\ny = 2\nprint('printed')\n")
    assert.same({"printed"}, lines)
  end)

  it("keeps locals and globals from one input to the next", function()
    local _, lines = shell([[
local x, y = 10, 20
g = 5
x + y + g
x = x + 1
x
local function double(n) return 2 * n end
double(x)
local x = "shadowed"
x
]])
    assert.same({"35", "11", "22", '"shadowed"'}, lines)
  end)

  it("gives functions spawned from the shell its locals as upvalues", function()
    local _, lines = shell([[
local me, word = mb.self(), "copied"
local _ = mb.spawn(function() mb.send(me, word) end)
mb.receive(5000)
]])
    assert.same({'"copied"'}, lines)
  end)

  it("reads more lines while the input is incomplete", function()
    local status, lines, _, raw = shell("function add(a,\nb)\nreturn a + b\nend\nadd(1,\n2)\n{\n'a',\n}\n")
    assert.equal(0, status)
    assert.same({"3", '{"a"}'}, lines)
    assert.truthy(raw:find("...(1)> ", 1, true))
  end)

  it("drops an incomplete input at #break", function()
    local _, lines = shell("for i = 1, 3 do\n#break\n7\n")
    assert.same({"7"}, lines)
  end)

  it("prints an error and goes on", function()
    local status, lines = shell("local x = 1\nerror('oops')\nnil + 1\nerror({code = 42})\nx = = 1\nx\n")
    assert.equal(0, status)
    assert.equal("** (error) shell:1: oops", lines[1])
    assert.matches("^%*%* %(error%) shell:1: attempt to perform arithmetic on a nil value", lines[2])
    assert.equal("** (error) {code = 42}", lines[3])
    assert.matches("^%*%* %(error%) shell:1: unexpected symbol near '='", lines[4])
    assert.equal("1", lines[5])
  end)

  it("flush() prints the messages in the shell's mailbox and drops them", function()
    local _, lines = shell([[
mb.send(mb.self(), {hello = "world"})
mb.send(mb.self(), mb.tuple("ok", 1))
flush()
flush()
mb.receive(0)
]])
    assert.same({'Shell got {hello = "world"}', 'Shell got {"ok", 1}', 'nil, "timeout"'}, lines)
  end)

  it("i() lists the processes with their reductions, memory and mailbox length", function()
    local _, lines = shell([[
local p = mb.spawn(function() mb.register("sleeper", mb.self()); mb.receive(function(m) return m == "stop" end) end)
mb.send(p, "one"); mb.send(p, "two")
while (mb.process_info(p) or {}).status ~= "waiting" or not mb.whereis("sleeper") do mb.sleep(1) end
i()
]])
    assert.matches("^Pid%s+Name%s+Status%s+Reductions%s+Memory%s+MsgQ$", lines[1])
    local sleeper
    for _, line in ipairs(lines) do
      if line:find("sleeper", 1, true) then sleeper = line end
    end
    assert.matches("^<0%.%d+%.%d+>%s+sleeper%s+waiting%s+%d+%s+%d+%s+2$", sleeper)
    assert.matches("^Total%s+%d+ processes", lines[#lines])
  end)

  it("i(pid) shows a process, and pid() makes one from its numbers", function()
    local _, lines = shell([[
local p = mb.spawn(function() mb.receive() end)
while mb.process_info(p).status ~= "waiting" do mb.sleep(1) end
local id, serial = tostring(p):match("<0%.(%d+)%.(%d+)>")
pid(0, tonumber(id), tonumber(serial)) == p, pid(tostring(p)) == p
i(tonumber(0), tonumber(id), tonumber(serial))
mb.exit(p, "kill"); while mb.is_alive(p) do mb.sleep(1) end
i(p)
pid(1, 2, 3)
]])
    assert.equal("true, true", lines[1])
    assert.matches("^Process <0%.%d+%.%d+>$", lines[2])
    local text = table.concat(lines, "\n")
    assert.matches("\n  message_queue_len%s+0\n", text)
    assert.matches("\n  status%s+waiting\n", text)
    assert.matches("\n<0%.%d+%.%d+> is not alive\n", text)
    assert.matches("pids of other nodes need distribution", lines[#lines])
  end)

  it("regs() lists the registered names: the shell's process is `shell`", function()
    local _, lines = shell("regs()\n")
    assert.matches("^Name%s+Pid%s+Status$", lines[1])
    local found = false
    for i = 2, #lines do found = found or lines[i]:match("^shell%s+<0%.%d+%.%d+>%s+running$") ~= nil end
    assert.truthy(found, table.concat(lines, "\n"))
  end)

  it("help() lists the helpers", function()
    local _, lines = shell("help()\n")
    local text = table.concat(lines, "\n")
    for _, name in ipairs({"flush()", "i()", "i(pid)", "pid(0, 42, 0)", "regs()", "q()"}) do
      assert.truthy(text:find(name, 1, true), name)
    end
  end)

  it("reload() loads modules again and says which version each node has", function()
    local _, lines = shell([[
tmp = os.tmpname(); f = io.open(tmp, "w"); f:write("return {}"); f:close()
package.path = tmp:match("^(.*)/") .. "/?;" .. package.path
name = tmp:match("[^/]+$"); m = require(name)
reload(name, "no_such_mod_here")
os.remove(tmp)
print(name)
require("moonbeam.code").version(name)
]])
    local text = table.concat(lines, "\n")
    local name = lines[#lines - 1]
    assert.matches("nonode@nohost " .. name .. " version 2", text, 1, true)
    assert.matches("nonode@nohost no_such_mod_here error: not_loaded", text, 1, true)
    assert.equal("2", lines[#lines])
  end)

  it("leaves at q(), and exits 0", function()
    local status, lines = shell("1\nq()\n2\n")
    assert.equal(0, status)
    assert.same({"1"}, lines)
  end)

  it("is a process; when it dies another starts, without the bindings", function()
    local status, lines = shell([[
local x = 1
first = mb.self()
mb.exit("bye")
x
mb.self() ~= first
mb.spawn_link(function() error("linked crash") end); mb.receive()
2
]])
    assert.equal(0, status)
    assert.same({
      '** (exit) "bye"',
    }, {lines[1]})
    assert.matches("^%*%* the shell process <0%.%d+%.%d+> ended; a new one starts", lines[2])
    assert.equal("nil", lines[3])
    assert.equal("true", lines[4])
    assert.matches("^%*%* %(exit%) shell:1: linked crash$", lines[5])
    assert.equal("2", lines[7])
  end)

  it("starts an application first, and stops it at the end", function()
    local dir = H.tmpdir()
    finally(function() H.remove(dir) end)
    H.write(dir .. "/counter.app.lua", [[return {name = "counter", mod = {"counter", 5}}]])
    H.write(dir .. "/counter.lua", [[
local gen_server = require "moonbeam.gen_server"
local M = {}
function M.start(_, n)
  return gen_server.start_link({
    init = function(n) require("moonbeam").trap_exit(true); return "ok", n end,
    handle_call = function(_, _, n) return "reply", n, n + 1 end,
    terminate = function() print("counter terminate") end,
  }, n, {name = "counter"})
end
return M
]])
    local status, lines = shell("local gs = require 'moonbeam.gen_server'\ngs.call('counter', 'next')\ngs.call('counter', 'next')\n",
      {dir .. "/counter.app.lua"})
    assert.equal(0, status)
    assert.same({"5", "6", "counter terminate"}, lines)
  end)

  it("exits 1 with one message when the application does not start", function()
    local status, lines, err = shell("1\n", {"/nonexistent/app.lua"})
    assert.equal(1, status)
    assert.same({}, lines)
    assert.matches("^moonbeam: cannot open /nonexistent/app%.lua", err)
  end)
end)

describe("moonbeam shell on a terminal", function()
  -- tmux gives the shell a terminal: lines are edited, with a history.
  local has_tmux = os.execute("command -v tmux > /dev/null 2>&1")
  local dir -- holds the tmux server's socket, so that it goes with it

  local function tmux(args)
    return os.execute("tmux -S " .. H.quote(dir .. "/tmux") .. " " .. args .. " > /dev/null 2>&1")
  end

  local function screen()
    local p = io.popen("tmux -S " .. H.quote(dir .. "/tmux") .. " capture-pane -p -t mbspec 2>/dev/null")
    local text = p:read("a")
    p:close()
    return text
  end

  local function wait_screen(pattern)
    return H.wait_for(function() return screen():find(pattern) end, 10)
  end

  -- A shell in a tmux terminal of the given size, at its first prompt;
  -- false (the example pending) where tmux is missing.
  local function open_shell(width, height, history)
    if not has_tmux then
      pending("tmux is not installed")
      return false
    end
    dir = H.tmpdir()
    local cmd = string.format("MOONBEAM_HISTORY=%s %s shell; echo exited=$?; sleep 60",
      history and H.quote(dir .. "/" .. history) or "", H.quote(H.launcher))
    assert(tmux(("new-session -d -s mbspec -x %d -y %d "):format(width, height) .. H.quote(cmd)))
    -- (capture-pane drops the spaces at the end of a line)
    assert(wait_screen("mb%(1%)>"), screen())
    return true
  end

  after_each(function()
    if dir then
      tmux("kill-server")
      H.remove(dir)
    end
    dir = nil
  end)

  it("edits lines, keeps a history, and leaves at Ctrl-D", function()
    if not open_shell(100, 20, "history") then return end
    local history = dir .. "/history"
    tmux("send-keys -t mbspec " .. H.quote("require('moonbeam.console').line_editing()") .. " Enter")
    assert(wait_screen("mb%(2%)>"), screen())
    if screen():find("\nfalse", 1, true) then
      pending("the launcher was built without libedit")
      return
    end
    -- Type 40 + 3, go back to fix it (50 + 3), then recall it.
    tmux("send-keys -t mbspec '40 + 3' C-a DC 5 Enter")
    assert(wait_screen("\n53\n"), screen())
    tmux("send-keys -t mbspec Up Enter")
    assert(wait_screen("mb%(4%)>"), screen())
    assert.truthy(screen():find("mb(3)> 50 + 3\n53\n", 1, true), screen())
    tmux("send-keys -t mbspec C-d")
    assert(wait_screen("exited=0"), screen())
    -- (libedit writes a space as \040)
    assert.truthy(H.read(history):find("line_editing()", 1, true))
  end)

  it("completes globals, locals and their fields with Tab", function()
    if not open_shell(100, 20) then return end
    tmux("send-keys -t mbspec " .. H.quote("require('moonbeam.console').line_editing()") .. " Enter")
    assert(wait_screen("mb%(2%)>"), screen())
    if screen():find("\nfalse", 1, true) then
      pending("the launcher was built without libedit")
      return
    end
    tmux("send-keys -t mbspec 'local answer_here = 42' Enter")
    assert(wait_screen("mb%(3%)>"), screen())
    -- a local, a module's field, a standard library's field
    tmux("send-keys -t mbspec 'answer_h' Tab ' + 1' Enter")
    assert(wait_screen("\n43\n"), screen())
    tmux("send-keys -t mbspec 'mb.typ' Tab '(1), string.up' Tab '(\"x\")' Enter")
    assert(wait_screen('"number", "X"'), screen())
    tmux("send-keys -t mbspec C-d")
    assert(wait_screen("exited=0"), screen())
  end)

  it("writes a log line above the prompt that waits, not inside it", function()
    if not open_shell(120, 30) then return end
    tmux("send-keys -t mbspec " .. H.quote(
      "mb.spawn(function() require('moonbeam').sleep(300) require('moonbeam').log('error', 'from later') end)")
      .. " Enter")
    assert(wait_screen("from later"), screen())
    assert(wait_screen("from later\nmb%(2%)> *\n"), screen())
    assert.falsy(screen():find("mb%(2%)> *%d%d:%d%d"), screen())
    tmux("send-keys -t mbspec C-d")
    assert(wait_screen("exited=0"), screen())
  end)

  it("interrupts what it evaluates at Ctrl-C, and runs on", function()
    if not open_shell(100, 30) then return end
    tmux("send-keys -t mbspec 'while true do end' Enter")
    assert(wait_screen("mb%(1%)> while true do end\n"), screen())
    tmux("send-keys -t mbspec C-c")
    assert(wait_screen("%*%* %(interrupted%)"), screen())
    tmux("send-keys -t mbspec 'mb.receive()' Enter")
    assert(wait_screen("mb%(1%)> mb%.receive%(%)\n"), screen())
    tmux("send-keys -t mbspec C-c")
    assert(wait_screen("%(interrupted%).*%(interrupted%)"), screen())
    tmux("send-keys -t mbspec '20 + 22' Enter")
    assert(wait_screen("\n42\n"), screen())
    tmux("send-keys -t mbspec C-d")
    assert(wait_screen("exited=0"), screen())
  end)

  it("stops a runaway loop of a remote shell on its node at Ctrl-C", function()
    if not has_tmux then
      pending("tmux is not installed")
      return
    end
    dir = H.tmpdir()
    local script = dir .. "/target.lua"
    H.write(script, 'require("moonbeam").receive(30000)\n')
    -- The target serves EPMD on a random test port; another program may
    -- hold that port, so a failed start tries another.
    local port, target, up
    for _ = 1, 3 do
      port = tostring(26000 + math.random(0, 2999))
      target = H.start({"run", "--name", "rt@127.0.0.1", "--cookie", "rc", script},
        {env = {ERL_EPMD_PORT = port}})
      up = H.wait_for(function()
        if target:stderr():find("cannot start distribution", 1, true) then return "failed" end
        local q = io.popen("ERL_EPMD_PORT=" .. port .. " timeout 10 " .. H.quote(H.launcher)
          .. " epmd-names 2>/dev/null")
        local names = q:read("a")
        q:close()
        return names:find("name rt at", 1, true) and "up"
      end, 10)
      if up == "up" then break end
      target:cleanup()
    end
    finally(function() target:cleanup() end)
    assert(up == "up", "the target node did not come up: " .. target:stderr())
    local cmd = string.format("ERL_EPMD_PORT=%s MOONBEAM_HISTORY= %s shell --remsh rt@127.0.0.1 "
      .. "--cookie rc; echo exited=$?; sleep 60", port, H.quote(H.launcher))
    assert(tmux("new-session -d -s mbspec -x 100 -y 30 " .. H.quote(cmd)))
    assert(wait_screen("mb%(1%)>"), screen())
    tmux("send-keys -t mbspec " .. H.quote("mb.register('runaway', mb.self()); while true do end")
      .. " Enter")
    assert(wait_screen("while true do end\n"), screen())
    tmux("send-keys -t mbspec C-c")
    assert(wait_screen("%*%* %(interrupted%)"), screen())
    assert(wait_screen("mb%(1%)> *\n"), screen())
    tmux("send-keys -t mbspec " .. H.quote("mb.node(), mb.whereis('runaway') == nil") .. " Enter")
    assert(wait_screen("rt@127%.0%.0%.1, true\n"), screen())
    tmux("send-keys -t mbspec C-d")
    assert(wait_screen("exited=0"), screen())
  end)
end)

describe("moonbeam.shell sessions", function()
  local function in_process(fn) return mb.run(fn) end

  it("give the words Tab completes: locals, globals, standard libraries and their fields", function()
    local words = in_process(function()
      local shell = require "moonbeam.shell"
      local s = shell.session()
      shell.eval(s, "local here = {field = 1}")
      shell.eval(s, "there = 2")
      local set = {}
      for _, w in ipairs(shell.completions(s)) do set[w] = true end
      return {set.here, set["here.field"], set.there, set.mb, set["mb.spawn"],
              set["string.upper"], set["os.getenv"]}
    end)
    assert.same({true, true, true, true, true, true, true}, words)
  end)

  it("evaluate inputs, say when one is incomplete, and keep locals", function()
    local results = in_process(function()
      local shell = require "moonbeam.shell"
      local s = shell.session()
      local out = {}
      local function try(text)
        local status, r = shell.eval(s, text)
        out[#out + 1] = status .. ":" .. (status == "ok" and (shell.format_values(r) or "") or r or "")
      end
      try("local a = 2")
      try("a * 21")
      try("for i = 1, 2 do")
      try("a, mb == require('moonbeam')")
      try("error('no')")
      try("return 1, 2\n")
      return table.concat(out, "|"), shell.binding(s, "a")
    end)
    assert.equal("ok:|ok:42|incomplete:|ok:2, true|error:shell:1: no|ok:1, 2", results)
  end)
end)
