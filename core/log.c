/* The node's logger: one line per event, with a level filter, on stderr or
 * in a file rotated by size.  Lines from different threads never
 * interleave.  A line's text is cut at MB_LOG_MAX bytes, with its full size
 * said at the end, so that a crash report of a 50 MB error string is not a
 * 50 MB line.
 *
 * Formats: the time of day (the default), the date and time, or JSON, one
 * object per line, whose fields are the time, the level, the pid of the
 * process that logged, the kind of report, and the text. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static atomic_int min_level = MB_LOG_INFO;
static atomic_int format = MB_LOG_FORMAT_TIME;
static _Atomic(mb_log_around_cb) around;
static uv_mutex_t out_lock = MB__MUTEX_INIT;

/* The log file, under out_lock: NULL for stderr. */
static struct {
  FILE *f;
  char *path;
  size_t max;  /* rotate once the file is this big; 0: never */
  int keep;    /* rotated files kept: path.1 (the newest) .. path.keep */
  size_t size; /* bytes in the file now */
} file;

static const char *level_name(mb_log_level_t level) {
  static const char *names[] = {"debug", "info", "notice", "warning", "error"};
  return (unsigned)level <= MB_LOG_ERROR ? names[level] : "?";
}

void mb_log_set_level(mb_log_level_t level) { atomic_store(&min_level, level); }

mb_log_level_t mb_log_get_level(void) { return atomic_load(&min_level); }

void mb_log_set_around(mb_log_around_cb cb) { atomic_store(&around, cb); }

void mb_log_set_format(mb_log_format_t f) { atomic_store(&format, f); }

int mb_log_set_file(const char *path, size_t max_bytes, int keep) {
  FILE *f = NULL;
  char *copy = NULL;
  if (path != NULL) {
    copy = strdup(path);
    f = copy ? fopen(path, "a") : NULL;
    if (f == NULL) {
      int e = copy ? errno : ENOMEM;
      free(copy);
      errno = e;
      return -1;
    }
  }
  uv_mutex_lock(&out_lock);
  if (file.f != NULL)
    fclose(file.f);
  free(file.path);
  file.f = f;
  file.path = copy;
  file.max = max_bytes;
  file.keep = keep < 0 ? 0 : keep;
  file.size = 0;
  if (f != NULL) {
    fseek(f, 0, SEEK_END);
    long at = ftell(f);
    file.size = at > 0 ? (size_t)at : 0;
  }
  uv_mutex_unlock(&out_lock);
  return 0;
}

/* path.1 becomes path.2 and so on, path becomes path.1, and a new path is
 * opened (out_lock held).  The oldest beyond `keep` is overwritten. */
static void rotate(void) {
  size_t len = strlen(file.path) + 16;
  char *from = malloc(len), *to = malloc(len);
  if (from != NULL && to != NULL) {
    fclose(file.f);
    for (int i = file.keep - 1; i >= 1; i--) {
      snprintf(from, len, "%s.%d", file.path, i);
      snprintf(to, len, "%s.%d", file.path, i + 1);
      rename(from, to);
    }
    if (file.keep > 0) {
      snprintf(to, len, "%s.1", file.path);
      rename(file.path, to);
    }
    file.f = fopen(file.path, file.keep > 0 ? "a" : "w");
    file.size = 0;
  }
  free(from);
  free(to);
}

static void json_string(FILE *out, const char *s, size_t n) {
  fputc('"', out);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      fputc('\\', out);
      fputc(c, out);
    } else if (c == '\n') {
      fputs("\\n", out);
    } else if (c == '\t') {
      fputs("\\t", out);
    } else if (c < 0x20 || c == 0x7f) {
      fprintf(out, "\\u%04x", c);
    } else {
      fputc(c, out);
    }
  }
  fputc('"', out);
}

typedef struct {
  mb_log_level_t level;
  const char *pid, *kind; /* or NULL */
  mb_pid_t about; /* the process a core report is about (JSON only), or 0 */
  const char *text;
  int n;     /* the text's length, or -1 when it could not be formatted */
  int total; /* its length before the cut */
  struct timespec ts;
} line_t;

static void write_plain(FILE *out, const line_t *l, int with_date) {
  struct tm tm;
  gmtime_r(&l->ts.tv_sec, &tm);
  if (with_date)
    fprintf(out, "%04d-%02d-%02d ", tm.tm_year + 1900, tm.tm_mon + 1,
            tm.tm_mday);
  fprintf(out, "%02d:%02d:%02d.%03ld [%s] ", tm.tm_hour, tm.tm_min, tm.tm_sec,
          l->ts.tv_nsec / 1000000, level_name(l->level));
  if (l->pid != NULL)
    fprintf(out, "%s ", l->pid);
  if (l->n < 0)
    fputs("(unprintable)", out);
  else
    fwrite(l->text, 1, (size_t)l->n, out);
  if (l->total > l->n && l->n >= 0)
    fprintf(out, " ... [truncated: %d bytes in all]", l->total);
  fputc('\n', out);
}

static void write_json(FILE *out, const line_t *l) {
  struct tm tm;
  gmtime_r(&l->ts.tv_sec, &tm);
  fprintf(out,
          "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\","
          "\"level\":\"%s\"",
          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
          tm.tm_sec, l->ts.tv_nsec / 1000, level_name(l->level));
  if (l->pid != NULL)
    fprintf(out, ",\"pid\":\"%s\"", l->pid);
  else if (l->about != 0)
    fprintf(out, ",\"pid\":\"<0.%u.%u>\"", MB_PID_ID(l->about),
            MB_PID_SERIAL(l->about));
  if (l->kind != NULL)
    fprintf(out, ",\"kind\":\"%s\"", l->kind);
  fputs(",\"msg\":", out);
  if (l->n < 0)
    fputs("\"(unprintable)\"", out);
  else
    json_string(out, l->text, (size_t)l->n);
  if (l->total > l->n && l->n >= 0)
    fprintf(out, ",\"truncated\":%d", l->total);
  fputs("}\n", out);
}

static void write_line(const line_t *l) {
  mb__log_keep(
      (int)l->level,
      (uint64_t)l->ts.tv_sec * 1000 + (uint64_t)l->ts.tv_nsec / 1000000, l->pid,
      l->n < 0 ? "(unprintable)" : l->text, l->n < 0 ? 13 : (size_t)l->n);
  uv_mutex_lock(&out_lock);
  FILE *out = file.f != NULL ? file.f : stderr;
  mb_log_around_cb cb = out == stderr ? atomic_load(&around) : NULL;
  if (cb != NULL)
    cb(0);
  long before = out == stderr ? 0 : ftell(out);
  if (atomic_load(&format) == MB_LOG_FORMAT_JSON)
    write_json(out, l);
  else
    write_plain(out, l, atomic_load(&format) == MB_LOG_FORMAT_DATE);
  fflush(out);
  if (out != stderr) {
    long after = ftell(out);
    file.size += after > before ? (size_t)(after - before) : 0;
    if (file.max != 0 && file.size >= file.max)
      rotate();
  }
  if (cb != NULL)
    cb(1);
  uv_mutex_unlock(&out_lock);
}

void mb_log_event(mb_log_level_t level, const char *pid, const char *kind,
                  const char *text, size_t len) {
  if ((int)level < atomic_load(&min_level))
    return;
  line_t l = {level, pid, kind, 0, text, 0, 0, {0, 0}};
  clock_gettime(CLOCK_REALTIME, &l.ts);
  l.total = len > (size_t)2147483647 ? 2147483647 : (int)len;
  l.n = len > MB_LOG_MAX ? MB_LOG_MAX : (int)len;
  if ((size_t)l.n == len) {
    write_line(&l);
    return;
  }
  /* The text is cut: a copy ends where the cut is. */
  char *cut = malloc((size_t)l.n + 1);
  if (cut == NULL) {
    l.n = -1;
  } else {
    memcpy(cut, text, (size_t)l.n);
    cut[l.n] = '\0';
    l.text = cut;
  }
  write_line(&l);
  free(cut);
}

static void vlog(mb_log_level_t level, const char *kind, mb_pid_t about,
                 const char *fmt, va_list ap) {
  if ((int)level < atomic_load(&min_level))
    return;
  char small[1024];
  char *buf = malloc(MB_LOG_MAX + 1);
  size_t cap = buf ? MB_LOG_MAX + 1 : sizeof small;
  if (buf == NULL)
    buf = small;
  int n = vsnprintf(buf, cap, fmt, ap);
  line_t l = {level, NULL, kind, about, buf, n, n, {0, 0}};
  clock_gettime(CLOCK_REALTIME, &l.ts);
  if (n >= 0 && (size_t)n >= cap)
    l.n = (int)cap - 1;
  write_line(&l);
  if (buf != small)
    free(buf);
}

void mb_log(mb_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void mb__log_report(mb_log_level_t level, const char *kind, mb_pid_t about,
                    const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, kind, about, fmt, ap);
  va_end(ap);
}
