/* moonbeam: the Lua binding of the core, one function per primitive.
 * The friendly layer lives in stdlib/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/dist/dist_internal.h"

#define DEFAULT_RUN_TIMEOUT_MS 60000

static long run_timeout_ms = DEFAULT_RUN_TIMEOUT_MS;

static void check_err(lua_State *L, int err, const char *fname) {
  if (err != 0)
    luaL_error(L, "%s: %s", fname, mb_strerror(err));
}

/* A host that started the node stops it when it exits, so that no
 * scheduler thread runs while the OS process tears itself down. */
static void stop_at_exit(void) { mb_node_stop(); }

static int start_node(mb_config_t *cfg) {
  int err = mb_node_start(cfg);
  if (err == 0)
    atexit(stop_at_exit);
  return err;
}

static void ensure_node(lua_State *L) {
  if (mb_node_started())
    return;
  mb_config_t cfg = {0};
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    cfg.lua_path = lua_tostring(L, -2);
    cfg.lua_cpath = lua_tostring(L, -1);
  }
  int err = start_node(&cfg);
  lua_settop(L, top);
  check_err(L, err, "start");
}

/* Encode value idx or raise "fname: cannot send ... at path". */
static mb_msg_t *encode(lua_State *L, int idx, const char *root,
                        const char *fname) {
  char err[600];
  mb_msg_t *m;
  int r = mb__msg_encode(L, idx, root, &m, err, sizeof err);
  if (r == MB_EBADTERM)
    luaL_error(L, "%s: %s", fname, err);
  check_err(L, r, fname);
  return m;
}

/* Encode arguments first..top as a table {n = count, ...}. */
static mb_msg_t *encode_args(lua_State *L, int first, const char *fname) {
  int top = lua_gettop(L);
  if (first > top)
    return NULL;
  int n = top - first + 1;
  lua_createtable(L, n, 1);
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  mb_msg_t *m = encode(L, -1, "args", fname);
  lua_pop(L, 1);
  return m;
}

static mb_pid_t check_pid(lua_State *L, int idx) {
  return mb__check_pid(L, idx);
}

static int atom_table_full(lua_State *L, const char *fname) {
  return luaL_error(L, "%s: the atom table is full (%d atoms: system_limit)",
                    fname, (int)MB_ATOM_MAX);
}

/* A registered name: an atom, or a string naming one. */
static const mb__atom_t *check_name(lua_State *L, int idx) {
  const mb__atom_t *a = mb__to_atom(L, idx);
  if (a != NULL)
    return a;
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_typeerror(L, idx, "name (string or atom)");
  const char *s = lua_tolstring(L, idx, &len);
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ELIMIT)
    atom_table_full(L, "name");
  if (err != 0)
    luaL_argerror(L, idx, "name longer than 255 bytes");
  return a;
}

/* A destination: a pid, a registered name, or {Name, Node}. */
static mb_pid_t check_dest(lua_State *L, int idx, const char *fname) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p != NULL)
    return mb__pid_key(p);
  const mb__atom_t *rname, *rnode;
  if (mb__to_remote_name(L, idx, &rname, &rnode)) {
    mb_pid_t pid = mb__dist_resolve(rname, rnode);
    if (pid == 0 && mb__dist_node() == NULL)
      luaL_error(L, "%s: this node is not distributed (node %s)", fname, rnode->name);
    return pid;
  }
  if (lua_type(L, idx) != LUA_TSTRING && mb__to_atom(L, idx) == NULL)
    luaL_typeerror(L, idx, "pid or registered name");
  const mb__atom_t *name = check_name(L, idx);
  mb_pid_t pid = mb__registry_whereis(name);
  if (pid == 0)
    luaL_error(L, "%s: no process registered as '%s'", fname, name->name);
  return pid;
}

/* ---- processes ---- */

static int l_self(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL)
    return luaL_error(L, "self: not called inside a moonbeam process");
  mb__push_pid(L, p->pid);
  return 1;
}

/* Fill spawn options from the arguments: (fn, ...) or (module, fname, ...).
 * Returns the index of the first argument to pass. */
static int spawn_target(lua_State *L, mb_spawn_opts_t *o, const char *fname) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    o->module = lua_tostring(L, 1);
    o->function = luaL_checkstring(L, 2);
    return 3;
  }
  luaL_argexpected(L, lua_type(L, 1) == LUA_TFUNCTION, 1,
                   "function or module name");
  o->fn = encode(L, 1, "function", fname);
  return 2;
}

static int spawn_with(lua_State *L, mb_spawn_opts_t *o, int base,
                      const char *fname) {
  ensure_node(L);
  mb_proc_t *self = MB_PROC(L);
  if ((o->link || o->monitor) && self == NULL)
    return luaL_error(L, "%s: not called inside a moonbeam process", fname);
  o->parent = self ? self->pid : 0;
  lua_rotate(L, 1, -(base - 1)); /* the target first, options last */
  int first = spawn_target(L, o, fname);
  lua_settop(L, lua_gettop(L) - (base - 1));
  o->args = encode_args(L, first, fname);
  mb_pid_t pid;
  int err = mb_proc_spawn_opts(o, &pid);
  if (err == MB_ELIMIT)
    return luaL_error(L, "%s: too many processes (the node's limit is %d: "
                      "system_limit)", fname, (int)mb__config()->max_processes);
  check_err(L, err, fname);
  mb__push_pid(L, pid);
  if (o->monitor) {
    mb__push_ref(L, o->monitor_ref);
    return 2;
  }
  return 1;
}

/* spawn(fn, ...) or spawn(module, fname, ...) -> pid */
static int l_spawn(lua_State *L) {
  mb_spawn_opts_t o = {0};
  return spawn_with(L, &o, 1, "spawn");
}

/* spawn_link(...) -> pid, linked to the caller before it runs. */
static int l_spawn_link(lua_State *L) {
  mb_spawn_opts_t o = {0};
  o.link = 1;
  return spawn_with(L, &o, 1, "spawn_link");
}

/* spawn_monitor(...) -> pid, ref */
static int l_spawn_monitor(lua_State *L) {
  mb_spawn_opts_t o = {0};
  o.monitor = 1;
  return spawn_with(L, &o, 1, "spawn_monitor");
}

/* spawn_opt({link=, monitor=, max_heap=}, fn or module, ...) */
static int l_spawn_opt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  mb_spawn_opts_t o = {0};
  lua_getfield(L, 1, "link");
  o.link = lua_toboolean(L, -1);
  lua_getfield(L, 1, "monitor");
  o.monitor = lua_toboolean(L, -1);
  lua_getfield(L, 1, "max_heap");
  lua_Integer heap = luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, heap >= 0, 1, "max_heap must not be negative");
  o.max_heap = (size_t)heap;
  lua_pop(L, 3);
  return spawn_with(L, &o, 2, "spawn_opt");
}

/* Send to another node: the value is encoded as a term at once. */
static int send_remote(lua_State *L, mb_pid_t to) {
  char err[600];
  mb_msg_t *m;
  int r = mb__etf_encode(L, 2, "msg", &m, err, sizeof err);
  if (r == MB_EBADTERM)
    return luaL_error(L, "send: %s", err);
  check_err(L, r, "send");
  m->flags |= MB_MSGF_ETF;
  mb_proc_t *self = MB_PROC(L);
  m->from = self ? self->pid : 0;
  mb__dist_route(to, m);
  return 0;
}

static int l_send(lua_State *L) {
  mb__lpid_t *lp = mb__to_pid(L, 1);
  if (lp != NULL && lp->node != 0) {
    luaL_checkany(L, 2);
    return send_remote(L, mb__pid_key(lp));
  }
  mb_pid_t to = lp ? lp->id : check_dest(L, 1, "send");
  luaL_checkany(L, 2);
  if (MB_PID_IS_REMOTE(to))
    return send_remote(L, to);
  mb_msg_t *m = encode(L, 2, "msg", "send");
  mb_proc_t *self = MB_PROC(L);
  m->from = self ? self->pid : 0;
  if (lp != NULL && lp->proc == NULL)
    lp->proc = mb__proc_lookup(to);
  if (lp != NULL && lp->proc != NULL)
    mb__proc_deliver(lp->proc, m); /* dropped if it has ended */
  else
    mb_proc_send(to, m);
  return 0;
}

static int l_send_after(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "time must not be negative");
  mb__lpid_t *lp = mb__to_pid(L, 2);
  const mb__atom_t *name = lp ? NULL : check_name(L, 2);
  luaL_checkany(L, 3);
  ensure_node(L);
  mb_msg_t *m = encode(L, 3, "msg", "send_after");
  uint64_t id = mb__ref_next();
  check_err(L, mb__timer_send((uint64_t)ms, lp ? lp->id : 0, name, m, id),
            "send_after");
  mb__push_ref(L, id);
  return 1;
}

static int l_cancel_timer(lua_State *L) {
  mb__lref_t *r = mb__to_ref(L, 1);
  if (r == NULL)
    return luaL_typeerror(L, 1, "timer ref");
  int64_t left = mb__timer_cancel(r->id);
  if (left < 0)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, (lua_Integer)left);
  return 1;
}

static int l_make_ref(lua_State *L) {
  mb__push_ref(L, mb__ref_next());
  return 1;
}

static int l_is_alive(lua_State *L) {
  lua_pushboolean(L, mb_proc_alive(check_pid(L, 1)));
  return 1;
}

/* monotonic_time() -> nanoseconds from an arbitrary point, never going
 * back (Erlang's erlang:monotonic_time(nanosecond)). */
static int l_monotonic_time(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_hrtime());
  return 1;
}

/* process_limit() -> how many processes may be alive at once
 * (erlang:system_info(process_limit)). */
static int l_process_limit(lua_State *L) {
  ensure_node(L);
  lua_pushinteger(L, (lua_Integer)mb__config()->max_processes);
  return 1;
}

static int l_process_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mb_proc_count());
  return 1;
}

static int l_memory(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "memory");
  lua_pushinteger(L, (lua_Integer)atomic_load(&p->mem));
  return 1;
}

/* ---- names ---- */

static int l_register(lua_State *L) {
  const mb__atom_t *name = check_name(L, 1);
  mb_pid_t pid = check_pid(L, 2);
  int err = mb__registry_register(name, pid);
  if (err == MB_EEXIST)
    return luaL_error(L, "register: the name '%s' is already registered",
                      name->name);
  if (err == MB_ESTATE)
    return luaL_error(L, "register: %s already has a registered name",
                      luaL_tolstring(L, 2, NULL));
  if (err == MB_ENOPROC)
    return luaL_error(L, "register: %s is not alive",
                      luaL_tolstring(L, 2, NULL));
  check_err(L, err, "register");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unregister(lua_State *L) {
  const mb__atom_t *name = check_name(L, 1);
  if (mb__registry_unregister(name) != 0)
    return luaL_error(L, "unregister: no process registered as '%s'",
                      name->name);
  lua_pushboolean(L, 1);
  return 1;
}

/* whereis(name) -> pid, or nil */
static int l_whereis(lua_State *L) {
  mb_pid_t pid = mb__registry_whereis(check_name(L, 1));
  if (pid == 0 || !mb_proc_alive(pid))
    return 0;
  mb__push_pid(L, pid);
  return 1;
}

static int l_registered(lua_State *L) {
  mb__registry_push_all(L);
  return 1;
}

/* ---- distribution ---- */

static const mb__atom_t *check_node(lua_State *L, int idx) {
  const mb__atom_t *a = mb__to_atom(L, idx);
  if (a != NULL) {
    if (memchr(a->name, '\0', a->len) != NULL)
      luaL_argerror(L, idx, "node name with a NUL byte");
    return a;
  }
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_typeerror(L, idx, "node name (string or atom)");
  const char *s = lua_tolstring(L, idx, &len);
  if (memchr(s, '@', len) == NULL)
    luaL_argerror(L, idx, "a node name is name@host");
  if (memchr(s, '\0', len) != NULL)
    luaL_argerror(L, idx, "node name with a NUL byte");
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ELIMIT)
    atom_table_full(L, "node name");
  if (err != 0)
    luaL_argerror(L, idx, "node name too long");
  return a;
}

/* The host part of -sname (short) or -name (long) names. */
static void host_name(char *out, size_t len, bool shortname) {
  size_t n = len;
  if (uv_os_gethostname(out, &n) != 0)
    snprintf(out, len, "localhost");
  if (shortname) {
    char *dot = strchr(out, '.');
    if (dot)
      *dot = '\0';
  }
}

/* start_distribution{name = "a@host" | sname = "a", cookie =, hidden =,
 * ticktime =, port =} -> the node name (an atom) */
static int l_start_distribution(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  ensure_node(L);
  char name[600], host[256], cookie[256];
  lua_getfield(L, 1, "name");
  lua_getfield(L, 1, "sname");
  size_t len;
  const char *lname = lua_tolstring(L, -2, &len), *sname = lua_tostring(L, -1);
  if ((lname == NULL) == (sname == NULL))
    return luaL_argerror(L, 1, "give name or sname");
  if (lname == NULL)
    lua_tolstring(L, -1, &len);
  if (strlen(lname ? lname : sname) != len)
    return luaL_argerror(L, 1, "node name with a NUL byte");
  const char *base = lname ? lname : sname;
  if (strchr(base, '@') != NULL) {
    snprintf(name, sizeof name, "%s", base);
  } else {
    host_name(host, sizeof host, sname != NULL);
    snprintf(name, sizeof name, "%s@%s", base, host);
  }
  lua_pop(L, 2);
  mb_dist_config_t cfg = {0};
  cfg.name = name;
  lua_getfield(L, 1, "cookie");
  if (lua_isstring(L, -1)) {
    snprintf(cookie, sizeof cookie, "%s", lua_tostring(L, -1));
  } else {
    int err = mb_dist_default_cookie(cookie, sizeof cookie);
    if (err)
      return luaL_error(L, "start_distribution: no cookie (~/.erlang.cookie: %s)",
                        mb_strerror(err));
  }
  cfg.cookie = cookie;
  lua_getfield(L, 1, "hidden");
  cfg.hidden = lua_toboolean(L, -1);
  lua_getfield(L, 1, "ticktime");
  cfg.ticktime = (unsigned)luaL_optinteger(L, -1, 60);
  lua_getfield(L, 1, "port");
  cfg.port = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "epmd_port");
  if (!lua_isnil(L, -1)) /* read by epmd.c, as Erlang reads it */
    setenv("ERL_EPMD_PORT", lua_tostring(L, -1), 1);
  lua_pop(L, 5);
  int err = mb_dist_start(&cfg);
  if (err == MB_EEXIST)
    return luaL_error(L, "start_distribution: the name %s is already registered with epmd", name);
  check_err(L, err, "start_distribution");
  /* net_kernel answers other nodes' pings. */
  mb_proc_spawn_mfa("moonbeam.net_kernel", "start", NULL, NULL);
  mb__push_atom(L, mb__dist_node());
  return 1;
}

/* node() -> this node's name, or nonode@nohost */
static int l_node(lua_State *L) {
  const mb__atom_t *a = mb__dist_node();
  if (a == NULL)
    a = mb__atoms.nonode;
  mb__push_atom(L, a);
  return 1;
}

/* nodes(["visible" | "hidden" | "connected"]) -> list of node names */
static int l_nodes(lua_State *L) {
  static const char *const kinds[] = {"visible", "connected", "hidden", NULL};
  int kind = luaL_checkoption(L, 1, "visible", kinds);
  const mb__atom_t *list[1024];
  int n = mb__dist_node() ? mb__dist_nodes(list, 1024, kind) : 0;
  lua_createtable(L, n, 0);
  int k = 0;
  for (int i = 0; i < n; i++) {
    mb__push_atom(L, list[i]);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* monitor_node(node, flag): {nodedown, Node} when the connection goes. */
static int l_monitor_node(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "monitor_node");
  const mb__atom_t *n = check_node(L, 1);
  int err = mb__dist_monitor_node(p->pid, n, lua_isnone(L, 2) || lua_toboolean(L, 2));
  if (err == MB_ESTATE)
    return luaL_error(L, "monitor_node: this node is not distributed");
  check_err(L, err, "monitor_node");
  lua_pushboolean(L, 1);
  return 1;
}

/* monitor_nodes(flag): {nodeup, Node} and {nodedown, Node} for all. */
static int l_monitor_nodes(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "monitor_nodes");
  mb__dist_monitor_nodes(p->pid, lua_isnone(L, 1) || lua_toboolean(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_disconnect(lua_State *L) {
  const mb__atom_t *n = check_node(L, 1);
  if (mb__dist_node() == NULL || !mb__dist_connected(n)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  mb__dist_disconnect(n);
  lua_pushboolean(L, 1);
  return 1;
}

/* spawn_request(node, module, function, args, [{reply = false}]) -> ref:
 * the other node runs module:function(args...) monitored by the caller,
 * which gets {spawn_reply, Ref, ok, Pid} (or error, Reason), then the DOWN;
 * with reply = false, neither (a cast). */
static int l_spawn_request(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "spawn_request");
  const mb__atom_t *n = check_node(L, 1);
  const mb__atom_t *mod = mb__to_atom(L, 2), *fun = mb__to_atom(L, 3);
  if (mod == NULL)
    mod = check_name(L, 2);
  if (fun == NULL)
    fun = check_name(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  if (mb__dist_node() == NULL)
    return luaL_error(L, "spawn_request: this node is not distributed");
  bool reply = true;
  if (lua_istable(L, 5)) {
    lua_getfield(L, 5, "reply");
    reply = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  uint64_t ref = mb__ref_next() | MB_REF_ALIAS;
  if (reply)
    mb__link_monitor_add(p, ref, mb__dist_name_key(mod, n));
  char err[600];
  int r = mb__dist_spawn_request(L, n, p->pid, ref, mod, fun, 4, reply, err,
                                 sizeof err);
  if (r == MB_EBADTERM)
    return luaL_error(L, "spawn_request: %s", err);
  check_err(L, r, "spawn_request");
  mb__push_ref(L, ref);
  return 1;
}

/* ---- logging ---- */

static const char *const level_names[] = {"debug", "info", "notice",
                                          "warning", "error", NULL};

static int l_log(lua_State *L) {
  int level = luaL_checkoption(L, 1, NULL, level_names);
  const char *text = mb__tostring(L, 2, NULL);
  mb_proc_t *p = MB_PROC(L);
  if (p != NULL)
    mb_log((mb_log_level_t)level, "<0.%u.%u> %s", MB_PID_ID(p->pid),
           MB_PID_SERIAL(p->pid), text);
  else
    mb_log((mb_log_level_t)level, "%s", text);
  return 0;
}

/* log_level([level]) -> the previous level */
static int l_log_level(lua_State *L) {
  mb_log_level_t old = mb_log_get_level();
  if (!lua_isnoneornil(L, 1))
    mb_log_set_level((mb_log_level_t)luaL_checkoption(L, 1, NULL, level_names));
  lua_pushstring(L, level_names[old]);
  return 1;
}

/* ---- values ---- */

static int l_atom(lua_State *L) {
  size_t len;
  if (lua_istable(L, 1))
    lua_remove(L, 1); /* called as atom(name) on the atom table */
  const char *s = luaL_checklstring(L, 1, &len);
  const mb__atom_t *a;
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ETOOBIG)
    return luaL_argerror(L, 1, "atom name longer than 255 bytes");
  if (err == MB_ELIMIT)
    return atom_table_full(L, "atom");
  check_err(L, err, "atom");
  mb__push_atom(L, a);
  return 1;
}

static int make_seq(lua_State *L, mb__table_kind_t kind) {
  int n = lua_gettop(L);
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  mb__push_kind_mt(L, kind);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_tuple(lua_State *L) { return make_seq(L, MB_KIND_TUPLE); }
static int l_list(lua_State *L) { return make_seq(L, MB_KIND_LIST); }

static int l_map(lua_State *L) {
  if (lua_isnoneornil(L, 1))
    lua_newtable(L);
  else
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  mb__push_kind_mt(L, MB_KIND_MAP);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_typeof(lua_State *L) {
  luaL_checkany(L, 1);
  const char *t = luaL_typename(L, 1);
  if (mb__to_atom(L, 1))
    t = "atom";
  else if (mb__to_pid(L, 1))
    t = "pid";
  else if (mb__to_ref(L, 1))
    t = "ref";
  else if (mb__to_term(L, 1)) {
    static const char *kinds[] = {"term", "bignum", "bitstring", "fun", "port"};
    t = kinds[mb__to_term(L, 1)->kind];
  }
  else if (lua_istable(L, 1)) {
    static const char *kinds[] = {"table", "tuple", "list", "map"};
    t = kinds[mb__table_kind(L, 1)];
  }
  lua_pushstring(L, t);
  return 1;
}

/* ---- the host side: starting a node and running a process ---- */

static int l_start(lua_State *L) {
  mb_config_t cfg = {0};
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "schedulers");
    cfg.schedulers = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "max_heap");
    cfg.max_heap = (size_t)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "run_timeout");
    run_timeout_ms = (long)luaL_optinteger(L, -1, DEFAULT_RUN_TIMEOUT_MS);
    lua_getfield(L, 1, "max_processes");
    lua_Integer maxp = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, maxp >= 0, 1, "max_processes must not be negative");
    cfg.max_processes = (size_t)maxp;
    lua_pop(L, 4);
  }
  if (mb_node_started()) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "node already started");
    return 2;
  }
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    cfg.lua_path = lua_tostring(L, -2);
    cfg.lua_cpath = lua_tostring(L, -1);
  }
  check_err(L, start_node(&cfg), "start");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_schedulers(lua_State *L) {
  lua_pushinteger(L, mb_node_schedulers());
  return 1;
}

/* Raise the exit reason of a crashed process in the caller. */
static int raise_reason(lua_State *L) {
  if (mb__table_kind(L, -1) == MB_KIND_TUPLE) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    if (lua_type(L, -1) == LUA_TSTRING) {
      mb__tostring(L, -2, NULL);
      lua_pushfstring(L, "process crashed: %s\n%s", lua_tostring(L, -1),
                      lua_tostring(L, -2));
      return lua_error(L);
    }
    lua_pop(L, 2);
  }
  return lua_error(L);
}

/* run(fn, ...): spawn fn(...) as a process, wait for it, return what it
 * returned; raise its crash reason if it crashed. */
static int l_run(lua_State *L) {
  if (MB_PROC(L) != NULL)
    return luaL_error(L, "run: cannot be called inside a process (use spawn)");
  ensure_node(L);
  mb_spawn_opts_t o = {0};
  int first = spawn_target(L, &o, "run");
  o.args = encode_args(L, first, "run");
  mb_waiter_t *w = NULL;
  o.waiter = &w;
  check_err(L, mb_proc_spawn_opts(&o, NULL), "run");
  mb_msg_t *reason = NULL;
  int normal = 0;
  int err = mb_waiter_wait(w, run_timeout_ms, &reason, &normal);
  mb_waiter_free(w);
  if (err == MB_ETIMEDOUT)
    return luaL_error(L, "run: process did not finish within %d ms",
                      (int)run_timeout_ms);
  check_err(L, err, "run");
  lua_settop(L, 0);
  mb_msg_decode(L, reason);
  mb_msg_free(reason);
  if (!normal)
    return raise_reason(L);
  lua_getfield(L, 1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, 1, i);
  return n;
}

static int l_names(lua_State *L);

static const luaL_Reg funcs[] = {
    {"self", l_self},
    {"spawn", l_spawn},
    {"spawn_link", l_spawn_link},
    {"spawn_monitor", l_spawn_monitor},
    {"spawn_opt", l_spawn_opt},
    {"link", mb__link},
    {"unlink", mb__unlink},
    {"monitor", mb__monitor},
    {"demonitor", mb__demonitor},
    {"exit", mb__exit},
    {"trap_exit", mb__trap_exit},
    {"send_alias", mb__send_alias},
    {"register", l_register},
    {"unregister", l_unregister},
    {"whereis", l_whereis},
    {"registered", l_registered},
    {"process_info", mb__process_info},
    {"processes", mb__processes},
    {"log", l_log},
    {"log_level", l_log_level},
    {"names", l_names},
    {"start_distribution", l_start_distribution},
    {"node", l_node},
    {"nodes", l_nodes},
    {"monitor_node", l_monitor_node},
    {"monitor_nodes", l_monitor_nodes},
    {"disconnect", l_disconnect},
    {"spawn_request", l_spawn_request},
    {"send", l_send},
    {"receive", mb__receive},
    {"sleep", mb__sleep},
    {"send_after", l_send_after},
    {"cancel_timer", l_cancel_timer},
    {"make_ref", l_make_ref},
    {"is_alive", l_is_alive},
    {"process_count", l_process_count},
    {"process_limit", l_process_limit},
    {"monotonic_time", l_monotonic_time},
    {"memory", l_memory},
    {"atom", l_atom},
    {"tuple", l_tuple},
    {"list", l_list},
    {"map", l_map},
    {"typeof", l_typeof},
    {"start", l_start},
    {"schedulers", l_schedulers},
    {"run", l_run},
    {NULL, NULL}};

/* The module's functions are set on first use, so that a process that
 * uses two of them does not pay for a table of all of them. */
static int atom_index(lua_State *L) {
  l_atom(L);
  lua_pushvalue(L, 1); /* the name, now at 1 */
  lua_pushvalue(L, -2);
  lua_rawset(L, lua_upvalueindex(1));
  return 1;
}

/* mb.atom is a table: mb.atom("ok") and mb.atom.ok both give the atom. */
static void push_atom_table(lua_State *L) {
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_atom);
  lua_setfield(L, -2, "__call");
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, atom_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}

static luaL_Reg sorted[sizeof funcs / sizeof funcs[0]];
static size_t nsorted;
static uv_once_t sort_once = UV_ONCE_INIT;

static int by_name(const void *a, const void *b) {
  return strcmp(((const luaL_Reg *)a)->name, ((const luaL_Reg *)b)->name);
}

static void sort_funcs(void) {
  for (const luaL_Reg *f = funcs; f->name; f++)
    sorted[nsorted++] = *f;
  qsort(sorted, nsorted, sizeof sorted[0], by_name);
}

static int lazy_field(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k == NULL)
    return 0;
  if (strcmp(k, "atom") == 0) {
    push_atom_table(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, k);
    return 1;
  }
  if (strcmp(k, "version") == 0) {
    lua_pushliteral(L, MB_VERSION);
    return 1;
  }
  uv_once(&sort_once, sort_funcs);
  luaL_Reg key = {k, NULL};
  const luaL_Reg *f =
      bsearch(&key, sorted, nsorted, sizeof sorted[0], by_name);
  if (f == NULL)
    return 0;
  lua_pushcfunction(L, f->func);
  lua_pushvalue(L, -1);
  lua_setfield(L, 1, k);
  return 1;
}

/* names(): every function of the module, for pairs-minded callers. */
static int l_names(lua_State *L) {
  lua_newtable(L);
  int i = 0;
  for (const luaL_Reg *f = funcs; f->name; f++) {
    lua_pushstring(L, f->name);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

void mb_lsocket_register(lua_State *L); /* lsocket.c */

int luaopen_moonbeam(lua_State *L) {
  mb_node_preload("moonbeam", luaopen_moonbeam);
  mb_lsocket_register(L);
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_field);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
