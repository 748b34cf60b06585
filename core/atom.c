/* The atom table.  Atoms are interned once per node and live as long as the
 * OS process, as in the BEAM.  An atom is addressed by its index; entries sit
 * in fixed chunks that never move, so reading by index takes no lock. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHUNK_BITS 10
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS (MB_ATOM_MAX >> CHUNK_BITS)

static uv_mutex_t lock = MB__MUTEX_INIT;
static mb__map_t by_hash; /* name hash -> index+1 of the newest atom */
static mb__atom_t **_Atomic chunks[MAX_CHUNKS];
static uint32_t *chain; /* index -> index+1 of the next atom, same hash */
static atomic_uint count;

static uint64_t hash_name(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h ? h : 1;
}

uint32_t mb__atom_count(void) {
  return atomic_load_explicit(&count, memory_order_relaxed);
}

const mb__atom_t *mb__atom_at(uint32_t index) {
  if (index >= atomic_load_explicit(&count, memory_order_acquire))
    return NULL;
  mb__atom_t **c =
      atomic_load_explicit(&chunks[index >> CHUNK_BITS], memory_order_acquire);
  return c[index & (CHUNK_SIZE - 1)];
}

static const mb__atom_t *find(uint64_t h, const char *name, size_t len) {
  uintptr_t i = (uintptr_t)mb__map_get(&by_hash, h);
  for (; i != 0; i = chain[i - 1]) {
    const mb__atom_t *a = mb__atom_at((uint32_t)i - 1);
    if (a->len == len && memcmp(a->name, name, len) == 0)
      return a;
  }
  return NULL;
}

static int add(uint64_t h, const char *name, size_t len,
               const mb__atom_t **out) {
  uint32_t n = atomic_load(&count);
  uint32_t ci = n >> CHUNK_BITS;
  if (ci >= MAX_CHUNKS)
    return MB_ELIMIT;
  if ((n & (CHUNK_SIZE - 1)) == 0) {
    mb__atom_t **c = calloc(CHUNK_SIZE, sizeof *c);
    uint32_t *nc = realloc(chain, (size_t)(n + CHUNK_SIZE) * sizeof *nc);
    if (c == NULL || nc == NULL) {
      free(c);
      if (nc != NULL)
        chain = nc;
      return MB_ENOMEM;
    }
    chain = nc;
    atomic_store_explicit(&chunks[ci], c, memory_order_release);
  }
  mb__atom_t *a = malloc(sizeof *a + len + 1);
  if (a == NULL)
    return MB_ENOMEM;
  a->index = n;
  a->len = (uint32_t)len;
  memcpy(a->name, name, len);
  a->name[len] = '\0';
  chain[n] = (uint32_t)(uintptr_t)mb__map_get(&by_hash, h);
  if (mb__map_put(&by_hash, h, (void *)(uintptr_t)(n + 1)) != 0) {
    free(a);
    return MB_ENOMEM;
  }
  atomic_load(&chunks[ci])[n & (CHUNK_SIZE - 1)] = a;
  atomic_store_explicit(&count, n + 1, memory_order_release);
  *out = a;
  return 0;
}

int mb__atom_intern(const char *name, size_t len, const mb__atom_t **out) {
  if (len > MB_ATOM_MAXLEN)
    return MB_ETOOBIG;
  uint64_t h = hash_name(name, len);
  uv_mutex_lock(&lock);
  const mb__atom_t *a = find(h, name, len);
  int err = 0;
  if (a != NULL)
    *out = a;
  else
    err = add(h, name, len, out);
  uv_mutex_unlock(&lock);
  return err;
}

int mb__atom_find(const char *name, size_t len, const mb__atom_t **out) {
  if (len > MB_ATOM_MAXLEN)
    return MB_ENOTFOUND;
  uv_mutex_lock(&lock);
  const mb__atom_t *a = find(hash_name(name, len), name, len);
  uv_mutex_unlock(&lock);
  if (a == NULL)
    return MB_ENOTFOUND;
  *out = a;
  return 0;
}
