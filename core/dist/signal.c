/* Signals between nodes: what distribution frames carry (messages, links,
 * monitors, exits, spawn requests), both ways, and what happens to them
 * when a connection goes down.
 *
 * Incoming frames are read on the loop thread with the ETF reader and
 * turned into the signals local processes already understand (a remote pid
 * becomes an interned key, see remote.c); messages stay in ETF and are
 * decoded by the receiving process.  Outgoing signals to a remote key come
 * here from mb__signal on any thread and leave as frames.
 *
 * For `noconnection`, each node keeps the links and monitors that cross to
 * it (under `lock`). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "dist_internal.h"

enum {
  OP_LINK = 1,
  OP_SEND = 2,
  OP_EXIT = 3,
  OP_UNLINK = 4,
  OP_NODE_LINK = 5,
  OP_REG_SEND = 6,
  OP_GROUP_LEADER = 7,
  OP_EXIT2 = 8,
  OP_SEND_TT = 12,
  OP_EXIT_TT = 13,
  OP_REG_SEND_TT = 16,
  OP_EXIT2_TT = 18,
  OP_MONITOR_P = 19,
  OP_DEMONITOR_P = 20,
  OP_MONITOR_P_EXIT = 21,
  OP_SEND_SENDER = 22,
  OP_SEND_SENDER_TT = 23,
  OP_PAYLOAD_EXIT = 24,
  OP_PAYLOAD_EXIT_TT = 25,
  OP_PAYLOAD_EXIT2 = 26,
  OP_PAYLOAD_EXIT2_TT = 27,
  OP_PAYLOAD_MONITOR_P_EXIT = 28,
  OP_SPAWN_REQUEST = 29,
  OP_SPAWN_REQUEST_TT = 30,
  OP_SPAWN_REPLY = 31,
  OP_SPAWN_REPLY_TT = 32,
  OP_UNLINK_ID = 35,
  OP_UNLINK_ID_ACK = 36
};

typedef struct {
  mb_pid_t local;         /* the process of this node */
  mb_pid_t remote;        /* its peer's key */
  const mb__atom_t *name; /* in-monitors by name: the name watched */
} crossing_t;

/* What crosses to one node. */
typedef struct {
  mb__map_t links;    /* hash of (local, remote) -> crossing_t* */
  mb__map_t out_mon;  /* local ref -> crossing_t*: we watch them */
  mb__map_t in_mon;   /* remote ref key -> crossing_t*: they watch us */
  mb__map_t spawns;   /* local ref -> crossing_t*: spawn requests waiting */
  mb__map_t watchers; /* local pid -> count: monitor_node(Node) */
  mb__map_t waiting;  /* local ref -> pid: node_watch, told once */
} node_t;

static uv_mutex_t lock = MB__MUTEX_INIT;
static mb__map_t nodes;     /* node atom index + 1 -> node_t* */
static mb__map_t all_watch; /* local pid -> count: monitor_nodes */
static _Atomic uint64_t next_unlink_id = 1;

/* Call with lock held. */
static node_t *node_of(const mb__atom_t *a, bool create) {
  node_t *n = mb__map_get(&nodes, (uint64_t)a->index + 1);
  if (n == NULL && create) {
    n = calloc(1, sizeof *n);
    if (n != NULL && mb__map_put(&nodes, (uint64_t)a->index + 1, n) != 0) {
      free(n);
      n = NULL;
    }
  }
  return n;
}

static uint64_t pair_key(mb_pid_t local, mb_pid_t remote) {
  uint64_t h = local * 0x9E3779B97F4A7C15ULL ^ remote;
  return h ? h : 1;
}

static void track(mb__map_t *m, uint64_t key, mb_pid_t local, mb_pid_t remote,
                  const mb__atom_t *name) {
  crossing_t *c = mb__map_get(m, key);
  if (c == NULL) {
    c = malloc(sizeof *c);
    if (c == NULL || mb__map_put(m, key, c) != 0) {
      free(c);
      return;
    }
  }
  c->local = local;
  c->remote = remote;
  c->name = name;
}

static crossing_t *untrack(mb__map_t *m, uint64_t key) {
  return mb__map_del(m, key);
}

/* The crossing tables of one node, by name, for the helpers below. */
typedef enum { T_LINKS, T_OUT_MON, T_IN_MON, T_SPAWNS } table_id_t;

static mb__map_t *table_of(node_t *n, table_id_t t) {
  switch (t) {
  case T_LINKS:
    return &n->links;
  case T_OUT_MON:
    return &n->out_mon;
  case T_IN_MON:
    return &n->in_mon;
  default:
    return &n->spawns;
  }
}

/* Note a crossing with `node` in one of its tables, under the lock. */
static void cross_track(const mb__atom_t *node, table_id_t t, uint64_t key,
                        mb_pid_t local, mb_pid_t remote,
                        const mb__atom_t *name) {
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, true);
  if (n)
    track(table_of(n, t), key, local, remote, name);
  uv_mutex_unlock(&lock);
}

/* Forget a crossing with `node`; returns the name its record held (see
 * crossing_t), or NULL. */
static const mb__atom_t *cross_untrack(const mb__atom_t *node, table_id_t t,
                                       uint64_t key) {
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, false);
  crossing_t *c = n ? untrack(table_of(n, t), key) : NULL;
  const mb__atom_t *name = c ? c->name : NULL;
  free(c);
  uv_mutex_unlock(&lock);
  return name;
}

/* ---- remote keys ---- */

static const mb__atom_t *node_atom(uint32_t node) {
  return mb__atom_at(node - 1);
}

static mb_pid_t key_of_pid(const mb__etf_pid_t *p) {
  mb_pid_t local;
  if (mb__etf_pid_local(p, &local))
    return local;
  return mb__remote_pid_key(p->node->index + 1, p->creation, p->id, p->serial);
}

/* The wire form of a remote key: a pid, or a name on a node. */
static bool wire_pid(mb_pid_t key, mb__etf_pid_t *out, const mb__atom_t **name,
                     const mb__atom_t **node) {
  uint32_t n, creation, num, serial;
  if (mb__remote_name(key, &n, &num)) {
    *node = node_atom(n);
    *name = mb__atom_at(num);
    return *node != NULL && *name != NULL;
  }
  if (!mb__remote_pid(key, &n, &creation, &num, &serial))
    return false;
  *node = node_atom(n);
  *name = NULL;
  out->node = *node;
  out->id = num;
  out->serial = serial;
  out->creation = creation;
  return true;
}

mb_pid_t mb__dist_name_key(const mb__atom_t *name, const mb__atom_t *node) {
  return mb__remote_name_key(node->index + 1, name->index);
}

static bool wire_ref(uint64_t key, mb__etf_ref_t *out) {
  uint32_t n;
  if (!mb__remote_ref(key, &n, &out->creation, &out->len, out->words))
    return false;
  out->node = node_atom(n);
  return true;
}

/* ---- converting payloads (a Lua state per thread does it) ---- */

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *L) { lua_close(L); }
static void scratch_init(void) {
  pthread_key_create(&scratch_key, scratch_free);
}

/* A Lua state of the calling thread's own, closed when the thread ends. */
static lua_State *scratch_state(void) {
  pthread_once(&scratch_once, scratch_init);
  lua_State *L = pthread_getspecific(scratch_key);
  if (L == NULL) {
    L = luaL_newstate();
    pthread_setspecific(scratch_key, L);
  }
  return L;
}

static int decode_msg(lua_State *L) {
  mb_msg_decode(L, lua_touserdata(L, 1));
  return 1;
}

/* Our message format -> a term appended to the frame (for reasons). */
static int write_local_value(mb_msg_t **frame, const mb_msg_t *v, int elem) {
  if (v->flags & MB_MSGF_ETF) {
    if (elem == 0)
      return mb__etf_write_raw(frame, v->data + 1, v->len - 1);
  }
  lua_State *L = scratch_state();
  int top = lua_gettop(L);
  lua_pushcfunction(L, decode_msg);
  lua_pushlightuserdata(L, (void *)v);
  int err = lua_pcall(L, 1, 1, 0) == LUA_OK ? 0 : MB_EBADTERM;
  if (err == 0 && elem > 0)
    lua_rawgeti(L, -1, elem);
  if (err == 0) {
    char why[200];
    if (mb__etf_write_value(frame, L, -1, "reason", why, sizeof why) != 0) {
      /* A reason Erlang cannot hold (a function...): send its text. */
      lua_settop(L, top);
      lua_pushstring(L, why);
      err = mb__etf_write_value(frame, L, -1, "reason", NULL, 0);
    }
  }
  lua_settop(L, top);
  return err;
}

/* A term read off the wire -> our message format (for exit reasons, which
 * the core splices into {'EXIT', Pid, Reason}). */
static mb_msg_t *local_from_wire(const unsigned char *p, size_t n) {
  lua_State *L = scratch_state();
  int top = lua_gettop(L);
  unsigned char *buf = malloc(n + 1);
  if (buf == NULL)
    return NULL;
  buf[0] = MB_ETF_VERSION;
  memcpy(buf + 1, p, n);
  mb_msg_t *m = NULL;
  if (mb__etf_decode(L, buf, n + 1, NULL, 0) == 0)
    mb__msg_encode(L, -1, "reason", &m, NULL, 0);
  free(buf);
  lua_settop(L, top);
  return m;
}

/* A whole term (from a 131) as a message for a process to decode. */
static mb_msg_t *etf_message(const unsigned char *p, size_t n) {
  mb_msg_t *m = mb__msg_new(n + 1);
  if (m == NULL)
    return NULL;
  m->data[0] = MB_ETF_VERSION;
  memcpy(m->data + 1, p, n);
  m->len = n + 1;
  m->flags |= MB_MSGF_ETF;
  return m;
}

/* ---- writing terms ----
 * A frame or message being written keeps one sticky error, as Lua's
 * ldump.c keeps one status for a whole dump: after the first failure
 * every put does nothing, and the writer's owner looks once, at the end. */

typedef struct {
  mb_msg_t *m;
  int err;
} writer_t;

static void w_begin(writer_t *w, size_t cap) {
  w->m = mb__msg_new(cap);
  w->err = w->m ? 0 : MB_ENOMEM;
}

/* The message written (an ETF value, as processes take it), or NULL. */
static mb_msg_t *w_end(writer_t *w) {
  if (w->err) {
    mb_msg_free(w->m);
    return NULL;
  }
  w->m->flags |= MB_MSGF_ETF;
  return w->m;
}

static void w_version(writer_t *w) {
  if (!w->err)
    w->err = mb__etf_write_version(&w->m);
}

static void w_tuple(writer_t *w, uint32_t arity) {
  if (!w->err)
    w->err = mb__etf_write_tuple(&w->m, arity);
}

static void w_int(writer_t *w, int64_t v) {
  if (!w->err)
    w->err = mb__etf_write_int(&w->m, v);
}

static void w_atom(writer_t *w, const mb__atom_t *a) {
  if (!w->err)
    w->err = mb__etf_write_atom(&w->m, a);
}

static void w_raw(writer_t *w, const void *bytes, size_t len) {
  if (!w->err)
    w->err = mb__etf_write_raw(&w->m, bytes, len);
}

/* A pid as it came off the wire. */
static void w_wire_pid(writer_t *w, const mb__etf_pid_t *pid) {
  if (!w->err)
    w->err = mb__etf_write_pid(&w->m, pid);
}

static void w_wire_ref(writer_t *w, const mb__etf_ref_t *ref) {
  if (!w->err)
    w->err = mb__etf_write_ref(&w->m, ref);
}

/* A pid as the core holds it: this node's, another's key, or a name on
 * another node (written as the name's atom). */
static void w_pid(writer_t *w, mb_pid_t pid) {
  mb__etf_pid_t wp;
  const mb__atom_t *name, *node;
  if (w->err)
    return;
  if (!MB_PID_IS_REMOTE(pid))
    w->err = mb__etf_write_local_pid(&w->m, pid);
  else if (!wire_pid(pid, &wp, &name, &node))
    w->err = MB_EINVAL;
  else
    w->err =
        name ? mb__etf_write_atom(&w->m, name) : mb__etf_write_pid(&w->m, &wp);
}

static void w_ref(writer_t *w, uint64_t ref) {
  mb__etf_ref_t wr;
  if (w->err)
    return;
  if (!MB_PID_IS_REMOTE(ref))
    w->err = mb__etf_write_local_ref(&w->m, ref);
  else if (!wire_ref(ref, &wr))
    w->err = MB_EINVAL;
  else
    w->err = mb__etf_write_ref(&w->m, &wr);
}

/* Element `elem` (0: all) of a value in our message format. */
static void w_value(writer_t *w, const mb_msg_t *v, int elem) {
  if (!w->err)
    w->err = write_local_value(&w->m, v, elem);
}

/* ---- frames out ---- */

/* A pass-through frame: its length (set by frame_send), 'p', then the
 * control tuple, whose elements the caller writes. */
static void frame_begin(writer_t *w, uint32_t arity) {
  static const unsigned char head[5] = {0, 0, 0, 0, 'p'};
  w_begin(w, 128);
  w_raw(w, head, sizeof head);
  w_version(w);
  w_tuple(w, arity);
}

/* Queue the frame for `node`, or drop it if writing it failed. */
static int frame_send(const mb__atom_t *node, writer_t *w) {
  if (w->err) {
    mb_msg_free(w->m);
    return MB_ENOMEM;
  }
  mb_msg_t *f = w->m;
  mb__put32(f->data, (uint32_t)(f->len - 4));
  int err = mb__dist_queue(node, f->data, f->len);
  mb_msg_free(f);
  return err;
}

static const mb__atom_t *empty_atom(void) { return mb__atoms.empty; }

/* ---- signals out ---- */

static void route_message(const mb__atom_t *node, const mb__atom_t *name,
                          mb_pid_t to, mb_msg_t *m) {
  writer_t w;
  if (name != NULL) { /* {6, From, '', ToName} */
    frame_begin(&w, 4);
    w_int(&w, OP_REG_SEND);
    w_pid(&w, m->from);
    w_atom(&w, empty_atom());
    w_atom(&w, name);
  } else { /* {2, '', To} */
    frame_begin(&w, 3);
    w_int(&w, OP_SEND);
    w_atom(&w, empty_atom());
    w_pid(&w, to);
  }
  if (m->flags & MB_MSGF_ETF) {
    w_raw(&w, m->data, m->len);
  } else {
    w_version(&w);
    w_value(&w, m, 0);
  }
  frame_send(node, &w);
}

/* A local signal addressed to a process of another node. */
int mb__dist_route(mb_pid_t to, mb_msg_t *m) {
  mb__etf_pid_t wp;
  const mb__atom_t *name, *node;
  if (mb__dist_node() == NULL || !wire_pid(to, &wp, &name, &node)) {
    mb_msg_free(m);
    return MB_ENOPROC;
  }
  writer_t w;
  switch ((mb__sig_kind_t)m->kind) {
  case MB_SIG_MSG:
  case MB_SIG_ALIAS:
    route_message(node, name, to, m);
    mb_msg_free(m);
    return 0;
  case MB_SIG_LINK: /* {1, From, To} */
    cross_track(node, T_LINKS, pair_key(m->from, to), m->from, to, NULL);
    frame_begin(&w, 3);
    w_int(&w, OP_LINK);
    w_pid(&w, m->from);
    w_pid(&w, to);
    break;
  case MB_SIG_UNLINK: { /* {35, Id, From, To} */
    cross_untrack(node, T_LINKS, pair_key(m->from, to));
    uint64_t id = atomic_fetch_add(&next_unlink_id, 1);
    frame_begin(&w, 4);
    w_int(&w, OP_UNLINK_ID);
    w_int(&w, (int64_t)id);
    w_pid(&w, m->from);
    w_pid(&w, to);
    break;
  }
  case MB_SIG_EXIT: { /* {24 or 26, From, To} + Reason, or {3 or 8, From, To, Reason} */
    bool linked = (m->flags & MB_SIGF_LINKED) != 0;
    bool payload = mb__dist_exit_payload(node);
    if (linked)
      cross_untrack(node, T_LINKS, pair_key(m->from, to));
    frame_begin(&w, payload ? 3 : 4);
    if (payload)
      w_int(&w, linked ? OP_PAYLOAD_EXIT : OP_PAYLOAD_EXIT2);
    else
      w_int(&w, linked ? OP_EXIT : OP_EXIT2);
    w_pid(&w, m->from);
    w_pid(&w, to);
    if (payload)
      w_version(&w);
    w_value(&w, m, 0);
    break;
  }
  case MB_SIG_MONITOR:   /* {19, From, To, Ref} */
  case MB_SIG_DEMONITOR: /* {20, From, To, Ref} */
    if (m->kind == MB_SIG_MONITOR)
      cross_track(node, T_OUT_MON, m->ref, m->from, to, name);
    else
      cross_untrack(node, T_OUT_MON, m->ref);
    frame_begin(&w, 4);
    w_int(&w, m->kind == MB_SIG_MONITOR ? OP_MONITOR_P : OP_DEMONITOR_P);
    w_pid(&w, m->from);
    w_pid(&w, to);
    w_ref(&w, m->ref);
    break;
  case MB_SIG_DOWN: { /* to a remote watcher: {28, Watched, Watcher, Ref} +
                         Reason, or {21, Watched, Watcher, Ref, Reason} */
    const mb__atom_t *watched_name = cross_untrack(node, T_IN_MON, m->ref);
    bool payload = mb__dist_exit_payload(node);
    frame_begin(&w, payload ? 4 : 5);
    w_int(&w, payload ? OP_PAYLOAD_MONITOR_P_EXIT : OP_MONITOR_P_EXIT);
    if (watched_name)
      w_atom(&w, watched_name);
    else
      w_pid(&w, m->from);
    w_pid(&w, to);
    w_ref(&w, m->ref);
    if (payload)
      w_version(&w);
    w_value(&w, m, 5);
    break;
  }
  default:
    mb_msg_free(m);
    return MB_EINVAL;
  }
  mb_msg_free(m);
  return frame_send(node, &w);
}

/* ---- signals in ---- */

static const mb__atom_t *A(const char *s) {
  const mb__atom_t *a = NULL;
  mb__atom_intern(s, strlen(s), &a);
  return a;
}

/* A link exit {3, From, To, Reason} back to a process that linked to one
 * of ours that is not there: From as the link named it, so that the
 * sender matches it to its link also when it names a previous incarnation
 * of this node. */
static void reply_exit(const mb__atom_t *node, const mb__etf_pid_t *from,
                       const mb__etf_pid_t *to, const char *reason) {
  writer_t w;
  bool payload = mb__dist_exit_payload(node);
  frame_begin(&w, payload ? 3 : 4);
  w_int(&w, payload ? OP_PAYLOAD_EXIT : OP_EXIT);
  w_wire_pid(&w, from);
  w_wire_pid(&w, to);
  if (payload)
    w_version(&w);
  w_atom(&w, A(reason));
  frame_send(node, &w);
}

/* The rest of the frame after the control tuple: the message term. */
static int rest_message(mb__etf_reader_t *r, const unsigned char **p,
                        size_t *n) {
  if (r->p >= r->end || r->p[0] != MB_ETF_VERSION)
    return MB_EBADTERM;
  const unsigned char *start = r->p + 1;
  mb__etf_reader_t check;
  if (mb__etf_reader_init(&check, r->p, (size_t)(r->end - r->p)) != 0 ||
      mb__etf_skip(&check) != 0 || check.p != r->end)
    return MB_EBADTERM;
  *p = start;
  *n = (size_t)(r->end - start);
  return 0;
}

static void deliver_message(mb_pid_t to, mb__etf_reader_t *r) {
  const unsigned char *p;
  size_t n;
  if (rest_message(r, &p, &n) != 0)
    return;
  mb_msg_t *m = etf_message(p, n);
  if (m != NULL)
    mb_proc_send(to, m);
}

/* The reason of an exit or DOWN signal: the last element of the control
 * tuple, or, for the PAYLOAD_ ops, the term after it (without its 131). */
static int read_reason(mb__etf_reader_t *r, bool payload,
                       const unsigned char **p, size_t *n) {
  if (payload)
    return rest_message(r, p, n);
  *p = r->p;
  if (mb__etf_skip(r))
    return MB_EBADTERM;
  *n = (size_t)(r->p - *p);
  return 0;
}

static int on_link(const mb__atom_t *node, mb__etf_reader_t *r, bool unlink) {
  mb__etf_pid_t from, to;
  if (mb__etf_read_pid(r, &from) || mb__etf_read_pid(r, &to))
    return MB_EBADTERM;
  mb_pid_t local, remote = key_of_pid(&from);
  if (!mb__etf_pid_local(&to, &local)) {
    /* A previous incarnation's pid: no such process, as for a dead one. */
    if (!unlink)
      reply_exit(node, &to, &from, "noproc");
    return 0;
  }
  if (unlink)
    cross_untrack(node, T_LINKS, pair_key(local, remote));
  else
    cross_track(node, T_LINKS, pair_key(local, remote), local, remote, NULL);
  mb_msg_t *m = mb__signal_new(unlink ? MB_SIG_UNLINK : MB_SIG_LINK, remote, 0);
  if (m != NULL && mb__signal(local, m) != 0 && !unlink) {
    cross_untrack(node, T_LINKS, pair_key(local, remote));
    reply_exit(node, &to, &from, "noproc");
  }
  return 0;
}

static int on_exit_signal(const mb__atom_t *node, mb__etf_reader_t *r,
                          bool linked, bool token, bool payload) {
  mb__etf_pid_t from, to;
  const unsigned char *reason;
  size_t rlen;
  if (mb__etf_read_pid(r, &from) || mb__etf_read_pid(r, &to) ||
      (token && mb__etf_skip(r)) || read_reason(r, payload, &reason, &rlen))
    return MB_EBADTERM;
  mb_pid_t local, remote = key_of_pid(&from);
  if (!mb__etf_pid_local(&to, &local))
    return 0;
  if (linked)
    cross_untrack(node, T_LINKS, pair_key(local, remote));
  mb_msg_t *m = local_from_wire(reason, rlen);
  if (m == NULL)
    return 0;
  m->kind = MB_SIG_EXIT;
  m->from = remote;
  m->flags = linked ? MB_SIGF_LINKED : 0;
  mb__signal(local, m);
  return 0;
}

/* MONITOR_P and DEMONITOR_P: {_, Watcher, Target (pid or name), Ref}. */
static int on_monitor(const mb__atom_t *node, mb__etf_reader_t *r,
                      bool demonitor) {
  mb__etf_pid_t from, to;
  mb__etf_ref_t ref;
  const mb__atom_t *name = NULL;
  if (mb__etf_read_pid(r, &from))
    return MB_EBADTERM;
  if (mb__etf_peek(r) == MB_ETF_NEW_PID || mb__etf_peek(r) == MB_ETF_PID) {
    if (mb__etf_read_pid(r, &to))
      return MB_EBADTERM;
  } else if (mb__etf_read_atom(r, &name)) {
    return MB_EBADTERM;
  }
  if (mb__etf_read_ref(r, &ref))
    return MB_EBADTERM;
  mb_pid_t watcher = key_of_pid(&from), target = 0;
  uint64_t refkey =
      mb__remote_ref_key(ref.node->index + 1, ref.creation, ref.len, ref.words);
  if (name != NULL)
    target = mb__registry_whereis(name);
  else if (!mb__etf_pid_local(&to, &target))
    target = 0;
  if (demonitor) {
    cross_untrack(node, T_IN_MON, refkey);
    if (target != 0) {
      mb_msg_t *m = mb__signal_new(MB_SIG_DEMONITOR, watcher, refkey);
      if (m)
        mb__signal(target, m);
    }
    return 0;
  }
  if (target != 0) {
    cross_track(node, T_IN_MON, refkey, target, watcher, name);
    mb_msg_t *m = mb__signal_new(MB_SIG_MONITOR, watcher, refkey);
    if (m != NULL && mb__signal(target, m) == 0)
      return 0;
    cross_untrack(node, T_IN_MON, refkey);
  }
  /* No such process: {21, Target as given, Watcher, Ref, noproc}. */
  writer_t w;
  bool payload = mb__dist_exit_payload(node);
  frame_begin(&w, payload ? 4 : 5);
  w_int(&w, payload ? OP_PAYLOAD_MONITOR_P_EXIT : OP_MONITOR_P_EXIT);
  if (name)
    w_atom(&w, name);
  else
    w_wire_pid(&w, &to);
  w_wire_pid(&w, &from);
  w_wire_ref(&w, &ref);
  if (payload)
    w_version(&w);
  w_atom(&w, A("noproc"));
  frame_send(node, &w);
  return 0;
}

/* {'DOWN', Ref, process, Object, Reason} as an ETF message. */
static mb_msg_t *down_message(uint64_t ref, const unsigned char *object,
                              size_t olen, const unsigned char *reason,
                              size_t rlen) {
  writer_t w;
  w_begin(&w, 64 + olen + rlen);
  w_version(&w);
  w_tuple(&w, 5);
  w_atom(&w, A("DOWN"));
  w_ref(&w, ref);
  w_atom(&w, A("process"));
  w_raw(&w, object, olen);
  w_raw(&w, reason, rlen);
  mb_msg_t *m = w_end(&w);
  if (m != NULL) {
    m->kind = MB_SIG_DOWN;
    m->ref = ref;
  }
  return m;
}

/* MONITOR_P_EXIT: {21, Watched (pid or name), Watcher, Ref, Reason}. */
static int on_monitor_exit(const mb__atom_t *node, mb__etf_reader_t *r,
                           bool payload) {
  const unsigned char *object = r->p;
  const mb__atom_t *name = NULL;
  mb__etf_pid_t watched, to;
  mb__etf_ref_t ref;
  if (mb__etf_peek(r) == MB_ETF_NEW_PID || mb__etf_peek(r) == MB_ETF_PID) {
    if (mb__etf_read_pid(r, &watched))
      return MB_EBADTERM;
  } else if (mb__etf_read_atom(r, &name)) {
    return MB_EBADTERM;
  }
  size_t olen = (size_t)(r->p - object);
  const unsigned char *reason;
  size_t rlen;
  if (mb__etf_read_pid(r, &to) || mb__etf_read_ref(r, &ref) ||
      read_reason(r, payload, &reason, &rlen))
    return MB_EBADTERM;
  mb_pid_t watcher;
  uint64_t local_ref;
  if (!mb__etf_pid_local(&to, &watcher) || !mb__etf_ref_local(&ref, &local_ref))
    return 0;
  cross_untrack(node, T_OUT_MON, local_ref);
  cross_untrack(node, T_SPAWNS, local_ref);
  mb_msg_t *m;
  if (name != NULL) { /* the object is {Name, Node} */
    writer_t obj;
    w_begin(&obj, 32);
    w_tuple(&obj, 2);
    w_atom(&obj, name);
    w_atom(&obj, node);
    if (obj.err) {
      mb_msg_free(obj.m);
      return 0;
    }
    m = down_message(local_ref, obj.m->data, obj.m->len, reason, rlen);
    mb_msg_free(obj.m);
  } else {
    m = down_message(local_ref, object, olen, reason, rlen);
  }
  if (m != NULL)
    mb__signal(watcher, m);
  return 0;
}

typedef struct {
  const mb__atom_t *node;
  const mb__etf_ref_t *req;
  const mb__etf_pid_t *from;
  int flags;
} spawn_reply_t;

/* {31, ReqId, To, Flags, Result}: the new pid, or system_limit (pid 0). */
static void send_spawn_reply(mb_pid_t pid, void *arg) {
  spawn_reply_t *sr = arg;
  writer_t w;
  frame_begin(&w, 5);
  w_int(&w, OP_SPAWN_REPLY);
  w_wire_ref(&w, sr->req);
  w_wire_pid(&w, sr->from);
  w_int(&w, sr->flags);
  if (pid == 0)
    w_atom(&w, A("system_limit"));
  else
    w_pid(&w, pid);
  frame_send(sr->node, &w);
}

/* What spawn requests run (mb_dist_spawn_handler); read on the loop
 * thread, set before distribution starts. */
static struct { const char *module, *function; } spawn_handler;

int mb_dist_spawn_handler(const char *module, const char *function) {
  char *m = module ? strdup(module) : NULL,
       *f = function ? strdup(function) : NULL;
  if ((module && m == NULL) || (function && f == NULL)) {
    free(m);
    free(f);
    return MB_ENOMEM;
  }
  free((char *)spawn_handler.module);
  free((char *)spawn_handler.function);
  spawn_handler.module = m;
  spawn_handler.function = f;
  return 0;
}

/* SPAWN_REQUEST: {29, ReqId, From, GroupLeader, {M, F, Arity}, Opts} + Args.
 * The new process runs the spawn handler, handler(m, f, args) (moonbeam's
 * maps erpc's execute_call/execute_cast onto Lua functions); with none
 * set, the answer is system_limit, as for a spawn that failed. */
static int on_spawn_request(const mb__atom_t *node, mb__etf_reader_t *r) {
  mb__etf_ref_t req;
  mb__etf_pid_t from, gl;
  uint32_t arity;
  const mb__atom_t *mod, *fun;
  int64_t nargs;
  if (mb__etf_read_ref(r, &req) || mb__etf_read_pid(r, &from) ||
      mb__etf_read_pid(r, &gl) || mb__etf_read_tuple(r, &arity) || arity != 3 ||
      mb__etf_read_atom(r, &mod) || mb__etf_read_atom(r, &fun) ||
      mb__etf_read_int(r, &nargs))
    return MB_EBADTERM;
  /* Options: a list of atoms and tuples; link and monitor matter. */
  bool link = false, monitor = false;
  const unsigned char *opts = r->p;
  if (mb__etf_skip(r))
    return MB_EBADTERM;
  mb__etf_reader_t o = {opts, r->p, NULL};
  if (mb__etf_peek(&o) == MB_ETF_LIST) {
    uint32_t len = mb__get32(o.p + 1);
    o.p += 5;
    for (uint32_t i = 0; i < len; i++) {
      const mb__atom_t *a;
      if (mb__etf_peek(&o) == MB_ETF_SMALL_ATOM_UTF8 ||
          mb__etf_peek(&o) == MB_ETF_ATOM ||
          mb__etf_peek(&o) == MB_ETF_ATOM_UTF8 ||
          mb__etf_peek(&o) == MB_ETF_SMALL_ATOM) {
        if (mb__etf_read_atom(&o, &a))
          return MB_EBADTERM;
        link |= strcmp(a->name, "link") == 0;
        monitor |= strcmp(a->name, "monitor") == 0;
      } else if (mb__etf_skip(&o)) {
        return MB_EBADTERM;
      }
    }
  }
  const unsigned char *args;
  size_t alen;
  if (rest_message(r, &args, &alen) != 0)
    return MB_EBADTERM;
  /* The arguments of moonbeam.rpc.spawned: module, function, the list. */
  writer_t w;
  w_begin(&w, 64 + alen);
  w_version(&w);
  w_tuple(&w, 3);
  w_atom(&w, mod);
  w_atom(&w, fun);
  w_raw(&w, args, alen);
  mb_msg_t *a = w_end(&w);
  if (a == NULL)
    return 0;
  mb_pid_t caller = key_of_pid(&from);
  uint64_t refkey =
      mb__remote_ref_key(req.node->index + 1, req.creation, req.len, req.words);
  spawn_reply_t sr = {node, &req, &from, (link ? 1 : 0) | (monitor ? 2 : 0)};
  mb_spawn_opts_t so = {0};
  so.module = spawn_handler.module;
  so.function = spawn_handler.function;
  so.args = a;
  /* The link and monitor exist, and the reply is on its way, before the
   * process can run: one that ends at once still reports to the caller,
   * after the reply. */
  mb__spawn_remote_t sr_opts = {0};
  sr_opts.watcher = caller;
  sr_opts.watcher_link = link;
  sr_opts.watch_ref = monitor ? refkey : 0;
  sr_opts.before_start = send_spawn_reply;
  sr_opts.before_start_arg = &sr;
  mb_pid_t pid = 0;
  if (so.module == NULL) {
    mb_msg_free(a);
    sr.flags = 0;
    send_spawn_reply(0, &sr);
    return 0;
  }
  if (mb__proc_spawn_remote(&so, &sr_opts, &pid) != 0) {
    sr.flags = 0;
    send_spawn_reply(0, &sr);
    return 0;
  }
  if (link)
    cross_track(node, T_LINKS, pair_key(pid, caller), pid, caller, NULL);
  if (monitor)
    cross_track(node, T_IN_MON, refkey, pid, caller, NULL);
  return 0;
}

/* SPAWN_REPLY: {31, ReqId, To, Flags, Result} -> to the caller
 * {spawn_reply, ReqId, ok, Pid} or {spawn_reply, ReqId, error, Reason}. */
static int on_spawn_reply(const mb__atom_t *node, mb__etf_reader_t *r) {
  mb__etf_ref_t req;
  mb__etf_pid_t to;
  int64_t flags;
  if (mb__etf_read_ref(r, &req) || mb__etf_read_pid(r, &to) ||
      mb__etf_read_int(r, &flags))
    return MB_EBADTERM;
  const unsigned char *result = r->p;
  bool ok = mb__etf_peek(r) == MB_ETF_NEW_PID || mb__etf_peek(r) == MB_ETF_PID;
  mb__etf_pid_t child;
  if (ok ? mb__etf_read_pid(r, &child) : mb__etf_skip(r))
    return MB_EBADTERM;
  mb_pid_t caller;
  uint64_t ref;
  if (!mb__etf_pid_local(&to, &caller) || !mb__etf_ref_local(&req, &ref))
    return 0;
  if (ok && (flags & 1)) {
    mb_pid_t ckey = key_of_pid(&child);
    cross_track(node, T_LINKS, pair_key(caller, ckey), caller, ckey, NULL);
    mb_msg_t *m = mb__signal_new(MB_SIG_LINK, ckey, 0);
    if (m)
      mb__signal(caller, m);
  }
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, true);
  crossing_t *c = n ? untrack(&n->spawns, ref) : NULL;
  bool quiet = c != NULL && c->name != NULL;
  free(c);
  if (ok && (flags & 2) && n && !quiet)
    track(&n->out_mon, ref, caller, key_of_pid(&child), NULL);
  uv_mutex_unlock(&lock);
  if (quiet)
    return 0;
  writer_t w;
  w_begin(&w, 64 + (size_t)(r->p - result));
  w_version(&w);
  w_tuple(&w, 4);
  w_atom(&w, A("spawn_reply"));
  w_ref(&w, ref);
  w_atom(&w, A(ok ? "ok" : "error"));
  w_raw(&w, result, (size_t)(r->p - result));
  mb_msg_t *m = w_end(&w);
  if (m != NULL)
    mb_proc_send(caller, m);
  return 0;
}

static int on_unlink_id(const mb__atom_t *node, mb__etf_reader_t *r) {
  int64_t id;
  mb__etf_pid_t from, to;
  const unsigned char *id_term = r->p;
  if (mb__etf_read_int(r, &id) && mb__etf_skip(r))
    return MB_EBADTERM;
  size_t id_len = (size_t)(r->p - id_term);
  if (mb__etf_read_pid(r, &from) || mb__etf_read_pid(r, &to))
    return MB_EBADTERM;
  mb_pid_t local, remote = key_of_pid(&from);
  if (mb__etf_pid_local(&to, &local)) {
    cross_untrack(node, T_LINKS, pair_key(local, remote));
    mb_msg_t *m = mb__signal_new(MB_SIG_UNLINK, remote, 0);
    if (m)
      mb__signal(local, m);
  }
  /* UNLINK_ID_ACK {36, Id, From = us, To = them}. */
  writer_t w;
  frame_begin(&w, 4);
  w_int(&w, OP_UNLINK_ID_ACK);
  w_raw(&w, id_term, id_len);
  w_wire_pid(&w, &to);
  w_wire_pid(&w, &from);
  frame_send(node, &w);
  return 0;
}

/* One frame from a node (loop thread): nonzero closes the connection. */
int mb__dist_frame(mb__conn_t *c, const mb__atom_t *node,
                   const unsigned char *p, size_t n) {
  (void)c;
  if (n < 2 || p[0] != 'p')
    return MB_EBADTERM;
  mb__etf_reader_t r;
  uint32_t arity;
  int64_t op;
  if (mb__etf_reader_init(&r, p + 1, n - 1) || mb__etf_read_tuple(&r, &arity) ||
      arity < 1 || mb__etf_read_int(&r, &op))
    return MB_EBADTERM;
  switch (op) {
  case OP_SEND:
  case OP_SEND_TT:
  case OP_SEND_SENDER:
  case OP_SEND_SENDER_TT: {
    mb__etf_pid_t to;
    if (mb__etf_skip(&r) || mb__etf_read_pid(&r, &to) ||
        ((op == OP_SEND_TT || op == OP_SEND_SENDER_TT) && mb__etf_skip(&r)))
      return MB_EBADTERM;
    mb_pid_t local;
    if (mb__etf_pid_local(&to, &local))
      deliver_message(local, &r);
    else if (rest_message(&r, &p, &n) != 0)
      return MB_EBADTERM;
    return 0;
  }
  case OP_REG_SEND:
  case OP_REG_SEND_TT: {
    mb__etf_pid_t from;
    const mb__atom_t *name;
    if (mb__etf_read_pid(&r, &from) || mb__etf_skip(&r) ||
        mb__etf_read_atom(&r, &name) ||
        (op == OP_REG_SEND_TT && mb__etf_skip(&r)))
      return MB_EBADTERM;
    mb_pid_t to = mb__registry_whereis(name);
    if (to != 0)
      deliver_message(to, &r);
    else if (rest_message(&r, &p, &n) != 0)
      return MB_EBADTERM;
    return 0;
  }
  case OP_LINK:
    return on_link(node, &r, false);
  case OP_UNLINK:
    return on_link(node, &r, true);
  case OP_UNLINK_ID:
    return on_unlink_id(node, &r);
  case OP_UNLINK_ID_ACK:
  case OP_NODE_LINK:
  case OP_GROUP_LEADER:
    return 0;
  case OP_EXIT:
  case OP_EXIT2:
  case OP_EXIT_TT:
  case OP_EXIT2_TT:
    return on_exit_signal(node, &r, op == OP_EXIT || op == OP_EXIT_TT,
                          op == OP_EXIT_TT || op == OP_EXIT2_TT, false);
  case OP_PAYLOAD_EXIT:
  case OP_PAYLOAD_EXIT2:
  case OP_PAYLOAD_EXIT_TT:
  case OP_PAYLOAD_EXIT2_TT:
    return on_exit_signal(
        node, &r, op == OP_PAYLOAD_EXIT || op == OP_PAYLOAD_EXIT_TT,
        op == OP_PAYLOAD_EXIT_TT || op == OP_PAYLOAD_EXIT2_TT, true);
  case OP_MONITOR_P:
    return on_monitor(node, &r, false);
  case OP_DEMONITOR_P:
    return on_monitor(node, &r, true);
  case OP_MONITOR_P_EXIT:
    return on_monitor_exit(node, &r, false);
  case OP_PAYLOAD_MONITOR_P_EXIT:
    return on_monitor_exit(node, &r, true);
  case OP_SPAWN_REQUEST:
    return on_spawn_request(node, &r);
  case OP_SPAWN_REPLY:
    return on_spawn_reply(node, &r);
  default:
    mb_log(MB_LOG_WARNING,
           "dist: %s sent an operation moonbeam does not know (%d)", node->name,
           (int)op);
    return 0;
  }
}

/* ---- spawn requests out (rpc) ---- */

/* Ask `node` to spawn module:function(args...) (an Erlang MFA) for the
 * calling process, monitored; the reply comes as {spawn_reply, Ref, ok,
 * Pid} or {spawn_reply, Ref, error, Reason}, then {'DOWN', Ref, ...}. */
int mb__dist_spawn_request(lua_State *L, const mb__atom_t *node,
                           mb_pid_t caller, uint64_t ref, const mb__atom_t *mod,
                           const mb__atom_t *fun, int args_idx, bool reply,
                           char *err, size_t errlen) {
  lua_Integer nargs = (lua_Integer)lua_rawlen(L, args_idx);
  static const unsigned char monitor_opt[] = {MB_ETF_LIST, 0, 0, 0, 1};
  static const unsigned char empty_list[] = {MB_ETF_NIL};
  writer_t w;
  frame_begin(&w, 6);
  w_int(&w, OP_SPAWN_REQUEST);
  w_ref(&w, ref);
  w_pid(&w, caller);
  w_pid(&w, caller); /* the group leader */
  w_tuple(&w, 3);
  w_atom(&w, mod);
  w_atom(&w, fun);
  w_int(&w, nargs);
  /* Options: [monitor]. */
  w_raw(&w, monitor_opt, sizeof monitor_opt);
  w_atom(&w, A("monitor"));
  w_raw(&w, empty_list, sizeof empty_list);
  w_version(&w);
  if (!w.err)
    w.err = mb__etf_write_value(&w.m, L, args_idx, "args", err, errlen);
  if (w.err) {
    mb_msg_free(w.m);
    return w.err;
  }
  /* A spawn without a reply (a cast) is marked by a name in its record. */
  cross_track(node, T_SPAWNS, ref, caller, 0, reply ? NULL : A("noreply"));
  return frame_send(node, &w);
}

/* ---- nodes up and down ---- */

static void notify(mb_pid_t to, const char *what, const mb__atom_t *node) {
  writer_t w;
  w_begin(&w, 64);
  w_version(&w);
  w_tuple(&w, 2);
  w_atom(&w, A(what));
  w_atom(&w, node);
  mb_msg_t *m = w_end(&w);
  if (m != NULL)
    mb_proc_send(to, m);
}

/* {Ref, Up} to a process waiting in node_watch. */
static void tell_waiter(mb_pid_t to, uint64_t ref, bool up) {
  writer_t w;
  w_begin(&w, 48);
  w_version(&w);
  w_tuple(&w, 2);
  w_ref(&w, ref);
  w_atom(&w, A(up ? "true" : "false"));
  mb_msg_t *m = w_end(&w);
  if (m != NULL)
    mb_proc_send(to, m);
}

/* Tell every process waiting for node n, and forget them.  The map is
 * taken whole under the lock, so each waiter is told once. */
static void tell_waiting(mb__map_t *waiting, bool up) {
  size_t i = 0;
  uint64_t ref;
  void *pid;
  while (mb__map_next(waiting, &i, &ref, &pid))
    tell_waiter((mb_pid_t)(uintptr_t)pid, ref, up);
  mb__map_free(waiting);
}

/* Each subscriber gets one message per subscription (its count). */
static void notify_all(mb_pid_t *to, size_t *times, size_t k, const char *what,
                       const mb__atom_t *node) {
  for (size_t j = 0; j < k; j++)
    for (size_t t = 0; t < times[j]; t++)
      notify(to[j], what, node);
}

/* The subscribers of monitor_nodes, with their counts; lock held. */
static size_t all_watchers(mb_pid_t **to, size_t **times) {
  size_t cap = all_watch.len, i = 0, k = 0;
  *to = cap ? malloc(cap * sizeof **to) : NULL;
  *times = cap ? malloc(cap * sizeof **times) : NULL;
  if (*to == NULL || *times == NULL)
    return 0;
  uint64_t key;
  void *v;
  while (mb__map_next(&all_watch, &i, &key, &v)) {
    (*to)[k] = key;
    (*times)[k++] = (uintptr_t)v;
  }
  return k;
}

void mb__dist_node_up(const mb__atom_t *node, mb__conn_t *c) {
  (void)c;
  mb__map_t waiting = {0};
  mb_pid_t *to;
  size_t *times;
  uv_mutex_lock(&lock);
  size_t k = all_watchers(&to, &times);
  node_t *n = node_of(node, false);
  if (n != NULL) {
    waiting = n->waiting;
    memset(&n->waiting, 0, sizeof n->waiting);
  }
  uv_mutex_unlock(&lock);
  notify_all(to, times, k, "nodeup", node);
  free(to);
  free(times);
  tell_waiting(&waiting, true);
}

static void fire_map(mb__map_t *m,
                     void (*fn)(crossing_t *, uint64_t, const mb__atom_t *),
                     const mb__atom_t *node) {
  size_t i = 0;
  uint64_t k;
  void *v;
  while (mb__map_next(m, &i, &k, &v)) {
    fn(v, k, node);
    free(v);
  }
  mb__map_free(m);
}

static void link_down(crossing_t *c, uint64_t k, const mb__atom_t *node) {
  (void)k;
  (void)node;
  mb_msg_t *m = mb__msg_atom(A("noconnection"));
  if (m == NULL)
    return;
  m->kind = MB_SIG_EXIT;
  m->from = c->remote;
  m->flags = MB_SIGF_LINKED;
  mb__signal(c->local, m);
}

static void out_mon_down(crossing_t *c, uint64_t ref, const mb__atom_t *node) {
  mb_msg_t *obj = mb__msg_new(64), *reason = mb__msg_new(32);
  if (obj && reason) {
    mb__etf_pid_t w;
    const mb__atom_t *name, *rnode;
    if (c->remote && wire_pid(c->remote, &w, &name, &rnode)) {
      if (name)
        (void)(mb__etf_write_tuple(&obj, 2) || mb__etf_write_atom(&obj, name) ||
               mb__etf_write_atom(&obj, node));
      else
        (void)mb__etf_write_pid(&obj, &w);
    } else {
      mb__etf_write_atom(&obj, node);
    }
    mb__etf_write_atom(&reason, A("noconnection"));
    mb_msg_t *m =
        down_message(ref, obj->data, obj->len, reason->data, reason->len);
    if (m)
      mb__signal(c->local, m);
  }
  mb_msg_free(obj);
  mb_msg_free(reason);
}

static void spawn_down(crossing_t *c, uint64_t ref, const mb__atom_t *node) {
  mb_msg_t *m = mb__msg_new(64);
  if (m == NULL || mb__etf_write_version(&m) || mb__etf_write_tuple(&m, 4) ||
      mb__etf_write_atom(&m, A("spawn_reply")) ||
      mb__etf_write_local_ref(&m, ref) || mb__etf_write_atom(&m, A("error")) ||
      mb__etf_write_atom(&m, A("noconnection"))) {
    mb_msg_free(m);
    return;
  }
  (void)node;
  m->flags |= MB_MSGF_ETF;
  mb_proc_send(c->local, m);
}

static void in_mon_down(crossing_t *c, uint64_t refkey,
                        const mb__atom_t *node) {
  (void)node;
  mb_msg_t *m = mb__signal_new(MB_SIG_DEMONITOR, c->remote, refkey);
  if (m)
    mb__signal(c->local, m);
}

void mb__dist_node_down(const mb__atom_t *node, uint64_t conn_id, bool was_up) {
  (void)conn_id;
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, false);
  if (n)
    mb__map_del(&nodes, (uint64_t)node->index + 1);
  mb_pid_t *to = NULL;
  size_t *times = NULL, k = was_up ? all_watchers(&to, &times) : 0;
  uv_mutex_unlock(&lock);
  if (n != NULL) {
    fire_map(&n->links, link_down, node);
    fire_map(&n->out_mon, out_mon_down, node);
    fire_map(&n->spawns, spawn_down, node);
    fire_map(&n->in_mon, in_mon_down, node);
    size_t i = 0;
    uint64_t key;
    void *v;
    while (mb__map_next(&n->watchers, &i, &key, &v))
      for (uintptr_t t = 0; t < (uintptr_t)v; t++)
        notify(key, "nodedown", node);
    mb__map_free(&n->watchers);
    tell_waiting(&n->waiting, false);
    free(n);
  }
  notify_all(to, times, k, "nodedown", node);
  free(to);
  free(times);
}

/* monitor_node(Node, true/false) for a local process; a node that is not
 * connected is dialled (a tick frame), and a failure reports nodedown. */
int mb__dist_monitor_node(mb_pid_t who, const mb__atom_t *node, bool on) {
  if (mb__dist_node() == NULL)
    return MB_ESTATE;
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, on);
  uintptr_t count = n ? (uintptr_t)mb__map_get(&n->watchers, who) : 0;
  if (n && on)
    mb__map_put(&n->watchers, who, (void *)(count + 1));
  else if (count > 1)
    mb__map_put(&n->watchers, who, (void *)(count - 1));
  else if (count == 1)
    mb__map_del(&n->watchers, who);
  uv_mutex_unlock(&lock);
  if (on) {
    unsigned char tick[4] = {0, 0, 0, 0};
    int err = mb__dist_queue(node, tick, sizeof tick);
    if (err)
      return err;
  }
  return 0;
}

/* Subscriptions stack, as net_kernel's do: one message per subscription
 * per event; monitor_nodes(false) ends them all. */
int mb__dist_monitor_nodes(mb_pid_t who, bool on) {
  uv_mutex_lock(&lock);
  if (on)
    mb__map_put(&all_watch, who,
                (void *)((uintptr_t)mb__map_get(&all_watch, who) + 1));
  else
    mb__map_del(&all_watch, who);
  uv_mutex_unlock(&lock);
  return 0;
}

/* node_watch: {Ref, true} to `who` once the node is connected (at once if it
 * is), {Ref, false} if the attempt fails; the node is dialled. */
int mb__dist_node_watch(mb_pid_t who, const mb__atom_t *node, uint64_t ref) {
  if (mb__dist_node() == NULL)
    return MB_ESTATE;
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, true);
  int err =
      n ? mb__map_put(&n->waiting, ref, (void *)(uintptr_t)who) : MB_ENOMEM;
  uv_mutex_unlock(&lock);
  if (err)
    return err;
  /* Up already (node_up ran before the waiter was in): tell it here,
   * unless node_up or node_down took it meanwhile. */
  if (mb__dist_connected(node) && mb__dist_node_unwatch(node, ref)) {
    tell_waiter(who, ref, true);
    return 0;
  }
  unsigned char tick[4] = {0, 0, 0, 0};
  err = mb__dist_queue(node, tick, sizeof tick);
  if (err && mb__dist_node_unwatch(node, ref))
    return err;
  return 0;
}

/* Forget a node_watch; false if it was already told (or never was). */
bool mb__dist_node_unwatch(const mb__atom_t *node, uint64_t ref) {
  uv_mutex_lock(&lock);
  node_t *n = node_of(node, false);
  bool had = n != NULL && mb__map_get(&n->waiting, ref) != NULL;
  if (had)
    mb__map_del(&n->waiting, ref);
  uv_mutex_unlock(&lock);
  return had;
}
