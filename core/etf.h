/* Erlang's external term format: the codec and the readers and writers of
 * control tuples, shared by the runtime (messages from other nodes) and
 * core/dist/ (what frames carry).  Not installed. */
#ifndef MB_ETF_H
#define MB_ETF_H

#include "internal.h"

/* How Lua values map to terms and back is in docs/terms.md.  What is
 * written is canonical, as OTP 25 writes it with {minor_version, 2}; what
 * is read is checked against its length and depth, never trusted. */
#define MB_ETF_VERSION 131
/* Containers nested in one term (a linked list of 100,000 nodes is 100,000
 * levels).  Messages between local processes have the same limit (msg.c),
 * so that what one process can send another, it can send to another node.
 * The codecs keep stacks of their own, so this costs no C stack. */
#define MB_ETF_MAX_DEPTH 200000
enum {
  MB_ETF_NEW_FLOAT = 70,
  MB_ETF_BIT_BINARY = 77,
  MB_ETF_COMPRESSED = 80,
  MB_ETF_ATOM_CACHE_REF = 82,
  MB_ETF_NEW_PID = 88,
  MB_ETF_NEW_PORT = 89,
  MB_ETF_NEWER_REFERENCE = 90,
  MB_ETF_SMALL_INTEGER = 97,
  MB_ETF_INTEGER = 98,
  MB_ETF_FLOAT = 99,
  MB_ETF_ATOM = 100,
  MB_ETF_REFERENCE = 101,
  MB_ETF_PORT = 102,
  MB_ETF_PID = 103,
  MB_ETF_SMALL_TUPLE = 104,
  MB_ETF_LARGE_TUPLE = 105,
  MB_ETF_NIL = 106,
  MB_ETF_STRING = 107,
  MB_ETF_LIST = 108,
  MB_ETF_BINARY = 109,
  MB_ETF_SMALL_BIG = 110,
  MB_ETF_LARGE_BIG = 111,
  MB_ETF_NEW_FUN = 112,
  MB_ETF_EXPORT = 113,
  MB_ETF_NEW_REFERENCE = 114,
  MB_ETF_SMALL_ATOM = 115,
  MB_ETF_MAP = 116,
  MB_ETF_FUN = 117,
  MB_ETF_ATOM_UTF8 = 118,
  MB_ETF_SMALL_ATOM_UTF8 = 119,
  MB_ETF_V4_PORT = 120
};

/* This node's name and creation, for the pids and refs it writes and to
 * tell its own from others' when reading.  Until set: nonode@nohost, 0.
 * Readable from any thread; NULL sets it back to nonode@nohost. */
void mb__etf_set_local(const mb__atom_t *node, uint32_t creation);
int mb__etf_get_local(const mb__atom_t **node, uint32_t *creation);

/* Encode the Lua value at idx as a term with its leading 131 into a new
 * message.  MB_EBADTERM with the reason and the path to the bad value in
 * err ("cannot send a function to another node at msg.f"), or
 * MB_ENOMEM. */
int mb__etf_encode(lua_State *L, int idx, const char *root, mb_msg_t **out,
                   char *err, size_t errlen);
/* Decode the term in buf (starting at its 131, and filling all of len) and
 * push its Lua value.  Malformed input returns MB_EBADTERM with nothing
 * pushed and the reason in err; it never raises.  Only running out of
 * memory raises, as any Lua allocation does. */
int mb__etf_decode(lua_State *L, const unsigned char *buf, size_t len,
                   char *err, size_t errlen);
/* The same, with binary_to_term's `safe` option: input naming an atom
 * this node does not know (also as a pid's or ref's node) is malformed,
 * so that untrusted bytes cannot fill the atom table. */
int mb__etf_decode_safe(lua_State *L, const unsigned char *buf, size_t len,
                        char *err, size_t errlen);

/* Reading control tuples without Lua.  Each read takes one term of the
 * expected type and returns 0, or MB_EBADTERM with `why` set and the
 * reader left where it was. */
typedef struct {
  const unsigned char *p, *end;
  const char *why; /* what was wrong with the input, after an error */
} mb__etf_reader_t;
typedef struct {
  const mb__atom_t *node;
  uint32_t id, serial, creation;
} mb__etf_pid_t;
typedef struct {
  const mb__atom_t *node;
  uint32_t creation, len;
  uint32_t words[MB_REF_MAXWORDS];
} mb__etf_ref_t;
/* Start at buf, which must begin with 131 (consumed). */
int mb__etf_reader_init(mb__etf_reader_t *r, const void *buf, size_t len);
/* The tag of the next term, or -1 at the end. */
int mb__etf_peek(const mb__etf_reader_t *r);
int mb__etf_read_tuple(mb__etf_reader_t *r, uint32_t *arity);
/* Any integer form, when the value fits in 64 signed bits. */
int mb__etf_read_int(mb__etf_reader_t *r, int64_t *v);
int mb__etf_read_atom(mb__etf_reader_t *r, const mb__atom_t **a);
int mb__etf_read_pid(mb__etf_reader_t *r, mb__etf_pid_t *pid);
int mb__etf_read_ref(mb__etf_reader_t *r, mb__etf_ref_t *ref);
/* Step over one term, checking it as the decoder would (except for map
 * keys that Lua would take as equal, found only by decoding). */
int mb__etf_skip(mb__etf_reader_t *r);
/* This node's pid or ref, as a local one?  (Same node name and creation,
 * and within what this node hands out.) */
bool mb__etf_pid_local(const mb__etf_pid_t *pid, mb_pid_t *out);
bool mb__etf_ref_local(const mb__etf_ref_t *ref, uint64_t *out);

/* Writing control tuples: append to a message made by mb__msg_new.  Each
 * returns 0 or MB_ENOMEM (*m may move).  The _local_ forms take a pid or
 * ref as the core holds it: this node's, or another's by its key
 * (remote.c; MB_EINVAL for a key never interned). */
int mb__etf_write_version(mb_msg_t **m);
int mb__etf_write_tuple(mb_msg_t **m, uint32_t arity);
int mb__etf_write_int(mb_msg_t **m, int64_t v);
int mb__etf_write_atom(mb_msg_t **m, const mb__atom_t *a);
int mb__etf_write_pid(mb_msg_t **m, const mb__etf_pid_t *pid);
int mb__etf_write_local_pid(mb_msg_t **m, mb_pid_t pid);
int mb__etf_write_ref(mb_msg_t **m, const mb__etf_ref_t *ref);
int mb__etf_write_local_ref(mb_msg_t **m, uint64_t ref);
/* A term already encoded (without its 131), such as one skipped over. */
int mb__etf_write_raw(mb_msg_t **m, const void *bytes, size_t len);
/* The Lua value at idx; errors as mb__etf_encode's. */
int mb__etf_write_value(mb_msg_t **m, lua_State *L, int idx, const char *root,
                        char *err, size_t errlen);

#endif
