/* A small open-addressing hash map from non-zero u64 keys to pointers, with
 * linear probing and backward-shift deletion (no tombstones).  Callers do
 * their own locking. */
#include <stdlib.h>

#include "internal.h"

static size_t slot_of(uint64_t key, size_t cap) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return (size_t)key & (cap - 1);
}

void mb__map_init(mb__map_t *m) {
  m->keys = NULL;
  m->vals = NULL;
  m->cap = m->len = 0;
}

void mb__map_free(mb__map_t *m) {
  free(m->keys);
  free(m->vals);
  mb__map_init(m);
}

void *mb__map_get(const mb__map_t *m, uint64_t key) {
  if (m->cap == 0)
    return NULL;
  for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->keys[i] == key)
      return m->vals[i];
    if (m->keys[i] == 0)
      return NULL;
  }
}

static void insert(mb__map_t *m, uint64_t key, void *val) {
  size_t i = slot_of(key, m->cap);
  while (m->keys[i] != 0 && m->keys[i] != key)
    i = (i + 1) & (m->cap - 1);
  if (m->keys[i] == 0)
    m->len++;
  m->keys[i] = key;
  m->vals[i] = val;
}

static int grow(mb__map_t *m) {
  size_t ncap = m->cap ? m->cap * 2 : 16;
  mb__map_t n = {calloc(ncap, sizeof(uint64_t)), calloc(ncap, sizeof(void *)),
                 ncap, 0};
  if (n.keys == NULL || n.vals == NULL) {
    mb__map_free(&n);
    return MB_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++)
    if (m->keys[i] != 0)
      insert(&n, m->keys[i], m->vals[i]);
  mb__map_free(m);
  *m = n;
  return 0;
}

int mb__map_put(mb__map_t *m, uint64_t key, void *val) {
  if ((m->len + 1) * 4 > m->cap * 3) {
    int err = grow(m);
    if (err)
      return err;
  }
  insert(m, key, val);
  return 0;
}

void *mb__map_del(mb__map_t *m, uint64_t key) {
  if (m->cap == 0)
    return NULL;
  size_t mask = m->cap - 1, i = slot_of(key, m->cap);
  while (m->keys[i] != key) {
    if (m->keys[i] == 0)
      return NULL;
    i = (i + 1) & mask;
  }
  void *val = m->vals[i];
  /* Shift later entries of the same probe run back into the hole. */
  for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
    size_t home = slot_of(m->keys[j], m->cap);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->keys[i] = m->keys[j];
      m->vals[i] = m->vals[j];
      i = j;
    }
  }
  m->keys[i] = 0;
  m->vals[i] = NULL;
  m->len--;
  return val;
}
