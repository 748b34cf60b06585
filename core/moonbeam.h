/* moonbeam: an actor runtime for Lua 5.4.
 *
 * The public C API of the core.  Names follow three tiers: mb_<subsystem>_<verb>
 * here, mb__<name> in internal.h for cross-file use, and unprefixed statics.
 * Every function that can fail returns 0 or a negative MB_E* code. */
#ifndef MOONBEAM_H
#define MOONBEAM_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#define MB_VERSION "0.1.0"

/* Error codes.  Each entry: name, text. */
#define MB_ERRNO_MAP(XX)                                                       \
  XX(NOMEM, "out of memory")                                                   \
  XX(INVAL, "invalid argument")                                                \
  XX(NOPROC, "no such process")                                                \
  XX(BADTERM, "value cannot be sent")                                          \
  XX(TOOBIG, "value too large")                                                \
  XX(EXIST, "already exists")                                                  \
  XX(NOTFOUND, "not found")                                                    \
  XX(STATE, "invalid state for this operation")                                \
  XX(THREAD, "thread operation failed")                                        \
  XX(LUA, "Lua error")                                                         \
  XX(TIMEDOUT, "timed out")                                                    \
  XX(CONN, "connection failed")                                                \
  XX(PROTO, "protocol error")                                                  \
  XX(NOHOST, "host not found")                                                 \
  XX(CANCELED, "operation canceled")                                           \
  XX(LIMIT, "system limit reached")

/* The list expands to entries clang-format cannot see. */
/* clang-format off */
typedef enum {
  MB_OK = 0,
#define XX(name, _) MB_E##name,
  MB__ERRFIRST = -100,
  MB_ERRNO_MAP(XX)
#undef XX
  MB__ERRLAST
} mb_errno_t;
/* clang-format on */

const char *mb_strerror(int err);
const char *mb_err_name(int err);

/* A process identifier.  A process of this node has a number that is
 * unique until it wraps after 2^28 spawns (ID:15 bits, serial:13 bits, as
 * the Erlang distribution protocol expects); a process of another node has
 * a key with MB_PID_REMOTE set, interned by the core (see remote.c). */
typedef uint64_t mb_pid_t;

#define MB_PID_ID(pid) ((unsigned)((pid)&0x7fffu))
#define MB_PID_SERIAL(pid) ((unsigned)(((pid) >> 15) & 0x1fffu))
#define MB_PID_MAX 0x0fffffffu
#define MB_PID_REMOTE (1ULL << 63)
#define MB_PID_IS_REMOTE(pid) (((pid)&MB_PID_REMOTE) != 0)

/* The default limit on processes alive at once, as Erlang's +P.  Spawning
 * past the limit fails with MB_ELIMIT. */
#define MB_MAX_PROCESSES_DEFAULT 1048576u

/* Node configuration, read once by mb_node_start. */
typedef struct {
  int schedulers;        /* scheduler threads; 0 = number of cores */
  size_t max_heap;       /* default per-process memory limit, 0 = none */
  size_t max_processes;  /* processes alive at once (Erlang's +P);
                              0 = MB_MAX_PROCESSES_DEFAULT */
  const char *lua_path;  /* package.path for processes, NULL = default */
  const char *lua_cpath; /* package.cpath for processes, NULL = default */
} mb_config_t;

/* Node lifecycle.  One node per OS process, as one BEAM is one node. */
int mb_node_start(const mb_config_t *cfg);
int mb_node_started(void);
int mb_node_stop(void);
int mb_node_schedulers(void);
/* How many processes may be alive at once (0 before the node starts). */
size_t mb_node_process_limit(void);
/* Make `open` the loader of module `name` in every process (as
 * package.preload does).  Call before mb_node_start. */
int mb_node_preload(const char *name, lua_CFunction open);

/* A value handed to or returned from a process, in the message format. */
typedef struct mb_msg_s mb_msg_t;

/* Encode the value at `idx` of L into a new message.  On MB_EBADTERM the
 * error text (with the path to the bad value) is left in `err`. */
int mb_msg_encode(lua_State *L, int idx, mb_msg_t **out, char *err,
                  size_t errlen);
/* Push a copy of the message's value onto L. */
int mb_msg_decode(lua_State *L, const mb_msg_t *m);
void mb_msg_free(mb_msg_t *m);
size_t mb_msg_size(const mb_msg_t *m);

typedef struct mb_waiter_s mb_waiter_t;

/* What a new process runs: exactly one of `fn` (a message holding a Lua
 * function), `module` + `function` (module.function), or `file` (a Lua
 * script, which also gets `args` as its global `arg`).  `args` is a message
 * holding a table of arguments ({n = count, ...}) or NULL.  The messages
 * pass to the core, even on error. */
typedef struct {
  mb_msg_t *fn;
  const char *module;
  const char *function;
  const char *file;
  mb_msg_t *args;
  size_t max_heap;      /* memory limit in bytes; 0 = the node's default */
  mb_waiter_t **waiter; /* if set, receives a waiter for the exit */
  /* Link and/or monitor the new process with `parent` (the calling
   * process) before it runs; the monitor's ref is written back. */
  mb_pid_t parent;
  int link, monitor;
  uint64_t monitor_ref;
} mb_spawn_opts_t;

int mb_proc_spawn_opts(mb_spawn_opts_t *opts, mb_pid_t *out);
int mb_proc_spawn(mb_msg_t *fn, mb_msg_t *args, mb_pid_t *out);
int mb_proc_spawn_mfa(const char *mod, const char *fun, mb_msg_t *args,
                      mb_pid_t *out);
/* Send a message; ownership passes to the core even on error.  Sending to a
 * pid that no longer exists drops the message and returns 0, as in Erlang. */
int mb_proc_send(mb_pid_t to, mb_msg_t *m);
int mb_proc_alive(mb_pid_t pid);
size_t mb_proc_count(void);
/* The stack of a process of this node as text, one frame a line,
 * innermost first ("file.lua:42 in function 'loop'"), cut to fit cap
 * bytes (NUL included).  Read while the process is not running: a
 * scheduler that wants to run it meanwhile waits the few microseconds the
 * copy takes, and a message that arrives meanwhile wakes it as usual.
 * Returns 0; MB_ESTATE while it runs; MB_ENOPROC if it is not alive. */
int mb_proc_stack(mb_pid_t pid, char *buf, size_t cap);

/* Wait for a process to exit.  On return *reason holds, when the process
 * returned, a table of its return values ({n = count, ...}) and *normal is
 * 1; when it crashed, its exit reason and *normal is 0.  The message is the
 * caller's to free.
 * timeout_ms < 0 waits forever.  Returns MB_ENOPROC if the pid never existed
 * or was already reaped. */
int mb_waiter_new(mb_pid_t pid, mb_waiter_t **out);
int mb_waiter_wait(mb_waiter_t *w, long timeout_ms, mb_msg_t **reason,
                   int *normal);
void mb_waiter_free(mb_waiter_t *w);

/* One side of TLS distribution: PEM files and verification, with the
 * meaning of the ssl options of the same names.  verify: 1 verify_peer,
 * 0 verify_none, -1 the default (the client checks the server's
 * certificate and name, the server asks for none). */
typedef struct {
  const char *certfile, *keyfile, *cacertfile;
  int verify, fail_if_no_peer_cert;
} mb_dist_tls_opts_t;

/* Distribution: make this node a node of a cluster (Erlang's
 * distribution protocol).  The node must be started. */
typedef struct {
  const char *name; /* alive@host */
  const char *cookie;
  int hidden;        /* not in other nodes' nodes() */
  unsigned ticktime; /* net_ticktime in seconds; 0 = 60 */
  int port;          /* listen port; 0 = any (or the range below) */
  int epmd_port;     /* 0: ERL_EPMD_PORT, or 4369 */
  /* Erlang's inet_dist_listen_min/max: the first free port of the range
   * (max 0: min alone); inet_dist_use_interface: the address to listen
   * on (NULL: every interface). */
  int listen_min, listen_max;
  const char *use_interface;
  int ipv6; /* inet6_tcp, inet6_tls: IPv6 addresses, names resolved so */
  /* TLS distribution (inet_tls_dist): the handshake and every frame go
   * over TLS; the sides' options as ssl_dist_optfile's server and client
   * sections.  A plain-TCP node and a TLS node cannot talk. */
  int tls;
  mb_dist_tls_opts_t tls_server, tls_client;
} mb_dist_config_t;
int mb_dist_start(const mb_dist_config_t *cfg);
int mb_dist_port(void);
/* NAMES_REQ to the EPMD of `host` (an IPv4 address or a name): text is
 * "name x at port N\n" lines, valid during the callback only, which runs
 * once on the node's loop thread when the call returned 0. */
typedef void (*mb_epmd_names_cb)(int err, const char *text, void *arg);
int mb_epmd_names(const char *host, mb_epmd_names_cb cb, void *arg);
/* The port EPMD is asked on: mb_dist_start's epmd_port, else
 * ERL_EPMD_PORT, else 4369; MB_EINVAL for a bad ERL_EPMD_PORT. */
int mb_epmd_port(void);
/* What a spawn request from another node runs (erpc's calls and casts):
 * module.function(m, f, args) in a new process, where the Erlang MFA comes
 * as the module's and function's names and the list of arguments.  The
 * Lua layer names it, so that the core spawns no module of its own. */
int mb_dist_spawn_handler(const char *module, const char *function);
/* The cookie Erlang would use: ~/.erlang.cookie (created if missing). */
int mb_dist_default_cookie(char *out, size_t len);

/* Values of the core in a Lua state, for bindings that see only this
 * header (with the mb_lua_* helpers below).  mb_value_to_pid: a local pid
 * at idx, or MB_EINVAL. */
int mb_value_to_pid(lua_State *L, int idx, mb_pid_t *out);
uint64_t mb_value_new_ref(void);
/* The name of the atom at idx, or NULL if it is not an atom. */
const char *mb_value_to_atom(lua_State *L, int idx);

/* Erlang's external term format (docs/terms.md), as term_to_binary and
 * binary_to_term.  mb_value_to_term pushes the encoding of the value at
 * idx as a string, or returns MB_EBADTERM with the reason in err (a
 * function cannot be encoded) and pushes nothing.  mb_value_from_term
 * pushes the value of the term in buf, or returns MB_EBADTERM with the
 * reason in err for input that is not one whole term, and pushes
 * nothing; it never raises but for memory.  With safe, a term naming an
 * atom this node does not know is refused, as with binary_to_term's
 * `safe`. */
int mb_value_to_term(lua_State *L, int idx, char *err, size_t errlen);
int mb_value_from_term(lua_State *L, const void *buf, size_t len, int safe,
                       char *err, size_t errlen);

/* Sockets owned by processes (socket.c).  Every socket lives on the node's
 * I/O loop; a process asks for work with the functions below, which return
 * at once (0, or MB_ENOMEM) and answer later with a message to `caller`:
 *   {Ref, ok} | {Ref, ok, Value} | {Ref, error, Reason}
 * where Ref is the `ref` given and Reason an atom (closed, timeout,
 * econnrefused, ...).  Received data, a closed peer and errors arrive as
 * {tcp, Sock, Data}, {tcp_closed, Sock}, {tcp_error, Sock, Reason} and
 * {tcp_passive, Sock} in active mode.  A socket is closed when its
 * controlling process (its owner) ends.  In Lua a socket is a ref. */
typedef uint64_t mb_socket_t;

typedef enum {
  MB_PACKET_RAW = 0,
  MB_PACKET_1 = 1, /* big-endian length prefix of 1, 2 or 4 bytes */
  MB_PACKET_2 = 2,
  MB_PACKET_4 = 4,
  MB_PACKET_LINE = 5,         /* up to and including "\n" */
  MB_PACKET_HTTP = 6,         /* an HTTP request head, then the body raw */
  MB_PACKET_HTTP_RESPONSE = 7 /* an HTTP response head */
} mb_packet_t;

#define MB_ACTIVE_FALSE 0
#define MB_ACTIVE_TRUE (-1)
#define MB_ACTIVE_ONCE (-2) /* n > 0: active for n packets, then passive */

/* Which fields of mb_socket_opts_t are given. */
enum {
  MB_SOCKOPT_ACTIVE = 1 << 0,
  MB_SOCKOPT_PACKET = 1 << 1,
  MB_SOCKOPT_PACKET_SIZE = 1 << 2,
  MB_SOCKOPT_NODELAY = 1 << 3,
  MB_SOCKOPT_KEEPALIVE = 1 << 4,
  MB_SOCKOPT_REUSEADDR = 1 << 5,
  MB_SOCKOPT_SNDBUF = 1 << 6,
  MB_SOCKOPT_RECBUF = 1 << 7,
  MB_SOCKOPT_BACKLOG = 1 << 8,
  MB_SOCKOPT_SEND_TIMEOUT = 1 << 9,
  MB_SOCKOPT_MULTICAST_TTL = 1 << 10,
  MB_SOCKOPT_MULTICAST_LOOP = 1 << 11
};

typedef struct {
  unsigned set;       /* MB_SOCKOPT_* of the fields below that count */
  int active;         /* MB_ACTIVE_*, or a count; default true */
  int packet;         /* mb_packet_t; default raw */
  size_t packet_size; /* largest packet or line; 0 = the default */
  int nodelay, keepalive, reuseaddr;
  int sndbuf, recbuf; /* bytes */
  int backlog;        /* listen queue; default 128 */
  long send_timeout;  /* ms a send may wait; 0 = forever */
  int ipv6;           /* resolve names to IPv6 addresses only */
  const char *ip;     /* listen, UDP: the address to bind; NULL = any */
  const char *path;   /* connect, listen: a Unix-domain socket's path
                           instead of an address and port */
  /* UDP, IPv4 multicast, addresses in network byte order: the group to
   * join (0 = none) on the interface of the address membership_if, the
   * interface to send on (multicast_if; 0 = the kernel's choice for both),
   * the TTL of sent datagrams and whether they loop back. */
  uint32_t multicast_group, membership_if, multicast_if;
  int multicast_ttl, multicast_loop;
  /* TLS (OpenSSL): with tls set, connect and listen make TLS sockets;
   * their messages are ssl, ssl_closed, ssl_error, ssl_passive. */
  int tls;
  int verify;               /* check the peer's certificate: -1 = the default
                           (clients check, servers do not ask) */
  int fail_if_no_peer_cert; /* a server that checks refuses no certificate */
  long handshake_timeout;   /* accept: ms for the handshake; 0 = 15000 */
  const char *certfile, *keyfile; /* PEM files: this end's chain and key */
  const char *cacertfile;         /* PEM: whom to trust; NULL = the system's */
  const char *server_name;        /* the name to check and send as SNI; NULL =
                               the host connected to */
  const char *alpn;               /* "h2,http/1.1": offered, or (server) chosen
                               from in this order */
} mb_socket_opts_t;

/* The longest TLS option string (a file name, a server name, ALPN). */
#define MB_TLS_STR_MAX 255

/* The longest path of a Unix-domain socket. */
#define MB_SOCKET_PATH_MAX 107

/* Largest packet by default: a line or an HTTP head, and a
 * length-prefixed packet. */
#define MB_PACKET_LINE_MAX 65536
#define MB_PACKET_PREFIX_MAX (8u << 20)

/* Answers {ok, Sock}: a connected socket owned by caller.  `host` is an
 * IPv4 or IPv6 address or a name (resolved on the loop's thread pool). */
int mb_socket_connect(mb_pid_t caller, uint64_t ref, const char *host, int port,
                      const mb_socket_opts_t *o, long timeout_ms);
/* Answers {ok, Sock}: a listening socket; its accepted sockets take its
 * options. */
int mb_socket_listen(mb_pid_t caller, uint64_t ref, int port,
                     const mb_socket_opts_t *o);
/* Answers {ok, Sock}: the next connection, owned by caller. */
int mb_socket_accept(mb_pid_t caller, uint64_t ref, mb_socket_t lsock,
                     long timeout_ms);
/* Answers ok once the bytes are handed to the kernel (a slow peer makes
 * the sender wait, never the node). */
int mb_socket_send(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                   const void *data, size_t len);
/* Passive mode: answers {ok, Packet}; raw packets with n > 0 are exactly
 * n bytes.  timeout_ms < 0 waits forever. */
int mb_socket_recv(mb_pid_t caller, uint64_t ref, mb_socket_t s, size_t n,
                   long timeout_ms);
int mb_socket_setopts(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                      const mb_socket_opts_t *o);
/* Only the owner may hand a socket over (else not_owner).  Delivery then
 * pauses until the next mb_socket_setopts, so that the old owner can pass
 * on the messages it already had, in order. */
int mb_socket_controlling_process(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                                  mb_pid_t to);
int mb_socket_close(mb_pid_t caller, uint64_t ref, mb_socket_t s);
/* The ref of a request that came as a message to the socket, as Erlang's
 * Port ! {Pid, {command, Data}}, {Pid, close}, {Pid, {connect, New}}:
 * caller is Pid, which must be the owner (else the request is dropped
 * with a log line); nothing is answered, but close answers
 * {Port, closed} and controlling_process {Port, connected} to Pid, and
 * the handover does not pause delivery. */
#define MB_SOCKET_MESSAGE 0
/* how: 0 read, 1 write, 2 both (only write is a TCP half-close). */
int mb_socket_shutdown(mb_pid_t caller, uint64_t ref, mb_socket_t s, int how);
/* Answers {ok, {Address, Port}}: the local (peer = 0) or remote end; for a
 * Unix-domain socket {Path, 0}.  For a TLS socket, peer = 2 answers
 * {ok, Protocol} (ALPN's choice) and peer = 3 {ok, Subject} (the peer's
 * certificate's subject), or {error, not_found}. */
int mb_socket_name(mb_pid_t caller, uint64_t ref, mb_socket_t s, int peer);
/* UDP: answers {ok, Sock}, a socket bound to port (0: any) and o->ip.
 * Datagrams arrive as {udp, Sock, Address, Port, Data} in active mode
 * ({udp_passive, Sock} when a count is spent); mb_socket_recv answers
 * {ok, {Address, Port, Data}}. */
int mb_socket_udp_open(mb_pid_t caller, uint64_t ref, int port,
                       const mb_socket_opts_t *o);
/* Answers ok once the datagram is sent; `ip` is an IPv4 or IPv6 address,
 * or a host name (under 64 bytes), resolved on libuv's thread pool in the
 * socket's family (nxdomain if it has no address). */
int mb_socket_udp_send(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                       const char *ip, int port, const void *data, size_t len);
/* Ports: answers {ok, Port}, a program (argv[0], found on PATH, with its
 * arguments) whose input and output are a socket-like port owned by
 * caller, as Erlang's open_port({spawn_executable, ...}).  Sends (with
 * mb_socket_send) go to its input; its output arrives as
 * {Port, {data, Data}} (framed by o->packet), then {Port, {exit_status, N}}
 * once it has exited (N = 128 + the signal if a signal ended it), and the
 * port closes.  Closing the port, or its owner ending, closes the program's
 * input; a program still running when the node stops is killed. */
typedef struct {
  /* Changes to the node's environment, NULL-terminated: "NAME=VALUE"
   * sets, "NAME" unsets (Erlang's {env, Env}); NULL for none. */
  const char *const *env;
  int stderr_to_stdout; /* the program's stderr goes to its output too */
  /* {line, N}: output as {Port, {data, {eol, Line}}} and
   * {Port, {data, {noeol, Part}}}, Part at most N bytes; 0: off. */
  size_t line;
} mb_port_opts_t;
int mb_port_open(mb_pid_t caller, uint64_t ref, const char *const *argv,
                 const char *cwd, const mb_port_opts_t *po,
                 const mb_socket_opts_t *o);
void mb_socket_push(lua_State *L, mb_socket_t s);
/* The socket at idx, or MB_EINVAL. */
int mb_socket_to(lua_State *L, int idx, mb_socket_t *out);
/* Framing: where the first packet of buf is.  Returns the bytes it takes
 * (header included), with the payload at buf + *off, *plen long; 0 when
 * more bytes are needed; MB_ETOOBIG past `limit` (0 = no limit);
 * MB_EPROTO for a malformed HTTP head. */
long mb_packet_find(int packet, size_t limit, const unsigned char *buf,
                    size_t len, size_t *off, size_t *plen);
/* ---- The Lua API ----
 * What a Lua binding builds on (lua/lmoonbeam.c registers them all as the
 * module `moonbeam`): the core's Lua entry points, each a lua_CFunction
 * named after the Lua function it is, and helpers that move pids and refs
 * between C and Lua.  They follow the Lua API's conventions: misuse raises
 * (`bad argument #1 to 'link' (pid expected, got table)`). */

/* Raise the error `err` of the function `fname` as a Lua error:
 * "fname: detail", or "fname: <mb_strerror(err)>" when detail is NULL.  The
 * one way the core's errors reach Lua. */
int mb_lua_error(lua_State *L, const char *fname, int err, const char *detail);
/* Encode the value at idx into a new message, or raise
 * "fname: cannot send ... at root.path". */
mb_msg_t *mb_lua_encode(lua_State *L, int idx, const char *root,
                        const char *fname);
/* Encode the n values from idx `first` on into a new message, the table
 * {n = n, ...} that mb_proc_spawn takes as arguments, or raise as
 * mb_lua_encode ("... at root[i]..."). */
mb_msg_t *mb_lua_encode_args(lua_State *L, int first, int n, const char *root,
                             const char *fname);
/* The calling process's pid, or 0 outside a process. */
mb_pid_t mb_lua_self_pid(lua_State *L);
/* The calling process's pid, or a Lua error naming `fname` outside a
 * process (or in a coroutine resumed from C, where it cannot block). */
mb_pid_t mb_lua_check_self(lua_State *L, const char *fname);
void mb_lua_push_pid(lua_State *L, mb_pid_t pid);
/* After the calling process spawned `child` (module and function, or NULL
 * for a Lua function): a trace message if it is traced for spawns. */
void mb_trace_spawn(lua_State *L, mb_pid_t child, const char *module,
                    const char *function);
/* The pid at idx, or a Lua error. */
mb_pid_t mb_lua_check_pid(lua_State *L, int idx);
void mb_lua_push_ref(lua_State *L, uint64_t ref);
/* The value at idx as text, as tostring gives it, pushed; a __tostring that
 * raises, runs out of memory or gives no string makes opaque text. */
const char *mb_lua_tostring(lua_State *L, int idx, size_t *len);
/* Is the value at idx a tuple (moonbeam.tuple)? */
int mb_lua_is_tuple(lua_State *L, int idx);
/* A GenServer's reply: send {Tag, Reply} to From = {Pid, Tag} at `from`,
 * Reply being the value at `value`, as send_alias(Pid, Tag, {Tag, Reply})
 * does; 1 once sent, or 0 (nothing sent) where From is not this node's
 * pid and ref, the process is traced or Reply cannot be sent, and the
 * caller sends it (and raises what is wrong). */
int mb_lua_reply(lua_State *L, int from, int value);
/* A GenServer's start acknowledged: {'$gen_ack', Ref, true, nil} sent to
 * the pid at `starter`, Ref being the ref at `ref`, as gen.ack(starter,
 * ref, true) sends it; 1 once sent, or 0 (nothing sent) where they are
 * not this node's pid and ref or the process is traced, and the caller
 * sends it. */
int mb_lua_gen_ack(lua_State *L, int starter, int ref);
/* receive_call(timeout_ms, label) -> message | nil, "timeout" | Label,
 * From, Request: receive(timeout_ms) for a GenServer's loop, which gives a
 * queued call {Label, From, Request} as its three values, without
 * decoding the tuple around them (whole to a traced process). */
int mb_lua_receive_call(lua_State *L);
/* generation() -> the node's code generation, which every new version of
 * a module bumps (moonbeam.codecache.generation). */
int mb_lua_code_generation(lua_State *L);

/* clang-format off */
#define MB_LUA_ENTRY_POINTS(XX) \
  XX(self) \
  XX(send) \
  XX(receive) \
  XX(sleep) \
  XX(send_after) \
  XX(cancel_timer) \
  XX(link) \
  XX(unlink) \
  XX(monitor) \
  XX(demonitor) \
  XX(exit) \
  XX(trap_exit) \
  XX(send_alias) \
  XX(call) \
  XX(register) \
  XX(unregister) \
  XX(whereis) \
  XX(registered) \
  XX(process_info) \
  XX(trace_start) \
  XX(trace_process) \
  XX(trace_stop) \
  XX(processes) \
  XX(make_ref) \
  XX(memory) \
  XX(statistics) \
  XX(process_messages) \
  XX(process_table) \
  XX(log_tail) \
  XX(node) \
  XX(nodes) \
  XX(monitor_node) \
  XX(monitor_nodes) \
  XX(node_watch) \
  XX(node_unwatch) \
  XX(disconnect) \
  XX(spawn_request) \
  XX(atom) \
  XX(tuple) \
  XX(list) \
  XX(map) \
  XX(typeof)
/* clang-format on */
#define XX(name) int mb_lua_##name(lua_State *L);
MB_LUA_ENTRY_POINTS(XX)
#undef XX
/* mb.send, where a destination that is not a pid goes to `other` first,
 * which returns 1 when it took the message (a binding's ports), 0 for the
 * send to go on with a name. */
int mb_lua_send_or(lua_State *L, lua_CFunction other);

/* Logging. */
typedef enum {
  MB_LOG_DEBUG,
  MB_LOG_INFO,
  MB_LOG_NOTICE,
  MB_LOG_WARNING,
  MB_LOG_ERROR
} mb_log_level_t;
/* One line on stderr; its text is cut at MB_LOG_MAX bytes, and then ends
 * with " ... [truncated: N bytes in all]". */
#define MB_LOG_MAX 65536
void mb_log(mb_log_level_t level, const char *fmt, ...);
void mb_log_set_level(mb_log_level_t level);
mb_log_level_t mb_log_get_level(void);
/* One event: `text` (len bytes) logged by the process `pid` (its text,
 * "<0.3.0>", or NULL), a report of `kind` ("crash_report",
 * "supervisor_report", "progress_report", or NULL for a plain line). */
void mb_log_event(mb_log_level_t level, const char *pid, const char *kind,
                  const char *text, size_t len);
typedef enum {
  MB_LOG_FORMAT_TIME, /* 12:00:00.000 [info] text (the default) */
  MB_LOG_FORMAT_DATE, /* 2026-12-01 12:00:00.000 [info] text */
  MB_LOG_FORMAT_JSON  /* {"time":..., "level":..., "msg":...}, one a line */
} mb_log_format_t;
void mb_log_set_format(mb_log_format_t format);
/* Write to the file `path` (appended to) instead of stderr, or to stderr
 * again for NULL.  Once the file reaches max_bytes (0: never), it becomes
 * path.1, path.1 path.2 and so on, keeping `keep` of them.  Returns 0, or
 * -1 with errno set when the file cannot be opened (nothing changes). */
int mb_log_set_file(const char *path, size_t max_bytes, int keep);
/* A function called around each line the logger writes, with 0 before and
 * 1 after it, holding the logger's lock: a console that shows a prompt
 * moves it out of the way and back.  NULL for none. */
typedef void (*mb_log_around_cb)(int after);
void mb_log_set_around(mb_log_around_cb cb);

#endif
