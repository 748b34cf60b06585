/* The node: the process table, the schedulers and the timer loop, started
 * and stopped together.  One node per OS process. */
#include "dist/dist.h"

static int started;

int mb_node_start(const mb_config_t *cfg) {
  if (started)
    return MB_ESTATE;
  mb_config_t c = {0};
  if (cfg != NULL)
    c = *cfg;
  if (c.schedulers <= 0) {
    uv_cpu_info_t *info;
    int n = 0;
    if (uv_cpu_info(&info, &n) == 0)
      uv_free_cpu_info(info, n);
    c.schedulers = n > 0 ? n : 1;
  }
  mb__proc_init();
  int aerr = mb__atoms_init();
  if (aerr)
    return aerr;
  mb__proc_config(&c);
  int err = mb__loop_start();
  if (err == 0)
    err = mb__timer_start();
  if (err == 0)
    err = mb__socket_start();
  if (err == 0)
    err = mb__sched_start(c.schedulers);
  if (err == 0)
    started = 1;
  return err;
}

int mb_node_started(void) { return started; }

int mb_node_schedulers(void) { return started ? mb__sched_count() : 0; }

size_t mb_node_process_limit(void) {
  return started ? mb__config()->max_processes : 0;
}

int mb_node_stop(void) {
  if (!started)
    return MB_ESTATE;
  mb__sched_stop();
  mb__dist_stop();
  mb__socket_stop();
  mb__timer_stop();
  started = 0;
  return 0;
}
