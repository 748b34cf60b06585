/* EPMD, the Erlang Port Mapper Daemon: the client (and, in epmd_srv.c, a
 * built-in server it starts when none runs).
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

/* The client. */
#define REQ_TIMEOUT_MS 10000 /* a whole exchange, retries included */
#define RETRY_MS 50          /* after losing the race to start a server */
#define MAX_ATTEMPTS 5
#define ALIVE_MAX 255 /* bytes: the node name must fit in an atom */
#define HOST_MAX 255
#define REPLY_MAX (1u << 20) /* the largest NAMES reply taken */

/* Writers that return where the next field goes. */
static unsigned char *put16(unsigned char *p, unsigned v) {
  mb__put16(p, (uint16_t)v);
  return p + 2;
}

/* Names travel in NAMES replies as lines of text: a control character in
 * one would forge lines. */
bool mb__epmd_name_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] == 0x7f)
      return false;
  return n > 0;
}

/* A peer that closes before a write would raise SIGPIPE, which ends the
 * process.  Blocked on the loop thread (at each use, since the loop may be
 * a new thread), the write fails with EPIPE instead, and the host's own
 * disposition of SIGPIPE is left alone. */
void mb__epmd_block_sigpipe(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
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
    mb_epmd_names_cb names;
  } cb;
  void *arg;
  int handles;   /* initialised and not yet closed */
  bool tcp_live; /* tcp initialised and not being closed */
  bool resolving;
  bool retrying; /* the timer is the pause before a retry */
  bool done;     /* the callback was called */
  bool closing;
  int attempts;
  int port;                     /* EPMD's */
  uint64_t deadline, retry_ms;  /* loop time */
  struct sockaddr_storage addr; /* IPv4 or IPv6 */
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

static int from_uv(int err) { return err == UV_ENOMEM ? MB_ENOMEM : MB_ECONN; }

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
  int err = mb__epmd_server_start(r->port, r->addresses);
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
    memcpy(&r->addr, ai->ai_addr, ai->ai_addrlen);
    /* sin_port and sin6_port lie at the same place */
    ((struct sockaddr_in *)&r->addr)->sin_port = htons((uint16_t)r->port);
  }
  uv_freeaddrinfo(ai);
  if (r->closing)
    req_maybe_free(r);
  else if (status < 0)
    fail(r, status == UV_ENOMEM ? MB_ENOMEM : MB_ENOHOST);
  else
    connect_attempt(r);
}

/* IPv4, as OTP's default distribution (inet_tcp) and its EPMD
 * connections; IPv6 for an IPv6 distribution (inet6_tcp, inet6_tls). */
static _Atomic bool ipv6_names;

void mb__epmd_set_ipv6(bool on) { atomic_store(&ipv6_names, on); }

static void resolve(req_t *r) {
  struct addrinfo hints = {0};
  hints.ai_family = atomic_load(&ipv6_names) ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  r->resolve.data = r;
  int err =
      uv_getaddrinfo(mb__loop(), &r->resolve, resolved, r->host, NULL, &hints);
  if (err)
    fail(r, from_uv(err));
  else
    r->resolving = true;
}

static void req_begin(void *arg) {
  req_t *r = arg;
  mb__epmd_block_sigpipe();
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
  if (uv_ip4_addr(r->host, r->port, (struct sockaddr_in *)&r->addr) == 0 ||
      uv_ip6_addr(r->host, r->port, (struct sockaddr_in6 *)&r->addr) == 0)
    connect_attempt(r);
  else
    resolve(r);
}

/* The port mb_dist_start was given, else ERL_EPMD_PORT, read on the
 * calling thread: the environment is not guarded against a setenv
 * elsewhere. */
static _Atomic int configured_port;

void mb__epmd_set_port(int port) { atomic_store(&configured_port, port); }

static int epmd_port(void) {
  int port = atomic_load(&configured_port);
  if (port > 0)
    return port <= 65535 ? port : MB_EINVAL;
  const char *s = getenv("ERL_EPMD_PORT");
  if (s == NULL || *s == '\0')
    return EPMD_DEFAULT_PORT;
  char *end;
  long p = strtol(s, &end, 10);
  return *end == '\0' && p > 0 && p <= 65535 ? (int)p : MB_EINVAL;
}

int mb_epmd_port(void) { return epmd_port(); }

static int req_new(req_kind_t kind, const char *host, void *arg, req_t **out) {
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
  return *len <= ALIVE_MAX &&
         mb__epmd_name_ok((const unsigned char *)alive, *len) &&
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

int mb__epmd_lookup(const char *host, const char *alive, mb__epmd_lookup_cb cb,
                    void *arg) {
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

int mb_epmd_names(const char *host, mb_epmd_names_cb cb, void *arg) {
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
  mb__epmd_server_stop();
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
