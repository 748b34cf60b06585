/* Atoms are interned: the same name gives the same atom, from any thread;
 * a name too long for an atom is refused. */
#include "../internal.h"
#include "test.h"

#define THREADS 4
#define NAMES 5000

static const mb__atom_t *seen[THREADS][NAMES];

static void worker(void *arg) {
  int t = (int)(intptr_t)arg;
  char name[32];
  for (int i = 0; i < NAMES; i++) {
    int n = snprintf(name, sizeof name, "atom_%d", i);
    ASSERT_EQ(0, mb__atom_intern(name, (size_t)n, &seen[t][i]));
  }
}

TEST_IMPL(same_atom_from_every_thread) {
  uv_thread_t th[THREADS];
  for (int t = 0; t < THREADS; t++)
    ASSERT_EQ(0, uv_thread_create(&th[t], worker, (void *)(intptr_t)t));
  for (int t = 0; t < THREADS; t++)
    uv_thread_join(&th[t]);
  for (int i = 0; i < NAMES; i++) {
    for (int t = 1; t < THREADS; t++)
      ASSERT_EQ(seen[0][i], seen[t][i]);
    ASSERT_EQ(seen[0][i], mb__atom_at(seen[0][i]->index));
  }
}

TEST_IMPL(refuses_a_long_name_and_an_unknown_index) {
  const mb__atom_t *a;
  char big[300];
  memset(big, 'x', sizeof big);
  ASSERT_EQ(MB_ETOOBIG, mb__atom_intern(big, sizeof big, &a));
  ASSERT_EQ(NULL, mb__atom_at(1u << 30));
}

TEST_LIST(TEST_ENTRY(same_atom_from_every_thread),
          TEST_ENTRY(refuses_a_long_name_and_an_unknown_index))
