/* require without the package library (modcache.c): a process loads a
 * module another process compiled from the node's cache without opening
 * package, gets what package's require would give, and hands everything
 * else to package's require, which it then opens. */
#include <stdlib.h>
#include <sys/stat.h>

#include "test.h"

static char dir[] = "/tmp/mb-test-require-XXXXXX";
static char mod_file[sizeof dir + 32];

/* A node whose package.path is the test's directory; in it the module
 * `cached`, which counts its loads in a global. */
static void start(int schedulers) {
  ASSERT(mkdtemp(dir) != NULL);
  snprintf(mod_file, sizeof mod_file, "%s/cached.lua", dir);
  FILE *f = fopen(mod_file, "w");
  ASSERT(f != NULL);
  fputs("local name, data = ...\n"
        "loads = (loads or 0) + 1\n"
        "return {name = name, data = data}\n",
        f);
  ASSERT_EQ(0, fclose(f));
  char path[sizeof dir + 16];
  snprintf(path, sizeof path, "%s/?.lua", dir);
  mb_config_t cfg = {0};
  cfg.schedulers = schedulers;
  cfg.lua_path = path;
  ASSERT_EQ(0, mb_node_start(&cfg));
}

static void stop(void) {
  test_node_stop();
  ASSERT_EQ(0, remove(mod_file));
  ASSERT_EQ(0, rmdir(dir));
}

/* The first process compiles the module through package's require; many
 * processes at once then load it from the cache with package unopened,
 * each with package's results: the module, from the chunk given the name
 * and the file's path, kept in package.loaded, loaded once. */
TEST_IMPL(cached_modules_load_without_the_package_library) {
  start(4);
  long long n = 0;
  int ok = test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local first, path = require 'cached'\n"
      "  assert(rawget(_G, 'package') ~= nil, 'the first opens package')\n"
      "  local me = mb.self()\n"
      "  for i = 1, 200 do mb.spawn(function()\n"
      "    local m, data = require 'cached'\n"
      "    local again = require 'cached'\n"
      "    local opened = rawget(_G, 'package') ~= nil\n"
      "    local kept = package.loaded.cached\n"
      "    mb.send(me, {opened, m.name, m.data, data, again == m, kept == m,\n"
      "      loads})\n"
      "  end) end\n"
      "  for i = 1, 200 do\n"
      "    local r = assert(mb.receive(10000))\n"
      "    assert(r[1] == false, 'package opened')\n"
      "    assert(r[2] == 'cached' and r[3] == path and r[4] == path)\n"
      "    assert(r[5] and r[6], 'not kept in package.loaded')\n"
      "    assert(r[7] == 1, 'loaded more than once')\n"
      "  end\n"
      "  return 200\n"
      "end\n",
      &n);
  stop(); /* the directory goes, whatever the process found */
  ASSERT(ok);
  ASSERT_EQ(200, n);
}

/* What the cache cannot give goes to package's require: a module not
 * found fails with its message; a module compiled from a string comes
 * without package; and once package is open its searchers (a
 * package.preload entry here) are used, also by a require taken before. */
TEST_IMPL(everything_else_goes_to_package_require) {
  start(2);
  long long n = 0;
  int ok = test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local cc = require 'moonbeam.codecache'\n"
      "  local code = string.dump(load('return {from = \"string\"}'))\n"
      "  cc.install('from_string', nil, code)\n"
      "  mb.spawn(function()\n"
      "    local ok, err = pcall(require, 'no.such.module')\n"
      "    mb.send(me, {ok, tostring(err)})\n"
      "  end)\n"
      "  local r = assert(mb.receive(10000))\n"
      "  assert(r[1] == false and r[2]:find(\"module 'no.such.module' not "
      "found\", 1, true), r[2])\n"
      "  mb.spawn(function()\n"
      "    local s, data = require 'from_string'\n"
      "    mb.send(me, {s.from, data, rawget(_G, 'package') ~= nil})\n"
      "  end)\n"
      "  r = assert(mb.receive(10000))\n"
      "  assert(r[1] == 'string' and r[2] == '=from_string', tostring(r[2]))\n"
      "  assert(r[3] == false, 'package opened')\n"
      "  mb.spawn(function()\n"
      "    local req = require -- taken before package is opened\n"
      "    package.preload.cached = function() return 'preloaded' end\n"
      "    mb.send(me, (req 'cached'))\n"
      "  end)\n"
      "  assert(mb.receive(10000) == 'preloaded')\n"
      "  return 3\n"
      "end\n",
      &n);
  stop();
  ASSERT(ok);
  ASSERT_EQ(3, n);
}

TEST_LIST(TEST_ENTRY(cached_modules_load_without_the_package_library),
          TEST_ENTRY(everything_else_goes_to_package_require))
