/* EPMD: the built-in server, for a host where nothing listens on the EPMD
 * port (the client, epmd_cli.c, starts it).  Other moonbeam nodes and real
 * Erlang nodes of the host register with it and look names up as they
 * would with epmd.  The wire format is in docs/erlang-distribution.md,
 * section 1.
 *
 * Where the built-in server listens, decided as epmd decides: when
 * ERL_EPMD_ADDRESS is set, on 127.0.0.1 and the IPv4 addresses it lists
 * (separated by commas or spaces; 0.0.0.0 for all); otherwise on every
 * IPv4 interface (0.0.0.0), so that nodes of other hosts can look names
 * up, or on 127.0.0.1 alone if that fails; and on IPv6 as well (every
 * interface, or ::1 when ERL_EPMD_ADDRESS is set), where the host has it.
 * As with epmd, only peers on 127.0.0.0/8 or ::1 may register; anyone who
 * reaches it may look names up.
 *
 * The server lives as long as the node that started it: when that node
 * stops, the nodes registered with it lose their registration, as they do
 * when epmd is killed (neither OTP nor moonbeam registers again).  Where
 * nodes come and go, start epmd first.
 *
 * Everything here runs on the loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist_internal.h"

/* The server.  Requests are bounded as in epmd, whose input buffer is
 * 1024 bytes and whose names are up to 255 characters of UTF-8. */
#define SRV_MAX_REQ 1024
#define SRV_MAX_NAME (255 * 4)
/* Bounds, so that idle or hostile clients cannot block lookups: a client
 * has SRV_IDLE_MS to send its whole request; at most SRV_MAX_PENDING
 * connections wait for theirs (beyond, the oldest of them is closed: a
 * real request takes one round trip), SRV_MAX_PENDING_PER_SOURCE from one
 * address (beyond, the new one is closed).  Registrations, which last as
 * long as their node, count apart: up to SRV_MAX_REGISTERED. */
#define SRV_MAX_PENDING 512
#define SRV_MAX_PENDING_PER_SOURCE 64
#define SRV_MAX_REGISTERED 4096
#define SRV_IDLE_MS 5000
#define SRV_MAX_LISTENERS 8

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
  uint32_t source; /* the peer's IPv4 address, host order */
  char peer[48];
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
  int n_conns, n_registered;
  int dropped;       /* closed for the bounds since the last sweep's log line */
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
  if (c->registered && c->srv != NULL)
    c->srv->n_registered--;
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
  mb_log(MB_LOG_WARNING, "epmd: %s from %s; connection closed", why, c->peer);
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
    c->srv->n_registered++;
    uint32_t creation = next_creation(c->srv);
    if (x)
      mb__put32(out + 2, creation);
    else
      mb__put16(out + 2, (uint16_t)(creation % 3 + 1));
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
  else if (!mb__epmd_name_ok(req + 11, nlen))
    reject(c, "ALIVE2_REQ with an empty or unprintable name");
  else if (c->srv->n_registered >= SRV_MAX_REGISTERED)
    reject(c, "registration beyond %d", SRV_MAX_REGISTERED);
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
  mb__put32(out, (uint32_t)c->srv->port);
  unsigned char *p = out + 4;
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
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    uv_ip6_name(a6, c->peer, sizeof c->peer);
    uint32_t h = 2166136261u; /* FNV-1a: the key the bounds count by */
    for (int i = 0; i < 16; i++)
      h = (h ^ a6->sin6_addr.s6_addr[i]) * 16777619u;
    c->source = h;
    c->local = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
    return;
  }
  if (ss.ss_family != AF_INET)
    return;
  struct sockaddr_in *a = (struct sockaddr_in *)&ss;
  uv_ip4_name(a, c->peer, sizeof c->peer);
  c->source = ntohl(a->sin_addr.s_addr);
  c->local = (c->source >> 24) == 127;
}

static bool pending(const conn_t *c) {
  return !c->registered && !c->answered &&
         !uv_is_closing((const uv_handle_t *)&c->tcp);
}

/* Whether a new connection from c's address may wait for its request;
 * beyond SRV_MAX_PENDING in all, the oldest waiting one is closed. */
static bool admit(server_t *s, conn_t *c) {
  int all = 0, same = 0;
  conn_t *oldest = NULL;
  for (conn_t *o = s->conns; o != NULL; o = o->next) {
    if (o == c || !pending(o))
      continue;
    all++;
    same += o->source == c->source;
    oldest = o; /* new connections go in front */
  }
  if (same >= SRV_MAX_PENDING_PER_SOURCE) {
    s->dropped++;
    return false;
  }
  if (all >= SRV_MAX_PENDING && oldest != NULL) {
    s->dropped++;
    conn_close(oldest);
  }
  return true;
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
  if (!admit(s, c))
    conn_close(c);
  else if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read))
    conn_close(c);
}

/* A client that never completes its request must not keep its slot. */
static void sweep(uv_timer_t *t) {
  server_t *s = t->data;
  uint64_t now = uv_now(mb__loop());
  for (conn_t *c = s->conns; c != NULL; c = c->next)
    if (pending(c) && now - c->opened >= SRV_IDLE_MS) {
      s->dropped++;
      conn_close(c);
    }
  /* One line for all, so that a flood does not flood the log. */
  if (s->dropped > 0)
    mb_log(MB_LOG_WARNING,
           "epmd: closed %d connections that sent no whole request in "
           "time or went beyond the bounds",
           s->dropped);
  s->dropped = 0;
}

static void server_handle_closed(uv_handle_t *h) {
  server_t *s = h->data;
  if (--s->handles == 0)
    free(s);
}

static int listen_on(server_t *s, const char *ip) {
  struct sockaddr_storage a;
  unsigned flags = 0;
  int i = s->n_listeners,
      err = uv_ip4_addr(ip, s->port, (struct sockaddr_in *)&a);
  if (err) {
    /* IPv6 apart from IPv4, as epmd listens on both. */
    err = uv_ip6_addr(ip, s->port, (struct sockaddr_in6 *)&a);
    flags = UV_TCP_IPV6ONLY;
  }
  if (err)
    return err;
  uv_tcp_t *l = &s->listeners[i];
  uv_tcp_init(mb__loop(), l);
  l->data = s;
  s->handles++;
  s->n_listeners++;
  /* libuv reports EADDRINUSE from listen, not bind. */
  err = uv_tcp_bind(l, (const struct sockaddr *)&a, flags);
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
int mb__epmd_server_start(int port, const char *addresses) {
  if (srv != NULL)
    return UV_EBUSY; /* serving another port, for an earlier call */
  server_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return UV_ENOMEM;
  mb__epmd_block_sigpipe();
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
  /* IPv6 too where the host has it (for IPv6 distribution): a failure
   * costs nothing else. */
  if (listen_on(s, any ? "::" : "::1") != 0)
    mb_log(MB_LOG_DEBUG, "epmd: not listening on IPv6");
  uv_timer_init(mb__loop(), &s->sweep);
  s->sweep.data = s;
  s->handles++;
  uv_timer_start(&s->sweep, sweep, SRV_IDLE_MS / 4, SRV_IDLE_MS / 4);
  srv = s;
  mb_log(MB_LOG_INFO, "epmd: none on port %d; this node serves it", port);
  return 0;
}

void mb__epmd_server_stop(void) {
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
