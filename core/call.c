/* Calls: the client side of a GenServer call in one primitive, for a
 * server on this node.  It does what moonbeam.gen's Lua path does, with
 * the same messages: a monitor of the server whose ref is the call's tag
 * (and an alias, so that a late reply is dropped), the request
 * {Label, {self(), Tag}, Request}, and a wait for the first message that
 * is {Tag, ...} or that monitor's 'DOWN'.  The request is written as one
 * message without building its tuples in Lua, and the wait reads the
 * queued messages without decoding them: the others stay where they
 * were, undecoded, as a selective receive would leave them.
 *
 * A message from another node (in the external term format) that could
 * be the reply is decoded to be looked at and left in the queue as it
 * was.  Everything the primitive does not take on (another node's
 * server, a traced caller) it hands back to the Lua path.
 *
 * The server's side has one primitive here too, mb_lua_reply: the reply
 * {Tag, Reply} written as one message, without a tuple built in Lua; and
 * so is a server's acknowledgement of its start, mb_lua_gen_ack. */
#include <math.h>

#include <lauxlib.h>

#include "etf.h"
#include "internal.h"

/* The stack of a call while it waits. */
enum {
  ARG_DEST = 1,
  ARG_LABEL,
  ARG_REQUEST,
  ARG_TIMEOUT,
  SLOT_REF, /* the tag, as an integer */
  SLOT_WAIT /* the timeout in ms, -1 for none */
};

/* Could this message from another node be {Tag, Reply}?  Only a tuple
 * whose first element is a ref can be. */
static bool etf_maybe_reply(const mb_msg_t *m) {
  const unsigned char *p = m->data, *end = m->data + m->len;
  if (p < end && *p == MB_ETF_VERSION)
    p++;
  if (end - p >= 2 && p[0] == MB_ETF_SMALL_TUPLE && p[1] >= 1)
    p += 2;
  else if (end - p >= 5 && p[0] == MB_ETF_LARGE_TUPLE && mb__get32(p + 1) >= 1)
    p += 5;
  else
    return false;
  return p < end && (*p == MB_ETF_NEWER_REFERENCE ||
                     *p == MB_ETF_NEW_REFERENCE || *p == MB_ETF_REFERENCE);
}

/* Is the ETF message m {Tag, ...}?  Decoded on the stack and dropped. */
static bool etf_is_reply(lua_State *L, const mb_msg_t *m, uint64_t ref) {
  mb_msg_decode(L, m);
  bool yes = false;
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_rawgeti(L, -1, 1);
    mb__lref_t *r = mb__to_ref(L, -1);
    yes = r != NULL && r->node == 0 && r->id == ref;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return yes;
}

typedef enum { NOTHING, REPLY, DOWN } outcome_t;

/* Look for the reply or the 'DOWN' among the queued messages after
 * *last (all of them if it is NULL), and push the reply or the DOWN's
 * reason.  *last moves to the last message looked at. */
static outcome_t take_reply(lua_State *L, mb_proc_t *p, uint64_t ref,
                            mb_msg_t **last) {
  mb_msg_t *prev = *last, *m = prev ? prev->next : p->q_head;
  for (; m != NULL; prev = m, m = m->next) {
    outcome_t o = NOTHING;
    if ((m->flags & MB_SIGF_DOWN) && m->ref == ref)
      o = DOWN;
    else if (m->flags & MB_MSGF_ETF)
      o = etf_maybe_reply(m) && etf_is_reply(L, m, ref) ? REPLY : NOTHING;
    else if (mb__msg_first_is_ref(m, ref))
      o = REPLY;
    if (o == NOTHING)
      continue;
    /* Decoded while still queued: an error raised here loses nothing. */
    mb__msg_decode_field(L, m, o == REPLY ? 2 : 5);
    mb__queue_remove(p, prev, m);
    mb_msg_free(m);
    mb__proc_took(p);
    return o;
  }
  *last = prev;
  return NOTHING;
}

/* demonitor(Tag, {flush = true}): the server forgets the monitor, and no
 * 'DOWN' of it stays.  One still in the inbox is dropped when the inbox
 * is read, as the monitor is gone; one already queued is removed here. */
static void end_monitor(lua_State *L, mb_proc_t *p, uint64_t ref) {
  mb_pid_t target = mb__link_monitor_del(p, ref);
  if (target == 0)
    return; /* its 'DOWN' came */
  mb__lpid_t *lp = mb__to_pid(L, ARG_DEST);
  mb__link_unwatch(lp->proc, ref); /* set by mb__link_watch */
  mb__queue_drop_down(p, ref);
}

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mb_proc_t *p = MB_PROC(L);
  mb_msg_t *last = (mb_msg_t *)ctx;
  if (mb__proc_handle_signals(p))
    return mb__proc_yield(L, MB_YIELD_EXIT, ctx, call_k);
  uint64_t ref = (uint64_t)lua_tointeger(L, SLOT_REF);
  outcome_t o = take_reply(L, p, ref, &last);
  lua_Integer wait = lua_tointeger(L, SLOT_WAIT);
  if (o == NOTHING &&
      (wait == 0 || (p->timer_id != 0 && atomic_load(&p->timed_out)))) {
    mb__push_atom(L, mb__atoms.timeout);
    o = DOWN; /* fails as a 'DOWN' does, with the reason timeout */
  }
  if (o != NOTHING) {
    mb__proc_timer_disarm(p);
    end_monitor(L, p, ref);
    lua_pushboolean(L, o == REPLY);
    lua_insert(L, -2);
    return 2;
  }
  if (wait > 0 && p->timer_id == 0)
    mb__proc_timer_arm(p, (uint64_t)wait);
  return mb__proc_yield(L, MB_YIELD_WAIT, (lua_KContext)last, call_k);
}

/* The wait of a call, in ms (-1: none), or -2 if the Lua path is to say
 * what is wrong with it. */
static lua_Integer wait_of(lua_State *L) {
  if (lua_type(L, ARG_TIMEOUT) != LUA_TNUMBER)
    return -2;
  lua_Number t = lua_tonumber(L, ARG_TIMEOUT);
  if (!(t >= 0))
    return -2;
  if (t == HUGE_VAL)
    return -1;
  return t < 0x1p62 ? (lua_Integer)t : -1;
}

/* call(dest, label, request, timeout_ms)
 *   -> true, reply | false, reason (noproc, timeout, the server's exit
 *      reason) | nothing, where the Lua path is to make the call: dest is
 *      not a pid of this node or is the caller, label is not an atom, the
 *      timeout is not a number >= 0, the caller is traced or not where a
 *      process can wait. */
int mb_lua_call(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  mb__lpid_t *lp = mb__to_pid(L, ARG_DEST);
  const mb__atom_t *label = mb__to_atom(L, ARG_LABEL);
  lua_settop(L, ARG_TIMEOUT);
  lua_Integer wait = wait_of(L);
  if (p == NULL || (L != p->L && p->co_depth == 0) || lp == NULL ||
      lp->node != 0 || lp->id == p->pid || label == NULL || wait == -2 ||
      MB__TRACING(p, MB_TRACE_SEND | MB_TRACE_RECEIVE | MB_TRACE_CALL))
    return 0;
  uint64_t ref = mb__ref_next() | MB_REF_ALIAS;
  /* The request first: a value that cannot be sent raises before the
   * monitor is set up. */
  char err[600];
  mb_msg_t *m = mb__tuple_new(3);
  int r = m == NULL || mb__tuple_atom(&m, label) || mb__tuple_open(&m, 2) ||
                  mb__tuple_pid(&m, p->pid) || mb__tuple_ref(&m, ref) ||
                  mb__tuple_end(&m, 2)
              ? MB_ENOMEM
              : mb__tuple_lua(L, ARG_REQUEST, "msg[3]", &m, err, sizeof err);
  if (r == 0 && mb__tuple_end(&m, 3))
    r = MB_ENOMEM;
  if (r != 0) {
    mb_msg_free(m);
    return mb_lua_error(L, "send", r, r == MB_EBADTERM ? err : NULL);
  }
  if (lp->proc == NULL)
    lp->proc = mb__proc_lookup(lp->id);
  /* The monitor's watched side, set and ended at once as mb.monitor's
   * (mb__link_watch, mb__link_unwatch), through the server found above. */
  int w = lp->proc == NULL ? MB_ENOPROC : mb__link_watch(lp->proc, ref, p->pid);
  if (w != 0) {
    mb_msg_free(m);
    if (w == MB_ENOMEM)
      return mb_lua_error(L, "monitor", MB_ENOMEM, NULL);
    lua_pushboolean(L, 0);
    mb__push_atom(L, mb__atoms.noproc);
    return 2;
  }
  mb__link_monitor_add(p, ref, lp->id);
  m->from = p->pid;
  mb__proc_deliver(lp->proc, m); /* dropped if it ends: its DOWN says so */
  lua_pushinteger(L, (lua_Integer)ref);
  lua_pushinteger(L, wait);
  return call_k(L, LUA_OK, 0);
}

/* mb_lua_reply(L, from, value): send {Tag, Reply} to From = {Pid, Tag} at
 * `from`, Reply being the value at `value`, to Tag as an alias, as
 * send_alias(Pid, Tag, tuple(Tag, Reply)) does: 1 once sent, or 0, having
 * sent nothing, where the caller is to send it itself: From is not this
 * node's pid and ref, the server is traced, or Reply cannot be sent (the
 * caller's send_alias then raises the error, as it did before). */
int mb_lua_reply(lua_State *L, int from, int value) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL || lua_type(L, from) != LUA_TTABLE ||
      MB__TRACING(p, MB_TRACE_SEND | MB_TRACE_RECEIVE | MB_TRACE_CALL))
    return 0;
  value = lua_absindex(L, value);
  lua_rawgeti(L, from, 1);
  lua_rawgeti(L, from, 2);
  mb__lpid_t *lp = mb__to_pid(L, -2);
  mb__lref_t *r = mb__to_ref(L, -1);
  bool local = lp != NULL && lp->node == 0 && r != NULL && r->node == 0;
  mb_pid_t to = local ? lp->id : 0;
  uint64_t ref = local ? r->id : 0;
  lua_pop(L, 2);
  if (!local)
    return 0;
  char err[600]; /* unused: send_alias says what is wrong */
  mb_msg_t *m = mb__tuple_new(2);
  int e = m == NULL || mb__tuple_ref(&m, ref)
              ? MB_ENOMEM
              : mb__tuple_lua(L, value, "msg[2]", &m, err, sizeof err);
  if (e == 0 && mb__tuple_end(&m, 2))
    e = MB_ENOMEM;
  if (e != 0) {
    mb_msg_free(m);
    return 0;
  }
  m->kind = MB_SIG_ALIAS;
  m->ref = ref;
  m->from = p->pid;
  mb__signal(to, m);
  return 1;
}

/* The atom '$gen_ack', interned once: atoms live as long as the OS
 * process (atom.c). */
static const mb__atom_t *_Atomic gen_ack;

int mb_lua_gen_ack(lua_State *L, int starter, int ref) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL || MB__TRACING(p, MB_TRACE_SEND))
    return 0;
  starter = lua_absindex(L, starter);
  ref = lua_absindex(L, ref);
  mb__lpid_t *lp = mb__to_pid(L, starter);
  mb__lref_t *r = mb__to_ref(L, ref);
  if (lp == NULL || lp->node != 0 || r == NULL || r->node != 0)
    return 0;
  const mb__atom_t *a = atomic_load_explicit(&gen_ack, memory_order_acquire);
  if (a == NULL) {
    if (mb__atom_intern("$gen_ack", 8, &a) != 0)
      return 0;
    atomic_store_explicit(&gen_ack, a, memory_order_release);
  }
  char err[600]; /* unused: true and nil always encode */
  mb_msg_t *m = mb__tuple_new(4);
  int e = m == NULL || mb__tuple_atom(&m, a) || mb__tuple_ref(&m, r->id);
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  if (e == 0)
    e = mb__tuple_lua(L, -2, "msg[3]", &m, err, sizeof err) ||
        mb__tuple_lua(L, -1, "msg[4]", &m, err, sizeof err) ||
        mb__tuple_end(&m, 4);
  lua_pop(L, 2);
  if (e != 0) {
    mb_msg_free(m);
    return 0;
  }
  m->from = p->pid;
  mb_proc_send(lp->id, m);
  return 1;
}
