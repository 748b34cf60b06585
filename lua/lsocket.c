/* moonbeam.socket: the binding of the core's sockets (core/socket.c), one
 * function per request.  Each returns the ref that the answer,
 * {Ref, ok | error, ...}, will carry; stdlib/moonbeam/gen_tcp.lua waits for
 * it and gives gen_tcp's API. */
#include <arpa/inet.h>
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/moonbeam.h"
#include "lmoonbeam.h"

static mb_pid_t self(lua_State *L, const char *fname) {
  mb_pid_t pid = mb_lua_self_pid(L);
  if (pid == 0)
    luaL_error(L, "%s: not called inside a moonbeam process", fname);
  return pid;
}

static mb_socket_t check_socket(lua_State *L, int idx) {
  mb_socket_t s;
  if (mb_socket_to(L, idx, &s) != 0)
    luaL_typeerror(L, idx, "socket");
  return s;
}

/* An IPv4 address given as a string, in network byte order. */
static uint32_t check_ip4(lua_State *L, int idx, const char *name) {
  const char *text = lua_tostring(L, idx);
  uint32_t a;
  if (lua_type(L, idx) != LUA_TSTRING || inet_pton(AF_INET, text, &a) != 1)
    luaL_error(L, "bad option %s (an IPv4 address as a string expected)", name);
  return a;
}

/* add_membership = {group, interface}, as inet's {MultiAddr, IfAddr}. */
static void check_membership(lua_State *L, int idx, mb_socket_opts_t *o) {
  if (!lua_istable(L, idx))
    luaL_error(L, "bad option add_membership ({group, interface} expected)");
  lua_rawgeti(L, idx, 1);
  o->multicast_group = check_ip4(L, -1, "add_membership");
  lua_rawgeti(L, idx, 2);
  if (!lua_isnil(L, -1))
    o->membership_if = check_ip4(L, -1, "add_membership");
  lua_pop(L, 2);
}

/* A timeout in ms: nil or math.huge wait forever (-1). */
static long check_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return -1;
  lua_Number t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0, idx, "timeout must not be negative");
  if (t == HUGE_VAL || t > 0x7fffffff)
    return -1;
  return (long)t;
}

static int check_active(lua_State *L, int idx) {
  if (lua_isboolean(L, idx))
    return lua_toboolean(L, idx) ? MB_ACTIVE_TRUE : MB_ACTIVE_FALSE;
  if (lua_type(L, idx) == LUA_TSTRING &&
      strcmp(lua_tostring(L, idx), "once") == 0)
    return MB_ACTIVE_ONCE;
  if (lua_isinteger(L, idx)) {
    lua_Integer n = lua_tointeger(L, idx);
    if (n > 0 && n <= 0x7fffffff)
      return (int)n;
  }
  luaL_error(L, "bad option active "
                "(true, false, \"once\" or a count > 0 expected)");
  return 0;
}

static int check_packet(lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) {
    lua_Integer n = lua_tointeger(L, idx);
    if (n == 0 || n == 1 || n == 2 || n == 4)
      return (int)n;
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tostring(L, idx);
    if (strcmp(s, "raw") == 0)
      return MB_PACKET_RAW;
    if (strcmp(s, "line") == 0)
      return MB_PACKET_LINE;
    if (strcmp(s, "http") == 0 || strcmp(s, "http_bin") == 0)
      return MB_PACKET_HTTP;
    if (strcmp(s, "http_response") == 0)
      return MB_PACKET_HTTP_RESPONSE;
  }
  luaL_error(L, "bad option packet (0, 1, 2, 4, \"raw\", \"line\", \"http\" or "
                "\"http_response\" expected)");
  return 0;
}

static int check_size(lua_State *L, int idx, const char *name) {
  lua_Integer n = lua_isinteger(L, idx) ? lua_tointeger(L, idx) : -1;
  if (n < 0 || n > 0x7fffffff)
    luaL_error(L, "bad option %s (a non-negative integer expected)", name);
  return (int)n;
}

/* Options from a table: {active =, packet =, packet_size =, nodelay =,
 * keepalive =, reuseaddr =, sndbuf =, recbuf =, backlog =,
 * send_timeout =, ip =, inet6 =, mode = "binary"}.  An unknown option is
 * a mistake in the program, and raises. */
static const char *check_tls_str(lua_State *L, int idx, const char *name) {
  size_t len = 0;
  /* Strings only: a number's text would not outlive the option loop. */
  const char *v =
      lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  if (v == NULL || len > MB_TLS_STR_MAX)
    luaL_error(L, "bad option %s (a string of at most %d bytes expected)", name,
               MB_TLS_STR_MAX);
  return v;
}

/* {"h2", "http/1.1"} as "h2,http/1.1", kept in the registry until the
 * binding's caller returns (a new string on the stack would move). */
static const char *check_alpn(lua_State *L, int idx, const char *name) {
  luaL_Buffer b;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    luaL_error(L, "bad option %s (a list of protocol names expected)", name);
  luaL_buffinit(L, &b);
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    size_t len;
    const char *p = lua_tolstring(L, -1, &len);
    if (p == NULL || len == 0 || len > 255 || memchr(p, ',', len))
      luaL_error(L, "bad option %s (protocol names expected)", name);
    lua_pop(L, 1);
    if (i > 1)
      luaL_addchar(&b, ',');
    luaL_addlstring(&b, p, len);
  }
  luaL_pushresult(&b);
  const char *list = lua_tostring(L, -1);
  if (strlen(list) > MB_TLS_STR_MAX)
    luaL_error(L, "bad option %s (too long)", name);
  lua_rawsetp(L, LUA_REGISTRYINDEX, (const void *)check_alpn);
  lua_rawgetp(L, LUA_REGISTRYINDEX, (const void *)check_alpn);
  list = lua_tostring(L, -1);
  lua_pop(L, 1);
  return list;
}

static void check_opts(lua_State *L, int idx, mb_socket_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->verify = -1;
  if (lua_isnoneornil(L, idx))
    return;
  luaL_checktype(L, idx, LUA_TTABLE);
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "active") == 0) {
      o->active = check_active(L, -1);
      o->set |= MB_SOCKOPT_ACTIVE;
    } else if (strcmp(k, "packet") == 0) {
      o->packet = check_packet(L, -1);
      o->set |= MB_SOCKOPT_PACKET;
    } else if (strcmp(k, "packet_size") == 0) {
      o->packet_size = (size_t)check_size(L, -1, k);
      o->set |= MB_SOCKOPT_PACKET_SIZE;
    } else if (strcmp(k, "nodelay") == 0) {
      o->nodelay = lua_toboolean(L, -1);
      o->set |= MB_SOCKOPT_NODELAY;
    } else if (strcmp(k, "keepalive") == 0) {
      o->keepalive = lua_toboolean(L, -1);
      o->set |= MB_SOCKOPT_KEEPALIVE;
    } else if (strcmp(k, "reuseaddr") == 0) {
      o->reuseaddr = lua_toboolean(L, -1);
      o->set |= MB_SOCKOPT_REUSEADDR;
    } else if (strcmp(k, "sndbuf") == 0) {
      o->sndbuf = check_size(L, -1, k);
      o->set |= MB_SOCKOPT_SNDBUF;
    } else if (strcmp(k, "recbuf") == 0) {
      o->recbuf = check_size(L, -1, k);
      o->set |= MB_SOCKOPT_RECBUF;
    } else if (strcmp(k, "backlog") == 0) {
      o->backlog = check_size(L, -1, k);
      o->set |= MB_SOCKOPT_BACKLOG;
    } else if (strcmp(k, "send_timeout") == 0) {
      o->send_timeout = check_size(L, -1, k);
      o->set |= MB_SOCKOPT_SEND_TIMEOUT;
    } else if (strcmp(k, "ip") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad option ip (an address as a string expected)");
      o->ip = lua_tostring(L, -1); /* held by the table */
    } else if (strcmp(k, "add_membership") == 0) {
      check_membership(L, lua_absindex(L, -1), o);
    } else if (strcmp(k, "multicast_if") == 0) {
      o->multicast_if = check_ip4(L, -1, k);
    } else if (strcmp(k, "multicast_ttl") == 0) {
      o->multicast_ttl = check_size(L, -1, k);
      o->set |= MB_SOCKOPT_MULTICAST_TTL;
    } else if (strcmp(k, "multicast_loop") == 0) {
      o->multicast_loop = lua_toboolean(L, -1);
      o->set |= MB_SOCKOPT_MULTICAST_LOOP;
    } else if (strcmp(k, "inet6") == 0) {
      o->ipv6 = lua_toboolean(L, -1);
    } else if (strcmp(k, "tls") == 0) {
      o->tls = lua_toboolean(L, -1);
    } else if (strcmp(k, "verify") == 0) {
      const char *v = lua_tostring(L, -1);
      if (lua_isboolean(L, -1))
        o->verify = lua_toboolean(L, -1);
      else if (v != NULL && strcmp(v, "verify_peer") == 0)
        o->verify = 1;
      else if (v != NULL && strcmp(v, "verify_none") == 0)
        o->verify = 0;
      else
        luaL_error(L, "bad option verify "
                      "(\"verify_peer\" or \"verify_none\" expected)");
    } else if (strcmp(k, "fail_if_no_peer_cert") == 0) {
      o->fail_if_no_peer_cert = lua_toboolean(L, -1);
    } else if (strcmp(k, "handshake_timeout") == 0) {
      o->handshake_timeout = check_size(L, -1, k);
    } else if (strcmp(k, "certfile") == 0) {
      o->certfile = check_tls_str(L, -1, k);
    } else if (strcmp(k, "keyfile") == 0) {
      o->keyfile = check_tls_str(L, -1, k);
    } else if (strcmp(k, "cacertfile") == 0) {
      o->cacertfile = check_tls_str(L, -1, k);
    } else if (strcmp(k, "server_name_indication") == 0) {
      o->server_name = check_tls_str(L, -1, k);
    } else if (strcmp(k, "alpn_advertised_protocols") == 0 ||
               strcmp(k, "alpn_preferred_protocols") == 0) {
      o->alpn = check_alpn(L, -1, k);
    } else if (strcmp(k, "mode") == 0) {
      const char *m = lua_tostring(L, -1);
      if (m == NULL || strcmp(m, "binary") != 0)
        luaL_error(L, "bad option mode (only \"binary\": data are strings)");
    } else {
      luaL_error(L, "unknown socket option '%s'", luaL_tolstring(L, -2, NULL));
    }
    lua_pop(L, 1);
  }
}

/* Push the answer's ref, or raise if the request could not be queued. */
static int queued(lua_State *L, int err, uint64_t ref, const char *fname) {
  if (err != 0)
    return luaL_error(L, "%s: %s", fname, mb_strerror(err));
  mb_lua_push_ref(L, ref);
  return 1;
}

/* A Unix-domain address: {path = "/run/x.sock"} at idx, or NULL. */
static const char *check_path(lua_State *L, int idx) {
  if (!lua_istable(L, idx))
    return NULL;
  lua_getfield(L, idx, "path");
  const char *path =
      lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the table holds the string */
  if (path == NULL || path[0] == '\0' || strlen(path) > MB_SOCKET_PATH_MAX)
    luaL_argerror(L, idx,
                  "a Unix-domain address is {path = \"...\"} "
                  "(at most 107 bytes)");
  return path;
}

/* connect(host | {path =}, port, opts, timeout) -> ref */
static int l_connect(lua_State *L) {
  mb_pid_t me = self(L, "connect");
  const char *path = check_path(L, 1);
  const char *host = path ? "" : luaL_checkstring(L, 1);
  lua_Integer port = path ? 0 : luaL_checkinteger(L, 2);
  luaL_argcheck(L, path || (port > 0 && port <= 65535), 2, "port out of range");
  mb_socket_opts_t o;
  check_opts(L, 3, &o);
  o.path = path;
  long t = check_timeout(L, 4);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_connect(me, ref, host, (int)port, &o, t), ref,
                "connect");
}

/* listen(port | {path =}, opts) -> ref */
static int l_listen(lua_State *L) {
  mb_pid_t me = self(L, "listen");
  const char *path = check_path(L, 1);
  lua_Integer port = path ? 0 : luaL_checkinteger(L, 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port out of range");
  mb_socket_opts_t o;
  check_opts(L, 2, &o);
  o.path = path;
  if (o.ip != NULL && strlen(o.ip) >= 64)
    return luaL_argerror(L, 2, "ip too long");
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_listen(me, ref, (int)port, &o), ref, "listen");
}

/* udp_open(port, opts) -> ref */
static int l_udp_open(lua_State *L) {
  mb_pid_t me = self(L, "open");
  lua_Integer port = luaL_checkinteger(L, 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port out of range");
  mb_socket_opts_t o;
  check_opts(L, 2, &o);
  if (o.ip != NULL && strlen(o.ip) >= 64)
    return luaL_argerror(L, 2, "ip too long");
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_udp_open(me, ref, (int)port, &o), ref, "open");
}

/* udp_send(sock, ip, port, data) -> ref */
static int l_udp_send(lua_State *L) {
  mb_pid_t me = self(L, "send");
  mb_socket_t s = check_socket(L, 1);
  const char *ip = luaL_checkstring(L, 2);
  luaL_argcheck(L, strlen(ip) < 64, 2, "not an IP address");
  lua_Integer port = luaL_checkinteger(L, 3);
  luaL_argcheck(L, port > 0 && port <= 65535, 3, "port out of range");
  size_t len;
  const char *data = luaL_checklstring(L, 4, &len);
  luaL_argcheck(L, len <= 65507, 4, "a datagram holds at most 65507 bytes");
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_udp_send(me, ref, s, ip, (int)port, data, len),
                ref, "send");
}

/* port_open({program, args...}, opts, cwd) -> ref */
/* Option env of the table at 4: a list of "NAME=VALUE" (set) and "NAME"
 * (unset) strings, kept by a userdata on the stack; NULL for none. */
static const char *const *check_env(lua_State *L) {
  if (lua_getfield(L, 4, "env") == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  int t = lua_gettop(L);
  luaL_argcheck(L, lua_istable(L, t), 4, "env must be a list of strings");
  lua_Integer n = luaL_len(L, t);
  luaL_argcheck(L, n >= 0 && n <= 1024, 4, "at most 1024 env changes");
  const char **env = lua_newuserdatauv(L, sizeof *env * (size_t)(n + 1), 1);
  lua_pushvalue(L, t); /* the userdata keeps the strings' table */
  lua_setiuservalue(L, -2, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, t, i) != LUA_TSTRING)
      luaL_argerror(L, 4, "env must be a list of strings");
    env[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  env[n] = NULL;
  return env;
}

static int l_port_open(lua_State *L) {
  mb_pid_t me = self(L, "open");
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 1024, 1,
                "a program and up to 1023 arguments");
  mb_socket_opts_t o;
  check_opts(L, 2, &o);
  const char *cwd = luaL_optstring(L, 3, NULL);
  const char **argv = lua_newuserdatauv(L, sizeof *argv * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    /* Strings only: a number's text would not be held by the table. */
    if (lua_geti(L, 1, i) != LUA_TSTRING)
      return luaL_argerror(L, 1,
                           "the program and its arguments must be strings");
    argv[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1); /* the table holds the string */
  }
  argv[n] = NULL;
  mb_port_opts_t po = {NULL, 0, 0};
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    po.stderr_to_stdout = lua_getfield(L, 4, "stderr_to_stdout") != LUA_TNIL &&
                          lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "line") != LUA_TNIL) {
      lua_Integer line = luaL_checkinteger(L, -1);
      luaL_argcheck(L, line > 0 && line <= (64 << 20), 4,
                    "line must be between 1 and 64 MiB");
      po.line = (size_t)line;
    }
    lua_pop(L, 1);
    po.env = check_env(L);
  }
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_port_open(me, ref, argv, cwd, &po, &o), ref, "open");
}

/* accept(lsock, timeout) -> ref */
static int l_accept(lua_State *L) {
  mb_pid_t me = self(L, "accept");
  mb_socket_t s = check_socket(L, 1);
  long t = check_timeout(L, 2);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_accept(me, ref, s, t), ref, "accept");
}

/* send(sock, data) -> ref */
static int l_send(lua_State *L) {
  mb_pid_t me = self(L, "send");
  mb_socket_t s = check_socket(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len <= 0x7fffffff, 2, "data longer than 2 GiB");
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_send(me, ref, s, data, len), ref, "send");
}

/* The pid at t[i], or raise with the message's expected shape. */
static mb_pid_t field_pid(lua_State *L, int t, int i) {
  mb_pid_t pid;
  lua_rawgeti(L, t, i);
  int err = mb_value_to_pid(L, -1, &pid);
  lua_pop(L, 1);
  if (err != 0)
    luaL_argerror(L, 2,
                  "{Pid, {command, Data}}, {Pid, close} or "
                  "{Pid, {connect, NewPid}} expected (local pids)");
  return pid;
}

/* mb.send(port, {Pid, {command, Data}}), {Pid, close} or
 * {Pid, {connect, NewPid}}: what Erlang's Port ! Msg does, for a port or a
 * socket (MB_SOCKET_MESSAGE).  Returns 0 when idx 1 is not a socket, for
 * the binding's send to go on with a pid or a name. */
int mb_lsocket_port_send(lua_State *L) {
  mb_socket_t s;
  if (mb_socket_to(L, 1, &s) != 0)
    return 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  mb_pid_t pid = field_pid(L, 2, 1);
  lua_rawgeti(L, 2, 2);
  const char *what = mb_value_to_atom(L, -1);
  int err = MB_EINVAL;
  if (what != NULL && strcmp(what, "close") == 0) {
    err = mb_socket_close(pid, MB_SOCKET_MESSAGE, s);
  } else if (lua_istable(L, -1)) {
    int op = lua_gettop(L);
    lua_rawgeti(L, op, 1);
    what = mb_value_to_atom(L, -1);
    lua_rawgeti(L, op, 2);
    size_t len;
    if (what != NULL && strcmp(what, "command") == 0 &&
        lua_type(L, -1) == LUA_TSTRING) {
      const char *data = lua_tolstring(L, -1, &len);
      err = mb_socket_send(pid, MB_SOCKET_MESSAGE, s, data, len);
    } else if (what != NULL && strcmp(what, "connect") == 0) {
      mb_pid_t to = field_pid(L, op, 2);
      err = mb_socket_controlling_process(pid, MB_SOCKET_MESSAGE, s, to);
    }
  }
  if (err == MB_EINVAL)
    luaL_argerror(L, 2,
                  "{Pid, {command, Data}}, {Pid, close} or "
                  "{Pid, {connect, NewPid}} expected");
  if (err != 0)
    luaL_error(L, "send: %s", mb_strerror(err));
  return 1;
}

/* recv(sock, n, timeout) -> ref */
static int l_recv(lua_State *L) {
  mb_pid_t me = self(L, "recv");
  mb_socket_t s = check_socket(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, n >= 0 && n <= (64 << 20), 2,
                "length must be between 0 and 64 MiB");
  long t = check_timeout(L, 3);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_recv(me, ref, s, (size_t)n, t), ref, "recv");
}

/* setopts(sock, opts) -> ref */
static int l_setopts(lua_State *L) {
  mb_pid_t me = self(L, "setopts");
  mb_socket_t s = check_socket(L, 1);
  mb_socket_opts_t o;
  check_opts(L, 2, &o);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_setopts(me, ref, s, &o), ref, "setopts");
}

/* controlling_process(sock, pid) -> ref */
static int l_controlling_process(lua_State *L) {
  mb_pid_t me = self(L, "controlling_process");
  mb_socket_t s = check_socket(L, 1);
  mb_pid_t to;
  if (mb_value_to_pid(L, 2, &to) != 0)
    return luaL_typeerror(L, 2, "pid of this node");
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_controlling_process(me, ref, s, to), ref,
                "controlling_process");
}

static int l_close(lua_State *L) {
  mb_pid_t me = self(L, "close");
  mb_socket_t s = check_socket(L, 1);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_close(me, ref, s), ref, "close");
}

/* shutdown(sock, "read" | "write" | "read_write") -> ref */
static int l_shutdown(lua_State *L) {
  static const char *const hows[] = {"read", "write", "read_write", NULL};
  mb_pid_t me = self(L, "shutdown");
  mb_socket_t s = check_socket(L, 1);
  int how = luaL_checkoption(L, 2, NULL, hows);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_shutdown(me, ref, s, how), ref, "shutdown");
}

static int name_of(lua_State *L, int peer, const char *fname) {
  mb_pid_t me = self(L, fname);
  mb_socket_t s = check_socket(L, 1);
  uint64_t ref = mb_value_new_ref();
  return queued(L, mb_socket_name(me, ref, s, peer), ref, fname);
}

/* sockname(sock, [what]): what 2 and 3 are a TLS socket's ALPN protocol
 * and peer subject (mb_socket_name). */
static int l_sockname(lua_State *L) {
  lua_Integer what = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, what == 0 || what == 2 || what == 3, 2,
                "0, 2 or 3 expected");
  return name_of(L, (int)what, "sockname");
}
static int l_peername(lua_State *L) { return name_of(L, 1, "peername"); }

static int l_is_socket(lua_State *L) {
  mb_socket_t s;
  lua_pushboolean(L, mb_socket_to(L, 1, &s) == 0);
  return 1;
}

int luaopen_moonbeam_socket(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"connect", l_connect},
      {"listen", l_listen},
      {"accept", l_accept},
      {"send", l_send},
      {"recv", l_recv},
      {"setopts", l_setopts},
      {"close", l_close},
      {"shutdown", l_shutdown},
      {"sockname", l_sockname},
      {"peername", l_peername},
      {"is_socket", l_is_socket},
      {"udp_open", l_udp_open},
      {"udp_send", l_udp_send},
      {"port_open", l_port_open},
      {"controlling_process", l_controlling_process},
      {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction open) {
  mb_node_preload(name, open);
  if (mb_lua_self_pid(L) != 0)
    return; /* a process finds it among the node's preloads */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

/* Make require "moonbeam.socket", "moonbeam.term" and "moonbeam.crypto"
 * work in every process, and in the host state L that loads moonbeam (a
 * process does not get a package.preload table of its own for them:
 * mb__require and its package library find the node's preloads). */
void mb_lsocket_register(lua_State *L) {
  preload(L, "moonbeam.socket", luaopen_moonbeam_socket);
  preload(L, "moonbeam.term", luaopen_moonbeam_term);
  preload(L, "moonbeam.crypto", luaopen_moonbeam_crypto);
}
