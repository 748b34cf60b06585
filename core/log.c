/* The node's logger: one line per event on stderr, with a level filter.
 * Lines from different threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "internal.h"

static atomic_int min_level = MB_LOG_INFO;
static _Atomic(mb_log_around_cb) around;
static uv_mutex_t out_lock;
static uv_once_t out_once = UV_ONCE_INIT;

static void init_lock(void) { uv_mutex_init(&out_lock); }

static const char *level_name(mb_log_level_t level) {
  static const char *names[] = {"debug", "info", "notice", "warning", "error"};
  return (unsigned)level <= MB_LOG_ERROR ? names[level] : "?";
}

void mb_log_set_level(mb_log_level_t level) { atomic_store(&min_level, level); }

mb_log_level_t mb_log_get_level(void) { return atomic_load(&min_level); }

void mb_log_set_around(mb_log_around_cb cb) { atomic_store(&around, cb); }

void mb_log(mb_log_level_t level, const char *fmt, ...) {
  if ((int)level < atomic_load(&min_level))
    return;
  uv_once(&out_once, init_lock);
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  va_list ap;
  va_start(ap, fmt);
  uv_mutex_lock(&out_lock);
  mb_log_around_cb cb = atomic_load(&around);
  if (cb != NULL)
    cb(0);
  fprintf(stderr, "%02d:%02d:%02d.%03ld [%s] ", tm.tm_hour, tm.tm_min,
          tm.tm_sec, ts.tv_nsec / 1000000, level_name(level));
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  fflush(stderr);
  if (cb != NULL)
    cb(1);
  uv_mutex_unlock(&out_lock);
  va_end(ap);
}
