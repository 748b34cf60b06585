/* Names shared between the files of core/dist/ (and the tests and
 * fuzzers that drive them).  The runtime sees only dist.h.  Not
 * installed. */
#ifndef MB_DIST_INTERNAL_H
#define MB_DIST_INTERNAL_H

#include "dist.h"
#include "etf.h"

/* ---- conn.c: connections to other nodes ---- */
typedef struct mb__conn_s mb__conn_t;
/* Queue a frame (its 4-byte length included) for a node, dialling it on
 * first use; the bytes are copied. */
int mb__dist_queue(const mb__atom_t *peer, unsigned char *data, size_t len);
/* Whether the connection to `peer` is up and takes exit reasons after the
 * control tuple (EXIT_PAYLOAD). */
bool mb__dist_exit_payload(const mb__atom_t *peer);
int mb__dist_disconnect(const mb__atom_t *peer);
int mb__dist_nodes(const mb__atom_t **out, int max, int mode);
bool mb__dist_connected(const mb__atom_t *peer);
/* For the fuzzer (core/fuzz/fuzz-handshake.c): a node identity with no
 * listener, and input bytes fed to a socketless connection. */
int mb__dist_fuzz_init(const char *name, const char *cookie);
void mb__dist_fuzz_feed(const unsigned char *data, size_t len);

/* ---- signal.c: what frames carry ---- */
int mb__dist_frame(mb__conn_t *c, const mb__atom_t *node,
                   const unsigned char *p, size_t n);
void mb__dist_node_up(const mb__atom_t *node, mb__conn_t *c);
void mb__dist_node_down(const mb__atom_t *node, uint64_t conn_id, bool was_up);
int mb__dist_monitor_node(mb_pid_t who, const mb__atom_t *node, bool on);
int mb__dist_monitor_nodes(mb_pid_t who, bool on);
int mb__dist_node_watch(mb_pid_t who, const mb__atom_t *node, uint64_t ref);
bool mb__dist_node_unwatch(const mb__atom_t *node, uint64_t ref);
int mb__dist_spawn_request(lua_State *L, const mb__atom_t *node,
                           mb_pid_t caller, uint64_t ref, const mb__atom_t *mod,
                           const mb__atom_t *fun, int args_idx, bool reply,
                           char *err, size_t errlen);

/* ---- EPMD's wire: requests and replies (docs/erlang-distribution.md) ---- */
#define NAMES_REQ 110
#define ALIVE2_X_RESP 118
#define PORT2_RESP 119
#define ALIVE2_REQ 120
#define ALIVE2_RESP 121
#define PORT2_REQ 122

#define NODE_TYPE_NORMAL 77 /* 'M': OTP sends it for hidden nodes too */
#define DIST_HIGHEST 6
#define DIST_LOWEST 5 /* as OTP 25 sends; OTP ignores what comes back */

/* ---- epmd_srv.c: the built-in EPMD server ---- */
/* Serve EPMD on `port` (on the addresses ERL_EPMD_ADDRESS lists, if set).
 * Returns 0 or a libuv error: UV_EADDRINUSE when someone else listens.
 * Loop thread. */
int mb__epmd_server_start(int port, const char *addresses);
/* Stop serving; the registrations made with it end.  Loop thread. */
void mb__epmd_server_stop(void);
/* Names travel in NAMES replies as lines of text: no control characters. */
bool mb__epmd_name_ok(const unsigned char *s, size_t n);
/* Block SIGPIPE on the calling (loop) thread: writes fail with EPIPE. */
void mb__epmd_block_sigpipe(void);

/* ---- epmd_cli.c: EPMD client ----
 * Port: as mb_dist_start was given it, else ERL_EPMD_PORT or 4369, read
 * by each call.  Callbacks run on the
 * loop thread, exactly once when the call returned 0, never inside the
 * call; the functions may be called from any thread. */
typedef void (*mb__epmd_register_cb)(int err, uint32_t creation, void *arg);
typedef void (*mb__epmd_lookup_cb)(int err, int port, void *arg);
/* Register `alive` (the node name before @) and the distribution port
 * with the EPMD at 127.0.0.1, starting the built-in server when nothing
 * listens there.  The registration lasts until mb__epmd_unregister or
 * mb__epmd_stop.  creation: as EPMD gave it.  Errors: MB_EEXIST (name
 * taken), MB_ESTATE (already registered), MB_ECONN, MB_EPROTO,
 * MB_ETIMEDOUT, MB_ECANCELED (unregistered meanwhile). */
int mb__epmd_register(const char *alive, int listen_port,
                      mb__epmd_register_cb cb, void *arg);
void mb__epmd_unregister(void);
/* PORT_PLEASE2 to the EPMD of `host` (IPv4 address or name): the node's
 * distribution port, or MB_ENOTFOUND, MB_ENOHOST, MB_ECONN, ... */
int mb__epmd_lookup(const char *host, const char *alive, mb__epmd_lookup_cb cb,
                    void *arg);
/* The EPMD port that mb_dist_start was given (0: ERL_EPMD_PORT). */
void mb__epmd_set_port(int port);
/* Resolve host names to IPv6 addresses (an IPv6 distribution). */
void mb__epmd_set_ipv6(bool on);
/* At node stop, before the loop stops: unregister, cancel the requests in
 * flight (MB_ECANCELED) and stop the built-in server if this node runs
 * it, which ends the registrations of the nodes that use it. */
void mb__epmd_stop(void);

#endif
