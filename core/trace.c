/* Tracing: what chosen processes do (send, receive, GenServer calls,
 * spawn, exit, link), delivered as messages to a tracer process, as
 * erlang:trace/3 does, and bounded as recon_trace is.
 *
 * There is one trace session at a time, as in recon_trace.  A session has
 * a tracer, a maximum count of messages and a rate limit; when either is
 * reached, or the tracer is gone, the session stops by itself.
 *
 * A traced process carries its flags and the session's generation in one
 * word, p->trace.  The paths it watches test that word and nothing else
 * when tracing is off (MB__TRACING).  A stopped session is never walked
 * through the process table: stopping bumps the generation, and a process
 * whose word names an older one clears it the next time it gets here.  So
 * a process that dies while traced leaves nothing behind, and neither does
 * a tracer that dies.
 *
 * Threads: `session` is under `lock`.  p->trace is written by anyone
 * (trace_process, from the process that starts a trace) and read by the
 * owner, relaxed: a flag set while the owner runs takes effect at its next
 * event.  Lock order: `lock`, then a process (delivery to the tracer). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "internal.h"

static uv_mutex_t lock = MB__MUTEX_INIT;

static struct {
  uint32_t gen;    /* the running session's generation, 0 for none */
  uint32_t last;   /* the last generation given out */
  mb_pid_t tracer; /* a local process */
  uint64_t count, max;
  uint64_t rate_max, rate_ns; /* rate_max messages per rate_ns; 0: none */
  uint64_t window_start, window_count;
} session;

static const mb__atom_t *a_trace_ts, *a_trace_stopped, *a_gen_call;

static const struct {
  const char *name;
  unsigned flag;
} flag_names[] = {{"send", MB_TRACE_SEND},  {"receive", MB_TRACE_RECEIVE},
                  {"call", MB_TRACE_CALL},  {"spawn", MB_TRACE_SPAWN},
                  {"exit", MB_TRACE_EXIT},  {"link", MB_TRACE_LINK},
                  {"unlink", MB_TRACE_LINK}};

static const mb__atom_t *atom(const char *name) {
  const mb__atom_t *a = NULL;
  mb__atom_intern(name, strlen(name), &a);
  return a;
}

int mb__trace_init(void) {
  /* A node started again in this OS process starts with no trace. */
  uv_mutex_lock(&lock);
  session.gen = 0;
  session.tracer = 0;
  uv_mutex_unlock(&lock);
  a_trace_ts = atom("trace_ts");
  a_trace_stopped = atom("trace_stopped");
  a_gen_call = atom("$gen_call");
  for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++)
    if (atom(flag_names[i].name) == NULL)
      return MB_ENOMEM;
  return a_trace_ts && a_trace_stopped && a_gen_call ? 0 : MB_ENOMEM;
}

/* Microseconds since the epoch, as erlang:system_time(microsecond). */
static lua_Integer now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (lua_Integer)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Hand m to the tracer (lock held); false if the tracer is gone. */
static bool deliver(mb_msg_t *m) {
  mb_proc_t *t = mb__proc_lookup(session.tracer);
  if (t == NULL) {
    mb_msg_free(m);
    return false;
  }
  bool ok = mb__proc_deliver(t, m);
  mb__proc_unref(t);
  return ok;
}

/* Stop the session (lock held), telling its tracer why:
 * {trace_stopped, Reason, Count}. */
static void stop(const char *why) {
  if (session.gen == 0)
    return;
  mb_msg_t *m = mb__tuple_new(3);
  const mb__atom_t *reason = atom(why);
  if (m != NULL && reason != NULL &&
      (mb__tuple_atom(&m, a_trace_stopped) || mb__tuple_atom(&m, reason) ||
       mb__tuple_int(&m, (lua_Integer)session.count) || mb__tuple_end(&m, 3))) {
    mb_msg_free(m);
    m = NULL;
  }
  if (m != NULL)
    deliver(m);
  session.gen = 0;
  session.tracer = 0;
}

/* Whether one more message may go (lock held): stops the session when the
 * count or the rate is reached. */
static bool admit(void) {
  if (session.max != 0 && session.count >= session.max) {
    stop("max");
    return false;
  }
  if (session.rate_max != 0) {
    uint64_t now = uv_hrtime();
    if (now - session.window_start >= session.rate_ns) {
      session.window_start = now;
      session.window_count = 0;
    }
    if (++session.window_count > session.rate_max) {
      stop("rate");
      return false;
    }
  }
  return true;
}

/* The part a trace message starts with: {trace_ts, Pid, What, ... */
static mb_msg_t *head(mb_proc_t *p, unsigned n, const char *what) {
  mb_msg_t *m = mb__tuple_new(n);
  const mb__atom_t *a = atom(what);
  if (m != NULL && (a == NULL || mb__tuple_atom(&m, a_trace_ts) ||
                    mb__tuple_pid(&m, p->pid) || mb__tuple_atom(&m, a))) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

/* The value at idx of L as a message, or NULL when it cannot be sent
 * (the event then carries the atom `unencodable`).  Done before the lock
 * is taken: encoding runs Lua's allocator, which may raise. */
static mb_msg_t *encode(lua_State *L, int idx) {
  char err[160];
  mb_msg_t *v = NULL;
  if (idx == 0 || mb__msg_encode(L, idx, "trace", &v, err, sizeof err) != 0)
    return NULL;
  return v;
}

static int add_value(mb_msg_t **m, const mb_msg_t *v) {
  if (v != NULL)
    return mb__tuple_value(m, v);
  const mb__atom_t *a = atom("unencodable");
  return a == NULL || mb__tuple_atom(m, a);
}

/* Whether p's event goes out (lock held): its word names the running
 * session, and it is not the tracer (whose receive would feed itself). */
static bool current(mb_proc_t *p) {
  uint32_t word = atomic_load_explicit(&p->trace, memory_order_relaxed);
  if (session.gen == 0 || word >> 8 != session.gen) {
    atomic_store_explicit(&p->trace, 0, memory_order_relaxed);
    return false;
  }
  return p->pid != session.tracer;
}

/* Close m with the time and send it (lock held). */
static void emit(mb_msg_t *m, unsigned n) {
  if (m == NULL || mb__tuple_int(&m, now_us()) || mb__tuple_end(&m, n)) {
    mb_msg_free(m);
    return;
  }
  session.count++;
  if (!deliver(m))
    stop("tracer_down");
  else if (session.max != 0 && session.count >= session.max)
    stop("max");
}

/* An event {trace_ts, Pid, What, A, [B,] Ts}, A and B taken from L (B
 * left out when b is 0). */
static void event(mb_proc_t *p, lua_State *L, const char *what, int a, int b) {
  mb_msg_t *va = encode(L, a), *vb = encode(L, b);
  uv_mutex_lock(&lock);
  if (current(p) && admit()) {
    unsigned n = b != 0 ? 6 : 5;
    mb_msg_t *m = head(p, n, what);
    if (m != NULL && (add_value(&m, va) || (b != 0 && add_value(&m, vb)))) {
      mb_msg_free(m);
      m = NULL;
    }
    emit(m, n);
  }
  uv_mutex_unlock(&lock);
  mb_msg_free(va);
  mb_msg_free(vb);
}

void mb__trace_send(mb_proc_t *p, lua_State *L, int dest, int msg) {
  if (lua_checkstack(L, 4))
    event(p, L, "send", msg, dest);
}

/* A GenServer request: {'$gen_call', From, Request}, at the top of L. */
static bool is_gen_call(lua_State *L) {
  if (lua_type(L, -1) != LUA_TTABLE)
    return false;
  lua_rawgeti(L, -1, 1);
  bool yes = mb__to_atom(L, -1) == a_gen_call;
  lua_pop(L, 1);
  return yes;
}

void mb__trace_receive(mb_proc_t *p, lua_State *L) {
  if (!lua_checkstack(L, 8))
    return;
  uint32_t flags = atomic_load_explicit(&p->trace, memory_order_relaxed);
  if (flags & MB_TRACE_RECEIVE)
    event(p, L, "receive", lua_gettop(L), 0);
  if ((flags & MB_TRACE_CALL) && is_gen_call(L)) {
    int top = lua_gettop(L);
    lua_rawgeti(L, top, 3);
    lua_rawgeti(L, top, 2);
    event(p, L, "call", top + 1, top + 2);
    lua_settop(L, top);
  }
}

void mb__trace_link(mb_proc_t *p, lua_State *L, bool link, int other) {
  if (lua_checkstack(L, 4))
    event(p, L, link ? "link" : "unlink", other, 0);
}

void mb__trace_exit(mb_proc_t *p, const mb_msg_t *reason) {
  uv_mutex_lock(&lock);
  if (current(p) && admit()) {
    mb_msg_t *m = head(p, 5, "exit");
    if (m != NULL && mb__tuple_value(&m, reason)) {
      mb_msg_free(m);
      m = NULL;
    }
    emit(m, 5);
  }
  uv_mutex_unlock(&lock);
}

void mb_trace_spawn(lua_State *L, mb_pid_t child, const char *module,
                    const char *function) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL || !MB__TRACING(p, MB_TRACE_SPAWN))
    return;
  char what[256];
  if (module != NULL)
    snprintf(what, sizeof what, "%s.%s", module, function);
  else
    snprintf(what, sizeof what, "function");
  uv_mutex_lock(&lock);
  if (current(p) && admit()) {
    mb_msg_t *m = head(p, 6, "spawn");
    if (m != NULL &&
        (mb__tuple_pid(&m, child) || mb__tuple_str(&m, what, strlen(what)))) {
      mb_msg_free(m);
      m = NULL;
    }
    emit(m, 6);
  }
  uv_mutex_unlock(&lock);
}

/* ---- the Lua side ---- */

static lua_Integer opt_field(lua_State *L, int t, const char *k, int i) {
  lua_Integer v = 0;
  if (k != NULL)
    lua_getfield(L, t, k);
  else
    lua_rawgeti(L, t, i);
  if (!lua_isnil(L, -1)) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
      luaL_error(L, "trace_start: %s must be a positive integer",
                 k ? k : (i == 1 ? "rate[1]" : "rate[2]"));
    v = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* trace_start(tracer, {max = N, rate = {Max, Ms}, replace = bool}) ->
 * session number.  A running session stops first ({trace_stopped,
 * replaced, Count}); with replace = false it goes on instead, and the
 * answer is nil, "a trace is already running" and its tracer. */
int mb_lua_trace_start(lua_State *L) {
  mb_pid_t tracer = mb_lua_check_pid(L, 1);
  luaL_argcheck(L, !MB_PID_IS_REMOTE(tracer), 1, "a local process expected");
  uint64_t max = 0, rate_max = 0, rate_ms = 0;
  bool replace = true;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    max = (uint64_t)opt_field(L, 2, "max", 0);
    if (lua_getfield(L, 2, "replace") != LUA_TNIL)
      replace = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "rate") != LUA_TNIL) {
      luaL_argexpected(L, lua_istable(L, -1), 2, "rate as {Max, Ms}");
      int r = lua_gettop(L);
      rate_max = (uint64_t)opt_field(L, r, NULL, 1);
      rate_ms = (uint64_t)opt_field(L, r, NULL, 2);
      if (rate_max == 0 || rate_ms == 0)
        return luaL_error(L, "trace_start: rate must be {Max, Ms}");
    }
    lua_pop(L, 1);
  }
  if (!mb_proc_alive(tracer))
    return luaL_error(L, "trace_start: noproc (no process %s)",
                      luaL_tolstring(L, 1, NULL));
  uv_mutex_lock(&lock);
  if (!replace && session.gen != 0) {
    mb_pid_t running = session.tracer;
    uv_mutex_unlock(&lock);
    lua_pushnil(L);
    lua_pushliteral(L, "a trace is already running");
    mb__push_pid(L, running);
    return 3;
  }
  stop("replaced");
  if (++session.last >= (1u << 24))
    session.last = 1;
  session.gen = session.last;
  session.tracer = tracer;
  session.count = 0;
  session.max = max;
  session.rate_max = rate_max;
  session.rate_ns = rate_ms * 1000000;
  session.window_start = uv_hrtime();
  session.window_count = 0;
  lua_Integer gen = session.gen;
  uv_mutex_unlock(&lock);
  lua_pushinteger(L, gen);
  return 1;
}

/* trace_process(pid, {"send", "receive", ...}) -> true, or false if there
 * is no such process or no session.  An empty list stops tracing it. */
int mb_lua_trace_process(lua_State *L) {
  mb_pid_t pid = mb_lua_check_pid(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  uint32_t flags = 0;
  for (lua_Integer i = 1; lua_rawgeti(L, 2, i) != LUA_TNIL; i++) {
    const char *s = mb__tostring(L, -1, NULL);
    size_t k = 0, n = sizeof flag_names / sizeof flag_names[0];
    while (k < n && strcmp(flag_names[k].name, s) != 0)
      k++;
    if (k == n)
      return luaL_error(L,
                        "trace_process: unknown flag '%s' (send, receive, "
                        "call, spawn, exit or link expected)",
                        s);
    flags |= flag_names[k].flag;
    lua_pop(L, 2);
  }
  mb_proc_t *p = MB_PID_IS_REMOTE(pid) ? NULL : mb__proc_lookup(pid);
  bool ok = false;
  if (p != NULL) {
    uv_mutex_lock(&lock);
    ok = session.gen != 0;
    if (ok)
      atomic_store_explicit(&p->trace, flags ? session.gen << 8 | flags : 0,
                            memory_order_relaxed);
    uv_mutex_unlock(&lock);
    mb__proc_unref(p);
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* trace_stop([session]) -> true if a session was running (its tracer
 * gets {trace_stopped, stopped, Count}); with a session number (from
 * trace_start), only if that one is. */
int mb_lua_trace_stop(lua_State *L) {
  lua_Integer only = luaL_optinteger(L, 1, 0);
  uv_mutex_lock(&lock);
  bool running = session.gen != 0 && (only == 0 || session.gen == only);
  if (running)
    stop("stopped");
  uv_mutex_unlock(&lock);
  lua_pushboolean(L, running);
  return 1;
}
