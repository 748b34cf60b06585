/* A small open-addressing hash map from non-zero u64 keys to pointers, with
 * linear probing and backward-shift deletion (no tombstones).  Callers do
 * their own locking.  An empty map allocates nothing. */
#include <stdlib.h>

#include "internal.h"

static size_t slot_of(uint64_t key, size_t cap) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return (size_t)key & (cap - 1);
}

void mb__map_init(mb__map_t *m) {
  m->slots = NULL;
  m->cap = m->len = 0;
}

void mb__map_free(mb__map_t *m) {
  free(m->slots);
  mb__map_init(m);
}

void *mb__map_get(const mb__map_t *m, uint64_t key) {
  if (m->cap == 0)
    return NULL;
  for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i].key == key)
      return m->slots[i].val;
    if (m->slots[i].key == 0)
      return NULL;
  }
}

bool mb__map_next(const mb__map_t *m, size_t *i, uint64_t *key, void **val) {
  for (; *i < m->cap; ++*i)
    if (m->slots[*i].key != 0) {
      *key = m->slots[*i].key;
      *val = m->slots[*i].val;
      ++*i;
      return true;
    }
  return false;
}

static void insert(mb__map_t *m, uint64_t key, void *val) {
  size_t i = slot_of(key, m->cap);
  while (m->slots[i].key != 0 && m->slots[i].key != key)
    i = (i + 1) & (m->cap - 1);
  if (m->slots[i].key == 0)
    m->len++;
  m->slots[i].key = key;
  m->slots[i].val = val;
}

static int grow(mb__map_t *m) {
  size_t ncap = m->cap ? (size_t)m->cap * 2 : 8;
  if (ncap > UINT32_MAX)
    return MB_ENOMEM;
  mb__map_t n = {calloc(ncap, sizeof *n.slots), (uint32_t)ncap, 0};
  if (n.slots == NULL)
    return MB_ENOMEM;
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key != 0)
      insert(&n, m->slots[i].key, m->slots[i].val);
  mb__map_free(m);
  *m = n;
  return 0;
}

int mb__map_put(mb__map_t *m, uint64_t key, void *val) {
  if (((size_t)m->len + 1) * 4 > (size_t)m->cap * 3) {
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
  while (m->slots[i].key != key) {
    if (m->slots[i].key == 0)
      return NULL;
    i = (i + 1) & mask;
  }
  void *val = m->slots[i].val;
  /* Shift later entries of the same probe run back into the hole. */
  for (size_t j = (i + 1) & mask; m->slots[j].key != 0; j = (j + 1) & mask) {
    size_t home = slot_of(m->slots[j].key, m->cap);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = 0;
  m->slots[i].val = NULL;
  m->len--;
  return val;
}
