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
} sched_t;

static sched_t *scheds;
static int nscheds;
static atomic_bool stopping;
static atomic_int nsleeping;
static atomic_uint round_robin;
static uv_mutex_t sleep_lock;
static uv_cond_t sleep_cond;
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

static void wake_one(void) {
  if (atomic_load(&nsleeping) == 0)
    return;
  uv_mutex_lock(&sleep_lock);
  uv_cond_signal(&sleep_cond);
  uv_mutex_unlock(&sleep_lock);
}

void mb__sched_enqueue(mb_proc_t *p) {
  sched_t *s = current;
  if (s == NULL) {
    s = &scheds[atomic_fetch_add(&round_robin, 1) % (unsigned)nscheds];
    push(s, p);
    wake_one();
    return;
  }
  push(s, p);
  /* One queued process will run when this one yields; a second one is
   * work another core could do now. */
  if (atomic_load(&s->len) >= 2)
    wake_one();
}

static mb_proc_t *steal(sched_t *self) {
  for (int i = 1; i < nscheds; i++) {
    mb_proc_t *p = pop(&scheds[(self->index + i) % nscheds]);
    if (p != NULL)
      return p;
  }
  return NULL;
}

static bool any_work(void) {
  for (int i = 0; i < nscheds; i++)
    if (atomic_load(&scheds[i].len) > 0)
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
    atomic_fetch_add(&nsleeping, 1);
    if (!any_work() && !atomic_load(&stopping))
      uv_cond_timedwait(&sleep_cond, &sleep_lock, IDLE_WAIT_NS);
    atomic_fetch_sub(&nsleeping, 1);
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
  uv_cond_init(&sleep_cond);
  for (int i = 0; i < n; i++) {
    scheds[i].index = i;
    uv_mutex_init(&scheds[i].lock);
  }
  for (int i = 0; i < n; i++)
    if (uv_thread_create(&scheds[i].thread, sched_main, &scheds[i]) != 0)
      return MB_ETHREAD;
  return 0;
}

void mb__sched_stop(void) {
  atomic_store(&stopping, true);
  uv_mutex_lock(&sleep_lock);
  uv_cond_broadcast(&sleep_cond);
  uv_mutex_unlock(&sleep_lock);
  for (int i = 0; i < nscheds; i++)
    uv_thread_join(&scheds[i].thread);
}
