-- The launcher finds its stdlib wherever it is built: in the checkout
-- (the build under test), in a build directory outside it, and installed
-- with `cmake --install`.
local H = require "launcher_helper"

local quote = H.quote

-- CMake runs without the specs' LD_PRELOAD (the sanitizer runs).
local function sh(cmd)
  local p = assert(io.popen(string.format("timeout -k 5 300 env -u LD_PRELOAD sh -c %s 2>&1",
    quote(cmd))))
  local out = p:read("a")
  local _, _, status = p:close()
  return status, out
end

local CHECK = {"eval", "return require('moonbeam.net_kernel') ~= nil"}

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("a launcher", function()
  local tmp, root

  lazy_setup(function()
    local p = io.popen("pwd")
    root = p:read("l")
    p:close()
    tmp = H.tmpdir()
  end)

  lazy_teardown(function() if tmp then H.remove(tmp) end end)

  it("built in the checkout finds the stdlib", function()
    local s, out, err = H.run(CHECK)
    assert.equal(0, s, err)
    assert.equal("true\n", out)
  end)

  it("built out of tree finds the stdlib, and so does its installed copy", function()
    local status, out = sh(string.format(
      "cmake -S %s -B %s/b -DMB_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=%s/p && "
        .. "cmake --build %s/b --target moonbeam moonbeam_lua -j2 && cmake --install %s/b",
      quote(root), quote(tmp), quote(tmp), quote(tmp), quote(tmp)))
    assert(status == 0, out)
    for _, program in ipairs({tmp .. "/b/bin/moonbeam", tmp .. "/p/bin/moonbeam"}) do
      local s, stdout, err = H.run(CHECK, {program = program, cwd = tmp})
      assert.equal(0, s, program .. ": " .. err)
      assert.equal("true\n", stdout)
    end
  end)
end)
