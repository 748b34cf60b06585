/* The external term format (ETF): how terms travel between Erlang nodes.
 *
 * Three users.  The encoder turns a Lua value into a term and the decoder
 * does the reverse (the mapping is in docs/terms.md); the distribution
 * layer reads and writes control tuples with the reader and writer
 * functions, without a Lua state.
 *
 * What is written is canonical, as OTP 25 writes it with
 * term_to_binary(T, [{minor_version, 2}]): the smallest integer form,
 * STRING_EXT for short lists of bytes, UTF-8 atoms, NEW_PID_EXT,
 * NEWER_REFERENCE_EXT, and maps of up to 32 keys in Erlang's key order.
 * What is read may use the older and non-canonical forms too.  Terms Lua
 * has no type for (big integers, bitstrings, funs, ports) are kept as
 * opaque values holding their canonical encoding, so that a term decoded
 * and encoded again comes back byte for byte as Erlang would write it.
 *
 * Input comes from the network: every length is checked against what is
 * left before anything is allocated, nesting is bounded, and the decoder
 * returns errors rather than raising them. */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "etf.h"

typedef mb__etf_reader_t rd_t;

#define STR(x) #x
#define XSTR(x) STR(x)

/* ---- this node ---- */

/* One word, (atom index + 1) << 32 | creation, so that no reader sees a
 * name with another name's creation.  0 until set: nonode@nohost, 0. */
static _Atomic uint64_t local_id;
static const mb__atom_t *_Atomic nonode;

void mb__etf_set_local(const mb__atom_t *node, uint32_t creation) {
  uint64_t v = node ? ((uint64_t)node->index + 1) << 32 | creation : 0;
  atomic_store_explicit(&local_id, v, memory_order_release);
}

int mb__etf_get_local(const mb__atom_t **node, uint32_t *creation) {
  uint64_t v = atomic_load_explicit(&local_id, memory_order_acquire);
  if (v != 0) {
    *node = mb__atom_at((uint32_t)(v >> 32) - 1);
    *creation = (uint32_t)v;
    return 0;
  }
  *creation = 0;
  *node = atomic_load_explicit(&nonode, memory_order_acquire);
  if (*node != NULL)
    return 0;
  int err = mb__atom_intern("nonode@nohost", 13, node);
  if (err == 0)
    atomic_store_explicit(&nonode, *node, memory_order_release);
  return err;
}

bool mb__etf_pid_local(const mb__etf_pid_t *pid, mb_pid_t *out) {
  const mb__atom_t *node;
  uint32_t creation;
  if (mb__etf_get_local(&node, &creation) != 0 || pid->node != node ||
      pid->creation != creation || pid->id > 0x7fff || pid->serial > 0x1fff)
    return false;
  *out = pid->id | pid->serial << 15;
  return true;
}

/* This node's refs are the ones it writes: 3 words, the third 0, and no
 * top bit (that marks the keys of other nodes' refs, see remote.c). */
bool mb__etf_ref_local(const mb__etf_ref_t *ref, uint64_t *out) {
  const mb__atom_t *node;
  uint32_t creation;
  if (mb__etf_get_local(&node, &creation) != 0 || ref->node != node ||
      ref->creation != creation || ref->len != 3 || ref->words[2] != 0 ||
      (ref->words[1] & 0x80000000u) != 0)
    return false;
  *out = (uint64_t)ref->words[1] << 32 | ref->words[0];
  return true;
}

/* ---- writing into a message ---- */

static int reserve(mb_msg_t **mp, size_t n) {
  return mb__msg_reserve(mp, n) ? -1 : 0;
}

static int put(mb_msg_t **m, const void *p, size_t n) {
  return mb__msg_append(m, p, n) ? -1 : 0;
}

static int put1(mb_msg_t **m, unsigned c) {
  unsigned char b = (unsigned char)c;
  return put(m, &b, 1);
}

static int put2(mb_msg_t **m, unsigned v) {
  unsigned char b[2];
  mb__put16(b, (uint16_t)v);
  return put(m, b, 2);
}

static int put4(mb_msg_t **m, uint32_t v) {
  unsigned char b[4];
  mb__put32(b, v);
  return put(m, b, 4);
}

/* A tag with a 32-bit count, as tuples, lists, maps and binaries have. */
static int put_head(mb_msg_t **m, unsigned tag, uint32_t n) {
  unsigned char b[5] = {(unsigned char)tag};
  mb__put32(b + 1, n);
  return put(m, b, 5);
}

static int put_atom_text(mb_msg_t **m, const char *s, size_t len) {
  if (len <= 255)
    return put1(m, MB_ETF_SMALL_ATOM_UTF8) || put1(m, (unsigned)len) ||
           put(m, s, len);
  return put1(m, MB_ETF_ATOM_UTF8) || put2(m, (unsigned)len) || put(m, s, len);
}

static int put_atom(mb_msg_t **m, const mb__atom_t *a) {
  return put_atom_text(m, a->name, a->len);
}

/* The smallest form: SMALL_INTEGER_EXT, INTEGER_EXT, then SMALL_BIG_EXT. */
static int put_int(mb_msg_t **m, int64_t v) {
  if (v >= 0 && v <= 255)
    return put1(m, MB_ETF_SMALL_INTEGER) || put1(m, (unsigned)v);
  if (v >= INT32_MIN && v <= INT32_MAX)
    return put1(m, MB_ETF_INTEGER) || put4(m, (uint32_t)v);
  uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  unsigned char b[11] = {MB_ETF_SMALL_BIG, 0, v < 0};
  unsigned n = 0;
  for (; mag != 0; mag >>= 8)
    b[3 + n++] = (unsigned char)mag;
  b[1] = (unsigned char)n;
  return put(m, b, 3 + n);
}

static int put_float(mb_msg_t **m, double d) {
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  unsigned char b[9] = {MB_ETF_NEW_FLOAT};
  mb__put32(b + 1, (uint32_t)(bits >> 32));
  mb__put32(b + 5, (uint32_t)bits);
  return put(m, b, 9);
}

static int put_pid(mb_msg_t **m, const mb__atom_t *node, uint32_t id,
                   uint32_t serial, uint32_t creation) {
  return put1(m, MB_ETF_NEW_PID) || put_atom(m, node) || put4(m, id) ||
         put4(m, serial) || put4(m, creation);
}

static int put_ref(mb_msg_t **m, const mb__atom_t *node, uint32_t creation,
                   uint32_t len, const uint32_t *words) {
  if (put1(m, MB_ETF_NEWER_REFERENCE) || put2(m, len) || put_atom(m, node) ||
      put4(m, creation))
    return -1;
  for (uint32_t i = 0; i < len; i++)
    if (put4(m, words[i]))
      return -1;
  return 0;
}

/* A local ref's 64 bits as three words, the third 0 (see the decoder). */
static int put_local_ref(mb_msg_t **m, const mb__atom_t *node,
                         uint32_t creation, uint64_t id) {
  uint32_t words[3] = {(uint32_t)id, (uint32_t)(id >> 32), 0};
  return put_ref(m, node, creation, 3, words);
}

/* ---- reading: bounds, numbers, atoms ---- */

static int bad(rd_t *r, const char *why) {
  r->why = why;
  return MB_EBADTERM;
}

static size_t left(const rd_t *r) { return (size_t)(r->end - r->p); }

/* Take n bytes; they start at the returned pointer. */
static const unsigned char *take(rd_t *r, size_t n) {
  if (left(r) < n)
    return NULL;
  const unsigned char *p = r->p;
  r->p += n;
  return p;
}

#define TAKE(r, var, n)                                                        \
  do {                                                                         \
    if ((var = take(r, n)) == NULL)                                            \
      return bad(r, "truncated");                                              \
  } while (0)

/* Characters in s, or -1 unless it is UTF-8 as Erlang accepts it for atoms:
 * shortest forms, no surrogates, nothing above U+10FFFF. */
static long utf8_chars(const unsigned char *s, size_t n) {
  long chars = 0;
  for (size_t i = 0; i < n; chars++) {
    unsigned c = s[i];
    size_t k = c < 0x80   ? 1
               : c < 0xc2 ? 0
               : c < 0xe0 ? 2
               : c < 0xf0 ? 3
               : c < 0xf5 ? 4
                          : 0;
    if (k == 0 || k > n - i)
      return -1;
    for (size_t j = 1; j < k; j++)
      if ((s[i + j] & 0xc0) != 0x80)
        return -1;
    if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0) ||
        (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90))
      return -1;
    i += k;
  }
  return chars;
}

/* An atom's name, converted to UTF-8.  Erlang allows 255 characters, up
 * to 1020 bytes of UTF-8; the atom table holds 255 bytes, so a longer
 * name reads here but becomes no atom (the decoder keeps such an atom as
 * an opaque term). */
#define ATEXT_MAX (255 * 4)
typedef struct {
  size_t len;
  char s[ATEXT_MAX + 1];
} atext_t;

static int latin1_atom(rd_t *r, const unsigned char *s, size_t n, atext_t *a) {
  if (n > 255)
    return bad(r, "an atom longer than 255 characters");
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < 0x80) {
      a->s[len++] = (char)s[i];
    } else {
      a->s[len++] = (char)(0xc0 | s[i] >> 6);
      a->s[len++] = (char)(0x80 | (s[i] & 0x3f));
    }
  }
  a->len = len;
  return 0;
}

static int utf8_atom(rd_t *r, const unsigned char *s, size_t n, atext_t *a) {
  long chars = utf8_chars(s, n);
  if (chars < 0)
    return bad(r, "an atom that is not valid UTF-8");
  if (chars > 255 || n > ATEXT_MAX)
    return bad(r, "an atom longer than 255 characters");
  memcpy(a->s, s, n);
  a->len = n;
  return 0;
}

static int get_atom(rd_t *r, atext_t *a) {
  const unsigned char *start = r->p, *h, *s;
  TAKE(r, h, 1);
  unsigned tag = h[0];
  size_t n;
  if (tag == MB_ETF_SMALL_ATOM || tag == MB_ETF_SMALL_ATOM_UTF8) {
    TAKE(r, h, 1);
    n = h[0];
  } else if (tag == MB_ETF_ATOM || tag == MB_ETF_ATOM_UTF8) {
    TAKE(r, h, 2);
    n = mb__get16(h);
  } else {
    r->p = start;
    return bad(r, "an atom expected");
  }
  TAKE(r, s, n);
  int err = tag == MB_ETF_ATOM || tag == MB_ETF_SMALL_ATOM
                ? latin1_atom(r, s, n, a)
                : utf8_atom(r, s, n, a);
  if (err)
    r->p = start;
  return err;
}

static bool atom_is(const atext_t *a, const char *name) {
  size_t n = strlen(name);
  return a->len == n && memcmp(a->s, name, n) == 0;
}

/* An integer of any form: sign and little-endian magnitude without high
 * zero bytes (`d` points into the input, or into `small`). */
typedef struct {
  bool neg;
  size_t n;
  const unsigned char *d;
  unsigned char small[4];
} bigv_t;

static int get_integer(rd_t *r, bigv_t *v) {
  const unsigned char *h;
  TAKE(r, h, 1);
  v->neg = false;
  if (h[0] == MB_ETF_SMALL_INTEGER || h[0] == MB_ETF_INTEGER) {
    uint32_t u;
    if (h[0] == MB_ETF_SMALL_INTEGER) {
      TAKE(r, h, 1);
      u = h[0];
    } else {
      TAKE(r, h, 4);
      int32_t s = (int32_t)mb__get32(h);
      v->neg = s < 0;
      u = s < 0 ? 0 - (uint32_t)s : (uint32_t)s;
    }
    for (int i = 0; i < 4; i++)
      v->small[i] = (unsigned char)(u >> (8 * i));
    v->d = v->small;
    v->n = 4;
  } else if (h[0] == MB_ETF_SMALL_BIG || h[0] == MB_ETF_LARGE_BIG) {
    size_t hn = h[0] == MB_ETF_SMALL_BIG ? 1 : 4;
    TAKE(r, h, hn + 1);
    v->n = hn == 1 ? h[0] : mb__get32(h);
    v->neg = h[hn] != 0;
    TAKE(r, v->d, v->n);
  } else {
    return bad(r, "an integer expected");
  }
  while (v->n > 0 && v->d[v->n - 1] == 0)
    v->n--;
  return 0;
}

/* The value if it fits in 64 signed bits. */
static bool big_to_int(const bigv_t *v, int64_t *out) {
  if (v->n > 8)
    return false;
  uint64_t mag = 0;
  for (size_t i = v->n; i > 0; i--)
    mag = mag << 8 | v->d[i - 1];
  if (v->neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
    return false;
  *out = v->neg ? (int64_t)(0 - mag) : (int64_t)mag;
  return true;
}

/* FLOAT_EXT: a "%.20e" string in 31 bytes.  strtod follows the C locale's
 * decimal point, which a host program may have changed. */
static bool parse_float_text(const unsigned char *s, double *d) {
  char buf[32], *end;
  memcpy(buf, s, 31);
  buf[31] = '\0';
  char point = localeconv()->decimal_point[0];
  for (char *c = buf; *c; c++)
    if (*c == '.')
      *c = point;
  *d = strtod(buf, &end);
  if (end == buf)
    return false;
  for (; end < buf + 31; end++)
    if (*end != '\0')
      return false;
  return true;
}

static int get_float(rd_t *r, double *d) {
  const unsigned char *h;
  TAKE(r, h, 1);
  if (h[0] == MB_ETF_NEW_FLOAT) {
    TAKE(r, h, 8);
    uint64_t bits = (uint64_t)mb__get32(h) << 32 | mb__get32(h + 4);
    memcpy(d, &bits, sizeof *d);
  } else {
    TAKE(r, h, 31);
    if (!parse_float_text(h, d))
      return bad(r, "a FLOAT_EXT that is not a number");
  }
  if (!isfinite(*d))
    return bad(r, "a NaN or infinite float");
  return 0;
}

/* BIT_BINARY_EXT: Len:32, Bits:8 (used bits of the last byte), Data. */
static int get_bits(rd_t *r, const unsigned char **data, uint32_t *len,
                    unsigned *bits) {
  const unsigned char *h;
  TAKE(r, h, 6);
  *len = mb__get32(h + 1);
  *bits = h[5];
  if ((*len == 0) != (*bits == 0) || *bits > 8)
    return bad(r, "a bitstring with a bad bit count");
  TAKE(r, *data, *len);
  return 0;
}

/* The node, numbers and creation of a pid (NEW_PID_EXT or PID_EXT) or a
 * port (NEW_PORT_EXT, PORT_EXT, V4_PORT_EXT), after the tag. */
static int get_node_ids(rd_t *r, atext_t *node, size_t n,
                        const unsigned char **ids) {
  int err = get_atom(r, node);
  if (err)
    return err;
  /* Node names travel on as C strings (to EPMD, to the resolver): one
   * with a NUL would be cut short there. */
  if (memchr(node->s, '\0', node->len) != NULL)
    return bad(r, "a node name with a NUL byte");
  TAKE(r, *ids, n);
  return 0;
}

/* A reference of any form, with its words in order (lowest first). */
static int get_ref_parts(rd_t *r, atext_t *node, uint32_t *creation,
                         uint32_t *len, uint32_t *words) {
  const unsigned char *h;
  TAKE(r, h, 1);
  unsigned tag = h[0];
  if (tag == MB_ETF_REFERENCE) {
    int err = get_node_ids(r, node, 5, &h);
    if (err)
      return err;
    *len = 1;
    words[0] = mb__get32(h);
    *creation = h[4];
    return 0;
  }
  TAKE(r, h, 2);
  *len = mb__get16(h);
  if (*len == 0 || *len > MB_REF_MAXWORDS)
    return bad(r, "a reference of more than 5 or no words");
  size_t cn = tag == MB_ETF_NEWER_REFERENCE ? 4 : 1;
  int err = get_node_ids(r, node, cn + 4 * *len, &h);
  if (err)
    return err;
  *creation = cn == 4 ? mb__get32(h) : h[0];
  for (uint32_t i = 0; i < *len; i++)
    words[i] = mb__get32(h + cn + 4 * i);
  return 0;
}

/* ---- skipping (and checking) a term ----
 * With a stack of frames of its own, one per open container, so that
 * nesting costs no C stack: what bounds it is `max` (MB_ETF_MAX_DEPTH). */

static const char too_deep[] =
    "terms nested more than " XSTR(MB_ETF_MAX_DEPTH) " levels deep";

static int container(rd_t *r, int depth, uint64_t n, uint64_t min_bytes) {
  if (depth >= MB_ETF_MAX_DEPTH)
    return bad(r, too_deep);
  if (n * min_bytes > left(r))
    return bad(r, "a count beyond the end of the input");
  return 0;
}

static int skip_pid(rd_t *r) {
  const unsigned char *h;
  atext_t node;
  TAKE(r, h, 1);
  if (h[0] != MB_ETF_NEW_PID && h[0] != MB_ETF_PID)
    return bad(r, "a pid expected");
  return get_node_ids(r, &node, h[0] == MB_ETF_PID ? 9 : 12, &h);
}

static int skip_port(rd_t *r, unsigned tag) {
  atext_t node;
  const unsigned char *ids;
  size_t n = tag == MB_ETF_PORT ? 5 : tag == MB_ETF_NEW_PORT ? 8 : 12;
  return get_node_ids(r, &node, n, &ids);
}

static int skip_export(rd_t *r) {
  atext_t a;
  const unsigned char *h;
  int err = get_atom(r, &a);
  if (err || (err = get_atom(r, &a)))
    return err;
  TAKE(r, h, 2);
  if (h[0] != MB_ETF_SMALL_INTEGER)
    return bad(r, "a fun's arity that is not a small integer");
  return 0;
}

/* An open container: S_SEQ has `left` terms to come; S_LIST `left`
 * elements, then a tail (a tail that is itself a list continues the same
 * list, as Erlang reads [1 | [2]] as [1, 2], so a chain of them takes no
 * depth); S_FUN `left` free variables, which must end at `end`, where
 * `outer` is the reader's end to go back to. */
enum { S_SEQ, S_LIST, S_FUN };

typedef struct {
  uint8_t kind;
  bool tail; /* S_LIST: its tail is being skipped */
  uint64_t left, count;
  const unsigned char *end, *outer;
} sframe_t;

typedef struct {
  sframe_t *f, small[16];
  int n, cap;
  int max; /* the depth bound */
} sstack_t;

static sframe_t *spush(sstack_t *st, rd_t *r, int kind, uint64_t left) {
  if (st->n == st->cap) {
    int cap = st->cap * 2;
    sframe_t *f = malloc((size_t)cap * sizeof *f);
    if (f == NULL) {
      bad(r, "out of memory");
      return NULL;
    }
    memcpy(f, st->f, (size_t)st->n * sizeof *f);
    if (st->f != st->small)
      free(st->f);
    st->f = f;
    st->cap = cap;
  }
  sframe_t *f = &st->f[st->n++];
  memset(f, 0, sizeof *f);
  f->kind = (uint8_t)kind;
  f->left = left;
  return f;
}

static int deep(rd_t *r, const sstack_t *st, int depth) {
  if (depth >= st->max)
    return bad(r, too_deep);
  return 0;
}

/* NEW_FUN_EXT: Size counts from itself to the end of the free variables;
 * the parts in between must fill it exactly.  The free variables are
 * skipped by the caller's loop, within the fun's bytes. */
static int open_fun(rd_t *r, sstack_t *st, int depth) {
  const unsigned char *h;
  TAKE(r, h, 4);
  uint32_t size = mb__get32(h);
  if (size < 4 + 1 + 16 + 4 + 4 || size - 4 > left(r))
    return bad(r, "a fun whose size is wrong");
  const unsigned char *outer = r->end;
  r->end = r->p + (size - 4);
  uint32_t nfree = mb__get32(take(r, 1 + 16 + 4 + 4) + 21);
  atext_t module;
  bigv_t v;
  int err;
  if ((err = get_atom(r, &module)) || (err = get_integer(r, &v)) ||
      (err = get_integer(r, &v)) || (err = skip_pid(r)) ||
      (err = deep(r, st, depth)))
    return err;
  if ((uint64_t)nfree > left(r))
    return bad(r, "a count beyond the end of the input");
  sframe_t *f = spush(st, r, S_FUN, nfree);
  if (f == NULL)
    return MB_EBADTERM;
  f->end = r->end;
  f->outer = outer;
  return 0;
}

/* Skip the term at r->p, at `depth`: a scalar whole; a container's header,
 * opening its frame. */
static int skip_one(rd_t *r, sstack_t *st, int depth) {
  const unsigned char *h;
  atext_t a;
  bigv_t v;
  double d;
  uint32_t u[MB_REF_MAXWORDS + 2];
  unsigned bits;
  int err;
  if (left(r) == 0)
    return bad(r, "truncated");
  unsigned tag = r->p[0];
  switch (tag) {
  case MB_ETF_SMALL_INTEGER:
  case MB_ETF_INTEGER:
  case MB_ETF_SMALL_BIG:
  case MB_ETF_LARGE_BIG:
    return get_integer(r, &v);
  case MB_ETF_NEW_FLOAT:
  case MB_ETF_FLOAT:
    return get_float(r, &d);
  case MB_ETF_ATOM:
  case MB_ETF_SMALL_ATOM:
  case MB_ETF_ATOM_UTF8:
  case MB_ETF_SMALL_ATOM_UTF8:
    return get_atom(r, &a);
  case MB_ETF_BINARY:
    TAKE(r, h, 5);
    TAKE(r, h, mb__get32(h + 1));
    return 0;
  case MB_ETF_BIT_BINARY:
    return get_bits(r, &h, u, &bits);
  case MB_ETF_NIL:
  case MB_ETF_STRING: /* no container, but a table in Lua */
    if ((err = deep(r, st, depth)))
      return err;
    TAKE(r, h, tag == MB_ETF_NIL ? 1 : 3);
    if (tag == MB_ETF_STRING)
      TAKE(r, h, mb__get16(h + 1));
    return 0;
  case MB_ETF_NEW_PID:
  case MB_ETF_PID:
    r->p++;
    return get_node_ids(r, &a, tag == MB_ETF_PID ? 9 : 12, &h);
  case MB_ETF_NEW_PORT:
  case MB_ETF_PORT:
  case MB_ETF_V4_PORT:
    r->p++;
    return skip_port(r, tag);
  case MB_ETF_NEWER_REFERENCE:
  case MB_ETF_NEW_REFERENCE:
  case MB_ETF_REFERENCE:
    return get_ref_parts(r, &a, u, u + 1, u + 2);
  case MB_ETF_EXPORT:
    r->p++;
    return skip_export(r);
  case MB_ETF_SMALL_TUPLE:
  case MB_ETF_LARGE_TUPLE:
  case MB_ETF_MAP:
  case MB_ETF_LIST: {
    r->p++;
    uint64_t n, min = 1;
    if (tag == MB_ETF_SMALL_TUPLE) {
      TAKE(r, h, 1);
      n = h[0];
    } else {
      TAKE(r, h, 4);
      n = mb__get32(h);
    }
    if (tag == MB_ETF_MAP)
      min = 2;
    if ((err = deep(r, st, depth)))
      return err;
    if (n * min > left(r))
      return bad(r, "a count beyond the end of the input");
    sframe_t *f = spush(st, r, tag == MB_ETF_LIST ? S_LIST : S_SEQ, n * min);
    if (f != NULL)
      f->count = n;
    return f == NULL ? MB_EBADTERM : 0;
  }
  case MB_ETF_NEW_FUN:
    r->p++;
    return open_fun(r, st, depth);
  default:
    return bad(r, "an unknown tag");
  }
}

/* The top frame has no term left: an S_LIST reads its tail; the others
 * end.  *next is set when a term is to be skipped next, at the depth
 * *depth. */
static int finish_frame(rd_t *r, sstack_t *st, int depth0, bool *next,
                        int *depth) {
  sframe_t *f = &st->f[st->n - 1];
  const unsigned char *h;
  *next = false;
  if (f->kind == S_LIST && !f->tail) {
    TAKE(r, h, 1);
    if (h[0] == MB_ETF_NIL) {
      st->n--;
      return 0;
    }
    if (h[0] == MB_ETF_STRING) {
      TAKE(r, h, 2);
      TAKE(r, h, mb__get16(h));
      st->n--;
      return 0;
    }
    if (h[0] == MB_ETF_LIST) {
      TAKE(r, h, 4);
      f->left = mb__get32(h);
      f->count += f->left;
      if (f->left > left(r))
        return bad(r, "a count beyond the end of the input");
      return 0;
    }
    r->p--;
    *next = true;
    if (f->count == 0) { /* a list of no elements is its tail */
      st->n--;
      *depth = depth0 + st->n;
      return 0;
    }
    f->tail = true;
    *depth = depth0 + st->n;
    return 0;
  }
  if (f->kind == S_FUN) {
    if (r->p != f->end)
      return bad(r, "a fun whose size is wrong");
    r->end = f->outer;
  }
  st->n--;
  return 0;
}

/* Skip one term, checked, nested at most `max` levels from `depth0`. */
static int skip_bounded(rd_t *r, int depth0, int max) {
  sstack_t st;
  st.f = st.small;
  st.n = 0;
  st.cap = 16;
  st.max = max;
  const unsigned char *end0 = r->end;
  int err = skip_one(r, &st, depth0);
  while (err == 0 && st.n > 0) {
    sframe_t *f = &st.f[st.n - 1];
    if (f->left > 0) {
      f->left--;
      err = skip_one(r, &st, depth0 + st.n);
      continue;
    }
    bool next;
    int depth = 0;
    err = finish_frame(r, &st, depth0, &next, &depth);
    if (err == 0 && next)
      err = skip_one(r, &st, depth);
  }
  if (err)
    r->end = end0;
  if (st.f != st.small)
    free(st.f);
  return err;
}

static int skip_term(rd_t *r, int depth) {
  return skip_bounded(r, depth, MB_ETF_MAX_DEPTH);
}

/* ---- the reader API ---- */

int mb__etf_reader_init(mb__etf_reader_t *r, const void *buf, size_t len) {
  r->p = r->end = buf;
  r->why = NULL;
  if (len == 0 || r->p[0] != MB_ETF_VERSION)
    return bad(r, "not an external term (no version byte 131)");
  r->end = r->p + len;
  r->p++;
  return 0;
}

int mb__etf_peek(const mb__etf_reader_t *r) {
  return r->p < r->end ? r->p[0] : -1;
}

/* Run a read; on error put the reader back where it was. */
#define ATOMIC_READ(r, expr)                                                   \
  do {                                                                         \
    const unsigned char *start_ = (r)->p;                                      \
    int err_ = (expr);                                                         \
    if (err_)                                                                  \
      (r)->p = start_;                                                         \
    return err_;                                                               \
  } while (0)

static int read_tuple(rd_t *r, uint32_t *arity) {
  const unsigned char *h;
  TAKE(r, h, 1);
  if (h[0] == MB_ETF_SMALL_TUPLE) {
    TAKE(r, h, 1);
    *arity = h[0];
  } else if (h[0] == MB_ETF_LARGE_TUPLE) {
    TAKE(r, h, 4);
    *arity = mb__get32(h);
  } else {
    return bad(r, "a tuple expected");
  }
  return *arity > left(r) ? bad(r, "a count beyond the end of the input") : 0;
}

int mb__etf_read_tuple(mb__etf_reader_t *r, uint32_t *arity) {
  ATOMIC_READ(r, read_tuple(r, arity));
}

static int read_int(rd_t *r, int64_t *out) {
  bigv_t v;
  int err = get_integer(r, &v);
  if (err == 0 && !big_to_int(&v, out))
    err = bad(r, "an integer beyond 64 bits");
  return err;
}

int mb__etf_read_int(mb__etf_reader_t *r, int64_t *v) {
  ATOMIC_READ(r, read_int(r, v));
}

static int intern(rd_t *r, const atext_t *a, const mb__atom_t **out) {
  if (a->len > MB_ATOM_MAXLEN)
    return bad(r, "an atom longer than 255 bytes in UTF-8 (unsupported here)");
  if (mb__atom_intern(a->s, a->len, out) != 0)
    return bad(r, "the atom table is full");
  return 0;
}

static int read_atom(rd_t *r, const mb__atom_t **a) {
  atext_t t;
  int err = get_atom(r, &t);
  return err ? err : intern(r, &t, a);
}

int mb__etf_read_atom(mb__etf_reader_t *r, const mb__atom_t **a) {
  ATOMIC_READ(r, read_atom(r, a));
}

static int read_pid(rd_t *r, mb__etf_pid_t *pid) {
  const unsigned char *h;
  atext_t node;
  TAKE(r, h, 1);
  if (h[0] != MB_ETF_NEW_PID && h[0] != MB_ETF_PID)
    return bad(r, "a pid expected");
  bool old = h[0] == MB_ETF_PID;
  int err = get_node_ids(r, &node, old ? 9 : 12, &h);
  if (err || (err = intern(r, &node, &pid->node)))
    return err;
  pid->id = mb__get32(h);
  pid->serial = mb__get32(h + 4);
  pid->creation = old ? h[8] : mb__get32(h + 8);
  return 0;
}

int mb__etf_read_pid(mb__etf_reader_t *r, mb__etf_pid_t *pid) {
  ATOMIC_READ(r, read_pid(r, pid));
}

static int read_ref(rd_t *r, mb__etf_ref_t *ref) {
  atext_t node;
  int tag = mb__etf_peek(r);
  if (tag != MB_ETF_NEWER_REFERENCE && tag != MB_ETF_NEW_REFERENCE &&
      tag != MB_ETF_REFERENCE)
    return bad(r, "a reference expected");
  int err = get_ref_parts(r, &node, &ref->creation, &ref->len, ref->words);
  return err ? err : intern(r, &node, &ref->node);
}

int mb__etf_read_ref(mb__etf_reader_t *r, mb__etf_ref_t *ref) {
  ATOMIC_READ(r, read_ref(r, ref));
}

int mb__etf_skip(mb__etf_reader_t *r) { ATOMIC_READ(r, skip_term(r, 0)); }

/* ---- the writer API ---- */

static int nomem(int r) { return r ? MB_ENOMEM : 0; }

int mb__etf_write_version(mb_msg_t **m) {
  return nomem(put1(m, MB_ETF_VERSION));
}

int mb__etf_write_tuple(mb_msg_t **m, uint32_t arity) {
  if (arity <= 255)
    return nomem(put1(m, MB_ETF_SMALL_TUPLE) || put1(m, arity));
  return nomem(put_head(m, MB_ETF_LARGE_TUPLE, arity));
}

int mb__etf_write_int(mb_msg_t **m, int64_t v) { return nomem(put_int(m, v)); }

int mb__etf_write_atom(mb_msg_t **m, const mb__atom_t *a) {
  if (a == NULL)
    return MB_EINVAL; /* an atom the full table could not take */
  return nomem(put_atom(m, a));
}

int mb__etf_write_pid(mb_msg_t **m, const mb__etf_pid_t *pid) {
  return nomem(put_pid(m, pid->node, pid->id, pid->serial, pid->creation));
}

/* A pid as the core holds it: this node's, or another's by its key. */
int mb__etf_write_local_pid(mb_msg_t **m, mb_pid_t pid) {
  const mb__atom_t *node;
  uint32_t n, creation, num, serial;
  if (MB_PID_IS_REMOTE(pid)) {
    if (!mb__remote_pid(pid, &n, &creation, &num, &serial) ||
        (node = mb__atom_at(n - 1)) == NULL)
      return MB_EINVAL;
    return nomem(put_pid(m, node, num, serial, creation));
  }
  int err = mb__etf_get_local(&node, &creation);
  if (err)
    return err;
  return nomem(put_pid(m, node, MB_PID_ID(pid), MB_PID_SERIAL(pid), creation));
}

int mb__etf_write_ref(mb_msg_t **m, const mb__etf_ref_t *ref) {
  return nomem(put_ref(m, ref->node, ref->creation, ref->len, ref->words));
}

/* A ref as the core holds it: this node's, or another's by its key. */
int mb__etf_write_local_ref(mb_msg_t **m, uint64_t ref) {
  const mb__atom_t *node;
  uint32_t n, creation, len, words[MB_REF_MAXWORDS];
  if (MB_PID_IS_REMOTE(ref)) {
    if (!mb__remote_ref(ref, &n, &creation, &len, words) ||
        (node = mb__atom_at(n - 1)) == NULL)
      return MB_EINVAL;
    return nomem(put_ref(m, node, creation, len, words));
  }
  int err = mb__etf_get_local(&node, &creation);
  if (err)
    return err;
  return nomem(put_local_ref(m, node, creation, ref));
}

int mb__etf_write_raw(mb_msg_t **m, const void *bytes, size_t len) {
  return nomem(put(m, bytes, len));
}

/* ---- Erlang's order of terms, for the keys of small maps ----
 * term_to_binary writes a map of up to 32 keys in key order, compared
 * exactly: integers < floats < atoms < refs < funs < ports < pids <
 * tuples < maps < [] < lists < bitstrings.  The terms compared here are
 * the encoder's own, so they are canonical. */

enum {
  C_INT,
  C_FLOAT,
  C_ATOM,
  C_REF,
  C_FUN,
  C_PORT,
  C_PID,
  C_TUPLE,
  C_MAP,
  C_NIL,
  C_LIST,
  C_BITS
};

static int term_class(int tag) {
  switch (tag) {
  case MB_ETF_SMALL_INTEGER:
  case MB_ETF_INTEGER:
  case MB_ETF_SMALL_BIG:
  case MB_ETF_LARGE_BIG:
    return C_INT;
  case MB_ETF_NEW_FLOAT:
    return C_FLOAT;
  case MB_ETF_SMALL_ATOM_UTF8:
  case MB_ETF_ATOM_UTF8:
    return C_ATOM;
  case MB_ETF_NEWER_REFERENCE:
    return C_REF;
  case MB_ETF_NEW_FUN:
  case MB_ETF_EXPORT:
    return C_FUN;
  case MB_ETF_NEW_PORT:
  case MB_ETF_V4_PORT:
    return C_PORT;
  case MB_ETF_NEW_PID:
    return C_PID;
  case MB_ETF_SMALL_TUPLE:
  case MB_ETF_LARGE_TUPLE:
    return C_TUPLE;
  case MB_ETF_MAP:
    return C_MAP;
  case MB_ETF_NIL:
    return C_NIL;
  case MB_ETF_STRING:
  case MB_ETF_LIST:
    return C_LIST;
  default:
    return C_BITS;
  }
}

#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b))

static int cmp_term(rd_t *a, rd_t *b);

static int cmp_bytes(const void *a, size_t an, const void *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c ? (c < 0 ? -1 : 1) : CMP(an, bn);
}

static int cmp_ints(rd_t *a, rd_t *b) {
  bigv_t x, y;
  get_integer(a, &x);
  get_integer(b, &y);
  if (x.neg != y.neg)
    return x.neg ? -1 : 1;
  int c = CMP(x.n, y.n);
  for (size_t i = x.n; c == 0 && i > 0; i--)
    c = CMP(x.d[i - 1], y.d[i - 1]);
  return x.neg ? -c : c;
}

static int cmp_floats(rd_t *a, rd_t *b) {
  double x, y;
  get_float(a, &x);
  get_float(b, &y);
  return CMP(x, y);
}

static int cmp_atoms(rd_t *a, rd_t *b) {
  atext_t x, y;
  get_atom(a, &x);
  get_atom(b, &y);
  return cmp_bytes(x.s, x.len, y.s, y.len);
}

/* Refs: by node, creation, then words from the most significant. */
static int cmp_refs(rd_t *a, rd_t *b) {
  atext_t xn, yn;
  uint32_t xc, yc, xl, yl;
  uint32_t xw[MB_REF_MAXWORDS] = {0}, yw[MB_REF_MAXWORDS] = {0};
  get_ref_parts(a, &xn, &xc, &xl, xw);
  get_ref_parts(b, &yn, &yc, &yl, yw);
  int c = cmp_bytes(xn.s, xn.len, yn.s, yn.len);
  if (c == 0)
    c = CMP(xc, yc);
  for (int i = MB_REF_MAXWORDS; c == 0 && i > 0; i--)
    c = CMP(xw[i - 1], yw[i - 1]);
  return c;
}

/* Pids: by serial, number, node, then creation. */
static int cmp_pids(rd_t *a, rd_t *b) {
  atext_t xn, yn;
  const unsigned char *x, *y;
  a->p++;
  b->p++;
  if (get_node_ids(a, &xn, 12, &x) || get_node_ids(b, &yn, 12, &y))
    return 0;
  int c = CMP(mb__get32(x + 4), mb__get32(y + 4));
  if (c == 0)
    c = CMP(mb__get32(x), mb__get32(y));
  if (c == 0)
    c = cmp_bytes(xn.s, xn.len, yn.s, yn.len);
  return c ? c : CMP(mb__get32(x + 8), mb__get32(y + 8));
}

static int cmp_n(rd_t *a, rd_t *b, uint64_t n) {
  int c = 0;
  for (uint64_t i = 0; c == 0 && i < n; i++)
    c = cmp_term(a, b);
  return c;
}

static int cmp_tuples(rd_t *a, rd_t *b) {
  uint32_t x, y;
  read_tuple(a, &x);
  read_tuple(b, &y);
  return x != y ? CMP(x, y) : cmp_n(a, b, x);
}

/* Maps: by size, then the keys in order, then the values in order. */
static int cmp_maps(rd_t *a, rd_t *b) {
  uint32_t n = mb__get32(a->p + 1), m = mb__get32(b->p + 1);
  if (n != m)
    return CMP(n, m);
  a->p += 5;
  b->p += 5;
  rd_t va = *a, vb = *b;
  int c = 0;
  for (uint32_t i = 0; c == 0 && i < n; i++) {
    c = cmp_term(a, b);
    skip_term(a, 0);
    skip_term(b, 0);
  }
  for (uint32_t i = 0; c == 0 && i < n; i++) {
    skip_term(&va, 0);
    skip_term(&vb, 0);
    c = cmp_term(&va, &vb);
  }
  return c;
}

/* Walking a list's elements, whether it is a STRING_EXT or a LIST_EXT. */
typedef struct {
  rd_t r;
  uint32_t left;
  bool string;
  unsigned char byte[2]; /* a STRING_EXT element as a SMALL_INTEGER_EXT */
} lcur_t;

static void lcur_init(lcur_t *l, const rd_t *r) {
  l->r = *r;
  l->string = r->p[0] == MB_ETF_STRING;
  l->left = l->string ? mb__get16(r->p + 1) : mb__get32(r->p + 1);
  l->r.p += l->string ? 3 : 5;
}

/* The next element, as a reader of its own. */
static rd_t lcur_next(lcur_t *l) {
  l->left--;
  if (!l->string)
    return l->r;
  l->byte[0] = MB_ETF_SMALL_INTEGER;
  l->byte[1] = *l->r.p++;
  return (rd_t){l->byte, l->byte + 2, NULL};
}

static void lcur_done(lcur_t *l, rd_t *elem) {
  if (!l->string)
    l->r = *elem;
}

/* The class of the tail, once the elements are done: a STRING_EXT's is
 * []. */
static int lcur_tail_class(const lcur_t *l) {
  return l->string ? C_NIL : term_class(l->r.p[0]);
}

static int cmp_lists(rd_t *a, rd_t *b) {
  lcur_t x, y;
  lcur_init(&x, a);
  lcur_init(&y, b);
  int c = 0;
  while (c == 0 && x.left > 0 && y.left > 0) {
    rd_t ex = lcur_next(&x), ey = lcur_next(&y);
    c = cmp_term(&ex, &ey);
    lcur_done(&x, &ex);
    lcur_done(&y, &ey);
  }
  if (c != 0)
    return c;
  /* One list goes on where the other has its tail, which is no list. */
  if (x.left > 0)
    return CMP(C_LIST, lcur_tail_class(&y));
  if (y.left > 0)
    return CMP(lcur_tail_class(&x), C_LIST);
  if (x.string || y.string)
    return CMP(lcur_tail_class(&x), lcur_tail_class(&y));
  return cmp_term(&x.r, &y.r);
}

/* Binaries and bitstrings: bit by bit, a prefix first. */
static void bits_of(rd_t *r, const unsigned char **d, uint64_t *nbits) {
  uint32_t len;
  unsigned bits = 8;
  if (r->p[0] == MB_ETF_BINARY) {
    len = mb__get32(r->p + 1);
    *d = r->p + 5;
  } else {
    get_bits(r, d, &len, &bits);
  }
  *nbits = len ? (uint64_t)(len - 1) * 8 + bits : 0;
}

static int cmp_bits(rd_t *a, rd_t *b) {
  const unsigned char *x, *y;
  uint64_t xn, yn;
  bits_of(a, &x, &xn);
  bits_of(b, &y, &yn);
  uint64_t n = xn < yn ? xn : yn;
  int c = memcmp(x, y, n / 8);
  if (c != 0)
    return c < 0 ? -1 : 1;
  if (n % 8) {
    unsigned mask = 0xffu << (8 - n % 8) & 0xff;
    c = CMP(x[n / 8] & mask, y[n / 8] & mask);
  }
  return c ? c : CMP(xn, yn);
}

/* fun M:F/A by module, function, arity; other funs and ports by their
 * bytes (not Erlang's order, but a stable one). */
static int cmp_other(rd_t *a, rd_t *b, const rd_t *a_end, const rd_t *b_end) {
  if (a->p[0] == MB_ETF_EXPORT && b->p[0] == MB_ETF_EXPORT) {
    a->p++;
    b->p++;
    return cmp_n(a, b, 3);
  }
  return cmp_bytes(a->p, (size_t)(a_end->p - a->p), b->p,
                   (size_t)(b_end->p - b->p));
}

/* Compare the next term of a and of b, and step over both. */
static int cmp_term(rd_t *a, rd_t *b) {
  rd_t x = *a, y = *b;
  skip_term(a, 0);
  skip_term(b, 0);
  int cx = term_class(x.p[0]), cy = term_class(y.p[0]);
  if (cx != cy)
    return CMP(cx, cy);
  switch (cx) {
  case C_INT:
    return cmp_ints(&x, &y);
  case C_FLOAT:
    return cmp_floats(&x, &y);
  case C_ATOM:
    return cmp_atoms(&x, &y);
  case C_REF:
    return cmp_refs(&x, &y);
  case C_PID:
    return cmp_pids(&x, &y);
  case C_TUPLE:
    return cmp_tuples(&x, &y);
  case C_MAP:
    return cmp_maps(&x, &y);
  case C_NIL:
    return 0;
  case C_LIST:
    return cmp_lists(&x, &y);
  case C_BITS:
    return cmp_bits(&x, &y);
  default:
    return cmp_other(&x, &y, a, b);
  }
}

/* ---- the encoder ----
 * Tables are encoded with a stack of frames of our own, one per table
 * open, not with C recursion, so that nesting costs no C stack.  An open
 * table sits in a slot of the Lua stack; a child is pushed on top, encoded
 * (opening a frame if it is a table) and popped, so that for a map the
 * current key is just above the map's slot.  The tables open are also
 * keys of a Lua table (the `open` slot), which finds a cycle at once. */

#define SORTED_MAP_MAX 32
/* Keys of a small map nested deeper than this are left in Lua's order
 * (Erlang sorts a small map's keys when it reads them): comparing them
 * recurses. */
#define SORT_KEY_DEPTH 64

/* What an open table's frame does next. */
enum {
  E_ELEMS,     /* elements i..n, then `then` */
  E_TAIL,      /* an improper list's tail */
  E_MAP,       /* the next pair */
  E_MAP_VALUE, /* the value of the pair whose key was just written */
  E_MAP_SORTED /* the pair of the i-th of n keys sorted beforehand */
};
enum { THEN_NOTHING, THEN_NIL, THEN_TAIL };

/* Where each pair of a map was written, to sort small maps by key. */
typedef struct {
  size_t key, val, end;
} pair_t;

typedef struct {
  int idx;
  uint8_t kind, then;
  bool busy; /* a child of it is being encoded */
  lua_Integer i, n;
  size_t count_at;       /* E_MAP: where the count of pairs goes */
  size_t npairs;         /* E_MAP: pairs so far */
  size_t pbase;          /* E_MAP: its first pair in the encoder's `pairs` */
  size_t key_at, val_at; /* where the current pair's key and value start */
  bool pending;          /* E_MAP: the current pair's value is being written */
} eframe_t;

typedef struct {
  lua_State *L;
  mb_msg_t *m;
  const mb__atom_t *lnode;
  uint32_t lcreation;
  int open; /* slot of the set of tables open */
  eframe_t *frames, small[16];
  int nframes, cap;
  pair_t *pairs; /* the pairs of the small maps open, innermost last */
  size_t npairs, pcap;
  /* Error: what went wrong, and the path to it built from the leaf up. */
  const char *what;
  bool as_key;
  mb__path_t path;
} enc_t;

static int fail(enc_t *e, const char *what) {
  e->what = what;
  return -1;
}

static int enc_scalar(enc_t *e, int idx);

static eframe_t *epush(enc_t *e, int idx, int kind) {
  if (e->nframes == e->cap) {
    int cap = e->cap * 2;
    eframe_t *f = malloc((size_t)cap * sizeof *f);
    if (f == NULL)
      return NULL;
    memcpy(f, e->frames, (size_t)e->nframes * sizeof *f);
    if (e->frames != e->small)
      free(e->frames);
    e->frames = f;
    e->cap = cap;
  }
  eframe_t *f = &e->frames[e->nframes++];
  memset(f, 0, sizeof *f);
  f->idx = idx;
  f->kind = (uint8_t)kind;
  return f;
}

/* Mark the table at idx open (true) or closed (false). */
static void set_open(enc_t *e, int idx, bool open) {
  lua_pushvalue(e->L, idx);
  if (open)
    lua_pushboolean(e->L, 1);
  else
    lua_pushnil(e->L);
  lua_rawset(e->L, e->open);
}

/* A tuple's or list's length: its n field, or the border of a table
 * without one. */
static int seq_len(enc_t *e, int idx, lua_Integer *n) {
  lua_State *L = e->L;
  int ok = 1;
  lua_pushliteral(L, "n");
  if (lua_rawget(L, idx) == LUA_TNIL)
    *n = (lua_Integer)lua_rawlen(L, idx);
  else if (lua_type(L, -1) == LUA_TNUMBER)
    *n = lua_tointegerx(L, -1, &ok);
  else
    ok = 0;
  lua_pop(L, 1);
  if (!ok || *n < 0 || *n > (lua_Integer)UINT32_MAX)
    return fail(e, "a tuple or list whose n is not a count");
  return 0;
}

/* Open a frame for n elements at idx, then `then`. */
static int elems(enc_t *e, int idx, lua_Integer n, int then) {
  eframe_t *f = epush(e, idx, E_ELEMS);
  if (f == NULL)
    return fail(e, "out of memory");
  f->i = 1;
  f->n = n;
  f->then = (uint8_t)then;
  return 0;
}

/* Erlang writes a proper list of up to 65535 integers 0..255 as a
 * STRING_EXT.  Try that; on the first element that is not such an
 * integer, take back what was written. */
static bool try_string(enc_t *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  if (n > 65535 || reserve(&e->m, 3 + (size_t)n))
    return false;
  unsigned char *b = e->m->data + e->m->len;
  b[0] = MB_ETF_STRING;
  mb__put16(b + 1, (uint16_t)n);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    if (v < 0 || v > 255)
      return false;
    b[2 + i] = (unsigned char)v;
  }
  e->m->len += 3 + (size_t)n;
  return true;
}

/* A proper list: written whole (empty, or a string), or a frame opened. */
static int proper_list(enc_t *e, int idx, lua_Integer n) {
  if (n == 0)
    return put1(&e->m, MB_ETF_NIL);
  if (try_string(e, idx, n))
    return 0;
  return put_head(&e->m, MB_ETF_LIST, (uint32_t)n) ||
         elems(e, idx, n, THEN_NIL);
}

static int open_list(enc_t *e, int idx) {
  lua_State *L = e->L;
  lua_Integer n;
  if (seq_len(e, idx, &n))
    return -1;
  lua_pushliteral(L, "tail");
  int t = lua_rawget(L, idx);
  lua_pop(L, 1);
  if (t == LUA_TNIL)
    return proper_list(e, idx, n);
  if (n == 0)
    return fail(e, "an improper list with no elements");
  return put_head(&e->m, MB_ETF_LIST, (uint32_t)n) ||
         elems(e, idx, n, THEN_TAIL);
}

static int by_term(enc_t *e, const size_t *at, size_t x, size_t y) {
  rd_t a = {e->m->data + at[x], e->m->data + at[x + 1], NULL};
  rd_t b = {e->m->data + at[y], e->m->data + at[y + 1], NULL};
  return cmp_term(&a, &b);
}

/* A small map whose keys are all scalars: its keys in Erlang's order, as
 * a list on top of the stack, so that its pairs are written in order (a
 * value written and then moved would cost its size).  0, or 1 if the map
 * is not such a map (nothing pushed), or -1. */
static int sorted_keys(enc_t *e, int idx, lua_Integer *count) {
  lua_State *L = e->L;
  lua_Integer n = 0;
  lua_createtable(L, SORTED_MAP_MAX, 0);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int t = lua_type(L, -1);
    if (++n > SORTED_MAP_MAX || t == LUA_TTABLE || t == LUA_TUSERDATA) {
      lua_pop(L, 2);
      return 1;
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, n);
  }
  /* Write each key where the map goes, compare them there, and take
   * them back. */
  size_t start = e->m->len, at[SORTED_MAP_MAX + 1];
  int order[SORTED_MAP_MAX];
  for (lua_Integer i = 1; i <= n; i++) {
    at[i - 1] = e->m->len;
    lua_rawgeti(L, -1, i);
    int r = enc_scalar(e, lua_gettop(L));
    lua_pop(L, 1);
    if (r) {
      e->as_key = true;
      return -1;
    }
    order[i - 1] = (int)i - 1;
  }
  at[n] = e->m->len;
  for (lua_Integer i = 1; i < n; i++) { /* insertion sort: n <= 32 */
    lua_Integer j = i;
    int c = 1;
    for (; j > 0 &&
           (c = by_term(e, at, (size_t)order[j - 1], (size_t)order[j])) > 0;
         j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
    if (c == 0) {
      e->m->len = start;
      return fail(e, "a map with two keys equal as terms");
    }
  }
  e->m->len = start;
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, -2, order[i] + 1);
    lua_rawseti(L, -2, i + 1);
  }
  lua_remove(L, -2);
  *count = n;
  return 0;
}

static int open_map(enc_t *e, int idx) {
  lua_Integer n;
  int r = sorted_keys(e, idx, &n);
  if (r < 0)
    return -1;
  if (r == 0) {
    eframe_t *f;
    if (put_head(&e->m, MB_ETF_MAP, (uint32_t)n) ||
        (f = epush(e, idx, E_MAP_SORTED)) == NULL)
      return fail(e, "out of memory");
    f->i = 1;
    f->n = n;
    return 0;
  }
  size_t count_at = e->m->len + 1;
  if (put_head(&e->m, MB_ETF_MAP, 0))
    return -1;
  eframe_t *f = epush(e, idx, E_MAP);
  if (f == NULL)
    return fail(e, "out of memory");
  f->count_at = count_at;
  f->pbase = e->npairs;
  lua_pushnil(e->L); /* the key lua_next starts from */
  return 0;
}

/* A plain table: a list if its keys are exactly 1..#t, [] if empty,
 * otherwise a map. */
static int open_plain(enc_t *e, int idx) {
  lua_State *L = e->L;
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
  bool seq = n > 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    lua_Integer k = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (k < 1 || k > n) {
      seq = false;
      lua_pop(L, 1);
      break;
    }
  }
  if (count == 0)
    return put1(&e->m, MB_ETF_NIL);
  if (seq && count == n)
    return n > UINT32_MAX ? fail(e, "a list of more than 2^32 elements")
                          : proper_list(e, idx, n);
  return open_map(e, idx);
}

/* The table in the top slot: checked, marked open, and written whole or
 * with a frame opened.  Written whole, it is closed and popped at once. */
static int open_table(enc_t *e) {
  lua_State *L = e->L;
  int idx = lua_gettop(L);
  if (e->nframes >= MB_ETF_MAX_DEPTH)
    return fail(
        e, "a value nested more than " XSTR(MB_ETF_MAX_DEPTH) " levels deep");
  lua_pushvalue(L, idx);
  bool cycle = lua_rawget(L, e->open) != LUA_TNIL;
  lua_pop(L, 1);
  if (cycle)
    return fail(e, "a cycle");
  if (!lua_checkstack(L, 8))
    return fail(e, "a value nested too deeply");
  int depth = e->nframes, r;
  switch (mb__table_kind(L, idx)) {
  case MB_KIND_TUPLE: {
    lua_Integer n;
    r = seq_len(e, idx, &n);
    if (r == 0)
      r = n <= 255 ? put1(&e->m, MB_ETF_SMALL_TUPLE) || put1(&e->m, (unsigned)n)
                   : put_head(&e->m, MB_ETF_LARGE_TUPLE, (uint32_t)n);
    if (r == 0)
      r = elems(e, idx, n, THEN_NOTHING);
    break;
  }
  case MB_KIND_LIST:
    r = open_list(e, idx);
    break;
  case MB_KIND_MAP:
    r = open_map(e, idx);
    break;
  default:
    r = open_plain(e, idx);
  }
  if (r == 0 && e->nframes == depth)
    lua_settop(L, idx - 1); /* written whole */
  else if (r == 0)
    set_open(e, idx, true);
  return r;
}

/* Encode the value in the top slot: at once (and pop it), or by opening
 * its frame. */
static int start_value(enc_t *e) {
  int idx = lua_gettop(e->L);
  if (lua_type(e->L, idx) == LUA_TTABLE)
    return open_table(e);
  int r = enc_scalar(e, idx);
  lua_pop(e->L, 1);
  return r;
}

static int child(enc_t *e, int frame) {
  e->frames[frame].busy = true;
  int depth = e->nframes, r = start_value(e);
  if (r == 0 && e->nframes == depth)
    e->frames[frame].busy = false;
  return r;
}

static void close_frame(enc_t *e) {
  int idx = e->frames[--e->nframes].idx;
  set_open(e, idx, false);
  lua_settop(e->L, idx - 1);
  if (e->nframes > 0)
    e->frames[e->nframes - 1].busy = false;
}

static int pair_cmp(const mb_msg_t *m, const pair_t *x, const pair_t *y) {
  rd_t a = {m->data + x->key, m->data + x->val, NULL};
  rd_t b = {m->data + y->key, m->data + y->val, NULL};
  return cmp_term(&a, &b);
}

/* Whether each key nests at most SORT_KEY_DEPTH levels: comparing keys
 * recurses. */
static bool shallow_keys(enc_t *e, const pair_t *pairs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    rd_t r = {e->m->data + pairs[i].key, e->m->data + pairs[i].val, NULL};
    if (skip_bounded(&r, 0, SORT_KEY_DEPTH) != 0)
      return false;
  }
  return true;
}

/* Sort by key, in place.  Two keys equal as terms (two tables with the
 * same content) would make a map Erlang refuses. */
static int sort_pairs(enc_t *e, pair_t *pairs, size_t n) {
  if (!shallow_keys(e, pairs, n))
    return 0;
  for (size_t i = 1; i < n; i++) { /* insertion sort: n <= 32 */
    size_t j = i;
    int c = 1;
    for (; j > 0 && (c = pair_cmp(e->m, &pairs[j - 1], &pairs[j])) > 0; j--) {
      pair_t t = pairs[j];
      pairs[j] = pairs[j - 1];
      pairs[j - 1] = t;
    }
    if (c == 0)
      return fail(e, "a map with two keys equal as terms");
  }
  size_t from = pairs[0].key, to = e->m->len;
  for (size_t i = 0; i < n; i++)
    from = pairs[i].key < from ? pairs[i].key : from;
  unsigned char *copy = malloc(to - from);
  if (copy == NULL)
    return fail(e, "out of memory");
  memcpy(copy, e->m->data + from, to - from);
  size_t at = from;
  for (size_t i = 0; i < n; i++) {
    size_t len = pairs[i].end - pairs[i].key;
    memcpy(e->m->data + at, copy + (pairs[i].key - from), len);
    at += len;
  }
  free(copy);
  return 0;
}

/* Keep where a pair of a small map was written. */
static int keep_pair(enc_t *e, eframe_t *f, pair_t p) {
  if (f->npairs > SORTED_MAP_MAX)
    return 0;
  if (e->npairs == e->pcap) {
    size_t cap = e->pcap ? e->pcap * 2 : 64;
    pair_t *np = realloc(e->pairs, cap * sizeof *np);
    if (np == NULL)
      return fail(e, "out of memory");
    e->pairs = np;
    e->pcap = cap;
  }
  e->pairs[e->npairs++] = p;
  return 0;
}

/* The end of a map: its count, its keys sorted if it is small. */
static int end_map(enc_t *e, eframe_t *f) {
  size_t n = f->npairs, base = f->pbase;
  if (n > UINT32_MAX)
    return fail(e, "a map of more than 2^32 keys");
  mb__put32(e->m->data + f->count_at, (uint32_t)n);
  int r = n >= 2 && n <= SORTED_MAP_MAX ? sort_pairs(e, e->pairs + base, n) : 0;
  e->npairs = base;
  return r;
}

/* The key of the current pair of an E_MAP_SORTED frame: a scalar. */
static int put_scalar_key(enc_t *e, eframe_t *f) {
  lua_rawgeti(e->L, f->idx + 1, f->i - 1);
  int r = enc_scalar(e, lua_gettop(e->L));
  lua_pop(e->L, 1);
  return r;
}

/* One step of the top frame: its next child, or its end. */
static int step(enc_t *e) {
  lua_State *L = e->L;
  int top = e->nframes - 1;
  eframe_t *f = &e->frames[top];
  switch (f->kind) {
  case E_ELEMS:
    if (f->i <= f->n) {
      lua_rawgeti(L, f->idx, f->i++);
      return child(e, top);
    }
    if (f->then == THEN_NIL && put1(&e->m, MB_ETF_NIL))
      return -1;
    if (f->then == THEN_TAIL) {
      f->kind = E_TAIL;
      lua_pushliteral(L, "tail");
      lua_rawget(L, f->idx);
      return child(e, top);
    }
    close_frame(e);
    return 0;
  case E_TAIL:
    close_frame(e);
    return 0;
  case E_MAP: /* the slot, then the last key */
    if (lua_next(L, f->idx)) {
      f->kind = E_MAP_VALUE;
      f->key_at = e->m->len;
      lua_pushvalue(L, -2); /* the key stays, for lua_next */
      return child(e, top);
    }
    if (end_map(e, f))
      return -1;
    close_frame(e);
    return 0;
  case E_MAP_SORTED: /* the slot, its keys */
    if (f->i > f->n) {
      close_frame(e);
      return 0;
    }
    lua_rawgeti(L, f->idx + 1, f->i++);
    lua_pushvalue(L, -1);
    lua_rawget(L, f->idx);
    lua_remove(L, -2);
    if (put_scalar_key(e, f))
      return -1;
    return child(e, top);
  default: /* E_MAP_VALUE: the slot, the key, the value */
    f->kind = E_MAP;
    f->val_at = e->m->len;
    f->pending = true;
    return child(e, top);
  }
}

/* Once a map's value is written (at once, or when the frame it opened has
 * closed), its pair is complete. */
static int pair_done(enc_t *e) {
  if (e->nframes == 0)
    return 0;
  eframe_t *f = &e->frames[e->nframes - 1];
  if (f->kind != E_MAP || !f->pending || f->busy)
    return 0;
  pair_t p = {f->key_at, f->val_at, e->m->len};
  f->pending = false;
  int r = keep_pair(e, f, p);
  f->npairs++;
  return r;
}

/* Where the failure is, from the innermost busy frame out. */
static void failure_path(enc_t *e) {
  for (int i = e->nframes - 1; i >= 0; i--) {
    eframe_t *f = &e->frames[i];
    if (!f->busy)
      continue;
    if (f->kind == E_ELEMS) {
      mb__path_index(&e->path, f->i - 1);
    } else if (f->kind == E_TAIL) {
      mb__path_prepend(&e->path, ".tail");
    } else if (f->kind == E_MAP_VALUE) {
      mb__path_reset(&e->path); /* the key's inside is not a path */
      e->as_key = true;
    } else if (f->kind == E_MAP_SORTED) {
      lua_rawgeti(e->L, f->idx + 1, f->i - 1);
      mb__path_key(&e->path, e->L, lua_gettop(e->L));
      lua_pop(e->L, 1);
    } else {
      mb__path_key(&e->path, e->L, f->idx + 1);
    }
  }
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  lua_newtable(L);
  e->open = lua_gettop(L);
  lua_pushvalue(L, idx);
  int r = start_value(e);
  while (r == 0 && e->nframes > 0) {
    r = step(e);
    if (r == 0)
      r = pair_done(e);
  }
  if (r)
    failure_path(e);
  return r;
}

static int enc_atom(enc_t *e, const mb__atom_t *a) {
  if (utf8_chars((const unsigned char *)a->name, a->len) < 0)
    return fail(e, "an atom that is not valid UTF-8");
  return put_atom(&e->m, a);
}

static int enc_pid(enc_t *e, const mb__lpid_t *p) {
  if (p->node == 0)
    return put_pid(&e->m, e->lnode, MB_PID_ID(p->id), MB_PID_SERIAL(p->id),
                   e->lcreation);
  const mb__atom_t *node = mb__atom_at(p->node - 1);
  if (node == NULL)
    return fail(e, "a pid of an unknown node");
  return put_pid(&e->m, node, p->num, p->serial, p->creation);
}

static int enc_ref(enc_t *e, const mb__lref_t *r) {
  if (r->node == 0)
    return put_local_ref(&e->m, e->lnode, e->lcreation, r->id);
  const mb__atom_t *node = mb__atom_at(r->node - 1);
  if (node == NULL || r->len == 0 || r->len > MB_REF_MAXWORDS)
    return fail(e, "a ref of an unknown node");
  return put_ref(&e->m, node, r->creation, r->len, r->words);
}

static int enc_userdata(enc_t *e, int idx) {
  lua_State *L = e->L;
  mb__lpid_t *p;
  mb__lref_t *r;
  mb__lterm_t *t;
  if ((p = mb__to_pid(L, idx)) != NULL)
    return enc_pid(e, p);
  if ((r = mb__to_ref(L, idx)) != NULL)
    return enc_ref(e, r);
  if ((t = mb__to_term(L, idx)) != NULL)
    return put(&e->m, t->bytes, t->len);
  return fail(e, "a userdata");
}

static int enc_number(enc_t *e, int idx) {
  lua_State *L = e->L;
  if (lua_isinteger(L, idx))
    return put_int(&e->m, lua_tointeger(L, idx));
  double d = (double)lua_tonumber(L, idx);
  if (!isfinite(d))
    return fail(e, "a NaN or infinite float");
  return put_float(&e->m, d);
}

static int enc_scalar(enc_t *e, int idx) {
  lua_State *L = e->L;
  const mb__atom_t *a;
  size_t len;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put_atom_text(&e->m, "nil", 3);
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? put_atom_text(&e->m, "true", 4)
                                 : put_atom_text(&e->m, "false", 5);
  case LUA_TNUMBER:
    return enc_number(e, idx);
  case LUA_TSTRING: {
    const char *s = lua_tolstring(L, idx, &len);
    if (len > UINT32_MAX)
      return fail(e, "a string longer than 4 GB");
    return put_head(&e->m, MB_ETF_BINARY, (uint32_t)len) || put(&e->m, s, len);
  }
  case LUA_TLIGHTUSERDATA:
    if ((a = mb__to_atom(L, idx)) == NULL)
      return fail(e, "a light userdata");
    return enc_atom(e, a);
  case LUA_TUSERDATA:
    return enc_userdata(e, idx);
  case LUA_TFUNCTION:
    return fail(e, "a function");
  case LUA_TTHREAD:
    return fail(e, "a coroutine");
  default:
    return fail(e, "a value of unknown type");
  }
}

int mb__etf_write_value(mb_msg_t **m, lua_State *L, int idx, const char *root,
                        char *err, size_t errlen) {
  enc_t enc, *e = &enc;
  e->L = L;
  e->m = *m;
  e->frames = e->small;
  e->nframes = 0;
  e->cap = 16;
  e->pairs = NULL;
  e->npairs = e->pcap = 0;
  e->what = NULL;
  e->as_key = false;
  mb__path_reset(&e->path);
  int rc = mb__etf_get_local(&e->lnode, &e->lcreation);
  if (rc)
    return rc;
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  size_t start = e->m->len;
  if (enc_value(e, idx) == 0) {
    rc = 0;
  } else if (e->what == NULL || strcmp(e->what, "out of memory") == 0) {
    rc = MB_ENOMEM;
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "out of memory");
  } else {
    rc = MB_EBADTERM;
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "cannot send %s%s to another node at %s%s", e->what,
               e->as_key ? " used as a key" : "", root, mb__path_str(&e->path));
  }
  lua_settop(L, top);
  if (e->frames != e->small)
    free(e->frames);
  free(e->pairs);
  if (rc)
    e->m->len = start;
  *m = e->m;
  return rc;
}

int mb__etf_encode(lua_State *L, int idx, const char *root, mb_msg_t **out,
                   char *err, size_t errlen) {
  mb_msg_t *m = mb__msg_new(64);
  if (m == NULL)
    return MB_ENOMEM;
  int rc = mb__etf_write_version(&m);
  if (rc == 0)
    rc = mb__etf_write_value(&m, L, idx, root, err, errlen);
  if (rc) {
    mb_msg_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

/* ---- the decoder ---- */

typedef struct dframe_s dframe_t;

typedef struct {
  lua_State *L;
  rd_t r;
  const mb__atom_t *lnode;
  uint32_t lcreation;
  int base;         /* the stack slot where the value is built */
  int fslot;        /* the stack slot of the frames' userdata, 0 while small */
  dframe_t *frames; /* at first mb__etf_decode's, on the C stack */
  int nframes, cap;
  bool safe; /* binary_to_term's safe: no new atoms */
} dec_t;

/* An atom of the term: made if new, unless the input is untrusted. */
static int dintern(dec_t *d, const atext_t *a, const mb__atom_t **out) {
  if (!d->safe)
    return intern(&d->r, a, out);
  if (mb__atom_find(a->s, a->len, out) != 0)
    return bad(&d->r, "an atom this node does not know (safe)");
  return 0;
}

/* How many slots to make room for: the count was checked against the
 * input left, but an int holds less than a size_t. */
static int presize(uint64_t n) { return n > INT32_MAX ? 0 : (int)n; }

static void set_kind(lua_State *L, mb__table_kind_t kind) {
  mb__push_kind_mt(L, kind);
  lua_setmetatable(L, -2);
}

static void set_count(lua_State *L, lua_Integer n, mb__table_kind_t kind) {
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  set_kind(L, kind);
}

/* true, false, and (where a position can hold it) nil are Lua's own. */
static int push_atom(dec_t *d, const atext_t *a, bool nil_ok) {
  lua_State *L = d->L;
  const mb__atom_t *atom;
  if (atom_is(a, "true") || atom_is(a, "false")) {
    lua_pushboolean(L, a->s[0] == 't');
    return 0;
  }
  if (nil_ok && atom_is(a, "nil")) {
    lua_pushnil(L);
    return 0;
  }
  if (a->len > MB_ATOM_MAXLEN) {
    /* More than the atom table holds: kept as its ATOM_UTF8_EXT. */
    unsigned char b[3 + ATEXT_MAX];
    b[0] = MB_ETF_ATOM_UTF8;
    mb__put16(b + 1, (uint16_t)a->len);
    memcpy(b + 3, a->s, a->len);
    mb__push_term(L, MB_TERM_OTHER, b, 3 + a->len);
    return 0;
  }
  int err = dintern(d, a, &atom);
  if (err == 0)
    mb__push_atom(L, atom);
  return err;
}

/* Append a STRING_EXT's bytes to the list at the top, from index i + 1. */
static int dec_string_elems(dec_t *d, lua_Integer *i) {
  const unsigned char *h, *s;
  rd_t *r = &d->r;
  TAKE(r, h, 2);
  TAKE(r, s, mb__get16(h));
  for (uint32_t k = 0; k < mb__get16(h); k++) {
    lua_pushinteger(d->L, s[k]);
    lua_rawseti(d->L, -2, ++*i);
  }
  return 0;
}

static int dec_string(dec_t *d, int depth) {
  rd_t *r = &d->r;
  lua_Integer i = 0;
  if (depth >= MB_ETF_MAX_DEPTH)
    return bad(r, too_deep);
  if (left(r) < 3 || left(r) - 3 < mb__get16(r->p + 1))
    return bad(r, "truncated");
  r->p++;
  lua_createtable(d->L, presize(mb__get16(r->p)), 1);
  dec_string_elems(d, &i);
  set_count(d->L, i, MB_KIND_LIST);
  return 0;
}

/* A big integer: a Lua integer if it fits, else an opaque term in the
 * canonical form (no high zero digits, the smaller header). */
static int dec_big(dec_t *d) {
  bigv_t v;
  int64_t i;
  int err = get_integer(&d->r, &v);
  if (err)
    return err;
  if (big_to_int(&v, &i)) {
    lua_pushinteger(d->L, i);
    return 0;
  }
  size_t hdr = v.n <= 255 ? 3 : 6;
  /* The input has at least as large a header before the digits: copy
   * from there and write the canonical header over it. */
  mb__push_term(d->L, MB_TERM_BIGNUM, v.d - hdr, hdr + v.n);
  unsigned char *b = mb__to_term(d->L, -1)->bytes;
  if (hdr == 3) {
    b[0] = MB_ETF_SMALL_BIG;
    b[1] = (unsigned char)v.n;
    b[2] = v.neg;
  } else {
    b[0] = MB_ETF_LARGE_BIG;
    mb__put32(b + 1, (uint32_t)v.n);
    b[5] = v.neg;
  }
  return 0;
}

/* A bitstring of whole bytes is a binary; otherwise the unused low bits
 * of the last byte are cleared, as Erlang writes them. */
static int dec_bits(dec_t *d) {
  const unsigned char *start = d->r.p, *data;
  uint32_t len;
  unsigned bits;
  int err = get_bits(&d->r, &data, &len, &bits);
  if (err)
    return err;
  if (bits == 8 || len == 0) {
    lua_pushlstring(d->L, (const char *)data, len);
    return 0;
  }
  mb__push_term(d->L, MB_TERM_BITSTRING, start, 6 + (size_t)len);
  mb__lterm_t *t = mb__to_term(d->L, -1);
  t->bytes[t->len - 1] &= (unsigned char)(0xff << (8 - bits));
  return 0;
}

static int dec_pid(dec_t *d) {
  const unsigned char *h;
  atext_t text;
  const mb__atom_t *node;
  bool old = *d->r.p++ == MB_ETF_PID;
  int err = get_node_ids(&d->r, &text, old ? 9 : 12, &h);
  if (err || (err = dintern(d, &text, &node)))
    return err;
  uint32_t id = mb__get32(h), serial = mb__get32(h + 4);
  uint32_t creation = old ? h[8] : mb__get32(h + 8);
  if (node == d->lnode && creation == d->lcreation && id <= 0x7fff &&
      serial <= 0x1fff)
    mb__push_pid(d->L, id | serial << 15);
  else
    mb__push_remote_pid(d->L, node->index + 1, creation, id, serial);
  return 0;
}

static int dec_ref(dec_t *d) {
  atext_t text;
  uint32_t creation, len, words[MB_REF_MAXWORDS];
  const mb__atom_t *node;
  int err = get_ref_parts(&d->r, &text, &creation, &len, words);
  if (err || (err = dintern(d, &text, &node)))
    return err;
  mb__etf_ref_t ref = {node, creation, len, {0}};
  memcpy(ref.words, words, len * sizeof *words);
  uint64_t id;
  if (mb__etf_ref_local(&ref, &id))
    mb__push_ref(d->L, id);
  else
    mb__push_remote_ref(d->L, node->index + 1, creation, len, words);
  return 0;
}

/* An atom's text at b + len as SMALL_ATOM_UTF8_EXT, or as ATOM_UTF8_EXT
 * when it is longer than 255 bytes (up to 255 characters): the new
 * length. */
static size_t put_atext(unsigned char *b, size_t len, const atext_t *a) {
  if (a->len <= 255) {
    b[len++] = MB_ETF_SMALL_ATOM_UTF8;
    b[len++] = (unsigned char)a->len;
  } else {
    b[len++] = MB_ETF_ATOM_UTF8;
    mb__put16(b + len, (uint16_t)a->len);
    len += 2;
  }
  memcpy(b + len, a->s, a->len);
  return len + a->len;
}

/* Ports are kept as NEW_PORT_EXT (V4_PORT_EXT as it came), with the
 * node written as a UTF-8 atom. */
static int dec_port(dec_t *d) {
  unsigned char b[1 + 3 + ATEXT_MAX + 12];
  const unsigned char *ids;
  atext_t node;
  unsigned tag = *d->r.p++;
  size_t n = tag == MB_ETF_PORT ? 5 : tag == MB_ETF_NEW_PORT ? 8 : 12;
  int err = get_node_ids(&d->r, &node, n, &ids);
  if (err)
    return err;
  size_t len = 0;
  b[len++] = tag == MB_ETF_V4_PORT ? MB_ETF_V4_PORT : MB_ETF_NEW_PORT;
  len = put_atext(b, len, &node);
  if (tag == MB_ETF_PORT) {
    memcpy(b + len, ids, 4);
    mb__put32(b + len + 4, ids[4]);
  } else {
    memcpy(b + len, ids, n);
  }
  mb__push_term(d->L, MB_TERM_PORT, b, len + (tag == MB_ETF_PORT ? 8 : n));
  return 0;
}

/* fun M:F/A, with UTF-8 atoms. */
static int dec_export(dec_t *d) {
  unsigned char b[1 + 2 * (3 + ATEXT_MAX) + 2];
  atext_t mod, fun;
  const unsigned char *h;
  rd_t *r = &d->r;
  r->p++;
  int err = get_atom(r, &mod);
  if (err || (err = get_atom(r, &fun)))
    return err;
  TAKE(r, h, 2);
  if (h[0] != MB_ETF_SMALL_INTEGER)
    return bad(r, "a fun's arity that is not a small integer");
  size_t len = 0;
  b[len++] = MB_ETF_EXPORT;
  len = put_atext(b, len, &mod);
  len = put_atext(b, len, &fun);
  b[len++] = MB_ETF_SMALL_INTEGER;
  b[len++] = h[1];
  mb__push_term(d->L, MB_TERM_FUN, b, len);
  return 0;
}

/* A fun with its environment: checked, then kept as it came. */
static int dec_new_fun(dec_t *d, int depth) {
  const unsigned char *start = d->r.p;
  int err = skip_term(&d->r, depth);
  if (err == 0)
    mb__push_term(d->L, MB_TERM_FUN, start, (size_t)(d->r.p - start));
  return err;
}

static int dec_scalar(dec_t *d, unsigned tag, int depth, bool nil_ok) {
  lua_State *L = d->L;
  rd_t *r = &d->r;
  const unsigned char *h;
  atext_t a;
  double f;
  int err;
  switch (tag) {
  case MB_ETF_SMALL_INTEGER:
    TAKE(r, h, 2);
    lua_pushinteger(L, h[1]);
    return 0;
  case MB_ETF_INTEGER:
    TAKE(r, h, 5);
    lua_pushinteger(L, (int32_t)mb__get32(h + 1));
    return 0;
  case MB_ETF_NEW_FLOAT:
  case MB_ETF_FLOAT:
    if ((err = get_float(r, &f)) == 0)
      lua_pushnumber(L, (lua_Number)f);
    return err;
  case MB_ETF_ATOM:
  case MB_ETF_SMALL_ATOM:
  case MB_ETF_ATOM_UTF8:
  case MB_ETF_SMALL_ATOM_UTF8:
    return (err = get_atom(r, &a)) ? err : push_atom(d, &a, nil_ok);
  case MB_ETF_BINARY:
    TAKE(r, h, 5);
    TAKE(r, h, mb__get32(h + 1));
    lua_pushlstring(L, (const char *)h, (size_t)(r->p - h));
    return 0;
  case MB_ETF_NIL:
    if ((err = container(r, depth, 0, 1)))
      return err;
    r->p++;
    lua_createtable(L, 0, 1);
    set_count(L, 0, MB_KIND_LIST);
    return 0;
  default:
    r->p++;
    return bad(r, tag == MB_ETF_COMPRESSED ? "a compressed term (unsupported)"
                  : tag == MB_ETF_ATOM_CACHE_REF
                      ? "an atom cache reference (no atom cache)"
                      : "an unknown tag");
  }
}

/* An open container of the decoder: a tuple, a list or a map being filled
 * on top of the Lua stack (a map's pending key above it).  The first
 * frames are on the C stack; more move into a userdata on the Lua stack
 * (d->fslot), so that nesting costs no C stack and an error raised by Lua
 * leaks nothing. */
enum { D_TUPLE, D_LIST, D_MAP, D_MAP_VALUE };

struct dframe_s {
  uint8_t kind;
  const unsigned char *start; /* D_MAP: where the map began */
  bool nil_ok; /* D_LIST: what the list may be, if it turns out its tail */
  bool tail;   /* D_LIST: its tail is being read */
  uint32_t left, n;
  lua_Integer i; /* elements so far */
};

static dframe_t *dpush(dec_t *d, int kind, uint32_t left) {
  lua_State *L = d->L;
  if (d->nframes == d->cap) {
    int cap = d->cap * 2;
    dframe_t *f = lua_newuserdatauv(L, (size_t)cap * sizeof *f, 0);
    memcpy(f, d->frames, (size_t)d->nframes * sizeof *f);
    if (d->fslot == 0) { /* below the value being built */
      lua_insert(L, d->base);
      d->fslot = d->base;
    } else {
      lua_replace(L, d->fslot);
    }
    d->frames = f;
    d->cap = cap;
  }
  dframe_t *f = &d->frames[d->nframes++];
  memset(f, 0, sizeof *f);
  f->kind = (uint8_t)kind;
  f->left = f->n = left;
  return f;
}

/* Read the term at the reader: a scalar (or a string, or a fun) is pushed
 * whole, 1; a tuple, list or map is pushed empty with its frame opened, 0;
 * or an error. */
static int dec_start(dec_t *d, int depth, bool nil_ok) {
  lua_State *L = d->L;
  rd_t *r = &d->r;
  const unsigned char *h;
  int err;
  if (!lua_checkstack(L, 10))
    return bad(r, "no room on the Lua stack");
  if (left(r) == 0)
    return bad(r, "truncated");
  unsigned tag = r->p[0];
  uint32_t n;
  switch (tag) {
  case MB_ETF_SMALL_BIG:
  case MB_ETF_LARGE_BIG:
    err = dec_big(d);
    break;
  case MB_ETF_BIT_BINARY:
    err = dec_bits(d);
    break;
  case MB_ETF_STRING:
    err = dec_string(d, depth);
    break;
  case MB_ETF_SMALL_TUPLE:
  case MB_ETF_LARGE_TUPLE:
    if (tag == MB_ETF_SMALL_TUPLE) {
      TAKE(r, h, 2);
      n = h[1];
    } else {
      TAKE(r, h, 5);
      n = mb__get32(h + 1);
    }
    if ((err = container(r, depth, n, 1)))
      return err;
    lua_createtable(L, presize(n), 1);
    dpush(d, D_TUPLE, n);
    return 0;
  case MB_ETF_LIST:
    TAKE(r, h, 5);
    n = mb__get32(h + 1);
    if ((err = container(r, depth, n, 1)))
      return err;
    lua_createtable(L, presize(n), 2);
    dpush(d, D_LIST, n)->nil_ok = nil_ok;
    return 0;
  case MB_ETF_MAP:
    TAKE(r, h, 5);
    n = mb__get32(h + 1);
    if ((err = container(r, depth, n, 2)))
      return err;
    lua_createtable(L, 0, presize(n));
    dpush(d, D_MAP, n)->start = h;
    return 0;
  case MB_ETF_NEW_PID:
  case MB_ETF_PID:
    err = dec_pid(d);
    break;
  case MB_ETF_NEWER_REFERENCE:
  case MB_ETF_NEW_REFERENCE:
  case MB_ETF_REFERENCE:
    err = dec_ref(d);
    break;
  case MB_ETF_NEW_PORT:
  case MB_ETF_PORT:
  case MB_ETF_V4_PORT:
    err = dec_port(d);
    break;
  case MB_ETF_EXPORT:
    err = dec_export(d);
    break;
  case MB_ETF_NEW_FUN:
    err = dec_new_fun(d, depth);
    break;
  default:
    err = dec_scalar(d, tag, depth, nil_ok);
  }
  return err ? err : 1;
}

/* A float key with an integer value is an integer key in a Lua table
 * (1.0 is 1, -0.0 is 0): as a key it would not go back as it came. */
static bool integral_float(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER || lua_isinteger(L, idx))
    return false;
  lua_Number v = lua_tonumber(L, idx);
  /* As Lua decides: an integral value within the integers' range. */
  return v >= -0x1p63 && v < 0x1p63 && (lua_Number)(lua_Integer)v == v;
}

/* The map at `start`, read whole already (r->p is past it), has no key
 * twice: no two keys with the same bytes (Erlang refuses such a map; a
 * key written in two forms, as 1 in INTEGER_EXT and in SMALL_INTEGER_EXT,
 * is not caught here). */
static int distinct_keys(rd_t *r, const unsigned char *start, int depth) {
  const unsigned char *end = r->p;
  uint32_t n = mb__get32(start + 1);
  size_t *at = malloc((size_t)n * 2 * sizeof *at);
  int err = at == NULL ? bad(r, "out of memory") : 0;
  r->p = start + 5;
  for (uint32_t i = 0; err == 0 && i < n; i++) {
    at[2 * i] = (size_t)(r->p - start);
    if ((err = skip_term(r, depth + 1)) != 0)
      break;
    at[2 * i + 1] = (size_t)(r->p - start) - at[2 * i];
    for (uint32_t j = 0; j < i && err == 0; j++)
      if (at[2 * j + 1] == at[2 * i + 1] &&
          memcmp(start + at[2 * j], start + at[2 * i], at[2 * i + 1]) == 0)
        err = bad(r, "a map with a key twice");
    if (err == 0)
      err = skip_term(r, depth + 1);
  }
  free(at);
  if (err == 0)
    r->p = end;
  return err;
}

/* A map Lua cannot hold as it came, kept whole as an opaque term: one
 * with two keys that are one key in Lua (1 and 1.0; Erlang refuses a map
 * with a key twice, so the encoding is valid), or with a float key that
 * Lua would turn into an integer.  The table and what was pushed for the
 * current key (`npop` values with it) go, the map's bytes are read again
 * from its start, and the term takes the map's place, to be delivered
 * (2). */
static int opaque_map(dec_t *d, int depth0, int npop) {
  lua_State *L = d->L;
  rd_t *r = &d->r;
  const unsigned char *start = d->frames[--d->nframes].start;
  lua_pop(L, npop);
  r->p = start;
  int err = skip_term(r, depth0 + d->nframes);
  if (err == 0)
    err = distinct_keys(r, start, depth0 + d->nframes);
  if (err)
    return err;
  mb__push_term(L, MB_TERM_OTHER, start, (size_t)(r->p - start));
  return 2;
}

/* A value is complete on top: it goes into the container below it (0),
 * or replaces that container (2: deliver the container's replacement). */
static int deliver(dec_t *d, int depth0) {
  lua_State *L = d->L;
  dframe_t *f = &d->frames[d->nframes - 1];
  switch (f->kind) {
  case D_TUPLE:
    lua_rawseti(L, -2, ++f->i);
    return 0;
  case D_LIST:
    if (f->tail)
      lua_setfield(L, -2, "tail");
    else
      lua_rawseti(L, -2, ++f->i);
    return 0;
  case D_MAP: /* a key: it waits for its value */
    if (integral_float(L, -1))
      return opaque_map(d, depth0, 2);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) != LUA_TNIL)
      return opaque_map(d, depth0, 3);
    lua_pop(L, 1);
    f->kind = D_MAP_VALUE;
    return 0;
  default:
    lua_rawset(L, -3);
    f->kind = D_MAP;
    return 0;
  }
}

/* What the top frame does next: read a child (1 if it came whole, 0 if
 * it opened a frame), or end, leaving its container whole on top (1). */
static int advance(dec_t *d, int depth0) {
  lua_State *L = d->L;
  rd_t *r = &d->r;
  dframe_t *f = &d->frames[d->nframes - 1];
  int depth = depth0 + d->nframes; /* of a child */
  const unsigned char *h;
  int err;
  switch (f->kind) {
  case D_TUPLE:
    if (f->left > 0) {
      f->left--;
      return dec_start(d, depth, true);
    }
    d->nframes--;
    set_count(L, f->n, MB_KIND_TUPLE);
    return 1;
  case D_MAP:
    if (f->left > 0) {
      f->left--;
      return dec_start(d, depth, false);
    }
    d->nframes--;
    set_kind(L, MB_KIND_MAP);
    return 1;
  case D_MAP_VALUE:
    return dec_start(d, depth, false);
  default:
    break;
  }
  /* A list: its elements, then its tail. */
  if (f->tail) {
    d->nframes--;
    set_count(L, f->i, MB_KIND_LIST);
    return 1;
  }
  if (f->left > 0) {
    f->left--;
    return dec_start(d, depth, true);
  }
  TAKE(r, h, 1);
  if (h[0] == MB_ETF_NIL || h[0] == MB_ETF_STRING) {
    if (h[0] == MB_ETF_STRING && (err = dec_string_elems(d, &f->i)))
      return err;
    d->nframes--;
    set_count(L, f->i, MB_KIND_LIST);
    return 1;
  }
  if (h[0] == MB_ETF_LIST) { /* [1 | [2]] is [1, 2] */
    TAKE(r, h, 4);
    f->left = mb__get32(h);
    if ((err = container(r, depth - 1, f->left, 1)))
      return err;
    return 0;
  }
  r->p--;
  if (f->i == 0) { /* a list of no elements is its tail */
    bool nil_ok = f->nil_ok;
    d->nframes--;
    lua_pop(L, 1);
    return dec_start(d, depth - 1, nil_ok);
  }
  f->tail = true;
  return dec_start(d, depth, false);
}

static int dec_term(dec_t *d, int depth0, bool nil_ok) {
  int rc = dec_start(d, depth0, nil_ok);
  while (rc >= 0) {
    while (rc == 1 || rc == 2) {
      if (d->nframes == 0)
        return 0;
      rc = deliver(d, depth0);
    }
    if (rc)
      return rc;
    rc = advance(d, depth0);
  }
  return rc;
}

static int decode(lua_State *L, const unsigned char *buf, size_t len, bool safe,
                  char *err, size_t errlen) {
  dec_t d;
  dframe_t small[16];
  d.L = L;
  int top = lua_gettop(L);
  d.base = top + 1;
  d.fslot = 0;
  d.frames = small;
  d.nframes = 0;
  d.cap = 16;
  int rc = mb__etf_reader_init(&d.r, buf, len);
  d.safe = safe;
  if (rc == 0 && mb__etf_get_local(&d.lnode, &d.lcreation) != 0)
    rc = bad(&d.r, "out of memory");
  if (rc == 0 && (rc = dec_term(&d, 0, true)) == 0 && d.r.p != d.r.end)
    rc = bad(&d.r, "bytes after the term");
  if (rc == 0) {
    if (d.fslot)
      lua_remove(L, d.fslot);
    return 0;
  }
  lua_settop(L, top);
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "malformed external term at byte %zu: %s",
             (size_t)(d.r.p - buf), d.r.why ? d.r.why : "?");
  return rc;
}

int mb__etf_decode(lua_State *L, const unsigned char *buf, size_t len,
                   char *err, size_t errlen) {
  return decode(L, buf, len, false, err, errlen);
}

int mb__etf_decode_safe(lua_State *L, const unsigned char *buf, size_t len,
                        char *err, size_t errlen) {
  return decode(L, buf, len, true, err, errlen);
}
