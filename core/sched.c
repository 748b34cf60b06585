/* The M:N scheduler: N threads, each with its own run queue.  A process
 * made runnable by a scheduler thread goes to that thread's queue (it is
 * likely to find its data in that core's cache); an idle scheduler steals
 * from the others before it sleeps.
 *
 * Each queue is a FIFO of processes linked through rq_next, under the
 * queue's lock.  A process is in at most one queue, and only while its
 * state is RUNNABLE. */
#include <sched.h>
#include <stdlib.h>

#include "internal.h"

#define SPIN_ROUNDS 64
#define IDLE_WAIT_NS 10000000u /* a sleeping scheduler looks again every 10 ms */

typedef struct {
  uv_thread_t thread;
  uv_mutex_t lock;
  mb_proc_t *head, *tail;
  atomic_size_t len;
  int index;
  atomic_bool sleeping; /* waiting on `wakeup` under sleep_lock */
  uv_cond_t wakeup;
} sched_t;

static sched_t *scheds;
static int nscheds;
static atomic_bool stopping;
static atomic_int nsleeping;
static atomic_uint round_robin;
static uv_mutex_t sleep_lock;
static _Thread_local sched_t *current;

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

static sched_t *find_sleeper(void) {
  if (atomic_load(&nsleeping) == 0)
    return NULL;
  for (int i = 0; i < nscheds; i++)
    if (atomic_load(&scheds[i].sleeping))
      return &scheds[i];
  return NULL;
}

void mb__sched_enqueue(mb_proc_t *p) {
  sched_t *s = current;
  if (s == NULL) {
    /* From outside the schedulers (timers, the host): prefer a sleeping
     * scheduler, which will find the process in its own queue. */
    sched_t *sleeper = find_sleeper();
    s = sleeper ? sleeper
                : &scheds[atomic_fetch_add(&round_robin, 1) % (unsigned)nscheds];
    push(s, p);
    if (atomic_load(&s->sleeping))
      wake(s);
    return;
  }
  push(s, p);
  /* One queued process will run when this one yields; a second one is
   * work another core could do now. */
  if (atomic_load(&s->len) >= 2) {
    sched_t *sleeper = find_sleeper();
    if (sleeper != NULL)
      wake(sleeper);
  }
}

/* Take work from another queue, but only from one holding more than the
 * process its owner will run next: stealing that one would move a process
 * away from its cache for at most one time slice of waiting. */
static mb_proc_t *steal(sched_t *self) {
  for (int i = 1; i < nscheds; i++) {
    sched_t *victim = &scheds[(self->index + i) % nscheds];
    if (atomic_load(&victim->len) < 2)
      continue;
    mb_proc_t *p = pop(victim);
    if (p != NULL)
      return p;
  }
  return NULL;
}

static bool any_work(sched_t *self) {
  for (int i = 0; i < nscheds; i++)
    if (atomic_load(&scheds[i].len) > (&scheds[i] == self ? 0u : 1u))
      return true;
  return false;
}

static mb_proc_t *next_proc(sched_t *s) {
  for (;;) {
    mb_proc_t *p = pop(s);
    if (p == NULL)
      p = steal(s);
    for (int i = 0; p == NULL && i < SPIN_ROUNDS; i++) {
      sched_yield();
      p = pop(s);
      if (p == NULL)
        p = steal(s);
    }
    if (p != NULL)
      return p;
    if (atomic_load(&stopping))
      return NULL;
    uv_mutex_lock(&sleep_lock);
    atomic_store(&s->sleeping, true);
    atomic_fetch_add(&nsleeping, 1);
    if (!any_work(s) && !atomic_load(&stopping))
      uv_cond_timedwait(&s->wakeup, &sleep_lock, IDLE_WAIT_NS);
    atomic_fetch_sub(&nsleeping, 1);
    atomic_store(&s->sleeping, false);
    uv_mutex_unlock(&sleep_lock);
  }
}

static void sched_main(void *arg) {
  sched_t *s = arg;
  current = s;
  mb_proc_t *p;
  while (!atomic_load(&stopping) && (p = next_proc(s)) != NULL) {
    uv_mutex_lock(&p->lock);
    p->state = MB_PS_RUNNING;
    uv_mutex_unlock(&p->lock);
    mb__proc_run(p);
  }
  current = NULL;
}

int mb__sched_start(int n) {
  nscheds = n;
  scheds = calloc((size_t)n, sizeof *scheds);
  if (scheds == NULL)
    return MB_ENOMEM;
  atomic_store(&stopping, false);
  uv_mutex_init(&sleep_lock);
  for (int i = 0; i < n; i++) {
    scheds[i].index = i;
    uv_mutex_init(&scheds[i].lock);
    uv_cond_init(&scheds[i].wakeup);
  }
  for (int i = 0; i < n; i++)
    if (uv_thread_create(&scheds[i].thread, sched_main, &scheds[i]) != 0)
      return MB_ETHREAD;
  return 0;
}

void mb__sched_stop(void) {
  atomic_store(&stopping, true);
  uv_mutex_lock(&sleep_lock);
  for (int i = 0; i < nscheds; i++)
    uv_cond_signal(&scheds[i].wakeup);
  uv_mutex_unlock(&sleep_lock);
  for (int i = 0; i < nscheds; i++)
    uv_thread_join(&scheds[i].thread);
}
