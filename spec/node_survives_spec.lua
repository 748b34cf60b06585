-- Hostile or unlucky input ends at most the process it reaches, with a
-- clear error: the node goes on.  Each example runs a script in a node of
-- its own (the launcher), so that a crash shows as its exit status.
local H = require "spec.launcher_helper"

-- Run `code` as a script, after the launcher's `options` and with `args`;
-- it must end normally.  Returns its stdout and stderr.
local function survives(code, options, args)
  local dir = H.tmpdir()
  local script = dir .. "/script.lua"
  H.write(script, code)
  local argv = {}
  for _, a in ipairs(options or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = script
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local status, out, err = H.run(argv, {timeout = 60})
  H.remove(dir)
  assert(status == 0, "exit status " .. tostring(status) .. "\n" .. out .. err)
  return out, err
end

describe("a node name with a NUL byte", function()
  it("is refused where Lua gives it, and the node goes on", function()
    local out = survives([[
      local mb = require "moonbeam"
      mb.start_distribution{name = "nul@127.0.0.1", cookie = "c",
                            epmd_port = tonumber(arg[1])}
      print(select(2, pcall(mb.send, {"echo", "a\0b@c"}, 1)))
      print(select(2, pcall(mb.monitor, {"echo", "a\0b@c"})))
      print(select(2, pcall(mb.start_distribution, {name = "x\0y@z"})))
      mb.sleep(50)
      print("still here")
    ]], {}, {tostring(44000 + math.random(0, 999))})
    assert.same({
      "bad argument #1 to 'moonbeam.send' (node name with a NUL byte)",
      "bad argument #1 to 'moonbeam.monitor' (node name with a NUL byte)",
      "bad argument #1 to 'moonbeam.start_distribution' (node name with a NUL byte)",
      "still here",
    }, H.lines(out))
  end)
end)
