/* The globals of a process (proc.c): the base library's functions are set
 * one at a time, as the process first names them, from a list read once
 * per node; require "_G" sets the rest without overwriting the process's
 * own globals. */
#include "test.h"

TEST_IMPL(base_functions_are_set_as_they_are_named) {
  test_node_start(4);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  for i = 1, 100 do mb.spawn(function()\n"
      "    local r = {}\n"
      "    r[1] = rawget(_G, 'type') == nil and rawget(_G, 'print') == nil\n"
      "    r[2] = type(i) == 'number' and rawget(_G, 'type') == type\n"
      "    r[3] = rawget(_G, 'print') == nil and rawget(_G, 'pairs') == nil\n"
      "    r[4] = no_such_global == nil and rawget(_G, 'select') == nil\n"
      "    r[5] = _G == _ENV and _VERSION == 'Lua 5.4'\n"
      "    print = 'my own'\n"
      "    local g = require '_G'\n"
      "    r[6] = g == _G and print == 'my own' and package.loaded._G == _G\n"
      "    r[7] = rawget(_G, 'select') == select and pcall(error, 'x') == "
      "false\n"
      "    mb.send(me, r)\n"
      "  end) end\n"
      "  for i = 1, 100 do\n"
      "    local r = assert(mb.receive(10000))\n"
      "    for k = 1, 7 do assert(r[k] == true, 'check ' .. k) end\n"
      "  end\n"
      "  return 100\n"
      "end\n",
      &n));
  ASSERT_EQ(100, n);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(base_functions_are_set_as_they_are_named))
