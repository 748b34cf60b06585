-- moonbeam as a rock. From the root of a checkout, offline:
--
--   luarocks --lua-version 5.4 make rockspec/moonbeam-0.1.0-1.rockspec [--tree DIR]
--
-- builds with CMake (in build-luarocks/) and installs the launcher
-- (bin/moonbeam), the C module (lib/lua/5.4/moonbeam.so) and the Lua
-- modules (share/lua/5.4/moonbeam/*.lua) into the tree. Needs what the
-- CMake build needs: a C compiler, cmake, pkg-config, the Lua 5.4 headers,
-- libuv, and LPeg for Lua 5.4 (Debian: lua-lpeg); libedit for line
-- editing in the shell, if it is there. See docs/operations.md.
rockspec_format = "3.0"
package = "moonbeam"
version = "0.1.0-1"

source = {
  -- `luarocks make` builds the directory it runs in and fetches nothing.
  url = "file://.",
}

description = {
  summary = "Erlang/OTP-style actors for Lua 5.4",
  detailed = [[
Every process is a Lua state of its own with a mailbox; processes are
scheduled preemptively on all cores and pass messages by copy. The standard
library has OTP's behaviours: gen_server, supervisor, application. The
launcher, moonbeam, runs scripts, starts nodes from application files and
has an interactive shell.]],
  labels = {"actors", "concurrency", "erlang", "otp"},
  license = "MIT",
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

external_dependencies = {
  LIBUV = {header = "uv.h"},
}

build = {
  type = "command",
  build_command = [[cmake -S . -B build-luarocks -DCMAKE_BUILD_TYPE=Release ]]
    .. [[-DMB_BUILD_TESTS=OFF "-DCMAKE_INSTALL_PREFIX=$(PREFIX)" ]]
    .. [["-DMB_INSTALL_BINDIR=$(BINDIR)" "-DMB_INSTALL_LUADIR=$(LUADIR)" ]]
    .. [["-DMB_INSTALL_CMODDIR=$(LIBDIR)" && cmake --build build-luarocks --parallel 4]],
  install_command = [[cmake --install build-luarocks]],
}
