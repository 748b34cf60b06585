/* EPMD, the Erlang Port Mapper Daemon: the client and a built-in server.
 *
 * A node registers its alive name and distribution port with the EPMD of
 * its host and keeps that TCP connection open for its life: closing it
 * unregisters.  Other nodes ask that EPMD for the port (PORT_PLEASE2).
 * When nothing listens on the EPMD port, the node serves the protocol
 * itself, so that moonbeam needs no Erlang installation; other moonbeam
 * nodes and real Erlang nodes of the host register with it and look names
 * up as they would with epmd.  The wire format is in
 * docs/erlang-distribution.md, section 1.
 *
 * Where the built-in server listens, decided as epmd decides: when
 * ERL_EPMD_ADDRESS is set, on 127.0.0.1 and the IPv4 addresses it lists
 * (separated by commas or spaces; 0.0.0.0 for all); otherwise on every
 * IPv4 interface (0.0.0.0), so that nodes of other hosts can look names
 * up, or on 127.0.0.1 alone if that fails.  As with epmd, only peers on
 * 127.0.0.0/8 may register; anyone who reaches it may look names up.
 *
 * The server lives as long as the node that started it: when that node
 * stops, the nodes registered with it lose their registration, as they do
 * when epmd is killed (neither OTP nor moonbeam registers again).  Where
 * nodes come and go, start epmd first.
 *
 * Everything below runs on the loop thread.  The mb__epmd_* functions copy
 * their arguments and hop there with mb__loop_call, so that no callback
 * runs inside the call that asked for it. */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist_internal.h"

#define EPMD_DEFAULT_PORT 4369

#define NAMES_REQ 110
#define ALIVE2_X_RESP 118
#define PORT2_RESP 119
#define ALIVE2_REQ 120
#define ALIVE2_RESP 121
#define PORT2_REQ 122

#define NODE_TYPE_NORMAL 77 /* 'M': OTP sends it for hidden nodes too */
#define DIST_HIGHEST 6
#define DIST_LOWEST 5 /* as OTP 25 sends; OTP ignores what comes back */

/* The client. */
#define REQ_TIMEOUT_MS 10000 /* a whole exchange, retries included */
#define RETRY_MS 50          /* after losing the race to start a server */
#define MAX_ATTEMPTS 5
#define ALIVE_MAX 255        /* bytes: the node name must fit in an atom */
#define HOST_MAX 255
#define REPLY_MAX (1u << 20) /* the largest NAMES reply taken */

/* The server.  Requests are bounded as in epmd, whose input buffer is
 * 1024 bytes and whose names are up to 255 characters of UTF-8. */
#define SRV_MAX_REQ 1024
#define SRV_MAX_NAME (255 * 4)
#define SRV_MAX_CONNS 512
#define SRV_IDLE_MS 60000 /* to send a whole request */
#define SRV_MAX_LISTENERS 8

/* Writers that return where the next field goes. */
static unsigned char *put16(unsigned char *p, unsigned v) {
  mb__put16(p, (uint16_t)v);
  return p + 2;
}

static unsigned char *put32(unsigned char *p, uint32_t v) {
  mb__put32(p, v);
  return p + 4;
}

/* Names travel in NAMES replies as lines of text: a control character in
 * one would forge lines. */
static bool name_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] == 0x7f)
      return false;
  return n > 0;
}

/* A peer that closes before a write would raise SIGPIPE, which ends the
 * process.  Blocked on the loop thread (at each use, since the loop may be
 * a new thread), the write fails with EPIPE instead, and the host's own
 * disposition of SIGPIPE is left alone. */
static void block_sigpipe(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* ======================================================================
 * The server
 * ====================================================================== */

typedef struct server_s server_t;

/* A connection to the built-in server.  Loop thread only.  Once
 * registered, buf keeps the ALIVE2_REQ, which PORT_PLEASE2 answers with. */
typedef struct conn_s {
  uv_tcp_t tcp;
  server_t *srv; /* NULL once the server stopped */
  struct conn_s *prev, *next;
  uint64_t opened; /* loop time of the accept */
  bool local;      /* the peer is on this host */
  bool answered;   /* a one-shot request was answered: closing */
  bool registered;
  char peer[24];
  size_t len;
  unsigned char buf[2 + SRV_MAX_REQ];
} conn_t;

struct server_s {
  uv_tcp_t listeners[SRV_MAX_LISTENERS];
  bool listening[SRV_MAX_LISTENERS];
  int n_listeners; /* initialised, listening or not */
  uv_timer_t sweep;
  int handles; /* freed when the last one is closed, after stop */
  int port;
  conn_t *conns;
  int n_conns;
  uint32_t creation; /* the next registration's, never 0 */
};

static server_t *srv; /* the running server, if this node runs it */

/* Reads that carry nothing to keep land here. */
static char scratch[256];

typedef struct {
  uv_write_t w;
  bool close_after;
  unsigned char data[];
} reply_t;

static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  server_t *s = c->srv;
  if (s != NULL) {
    if (c->prev)
      c->prev->next = c->next;
    else
      s->conns = c->next;
    if (c->next)
      c->next->prev = c->prev;
    s->n_conns--;
  }
  free(c);
}

/* The name goes at once, not when the close completes. */
static void conn_close(conn_t *c) {
  c->registered = false;
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* A malformed request: one line in the log, and the connection closed. */
static void reject(conn_t *c, const char *fmt, ...) {
  char why[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  mb_log(MB_LOG_WARNING, "epmd: %s from %s; connection closed", why,
         c->peer);
  conn_close(c);
}

static void reply_written(uv_write_t *w, int status) {
  reply_t *r = (reply_t *)w;
  if (status < 0 || r->close_after)
    conn_close(w->handle->data);
  free(r);
}

static void send_reply(conn_t *c, const void *data, size_t len,
                       bool close_after) {
  reply_t *r = malloc(sizeof *r + len);
  uv_buf_t b = uv_buf_init(r ? (char *)r->data : NULL, (unsigned)len);
  if (r != NULL) {
    memcpy(r->data, data, len);
    r->close_after = close_after;
  }
  if (r == NULL ||
      uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, reply_written) != 0) {
    free(r);
    conn_close(c);
  }
}

static const unsigned char *conn_name(const conn_t *c, size_t *len) {
  *len = mb__get16(c->buf + 2 + 9);
  return c->buf + 2 + 11;
}

static conn_t *find(server_t *s, const unsigned char *name, size_t len) {
  for (conn_t *c = s->conns; c != NULL; c = c->next) {
    size_t n;
    const unsigned char *cn = c->registered ? conn_name(c, &n) : NULL;
    if (cn != NULL && n == len && memcmp(cn, name, len) == 0)
      return c;
  }
  return NULL;
}

static uint32_t next_creation(server_t *s) {
  uint32_t c = s->creation;
  s->creation = c + 1 != 0 ? c + 1 : 1;
  return c;
}

/* Answered as epmd does: ALIVE2_X_RESP with the 32-bit creation to nodes
 * that speak version 6, ALIVE2_RESP with a creation of 1 to 3 to older
 * ones.  A name in use gets result 1, and the connection closed. */
static void answer_alive2(conn_t *c, bool x, bool taken) {
  unsigned char out[6] = {x ? ALIVE2_X_RESP : ALIVE2_RESP, taken ? 1 : 0};
  if (!taken) {
    uint32_t creation = next_creation(c->srv);
    if (x)
      put32(out + 2, creation);
    else
      put16(out + 2, creation % 3 + 1);
    c->registered = true;
  }
  send_reply(c, out, x ? 6 : 4, taken);
}

/* ALIVE2_REQ: 120 | PortNo:16 | NodeType:8 | Protocol:8 | Highest:16 |
 * Lowest:16 | Nlen:16 | Name | Elen:16 | Extra.  `after`: bytes that came
 * after it, which a registration must not have. */
static void serve_alive2(conn_t *c, const unsigned char *req, size_t n,
                         size_t after) {
  size_t nlen = n >= 13 ? mb__get16(req + 9) : 0;
  if (!c->local)
    reject(c, "ALIVE2_REQ from another host");
  else if (after > 0)
    reject(c, "data after ALIVE2_REQ");
  else if (n < 13 || nlen > SRV_MAX_NAME || 13 + nlen > n ||
           13 + nlen + mb__get16(req + 11 + nlen) != n)
    reject(c, "ALIVE2_REQ with inconsistent lengths");
  else if (!name_ok(req + 11, nlen))
    reject(c, "ALIVE2_REQ with an empty or unprintable name");
  else
    answer_alive2(c, mb__get16(req + 5) >= 6, find(c->srv, req + 11, nlen));
}

/* PORT_PLEASE2_REQ: 122 | Name.  The reply after 119, 0 is the node's own
 * ALIVE2_REQ after its tag. */
static void serve_port2(conn_t *c, const unsigned char *req, size_t n) {
  if (n < 2) {
    reject(c, "PORT_PLEASE2_REQ without a name");
    return;
  }
  conn_t *node = find(c->srv, req + 1, n - 1);
  unsigned char out[2 + SRV_MAX_REQ] = {PORT2_RESP, node ? 0 : 1};
  size_t alen = node ? mb__get16(node->buf) : 1;
  if (node)
    memcpy(out + 2, node->buf + 3, alen - 1);
  c->answered = true;
  send_reply(c, out, alen + 1, true);
}

/* NAMES_REQ: 110.  EPMDPortNo:32, then a line per node. */
static void serve_names(conn_t *c, size_t n) {
  if (n != 1) {
    reject(c, "NAMES_REQ of %zu bytes", n);
    return;
  }
  size_t cap = 4;
  for (conn_t *o = c->srv->conns; o != NULL; o = o->next)
    cap += o->registered ? 32 + mb__get16(o->buf + 2 + 9) : 0;
  unsigned char *out = malloc(cap);
  if (out == NULL) {
    conn_close(c);
    return;
  }
  unsigned char *p = put32(out, (uint32_t)c->srv->port);
  for (conn_t *o = c->srv->conns; o != NULL; o = o->next) {
    size_t len;
    const unsigned char *name = o->registered ? conn_name(o, &len) : NULL;
    if (name != NULL)
      p += sprintf((char *)p, "name %.*s at port %u\n", (int)len,
                   (const char *)name, (unsigned)mb__get16(o->buf + 3));
  }
  c->answered = true;
  send_reply(c, out, (size_t)(p - out), true);
  free(out);
}

static void serve(conn_t *c, size_t n, size_t after) {
  const unsigned char *req = c->buf + 2;
  if (req[0] == ALIVE2_REQ)
    serve_alive2(c, req, n, after);
  else if (req[0] == PORT2_REQ)
    serve_port2(c, req, n);
  else if (req[0] == NAMES_REQ)
    serve_names(c, n);
  else
    reject(c, "unsupported request %u", req[0]);
}

/* Until its request is whole, a connection reads into its own buffer,
 * which a request cannot overflow: its length is checked first. */
static void conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  conn_t *c = h->data;
  if (c->registered || c->answered)
    *buf = uv_buf_init(scratch, sizeof scratch);
  else
    *buf = uv_buf_init((char *)c->buf + c->len,
                       (unsigned)(sizeof c->buf - c->len));
}

/* A request may come in any number of pieces.  One request per
 * connection, as in epmd; what follows a one-shot request is dropped, the
 * connection closing after the reply. */
static void conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = st->data;
  if (nread < 0) {
    conn_close(c); /* a registration ends with its connection */
    return;
  }
  if (nread == 0 || c->answered)
    return;
  if (c->registered) {
    reject(c, "data after ALIVE2_REQ");
    return;
  }
  c->len += (size_t)nread;
  size_t n = c->len >= 2 ? mb__get16(c->buf) : 0;
  if (c->len >= 2 && (n == 0 || n > SRV_MAX_REQ))
    reject(c, "request length %zu", n);
  else if (c->len >= 2 && c->len >= 2 + n)
    serve(c, n, c->len - 2 - n);
}

static void peer_name(conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  strcpy(c->peer, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0 ||
      ss.ss_family != AF_INET)
    return;
  struct sockaddr_in *a = (struct sockaddr_in *)&ss;
  uv_ip4_name(a, c->peer, sizeof c->peer);
  c->local = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
}

static void conn_link(server_t *s, conn_t *c) {
  c->srv = s;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->n_conns++;
}

static void on_connection(uv_stream_t *l, int status) {
  server_t *s = l->data;
  conn_t *c = status == 0 ? calloc(1, sizeof *c) : NULL;
  if (c == NULL) {
    mb_log(MB_LOG_WARNING, "epmd: accept: %s",
           uv_strerror(status ? status : UV_ENOMEM));
    return;
  }
  uv_tcp_init(mb__loop(), &c->tcp);
  c->tcp.data = c;
  c->opened = uv_now(mb__loop());
  conn_link(s, c);
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  peer_name(c);
  if (s->n_conns > SRV_MAX_CONNS)
    reject(c, "connection beyond %d", SRV_MAX_CONNS);
  else if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read))
    conn_close(c);
}

/* A client that never completes its request must not keep its slot. */
static void sweep(uv_timer_t *t) {
  server_t *s = t->data;
  uint64_t now = uv_now(mb__loop());
  for (conn_t *c = s->conns; c != NULL; c = c->next)
    if (!c->registered && !c->answered && now - c->opened >= SRV_IDLE_MS &&
        !uv_is_closing((uv_handle_t *)&c->tcp))
      reject(c, "no whole request in %d s", SRV_IDLE_MS / 1000);
}

static void server_handle_closed(uv_handle_t *h) {
  server_t *s = h->data;
  if (--s->handles == 0)
    free(s);
}

static int listen_on(server_t *s, const char *ip) {
  struct sockaddr_in a;
  int i = s->n_listeners, err = uv_ip4_addr(ip, s->port, &a);
  if (err)
    return err;
  uv_tcp_t *l = &s->listeners[i];
  uv_tcp_init(mb__loop(), l);
  l->data = s;
  s->handles++;
  s->n_listeners++;
  /* libuv reports EADDRINUSE from listen, not bind. */
  err = uv_tcp_bind(l, (const struct sockaddr *)&a, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)l, SOMAXCONN, on_connection);
  if (err)
    uv_close((uv_handle_t *)l, server_handle_closed);
  s->listening[i] = err == 0;
  return err;
}

/* The next address of an ERL_EPMD_ADDRESS list, into ip. */
static bool next_ip(const char **list, char ip[64]) {
  while (**list != '\0') {
    const char *s = *list;
    size_t n = strcspn(s, ", ");
    *list += n + (s[n] != '\0');
    if (n > 0 && n < 64) {
      memcpy(ip, s, n);
      ip[n] = '\0';
      return true;
    }
  }
  return false;
}

/* Unset, or listing 0.0.0.0: every interface, loopback included. */
static bool wants_any(const char *list) {
  char ip[64];
  while (list != NULL && next_ip(&list, ip))
    if (strcmp(ip, "0.0.0.0") == 0)
      return true;
  return list == NULL;
}

/* The addresses listed other than loopback, which is always served; one
 * that cannot be served is logged and skipped. */
static void listen_extra(server_t *s, const char *list) {
  char ip[64];
  while (s->n_listeners < SRV_MAX_LISTENERS && next_ip(&list, ip)) {
    int err = strcmp(ip, "127.0.0.1") ? listen_on(s, ip) : 0;
    if (err)
      mb_log(MB_LOG_WARNING, "epmd: cannot listen on %s: %s", ip,
             uv_strerror(err));
  }
}

/* Time-derived, as epmd's. */
static uint32_t first_creation(void) {
  uint64_t x = uv_hrtime() ^ ((uint64_t)time(NULL) << 24) ^
               ((uint64_t)uv_os_getpid() << 44);
  x *= 0x9e3779b97f4a7c15u; /* spread the bits that change */
  uint32_t c = (uint32_t)(x >> 32);
  return c != 0 ? c : 1;
}

static void server_close(server_t *s) {
  for (int i = 0; i < s->n_listeners; i++)
    if (s->listening[i])
      uv_close((uv_handle_t *)&s->listeners[i], server_handle_closed);
  if (s->handles == 0)
    free(s);
}

/* Returns 0 or a libuv error: UV_EADDRINUSE when someone else listens. */
static int server_start(int port, const char *addresses) {
  if (srv != NULL)
    return UV_EBUSY; /* serving another port, for an earlier call */
  server_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return UV_ENOMEM;
  block_sigpipe();
  s->port = port;
  s->creation = first_creation();
  bool any = wants_any(addresses);
  int err = any ? listen_on(s, "0.0.0.0") : UV_EINVAL;
  if (err)
    err = listen_on(s, "127.0.0.1");
  if (err) {
    server_close(s);
    return err;
  }
  if (!any)
    listen_extra(s, addresses);
  uv_timer_init(mb__loop(), &s->sweep);
  s->sweep.data = s;
  s->handles++;
  uv_timer_start(&s->sweep, sweep, SRV_IDLE_MS / 4, SRV_IDLE_MS / 4);
  srv = s;
  mb_log(MB_LOG_INFO, "epmd: none on port %d; this node serves it", port);
  return 0;
}

static void server_stop(void) {
  server_t *s = srv;
  if (s == NULL)
    return;
  srv = NULL;
  for (conn_t *c = s->conns; c != NULL; c = c->next) {
    c->srv = NULL;
    conn_close(c);
  }
  s->conns = NULL;
  s->n_conns = 0;
  uv_close((uv_handle_t *)&s->sweep, server_handle_closed);
  server_close(s);
}

/* ======================================================================
 * The client
 * ====================================================================== */

typedef enum { REQ_REGISTER, REQ_LOOKUP, REQ_NAMES } req_kind_t;

/* One exchange with an EPMD: resolve the host, connect, send one request,
 * read the reply.  A registration that succeeds stays open as `reg`.
 * Loop thread only, from mb__loop_call on.  Freed once its handles are
 * closed and no host resolution is pending. */
typedef struct req_s {
  uv_tcp_t tcp;
  uv_timer_t timer; /* the deadline, or the pause before a retry */
  uv_connect_t connect;
  uv_write_t write;
  uv_getaddrinfo_t resolve;
  struct req_s *prev, *next; /* in `reqs` */
  req_kind_t kind;
  union {
    mb__epmd_register_cb reg;
    mb__epmd_lookup_cb lookup;
    mb__epmd_names_cb names;
  } cb;
  void *arg;
  int handles;   /* initialised and not yet closed */
  bool tcp_live; /* tcp initialised and not being closed */
  bool resolving;
  bool retrying; /* the timer is the pause before a retry */
  bool done;     /* the callback was called */
  bool closing;
  int attempts;
  int port; /* EPMD's */
  uint64_t deadline, retry_ms; /* loop time */
  struct sockaddr_in addr;
  char *addresses; /* ERL_EPMD_ADDRESS at the call, to start a server */
  char host[HOST_MAX + 1];
  char alive[ALIVE_MAX + 1];
  unsigned char out[2 + 13 + ALIVE_MAX];
  size_t out_len;
  unsigned char *in;
  size_t in_len, in_cap;
} req_t;

static req_t *reqs; /* every live request, for mb__epmd_stop */
static req_t *reg;  /* this node's registration, pending or done */

static void req_maybe_free(req_t *r) {
  if (!r->closing || r->handles > 0 || r->resolving)
    return;
  if (r->prev)
    r->prev->next = r->next;
  else
    reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  free(r->addresses);
  free(r->in);
  free(r);
}

static void req_handle_closed(uv_handle_t *h) {
  req_t *r = h->data;
  r->handles--;
  req_maybe_free(r);
}

static void close_tcp(req_t *r, uv_close_cb cb) {
  r->tcp_live = false;
  uv_close((uv_handle_t *)&r->tcp, cb);
}

static void req_close(req_t *r) {
  if (r->closing)
    return;
  r->closing = true;
  if (r == reg)
    reg = NULL;
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->resolve);
  if (r->tcp_live)
    close_tcp(r, req_handle_closed);
  uv_close((uv_handle_t *)&r->timer, req_handle_closed);
}

/* Call the callback once; then close, unless a registration succeeded. */
static void complete(req_t *r, int err, uint32_t value, const char *text) {
  if (r->done || r->closing)
    return;
  r->done = true;
  if (r->kind == REQ_REGISTER)
    r->cb.reg(err, value, r->arg);
  else if (r->kind == REQ_LOOKUP)
    r->cb.lookup(err, (int)value, r->arg);
  else
    r->cb.names(err, text, r->arg);
  if (r->kind == REQ_REGISTER && err == 0)
    uv_timer_stop(&r->timer);
  else
    req_close(r);
}

static void fail(req_t *r, int err) { complete(r, err, 0, NULL); }

static int from_uv(int err) {
  return err == UV_ENOMEM ? MB_ENOMEM : MB_ECONN;
}

static void connected(req_t *r, int status);

static void on_connect(uv_connect_t *c, int status) {
  connected(c->data, status);
}

static void connect_attempt(req_t *r) {
  uv_tcp_init(mb__loop(), &r->tcp);
  r->tcp.data = r;
  r->handles++;
  r->tcp_live = true;
  r->connect.data = r;
  int err = uv_tcp_connect(&r->connect, &r->tcp,
                           (const struct sockaddr *)&r->addr, on_connect);
  if (err)
    connected(r, err);
}

static void on_timer(uv_timer_t *t) {
  req_t *r = t->data;
  uint64_t now = uv_now(mb__loop());
  if (!r->retrying || now >= r->deadline) {
    fail(r, MB_ETIMEDOUT);
    return;
  }
  r->retrying = false;
  uv_timer_start(&r->timer, on_timer, r->deadline - now, 0);
  connect_attempt(r);
}

static void retry_closed(uv_handle_t *h) {
  req_t *r = h->data;
  r->handles--;
  if (r->closing) {
    req_maybe_free(r);
  } else {
    r->retrying = true;
    uv_timer_start(&r->timer, on_timer, r->retry_ms, 0);
  }
}

/* Nothing listens on the EPMD port: serve it, then connect again.  When
 * another process starts its server at the same time, one of the two
 * loses the bind and connects to the other's. */
static void refused(req_t *r) {
  r->attempts++;
  int err = server_start(r->port, r->addresses);
  if (err != 0 && err != UV_EADDRINUSE) {
    mb_log(MB_LOG_WARNING, "epmd: cannot serve port %d: %s", r->port,
           uv_strerror(err));
    fail(r, from_uv(err));
    return;
  }
  r->retry_ms = err ? RETRY_MS : 0;
  close_tcp(r, retry_closed);
}

/* The whole reply is in: EPMD closes after PORT_PLEASE2 and NAMES. */
static void reply_in(req_t *r) {
  const unsigned char *in = r->in;
  size_t len = r->in_len;
  if (r->kind == REQ_LOOKUP && (len < 2 || in[0] != PORT2_RESP))
    fail(r, MB_EPROTO);
  else if (r->kind == REQ_LOOKUP && in[1] != 0)
    fail(r, MB_ENOTFOUND);
  else if (r->kind == REQ_LOOKUP && len < 4)
    fail(r, MB_EPROTO);
  else if (r->kind == REQ_LOOKUP)
    complete(r, 0, mb__get16(in + 2), NULL);
  else if (len < 4)
    fail(r, MB_EPROTO);
  else {
    r->in[len] = '\0'; /* req_alloc kept room for it */
    complete(r, 0, 0, (const char *)in + 4);
  }
}

/* The ALIVE2 reply: 6 bytes (X_RESP) or 4, which may come split. */
static void register_reply(req_t *r, size_t nread) {
  const unsigned char *in = r->in;
  r->in_len += nread;
  size_t need = in[0] == ALIVE2_X_RESP ? 6 : in[0] == ALIVE2_RESP ? 4 : 0;
  if (need == 0)
    fail(r, MB_EPROTO);
  else if (r->in_len >= need && in[1] != 0)
    fail(r, MB_EEXIST);
  else if (r->in_len >= need)
    complete(r, 0, need == 6 ? mb__get32(in + 2) : mb__get16(in + 2), NULL);
}

/* The reply grows up to REPLY_MAX, one byte kept for a NUL.  Beyond, the
 * read fails with UV_ENOBUFS. */
static void req_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  req_t *r = h->data;
  if (r->done)
    r->in_len = 0; /* a registration: what comes after it is dropped */
  if (r->in_cap - r->in_len < 2 && r->in_cap <= REPLY_MAX) {
    size_t cap = r->in_cap ? r->in_cap * 2 : 256;
    cap = cap < REPLY_MAX + 1 ? cap : REPLY_MAX + 1;
    unsigned char *in = realloc(r->in, cap);
    if (in != NULL) {
      r->in = in;
      r->in_cap = cap;
    }
  }
  size_t room = r->in_cap - r->in_len;
  *buf = uv_buf_init((char *)r->in + r->in_len,
                     room > 1 ? (unsigned)(room - 1) : 0);
}

/* The registration ended: EPMD went away.  The node stays up but cannot
 * be found any more, as an OTP node in the same case. */
static void registration_lost(req_t *r, ssize_t why) {
  mb_log(MB_LOG_WARNING, "epmd: lost the registration of %s: %s", r->alive,
         why == UV_EOF ? "EPMD closed it" : uv_strerror((int)why));
  req_close(r);
}

static void req_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  req_t *r = st->data;
  if (r->closing || nread == 0 || (r->done && nread > 0))
    return;
  if (r->done)
    registration_lost(r, nread);
  else if (nread == UV_EOF && r->kind != REQ_REGISTER)
    reply_in(r);
  else if (nread < 0)
    fail(r, nread == UV_ENOBUFS ? MB_EPROTO : MB_ECONN);
  else if (r->kind == REQ_REGISTER)
    register_reply(r, (size_t)nread);
  else
    r->in_len += (size_t)nread;
}

static void req_written(uv_write_t *w, int status) {
  if (status < 0)
    fail(w->data, MB_ECONN); /* nothing if the request was closed */
}

static void connected(req_t *r, int status) {
  if (r->closing)
    return;
  if (status == UV_ECONNREFUSED && r->kind == REQ_REGISTER &&
      r->attempts < MAX_ATTEMPTS) {
    refused(r);
    return;
  }
  int err = status;
  uv_buf_t b = uv_buf_init((char *)r->out, (unsigned)r->out_len);
  r->write.data = r;
  if (err == 0)
    err = uv_read_start((uv_stream_t *)&r->tcp, req_alloc, req_read);
  if (err == 0)
    err = uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, req_written);
  if (err)
    fail(r, from_uv(err));
}

static void resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *ai) {
  req_t *r = g->data;
  r->resolving = false;
  if (status == 0 && !r->closing) {
    memcpy(&r->addr, ai->ai_addr, sizeof r->addr);
    r->addr.sin_port = htons((uint16_t)r->port);
  }
  uv_freeaddrinfo(ai);
  if (r->closing)
    req_maybe_free(r);
  else if (status < 0)
    fail(r, status == UV_ENOMEM ? MB_ENOMEM : MB_ENOHOST);
  else
    connect_attempt(r);
}

/* IPv4 only: OTP's default distribution (inet_tcp) and its EPMD
 * connections are IPv4. */
static void resolve(req_t *r) {
  struct addrinfo hints = {0};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  r->resolve.data = r;
  int err = uv_getaddrinfo(mb__loop(), &r->resolve, resolved, r->host, NULL,
                           &hints);
  if (err)
    fail(r, from_uv(err));
  else
    r->resolving = true;
}

static void req_begin(void *arg) {
  req_t *r = arg;
  block_sigpipe();
  r->next = reqs;
  if (reqs)
    reqs->prev = r;
  reqs = r;
  uv_timer_init(mb__loop(), &r->timer);
  r->timer.data = r;
  r->handles = 1;
  r->deadline = uv_now(mb__loop()) + REQ_TIMEOUT_MS;
  uv_timer_start(&r->timer, on_timer, REQ_TIMEOUT_MS, 0);
  if (r->kind == REQ_REGISTER && reg != NULL) {
    fail(r, MB_ESTATE);
    return;
  }
  if (r->kind == REQ_REGISTER)
    reg = r;
  if (uv_ip4_addr(r->host, r->port, &r->addr) == 0)
    connect_attempt(r);
  else
    resolve(r);
}

/* ERL_EPMD_PORT, read on the calling thread: the environment is not
 * guarded against a setenv elsewhere. */
static int epmd_port(void) {
  const char *s = getenv("ERL_EPMD_PORT");
  if (s == NULL || *s == '\0')
    return EPMD_DEFAULT_PORT;
  char *end;
  long p = strtol(s, &end, 10);
  return *end == '\0' && p > 0 && p <= 65535 ? (int)p : MB_EINVAL;
}

static int req_new(req_kind_t kind, const char *host, void *arg,
                   req_t **out) {
  int port = epmd_port();
  size_t hlen = host ? strlen(host) : 0;
  if (port < 0 || hlen == 0 || hlen > HOST_MAX)
    return MB_EINVAL;
  req_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return MB_ENOMEM;
  r->kind = kind;
  r->arg = arg;
  r->port = port;
  memcpy(r->host, host, hlen + 1);
  *out = r;
  return 0;
}

static int submit(req_t *r) {
  int err = mb__loop_call(req_begin, r);
  if (err) {
    free(r->addresses);
    free(r);
  }
  return err;
}

static bool alive_ok(const char *alive, size_t *len) {
  *len = alive ? strlen(alive) : 0;
  return *len <= ALIVE_MAX && name_ok((const unsigned char *)alive, *len) &&
         strchr(alive, '@') == NULL;
}

static int set_addresses(req_t *r) {
  const char *s = getenv("ERL_EPMD_ADDRESS");
  size_t n = s ? strlen(s) + 1 : 0;
  r->addresses = n ? malloc(n) : NULL;
  if (n && r->addresses == NULL)
    return MB_ENOMEM;
  if (n)
    memcpy(r->addresses, s, n);
  return 0;
}

static size_t alive2_req(unsigned char *out, const char *alive, size_t n,
                         int listen_port) {
  unsigned char *p = put16(out, (unsigned)(13 + n));
  *p++ = ALIVE2_REQ;
  p = put16(p, (unsigned)listen_port);
  *p++ = NODE_TYPE_NORMAL;
  *p++ = 0; /* TCP/IPv4 */
  p = put16(put16(p, DIST_HIGHEST), DIST_LOWEST);
  p = put16(p, (unsigned)n);
  memcpy(p, alive, n);
  p = put16(p + n, 0); /* no extra */
  return (size_t)(p - out);
}

int mb__epmd_register(const char *alive, int listen_port,
                      mb__epmd_register_cb cb, void *arg) {
  size_t n;
  req_t *r;
  if (!alive_ok(alive, &n) || listen_port <= 0 || listen_port > 65535 ||
      cb == NULL)
    return MB_EINVAL;
  int err = req_new(REQ_REGISTER, "127.0.0.1", arg, &r);
  if (err)
    return err;
  if (set_addresses(r) != 0) {
    free(r);
    return MB_ENOMEM;
  }
  r->cb.reg = cb;
  memcpy(r->alive, alive, n + 1);
  r->out_len = alive2_req(r->out, alive, n, listen_port);
  return submit(r);
}

int mb__epmd_lookup(const char *host, const char *alive,
                    mb__epmd_lookup_cb cb, void *arg) {
  size_t n;
  req_t *r;
  if (!alive_ok(alive, &n) || cb == NULL)
    return MB_EINVAL;
  int err = req_new(REQ_LOOKUP, host, arg, &r);
  if (err)
    return err;
  r->cb.lookup = cb;
  unsigned char *p = put16(r->out, (unsigned)(1 + n));
  *p = PORT2_REQ;
  memcpy(p + 1, alive, n);
  r->out_len = 3 + n;
  return submit(r);
}

int mb__epmd_names(const char *host, mb__epmd_names_cb cb, void *arg) {
  req_t *r;
  if (cb == NULL)
    return MB_EINVAL;
  int err = req_new(REQ_NAMES, host, arg, &r);
  if (err)
    return err;
  r->cb.names = cb;
  put16(r->out, 1)[0] = NAMES_REQ;
  r->out_len = 3;
  return submit(r);
}

static void unregister(void *arg) {
  (void)arg;
  if (reg != NULL && !reg->done)
    fail(reg, MB_ECANCELED);
  else if (reg != NULL)
    req_close(reg);
}

static void stop(void *arg) {
  unregister(arg);
  for (req_t *r = reqs; r != NULL; r = r->next)
    fail(r, MB_ECANCELED);
  server_stop();
}

/* At once on the loop thread, so that a node stopping from there has the
 * port closed on return; from elsewhere, on the loop's next turn. */
static void run_on_loop(mb__loop_fn fn) {
  if (mb__on_loop())
    fn(NULL);
  else if (mb__loop_call(fn, NULL) != 0)
    mb_log(MB_LOG_ERROR, "epmd: out of memory; the registration stays");
}

void mb__epmd_unregister(void) { run_on_loop(unregister); }

void mb__epmd_stop(void) { run_on_loop(stop); }
