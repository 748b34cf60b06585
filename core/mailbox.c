/* Mailboxes.  Senders push onto the inbox without a lock: the inbox is an
 * intrusive stack of messages, newest first, that a sender extends with
 * one compare-and-swap, so a hundred senders to one process never wait on
 * each other's lock.  The process takes the whole stack in one exchange,
 * reverses it into arrival order and works on that, its private queue,
 * without locking.  The order of the compare-and-swaps is the order of
 * arrival, so two messages from one sender stay in the order sent, as
 * Erlang promises for signals between a pair of processes.  An ending
 * process swaps in a closed mark (MB__INBOX_CLOSED) under its lock: a
 * sender that meets the mark frees its message and reports the process
 * gone, and nothing is pushed after the process's last look.  Readers
 * from other threads (process_info, the process table) walk the stack
 * under the process lock, which the process also takes to empty it, so
 * that no message they walk is freed under them.
 *
 * Messages a selective receive skipped are kept,
 * decoded and in arrival order, in a Lua table (the save queue), so each
 * message is decoded once.  Next to the save queue, a C array keeps the
 * first element of each saved message (its identity, when it is an atom, a
 * pid or a ref): a receive with a prefilter (gen.call's, a pattern's) goes
 * past the saved messages it cannot accept without calling into Lua. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "dist/dist.h"
#include "etf.h"

void mb__proc_wake(mb_proc_t *p) {
  int waiting = MB_PS_WAITING;
  if (atomic_load(&p->state) == MB_PS_WAITING &&
      atomic_compare_exchange_strong(&p->state, &waiting, MB_PS_RUNNABLE))
    mb__sched_wake(p);
}

/* The bytes a queued message counts for, against its receiver's limit. */
static size_t queued_size(const mb_proc_t *p, const mb_msg_t *m) {
  if (p->mem_limit == 0 || (m->kind != MB_SIG_MSG && m->kind != MB_SIG_ALIAS))
    return 0;
  return sizeof *m + m->len;
}

void mb__proc_uncount(mb_proc_t *p, const mb_msg_t *m) {
  if (m->flags & MB_MSGF_COUNTED)
    atomic_fetch_sub(&p->mq_bytes, sizeof *m + m->len);
}

/* A message would take p over its memory limit: p ends with
 * {memory_limit, Bytes}, by a signal it cannot trap, as a process whose
 * heap grows too large does (OTP counts messages in max_heap_size too). */
static void end_over_limit(mb_proc_t *p) {
  mb_log(MB_LOG_ERROR,
         "process <0.%u.%u> killed: its message queue took it over its "
         "memory limit of %zu bytes",
         MB_PID_ID(p->pid), MB_PID_SERIAL(p->pid), p->mem_limit);
  mb_msg_t *m = mb__tuple_new(2);
  if (m == NULL || mb__tuple_atom(&m, mb__atoms.memory_limit) ||
      mb__tuple_int(&m, (lua_Integer)p->mem_limit) || mb__tuple_end(&m, 2)) {
    mb_msg_free(m);
    return;
  }
  m->kind = MB_SIG_EXIT;
  m->from = p->pid;
  m->flags = MB_SIGF_MEMORY;
  mb__proc_deliver(p, m);
}

/* Count m's bytes against p's limit; false if they would take p over it.
 * Senders add before they look, so two of them cannot both pass on the
 * same last bytes. */
static bool count_queued(mb_proc_t *p, mb_msg_t *m, size_t size) {
  size_t before = atomic_fetch_add(&p->mq_bytes, size);
  if (atomic_load_explicit(&p->mem, memory_order_relaxed) + before + size >
      p->mem_limit) {
    atomic_fetch_sub(&p->mq_bytes, size);
    return false;
  }
  m->flags |= MB_MSGF_COUNTED;
  return true;
}

/* Push m onto p's inbox; false if the inbox is closed. */
static bool inbox_push(mb_proc_t *p, mb_msg_t *m) {
  mb_msg_t *head = atomic_load_explicit(&p->inbox_head, memory_order_relaxed);
  do {
    if (head == MB__INBOX_CLOSED)
      return false;
    m->next = head;
  } while (!atomic_compare_exchange_weak_explicit(
      &p->inbox_head, &head, m, memory_order_seq_cst, memory_order_relaxed));
  return true;
}

bool mb__proc_deliver(mb_proc_t *p, mb_msg_t *m) {
  size_t size = queued_size(p, m);
  if (size != 0 && atomic_load(&p->inbox_head) != MB__INBOX_CLOSED &&
      !count_queued(p, m, size)) {
    /* Dropped, as a message to a process that is ending. */
    bool first = !atomic_exchange(&p->mq_over, true);
    mb_msg_free(m);
    if (first)
      end_over_limit(p);
    return true;
  }
  bool signal = m->kind != MB_SIG_MSG;
  if (!inbox_push(p, m)) {
    mb__proc_uncount(p, m);
    mb_msg_free(m);
    return false;
  }
  /* After the push: the process clears the flag before it takes the
   * inbox, so it never clears the flag of a signal it has not taken. */
  if (signal)
    atomic_store(&p->sig_pending, true);
  mb__proc_wake(p);
  return true;
}

/* The messages of a stack taken from an inbox, in arrival order. */
static mb_msg_t *reverse(mb_msg_t *m) {
  mb_msg_t *out = NULL;
  while (m != NULL) {
    mb_msg_t *next = m->next;
    m->next = out;
    out = m;
    m = next;
  }
  return out;
}

mb_msg_t *mb__inbox_close(mb_proc_t *p) {
  return reverse(atomic_exchange(&p->inbox_head, MB__INBOX_CLOSED));
}

mb_msg_t *mb__inbox_peek(mb_proc_t *p) {
  mb_msg_t *m = atomic_load(&p->inbox_head);
  return m == MB__INBOX_CLOSED ? NULL : m;
}

int mb__signal(mb_pid_t to, mb_msg_t *m) {
  if (MB_PID_IS_REMOTE(to))
    return mb__dist_route(to, m);
  mb_proc_t *p = mb__proc_lookup(to);
  if (p == NULL) {
    mb_msg_free(m);
    return MB_ENOPROC;
  }
  bool ok = mb__proc_deliver(p, m);
  mb__proc_unref(p);
  return ok ? 0 : MB_ENOPROC;
}

int mb_proc_send(mb_pid_t to, mb_msg_t *m) {
  m->kind = MB_SIG_MSG;
  mb__signal(to, m);
  return 0;
}

static void publish_len(mb_proc_t *p) {
  atomic_store_explicit(&p->mq_len,
                        p->q_len + (size_t)(p->sq_tail - p->sq_head),
                        memory_order_relaxed);
}

static void drain_inbox(mb_proc_t *p) {
  /* Down before the inbox is taken (a signal pushed later keeps it up);
   * not written when it is down already, as it mostly is. */
  if (atomic_load_explicit(&p->sig_pending, memory_order_relaxed))
    atomic_store(&p->sig_pending, false);
  mb_msg_t *m = NULL;
  if (atomic_load(&p->inbox_head) != NULL) {
    /* The lock keeps readers (process_info) off the messages taken. */
    uv_mutex_lock(&p->lock);
    m = reverse(atomic_exchange(&p->inbox_head, NULL));
    uv_mutex_unlock(&p->lock);
  }
  while (m != NULL) {
    mb_msg_t *next = m->next;
    mb__link_handle(p, m);
    m = next;
  }
  publish_len(p);
}

bool mb__proc_handle_signals(mb_proc_t *p) {
  drain_inbox(p);
  return p->exit_reason != NULL;
}

static mb_msg_t *q_pop(mb_proc_t *p) {
  mb_msg_t *m = p->q_head;
  if (m == NULL)
    return NULL;
  p->q_head = m->next;
  if (p->q_head == NULL)
    p->q_tail = NULL;
  p->q_len--;
  return m;
}

/* ---- timers of receive and sleep ---- */

void mb__proc_timer_arm(mb_proc_t *p, uint64_t ms) {
  uv_mutex_lock(&p->lock);
  uint32_t gen = ++p->timer_gen;
  atomic_store(&p->timed_out, false);
  uv_mutex_unlock(&p->lock);
  p->timer_id = mb__timer_wake(ms, p->pid, gen);
}

void mb__proc_timer_disarm(mb_proc_t *p) {
  if (p->timer_id == 0)
    return;
  uv_mutex_lock(&p->lock);
  p->timer_gen++;
  atomic_store(&p->timed_out, false);
  uv_mutex_unlock(&p->lock);
  mb__timer_cancel(p->timer_id);
  p->timer_id = 0;
}

static bool timed_out(mb_proc_t *p) { return atomic_load(&p->timed_out); }

/* ---- first elements of saved messages ---- */

/* type: the Lua type of the message's first element, LUA_TNONE if the
 * message is not a table; id: its identity, for a light or full userdata
 * (an atom, a pid, a ref). */
typedef struct mb__sq_key_s {
  const void *id;
  int type;
} sq_key_t;

/* A prefilter's keys, when they are few and (but for `other`) userdata. */
#define PREFILTER_MAX 8
typedef struct {
  bool usable;
  bool other; /* it has a key that is not a userdata */
  int n;
  sq_key_t k[PREFILTER_MAX];
} prefilter_t;

static bool is_userdata(int type) {
  return type == LUA_TLIGHTUSERDATA || type == LUA_TUSERDATA;
}

/* The key of the message on top of the stack. */
static sq_key_t key_of(lua_State *L) {
  sq_key_t k = {NULL, LUA_TNONE};
  if (lua_type(L, -1) != LUA_TTABLE)
    return k;
  k.type = lua_rawgeti(L, -1, 1);
  if (is_userdata(k.type))
    k.id = lua_topointer(L, -1);
  lua_pop(L, 1);
  return k;
}

/* Make room for the key of saved entry `i` (i >= sq_head); raises on
 * failure, before anything is taken. */
static void keys_reserve(lua_State *L, mb_proc_t *p, lua_Integer i) {
  if (p->sq_head == p->sq_tail)
    p->sq_base = p->sq_head;
  if (i - p->sq_base < p->sq_cap)
    return;
  /* Drop the room of entries already gone before growing. */
  lua_Integer gone = p->sq_head - p->sq_base;
  if (gone > 0) {
    memmove(p->sq_keys, p->sq_keys + gone,
            (size_t)(p->sq_tail - p->sq_head) * sizeof *p->sq_keys);
    p->sq_base = p->sq_head;
    if (i - p->sq_base < p->sq_cap)
      return;
  }
  lua_Integer cap = p->sq_cap ? p->sq_cap * 2 : 16;
  sq_key_t *k = realloc(p->sq_keys, (size_t)cap * sizeof *k);
  if (k == NULL)
    luaL_error(L, "not enough memory");
  p->sq_keys = k;
  p->sq_cap = cap;
}

static sq_key_t *key_at(mb_proc_t *p, lua_Integer i) {
  return &p->sq_keys[i - p->sq_base];
}

/* Read the prefilter at index 3, if any. */
static void prefilter_load(lua_State *L, prefilter_t *pf) {
  pf->usable = lua_type(L, 3) == LUA_TTABLE;
  pf->other = false;
  pf->n = 0;
  if (!pf->usable)
    return;
  lua_pushnil(L);
  while (lua_next(L, 3) != 0) {
    int type = lua_type(L, -2);
    if (!is_userdata(type)) {
      pf->other = true;
    } else if (pf->n < PREFILTER_MAX) {
      pf->k[pf->n].type = type;
      pf->k[pf->n++].id = lua_topointer(L, -2);
    } else {
      pf->usable = false; /* too many: matches() decides */
    }
    lua_pop(L, 1);
  }
}

/* Can the prefilter tell, from the key alone, that it turns the message
 * away?  Only userdata are told apart here; matches() decides the rest. */
static bool prefilter_rejects(const prefilter_t *pf, const sq_key_t *k) {
  if (!pf->usable)
    return false;
  if (k->type == LUA_TNONE || k->type == LUA_TNIL)
    return true;
  if (!is_userdata(k->type))
    return !pf->other;
  for (int j = 0; j < pf->n; j++)
    if (pf->k[j].type == k->type && pf->k[j].id == k->id)
      return false;
  return true;
}

/* ---- the save queue ---- */

static void push_saved(lua_State *L, mb_proc_t *p) {
  if (p->saved_ref == LUA_NOREF) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    p->saved_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->sq_head = p->sq_tail = 1;
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->saved_ref);
}

/* Remove entry i of the save queue at `t`, keeping the others in order. */
static void saved_remove(lua_State *L, mb_proc_t *p, int t, lua_Integer i) {
  if (i == p->sq_head) {
    lua_pushnil(L);
    lua_rawseti(L, t, p->sq_head++);
  } else {
    for (lua_Integer j = i; j < p->sq_tail - 1; j++) {
      lua_rawgeti(L, t, j + 1);
      lua_rawseti(L, t, j);
    }
    memmove(key_at(p, i), key_at(p, i + 1),
            (size_t)(p->sq_tail - 1 - i) * sizeof *p->sq_keys);
    lua_pushnil(L);
    lua_rawseti(L, t, --p->sq_tail);
  }
  if (p->sq_head == p->sq_tail)
    p->sq_head = p->sq_tail = 1;
}

/* Does the matcher at index 1 accept the value on top?  The value stays.
 * A prefilter at index 3 (a table of the first elements the matcher can
 * accept) turns most messages away without calling into Lua. */
static bool matches(lua_State *L) {
  if (lua_type(L, 3) == LUA_TTABLE) {
    if (lua_type(L, -1) != LUA_TTABLE)
      return false;
    lua_rawgeti(L, -1, 1);
    bool may = lua_rawget(L, 3) != LUA_TNIL;
    lua_pop(L, 1);
    if (!may)
      return false;
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  bool ok = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ok;
}

/* Does the matcher at index 1 accept saved entry i of the save queue at
 * t?  As matches() without a prefilter, with less moving on the stack: a
 * selective receive calls it for every message it goes past. */
static bool matches_saved(lua_State *L, int t, lua_Integer i) {
  lua_pushvalue(L, 1);
  lua_rawgeti(L, t, i);
  lua_call(L, 1, 1);
  bool ok = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ok;
}

/* Try to take a message: pushes it and returns 1, or pushes nothing and
 * returns 0.  With a GenServer's call label at slot 4 (receive_call), a
 * queued {Label, From, Request} is pushed as Label, From, Request: 3. */
static int take(lua_State *L, mb_proc_t *p, lua_Integer *scanned) {
  bool has_matcher = !lua_isnil(L, 1);
  if (p->saved_ref != LUA_NOREF && p->sq_head + *scanned < p->sq_tail) {
    prefilter_t pf;
    prefilter_load(L, &pf);
    push_saved(L, p);
    int t = lua_gettop(L);
    if (has_matcher && lua_isnil(L, 3)) {
      for (lua_Integer i = p->sq_head + *scanned; i < p->sq_tail; i++) {
        if (matches_saved(L, t, i)) {
          lua_rawgeti(L, t, i);
          saved_remove(L, p, t, i);
          lua_remove(L, t);
          return 1;
        }
        ++*scanned;
      }
    }
    for (lua_Integer i = p->sq_head + *scanned; i < p->sq_tail; i++) {
      if (has_matcher && prefilter_rejects(&pf, key_at(p, i))) {
        ++*scanned;
        continue;
      }
      lua_rawgeti(L, t, i);
      if (!has_matcher || matches(L)) {
        saved_remove(L, p, t, i);
        lua_remove(L, t);
        return 1;
      }
      lua_pop(L, 1);
      ++*scanned;
    }
    lua_pop(L, 1);
  }
  while (p->q_head != NULL) {
    if (has_matcher) {
      /* Room first: raising now loses nothing. */
      push_saved(L, p);
      keys_reserve(L, p, p->sq_tail);
    }
    mb_msg_t *m = q_pop(p);
    if (!has_matcher) {
      /* Decoding may raise (memory): keep the message until it is done. */
      m->next = p->q_head;
      p->q_head = m;
      if (p->q_tail == NULL)
        p->q_tail = m;
      p->q_len++;
      /* A traced process's trace events show the message whole.  A plain
       * receive has no label: one type test. */
      const mb__atom_t *label = mb__to_atom(L, 4);
      if (label != NULL && MB__TRACING(p, MB_TRACE_RECEIVE | MB_TRACE_CALL))
        label = NULL;
      int n = label != NULL && mb__msg_call_fields(L, m, label) ? 3 : 1;
      if (n == 3) {
        mb__push_atom(L, label);
        lua_rotate(L, -3, 1);
      } else {
        mb_msg_decode(L, m);
      }
      q_pop(p);
      mb__proc_uncount(p, m);
      mb_msg_free(m);
      return n;
    }
    mb_msg_decode(L, m);
    mb__proc_uncount(p, m);
    mb_msg_free(m);
    /* Saved before the matcher runs, so an error in it loses nothing. */
    *key_at(p, p->sq_tail) = key_of(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, p->sq_tail++);
    lua_remove(L, -2);
    if (matches(L)) {
      push_saved(L, p);
      saved_remove(L, p, lua_gettop(L), p->sq_tail - 1);
      lua_pop(L, 1);
      return 1;
    }
    lua_pop(L, 1);
    ++*scanned;
  }
  return 0;
}

void mb__proc_took(mb_proc_t *p) {
  atomic_store_explicit(
      &p->reductions,
      atomic_load_explicit(&p->reductions, memory_order_relaxed) + 1,
      memory_order_relaxed);
  mb__sched_note_message();
  publish_len(p);
}

static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mb_proc_t *p = MB_PROC(L);
  lua_Integer scanned = (lua_Integer)ctx;
  if (mb__proc_handle_signals(p))
    return mb__proc_yield(L, MB_YIELD_EXIT, ctx, receive_k);
  int n = take(L, p, &scanned);
  if (n > 0) {
    if (MB__TRACING(p, MB_TRACE_RECEIVE | MB_TRACE_CALL))
      mb__trace_receive(p, L);
    mb__proc_took(p);
    mb__proc_timer_disarm(p);
    return n;
  }
  publish_len(p);
  lua_Integer timeout = lua_tointeger(L, 2);
  if (timeout == 0 || (p->timer_id != 0 && timed_out(p))) {
    mb__proc_timer_disarm(p);
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  if (timeout > 0 && p->timer_id == 0)
    mb__proc_timer_arm(p, (uint64_t)timeout);
  return mb__proc_yield(L, MB_YIELD_WAIT, (lua_KContext)scanned, receive_k);
}

mb_proc_t *mb__proc_self(lua_State *L, const char *fname) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL)
    luaL_error(L, "%s: not called inside a moonbeam process", fname);
  if (L != p->L && p->co_depth == 0)
    luaL_error(L, "%s: cannot block inside a coroutine resumed from C", fname);
  return p;
}

/* The timeout at slot 2 (argument targ), in ms: -1 for none. */
static int check_timeout(lua_State *L, int targ) {
  if (!lua_isnil(L, 2)) {
    if (!lua_isnumber(L, 2))
      return luaL_typeerror(L, targ, "number");
    lua_Number t = lua_tonumber(L, 2);
    if (t < 0)
      return luaL_argerror(L, targ, "timeout must not be negative");
    if (t == HUGE_VAL)
      lua_pushinteger(L, -1);
    else
      lua_pushinteger(L, (lua_Integer)t);
  } else {
    lua_pushinteger(L, -1);
  }
  lua_replace(L, 2);
  return 0;
}

/* receive([matcher, [timeout_ms, [prefilter]]]) or receive(timeout_ms)
 *   -> message | nil, "timeout" */
int mb_lua_receive(lua_State *L) {
  mb__proc_self(L, "receive");
  if (lua_gettop(L) == 0) { /* receive(): no matcher, no timeout */
    lua_pushnil(L);
    lua_pushinteger(L, -1);
    lua_pushnil(L);
    return receive_k(L, LUA_OK, 0);
  }
  int targ = lua_type(L, 1) == LUA_TFUNCTION ? 2 : 1;
  if (targ == 1) {
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_insert(L, 1);
  }
  lua_settop(L, 3);
  if (!lua_isnil(L, 3))
    luaL_checktype(L, 3, LUA_TTABLE);
  check_timeout(L, targ);
  return receive_k(L, LUA_OK, 0);
}

/* receive_call(timeout_ms, label) -> message | nil, "timeout" |
 * Label, From, Request: receive() for a GenServer's loop, which takes a
 * call {Label, From, Request} that was queued undecoded as its three
 * values, without the tuple around them (a traced process gets it whole,
 * as its trace events show it). */
int mb_lua_receive_call(lua_State *L) {
  mb__proc_self(L, "receive");
  if (mb__to_atom(L, 2) == NULL)
    return luaL_typeerror(L, 2, "atom");
  lua_settop(L, 2);
  lua_pushnil(L); /* no matcher */
  lua_insert(L, 1);
  lua_pushnil(L); /* no prefilter */
  lua_insert(L, 3);
  check_timeout(L, 1);
  return receive_k(L, LUA_OK, 0);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  mb_proc_t *p = MB_PROC(L);
  if (mb__proc_handle_signals(p))
    return mb__proc_yield(L, MB_YIELD_EXIT, 0, sleep_k);
  if (timed_out(p)) {
    mb__proc_timer_disarm(p);
    return 0;
  }
  return mb__proc_yield(L, MB_YIELD_WAIT, 0, sleep_k);
}

/* sleep(ms): suspend the process; messages stay queued. */
int mb_lua_sleep(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "sleep");
  lua_Number t = luaL_checknumber(L, 1);
  luaL_argcheck(L, t >= 0, 1, "time must not be negative");
  mb__proc_timer_arm(p, (uint64_t)t);
  return sleep_k(L, LUA_OK, 0);
}

/* Remove a queued {'DOWN', ref, ...} message (demonitor with flush). */
void mb__queue_remove(mb_proc_t *p, mb_msg_t *prev, mb_msg_t *m) {
  if (prev != NULL)
    prev->next = m->next;
  else
    p->q_head = m->next;
  if (p->q_tail == m)
    p->q_tail = prev;
  p->q_len--;
  mb__proc_uncount(p, m);
}

bool mb__queue_drop_down(mb_proc_t *p, uint64_t ref) {
  /* Undecoded messages remember whether they came as that DOWN. */
  for (mb_msg_t *prev = NULL, *m = p->q_head; m != NULL;
       prev = m, m = m->next) {
    if ((m->flags & MB_SIGF_DOWN) && m->ref == ref) {
      mb__queue_remove(p, prev, m);
      mb_msg_free(m);
      return true;
    }
  }
  return false;
}

int mb__proc_flush_down(lua_State *L, mb_proc_t *p, uint64_t ref) {
  drain_inbox(p);
  if (mb__queue_drop_down(p, ref)) {
    publish_len(p);
    return 0;
  }
  if (p->saved_ref == LUA_NOREF || p->sq_head == p->sq_tail)
    return 0;
  push_saved(L, p);
  int t = lua_gettop(L);
  for (lua_Integer i = p->sq_head; i < p->sq_tail; i++) {
    lua_rawgeti(L, t, i);
    bool hit = false;
    if (mb__table_kind(L, -1) == MB_KIND_TUPLE) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      mb__lref_t *r = mb__to_ref(L, -1);
      hit = mb__to_atom(L, -2) == mb__atoms.DOWN && r != NULL && r->id == ref;
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (hit) {
      saved_remove(L, p, t, i);
      break;
    }
  }
  lua_pop(L, 1);
  publish_len(p);
  return 0;
}

/* A destination: a pid, a registered name, or {Name, Node}. */
static mb_pid_t check_dest(lua_State *L, int idx, const char *fname) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p != NULL)
    return mb__pid_key(p);
  const mb__atom_t *rname, *rnode;
  if (mb__to_remote_name(L, idx, &rname, &rnode)) {
    mb_pid_t pid = mb__dist_resolve(rname, rnode);
    if (pid == 0 && mb__dist_node() == NULL)
      luaL_error(L, "%s: this node is not distributed (node %s)", fname,
                 rnode->name);
    return pid;
  }
  if (lua_type(L, idx) != LUA_TSTRING && mb__to_atom(L, idx) == NULL)
    luaL_typeerror(L, idx, "pid or registered name");
  const mb__atom_t *name = mb__check_name(L, idx);
  mb_pid_t pid = mb__registry_whereis(name);
  if (pid == 0)
    luaL_error(L, "%s: no process registered as '%s'", fname, name->name);
  return pid;
}

/* Send to another node: the value is encoded as a term at once. */
static int send_remote(lua_State *L, mb_pid_t to) {
  char err[600];
  mb_msg_t *m;
  int r = mb__etf_encode(L, 2, "msg", &m, err, sizeof err);
  if (r != 0)
    return mb_lua_error(L, "send", r, r == MB_EBADTERM ? err : NULL);
  m->flags |= MB_MSGF_ETF;
  m->from = mb_lua_self_pid(L);
  mb__dist_route(to, m);
  return 0;
}

/* A send the sender is traced for: after it went, so that a send that
 * raises is not reported. */
static int traced_send(lua_State *L) {
  mb_proc_t *self = MB_PROC(L);
  if (self != NULL && MB__TRACING(self, MB_TRACE_SEND))
    mb__trace_send(self, L, 1, 2);
  return 0;
}

/* send(dest, msg): dest is a pid, a registered name or {Name, Node}. */
int mb_lua_send(lua_State *L) { return mb_lua_send_or(L, NULL); }

int mb_lua_send_or(lua_State *L, lua_CFunction other) {
  mb__lpid_t *lp = mb__to_pid(L, 1);
  if (lp == NULL && other != NULL && other(L))
    return 0;
  if (lp != NULL && lp->node != 0) {
    luaL_checkany(L, 2);
    send_remote(L, mb__pid_key(lp));
    return traced_send(L);
  }
  mb_pid_t to = lp ? lp->id : check_dest(L, 1, "send");
  luaL_checkany(L, 2);
  if (MB_PID_IS_REMOTE(to)) {
    send_remote(L, to);
    return traced_send(L);
  }
  mb_msg_t *m = mb_lua_encode(L, 2, "msg", "send");
  mb_proc_t *self = MB_PROC(L);
  m->from = self != NULL ? self->pid : 0;
  if (lp != NULL && lp->proc == NULL)
    lp->proc = mb__proc_lookup(to);
  if (lp != NULL && lp->proc != NULL)
    mb__proc_deliver(lp->proc, m); /* dropped if it has ended */
  else
    mb_proc_send(to, m);
  if (self != NULL && MB__TRACING(self, MB_TRACE_SEND))
    mb__trace_send(self, L, 1, 2);
  return 0;
}

/* Push a list of the first `max` messages of the calling process's own
 * queue, oldest first: those a selective receive has looked at and left
 * (as they are), then decoded copies of those it has not looked at yet.
 * Nothing is taken off the queue; a decode that raises leaves it as it
 * was. */
int mb__proc_peek_self(lua_State *L, mb_proc_t *p, int max) {
  drain_inbox(p);
  lua_createtable(L, max < 16 ? max : 16, 0);
  int out = lua_gettop(L), n = 0;
  if (p->saved_ref != LUA_NOREF) {
    push_saved(L, p);
    for (lua_Integer i = p->sq_head; i < p->sq_tail && n < max; i++) {
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, out, ++n);
    }
    lua_pop(L, 1);
  }
  for (mb_msg_t *m = p->q_head; m != NULL && n < max; m = m->next) {
    mb_msg_decode(L, m);
    lua_rawseti(L, out, ++n);
  }
  return 1;
}
