/* The node's logger: one line per event on stderr, with a level filter.
 * Lines from different threads never interleave.  A line's text is cut at
 * MB_LOG_MAX bytes, with its full size said at the end, so that a crash
 * report of a 50 MB error string is not a 50 MB line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

static atomic_int min_level = MB_LOG_INFO;
static _Atomic(mb_log_around_cb) around;
static uv_mutex_t out_lock = MB__MUTEX_INIT;

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
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char small[1024];
  char *buf = malloc(MB_LOG_MAX + 1);
  size_t cap = buf ? MB_LOG_MAX + 1 : sizeof small;
  if (buf == NULL)
    buf = small;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
  uv_mutex_lock(&out_lock);
  mb_log_around_cb cb = atomic_load(&around);
  if (cb != NULL)
    cb(0);
  fprintf(stderr, "%02d:%02d:%02d.%03ld [%s] %s", tm.tm_hour, tm.tm_min,
          tm.tm_sec, ts.tv_nsec / 1000000, level_name(level),
          n < 0 ? "(unprintable)" : buf);
  if (n >= 0 && (size_t)n >= cap)
    fprintf(stderr, " ... [truncated: %d bytes in all]", n);
  fputc('\n', stderr);
  fflush(stderr);
  if (cb != NULL)
    cb(1);
  uv_mutex_unlock(&out_lock);
  if (buf != small)
    free(buf);
}
