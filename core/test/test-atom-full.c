/* A node whose atom table is full goes on: a new atom is refused with a
 * clear error (not "longer than 255 bytes"), atoms that exist still work,
 * and a send to another node writes only atoms the core interned at start
 * (distribution here is the fuzzers' socketless kind: frames go nowhere). */
#include "../dist/dist_internal.h"
#include "test.h"

TEST_IMPL(a_full_table_refuses_new_atoms_and_the_node_goes_on) {
  mb_log_set_level(MB_LOG_ERROR + 1);
  mb_config_t cfg = {0};
  cfg.schedulers = 1;
  ASSERT_EQ(0, mb_node_start(&cfg));
  ASSERT_EQ(0, mb__dist_fuzz_init("full@localhost", "cookie"));

  const mb__atom_t *a;
  ASSERT_EQ(0, mb__atom_intern("peer@localhost", 14, &a));
  char name[32];
  unsigned i = 0;
  int err;
  do {
    int n = snprintf(name, sizeof name, "fill_%u", i++);
    err = mb__atom_intern(name, (size_t)n, &a);
  } while (err == 0);
  ASSERT_EQ(MB_ELIMIT, err);
  ASSERT(i <= MB_ATOM_MAX);
  ASSERT_EQ(0, mb__atom_intern("fill_1", 6, &a));
  char longname[300];
  memset(longname, 'x', sizeof longname);
  ASSERT_EQ(MB_ETOOBIG, mb__atom_intern(longname, sizeof longname, &a));

  long long r = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local ok, e = pcall(mb.atom, 'brand_new')\n"
      "  assert(not ok and e:find('atom table is full', 1, true), e)\n"
      "  assert(tostring(mb.atom('fill_1')) == 'fill_1')\n"
      "  ok, e = pcall(mb.send, {'fill_1', 'other@localhost'}, 'x')\n"
      "  assert(not ok and e:find('atom table is full', 1, true), e)\n"
      "  ok, e = pcall(mb.register, 'brand_new', mb.self())\n"
      "  assert(not ok and e:find('atom table is full', 1, true), e)\n"
      "  mb.send({'fill_1', 'peer@localhost'}, {hello = mb.atom.fill_2})\n"
      "  local ref = mb.monitor({'fill_3', 'peer@localhost'})\n"
      "  mb.demonitor(ref)\n"
      "  return 1\n"
      "end\n",
      &r));
  ASSERT_EQ(1, r);
}

TEST_LIST(TEST_ENTRY(a_full_table_refuses_new_atoms_and_the_node_goes_on))
