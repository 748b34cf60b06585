-- fsm: a finite-state machine behaviour for moonbeam, packaged as a rock
-- of its own, as a third party would. From this directory, offline:
--
--   luarocks --lua-version 5.4 make fsm-0.1.0-1.rockspec --tree DIR
--
-- It depends on the moonbeam rock; when moonbeam runs from a checkout
-- instead (not installed in DIR as a rock), add --deps-mode none.
rockspec_format = "3.0"
package = "fsm"
version = "0.1.0-1"

source = {
  -- `luarocks make` builds the directory it runs in and fetches nothing.
  url = "file://.",
}

description = {
  summary = "A finite-state machine behaviour for moonbeam",
  detailed = [[
A server whose callback module has one function per state, as OTP's
gen_statem with state functions: each event goes to the function of the
current state, which returns the next state.]],
}

dependencies = {
  "lua >= 5.4, < 5.5",
  "moonbeam >= 0.1",
}

build = {
  type = "builtin",
  modules = {
    fsm = "fsm.lua",
  },
}
