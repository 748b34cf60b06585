/* What the node says of itself, for the dashboard and the shell: counters
 * read without stopping anything, and the last lines of the log.
 *
 * Nothing here is counted per message or per switch beyond one relaxed
 * store on a counter its scheduler owns (see sched.c): utilisation is
 * sampled by the watchdog, memory is summed when asked.  The log keeps
 * its last RING lines (each cut at KEEP_MAX bytes) in a ring under a
 * lock of its own, taken once per line logged. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "internal.h"

#define RING 512
#define KEEP_MAX 4096

typedef struct {
  uint64_t seq, unix_ms;
  int level;
  size_t len;
  char *text; /* malloc'd, or NULL when out of memory */
} line_t;

static uv_mutex_t ring_lock = MB__MUTEX_INIT;
static line_t ring[RING];
static uint64_t next_seq = 1;

/* The line as the log writes it: "<pid> text" when a pid is given. */
void mb__log_keep(int level, uint64_t unix_ms, const char *pid,
                  const char *text, size_t len) {
  size_t pre = pid != NULL ? strlen(pid) + 1 : 0;
  if (pre > KEEP_MAX)
    pre = 0;
  if (len > KEEP_MAX - pre)
    len = KEEP_MAX - pre;
  char *copy = malloc(pre + len + 1);
  if (copy != NULL) {
    if (pre != 0) {
      memcpy(copy, pid, pre - 1);
      copy[pre - 1] = ' ';
    }
    memcpy(copy + pre, text, len);
    copy[pre + len] = '\0';
  }
  len += pre;
  uv_mutex_lock(&ring_lock);
  line_t *l = &ring[next_seq % RING];
  char *old = l->text;
  *l = (line_t){next_seq++, unix_ms, level, copy ? len : 0, copy};
  uv_mutex_unlock(&ring_lock);
  free(old);
}

static void set_num(lua_State *L, const char *field, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, field);
}

/* statistics() -> {uptime_ms, processes, process_limit, atoms, blank_states
 * (made ahead for spawns: see proc.c), memory =
 * {total (the resident set), processes (their Lua states), other (the
 * rest: the runtime, messages, sockets)}, schedulers = {{busy_ns, messages, runs,
 * run_queue}, ...}}.  Counters only grow: a rate is the difference of two
 * samples. */
int mb_lua_statistics(lua_State *L) {
  size_t mem, rss = 0;
  mb__proc_totals(&mem);
  if (uv_resident_set_memory(&rss) != 0)
    rss = 0;
  lua_createtable(L, 0, 8);
  set_num(L, "uptime_ms", (lua_Integer)(mb__sched_uptime_ns() / 1000000));
  set_num(L, "processes", (lua_Integer)mb_proc_count());
  set_num(L, "process_limit", (lua_Integer)mb_node_process_limit());
  set_num(L, "atoms", (lua_Integer)mb__atom_count());
  set_num(L, "blank_states", (lua_Integer)mb__proc_pool_size());
  lua_createtable(L, 0, 3);
  set_num(L, "total", (lua_Integer)rss);
  set_num(L, "processes", (lua_Integer)mem);
  set_num(L, "other", (lua_Integer)(rss > mem ? rss - mem : 0));
  lua_setfield(L, -2, "memory");
  int n = mb_node_started() ? mb__sched_count() : 0;
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    mb__sched_sample_t s;
    mb__sched_sample(i, &s);
    lua_createtable(L, 0, 4);
    set_num(L, "busy_ns", (lua_Integer)s.busy_ns);
    set_num(L, "messages", (lua_Integer)s.msgs);
    set_num(L, "runs", (lua_Integer)s.runs);
    set_num(L, "run_queue", (lua_Integer)s.run_queue);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "schedulers");
  return 1;
}

/* Copy the lines after `after` out of the ring, oldest first; the caller
 * frees each text and the array. */
static size_t take_lines(uint64_t after, line_t *out) {
  size_t n = 0;
  uv_mutex_lock(&ring_lock);
  uint64_t first = next_seq > RING ? next_seq - RING : 1;
  if (after + 1 > first)
    first = after + 1;
  for (uint64_t seq = first; seq < next_seq; seq++) {
    line_t *l = &ring[seq % RING];
    out[n] = *l;
    out[n].text = l->text ? malloc(l->len + 1) : NULL;
    if (out[n].text != NULL)
      memcpy(out[n].text, l->text, l->len + 1);
    else
      out[n].len = 0;
    n++;
  }
  uv_mutex_unlock(&ring_lock);
  return n;
}

static const char *const levels[] = {"debug", "info", "notice", "warning",
                                     "error"};

/* Push the lines as a list (in a protected call: the caller frees). */
static int push_lines(lua_State *L) {
  const line_t *lines = lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 4);
    set_num(L, "seq", (lua_Integer)lines[i].seq);
    set_num(L, "time_ms", (lua_Integer)lines[i].unix_ms);
    lua_pushstring(L, (unsigned)lines[i].level <= MB_LOG_ERROR
                          ? levels[lines[i].level]
                          : "error");
    lua_setfield(L, -2, "level");
    lua_pushlstring(L, lines[i].text ? lines[i].text : "", lines[i].len);
    lua_setfield(L, -2, "text");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* log_tail([after]) -> the lines logged after sequence number `after` (0:
 * all the ring holds), oldest first: {seq, time_ms, level, text}. */
int mb_lua_log_tail(lua_State *L) {
  lua_Integer after = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, after >= 0, 1, "must not be negative");
  line_t *lines = malloc(RING * sizeof *lines);
  if (lines == NULL)
    return mb_lua_error(L, "log_tail", MB_ENOMEM, NULL);
  size_t n = take_lines((uint64_t)after, lines);
  lua_pushcfunction(L, push_lines);
  lua_pushlightuserdata(L, lines);
  lua_pushinteger(L, (lua_Integer)n);
  int status = lua_pcall(L, 2, 1, 0);
  for (size_t i = 0; i < n; i++)
    free(lines[i].text);
  free(lines);
  if (status != LUA_OK)
    return lua_error(L);
  return 1;
}
