/* Timers run on the node's libuv loop (loop.c).  Other threads hand start
 * and cancel requests to the loop through a queue; the table of live timers
 * (by id) is shared under `lock` so that cancel can answer at once how much
 * time was left.
 *
 * Waking the loop thread costs more than most of what a timer guards: a
 * gen_server.call arms a 5 s timeout and cancels it microseconds later.  So
 * a timer of at least DEFER_MS is not handed to the loop at once: it waits
 * in the deferred list, which the loop sweeps SWEEP_MS after the first timer
 * joined it.  A deferred timer cancelled before the sweep never reaches the
 * loop; one still live starts then, for what is left of its time, so it
 * fires at its deadline all the same.  The loop is woken once per sweep,
 * however many timers come and go meanwhile, and not at all while none is
 * armed. */
#include <stdlib.h>

#include <lauxlib.h>

#include "internal.h"

#define TIMER_MAGIC 0x7431u
#define DEFER_MS 20u /* a timer this long may wait for a sweep */
#define SWEEP_MS 5u  /* a sweep comes this long after the first deferral */

typedef struct timer_s {
  uv_timer_t handle;
  unsigned magic; /* tells our timers from other uv_timer_t at stop */
  uint64_t id;
  mb__timer_kind_t kind;
  mb_pid_t pid;
  uint32_t gen;           /* WAKE: the process's timer generation */
  mb_msg_t *msg;          /* SEND: the message, owned by the timer */
  const mb__atom_t *name; /* SEND to a registered name, looked up at the end */
  uint64_t ms;
  uint64_t deadline;        /* uv_hrtime() at which it fires */
  bool cancelled;           /* under lock */
  bool queued;              /* in the request queue; under lock */
  bool deferred;            /* in the deferred list; under lock */
  bool started;             /* loop thread only */
  struct timer_s *next_req; /* under lock */
} timer_t_;

static uv_mutex_t lock;
static mb__map_t live; /* id -> timer_t_* */
static timer_t_ *req_head, *req_tail;
static timer_t_ *deferred_head; /* under lock, linked by next_req */
static bool sweep_due;          /* under lock: a sweep is on its way */
static timer_t_ sweeper;        /* loop thread; magic 0, not one of ours */

static void close_cb(uv_handle_t *h) {
  timer_t_ *t = (timer_t_ *)h;
  mb_msg_free(t->msg);
  free(t);
}

static void fire(uv_timer_t *h) {
  timer_t_ *t = h->data;
  uv_mutex_lock(&lock);
  bool cancelled = t->cancelled;
  if (!cancelled)
    mb__map_del(&live, t->id);
  uv_mutex_unlock(&lock);
  if (cancelled)
    return; /* the cancel request closes it */
  if (t->kind == MB_TIMER_WAKE) {
    mb_proc_t *p = mb__proc_lookup(t->pid);
    if (p != NULL) {
      uv_mutex_lock(&p->lock);
      bool current = p->timer_gen == t->gen;
      if (current)
        atomic_store(&p->timed_out, true);
      uv_mutex_unlock(&p->lock);
      if (current)
        mb__proc_wake(p);
      mb__proc_unref(p);
    }
  } else {
    mb_pid_t to = t->name ? mb__registry_whereis(t->name) : t->pid;
    if (to != 0)
      mb_proc_send(to, t->msg);
    else
      mb_msg_free(t->msg);
    t->msg = NULL;
  }
  uv_close((uv_handle_t *)h, close_cb);
}

/* Loop thread: start a timer for what is left until its deadline. */
static void start_on_loop(timer_t_ *r) {
  uv_timer_init(mb__loop(), &r->handle);
  r->handle.data = r;
  r->started = true;
  /* libuv counts whole milliseconds from the loop's time, which is the
   * clock rounded down: round the time left up, and add the millisecond
   * the loop's time may be behind, so that a timer never fires before its
   * deadline. */
  uv_update_time(mb__loop());
  uint64_t now = uv_hrtime();
  uint64_t left =
      r->deadline > now ? (r->deadline - now + 999999u) / 1000000u + 1 : 0;
  uv_timer_start(&r->handle, fire, left, 0);
}

/* A queued timer is either new (start it) or cancelled (stop it, or free it
 * if it never started).  Requests are taken one at a time under the lock,
 * so a cancel that arrives meanwhile can queue the same timer again. */
static void on_requests(void *arg) {
  (void)arg;
  for (;;) {
    uv_mutex_lock(&lock);
    timer_t_ *r = req_head;
    if (r != NULL) {
      req_head = r->next_req;
      if (req_head == NULL)
        req_tail = NULL;
      r->queued = false;
    }
    bool cancelled = r != NULL && r->cancelled;
    uv_mutex_unlock(&lock);
    if (r == NULL)
      return;
    if (cancelled && r->started) {
      uv_timer_stop(&r->handle);
      uv_close((uv_handle_t *)&r->handle, close_cb);
    } else if (cancelled) {
      close_cb((uv_handle_t *)&r->handle);
    } else if (!r->started) {
      start_on_loop(r);
    }
  }
}

/* Call with lock held; returns true if the loop must be told. */
static bool request(timer_t_ *t) {
  if (t->queued)
    return false;
  t->queued = true;
  t->next_req = NULL;
  if (req_tail)
    req_tail->next_req = t;
  else
    req_head = t;
  req_tail = t;
  return req_head == t;
}

/* Loop thread: start the deferred timers still live, free the others. */
static void sweep(uv_timer_t *h) {
  (void)h;
  uv_mutex_lock(&lock);
  timer_t_ *t = deferred_head;
  deferred_head = NULL;
  sweep_due = false;
  uv_mutex_unlock(&lock);
  while (t != NULL) {
    timer_t_ *next = t->next_req;
    uv_mutex_lock(&lock);
    t->deferred = false;
    bool cancelled = t->cancelled;
    uv_mutex_unlock(&lock);
    /* A cancel from now on goes through the request queue, which this
     * thread reads after the timer has started. */
    if (cancelled)
      close_cb((uv_handle_t *)&t->handle);
    else
      start_on_loop(t);
    t = next;
  }
}

static void arm_sweeper(void *arg) {
  (void)arg;
  uv_timer_start(&sweeper.handle, sweep, SWEEP_MS, 0);
}

/* Call with lock held; returns true if the loop must be told. */
static bool defer(timer_t_ *t) {
  t->deferred = true;
  t->next_req = deferred_head;
  deferred_head = t;
  bool tell = !sweep_due;
  sweep_due = true;
  return tell;
}

static uint64_t start(timer_t_ *t, uint64_t id) {
  t->id = id;
  t->deadline = uv_hrtime() + t->ms * 1000000u;
  bool later = t->ms >= DEFER_MS;
  uv_mutex_lock(&lock);
  int err = mb__map_put(&live, id, t);
  bool tell = !err && (later ? defer(t) : request(t));
  uv_mutex_unlock(&lock);
  if (err) {
    mb_msg_free(t->msg);
    free(t);
    return 0;
  }
  if (later) {
    if (tell)
      mb__loop_call(arm_sweeper, NULL);
  } else if (tell) {
    mb__loop_call(on_requests, NULL);
  } else {
    mb__loop_wake(); /* queued behind cancels that did not wake it */
  }
  return id;
}

uint64_t mb__timer_wake(uint64_t ms, mb_pid_t pid, uint32_t gen) {
  timer_t_ *t = calloc(1, sizeof *t);
  if (t == NULL)
    return 0;
  t->magic = TIMER_MAGIC;
  t->kind = MB_TIMER_WAKE;
  t->pid = pid;
  t->gen = gen;
  t->ms = ms;
  return start(t, mb__ref_next());
}

/* Send `m` to `dest` (or to the process registered as `name` then) after
 * ms.  `id` is the timer's ref. */
static int send_later(uint64_t ms, mb_pid_t dest, const mb__atom_t *name,
                      mb_msg_t *m, uint64_t id) {
  timer_t_ *t = calloc(1, sizeof *t);
  if (t == NULL) {
    mb_msg_free(m);
    return MB_ENOMEM;
  }
  t->magic = TIMER_MAGIC;
  t->kind = MB_TIMER_SEND;
  t->pid = dest;
  t->name = name;
  t->msg = m;
  t->ms = ms;
  return start(t, id) ? 0 : MB_ENOMEM;
}

int64_t mb__timer_cancel(uint64_t id) {
  int64_t left = -1;
  uv_mutex_lock(&lock);
  timer_t_ *t = mb__map_del(&live, id);
  bool tell = false;
  if (t != NULL) {
    t->cancelled = true;
    uint64_t now = uv_hrtime();
    left = t->deadline > now ? (int64_t)((t->deadline - now) / 1000000u) : 0;
    tell = !t->deferred && request(t); /* a deferred one: the sweep frees it */
  }
  uv_mutex_unlock(&lock);
  /* A cancelled timer can wait for the loop's next turn to be freed: no
   * need to wake it (a call that got its reply cancels its timeout). */
  if (tell)
    mb__loop_call_later(on_requests, NULL);
  return left;
}

static void init_sweeper(void *arg) {
  (void)arg;
  uv_timer_init(mb__loop(), &sweeper.handle);
}

int mb__timer_start(void) {
  mb__map_init(&live);
  uv_mutex_init(&lock);
  deferred_head = NULL;
  sweep_due = false;
  /* Queued before any timer can ask for a sweep. */
  return mb__loop_call(init_sweeper, NULL);
}

static uv_close_cb closer(uv_handle_t *h) {
  return h->type == UV_TIMER && ((timer_t_ *)h)->magic == TIMER_MAGIC ? close_cb
                                                                      : NULL;
}

/* Stops the loop too: timers are the loop's first users. */
void mb__timer_stop(void) {
  mb__loop_stop(closer);
  /* Deferred timers never reached the loop. */
  while (deferred_head != NULL) {
    timer_t_ *t = deferred_head;
    deferred_head = t->next_req;
    close_cb((uv_handle_t *)&t->handle);
  }
  sweep_due = false;
  mb__map_free(&live);
}

/* send_after(ms, pid or name, msg) -> the timer's ref */
int mb_lua_send_after(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "time must not be negative");
  mb__lpid_t *lp = mb__to_pid(L, 2);
  const mb__atom_t *name = lp ? NULL : mb__check_name(L, 2);
  luaL_checkany(L, 3);
  mb_msg_t *m = mb_lua_encode(L, 3, "msg", "send_after");
  uint64_t id = mb__ref_next();
  int err = send_later((uint64_t)ms, lp ? lp->id : 0, name, m, id);
  if (err)
    mb_lua_error(L, "send_after", err, NULL);
  mb__push_ref(L, id);
  return 1;
}

/* cancel_timer(ref) -> milliseconds left, or false if it fired */
int mb_lua_cancel_timer(lua_State *L) {
  mb__lref_t *r = mb__to_ref(L, 1);
  if (r == NULL)
    return luaL_typeerror(L, 1, "timer ref");
  int64_t left = mb__timer_cancel(r->id);
  if (left < 0)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, (lua_Integer)left);
  return 1;
}
