/* The M:N scheduler: N threads, each with its own run queue, and a watchdog
 * thread that ends time slices.
 *
 * - A process made runnable by a message from a process on a scheduler
 *   thread goes to that thread's `runnext` slot: it runs as soon as the
 *   sender yields, in what is left of the sender's time slice (so a pair of
 *   processes exchanging messages costs no queueing, yet cannot keep the
 *   others waiting for longer than one slice).
 * - Other runnable processes go to the back of a queue.  An idle scheduler
 *   steals from the others before it sleeps: where more than one process
 *   waits (the one at the head runs as soon as its owner is free), or
 *   where one waits on a scheduler the watchdog finds stalled (no process
 *   began to run there for a whole slice's time: the one it runs is in a
 *   C call that cannot yield, or in a __gc as its state closes).
 * - The watchdog looks at every scheduler each tick; a process past the
 *   end of its slice is poked (see mb__proc_poke) and yields.
 * - An idle node costs nothing: a scheduler with nothing to run, after a
 *   short spin, sleeps until work is queued for it, and the watchdog,
 *   once no process has run or waited for IDLE_TICKS ticks, sleeps until a
 *   scheduler starts one or queues one.  Neither wakes on a timer.
 *
 * Each queue is a FIFO of processes linked through rq_next, under the
 * queue's lock.  A process is in at most one queue or runnext slot, and
 * only while its state is RUNNABLE. */
#include <sched.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "internal.h"

#define TICK_NS 100000u /* the watchdog's tick while processes run */
#define SLICE_TICKS 5   /* a time slice: 5 ticks, about 0.5 ms */
#define IDLE_TICKS 10   /* the watchdog sleeps after 1 ms without a run */
#define SPIN_ROUNDS 64

typedef struct {
  uv_thread_t thread;
  uv_mutex_t lock;
  mb_proc_t *head, *tail;
  atomic_size_t len;
  int index;
  atomic_bool sleeping; /* waiting on `wakeup` under sleep_lock */
  uv_cond_t wakeup;
  /* The running process.  The watchdog raises `watching` before it reads
   * `running` and pokes it; a scheduler that clears `running` to end a
   * process waits until `watching` is down before the process's state
   * may be closed (a hazard pointer, in short). */
  _Atomic(mb_proc_t *) running;
  atomic_bool watching;
  /* Slices are counted, not timed: the watchdog pokes the process that
   * runs in a slice it has seen for SLICE_TICKS ticks, and marks the slice
   * spent.  The scheduler reads no clock. */
  atomic_uint_fast64_t slice;
  atomic_uint_fast64_t spent; /* the last slice the watchdog ended */
  atomic_uint_fast64_t runs;  /* processes run: written by the owner */
  /* Messages taken by receive on this thread: written by the owner. */
  atomic_uint_fast64_t msgs;
  /* Time a process ran here, sampled by the watchdog at each tick: the
   * time since its last tick is counted busy when a process runs. */
  atomic_uint_fast64_t busy_ns;
  atomic_bool stalled;        /* processes wait, and none began to run */
  uint64_t wd_slice, wd_runs; /* watchdog thread only */
  int wd_ticks, wd_stall_ticks;
  /* Set by the owner thread; taken by it, or by a thief while the owner
   * is stalled (whoever exchanges it out owns the process). */
  _Atomic(mb_proc_t *) runnext;
} sched_t;

static sched_t *scheds;
static int nscheds;
static atomic_bool stopping;
static atomic_int nsleeping;
static atomic_uint round_robin;
static uv_mutex_t sleep_lock;
static uv_thread_t watchdog;
/* The watchdog sleeps on wd_wakeup under wd_lock with wd_sleeping raised;
 * a scheduler that starts a process wakes it (see run()). */
static uv_mutex_t wd_lock;
static uv_cond_t wd_wakeup;
static atomic_bool wd_sleeping;
static _Thread_local sched_t *current;
/* The monotonic time the node's schedulers started at; the watchdog's
 * clock at its last tick (watchdog thread only, 0 after it slept). */
static uint64_t started_ns, wd_last_ns;

int mb__sched_count(void) { return nscheds; }

static void push(sched_t *s, mb_proc_t *p) {
  p->rq_next = NULL;
  uv_mutex_lock(&s->lock);
  if (s->tail)
    s->tail->rq_next = p;
  else
    s->head = p;
  s->tail = p;
  atomic_fetch_add(&s->len, 1);
  uv_mutex_unlock(&s->lock);
}

static mb_proc_t *pop(sched_t *s) {
  if (atomic_load(&s->len) == 0)
    return NULL;
  uv_mutex_lock(&s->lock);
  mb_proc_t *p = s->head;
  if (p != NULL) {
    s->head = p->rq_next;
    if (s->head == NULL)
      s->tail = NULL;
    atomic_fetch_sub(&s->len, 1);
  }
  uv_mutex_unlock(&s->lock);
  return p;
}

static void wake(sched_t *s) {
  uv_mutex_lock(&sleep_lock);
  uv_cond_signal(&s->wakeup);
  uv_mutex_unlock(&sleep_lock);
}

static void wake_watchdog(void);

static sched_t *find_sleeper(void) {
  if (atomic_load(&nsleeping) == 0)
    return NULL;
  for (int i = 0; i < nscheds; i++)
    if (atomic_load(&scheds[i].sleeping))
      return &scheds[i];
  return NULL;
}

void mb__sched_wake_idle(void) {
  sched_t *sleeper = find_sleeper();
  if (sleeper != NULL)
    wake(sleeper);
}

/* Queue on this scheduler; a second waiting process is work another core
 * could do now, so wake a sleeping scheduler to steal it. */
static void push_local(sched_t *s, mb_proc_t *p) {
  push(s, p);
  if (atomic_load(&s->len) >= 2)
    mb__sched_wake_idle();
  /* Queued by a scheduler running no process (one that ends a process,
   * maybe to stall in its finalizers): the watchdog must look. */
  wake_watchdog();
}

void mb__sched_enqueue(mb_proc_t *p) {
  sched_t *s = current;
  if (s != NULL) {
    push_local(s, p);
    return;
  }
  /* From outside the schedulers (timers, the host): prefer a sleeping
   * scheduler, which will find the process in its own queue. */
  sched_t *sleeper = find_sleeper();
  s = sleeper ? sleeper
              : &scheds[atomic_fetch_add(&round_robin, 1) % (unsigned)nscheds];
  push(s, p);
  if (atomic_load(&s->sleeping))
    wake(s);
  else if (atomic_load(&s->len) >= 2 && (sleeper = find_sleeper()) != NULL)
    wake(sleeper); /* as push_local: work another core could do now */
}

void mb__sched_wake(mb_proc_t *p) {
  sched_t *s = current;
  /* The waker's slice is spent, and it has not yielded (a C call): the
   * woken process goes where others can take it. */
  if (s == NULL ||
      atomic_load_explicit(&s->running, memory_order_relaxed) == NULL ||
      atomic_load(&s->spent) == atomic_load(&s->slice)) {
    mb__sched_enqueue(p);
    return;
  }
  p->slice = atomic_load_explicit(&s->slice, memory_order_relaxed);
  mb_proc_t *old = atomic_exchange(&s->runnext, p);
  if (old != NULL)
    push_local(s, old);
}

/* Does another scheduler's queue hold a process it will not run soon? */
static bool stealable(sched_t *s) {
  size_t len = atomic_load(&s->len);
  return len >= 2 || (atomic_load(&s->stalled) &&
                      (len == 1 || atomic_load(&s->runnext) != NULL));
}

static mb_proc_t *steal(sched_t *self) {
  for (int i = 1; i < nscheds; i++) {
    sched_t *victim = &scheds[(self->index + i) % nscheds];
    if (!stealable(victim))
      continue;
    mb_proc_t *p = NULL;
    if (atomic_load(&victim->stalled))
      p = atomic_exchange(&victim->runnext, NULL);
    if (p == NULL)
      p = pop(victim);
    if (p != NULL)
      return p;
  }
  return NULL;
}

/* The head of a queue longer than this busy scheduler's, when there is
 * one: busy processes spread evenly over the schedulers, so that none
 * waits behind more of them than it would elsewhere (an idle scheduler,
 * whose queue is empty, steals instead; one that is never idle must
 * balance as it goes). */
static mb_proc_t *balance(sched_t *self) {
  size_t own = atomic_load(&self->len);
  if (own == 0)
    return NULL;
  for (int i = 1; i < nscheds; i++) {
    sched_t *v = &scheds[(self->index + i) % nscheds];
    size_t len = atomic_load(&v->len);
    if (len >= 2 && len > own + 1) {
      mb_proc_t *p = pop(v);
      if (p != NULL)
        return p;
    }
  }
  return NULL;
}

static bool any_work(sched_t *self) {
  for (int i = 0; i < nscheds; i++)
    if (&scheds[i] == self ? atomic_load(&self->len) > 0
                           : stealable(&scheds[i]))
      return true;
  return false;
}

/* The next process to run, and whether it starts a new slice. */
static mb_proc_t *next_proc(sched_t *s, bool *new_slice) {
  mb_proc_t *p = atomic_exchange(&s->runnext, NULL);
  if (p != NULL) {
    if (atomic_load(&s->spent) != p->slice) {
      *new_slice = false;
      return p;
    }
    push_local(s, p); /* its slice is spent: to the back of the queue */
  }
  for (;;) {
    p = nscheds > 1 ? balance(s) : NULL;
    if (p == NULL)
      p = pop(s);
    if (p == NULL)
      p = steal(s);
    if (p == NULL && !atomic_load(&stopping) && mb__proc_pool_fill())
      continue; /* idle time made a state for a later spawn: look again */
    for (int i = 0; p == NULL && i < SPIN_ROUNDS; i++) {
      sched_yield();
      p = pop(s);
      if (p == NULL)
        p = steal(s);
    }
    if (p != NULL) {
      *new_slice = true;
      return p;
    }
    if (atomic_load(&stopping))
      return NULL;
    /* No timeout: whoever queues work wakes a sleeper.  `sleeping` is
     * raised before the queues are looked at, and a pusher raises `len`
     * before it looks at `sleeping` (both sequentially consistent), so
     * one of the two sees the other; a wake takes sleep_lock, which this
     * thread holds until it waits. */
    uv_mutex_lock(&sleep_lock);
    atomic_store(&s->sleeping, true);
    atomic_fetch_add(&nsleeping, 1);
    if (!any_work(s) && !atomic_load(&stopping))
      uv_cond_wait(&s->wakeup, &sleep_lock);
    atomic_fetch_sub(&nsleeping, 1);
    atomic_store(&s->sleeping, false);
    uv_mutex_unlock(&sleep_lock);
  }
}

void mb__sched_leave(void) {
  sched_t *s = current;
  if (s == NULL)
    return;
  atomic_store(&s->running, NULL);
  while (atomic_load(&s->watching))
    sched_yield();
}

/* Wake the watchdog if it sleeps; called after `running` or a queue's
 * `len` is raised, which the watchdog looks at after it raises
 * wd_sleeping. */
static void wake_watchdog(void) {
  if (!atomic_load(&wd_sleeping))
    return;
  uv_mutex_lock(&wd_lock);
  uv_cond_signal(&wd_wakeup);
  uv_mutex_unlock(&wd_lock);
}

/* `running` is published only once the process is ready to be poked: a
 * poke that came between it and the process clearing its hook for the
 * new slice would be undone, with the slice marked spent, so that the
 * watchdog never poked it again and it ran on for good. */
void mb__sched_enter(mb_proc_t *p) {
  sched_t *s = current;
  atomic_store(&s->running, p);
  wake_watchdog();
}

static void run(sched_t *s, mb_proc_t *p, bool new_slice) {
  if (new_slice)
    atomic_fetch_add_explicit(&s->slice, 1, memory_order_relaxed);
  atomic_store_explicit(
      &s->runs, atomic_load_explicit(&s->runs, memory_order_relaxed) + 1,
      memory_order_relaxed);
  /* Calls mb__sched_enter once it may be poked, and mb__sched_leave as
   * soon as the slice ends. */
  mb__proc_run(p);
}

void mb__sched_note_message(void) {
  sched_t *s = current;
  if (s != NULL)
    atomic_store_explicit(
        &s->msgs, atomic_load_explicit(&s->msgs, memory_order_relaxed) + 1,
        memory_order_relaxed);
}

static void sched_main(void *arg) {
  sched_t *s = arg;
  current = s;
  mb_proc_t *p;
  bool new_slice;
  while (!atomic_load(&stopping) && (p = next_proc(s, &new_slice)) != NULL)
    run(s, p, new_slice);
  mb_proc_t *next = atomic_exchange(&s->runnext, NULL);
  if (next != NULL)
    push(s, next);
  current = NULL;
}

static bool has_waiting(sched_t *s) {
  return atomic_load(&s->len) > 0 || atomic_load(&s->runnext) != NULL;
}

/* Processes wait on s, and none began to run there for a slice's time:
 * mark it stalled and wake a sleeping scheduler to take them. */
static void watch_stall(sched_t *s) {
  uint64_t runs = atomic_load_explicit(&s->runs, memory_order_relaxed);
  if (runs != s->wd_runs) {
    s->wd_runs = runs;
    s->wd_stall_ticks = 0;
    atomic_store(&s->stalled, false);
    return;
  }
  if (s->wd_stall_ticks < SLICE_TICKS && ++s->wd_stall_ticks < SLICE_TICKS)
    return;
  if (!has_waiting(s))
    return;
  if (atomic_exchange(&s->stalled, true))
    return;
  mb__sched_wake_idle();
}

/* One watchdog tick for scheduler s; true if a process runs or waits
 * there. */
static bool watch(sched_t *s) {
  uint64_t slice = atomic_load(&s->slice);
  watch_stall(s);
  if (slice != s->wd_slice) {
    s->wd_slice = slice;
    s->wd_ticks = 0;
  }
  if (atomic_load(&s->running) == NULL)
    return has_waiting(s);
  if (++s->wd_ticks < SLICE_TICKS || atomic_load(&s->spent) == slice)
    return true;
  atomic_store(&s->watching, true);
  mb_proc_t *p = atomic_load(&s->running);
  if (p != NULL) {
    atomic_store(&s->spent, slice);
    mb__proc_poke(p);
  }
  atomic_store(&s->watching, false);
  return true;
}

static bool any_running_or_waiting(void) {
  for (int i = 0; i < nscheds; i++)
    if (atomic_load(&scheds[i].running) != NULL || has_waiting(&scheds[i]))
      return true;
  return false;
}

/* Sleep until a scheduler starts or queues a process (or the node
 * stops). */
static void watchdog_sleep(void) {
  uv_mutex_lock(&wd_lock);
  atomic_store(&wd_sleeping, true);
  if (!any_running_or_waiting() && !atomic_load(&stopping))
    uv_cond_wait(&wd_wakeup, &wd_lock);
  atomic_store(&wd_sleeping, false);
  uv_mutex_unlock(&wd_lock);
}

/* Utilisation is sampled, not measured at each switch: at every tick the
 * time since the last one goes to the schedulers that run a process now.
 * A scheduler thread reads no clock for it; while the watchdog sleeps,
 * nothing runs. */
static void sample_busy(void) {
  uint64_t now = uv_hrtime();
  uint64_t dt = wd_last_ns ? now - wd_last_ns : 0;
  wd_last_ns = now;
  for (int i = 0; i < nscheds && dt > 0; i++)
    if (atomic_load_explicit(&scheds[i].running, memory_order_relaxed))
      atomic_store_explicit(
          &scheds[i].busy_ns,
          atomic_load_explicit(&scheds[i].busy_ns, memory_order_relaxed) + dt,
          memory_order_relaxed);
}

/* Linux lets a sleep of this thread end up to its timer slack (50 us by
 * default) late, so that wake-ups can be batched: a 100 us tick took 170
 * us, and a slice 0.85 ms instead of 0.5.  The watchdog asks for none.
 * And while every scheduler thread runs a busy process, the watchdog is
 * one more thread than there are cores: the OS may let it wait several
 * milliseconds for a core, and no slice ends meanwhile.  Where the node
 * may (root, CAP_SYS_NICE or an RLIMIT_RTPRIO above 0), the watchdog takes
 * the lowest real-time priority, so that its tick preempts a scheduler
 * thread at once; it sleeps between ticks and runs a few microseconds in
 * each.  Elsewhere it stays an ordinary thread. */
static void tick_on_time(void) {
#ifdef __linux__
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
  struct sched_param sp = {.sched_priority = sched_get_priority_min(SCHED_FIFO)};
  (void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
}

static void watchdog_main(void *arg) {
  (void)arg;
  int idle_ticks = 0;
  wd_last_ns = 0;
  tick_on_time();
  while (!atomic_load(&stopping)) {
    bool busy = false;
    sample_busy();
    for (int i = 0; i < nscheds; i++)
      busy |= watch(&scheds[i]);
    idle_ticks = busy ? 0 : idle_ticks + 1;
    if (idle_ticks > IDLE_TICKS) {
      watchdog_sleep();
      wd_last_ns = 0;
      idle_ticks = 0;
      continue;
    }
    struct timespec ts = {0, TICK_NS};
    nanosleep(&ts, NULL);
  }
}

int mb__sched_start(int n) {
  nscheds = n;
  started_ns = uv_hrtime();
  scheds = calloc((size_t)n, sizeof *scheds);
  if (scheds == NULL)
    return MB_ENOMEM;
  atomic_store(&stopping, false);
  uv_mutex_init(&sleep_lock);
  uv_mutex_init(&wd_lock);
  uv_cond_init(&wd_wakeup);
  atomic_store(&wd_sleeping, false);
  for (int i = 0; i < n; i++) {
    scheds[i].index = i;
    uv_mutex_init(&scheds[i].lock);
    uv_cond_init(&scheds[i].wakeup);
  }
  for (int i = 0; i < n; i++)
    if (uv_thread_create(&scheds[i].thread, sched_main, &scheds[i]) != 0)
      return MB_ETHREAD;
  if (uv_thread_create(&watchdog, watchdog_main, NULL) != 0)
    return MB_ETHREAD;
  return 0;
}

void mb__sched_stop(void) {
  atomic_store(&stopping, true);
  uv_mutex_lock(&sleep_lock);
  for (int i = 0; i < nscheds; i++)
    uv_cond_signal(&scheds[i].wakeup);
  uv_mutex_unlock(&sleep_lock);
  uv_mutex_lock(&wd_lock);
  uv_cond_signal(&wd_wakeup);
  uv_mutex_unlock(&wd_lock);
  for (int i = 0; i < nscheds; i++)
    uv_thread_join(&scheds[i].thread);
  uv_thread_join(&watchdog);
  mb__proc_pool_drain();
}

uint64_t mb__sched_uptime_ns(void) {
  return started_ns ? uv_hrtime() - started_ns : 0;
}

void mb__sched_sample(int i, mb__sched_sample_t *out) {
  sched_t *s = &scheds[i];
  out->busy_ns = atomic_load_explicit(&s->busy_ns, memory_order_relaxed);
  out->msgs = atomic_load_explicit(&s->msgs, memory_order_relaxed);
  out->runs = atomic_load_explicit(&s->runs, memory_order_relaxed);
  out->run_queue =
      atomic_load_explicit(&s->len, memory_order_relaxed) +
      (atomic_load_explicit(&s->runnext, memory_order_relaxed) != NULL);
}
