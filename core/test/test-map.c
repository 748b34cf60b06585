/* The u64 hash map keeps every key through growth and deletions. */
#include "../internal.h"
#include "test.h"

TEST_IMPL(keeps_keys_through_growth_and_deletions) {
  mb__map_t m;
  mb__map_init(&m);
  for (uint64_t k = 1; k <= 100000; k++)
    ASSERT_EQ(0, mb__map_put(&m, k * 7919, (void *)(uintptr_t)k));
  ASSERT_EQ(100000u, m.len);
  for (uint64_t k = 1; k <= 100000; k += 2)
    ASSERT_EQ((void *)(uintptr_t)k, mb__map_del(&m, k * 7919));
  for (uint64_t k = 1; k <= 100000; k++) {
    void *v = mb__map_get(&m, k * 7919);
    ASSERT_EQ(k % 2 ? NULL : (void *)(uintptr_t)k, v);
  }
  mb__map_free(&m);
}

TEST_IMPL(deleting_a_missing_key_gives_null) {
  mb__map_t m;
  mb__map_init(&m);
  ASSERT_EQ(NULL, mb__map_del(&m, 12345678901ULL));
  ASSERT_EQ(0, mb__map_put(&m, 7, (void *)1));
  ASSERT_EQ(NULL, mb__map_del(&m, 12345678901ULL));
  ASSERT_EQ((void *)1, mb__map_get(&m, 7));
  mb__map_free(&m);
}

TEST_LIST(TEST_ENTRY(keeps_keys_through_growth_and_deletions),
          TEST_ENTRY(deleting_a_missing_key_gives_null))
