/* How Erlang-like values look in Lua.
 *
 *  - atom:  a light userdata holding (index << 1) | 1, so equal atoms are
 *           equal Lua values and work as table keys with no allocation;
 *  - pid, ref: full userdata, interned per state in a weak table so that
 *           equal pids are the same Lua value (== and table keys work);
 *  - tuple, list, map: tables carrying a marker metatable; a tuple and a
 *           list also carry their length in field `n` (as table.pack does),
 *           so nil elements survive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "etf.h"
#include "internal.h"

static const char cache_key = 'c';
static _Atomic uint64_t next_ref = 1;

uint64_t mb__ref_next(void) { return atomic_fetch_add(&next_ref, 1); }

/* ---- atoms ---- */

const mb__atom_t *mb__to_atom(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TLIGHTUSERDATA)
    return NULL;
  uintptr_t v = (uintptr_t)lua_touserdata(L, idx);
  if ((v & 1) == 0)
    return NULL;
  return mb__atom_at((uint32_t)(v >> 1));
}

static int atom_tostring(lua_State *L) {
  const mb__atom_t *a = mb__to_atom(L, 1);
  if (a == NULL)
    return luaL_error(L, "light userdata is not an atom");
  lua_pushlstring(L, a->name, a->len);
  return 1;
}

static int atom_lt(lua_State *L) {
  const mb__atom_t *a = mb__to_atom(L, 1), *b = mb__to_atom(L, 2);
  if (a == NULL || b == NULL)
    return luaL_error(L, "attempt to compare an atom with another value");
  int c = strcmp(a->name, b->name);
  lua_pushboolean(L, c < 0);
  return 1;
}

static int atom_le(lua_State *L) {
  const mb__atom_t *a = mb__to_atom(L, 1), *b = mb__to_atom(L, 2);
  if (a == NULL || b == NULL)
    return luaL_error(L, "attempt to compare an atom with another value");
  lua_pushboolean(L, strcmp(a->name, b->name) <= 0);
  return 1;
}

void mb__push_atom(lua_State *L, const mb__atom_t *a) {
  lua_pushlightuserdata(L, (void *)(((uintptr_t)a->index << 1) | 1));
  if (lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  /* First atom in this state: give light userdata the atom metatable. */
  static const luaL_Reg mt[] = {{"__tostring", atom_tostring},
                                {"__lt", atom_lt},
                                {"__le", atom_le},
                                {NULL, NULL}};
  luaL_newlib(L, mt);
  lua_pushliteral(L, "atom");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
}

/* ---- pids and refs ---- */

void mb__push_weak_table(lua_State *L, const void *key, const char *mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

static void fill_mt(lua_State *L, mb__mt_t k);

/* Push this state's cache of interned pids and refs, weak-valued so that
 * a pid no longer used goes.  In a process's state the cache's metatable
 * is the state's pid metatable itself (its __mode is no metamethod of a
 * userdata), with the ref metatable in its slot 1 (see set_mt): they live
 * as long as the cache, the state needs no registry ref for them, and a
 * spawned process, which makes a pid first thing, makes one table fewer.
 * The cache gets that metatable before its __gc is set, so the cache is
 * not marked for finalization (Lua marks an object only if its metatable
 * has __gc when it is set).  A process's state keeps the cache as the
 * registry's metatable, not under a key of the registry, whose hash part
 * a new state makes empty: the key would cost it a rehash, and each
 * lookup a hash lookup.  The cache's keys are integers and binary pid
 * and ref encodings, never a metamethod's name, so the registry's own
 * (non-raw) lookups are unchanged; other states (the launcher's, a host
 * Lua's) keep it under a key. */
static void push_cache(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  if (p != NULL) {
    if (lua_getmetatable(L, LUA_REGISTRYINDEX))
      return;
  } else {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cache_key) == LUA_TTABLE)
      return;
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, p != NULL ? 6 : 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_pushvalue(L, -1);
  lua_setmetatable(L, -3);
  if (p != NULL) {
    fill_mt(L, MB__MT_PID);
    p->mt_ptr[MB__MT_PID] = lua_topointer(L, -1);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  if (p != NULL)
    lua_setmetatable(L, LUA_REGISTRYINDEX);
  else
    lua_rawsetp(L, LUA_REGISTRYINDEX, &cache_key);
}

/* A blank state made ahead of demand gets its cache and pid metatable
 * then, in idle time: nearly every process makes a pid first thing. */
static int prepare(lua_State *L) {
  push_cache(L);
  return 0;
}

void mb__value_prepare(lua_State *L) {
  lua_pushcfunction(L, prepare);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK)
    lua_pop(L, 1); /* out of memory: the process makes them when it needs */
}

/* The metamethods tell pids and refs by address (mb__to_pid): a
 * process's state does not register their metatables by name. */
static mb__lpid_t *check_pid(lua_State *L, int idx) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p == NULL)
    luaL_typeerror(L, idx, MB_PID_MT);
  return p;
}

static mb__lref_t *check_ref(lua_State *L, int idx) {
  mb__lref_t *r = mb__to_ref(L, idx);
  if (r == NULL)
    luaL_typeerror(L, idx, MB_REF_MT);
  return r;
}

/* Pids print as Erlang prints them: <Node.ID.Serial>, Node 0 for ours. */
static int pid_tostring(lua_State *L) {
  mb__lpid_t *p = check_pid(L, 1);
  if (p->node == 0)
    lua_pushfstring(L, "<0.%d.%d>", (int)MB_PID_ID(p->id),
                    (int)MB_PID_SERIAL(p->id));
  else
    lua_pushfstring(L, "<%d.%d.%d>", (int)p->node, (int)p->num, (int)p->serial);
  return 1;
}

/* Order: by node, then number (Erlang orders pids of a node by number). */
static int pid_cmp(lua_State *L) {
  mb__lpid_t *a = check_pid(L, 1);
  mb__lpid_t *b = check_pid(L, 2);
  uint64_t ka = a->node ? ((uint64_t)a->serial << 32 | a->num) : a->id;
  uint64_t kb = b->node ? ((uint64_t)b->serial << 32 | b->num) : b->id;
  if (a->node != b->node)
    return a->node < b->node ? -1 : 1;
  return ka < kb ? -1 : ka > kb;
}

static int pid_lt(lua_State *L) {
  lua_pushboolean(L, pid_cmp(L) < 0);
  return 1;
}

static int pid_le(lua_State *L) {
  lua_pushboolean(L, pid_cmp(L) <= 0);
  return 1;
}

static int ref_tostring(lua_State *L) {
  mb__lref_t *r = check_ref(L, 1);
  if (r->node == 0) {
    lua_pushfstring(L, "#Ref<0.%d.%d.0>", (int)(r->id >> 32),
                    (int)(r->id & 0xffffffffu));
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "#Ref<%d", (int)r->node);
  luaL_addvalue(&b);
  for (uint32_t i = r->len; i > 0; i--) {
    lua_pushfstring(L, ".%I", (lua_Integer)r->words[i - 1]);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '>');
  luaL_pushresult(&b);
  return 1;
}

static int ref_cmp(lua_State *L) {
  mb__lref_t *a = check_ref(L, 1);
  mb__lref_t *b = check_ref(L, 2);
  if (a->node != b->node)
    return a->node < b->node ? -1 : 1;
  if (a->node == 0)
    return a->id < b->id ? -1 : a->id > b->id;
  return memcmp(a->words, b->words, sizeof a->words);
}

static int ref_lt(lua_State *L) {
  lua_pushboolean(L, ref_cmp(L) < 0);
  return 1;
}

static int ref_le(lua_State *L) {
  lua_pushboolean(L, ref_cmp(L) <= 0);
  return 1;
}

/* A pid keeps the process it last sent to, so that sending again skips
 * the process table; the reference goes when the pid is collected. */
static int pid_gc(lua_State *L) {
  mb__lpid_t *p = lua_touserdata(L, 1);
  if (p == NULL) /* not a pid: see push_cache */
    return 0;
  if (p->proc != NULL)
    mb__proc_unref(p->proc);
  p->proc = NULL;
  return 0;
}

/* ---- metatables, known by address ----
 *
 * Telling a tuple or a pid by its metatable the auxiliary library's way
 * (luaL_testudata, luaL_getmetatable) looks its name up in the registry:
 * a string to intern, a hash lookup.  A message in and out costs dozens
 * of such tests, so each process's state remembers its metatables once
 * met (mb_proc_t's mt_ref and mt_ptr): by address to recognise them, by a
 * registry ref to push them.  States that are not a process's (the
 * launcher's, a host Lua's) take the named way. */

static const char *const mt_names[MB__MT_COUNT] = {
    NULL, MB_TUPLE_MT, MB_LIST_MT, MB_MAP_MT, MB_PID_MT, MB_REF_MT};

/* Remember the metatable on top as this state's metatable `k`. */
static void mt_remember(lua_State *L, mb_proc_t *p, mb__mt_t k) {
  if (p == NULL || p->mt_ref[k] != 0)
    return;
  lua_pushvalue(L, -1);
  p->mt_ref[k] = luaL_ref(L, LUA_REGISTRYINDEX);
  p->mt_ptr[k] = lua_topointer(L, -1);
}

/* Push this state's metatable `k`; returns false and pushes nothing if it
 * is not known yet. */
static bool mt_push_known(lua_State *L, mb_proc_t *p, mb__mt_t k) {
  if (p == NULL || p->mt_ref[k] == 0)
    return false;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->mt_ref[k]);
  return true;
}

/* Has the value at idx metatable `k`? */
static bool has_mt(lua_State *L, int idx, mb__mt_t k) {
  mb_proc_t *p = MB_PROC(L);
  if (!lua_getmetatable(L, idx))
    return false;
  bool is;
  /* A process's pid and ref metatables are known by address from the
   * moment they are made (set_mt), never by name: until its first ref, no
   * value of its state is one, and no lookup by name is needed to say so. */
  if (p != NULL && (p->mt_ptr[k] != NULL || k >= MB__MT_PID)) {
    is = lua_topointer(L, -1) == p->mt_ptr[k];
  } else {
    luaL_getmetatable(L, mt_names[k]);
    is = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (is)
      mt_remember(L, p, k);
  }
  lua_pop(L, 1);
  return is;
}

/* Set the fields of the metatable of pids or refs on top. */
static void fill_mt(lua_State *L, mb__mt_t k) {
  bool pid = k == MB__MT_PID;
  if (pid) {
    lua_pushcfunction(L, pid_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pushcfunction(L, pid ? pid_tostring : ref_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, pid ? pid_lt : ref_lt);
  lua_setfield(L, -2, "__lt");
  lua_pushcfunction(L, pid ? pid_le : ref_le);
  lua_setfield(L, -2, "__le");
  lua_pushstring(L, mt_names[k]);
  lua_setfield(L, -2, "__name");
}

/* Make the metatable of pids or refs, sized for its fields at once
 * (luaL_newmetatable's table would grow twice as they are set), and, in a
 * state that is not a process's, register it by name.  A process's state
 * keeps them with its cache (push_cache) and knows them by address. */
static void new_mt(lua_State *L, mb_proc_t *p, mb__mt_t k) {
  lua_createtable(L, 0, k == MB__MT_PID ? 5 : 4);
  fill_mt(L, k);
  if (p == NULL) {
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, mt_names[k]);
  }
}

/* Give the value on top, with the cache (push_cache) under it, this
 * state's metatable `k` (pid or ref). */
static void set_mt(lua_State *L, mb__mt_t k) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL) {
    if (luaL_getmetatable(L, mt_names[k]) != LUA_TTABLE) {
      lua_pop(L, 1);
      new_mt(L, NULL, k);
    }
    lua_setmetatable(L, -2);
    return;
  }
  lua_getmetatable(L, -2); /* the pid metatable */
  if (k == MB__MT_REF && lua_rawgeti(L, -1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    new_mt(L, p, k);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, 1);
    p->mt_ptr[k] = lua_topointer(L, -1);
  }
  if (k == MB__MT_PID) {
    lua_setmetatable(L, -2);
  } else {
    lua_setmetatable(L, -3);
    lua_pop(L, 1);
  }
}

void mb__push_pid(lua_State *L, mb_pid_t pid) {
  uint32_t node, creation, num, serial;
  if (MB_PID_IS_REMOTE(pid) &&
      mb__remote_pid(pid, &node, &creation, &num, &serial)) {
    mb__push_remote_pid(L, node, creation, num, serial);
    return;
  }
  if (MB_PID_IS_REMOTE(pid) && mb__remote_name(pid, &node, &num)) {
    /* {Name, Node}, as a monitor by name shows its target */
    lua_createtable(L, 2, 1);
    mb__push_atom(L, mb__atom_at(num));
    lua_rawseti(L, -2, 1);
    mb__push_atom(L, mb__atom_at(node - 1));
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, 2);
    lua_setfield(L, -2, "n");
    mb__push_kind_mt(L, MB_KIND_TUPLE);
    lua_setmetatable(L, -2);
    return;
  }
  push_cache(L);
  if (lua_rawgeti(L, -1, (lua_Integer)pid) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  mb__lpid_t *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->id = pid;
  set_mt(L, MB__MT_PID);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, (lua_Integer)pid);
  lua_remove(L, -2);
}

void mb__push_ref(lua_State *L, uint64_t ref) {
  uint32_t node, creation, len, words[MB_REF_MAXWORDS];
  if (MB_PID_IS_REMOTE(ref) &&
      mb__remote_ref(ref, &node, &creation, &len, words)) {
    mb__push_remote_ref(L, node, creation, len, words);
    return;
  }
  /* Pids use integer keys in the cache; refs use negative ones. */
  lua_Integer key = -(lua_Integer)(ref & 0x7fffffffffffffffULL) - 1;
  push_cache(L);
  if (lua_rawgeti(L, -1, key) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  mb__lref_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->id = ref;
  set_mt(L, MB__MT_REF);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, key);
  lua_remove(L, -2);
}

/* Another node's pids and refs are interned by a string key. */
static bool push_cached(lua_State *L, const void *key, size_t len) {
  push_cache(L);
  lua_pushlstring(L, key, len);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    lua_remove(L, -2);
    return true;
  }
  lua_pop(L, 1);
  return false;
}

static void cache_top(lua_State *L, const void *key, size_t len) {
  lua_pushlstring(L, key, len);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
}

void mb__push_remote_pid(lua_State *L, uint32_t node, uint32_t creation,
                         uint32_t num, uint32_t serial) {
  uint32_t key[5] = {'p', node, creation, num, serial};
  if (push_cached(L, key, sizeof key))
    return;
  mb__lpid_t *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->node = node;
  p->creation = creation;
  p->num = num;
  p->serial = serial;
  set_mt(L, MB__MT_PID);
  cache_top(L, key, sizeof key);
}

void mb__push_remote_ref(lua_State *L, uint32_t node, uint32_t creation,
                         uint32_t len, const uint32_t *words) {
  uint32_t key[3 + MB_REF_MAXWORDS] = {'r', node, creation};
  if (len > MB_REF_MAXWORDS)
    len = MB_REF_MAXWORDS;
  memcpy(key + 3, words, len * sizeof *words);
  if (push_cached(L, key, sizeof key))
    return;
  mb__lref_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->node = node;
  r->creation = creation;
  r->len = len;
  memcpy(r->words, words, len * sizeof *words);
  set_mt(L, MB__MT_REF);
  cache_top(L, key, sizeof key);
}

/* ---- opaque terms ---- */

/* Decimal digits of a bignum from its SMALL/LARGE_BIG_EXT bytes. */
static void push_bignum_text(lua_State *L, const mb__lterm_t *t) {
  const unsigned char *b = t->bytes;
  size_t n, off;
  if (b[0] == 110) { /* SMALL_BIG_EXT: n:8 sign:8 */
    n = b[1];
    off = 2;
  } else { /* LARGE_BIG_EXT: n:32 sign:8 */
    n = mb__get32(b + 1);
    off = 5;
  }
  int sign = b[off];
  const unsigned char *digits = b + off + 1;
  /* Repeated division by 10 of the little-endian base-256 magnitude. */
  unsigned char *mag = malloc(n ? n : 1);
  char *out = malloc(n * 3 + 3);
  if (mag == NULL || out == NULL) {
    free(mag);
    free(out);
    luaL_error(L, "out of memory");
  }
  memcpy(mag, digits, n);
  size_t len = 0, top = n;
  while (top > 0 && mag[top - 1] == 0)
    top--;
  do {
    unsigned rem = 0;
    for (size_t i = top; i > 0; i--) {
      unsigned cur = rem << 8 | mag[i - 1];
      mag[i - 1] = (unsigned char)(cur / 10);
      rem = cur % 10;
    }
    out[len++] = (char)('0' + rem);
    while (top > 0 && mag[top - 1] == 0)
      top--;
  } while (top > 0);
  if (sign)
    out[len++] = '-';
  for (size_t i = 0; i < len / 2; i++) {
    char c = out[i];
    out[i] = out[len - 1 - i];
    out[len - 1 - i] = c;
  }
  lua_pushlstring(L, out, len);
  free(mag);
  free(out);
}

static int term_tostring(lua_State *L) {
  mb__lterm_t *t = luaL_checkudata(L, 1, MB_TERM_MT);
  switch (t->kind) {
  case MB_TERM_BIGNUM:
    push_bignum_text(L, t);
    return 1;
  case MB_TERM_BITSTRING:
    lua_pushfstring(L, "<<bitstring of %d bits>>",
                    (int)((t->len > 6 ? (t->len - 6) * 8 : 0) -
                          (t->len > 6 ? 8 - t->bytes[5] : 0)));
    return 1;
  case MB_TERM_FUN:
    lua_pushliteral(L, "#Fun<erlang>");
    return 1;
  case MB_TERM_OTHER: /* an atom prints its name */
    if (t->bytes[0] == MB_ETF_ATOM_UTF8)
      lua_pushlstring(L, (const char *)t->bytes + 3, t->len - 3);
    else
      lua_pushfstring(L, "#Term<%s of %d bytes>",
                      t->bytes[0] == MB_ETF_MAP ? "map" : "term", (int)t->len);
    return 1;
  default:
    lua_pushliteral(L, "#Port<erlang>");
    return 1;
  }
}

static int term_eq(lua_State *L) {
  mb__lterm_t *a = luaL_checkudata(L, 1, MB_TERM_MT);
  mb__lterm_t *b = luaL_checkudata(L, 2, MB_TERM_MT);
  lua_pushboolean(L, a->kind == b->kind && a->len == b->len &&
                         memcmp(a->bytes, b->bytes, a->len) == 0);
  return 1;
}

static int term_kind(lua_State *L) {
  static const char *names[] = {NULL,  "bignum", "bitstring",
                                "fun", "port",   "term"};
  mb__lterm_t *t = luaL_checkudata(L, 1, MB_TERM_MT);
  lua_pushstring(L, names[t->kind]);
  return 1;
}

void mb__push_term(lua_State *L, mb__term_kind_t kind, const void *bytes,
                   size_t len) {
  mb__lterm_t *t = lua_newuserdatauv(L, sizeof *t + len, 0);
  t->kind = (uint8_t)kind;
  t->len = (uint32_t)len;
  memcpy(t->bytes, bytes, len);
  if (luaL_newmetatable(L, MB_TERM_MT)) {
    lua_pushcfunction(L, term_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, term_eq);
    lua_setfield(L, -2, "__eq");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, term_kind);
    lua_setfield(L, -2, "kind");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "term");
    lua_setfield(L, -2, "__name");
  }
  lua_setmetatable(L, -2);
}

mb__lterm_t *mb__to_term(lua_State *L, int idx) {
  return luaL_testudata(L, idx, MB_TERM_MT);
}

/* (lua_touserdata is NULL for what is no userdata; an atom, a light
 * userdata, has a metatable of its own.) */
mb__lpid_t *mb__to_pid(lua_State *L, int idx) {
  void *u = lua_touserdata(L, idx);
  return u != NULL && has_mt(L, idx, MB__MT_PID) ? u : NULL;
}

mb__lref_t *mb__to_ref(lua_State *L, int idx) {
  void *u = lua_touserdata(L, idx);
  return u != NULL && has_mt(L, idx, MB__MT_REF) ? u : NULL;
}

/* ---- tuples, lists, maps ---- */

/* Replace the string on top with its quoted form ("a\"b", controls as
 * \ddd).  Built aside: a luaL_Buffer must not see the stack move. */
static void quote_top(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  char *out = malloc(len * 4 + 3);
  if (out == NULL)
    luaL_error(L, "out of memory");
  size_t k = 0;
  out[k++] = '"';
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[k++] = '\\';
      out[k++] = (char)c;
    } else if (c < 32 || c == 127) {
      k += (size_t)snprintf(out + k, 5, "\\%d", c);
    } else {
      out[k++] = (char)c;
    }
  }
  out[k++] = '"';
  lua_pushlstring(L, out, k);
  free(out);
  lua_remove(L, -2);
}

static int tostring_protected(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

const char *mb__tostring(lua_State *L, int idx, size_t *len) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 3, "tostring");
  lua_pushcfunction(L, tostring_protected);
  lua_pushvalue(L, idx);
  int status = lua_pcall(L, 1, 1, 0);
  if (status != LUA_OK) {
    lua_pop(L, 1);
    lua_pushfstring(L, "<%s %p: __tostring %s>", luaL_typename(L, idx),
                    lua_topointer(L, idx),
                    status == LUA_ERRMEM ? "ran out of memory" : "failed");
  }
  return lua_tolstring(L, -1, len);
}

/* Shallow, Erlang-looking rendering: {a, b} for tuples, [a, b] for lists. */
static int seq_tostring(lua_State *L, char open, char close) {
  luaL_checkstack(L, 8, "tostring");
  lua_getfield(L, 1, "n");
  lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1)
                                       : (lua_Integer)lua_rawlen(L, 1);
  lua_pop(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, open);
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addstring(&b, ", ");
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) == LUA_TSTRING)
      quote_top(L);
    else {
      mb__tostring(L, -1, NULL);
      lua_remove(L, -2);
    }
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, close);
  luaL_pushresult(&b);
  return 1;
}

static int tuple_tostring(lua_State *L) { return seq_tostring(L, '{', '}'); }
static int list_tostring(lua_State *L) { return seq_tostring(L, '[', ']'); }

void mb__push_kind_mt(lua_State *L, mb__table_kind_t kind) {
  static const char *short_names[] = {NULL, "tuple", "list", "map"};
  mb_proc_t *p = MB_PROC(L);
  if (mt_push_known(L, p, (mb__mt_t)kind))
    return;
  if (luaL_newmetatable(L, mt_names[kind])) {
    lua_pushstring(L, short_names[kind]);
    lua_setfield(L, -2, "__name");
    if (kind == MB_KIND_TUPLE) {
      lua_pushcfunction(L, tuple_tostring);
      lua_setfield(L, -2, "__tostring");
    } else if (kind == MB_KIND_LIST) {
      lua_pushcfunction(L, list_tostring);
      lua_setfield(L, -2, "__tostring");
    }
  }
  mt_remember(L, p, (mb__mt_t)kind);
}

mb__table_kind_t mb__table_kind(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx))
    return MB_KIND_PLAIN;
  mb_proc_t *p = MB_PROC(L);
  const void *mt = lua_topointer(L, -1);
  mb__table_kind_t kind = MB_KIND_PLAIN;
  for (int k = MB_KIND_TUPLE; k <= MB_KIND_MAP && kind == MB_KIND_PLAIN; k++) {
    if (p != NULL && p->mt_ptr[k] != NULL) {
      if (mt == p->mt_ptr[k])
        kind = (mb__table_kind_t)k;
      continue;
    }
    luaL_getmetatable(L, mt_names[k]);
    if (lua_rawequal(L, -1, -2)) {
      kind = (mb__table_kind_t)k;
      mt_remember(L, p, (mb__mt_t)k);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return kind;
}

/* ---- pids as the core addresses them ---- */

mb_pid_t mb__pid_key(const mb__lpid_t *p) {
  if (p->node == 0)
    return p->id;
  return mb__remote_pid_key(p->node, p->creation, p->num, p->serial);
}

/* {Name, Node} as a table or tuple of two strings or atoms, or nil. */
static const mb__atom_t *name_part(lua_State *L, int idx, int i) {
  const mb__atom_t *a = NULL;
  lua_rawgeti(L, idx, i);
  a = mb__to_atom(L, -1);
  if (a == NULL && lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int err = mb__atom_intern(s, len, &a);
    if (err == MB_ELIMIT)
      luaL_error(L, "the atom table is full (%d atoms: system_limit)",
                 (int)MB_ATOM_MAX);
    if (err != 0)
      a = NULL;
  }
  lua_pop(L, 1);
  return a;
}

bool mb__to_remote_name(lua_State *L, int idx, const mb__atom_t **name,
                        const mb__atom_t **node) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return false;
  *name = name_part(L, idx, 1);
  *node = name_part(L, idx, 2);
  if (*name == NULL || *node == NULL)
    return false;
  /* Node names go on as C strings (to EPMD, to the resolver). */
  if (memchr((*node)->name, '\0', (*node)->len) != NULL)
    luaL_argerror(L, idx, "node name with a NUL byte");
  return true;
}

/* ---- paths inside values, for errors ---- */

void mb__path_reset(mb__path_t *p) {
  p->pos = sizeof p->buf - 1;
  p->buf[p->pos] = '\0';
}

/* When the path no longer fits, the part nearest the root is kept, since
 * it says where to look: the innermost part gives way, marked "...". */
void mb__path_prepend(mb__path_t *p, const char *seg) {
  size_t n = strlen(seg), cap = sizeof p->buf - 1;
  if (n <= p->pos) {
    p->pos -= n;
    memcpy(p->buf + p->pos, seg, n);
    return;
  }
  if (n + 3 > cap)
    return;
  const char *old = p->buf + p->pos;
  size_t len = strlen(old);
  if (len >= 3 && strcmp(old + len - 3, "...") == 0)
    len -= 3;
  size_t keep = len < cap - n - 3 ? len : cap - n - 3;
  memmove(p->buf + n, old, keep);
  memcpy(p->buf, seg, n);
  memcpy(p->buf + n + keep, "...", 4);
  p->pos = 0;
}

static bool is_identifier(const char *s, size_t len) {
  if (len == 0 || len >= 64 || (s[0] >= '0' && s[0] <= '9'))
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_'))
      return false;
  }
  return true;
}

void mb__path_key(mb__path_t *p, lua_State *L, int kidx) {
  char seg[96];
  size_t len;
  const mb__atom_t *a;
  if (lua_type(L, kidx) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, kidx, &len);
    if (is_identifier(s, len))
      snprintf(seg, sizeof seg, ".%s", s);
    else
      snprintf(seg, sizeof seg, "[\"%.60s\"]", s);
  } else if (lua_isinteger(L, kidx)) {
    snprintf(seg, sizeof seg, "[%lld]", (long long)lua_tointeger(L, kidx));
  } else if (lua_type(L, kidx) == LUA_TNUMBER) {
    snprintf(seg, sizeof seg, "[%g]", (double)lua_tonumber(L, kidx));
  } else if ((a = mb__to_atom(L, kidx)) != NULL) {
    snprintf(seg, sizeof seg, "[%.60s]", a->name);
  } else {
    snprintf(seg, sizeof seg, "[<%s key>]", luaL_typename(L, kidx));
  }
  mb__path_prepend(p, seg);
}

void mb__path_index(mb__path_t *p, lua_Integer i) {
  char seg[32];
  snprintf(seg, sizeof seg, "[%lld]", (long long)i);
  mb__path_prepend(p, seg);
}

/* ---- the Lua API's value helpers and entry points ---- */

mb_msg_t *mb_lua_encode(lua_State *L, int idx, const char *root,
                        const char *fname) {
  char err[600];
  mb_msg_t *m;
  int r = mb__msg_encode(L, idx, root, &m, err, sizeof err);
  if (r != 0)
    mb_lua_error(L, fname, r, r == MB_EBADTERM ? err : NULL);
  return m;
}

mb_msg_t *mb_lua_encode_args(lua_State *L, int first, int n, const char *root,
                             const char *fname) {
  char err[600];
  mb_msg_t *m;
  int r = mb__msg_encode_seq(L, first, n, root, &m, err, sizeof err);
  if (r != 0)
    mb_lua_error(L, fname, r, r == MB_EBADTERM ? err : NULL);
  return m;
}

void mb_lua_push_pid(lua_State *L, mb_pid_t pid) { mb__push_pid(L, pid); }

mb_pid_t mb_lua_check_pid(lua_State *L, int idx) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p == NULL)
    luaL_typeerror(L, idx, "pid");
  return mb__pid_key(p);
}

void mb_lua_push_ref(lua_State *L, uint64_t ref) { mb__push_ref(L, ref); }

int mb_lua_is_tuple(lua_State *L, int idx) {
  return mb__table_kind(L, idx) == MB_KIND_TUPLE;
}

int mb__atom_table_full(lua_State *L, const char *fname) {
  return luaL_error(L, "%s: the atom table is full (%d atoms: system_limit)",
                    fname, (int)MB_ATOM_MAX);
}

const mb__atom_t *mb__check_name(lua_State *L, int idx) {
  const mb__atom_t *a = mb__to_atom(L, idx);
  if (a != NULL)
    return a;
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_typeerror(L, idx, "name (string or atom)");
  const char *s = lua_tolstring(L, idx, &len);
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ELIMIT)
    mb__atom_table_full(L, "name");
  if (err != 0)
    luaL_argerror(L, idx, "name longer than 255 bytes");
  return a;
}

const char *mb_lua_tostring(lua_State *L, int idx, size_t *len) {
  return mb__tostring(L, idx, len);
}

int mb_lua_make_ref(lua_State *L) {
  mb__push_ref(L, mb__ref_next());
  return 1;
}

int mb_lua_atom(lua_State *L) {
  size_t len;
  if (lua_istable(L, 1))
    lua_remove(L, 1); /* called as atom(name) on the atom table */
  const char *s = luaL_checklstring(L, 1, &len);
  const mb__atom_t *a;
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ETOOBIG)
    return luaL_argerror(L, 1, "atom name longer than 255 bytes");
  if (err == MB_ELIMIT)
    return mb__atom_table_full(L, "atom");
  if (err)
    mb_lua_error(L, "atom", err, NULL);
  mb__push_atom(L, a);
  return 1;
}

static int make_seq(lua_State *L, mb__table_kind_t kind) {
  int n = lua_gettop(L);
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  mb__push_kind_mt(L, kind);
  lua_setmetatable(L, -2);
  return 1;
}

int mb_lua_tuple(lua_State *L) { return make_seq(L, MB_KIND_TUPLE); }
int mb_lua_list(lua_State *L) { return make_seq(L, MB_KIND_LIST); }

int mb_lua_map(lua_State *L) {
  if (lua_isnoneornil(L, 1))
    lua_newtable(L);
  else
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  mb__push_kind_mt(L, MB_KIND_MAP);
  lua_setmetatable(L, 1);
  return 1;
}

int mb_lua_typeof(lua_State *L) {
  luaL_checkany(L, 1);
  const char *t = luaL_typename(L, 1);
  if (mb__to_atom(L, 1))
    t = "atom";
  else if (mb__to_pid(L, 1))
    t = "pid";
  else if (mb__to_ref(L, 1))
    t = "ref";
  else if (mb__to_term(L, 1)) {
    static const char *kinds[] = {"term", "bignum", "bitstring",
                                  "fun",  "port",   "term"};
    t = kinds[mb__to_term(L, 1)->kind];
  } else if (lua_istable(L, 1)) {
    static const char *kinds[] = {"table", "tuple", "list", "map"};
    t = kinds[mb__table_kind(L, 1)];
  }
  lua_pushstring(L, t);
  return 1;
}
