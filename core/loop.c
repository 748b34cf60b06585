/* The node's I/O loop: one libuv loop in a thread of its own, serving
 * timers and the network.  Other threads hand it work with mb__loop_call;
 * everything that touches a libuv handle runs on this thread. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "internal.h"

typedef struct call_s {
  struct call_s *next;
  mb__loop_fn fn;
  void *arg;
} call_t;

static uv_loop_t loop;
static uv_async_t async;
static uv_check_t check;
static uv_thread_t thread;
static uv_mutex_t lock;
static call_t *head, *tail; /* under lock */
static bool stopping;       /* under lock */
static _Thread_local bool on_loop;

uv_loop_t *mb__loop(void) { return &loop; }

bool mb__on_loop(void) { return on_loop; }

static void run_calls(uv_async_t *a) {
  (void)a;
  uv_mutex_lock(&lock);
  call_t *c = head;
  head = tail = NULL;
  bool stop = stopping;
  uv_mutex_unlock(&lock);
  while (c != NULL) {
    call_t *next = c->next;
    c->fn(c->arg);
    free(c);
    c = next;
  }
  if (stop)
    uv_stop(&loop);
}

static int queue(mb__loop_fn fn, void *arg) {
  call_t *c = malloc(sizeof *c);
  if (c == NULL)
    return MB_ENOMEM;
  c->next = NULL;
  c->fn = fn;
  c->arg = arg;
  uv_mutex_lock(&lock);
  if (tail)
    tail->next = c;
  else
    head = c;
  tail = c;
  uv_mutex_unlock(&lock);
  return 0;
}

int mb__loop_call(mb__loop_fn fn, void *arg) {
  int err = queue(fn, arg);
  if (err == 0)
    uv_async_send(&async);
  return err;
}

int mb__loop_call_later(mb__loop_fn fn, void *arg) { return queue(fn, arg); }

void mb__loop_wake(void) { uv_async_send(&async); }

/* Calls queued without a wake-up run at the loop's next turn, whatever
 * woke it. */
static void on_check(uv_check_t *h) { run_calls((uv_async_t *)h); }

static void loop_main(void *arg) {
  (void)arg;
  on_loop = true;
  /* A peer that goes away mid-write must not kill the node with SIGPIPE:
   * the write fails with EPIPE instead. */
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
}

int mb__loop_start(void) {
  uv_mutex_init(&lock);
  stopping = false;
  if (uv_loop_init(&loop) != 0)
    return MB_ENOMEM;
  uv_async_init(&loop, &async, run_calls);
  uv_check_init(&loop, &check);
  uv_check_start(&check, on_check);
  if (uv_thread_create(&thread, loop_main, NULL) != 0)
    return MB_ETHREAD;
  return 0;
}

static void close_any(uv_handle_t *h, void *arg) {
  mb__loop_close_cb cb = (mb__loop_close_cb)arg;
  if (!uv_is_closing(h))
    uv_close(h, cb ? cb(h) : NULL);
}

void mb__loop_stop(mb__loop_close_cb closer) {
  uv_mutex_lock(&lock);
  stopping = true;
  uv_mutex_unlock(&lock);
  uv_async_send(&async);
  uv_thread_join(&thread);
  run_calls(&async); /* calls queued after the last turn */
  uv_walk(&loop, close_any, (void *)closer);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}
