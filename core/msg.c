/* Messages: a Lua value copied out of one state into a flat buffer, and
 * out of the buffer into another state.  Two states never touch each
 * other, so a message is always encoded by the sender and decoded by the
 * receiver on its own thread.
 *
 * What is copied: nil, booleans, integers and floats (subtype kept),
 * strings (binary-safe), tables with any keys (shared sub-tables and cycles
 * are kept), the markers of tuples/lists/maps, atoms, pids, refs, and Lua
 * functions (bytecode plus copies of their upvalues; an upvalue holding the
 * globals table is rebound to the receiver's globals, one holding a loaded
 * module is sent by name and required by the receiver).  Other metatables
 * are not copied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "etf.h"

enum {
  T_NIL,
  T_FALSE,
  T_TRUE,
  T_INT8,
  T_INT,
  T_FLOAT,
  T_STR,
  T_TABLE,
  T_BACKREF,
  T_ATOM,
  T_PID,
  T_REF,
  T_FUNC,
  T_MODULE,
  T_ENV,
  T_RPID, /* another node's pid: node, creation, num, serial */
  T_RREF, /* another node's ref: node, creation, len, words */
  T_TERM  /* an opaque Erlang term: kind, length, bytes */
};

/* The wire's limit (see MB_ETF_MAX_DEPTH): a value one process can send
 * another, it can send to another node. */
#define MAX_DEPTH MB_ETF_MAX_DEPTH
#define STR(x) #x
#define XSTR(x) STR(x)
#define SMALL_SEEN 8

/* What an open container's frame does next. */
enum { F_ARRAY, F_HASH, F_HASH_VALUE, F_UPVALUES };

typedef struct {
  int idx;          /* the container's slot on the Lua stack */
  uint8_t kind;     /* F_...; F_HASH_VALUE: its key is being encoded */
  bool busy;        /* a child of it is being encoded */
  lua_Integer i, n; /* the next array index or upvalue, and their count */
  size_t count_at;  /* where the count of the hash part goes */
  uint32_t nhash;   /* the hash part's entries so far */
  const char *name; /* the upvalue being encoded, for errors */
} frame_t;

#define SMALL_FRAMES 16

typedef struct {
  lua_State *L;
  mb_msg_t *m;
  frame_t *frames; /* small_frames, or malloc'd when deeper */
  int nframes, cap;
  frame_t small_frames[SMALL_FRAMES];
  uint32_t nobj;
  /* Tables and functions seen so far: a few inline, then a hash map. */
  const void *small[SMALL_SEEN];
  mb__map_t seen;
  /* Error: what went wrong, and the path to it built from the leaf up. */
  const char *what;
  bool as_key;
  mb__path_t path;
} enc_t;

/* ---- buffer ---- */

mb_msg_t *mb__msg_new(size_t cap) {
  mb_msg_t *m = mb__mem_alloc(sizeof *m + cap);
  if (m == NULL)
    return NULL;
  memset(m, 0, sizeof *m);
  m->cap = cap;
  m->data = (unsigned char *)(m + 1);
  return m;
}

mb_msg_t *mb__signal_new(mb__sig_kind_t kind, mb_pid_t from, uint64_t ref) {
  mb_msg_t *m = mb__msg_new(16);
  if (m != NULL) {
    m->kind = (uint8_t)kind;
    m->from = from;
    m->ref = ref;
  }
  return m;
}

void mb_msg_free(mb_msg_t *m) { mb__mem_free(m); }

size_t mb_msg_size(const mb_msg_t *m) { return m->len; }

int mb__msg_reserve(mb_msg_t **mp, size_t n) {
  mb_msg_t *m = *mp;
  if (n <= m->cap - m->len)
    return 0;
  if (n > (SIZE_MAX >> 2) - m->len)
    return MB_ENOMEM;
  size_t cap = m->cap ? m->cap * 2 : 64;
  while (cap < m->len + n)
    cap *= 2;
  m = mb__mem_realloc(m, sizeof *m + cap);
  if (m == NULL)
    return MB_ENOMEM;
  m->cap = cap;
  m->data = (unsigned char *)(m + 1);
  *mp = m;
  return 0;
}

int mb__msg_append(mb_msg_t **mp, const void *p, size_t n) {
  if (mb__msg_reserve(mp, n))
    return MB_ENOMEM;
  memcpy((*mp)->data + (*mp)->len, p, n);
  (*mp)->len += n;
  return 0;
}

static int reserve(enc_t *e, size_t n) {
  if (mb__msg_reserve(&e->m, n) == 0)
    return 0;
  e->what = "out of memory";
  return -1;
}

static int put(enc_t *e, const void *p, size_t n) {
  if (n > e->m->cap - e->m->len && reserve(e, n))
    return -1;
  memcpy(e->m->data + e->m->len, p, n);
  e->m->len += n;
  return 0;
}

static inline int put1(enc_t *e, unsigned char c) {
  if (e->m->len < e->m->cap) {
    e->m->data[e->m->len++] = c;
    return 0;
  }
  return put(e, &c, 1);
}

static int put_varint(enc_t *e, uint64_t v) {
  unsigned char b[10];
  int n = 0;
  do {
    b[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return put(e, b, (size_t)n);
}

static int fail(enc_t *e, const char *what) {
  e->what = what;
  return -1;
}

/* ---- seen objects ---- */

/* Returns the object's index if seen, else registers it and returns 0. */
static uint32_t seen(enc_t *e, const void *p) {
  uint32_t n = e->nobj < SMALL_SEEN ? e->nobj : SMALL_SEEN;
  for (uint32_t i = 0; i < n; i++)
    if (e->small[i] == p)
      return i + 1;
  if (e->nobj >= SMALL_SEEN) {
    uintptr_t v = (uintptr_t)mb__map_get(&e->seen, (uint64_t)(uintptr_t)p);
    if (v != 0)
      return (uint32_t)v;
  }
  e->nobj++;
  if (e->nobj <= SMALL_SEEN)
    e->small[e->nobj - 1] = p;
  else if (mb__map_put(&e->seen, (uint64_t)(uintptr_t)p,
                       (void *)(uintptr_t)e->nobj) != 0)
    return UINT32_MAX;
  return 0;
}

/* ---- encoder ----
 * Tables and functions are encoded with a stack of frames of our own, one
 * per container open, not with C recursion: how deep a value may nest is
 * bounded by MAX_DEPTH, not by the thread's stack.  A container's value
 * sits in a slot of the Lua stack while its frame is open; a child is
 * pushed on top, encoded (opening a frame if it is a container), and
 * popped, so that the parent's slot, and for a hash part its current key,
 * are just below it. */

static int enc_scalar(enc_t *e, int idx);

/* Open a frame for the container at slot idx (the top). */
static frame_t *push_frame(enc_t *e, int idx, int kind) {
  if (e->nframes == e->cap) {
    int cap = e->cap * 2;
    frame_t *f = malloc((size_t)cap * sizeof *f);
    if (f == NULL)
      return NULL;
    memcpy(f, e->frames, (size_t)e->nframes * sizeof *f);
    if (e->frames != e->small_frames)
      free(e->frames);
    e->frames = f;
    e->cap = cap;
  }
  frame_t *f = &e->frames[e->nframes++];
  memset(f, 0, sizeof *f);
  f->idx = idx;
  f->kind = (uint8_t)kind;
  return f;
}

static int open_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  mb__table_kind_t kind = mb__table_kind(L, idx);
  lua_Integer narr = (lua_Integer)lua_rawlen(L, idx);
  if (put1(e, T_TABLE) || put1(e, (unsigned char)kind) ||
      put_varint(e, (uint64_t)narr))
    return -1;
  frame_t *f = push_frame(e, idx, F_ARRAY);
  if (f == NULL)
    return fail(e, "out of memory");
  f->i = 1;
  f->n = narr;
  return 0;
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  return put(ud, p, sz);
}

static const char module_names_key = 'm';

/* Is the table at idx a loaded module?  Leaves its name on the stack.
 * The name found last for a table is kept (weakly), and trusted while
 * package.loaded still holds the table under it: a function spawned again
 * and again does not go through every loaded module each time. */
static int module_name(lua_State *L, int idx) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  mb__push_weak_table(L, &module_names_key, "k");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_pushvalue(L, -1);
    bool same = lua_rawget(L, -4) == LUA_TTABLE && lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (same) {
      lua_replace(L, -3);
      lua_pop(L, 1);
      return 1;
    }
  }
  lua_pop(L, 2);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_rawequal(L, -1, idx) && lua_type(L, -2) == LUA_TSTRING) {
      lua_pop(L, 1);
      lua_remove(L, -2);
      mb__push_weak_table(L, &module_names_key, "k");
      lua_pushvalue(L, idx);
      lua_pushvalue(L, -3);
      lua_rawset(L, -3);
      lua_pop(L, 1);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static const char dump_cache_key = 'd';

/* The bytecode of a function, dumped once per closure and kept while the
 * closure lives: spawning the same function again copies it. */
static void push_dump_cache(lua_State *L) {
  mb__push_weak_table(L, &dump_cache_key, "k");
}

/* A function: its bytecode and the count of its upvalues, which its frame
 * then encodes. */
static int open_function(enc_t *e, int idx) {
  lua_State *L = e->L;
  if (lua_iscfunction(L, idx))
    return fail(e, "a C function (require its module inside the process "
                   "instead)");
  if (put1(e, T_FUNC))
    return -1;
  size_t len_at = e->m->len;
  uint32_t len = 0;
  if (put(e, &len, sizeof len))
    return -1;
  push_dump_cache(L);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    size_t n;
    const char *code = lua_tolstring(L, -1, &n);
    int r = put(e, code, n);
    lua_pop(L, 2);
    if (r)
      return -1;
  } else {
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    int r = lua_dump(L, dump_writer, e, 0);
    lua_pop(L, 1);
    if (r) {
      lua_pop(L, 1);
      return -1;
    }
    lua_pushvalue(L, idx);
    lua_pushlstring(L, (const char *)e->m->data + len_at + sizeof len,
                    e->m->len - len_at - sizeof len);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  len = (uint32_t)(e->m->len - len_at - sizeof len);
  memcpy(e->m->data + len_at, &len, sizeof len);
  unsigned char n = 0;
  while (n < 255 && lua_getupvalue(L, idx, n + 1) != NULL) {
    lua_pop(L, 1);
    n++;
  }
  if (put1(e, n))
    return -1;
  frame_t *f = push_frame(e, idx, F_UPVALUES);
  if (f == NULL)
    return fail(e, "out of memory");
  f->i = 1;
  f->n = n;
  return 0;
}

/* Encode the value in the top slot: a scalar or a back reference at once
 * (and pop it), a container by opening its frame (its slot stays). */
static int start_value(enc_t *e) {
  lua_State *L = e->L;
  int idx = lua_gettop(L);
  int type = lua_type(L, idx);
  if (type != LUA_TTABLE && type != LUA_TFUNCTION) {
    int r = enc_scalar(e, idx);
    lua_pop(L, 1);
    return r;
  }
  uint32_t ix = seen(e, lua_topointer(L, idx));
  if (ix == UINT32_MAX)
    return fail(e, "out of memory");
  if (ix != 0) {
    /* Relative to the objects seen so far, so that an encoded value can be
     * spliced into another message (see mb__tuple_*) and stay valid. */
    e->m->has_refs = 1;
    lua_pop(L, 1);
    return put1(e, T_BACKREF) || put_varint(e, e->nobj - ix);
  }
  if (e->nframes >= MAX_DEPTH)
    return fail(e, "a value nested more than " XSTR(MAX_DEPTH) " levels deep");
  if (!lua_checkstack(L, 8))
    return fail(e, "a value nested too deeply");
  return type == LUA_TTABLE ? open_table(e, idx) : open_function(e, idx);
}

/* A frame's next child: it is on top; the frame is busy with it until it
 * is done. */
static int child(enc_t *e, int frame) {
  e->frames[frame].busy = true;
  int depth = e->nframes, r = start_value(e);
  if (r == 0 && e->nframes == depth)
    e->frames[frame].busy = false;
  return r;
}

/* Close the top frame: pop its slot; its parent is done with that child. */
static void close_frame(enc_t *e) {
  lua_settop(e->L, e->frames[--e->nframes].idx - 1);
  if (e->nframes > 0)
    e->frames[e->nframes - 1].busy = false;
}

static int step_upvalue(enc_t *e, int top) {
  lua_State *L = e->L;
  frame_t *f = &e->frames[top];
  if (f->i > f->n) {
    close_frame(e);
    return 0;
  }
  int i = (int)f->i++;
  const char *name = lua_getupvalue(L, f->idx, i);
  int slot = lua_gettop(L);
  f->name = name;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  /* A function's environment is never copied: in the new state it is
   * that state's globals, whether it was the sender's globals or a
   * sandbox table of the sender's. */
  if (lua_rawequal(L, -1, slot) || (name && strcmp(name, "_ENV") == 0)) {
    lua_settop(L, slot - 1);
    return put1(e, T_ENV);
  }
  lua_pop(L, 1);
  if ((lua_type(L, slot) == LUA_TTABLE || lua_type(L, slot) == LUA_TFUNCTION) &&
      module_name(L, slot)) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int r = put1(e, T_MODULE) || put_varint(e, len) || put(e, s, len);
    lua_settop(L, slot - 1);
    return r;
  }
  return child(e, top);
}

/* One step of the top frame: its next child, or its end. */
static int step(enc_t *e) {
  lua_State *L = e->L;
  int top = e->nframes - 1;
  frame_t *f = &e->frames[top];
  switch (f->kind) {
  case F_ARRAY:
    if (f->i <= f->n) {
      lua_rawgeti(L, f->idx, f->i++);
      return child(e, top);
    }
    f->count_at = e->m->len;
    if (put(e, &f->nhash, sizeof f->nhash))
      return -1;
    lua_pushnil(L);
    f->kind = F_HASH;
    return 0;
  case F_HASH: /* the slot, then the last key */
    while (lua_next(L, f->idx)) {
      if (lua_isinteger(L, -2)) {
        lua_Integer k = lua_tointeger(L, -2);
        if (k >= 1 && k <= f->n) {
          lua_pop(L, 1);
          continue;
        }
      }
      f->kind = F_HASH_VALUE;
      lua_pushvalue(L, -2); /* the key stays, for lua_next */
      return child(e, top);
    }
    memcpy(e->m->data + f->count_at, &f->nhash, sizeof f->nhash);
    close_frame(e);
    return 0;
  case F_HASH_VALUE: /* the slot, the key, the value */
    f->kind = F_HASH;
    f->nhash++;
    return child(e, top);
  default:
    return step_upvalue(e, top);
  }
}

/* Where the failure is, from the innermost busy frame out. */
static void failure_path(enc_t *e) {
  for (int i = e->nframes - 1; i >= 0; i--) {
    frame_t *f = &e->frames[i];
    if (!f->busy)
      continue;
    if (f->kind == F_ARRAY) {
      mb__path_index(&e->path, f->i - 1);
    } else if (f->kind == F_HASH_VALUE) {
      e->as_key = true; /* the key was being encoded */
    } else if (f->kind == F_HASH) {
      mb__path_key(&e->path, e->L, f->idx + 1);
    } else {
      char seg[96];
      snprintf(seg, sizeof seg, "<upvalue %.64s>",
               f->name && *f->name ? f->name : "?");
      mb__path_prepend(&e->path, seg);
    }
  }
}

static int enc_value(enc_t *e, int idx) {
  int type = lua_type(e->L, idx);
  if (type != LUA_TTABLE && type != LUA_TFUNCTION)
    return enc_scalar(e, idx); /* most messages: no frame, no copy */
  lua_pushvalue(e->L, idx);
  int r = start_value(e);
  while (r == 0 && e->nframes > 0)
    r = step(e);
  if (r)
    failure_path(e);
  return r;
}

static int enc_scalar(enc_t *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put1(e, T_NIL);
  case LUA_TBOOLEAN:
    return put1(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_Integer v = lua_tointeger(L, idx);
      if (v >= -128 && v <= 127)
        return put1(e, T_INT8) || put1(e, (unsigned char)(int8_t)v);
      return put1(e, T_INT) || put(e, &v, sizeof v);
    } else {
      lua_Number v = lua_tonumber(L, idx);
      return put1(e, T_FLOAT) || put(e, &v, sizeof v);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return put1(e, T_STR) || put_varint(e, len) || put(e, s, len);
  }
  case LUA_TLIGHTUSERDATA: {
    const mb__atom_t *a = mb__to_atom(L, idx);
    if (a == NULL)
      return fail(e, "a light userdata");
    return put1(e, T_ATOM) || put(e, &a->index, sizeof a->index);
  }
  case LUA_TUSERDATA: {
    mb__lpid_t *p = mb__to_pid(L, idx);
    if (p != NULL && p->node == 0)
      return put1(e, T_PID) || put(e, &p->id, sizeof p->id);
    if (p != NULL) {
      uint32_t f[4] = {p->node, p->creation, p->num, p->serial};
      return put1(e, T_RPID) || put(e, f, sizeof f);
    }
    mb__lref_t *r = mb__to_ref(L, idx);
    if (r != NULL && r->node == 0)
      return put1(e, T_REF) || put(e, &r->id, sizeof r->id);
    if (r != NULL)
      return put1(e, T_RREF) || put(e, &r->node, sizeof r->node) ||
             put(e, &r->creation, sizeof r->creation) ||
             put(e, &r->len, sizeof r->len) ||
             put(e, r->words, r->len * sizeof r->words[0]);
    mb__lterm_t *t = mb__to_term(L, idx);
    if (t != NULL)
      return put1(e, T_TERM) || put1(e, t->kind) ||
             put(e, &t->len, sizeof t->len) || put(e, t->bytes, t->len);
    return fail(e, "a userdata");
  }
  case LUA_TTHREAD:
    return fail(e, "a coroutine");
  default:
    return fail(e, "a value of unknown type");
  }
}

static void enc_init(enc_t *e, lua_State *L, mb_msg_t *m) {
  e->L = L;
  e->m = m;
  e->frames = e->small_frames;
  e->nframes = 0;
  e->cap = SMALL_FRAMES;
  e->nobj = 0;
  mb__map_init(&e->seen);
  e->what = NULL;
  e->as_key = false;
  mb__path_reset(&e->path);
}

/* Free what the encoder took, give back the message and turn r into the
 * result: 0, or MB_EBADTERM with the error's text in err. */
static int enc_done(enc_t *e, int r, const char *root, mb_msg_t **m, char *err,
                    size_t errlen) {
  mb__map_free(&e->seen);
  if (e->frames != e->small_frames)
    free(e->frames);
  *m = e->m;
  if (r == 0)
    return 0;
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "cannot send %s%s at %s%s",
             e->what ? e->what : "a value", e->as_key ? " used as a key" : "",
             root, mb__path_str(&e->path));
  return MB_EBADTERM;
}

/* Encode value idx of L at the end of *m (which may move); on failure *m
 * keeps what it had, perhaps with part of the value after it. */
static int encode_into(lua_State *L, int idx, const char *root, mb_msg_t **m,
                       char *err, size_t errlen) {
  enc_t e;
  enc_init(&e, L, *m);
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  int r = enc_value(&e, idx);
  lua_settop(L, top);
  return enc_done(&e, r, root, m, err, errlen);
}

int mb__msg_encode_seq(lua_State *L, int first, int n, const char *root,
                       mb_msg_t **out, char *err, size_t errlen) {
  mb_msg_t *m = mb__msg_new(64);
  if (m == NULL)
    return MB_ENOMEM;
  enc_t e;
  enc_init(&e, L, m);
  int top = lua_gettop(L);
  /* The table's head, its array part one value after the other (sharing
   * the objects seen, as the table's would), then its hash part: "n". */
  int r = put1(&e, T_TABLE) || put1(&e, MB_KIND_PLAIN) ||
          put_varint(&e, (uint64_t)n);
  for (int i = 0; r == 0 && i < n; i++) {
    r = enc_value(&e, first + i);
    if (r != 0)
      mb__path_index(&e.path, i + 1);
  }
  uint32_t nhash = 1;
  if (r == 0)
    r = put(&e, &nhash, sizeof nhash) || put1(&e, T_STR) || put1(&e, 1) ||
        put1(&e, 'n');
  if (r == 0) {
    lua_pushinteger(L, n);
    r = enc_scalar(&e, -1);
  }
  lua_settop(L, top);
  r = enc_done(&e, r, root, &m, err, errlen);
  if (r != 0) {
    mb_msg_free(m);
    return r;
  }
  *out = m;
  return 0;
}

int mb__msg_encode(lua_State *L, int idx, const char *root, mb_msg_t **out,
                   char *err, size_t errlen) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TBOOLEAN ||
      t == LUA_TNIL) {
    /* A scalar, as most messages are: no frames, no objects seen, no
     * path, and a buffer of its size (a tag, a length, the bytes); it can
     * fail only for want of memory. */
    mb_msg_t *m = mb__msg_new(t == LUA_TSTRING ? lua_rawlen(L, idx) + 11 : 16);
    if (m == NULL)
      return MB_ENOMEM;
    enc_t e;
    e.L = L;
    e.m = m;
    if (enc_scalar(&e, idx) == 0) {
      *out = e.m;
      return 0;
    }
    m = e.m;
    enc_init(&e, L, m); /* for the error's text, as any other */
    e.what = "out of memory";
    int r = enc_done(&e, -1, root, &m, err, errlen);
    mb_msg_free(m);
    return r;
  }
  mb_msg_t *m = mb__msg_new(64);
  if (m == NULL)
    return MB_ENOMEM;
  int r = encode_into(L, idx, root, &m, err, errlen);
  if (r != 0) {
    mb_msg_free(m);
    return r;
  }
  *out = m;
  return 0;
}

int mb_msg_encode(lua_State *L, int idx, mb_msg_t **out, char *err,
                  size_t errlen) {
  return mb__msg_encode(L, idx, "value", out, err, errlen);
}

/* ---- decoder ----
 * As the encoder, with frames of its own: a container being filled sits on
 * the Lua stack (with, in a hash part, its pending key above it) and its
 * frame says what comes next.  The first frames are in the decoder (on the
 * C stack); more move into a userdata on the Lua stack, so that an error
 * raised on corrupt input leaks nothing. */

typedef struct {
  uint8_t kind;  /* F_ARRAY, F_HASH (next: a key), F_HASH_VALUE, F_UPVALUES */
  uint8_t tkind; /* a table's kind, for its metatable */
  lua_Integer i, n; /* the next array index or upvalue, and their count */
  uint32_t left;    /* entries of the hash part still to come */
} dframe_t;

typedef struct {
  lua_State *L;
  const unsigned char *p, *end;
  int objs; /* stack index of the objects table, 0 if none */
  lua_Integer nobj;
  int base;  /* stack index where the value is built */
  int fslot; /* stack index of the frames' userdata, 0 while small */
  dframe_t *frames;
  int nframes, cap;
  dframe_t small[16];
} dec_t;

static void get(dec_t *d, void *out, size_t n) {
  if ((size_t)(d->end - d->p) < n)
    luaL_error(d->L, "corrupt message");
  memcpy(out, d->p, n);
  d->p += n;
}

static uint64_t get_varint(dec_t *d) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    unsigned char b;
    get(d, &b, 1);
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return v;
  }
  luaL_error(d->L, "corrupt message");
  return 0;
}

static void register_obj(dec_t *d) {
  if (d->objs) {
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->objs, ++d->nobj);
  }
}

static dframe_t *dpush(dec_t *d, int kind) {
  lua_State *L = d->L;
  if (d->nframes == d->cap) {
    if (d->cap >= MAX_DEPTH + 1)
      luaL_error(L, "corrupt message");
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
  f->i = 1;
  return f;
}

static void open_dtable(dec_t *d) {
  lua_State *L = d->L;
  unsigned char kind;
  get(d, &kind, 1);
  uint64_t narr = get_varint(d);
  if (narr > (uint64_t)(d->end - d->p))
    luaL_error(L, "corrupt message");
  /* A tuple's or list's hash part holds its "n" (see make_seq): room for
   * it at once, not a rehash when it comes. */
  lua_createtable(L, (int)narr,
                  kind == MB_KIND_TUPLE || kind == MB_KIND_LIST ? 1 : 0);
  register_obj(d);
  dframe_t *f = dpush(d, F_ARRAY);
  f->tkind = kind;
  f->n = (lua_Integer)narr;
}

typedef struct {
  const unsigned char *p;
  size_t n;
} chunk_t;

static const char *chunk_reader(lua_State *L, void *ud, size_t *size) {
  (void)L;
  chunk_t *c = ud;
  *size = c->n;
  c->n = 0;
  return (const char *)c->p;
}

static void open_dfunction(dec_t *d) {
  lua_State *L = d->L;
  uint32_t len;
  get(d, &len, sizeof len);
  if (len > (size_t)(d->end - d->p))
    luaL_error(L, "corrupt message");
  chunk_t c = {d->p, len};
  if (lua_load(L, chunk_reader, &c, "=message", "b") != LUA_OK)
    lua_error(L);
  d->p += len;
  register_obj(d);
  unsigned char n;
  get(d, &n, 1);
  dpush(d, F_UPVALUES)->n = n;
}

/* Read a value: a scalar is pushed whole (true); a table or function is
 * pushed empty and its frame opened (false). */
static bool dstart(dec_t *d) {
  lua_State *L = d->L;
  unsigned char tag;
  luaL_checkstack(L, 4, "message nested too deeply");
  get(d, &tag, 1);
  switch (tag) {
  case T_NIL:
    lua_pushnil(L);
    break;
  case T_FALSE:
  case T_TRUE:
    lua_pushboolean(L, tag == T_TRUE);
    break;
  case T_INT8: {
    int8_t v;
    get(d, &v, 1);
    lua_pushinteger(L, v);
    break;
  }
  case T_INT: {
    lua_Integer v;
    get(d, &v, sizeof v);
    lua_pushinteger(L, v);
    break;
  }
  case T_FLOAT: {
    lua_Number v;
    get(d, &v, sizeof v);
    lua_pushnumber(L, v);
    break;
  }
  case T_STR: {
    uint64_t len = get_varint(d);
    if (len > (uint64_t)(d->end - d->p))
      luaL_error(L, "corrupt message");
    lua_pushlstring(L, (const char *)d->p, (size_t)len);
    d->p += len;
    break;
  }
  case T_TABLE:
    open_dtable(d);
    return false;
  case T_BACKREF: {
    uint64_t back = get_varint(d);
    if (!d->objs || back >= (uint64_t)d->nobj)
      luaL_error(L, "corrupt message");
    lua_rawgeti(L, d->objs, d->nobj - (lua_Integer)back);
    break;
  }
  case T_ATOM: {
    uint32_t ix;
    get(d, &ix, sizeof ix);
    const mb__atom_t *a = mb__atom_at(ix);
    if (a == NULL)
      luaL_error(L, "corrupt message");
    mb__push_atom(L, a);
    break;
  }
  case T_PID: {
    mb_pid_t pid;
    get(d, &pid, sizeof pid);
    mb__push_pid(L, pid);
    break;
  }
  case T_REF: {
    uint64_t ref;
    get(d, &ref, sizeof ref);
    mb__push_ref(L, ref);
    break;
  }
  case T_FUNC:
    open_dfunction(d);
    return false;
  case T_RPID: {
    uint32_t f[4];
    get(d, f, sizeof f);
    mb__push_remote_pid(L, f[0], f[1], f[2], f[3]);
    break;
  }
  case T_RREF: {
    uint32_t node, creation, len, words[MB_REF_MAXWORDS];
    get(d, &node, sizeof node);
    get(d, &creation, sizeof creation);
    get(d, &len, sizeof len);
    if (len > MB_REF_MAXWORDS)
      luaL_error(L, "corrupt message");
    get(d, words, len * sizeof words[0]);
    mb__push_remote_ref(L, node, creation, len, words);
    break;
  }
  case T_TERM: {
    unsigned char kind;
    uint32_t len;
    get(d, &kind, 1);
    get(d, &len, sizeof len);
    if (len > (size_t)(d->end - d->p))
      luaL_error(L, "corrupt message");
    mb__push_term(L, (mb__term_kind_t)kind, d->p, len);
    d->p += len;
    break;
  }
  case T_MODULE: {
    uint64_t len = get_varint(d);
    if (len > 255 || len > (uint64_t)(d->end - d->p))
      luaL_error(L, "corrupt message");
    char name[256];
    memcpy(name, d->p, (size_t)len);
    name[len] = '\0';
    d->p += len;
    mb__require(L, name);
    break;
  }
  case T_ENV:
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    break;
  default:
    luaL_error(L, "corrupt message");
  }
  return true;
}

/* A value is complete on top: it goes into the container of the top frame. */
static void deliver(dec_t *d) {
  lua_State *L = d->L;
  dframe_t *f = &d->frames[d->nframes - 1];
  switch (f->kind) {
  case F_ARRAY:
    lua_rawseti(L, -2, f->i++);
    break;
  case F_HASH: /* a key: it waits on the stack for its value */
    f->kind = F_HASH_VALUE;
    break;
  case F_HASH_VALUE:
    lua_rawset(L, -3);
    f->left--;
    f->kind = F_HASH;
    break;
  default:
    if (lua_setupvalue(L, -2, (int)f->i++) == NULL)
      lua_pop(L, 1);
  }
}

/* Whether the top frame has another child to read; at the end of an
 * array part, read the count of the hash part. */
static bool more(dec_t *d) {
  dframe_t *f = &d->frames[d->nframes - 1];
  switch (f->kind) {
  case F_ARRAY:
    if (f->i <= f->n)
      return true;
    get(d, &f->left, sizeof f->left);
    f->kind = F_HASH;
    return f->left > 0;
  case F_HASH:
    return f->left > 0;
  case F_HASH_VALUE:
    return true;
  default:
    return f->i <= f->n;
  }
}

/* The top frame is done: its container, on top, is a complete value. */
static void dclose(dec_t *d) {
  dframe_t *f = &d->frames[--d->nframes];
  if (f->kind != F_UPVALUES && f->tkind != MB_KIND_PLAIN &&
      f->tkind <= MB_KIND_MAP) {
    mb__push_kind_mt(d->L, (mb__table_kind_t)f->tkind);
    lua_setmetatable(d->L, -2);
  }
}

static void dec_value(dec_t *d) {
  bool complete = dstart(d);
  for (;;) {
    if (complete) {
      if (d->nframes == 0)
        return;
      deliver(d);
    }
    if (more(d)) {
      complete = dstart(d);
    } else {
      dclose(d);
      complete = true;
    }
  }
}

/* Read from p to end of m; the table of objects met (for backrefs) goes
 * on the stack if m has backrefs. */
static void dec_init(dec_t *d, lua_State *L, const mb_msg_t *m,
                     const unsigned char *p, const unsigned char *end) {
  d->L = L;
  d->p = p;
  d->end = end;
  d->objs = 0;
  d->nobj = 0;
  if (m->has_refs) {
    lua_newtable(L);
    d->objs = lua_gettop(L);
  }
}

/* Push the next value, on top of the stack. */
static void dec_next(dec_t *d) {
  d->base = lua_gettop(d->L) + 1;
  d->fslot = 0;
  d->frames = d->small;
  d->nframes = 0;
  d->cap = 16;
  dec_value(d);
  if (d->fslot)
    lua_remove(d->L, d->fslot);
}

/* Push the value encoded at p in m; returns where the next one starts. */
static const unsigned char *decode_from(lua_State *L, const mb_msg_t *m,
                                        const unsigned char *p) {
  dec_t d;
  dec_init(&d, L, m, p, m->data + m->len);
  dec_next(&d);
  if (d.objs)
    lua_remove(L, d.objs);
  return d.p;
}

int mb__msg_decode_seq(lua_State *L, const mb_msg_t *m) {
  const unsigned char *p = m->data;
  /* What mb__msg_encode_seq writes for fewer than 128 values: the head
   * {T_TABLE, plain, n}, the values, and the hash part {n = n}. */
  uint32_t nhash = 1;
  unsigned char tail[sizeof nhash + 5] = {0, 0, 0, 0, T_STR, 1, 'n', T_INT8};
  if ((m->flags & MB_MSGF_ETF) || m->len < 3 + sizeof tail || p[0] != T_TABLE ||
      p[1] != MB_KIND_PLAIN || p[2] > 0x7f)
    return -1;
  int n = p[2];
  memcpy(tail, &nhash, sizeof nhash);
  tail[sizeof tail - 1] = (unsigned char)n;
  const unsigned char *end = p + m->len - sizeof tail;
  if (memcmp(end, tail, sizeof tail) != 0)
    return -1;
  luaL_checkstack(L, n + 1, "too many arguments");
  dec_t d;
  dec_init(&d, L, m, p + 3, end);
  for (int i = 0; i < n; i++)
    dec_next(&d);
  if (d.p != end)
    luaL_error(L, "corrupt message");
  if (d.objs)
    lua_remove(L, d.objs);
  return n;
}

int mb_msg_decode(lua_State *L, const mb_msg_t *m) {
  if (m->flags & MB_MSGF_ETF) {
    char err[200];
    if (mb__etf_decode(L, m->data, m->len, err, sizeof err) != 0)
      luaL_error(L, "a message from another node could not be read: %s", err);
    return 0;
  }
  if ((m->len == 2 && m->data[0] == T_INT8) ||
      (m->len == 1 + sizeof(lua_Integer) && m->data[0] == T_INT)) {
    /* An integer alone, as counters and tokens are: no decoder. */
    lua_Integer v = (int8_t)m->data[1];
    if (m->len > 2)
      memcpy(&v, m->data + 1, sizeof v);
    luaL_checkstack(L, 1, "message");
    lua_pushinteger(L, v);
    return 0;
  }
  decode_from(L, m, m->data);
  return 0;
}

/* ---- reading a message without decoding it ----
 * A call waits for the one reply that starts with its ref: these look at
 * the encoded messages, so that the others are left as they are. */

/* The first element of a table message in moonbeam's format, with *n
 * the length of its array part; NULL if it is not such a table. */
static const unsigned char *first_element(const mb_msg_t *m, uint64_t *n) {
  const unsigned char *p = m->data, *end = m->data + m->len;
  if (m->flags & MB_MSGF_ETF || m->len < 3 || p[0] != T_TABLE)
    return NULL;
  *n = 0;
  p += 2;
  for (int shift = 0; p < end && shift < 64; shift += 7) {
    *n |= (uint64_t)(*p & 0x7f) << shift;
    if (!(*p++ & 0x80))
      return p;
  }
  return NULL;
}

bool mb__msg_first_is_ref(const mb_msg_t *m, uint64_t ref) {
  uint64_t n;
  const unsigned char *p = first_element(m, &n);
  return p != NULL && n >= 1 && m->data + m->len - p >= 1 + (long)sizeof ref &&
         p[0] == T_REF && memcmp(p + 1, &ref, sizeof ref) == 0;
}

/* The bytes a scalar of fixed size takes, tag included; 0 for a value
 * whose size this does not know. */
static size_t scalar_size(unsigned char tag) {
  switch (tag) {
  case T_NIL:
  case T_FALSE:
  case T_TRUE:
    return 1;
  case T_INT8:
    return 2;
  case T_INT:
  case T_FLOAT:
    return 1 + sizeof(lua_Integer);
  case T_ATOM:
    return 1 + sizeof(uint32_t);
  case T_PID:
    return 1 + sizeof(mb_pid_t);
  case T_REF:
    return 1 + sizeof(uint64_t);
  default:
    return 0;
  }
}

void mb__msg_decode_field(lua_State *L, const mb_msg_t *m, lua_Integer i) {
  uint64_t n;
  const unsigned char *p = first_element(m, &n), *end = m->data + m->len;
  /* Past the fixed-size scalars before it, in the array part, when no
   * shared table can point back before it. */
  for (lua_Integer j = 1; p != NULL && !m->has_refs && j <= (lua_Integer)n;
       j++) {
    if (j == i) {
      decode_from(L, m, p);
      return;
    }
    size_t size = scalar_size(*p);
    if (size == 0 || (size_t)(end - p) < size)
      break;
    p += size;
  }
  mb_msg_decode(L, m);
  lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
}

bool mb__msg_call_fields(lua_State *L, const mb_msg_t *m,
                         const mb__atom_t *label) {
  uint64_t n;
  const unsigned char *p = first_element(m, &n);
  /* The tuple's own table is never pointed back to by a shared one; with
   * shared tables, the two fields are decoded with the whole message. */
  if (p == NULL || m->has_refs || m->data[1] != MB_KIND_TUPLE || n != 3 ||
      m->data + m->len - p < (long)scalar_size(T_ATOM) || p[0] != T_ATOM ||
      memcmp(p + 1, &label->index, sizeof label->index) != 0)
    return false;
  p = decode_from(L, m, p + scalar_size(T_ATOM));
  decode_from(L, m, p);
  return true;
}

/* ---- building tuples in C ----
 * Signals turn into messages such as {'EXIT', Pid, Reason} without a Lua
 * state: the tuple is written directly, with the reason spliced in as it
 * was encoded by the process that died. */

static int raw_put(mb_msg_t **m, const void *p, size_t n) {
  return mb__msg_append(m, p, n);
}

mb_msg_t *mb__tuple_new(unsigned n) {
  mb_msg_t *m = mb__msg_new(64);
  unsigned char head[3] = {T_TABLE, MB_KIND_TUPLE, (unsigned char)n};
  if (m == NULL || n > 127 || raw_put(&m, head, sizeof head)) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

int mb__tuple_open(mb_msg_t **m, unsigned n) {
  unsigned char head[3] = {T_TABLE, MB_KIND_TUPLE, (unsigned char)n};
  return n > 127 || raw_put(m, head, sizeof head);
}

int mb__tuple_lua(lua_State *L, int idx, const char *root, mb_msg_t **m,
                  char *err, size_t errlen) {
  return encode_into(L, idx, root, m, err, errlen);
}

/* A scalar of n bytes (n <= 8) after its tag, in one append. */
static int put_tagged(mb_msg_t **m, unsigned char tag, const void *p,
                      size_t n) {
  unsigned char b[9] = {tag};
  memcpy(b + 1, p, n);
  return raw_put(m, b, n + 1);
}

int mb__tuple_atom(mb_msg_t **m, const mb__atom_t *a) {
  return put_tagged(m, T_ATOM, &a->index, sizeof a->index);
}

int mb__tuple_pid(mb_msg_t **m, mb_pid_t pid) {
  return put_tagged(m, T_PID, &pid, sizeof pid);
}

int mb__tuple_ref(mb_msg_t **m, uint64_t ref) {
  return put_tagged(m, T_REF, &ref, sizeof ref);
}

int mb__tuple_int(mb_msg_t **m, lua_Integer v) {
  return put_tagged(m, T_INT, &v, sizeof v);
}

int mb__tuple_str(mb_msg_t **m, const void *p, size_t len) {
  enc_t e;
  e.m = *m;
  int r = put1(&e, T_STR) || put_varint(&e, len) || put(&e, p, len);
  *m = e.m;
  return r;
}

int mb__tuple_value(mb_msg_t **m, const mb_msg_t *v) {
  (*m)->has_refs |= v->has_refs;
  return raw_put(m, v->data, v->len);
}

/* Close a tuple of n elements: its "n" field. */
int mb__tuple_end(mb_msg_t **m, unsigned n) {
  uint32_t nhash = 1;
  unsigned char tail[sizeof nhash + 5] = {
      0, 0, 0, 0, T_STR, 1, 'n', T_INT8, (unsigned char)n};
  memcpy(tail, &nhash, sizeof nhash);
  return raw_put(m, tail, sizeof tail);
}

mb_msg_t *mb__msg_atom(const mb__atom_t *a) {
  mb_msg_t *m = mb__msg_new(8);
  if (m != NULL && mb__tuple_atom(&m, a)) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

mb_msg_t *mb__msg_dup(const mb_msg_t *m) {
  mb_msg_t *c = mb__msg_new(m->len ? m->len : 1);
  if (c != NULL) {
    memcpy(c->data, m->data, m->len);
    c->len = m->len;
    c->has_refs = m->has_refs;
  }
  return c;
}

bool mb__msg_is_atom(const mb_msg_t *m, const mb__atom_t *a) {
  return m->len == 1 + sizeof a->index && m->data[0] == T_ATOM &&
         memcmp(m->data + 1, &a->index, sizeof a->index) == 0;
}
