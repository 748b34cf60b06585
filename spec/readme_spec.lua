-- The README's samples as written: its ```lua blocks are scripts the docs
-- spec runs; the sessions are run here, on real nodes started as the README
-- starts them: two moonbeam shells (```sh-nodes), what is typed in each
-- (```lua-shell-a, ```text-shell-b), and an Erlang shell (```erl-session).
-- Every node uses a test EPMD port, served by the first node, and is
-- stopped by its pid.
local H = require "launcher_helper"

local quote = H.quote

-- The fenced blocks of README.md: {info = ..., lines = {...}, after = the
-- first non-empty line after the block}.
local function blocks()
  local out, block, last = {}, nil, nil
  for line in io.lines("README.md") do
    if block == nil then
      local info = line:match("^```(%S*)")
      if info then
        block = {info = info, lines = {}}
      elseif last and last.after == nil and line:match("%S") then
        last.after = line
      end
    elseif line:match("^```%s*$") then
      out[#out + 1] = block
      last, block = block, nil
    else
      block.lines[#block.lines + 1] = line
    end
  end
  return out
end

local function block(info, contains)
  for _, b in ipairs(blocks()) do
    local text = table.concat(b.lines, "\n")
    if b.info == info and (contains == nil or text:find(contains, 1, true)) then return b end
  end
  error("README.md has no ```" .. info .. " block" .. (contains and (" with " .. contains) or ""))
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("README.md", function()
  it("runs every block or says beside it why it cannot", function()
    local run_here = {["sh-nodes"] = true, ["lua-shell-a"] = true, ["text-shell-b"] = true,
                      ["erl-session"] = true, lua = true}
    for _, b in ipairs(blocks()) do
      if b.info == "sh-norun" then
        assert.truthy(b.after and b.after:match("^%("), "a norun block without a why: "
          .. table.concat(b.lines, "\n"))
      else
        assert.truthy(run_here[b.info], "a block that nothing runs: ```" .. b.info)
      end
    end
  end)

  describe("sessions", function()
    local port = tostring(25000 + math.random(0, 999))
    local env = {ERL_EPMD_PORT = port}
    local nodes = {}

    -- A launcher the README starts: its arguments from a line of sh-nodes.
    local function start_node(line)
      local args = {}
      for w in line:gmatch("%S+") do args[#args + 1] = w end
      assert.equal("build/bin/moonbeam", table.remove(args, 1))
      local job = H.start(args, {env = env, input = true})
      nodes[#nodes + 1] = job
      return job
    end

    lazy_teardown(function()
      -- The end of input ends a shell and its node. A node started later
      -- holds the input of those before it open too, so all are closed
      -- before any is waited for.
      for _, job in ipairs(nodes) do job:close_input() end
      for _, job in ipairs(nodes) do
        job:wait(10)
        job:cleanup()
      end
    end)

    it("two nodes talk, and an Erlang node joins them", function()
      local lines = block("sh-nodes").lines
      local a = start_node(lines[1])
      assert(a:wait_output("shell, process", 20), a:stderr())
      local b = start_node(lines[2])
      assert(b:wait_output("shell, process", 20), b:stderr())

      for _, line in ipairs(block("lua-shell-a").lines) do a:type(line .. "\n") end
      a:type('"a is done"\n')
      assert(a:wait_output('"a is done"', 20), a:stdout() .. a:stderr())
      assert.falsy(a:stdout():find("** (error)", 1, true), a:stdout())
      assert.truthy(a:stdout():find(" " .. os.getenv("HOME") .. "\n", 1, true), a:stdout())

      local typed, said = block("text-shell-b").lines[1]:match("^mb%(%d+%)> (.*)$"),
        block("text-shell-b").lines[2]
      b:type(typed .. "\n")
      assert(b:wait_output(said, 20), b:stdout())

      -- the GenServer sample, pasted into a's shell
      for _, line in ipairs(block("lua", "gen_server.start(kv").lines) do a:type(line .. "\n") end
      a:type('"kv is up"\n')
      assert(a:wait_output('"kv is up"', 20), a:stdout())
      assert.falsy(a:stdout():find("** (error)", 1, true), a:stdout())

      if os.execute("command -v erl > /dev/null") ~= true then
        pending("erl is not installed")
        return
      end
      local session = block("erl-session").lines
      local input, expected = {}, {}
      for i = 1, #session, 2 do
        local prompt, typed = session[i]:match("^(%(e@127%.0%.0%.1%)%d+>) (.*)$")
        assert(prompt, session[i])
        input[#input + 1] = typed
        expected[#expected + 1] = session[i + 1]
      end
      input[#input + 1] = "halt()."
      local dir = H.tmpdir()
      finally(function() H.remove(dir) end)
      H.write(dir .. "/in", table.concat(input, "\n") .. "\n")
      -- `erl` as the README starts it, reading the session from stdin
      local cmd = "cd " .. quote(dir) .. " && ERL_EPMD_PORT=" .. port
        .. " timeout -k 5 30 env -u LD_PRELOAD erl -name e@127.0.0.1 -setcookie c < in > out 2>&1"
      os.execute(cmd)
      local out = H.read(dir .. "/out")
      local from = 1
      for _, want in ipairs(expected) do
        local i, j = out:find("> " .. want .. "\n", from, true)
        assert(i, "erl did not print " .. want .. " in turn:\n" .. out)
        from = j
      end
    end)
  end)
end)
