/* Pids and refs of other nodes, interned into 64-bit keys.
 *
 * The core addresses processes by number: link and monitor tables, the
 * `from` of a signal and the target of mb__signal are all mb_pid_t.  A
 * process of another node gets a key with the top bit set, which the
 * distribution layer turns back into the pid it has on the wire.  Refs of
 * other nodes (monitor refs that come with MONITOR_P) are interned the same
 * way.  Keys live as long as the node; a node sees a bounded number of
 * remote pids in practice, and a key must stay valid while any table may
 * hold it. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
  uint32_t node, creation, len;
  uint32_t words[MB_REF_MAXWORDS]; /* a pid uses num, serial as words 0, 1 */
} rterm_t;

/* The len of a pid's term, and of a name's ({Name, Node}: the name's atom
 * index as word 0).  Names are told apart by len, outside the values a
 * peer's pid can take. */
#define PID_LEN 2
#define NAME_LEN 3

static uv_mutex_t lock = MB__MUTEX_INIT;
static mb__map_t by_key;  /* key -> rterm_t* */
static mb__map_t by_hash; /* hash -> key of the first term with that hash */
static uint64_t next_key = 1;

static uint64_t hash_term(const rterm_t *t, uint64_t kind) {
  uint64_t h = 1469598103934665603ULL ^ kind;
  const unsigned char *b = (const unsigned char *)t;
  for (size_t i = 0; i < sizeof *t; i++)
    h = (h ^ b[i]) * 1099511628211ULL;
  return h ? h : 1;
}

/* Intern t; kind separates pids from refs.  Colliding hashes probe the
 * next hash value. */
static mb_pid_t intern(const rterm_t *t, uint64_t kind) {
  uint64_t h = hash_term(t, kind);
  mb_pid_t key = 0;
  uv_mutex_lock(&lock);
  for (;; h = h + 1 ? h + 1 : 1) {
    uint64_t k = (uint64_t)(uintptr_t)mb__map_get(&by_hash, h);
    if (k == 0) {
      rterm_t *copy = malloc(sizeof *copy);
      if (copy == NULL)
        break;
      *copy = *t;
      k = MB_PID_REMOTE | kind << 62 | next_key++;
      if (mb__map_put(&by_key, k, copy) != 0 ||
          mb__map_put(&by_hash, h, (void *)(uintptr_t)k) != 0) {
        mb__map_del(&by_key, k);
        free(copy);
        break;
      }
      key = k;
      break;
    }
    const rterm_t *have = mb__map_get(&by_key, k);
    if (((k >> 62) & 1) == kind && memcmp(have, t, sizeof *t) == 0) {
      key = k;
      break;
    }
  }
  uv_mutex_unlock(&lock);
  return key;
}

static bool lookup(mb_pid_t key, rterm_t *out) {
  uv_mutex_lock(&lock);
  const rterm_t *t = mb__map_get(&by_key, key);
  if (t != NULL)
    *out = *t;
  uv_mutex_unlock(&lock);
  return t != NULL;
}

mb_pid_t mb__remote_pid_key(uint32_t node, uint32_t creation, uint32_t num,
                            uint32_t serial) {
  rterm_t t;
  memset(&t, 0, sizeof t);
  t.node = node;
  t.creation = creation;
  t.len = PID_LEN;
  t.words[0] = num;
  t.words[1] = serial;
  return intern(&t, 0);
}

mb_pid_t mb__remote_name_key(uint32_t node, uint32_t name) {
  rterm_t t;
  memset(&t, 0, sizeof t);
  t.node = node;
  t.len = NAME_LEN;
  t.words[0] = name;
  return intern(&t, 0);
}

bool mb__remote_name(mb_pid_t key, uint32_t *node, uint32_t *name) {
  rterm_t t;
  if (!MB_PID_IS_REMOTE(key) || ((key >> 62) & 1) != 0 || !lookup(key, &t) ||
      t.len != NAME_LEN)
    return false;
  *node = t.node;
  *name = t.words[0];
  return true;
}

bool mb__remote_pid(mb_pid_t key, uint32_t *node, uint32_t *creation,
                    uint32_t *num, uint32_t *serial) {
  rterm_t t;
  if (!MB_PID_IS_REMOTE(key) || ((key >> 62) & 1) != 0 || !lookup(key, &t) ||
      t.len != PID_LEN)
    return false;
  *node = t.node;
  *creation = t.creation;
  *num = t.words[0];
  *serial = t.words[1];
  return true;
}

uint64_t mb__remote_ref_key(uint32_t node, uint32_t creation, uint32_t len,
                            const uint32_t *words) {
  rterm_t t;
  memset(&t, 0, sizeof t);
  t.node = node;
  t.creation = creation;
  t.len = len > MB_REF_MAXWORDS ? MB_REF_MAXWORDS : len;
  memcpy(t.words, words, t.len * sizeof *words);
  return intern(&t, 1);
}

bool mb__remote_ref(uint64_t key, uint32_t *node, uint32_t *creation,
                    uint32_t *len, uint32_t *words) {
  rterm_t t;
  if (!MB_PID_IS_REMOTE(key) || ((key >> 62) & 1) != 1 || !lookup(key, &t))
    return false;
  *node = t.node;
  *creation = t.creation;
  *len = t.len;
  memcpy(words, t.words, t.len * sizeof *words);
  return true;
}
