/* The node: its subsystems, started in order in one place and stopped in
 * reverse, as one BEAM is one node; one node per OS process.  A start that
 * fails undoes the steps already taken, in reverse.  Distribution is not a
 * step: mb_dist_start starts it later, and stopping the node stops it
 * before the loop it runs on. */
#include "dist/dist.h"

static int started;
static int nschedulers; /* for the scheduler step */

static int start_tables(void) { return mb__proc_init(); }

static int start_loop(void) {
  int err = mb__loop_start();
  return err ? err : mb__timer_start();
}

static void stop_loop(void) { mb__timer_stop(); }

/* Distribution, if it was started, and the processes' sockets close on
 * the loop, before it stops. */
static void stop_sockets(void) {
  mb__dist_stop();
  mb__socket_stop();
}

static int start_schedulers(void) { return mb__sched_start(nschedulers); }

static const struct {
  int (*start)(void);
  void (*stop)(void); /* NULL: nothing to undo */
} steps[] = {
    {start_tables, NULL},               /* the process table */
    {mb__atoms_init, NULL},             /* the atoms the core uses */
    {mb__trace_init, NULL},             /* no trace session yet */
    {start_loop, stop_loop},            /* the I/O loop's thread, timers */
    {mb__socket_start, stop_sockets},   /* sockets owned by processes */
    {start_schedulers, mb__sched_stop}, /* scheduler threads, watchdog */
};
#define NSTEPS (sizeof steps / sizeof steps[0])

static void stop_from(size_t n) {
  while (n-- > 0)
    if (steps[n].stop != NULL)
      steps[n].stop();
}

static int default_schedulers(void) {
  uv_cpu_info_t *info;
  int n = 0;
  if (uv_cpu_info(&info, &n) == 0)
    uv_free_cpu_info(info, n);
  return n > 0 ? n : 1;
}

int mb_node_start(const mb_config_t *cfg) {
  if (started)
    return MB_ESTATE;
  mb_config_t c = {0};
  if (cfg != NULL)
    c = *cfg;
  if (c.schedulers <= 0)
    c.schedulers = default_schedulers();
  nschedulers = c.schedulers;
  mb__tls_init();
  mb__proc_config(&c);
  for (size_t i = 0; i < NSTEPS; i++) {
    int err = steps[i].start();
    if (err) {
      stop_from(i);
      return err;
    }
  }
  started = 1;
  return 0;
}

int mb_node_started(void) { return started; }

int mb_node_schedulers(void) { return started ? mb__sched_count() : 0; }

size_t mb_node_process_limit(void) {
  return started ? mb__config()->max_processes : 0;
}

int mb_node_stop(void) {
  if (!started)
    return MB_ESTATE;
  stop_from(NSTEPS);
  started = 0;
  return 0;
}
