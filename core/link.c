/* Links, monitors and exit signals, with Erlang's semantics.
 *
 * Each side of a link or monitor is changed only by its own process: a
 * process changes its own tables directly and tells the other side with a
 * signal, which travels in the inbox with messages (so that signals and
 * messages from one sender keep their order).  The tables are written under
 * the process lock, so that process_info can read them. */
#include <string.h>

#include <lauxlib.h>

#include "dist/dist.h"

mb__atoms_t mb__atoms;

int mb__atoms_init(void) {
  struct {
    const mb__atom_t **slot;
    const char *name;
  } all[] = {{&mb__atoms.normal, "normal"},
             {&mb__atoms.kill, "kill"},
             {&mb__atoms.killed, "killed"},
             {&mb__atoms.noproc, "noproc"},
             {&mb__atoms.EXIT, "EXIT"},
             {&mb__atoms.DOWN, "DOWN"},
             {&mb__atoms.process, "process"},
             {&mb__atoms.memory_limit, "memory_limit"},
             {&mb__atoms.shutdown, "shutdown"},
             {&mb__atoms.out_of_memory, "out_of_memory"},
             {&mb__atoms.empty, ""},
             {&mb__atoms.nonode, "nonode@nohost"},
             {&mb__atoms.timeout, "timeout"},
             {&mb__atoms.noconnection, "noconnection"}};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    int err = mb__atom_intern(all[i].name, strlen(all[i].name), all[i].slot);
    if (err)
      return err;
  }
  /* Named by the distribution layer when it writes signals. */
  static const char *const dist[] = {"monitor",      "noreply", "spawn_reply",
                                     "system_limit", "ok",      "error",
                                     "nodeup",       "nodedown"};
  for (size_t i = 0; i < sizeof dist / sizeof dist[0]; i++) {
    const mb__atom_t *a;
    int err = mb__atom_intern(dist[i], strlen(dist[i]), &a);
    if (err)
      return err;
  }
  return 0;
}

/* ---- signals and the messages they turn into ---- */

static mb_msg_t *exit_signal(mb_pid_t from, const mb_msg_t *reason,
                             bool linked) {
  mb_msg_t *m = mb__msg_dup(reason);
  if (m != NULL) {
    m->kind = MB_SIG_EXIT;
    m->from = from;
    m->flags = linked ? MB_SIGF_LINKED : 0;
  }
  return m;
}

/* {'EXIT', From, Reason} */
static mb_msg_t *exit_message(mb_pid_t from, const mb_msg_t *reason) {
  mb_msg_t *m = mb__tuple_new(3);
  if (m == NULL || mb__tuple_atom(&m, mb__atoms.EXIT) ||
      mb__tuple_pid(&m, from) || mb__tuple_value(&m, reason) ||
      mb__tuple_end(&m, 3)) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

/* {'DOWN', Ref, process, Pid, Reason}, as a DOWN signal. */
static mb_msg_t *down_message(uint64_t ref, mb_pid_t pid,
                              const mb_msg_t *reason) {
  mb_msg_t *m = mb__tuple_new(5);
  if (m == NULL || mb__tuple_atom(&m, mb__atoms.DOWN) ||
      mb__tuple_ref(&m, ref) || mb__tuple_atom(&m, mb__atoms.process) ||
      mb__tuple_pid(&m, pid) || mb__tuple_value(&m, reason) ||
      mb__tuple_end(&m, 5)) {
    mb_msg_free(m);
    return NULL;
  }
  m->kind = MB_SIG_DOWN;
  m->ref = ref;
  return m;
}

static void queue_message(mb_proc_t *p, mb_msg_t *m) {
  m->kind = MB_SIG_MSG;
  m->next = NULL;
  if (p->q_tail)
    p->q_tail->next = m;
  else
    p->q_head = m;
  p->q_tail = m;
  p->q_len++;
}

/* ---- the owner's tables ---- */

static void table_put(mb_proc_t *p, mb__map_t *t, uint64_t k, uint64_t v) {
  uv_mutex_lock(&p->lock);
  mb__map_put(t, k, (void *)(uintptr_t)v);
  uv_mutex_unlock(&p->lock);
}

static uint64_t table_del(mb_proc_t *p, mb__map_t *t, uint64_t k) {
  uv_mutex_lock(&p->lock);
  uint64_t v = (uint64_t)(uintptr_t)mb__map_del(t, k);
  uv_mutex_unlock(&p->lock);
  return v;
}

static void die(mb_proc_t *p, const mb_msg_t *reason) {
  if (p->exit_reason == NULL)
    p->exit_reason = mb__msg_dup(reason);
}

static void handle_exit(mb_proc_t *p, mb_msg_t *m) {
  bool linked = m->flags & MB_SIGF_LINKED;
  if (m->flags & MB_SIGF_MEMORY) {
    die(p, m);
    mb_msg_free(m);
    return;
  }
  if (linked && table_del(p, &p->links, m->from) == 0) {
    mb_msg_free(m); /* unlinked meanwhile */
    return;
  }
  if (!linked && mb__msg_is_atom(m, mb__atoms.kill)) {
    mb_msg_t *killed = mb__msg_atom(mb__atoms.killed);
    if (killed != NULL)
      p->exit_reason = killed;
  } else if (p->trap_exit) {
    mb_msg_t *msg = exit_message(m->from, m);
    if (msg != NULL)
      queue_message(p, msg);
  } else if (!mb__msg_is_atom(m, mb__atoms.normal)) {
    die(p, m);
  } else if (!linked && m->from == p->pid) {
    die(p, m); /* exit(self(), normal) ends the caller, as in Erlang */
  }
  mb_msg_free(m);
}

void mb__link_handle(mb_proc_t *p, mb_msg_t *m) {
  if (p->exit_reason != NULL) {
    /* Dealt with by mb__link_exit, which answers a link or monitor by its
     * kind: queue_message marks it a message, so put the kind back. */
    uint8_t kind = m->kind;
    queue_message(p, m);
    m->kind = kind;
    return;
  }
  switch ((mb__sig_kind_t)m->kind) {
  case MB_SIG_MSG:
    queue_message(p, m);
    return;
  case MB_SIG_DOWN:
    m->flags |= MB_SIGF_DOWN; /* for demonitor's flush */
    if (table_del(p, &p->monitors, m->ref) != 0)
      queue_message(p, m);
    else
      mb_msg_free(m); /* demonitored meanwhile: no DOWN after demonitor */
    return;
  case MB_SIG_ALIAS:
    if (!(m->ref & MB_REF_ALIAS) || mb__map_get(&p->monitors, m->ref) != NULL)
      queue_message(p, m);
    else {
      mb__proc_uncount(p, m);
      mb_msg_free(m); /* the alias is gone: the caller gave up */
    }
    return;
  case MB_SIG_LINK:
    table_put(p, &p->links, m->from, 1);
    break;
  case MB_SIG_UNLINK:
    table_del(p, &p->links, m->from);
    break;
  case MB_SIG_MONITOR:
    table_put(p, &p->monitored_by, m->ref, m->from);
    break;
  case MB_SIG_DEMONITOR:
    table_del(p, &p->monitored_by, m->ref);
    break;
  case MB_SIG_EXIT:
    handle_exit(p, m);
    return;
  }
  mb_msg_free(m);
}

/* ---- ending ---- */

static void send_down(uint64_t ref, mb_pid_t watcher, mb_pid_t pid,
                      const mb_msg_t *reason) {
  mb_msg_t *m = down_message(ref, pid, reason);
  if (m != NULL) {
    m->from = pid;
    mb__signal(watcher, m);
  }
}

static void send_exit(mb_pid_t to, mb_pid_t from, const mb_msg_t *reason) {
  mb_msg_t *m = exit_signal(from, reason, true);
  if (m != NULL)
    mb__signal(to, m);
}

/* Signals that reached the process but were not acted on: a link or a
 * monitor set up just before the end still learns of it. */
static void answer_pending(mb_proc_t *p, mb_msg_t *m, const mb_msg_t *reason) {
  for (; m != NULL; m = m->next) {
    if (m->kind == MB_SIG_LINK)
      send_exit(m->from, p->pid, reason);
    else if (m->kind == MB_SIG_MONITOR)
      send_down(m->ref, m->from, p->pid, reason);
  }
}

static void take_table(mb_proc_t *p, mb__map_t *t, mb__map_t *out) {
  uv_mutex_lock(&p->lock);
  *out = *t;
  mb__map_init(t);
  uv_mutex_unlock(&p->lock);
}

void mb__link_exit(mb_proc_t *p, const mb_msg_t *reason, mb_msg_t *inbox) {
  /* The name goes first: whoever hears of the end may take it at once. */
  mb__registry_remove_proc(p);
  answer_pending(p, p->q_head, reason);
  answer_pending(p, inbox, reason);
  mb__map_t links, monitors, by;
  take_table(p, &p->links, &links);
  take_table(p, &p->monitors, &monitors);
  take_table(p, &p->monitored_by, &by);
  size_t i;
  uint64_t k;
  void *v;
  for (i = 0; mb__map_next(&links, &i, &k, &v);)
    send_exit((mb_pid_t)k, p->pid, reason);
  for (i = 0; mb__map_next(&by, &i, &k, &v);)
    send_down(k, (mb_pid_t)(uintptr_t)v, p->pid, reason);
  for (i = 0; mb__map_next(&monitors, &i, &k, &v);) {
    mb_msg_t *m = mb__signal_new(MB_SIG_DEMONITOR, p->pid, k);
    if (m != NULL)
      mb__signal((mb_pid_t)(uintptr_t)v, m);
  }
  mb__map_free(&links);
  mb__map_free(&monitors);
  mb__map_free(&by);
}

int mb__link_new_child(mb_proc_t *parent, mb_proc_t *child, bool link,
                       uint64_t monitor_ref) {
  if (link) {
    table_put(child, &child->links, parent->pid, 1);
    table_put(parent, &parent->links, child->pid, 1);
  }
  if (monitor_ref != 0) {
    table_put(child, &child->monitored_by, monitor_ref, parent->pid);
    table_put(parent, &parent->monitors, monitor_ref, child->pid);
  }
  return 0;
}

/* ---- the Lua side ---- */

/* Encode an exit reason given from Lua ("kill"/"normal" strings are the
 * atoms of the same name). */
static mb_msg_t *reason_encode(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tostring(L, idx);
    if (strcmp(s, "kill") == 0)
      return mb__msg_atom(mb__atoms.kill);
    if (strcmp(s, "normal") == 0)
      return mb__msg_atom(mb__atoms.normal);
    if (strcmp(s, "shutdown") == 0)
      return mb__msg_atom(mb__atoms.shutdown);
  }
  char err[600];
  mb_msg_t *m;
  int r = mb__msg_encode(L, idx, "reason", &m, err, sizeof err);
  if (r != 0)
    mb_lua_error(L, fname, r, r == MB_EBADTERM ? err : NULL);
  return m;
}

/* link(pid) -> true.  A dead pid raises noproc, or, in a process trapping
 * exits, gives it {'EXIT', Pid, noproc}, as link/1 does in Erlang. */
int mb_lua_link(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "link");
  mb_pid_t to = mb_lua_check_pid(L, 1);
  lua_pushboolean(L, 1);
  if (to == p->pid || mb__map_get(&p->links, to) != NULL)
    return 1;
  mb_msg_t *m = mb__signal_new(MB_SIG_LINK, p->pid, 0);
  if (m == NULL)
    return luaL_error(L, "link: out of memory");
  if (mb__signal(to, m) == 0) {
    table_put(p, &p->links, to, 1);
    if (MB__TRACING(p, MB_TRACE_LINK))
      mb__trace_link(p, L, true, 1);
    return 1;
  }
  if (!p->trap_exit)
    return luaL_error(L, "link: noproc (no process %s)",
                      luaL_tolstring(L, 1, NULL));
  mb_msg_t *reason = mb__msg_atom(mb__atoms.noproc);
  mb_msg_t *msg = reason ? exit_message(to, reason) : NULL;
  mb_msg_free(reason);
  if (msg != NULL)
    mb__proc_deliver(p, msg);
  return 1;
}

int mb_lua_unlink(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "unlink");
  mb_pid_t to = mb_lua_check_pid(L, 1);
  if (table_del(p, &p->links, to) != 0) {
    mb_msg_t *m = mb__signal_new(MB_SIG_UNLINK, p->pid, 0);
    if (m != NULL)
      mb__signal(to, m);
    if (MB__TRACING(p, MB_TRACE_LINK))
      mb__trace_link(p, L, false, 1);
  }
  lua_pushboolean(L, 1);
  return 1;
}

void mb__link_monitor_add(mb_proc_t *p, uint64_t ref, mb_pid_t target) {
  table_put(p, &p->monitors, ref, target);
}

mb_pid_t mb__link_monitor_del(mb_proc_t *p, uint64_t ref) {
  return (mb_pid_t)table_del(p, &p->monitors, ref);
}

/* The process ends with its inbox closed, then takes monitored_by under
 * its lock (mb__link_exit): an entry put while the inbox is open is found
 * there, and gets its 'DOWN'. */
int mb__link_watch(mb_proc_t *target, uint64_t ref, mb_pid_t watcher) {
  uv_mutex_lock(&target->lock);
  int err = atomic_load(&target->inbox_head) == MB__INBOX_CLOSED ? MB_ENOPROC
            : mb__map_put(&target->monitored_by, ref,
                          (void *)(uintptr_t)watcher) != 0
                ? MB_ENOMEM
                : 0;
  uv_mutex_unlock(&target->lock);
  return err;
}

void mb__link_unwatch(mb_proc_t *target, uint64_t ref) {
  table_del(target, &target->monitored_by, ref);
}

/* {'DOWN', Ref, process, {Name, Node}, Reason} for a monitor of a name
 * that has no process: queued as a message, not as a DOWN signal (there is
 * no monitor to end), marked so that demonitor's flush finds it. */
static void down_of_name(mb_proc_t *p, uint64_t ref, const mb__atom_t *name,
                         const mb__atom_t *node, const mb__atom_t *why) {
  mb_msg_t *m = mb__tuple_new(5);
  if (m == NULL || mb__tuple_atom(&m, mb__atoms.DOWN) ||
      mb__tuple_ref(&m, ref) || mb__tuple_atom(&m, mb__atoms.process) ||
      mb__tuple_open(&m, 2) || mb__tuple_atom(&m, name) ||
      mb__tuple_atom(&m, node) || mb__tuple_end(&m, 2) ||
      mb__tuple_atom(&m, why) || mb__tuple_end(&m, 5)) {
    mb_msg_free(m);
    return;
  }
  m->kind = MB_SIG_MSG;
  m->flags |= MB_SIGF_DOWN;
  m->ref = ref;
  mb__proc_deliver(p, m);
}

/* The watched side of monitor ref: set at once on a process of this node
 * (mb__link_watch: it is not woken, and it answers a monitor set before
 * its end with a 'DOWN' all the same), by a signal on another node's.
 * False if the process has ended or memory ran out. */
static bool watch(mb_pid_t to, uint64_t ref, mb_pid_t watcher) {
  if (MB_PID_IS_REMOTE(to)) {
    mb_msg_t *m = mb__signal_new(MB_SIG_MONITOR, watcher, ref);
    return m != NULL && mb__signal(to, m) == 0;
  }
  mb_proc_t *t = mb__proc_lookup(to);
  if (t == NULL)
    return false;
  bool ok = mb__link_watch(t, ref, watcher) == 0;
  mb__proc_unref(t);
  return ok;
}

/* And ended the same way: at once here, by a signal after the monitor's
 * on another node. */
static void unwatch(mb_pid_t target, uint64_t ref, mb_pid_t watcher) {
  if (MB_PID_IS_REMOTE(target)) {
    mb_msg_t *m = mb__signal_new(MB_SIG_DEMONITOR, watcher, ref);
    if (m != NULL)
      mb__signal(target, m);
    return;
  }
  mb_proc_t *t = mb__proc_lookup(target);
  if (t != NULL) { /* else it has ended, and its monitors with it */
    mb__link_unwatch(t, ref);
    mb__proc_unref(t);
  }
}

/* monitor(pid or {Name, Node}) -> ref.  A dead or unknown process gives
 * 'DOWN' with noproc at once; a name of another node while this one is not
 * distributed gives noconnection (as OTP). */
int mb_lua_monitor(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "monitor");
  const mb__atom_t *rname, *rnode;
  mb_pid_t to;
  uint64_t ref = mb__ref_next() | MB_REF_ALIAS;
  if (mb__to_remote_name(L, 1, &rname, &rnode)) {
    to = mb__dist_resolve(rname, rnode);
    if (to == 0) {
      bool away = mb__dist_node() == NULL && rnode != mb__atoms.nonode;
      down_of_name(p, ref, rname, rnode,
                   away ? mb__atoms.noconnection : mb__atoms.noproc);
      mb__push_ref(L, ref);
      return 1;
    }
  } else {
    to = mb_lua_check_pid(L, 1);
  }
  table_put(p, &p->monitors, ref, to);
  if (!watch(to, ref, p->pid)) {
    mb_msg_t *reason = mb__msg_atom(mb__atoms.noproc);
    mb_msg_t *down = reason ? down_message(ref, to, reason) : NULL;
    mb_msg_free(reason);
    if (down != NULL)
      mb__proc_deliver(p, down);
  }
  mb__push_ref(L, ref);
  return 1;
}

/* demonitor(ref, [{flush = true}]) -> true.  After it, no 'DOWN' for ref
 * arrives; with flush, one already queued is removed. */
int mb_lua_demonitor(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "demonitor");
  mb__lref_t *r = mb__to_ref(L, 1);
  if (r == NULL)
    return luaL_typeerror(L, 1, "ref");
  bool flush = false;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "flush");
    flush = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  mb_pid_t target = (mb_pid_t)table_del(p, &p->monitors, r->id);
  if (target != 0)
    unwatch(target, r->id, p->pid);
  if (flush)
    mb__proc_flush_down(L, p, r->id);
  lua_pushboolean(L, 1);
  return 1;
}

static int exit_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return luaL_error(L, "exit: process resumed after its end");
}

/* exit(reason) ends the caller; exit(pid, reason) sends an exit signal. */
int mb_lua_exit(lua_State *L) {
  mb_proc_t *self = MB_PROC(L);
  if (lua_gettop(L) <= 1) {
    mb_proc_t *p = mb__proc_self(L, "exit");
    luaL_checkany(L, 1);
    if (!lua_isyieldable(L))
      return luaL_error(L, "exit: cannot end the process from here "
                           "(inside a C call)");
    mb_msg_t *reason = reason_encode(L, 1, "exit");
    mb_msg_free(p->exit_reason);
    p->exit_reason = reason;
    return mb__proc_yield(L, MB_YIELD_EXIT, 0, exit_k);
  }
  mb_pid_t to = mb_lua_check_pid(L, 1);
  luaL_checkany(L, 2);
  mb_msg_t *reason = reason_encode(L, 2, "exit");
  mb_msg_t *m = exit_signal(self ? self->pid : 0, reason, false);
  mb_msg_free(reason);
  if (m == NULL)
    return luaL_error(L, "exit: out of memory");
  mb__signal(to, m);
  lua_pushboolean(L, 1);
  if (self != NULL && to == self->pid && mb__proc_handle_signals(self) &&
      lua_isyieldable(L))
    return mb__proc_yield(L, MB_YIELD_EXIT, 0, exit_k);
  return 1;
}

/* send_alias(pid, ref, msg): send msg to pid, delivered only while pid
 * still holds the monitor `ref` (Erlang's alias, as gen calls use it). */
int mb_lua_send_alias(lua_State *L) {
  mb_proc_t *self = MB_PROC(L);
  mb_pid_t to = mb_lua_check_pid(L, 1);
  mb__lref_t *r = mb__to_ref(L, 2);
  if (r == NULL)
    return luaL_typeerror(L, 2, "ref");
  luaL_checkany(L, 3);
  char err[600];
  mb_msg_t *m;
  int e = mb__msg_encode(L, 3, "msg", &m, err, sizeof err);
  if (e != 0)
    return mb_lua_error(L, "send_alias", e, e == MB_EBADTERM ? err : NULL);
  m->kind = MB_SIG_ALIAS;
  m->ref = r->id;
  m->from = self ? self->pid : 0;
  mb__signal(to, m);
  /* A send like any other for tracing (a GenServer's reply is one), to
   * the pid that holds the alias. */
  if (self != NULL && MB__TRACING(self, MB_TRACE_SEND))
    mb__trace_send(self, L, 1, 3);
  return 0;
}

/* trap_exit([flag]) -> the previous value. */
int mb_lua_trap_exit(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "trap_exit");
  bool old = p->trap_exit;
  if (!lua_isnone(L, 1)) {
    uv_mutex_lock(&p->lock);
    p->trap_exit = lua_toboolean(L, 1);
    uv_mutex_unlock(&p->lock);
  }
  lua_pushboolean(L, old);
  return 1;
}
