/* libFuzzer target for the external term format decoder.
 *
 * Build with clang: cmake -DMB_FUZZ=ON (see CMakeLists.txt), then
 *   build-fuzz/fuzz/fuzz-etf core/fuzz/corpus/etf
 *
 * Beyond "never crash, never read past the input", each input checks that
 * the decoder and the validating skip agree, that whatever decodes can be
 * encoded, and that the canonical form is stable: encoding, decoding and
 * encoding again gives the same bytes.  The reader functions of the
 * distribution layer walk the same input as a control tuple. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../etf.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      abort();                                                                 \
  } while (0)

/* Read the input as the distribution layer reads control messages: each
 * term by its tag, until something does not fit. */
static void walk_control(const uint8_t *data, size_t size) {
  mb__etf_reader_t r;
  uint32_t arity;
  int64_t i;
  const mb__atom_t *a;
  mb__etf_pid_t pid;
  mb__etf_ref_t ref;
  mb_pid_t local;
  uint64_t id;
  if (mb__etf_reader_init(&r, data, size) != 0)
    return;
  for (int steps = 0; steps < 64 && mb__etf_peek(&r) >= 0; steps++) {
    const unsigned char *at = r.p;
    int err;
    switch (mb__etf_peek(&r)) {
    case MB_ETF_SMALL_TUPLE:
    case MB_ETF_LARGE_TUPLE:
      err = mb__etf_read_tuple(&r, &arity);
      break;
    case MB_ETF_SMALL_INTEGER:
    case MB_ETF_INTEGER:
    case MB_ETF_SMALL_BIG:
      err = mb__etf_read_int(&r, &i);
      break;
    case MB_ETF_SMALL_ATOM_UTF8:
    case MB_ETF_ATOM:
      err = mb__etf_read_atom(&r, &a);
      break;
    case MB_ETF_NEW_PID:
    case MB_ETF_PID:
      err = mb__etf_read_pid(&r, &pid);
      if (err == 0)
        mb__etf_pid_local(&pid, &local);
      break;
    case MB_ETF_NEWER_REFERENCE:
    case MB_ETF_NEW_REFERENCE:
      err = mb__etf_read_ref(&r, &ref);
      if (err == 0)
        mb__etf_ref_local(&ref, &id);
      break;
    default:
      err = mb__etf_skip(&r);
    }
    /* A failed read leaves the reader where it was. */
    CHECK(err == 0 ? r.p > at && r.p <= r.end : r.p == at);
    if (err)
      return;
  }
}

/* Decode, and if that works, encode twice. */
static void round_trip(lua_State *L, const uint8_t *data, size_t size) {
  char err[256];
  mb__etf_reader_t r;
  bool skips = mb__etf_reader_init(&r, data, size) == 0 &&
               mb__etf_skip(&r) == 0 && r.p == r.end;
  /* binary_to_term's safe first (the plain decode makes atoms): one value
   * or nothing pushed, and never a value the plain decode refuses. */
  int safe = mb__etf_decode_safe(L, data, size, err, sizeof err);
  CHECK(lua_gettop(L) == (safe == 0 ? 1 : 0));
  lua_settop(L, 0);
  if (mb__etf_decode(L, data, size, err, sizeof err) != 0) {
    CHECK(lua_gettop(L) == 0 && safe != 0);
    /* Only decoding finds map keys Lua takes as equal, and atoms of up to
     * 255 characters that take more than the atom table's 255 bytes in
     * UTF-8 (valid terms, refused here). */
    CHECK(!skips || strstr(err, "key twice") != NULL ||
          strstr(err, "(unsupported here)") != NULL);
    return;
  }
  CHECK(skips && lua_gettop(L) == 1);

  mb_msg_t *m1, *m2;
  if (mb__etf_encode(L, -1, "msg", &m1, err, sizeof err) != 0) {
    /* Table keys Lua keeps apart but that are equal as terms. */
    CHECK(strstr(err, "two keys equal as terms") != NULL);
    return;
  }
  lua_settop(L, 0);
  CHECK(mb__etf_decode(L, m1->data, m1->len, err, sizeof err) == 0);
  CHECK(mb__etf_encode(L, -1, "msg", &m2, err, sizeof err) == 0);
  CHECK(m1->len == m2->len && memcmp(m1->data, m2->data, m1->len) == 0);
  mb_msg_free(m1);
  mb_msg_free(m2);
}

/* libFuzzer's entry point. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A Lua state per input: what it allocates is freed with it, so that the
 * leak checker after each input has nothing to look for.  (Only new atoms
 * stay: the atom table lives as long as the node.) */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  walk_control(data, size);
  lua_State *L = luaL_newstate();
  round_trip(L, data, size);
  lua_close(L);
  return 0;
}
