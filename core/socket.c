/* Sockets owned by processes, as gen_tcp's ports are.
 *
 * Every socket is a libuv handle on the node's I/O loop (loop.c): TCP, a
 * Unix-domain stream, UDP, or the pipes of a port's program.  No scheduler
 * thread ever touches one, so a slow or blocked peer can only make the
 * process that waits for it wait.  A TLS socket is a TCP socket whose
 * bytes pass through OpenSSL's memory buffers (tls.c) on the same thread.
 *
 * A process asks for work with the mb_socket_* functions, which queue a
 * request for the loop and return; the loop answers with an ordinary
 * message ({Ref, ok, ...} or {Ref, error, Reason}), which the process
 * waits for with a selective receive on Ref (stdlib/moonbeam/gen_tcp.lua).
 *
 * Received bytes are framed (packet.c) and go, one packet per message, to
 * the owner in active mode ({tcp, Sock, Data}) or to the one waiting recv
 * in passive mode.  The loop reads from the kernel only while someone
 * wants a packet: active true, active once/N not yet spent, or a recv
 * waiting.  Otherwise the bytes stay in the kernel and TCP's window tells
 * the peer to wait; that is the backpressure of active once and N.
 *
 * A socket belongs to its controlling process (its owner); when the owner
 * ends, proc.c calls mb__socket_owner_exit and its sockets are closed.
 * The owner index (pid -> the owner's sockets) is the one structure other
 * threads read, under owners_lock; everything else here belongs to the
 * loop thread. */
#include <arpa/inet.h>
#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Socket ids are refs with this bit set, so that Lua can tell them. */
#define SOCKET_BIT (1ULL << 61)
#define READ_CHUNK 65536
#define DEFAULT_BACKLOG 128
#define KEEPALIVE_DELAY 60

typedef struct sock_s sock_t;

/* TCP, a Unix-domain stream socket (the same code: both are libuv
 * streams), or UDP. */
typedef enum { K_TCP, K_PIPE, K_UDP, K_PORT } kind_t;

/* What a port has besides its output pipe (the sock's handle): the
 * program's input pipe and the process.  The process handle stays open
 * until the program exits, so that it is reaped, never left a zombie. */
typedef struct {
  uv_pipe_t in;
  uv_process_t proc;
  bool exited, proc_closed;
  int status;  /* exit code, or 128 + the signal that ended it */
  size_t line; /* {line, N}: lines as {eol, L} and {noeol, Part}; 0: off */
} port_t;

/* A socket.  Loop thread only, but for the owner links (under
 * owners_lock; `owner` is written only by the loop thread, which may read
 * it without the lock). */
struct sock_s {
  union {
    uv_handle_t h; /* h.data points back here */
    uv_stream_t st;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_udp_t udp;
  } u;
  kind_t kind;
  mb_socket_t id;
  mb_pid_t owner;
  sock_t *onext, *oprev;
  bool linked;

  int handles; /* libuv handles still open: the socket's, its timers' */
  bool listening, connected, eof, closing, reading;
  /* Delivery paused while controlling_process passes on what the old
   * owner (the holder) already had; the next setopts resumes it, or the
   * holder's end does (see hold()). */
  bool held;
  mb_pid_t holder;
  int err; /* a read error (libuv's code), reported once */
  int active, packet;
  size_t packet_size;
  long send_timeout;
  int sndbuf, recbuf, backlog;
  mb_socket_opts_t inherit; /* a listener's options for what it accepts */
  int ready;                /* a listener's connections not yet accepted */
  const mb__atom_t *close_reason; /* what cancelled writes answer */

  unsigned char *buf; /* received, not yet delivered: buf[start..len) */
  size_t start, len, cap;

  /* Accepts waiting behind the one in `wait`, served in order. */
  struct acceptor_s *accq;
  /* The one connect, accept or recv waiting for an answer. */
  struct {
    bool on;
    mb_pid_t caller;
    uint64_t ref;
    size_t n;
  } wait;
  uv_timer_t *rtimer; /* the wait's timeout */
  uv_timer_t *wtimer; /* send_timeout */
  uv_connect_t creq;
  port_t *port;              /* K_PORT only */
  mb__tls_t *tls;            /* a TLS socket's state */
  void *tls_ctx;             /* a TLS listener's SSL_CTX */
  mb__tls_config_t tls_conf; /* a TLS listener's, for what it accepts */
  bool handshaking;          /* TLS: no data until the handshake is done */
  long hs_timeout;           /* a TLS listener's handshake time limit */
};

typedef enum {
  OP_CONNECT,
  OP_LISTEN,
  OP_ACCEPT,
  OP_SEND,
  OP_RECV,
  OP_SETOPTS,
  OP_OWNER,
  OP_CLOSE,
  OP_SHUTDOWN,
  OP_NAME,
  OP_OWNER_EXIT,
  OP_UDP_OPEN,
  OP_UDP_SEND,
  OP_PORT_OPEN
} op_t;

/* A request from a process, run on the loop thread. */
typedef struct {
  op_t op;
  mb_pid_t caller;
  uint64_t ref;
  mb_socket_t sock;
  mb_socket_opts_t opts;
  long timeout;
  size_t n;
  int port, how;
  mb_pid_t to;
  char ip[64];
  char path[MB_SOCKET_PATH_MAX + 1];
  /* TLS: certfile, keyfile, cacertfile, server_name, alpn */
  char tlsstr[5][MB_TLS_STR_MAX + 1];
  mb_port_opts_t popts; /* port_open: env is nenv strings after argv */
  size_t nenv;
  size_t len;
  unsigned char data[]; /* send: the bytes; connect: the host */
} req_t;

typedef struct {
  uv_write_t w;
  mb_pid_t caller;
  uint64_t ref;
  unsigned char data[];
} wreq_t;

typedef struct {
  uv_shutdown_t r;
  mb_pid_t caller;
  uint64_t ref;
} sreq_t;

typedef struct {
  uv_getaddrinfo_t r;
  mb_socket_t id;
  int port;
} gai_t;

static struct {
  const mb__atom_t *ok, *error, *tcp, *tcp_closed, *tcp_error, *tcp_passive,
      *closed, *timeout, *emsgsize, *not_owner, *ealready, *einval, *enotconn,
      *nxdomain, *enomem, *udp, *udp_passive, *data, *exit_status, *http,
      *http_request, *http_response, *http_error, *ssl, *ssl_closed, *ssl_error,
      *ssl_passive, *not_found, *connected, *eol, *noeol;
} A;

static atomic_bool running;
static mb__map_t table; /* id -> sock_t*; loop thread */
static uv_mutex_t owners_lock;
static mb__map_t owners; /* pid -> first sock_t* it owns; under owners_lock */
static mb__map_t held_socks; /* id -> sock_t* paused by a handover; loop */
static atomic_int nheld;     /* its size, for owner exits on any thread */
static uv_mutex_t live_lock;
static uv_cond_t live_cond;
static size_t nlive;                   /* sock_t allocated; under live_lock */
static bool closed_all;                /* close_all has run; under live_lock */
static unsigned char rbuf[READ_CHUNK]; /* what each read fills; loop thread */

/* ---- answers and messages ---- */

static const mb__atom_t *atom_of(const char *name) {
  const mb__atom_t *a = NULL;
  mb__atom_intern(name, strlen(name), &a);
  return a;
}

/* ECONNREFUSED -> econnrefused, as inet's reasons read. */
static const mb__atom_t *uv_reason(int err) {
  if (err == UV_EOF || err == UV_ECANCELED)
    return A.closed;
  char name[40];
  const char *n = uv_err_name(err);
  size_t i = 0;
  for (; n[i] && i < sizeof name - 1; i++)
    name[i] = (char)tolower((unsigned char)n[i]);
  name[i] = '\0';
  const mb__atom_t *a = atom_of(name);
  return a ? a : A.closed;
}

/* Build a tuple of n elements; `put` writes them.  NULL when out of
 * memory. */
static mb_msg_t *finish(mb_msg_t *m, unsigned n, int failed) {
  if (m != NULL && (failed || mb__tuple_end(&m, n))) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

static mb_msg_t *value_str(const void *p, size_t len) {
  mb_msg_t *m = mb__msg_new(len + 16);
  if (m != NULL && mb__tuple_str(&m, p, len)) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

static mb_msg_t *value_sock(mb_socket_t id) {
  mb_msg_t *m = mb__msg_new(16);
  if (m != NULL && mb__tuple_ref(&m, id)) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

/* {Ref, Status} or {Ref, Status, Value}; value is consumed. */
static void answer(mb_pid_t to, uint64_t ref, const mb__atom_t *status,
                   mb_msg_t *value) {
  if (ref == MB_SOCKET_MESSAGE) { /* Port ! {Pid, ...}: no answer */
    mb_msg_free(value);
    return;
  }
  unsigned n = value ? 3 : 2;
  mb_msg_t *m = mb__tuple_new(n);
  if (m != NULL)
    m = finish(m, n,
               mb__tuple_ref(&m, ref) || mb__tuple_atom(&m, status) ||
                   (value && mb__tuple_value(&m, value)));
  mb_msg_free(value);
  if (m != NULL)
    mb_proc_send(to, m);
}

static void answer_error(mb_pid_t to, uint64_t ref, const mb__atom_t *why) {
  mb_msg_t *v = mb__msg_atom(why);
  if (v != NULL)
    answer(to, ref, A.error, v);
}

/* A TLS socket's messages say ssl where a TCP socket's say tcp. */
static const mb__atom_t *tag_of(const sock_t *s, const mb__atom_t *tag) {
  if (s->tls == NULL)
    return tag;
  if (tag == A.tcp || tag == A.http)
    return A.ssl;
  if (tag == A.tcp_closed)
    return A.ssl_closed;
  if (tag == A.tcp_error)
    return A.ssl_error;
  if (tag == A.tcp_passive)
    return A.ssl_passive;
  return tag;
}

/* {Tag, Sock}, {Tag, Sock, Data} or {Tag, Sock, Reason} to the owner. */
static void notify(sock_t *s, const mb__atom_t *tag, const void *data,
                   size_t len, const mb__atom_t *reason) {
  tag = tag_of(s, tag);
  unsigned n = data || reason ? 3 : 2;
  mb_msg_t *m = mb__tuple_new(n);
  if (m == NULL)
    return;
  m = finish(m, n,
             mb__tuple_atom(&m, tag) || mb__tuple_ref(&m, s->id) ||
                 (data && mb__tuple_str(&m, data, len)) ||
                 (reason && mb__tuple_atom(&m, reason)));
  if (m != NULL)
    mb_proc_send(s->owner, m);
}

/* {Tag, Sock, Value}; v is consumed. */
static void notify_value(sock_t *s, const mb__atom_t *tag, mb_msg_t *v) {
  tag = tag_of(s, tag);
  mb_msg_t *m = mb__tuple_new(3);
  if (m != NULL)
    m = finish(m, 3,
               mb__tuple_atom(&m, tag) || mb__tuple_ref(&m, s->id) ||
                   mb__tuple_value(&m, v));
  mb_msg_free(v);
  if (m != NULL)
    mb_proc_send(s->owner, m);
}

/* A port's messages: {Port, {data, Data}}, {Port, {exit_status, N}}. */
static void notify_port(sock_t *s, const mb__atom_t *tag, const void *data,
                        size_t len, int status) {
  mb_msg_t *v = mb__tuple_new(2);
  if (v != NULL)
    v = finish(v, 2,
               mb__tuple_atom(&v, tag) || (data ? mb__tuple_str(&v, data, len)
                                                : mb__tuple_int(&v, status)));
  mb_msg_t *m = v ? mb__tuple_new(2) : NULL;
  if (m != NULL)
    m = finish(m, 2, mb__tuple_ref(&m, s->id) || mb__tuple_value(&m, v));
  mb_msg_free(v);
  if (m != NULL)
    mb_proc_send(s->owner, m);
}

/* {Port, closed} or {Port, connected}: a port's replies to the messages
 * Erlang sends it (Port ! {Pid, close}, {Pid, {connect, New}}). */
static void port_reply(mb_socket_t id, mb_pid_t to, const mb__atom_t *what) {
  mb_msg_t *m = mb__tuple_new(2);
  if (m != NULL)
    m = finish(m, 2, mb__tuple_ref(&m, id) || mb__tuple_atom(&m, what));
  if (m != NULL)
    mb_proc_send(to, m);
}

/* A message to a port names its owner (Port ! {Owner, ...}); one that
 * names another process is dropped, with a log line, where Erlang sends
 * the owner an exit signal badsig. */
static bool from_owner(const sock_t *s, const req_t *r) {
  if (r->ref != MB_SOCKET_MESSAGE || s->owner == r->caller)
    return true;
  mb_log(MB_LOG_WARNING,
         "socket #Ref<0.%u.%u.0>: a message to it names <0.%u.%u> "
         "as its owner, which it is not: dropped",
         (unsigned)(s->id >> 32), (unsigned)s->id, MB_PID_ID(r->caller),
         MB_PID_SERIAL(r->caller));
  return false;
}

/* ---- owners ---- */

/* Pause delivery while `holder`, the old owner, passes on its messages.
 * If the holder ends before it resumes delivery, its end resumes it
 * (do_owner_exit): the socket goes on with its new owner, never held
 * for ever.  Without memory to track it, the socket is not paused. */
static void hold(sock_t *s, mb_pid_t holder) {
  if (mb__map_put(&held_socks, s->id, s) != 0)
    return;
  s->held = true;
  s->holder = holder;
  atomic_fetch_add(&nheld, 1);
}

static void unhold(sock_t *s) {
  if (!s->held)
    return;
  s->held = false;
  mb__map_del(&held_socks, s->id);
  atomic_fetch_sub(&nheld, 1);
}

/* A socket held by pid, or NULL. */
static sock_t *held_by(mb_pid_t pid) {
  size_t i = 0;
  uint64_t id;
  void *v;
  while (mb__map_next(&held_socks, &i, &id, &v))
    if (((sock_t *)v)->holder == pid)
      return v;
  return NULL;
}

static int owner_link(sock_t *s, mb_pid_t pid) {
  uv_mutex_lock(&owners_lock);
  sock_t *head = mb__map_get(&owners, pid);
  int err = mb__map_put(&owners, pid, s);
  if (err == 0) {
    s->owner = pid;
    s->oprev = NULL;
    s->onext = head;
    if (head != NULL)
      head->oprev = s;
    s->linked = true;
  }
  uv_mutex_unlock(&owners_lock);
  return err;
}

static void owner_unlink(sock_t *s) {
  uv_mutex_lock(&owners_lock);
  if (s->linked) {
    if (s->oprev != NULL)
      s->oprev->onext = s->onext;
    else if (s->onext != NULL)
      mb__map_put(&owners, s->owner, s->onext); /* the key exists */
    else
      mb__map_del(&owners, s->owner);
    if (s->onext != NULL)
      s->onext->oprev = s->oprev;
    s->linked = false;
  }
  uv_mutex_unlock(&owners_lock);
}

/* ---- life of a socket ---- */

static void free_sock(sock_t *s) {
  mb__tls_free(s->tls);
  if (s->tls_ctx != NULL)
    mb__tls_context_free(s->tls_ctx);
  free(s->port);
  free(s->buf);
  free(s);
  uv_mutex_lock(&live_lock);
  if (--nlive == 0)
    uv_cond_broadcast(&live_cond);
  uv_mutex_unlock(&live_lock);
}

static void on_closed(uv_handle_t *h) {
  sock_t *s = h->data;
  if (h->type == UV_TIMER)
    free(h);
  if (--s->handles == 0)
    free_sock(s);
}

static int handle_init(sock_t *s) {
  switch (s->kind) {
  case K_PIPE:
  case K_PORT: /* the program's output */
    return uv_pipe_init(mb__loop(), &s->u.pipe, 0);
  case K_UDP:
    return uv_udp_init(mb__loop(), &s->u.udp);
  default:
    return uv_tcp_init(mb__loop(), &s->u.tcp);
  }
}

static sock_t *sock_new(kind_t kind) {
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->kind = kind;
  if (handle_init(s) != 0) {
    free(s);
    return NULL;
  }
  s->u.h.data = s;
  s->handles = 1;
  s->id = mb__ref_next() | SOCKET_BIT;
  s->active = MB_ACTIVE_TRUE;
  s->packet = MB_PACKET_RAW;
  s->backlog = DEFAULT_BACKLOG;
  uv_mutex_lock(&live_lock);
  nlive++;
  uv_mutex_unlock(&live_lock);
  if (mb__map_put(&table, s->id, s) != 0) {
    s->closing = true;
    uv_close(&s->u.h, on_closed);
    return NULL;
  }
  return s;
}

static void timer_stop(uv_timer_t *t) {
  if (t != NULL)
    uv_timer_stop(t);
}

static void timer_close(uv_timer_t *t) {
  if (t != NULL)
    uv_close((uv_handle_t *)t, on_closed);
}

/* Start the timer in *slot (made on first use) to call cb after ms. */
static void timer_start(sock_t *s, uv_timer_t **slot, long ms, uv_timer_cb cb) {
  if (*slot == NULL) {
    uv_timer_t *t = malloc(sizeof *t);
    if (t == NULL)
      return; /* the wait goes without its timeout */
    uv_timer_init(mb__loop(), t);
    t->data = s;
    s->handles++;
    *slot = t;
  }
  uv_timer_start(*slot, cb, (uint64_t)ms, 0);
}

static void wait_set(sock_t *s, mb_pid_t caller, uint64_t ref, size_t n) {
  s->wait.on = true;
  s->wait.caller = caller;
  s->wait.ref = ref;
  s->wait.n = n;
}

static void wait_done(sock_t *s, mb_msg_t *value) {
  if (!s->wait.on) {
    mb_msg_free(value);
    return;
  }
  s->wait.on = false;
  timer_stop(s->rtimer);
  answer(s->wait.caller, s->wait.ref, A.ok, value);
}

static void wait_fail(sock_t *s, const mb__atom_t *why) {
  if (!s->wait.on)
    return;
  s->wait.on = false;
  timer_stop(s->rtimer);
  answer_error(s->wait.caller, s->wait.ref, why);
}

static void fail_acceptors(sock_t *l, const mb__atom_t *why);

/* Close the socket: it leaves the table at once (so every later request
 * finds it closed) and its memory goes when libuv has closed its handles.
 * Writes in flight are cancelled and answer `why`. */
static void sock_close(sock_t *s, const mb__atom_t *why) {
  if (s->closing)
    return;
  if (s->tls != NULL && !s->handshaking && s->connected && !s->err) {
    /* close_notify, if the kernel takes it now; the close goes on. */
    mb__tls_close(s->tls);
    unsigned char note[256];
    size_t n = mb__tls_take(s->tls, note, sizeof note);
    uv_buf_t b = uv_buf_init((char *)note, (unsigned)n);
    if (n > 0)
      uv_try_write(&s->u.st, &b, 1);
  }
  s->closing = true;
  s->close_reason = why;
  mb__map_del(&table, s->id);
  owner_unlink(s);
  unhold(s);
  wait_fail(s, why);
  fail_acceptors(s, why);
  uv_close(&s->u.h, on_closed);
  timer_close(s->rtimer);
  timer_close(s->wtimer);
  if (s->port != NULL) {
    /* The program sees the end of its input, as when Erlang closes a
     * port; it is reaped when it exits. */
    uv_close((uv_handle_t *)&s->port->in, on_closed);
    if (s->port->exited && !s->port->proc_closed) {
      s->port->proc_closed = true;
      uv_close((uv_handle_t *)&s->port->proc, on_closed);
    }
  }
}

/* Give s to its first owner; false (and s closed) if that process has
 * already ended, so that no socket outlives its owner. */
static bool sock_adopt(sock_t *s, mb_pid_t owner) {
  if (owner_link(s, owner) != 0) {
    sock_close(s, A.enomem);
    return false;
  }
  if (!mb_proc_alive(owner)) {
    sock_close(s, A.closed);
    return false;
  }
  return true;
}

static sock_t *lookup(mb_socket_t id) {
  sock_t *s = mb__map_get(&table, id);
  return s != NULL && !s->closing ? s : NULL;
}

/* ---- options ---- */

static void merge_opts(mb_socket_opts_t *dst, const mb_socket_opts_t *o) {
  unsigned set = dst->set | o->set;
  const char *ip = dst->ip;
  int ipv6 = dst->ipv6 || o->ipv6;
#define TAKE(bit, field)                                                       \
  if (o->set & (bit))                                                          \
    dst->field = o->field;
  TAKE(MB_SOCKOPT_ACTIVE, active)
  TAKE(MB_SOCKOPT_PACKET, packet)
  TAKE(MB_SOCKOPT_PACKET_SIZE, packet_size)
  TAKE(MB_SOCKOPT_NODELAY, nodelay)
  TAKE(MB_SOCKOPT_KEEPALIVE, keepalive)
  TAKE(MB_SOCKOPT_REUSEADDR, reuseaddr)
  TAKE(MB_SOCKOPT_SNDBUF, sndbuf)
  TAKE(MB_SOCKOPT_RECBUF, recbuf)
  TAKE(MB_SOCKOPT_BACKLOG, backlog)
  TAKE(MB_SOCKOPT_SEND_TIMEOUT, send_timeout)
#undef TAKE
  dst->set = set;
  dst->ip = ip;
  dst->ipv6 = ipv6;
}

/* The kernel's buffer sizes need a file descriptor: set again once the
 * socket is connected. */
static void apply_buffers(sock_t *s) {
  int snd = s->sndbuf, rec = s->recbuf;
  if (snd > 0)
    uv_send_buffer_size(&s->u.h, &snd);
  if (rec > 0)
    uv_recv_buffer_size(&s->u.h, &rec);
}

static void apply_opts(sock_t *s, const mb_socket_opts_t *o) {
  if (o->set & MB_SOCKOPT_ACTIVE) {
    /* {active, N} adds to a count not yet spent, as in inet. */
    if (o->active > 0 && s->active > 0)
      s->active += o->active;
    else
      s->active = o->active;
  }
  if (o->set & MB_SOCKOPT_PACKET)
    s->packet = o->packet;
  if (o->set & MB_SOCKOPT_PACKET_SIZE)
    s->packet_size = o->packet_size;
  if (o->set & MB_SOCKOPT_SEND_TIMEOUT)
    s->send_timeout = o->send_timeout;
  if (o->set & MB_SOCKOPT_BACKLOG)
    s->backlog = o->backlog;
  if ((o->set & MB_SOCKOPT_NODELAY) && s->kind == K_TCP)
    uv_tcp_nodelay(&s->u.tcp, o->nodelay);
  if ((o->set & MB_SOCKOPT_KEEPALIVE) && s->kind == K_TCP)
    uv_tcp_keepalive(&s->u.tcp, o->keepalive, KEEPALIVE_DELAY);
  if (o->set & MB_SOCKOPT_SNDBUF)
    s->sndbuf = o->sndbuf;
  if (o->set & MB_SOCKOPT_RECBUF)
    s->recbuf = o->recbuf;
  if (s->connected || s->listening)
    apply_buffers(s);
  if (s->listening)
    merge_opts(&s->inherit, o);
}

static size_t packet_limit(const sock_t *s) {
  if (s->packet_size != 0)
    return s->packet_size;
  return s->packet >= MB_PACKET_LINE ? MB_PACKET_LINE_MAX
                                     : MB_PACKET_PREFIX_MAX;
}

static bool http_packet(const sock_t *s) {
  return s->packet == MB_PACKET_HTTP || s->packet == MB_PACKET_HTTP_RESPONSE;
}

/* A packet as the owner gets it: the bytes, or an HTTP head's value. */
static mb_msg_t *packet_value(sock_t *s, const unsigned char *p, size_t n) {
  if (http_packet(s))
    return mb__http_head(s->packet == MB_PACKET_HTTP_RESPONSE, p, n,
                         A.http_request, A.http_response);
  return value_str(p, n);
}

/* ---- receiving ---- */

static void deliver(sock_t *s);

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init((char *)rbuf, sizeof rbuf);
}

static int append(sock_t *s, const unsigned char *p, size_t n) {
  if (s->start > 0) {
    memmove(s->buf, s->buf + s->start, s->len - s->start);
    s->len -= s->start;
    s->start = 0;
  }
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    while (cap < s->len + n)
      cap *= 2;
    unsigned char *b = realloc(s->buf, cap);
    if (b == NULL)
      return UV_ENOBUFS;
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, p, n);
  s->len += n;
  return 0;
}

/* Drop n delivered bytes; an idle socket keeps no buffer. */
static void consume(sock_t *s, size_t n) {
  s->start += n;
  if (s->start == s->len) {
    free(s->buf);
    s->buf = NULL;
    s->start = s->len = s->cap = 0;
  }
}

static void step_handshake(sock_t *s);
static void tls_drain(sock_t *s);
static void flush_tls(sock_t *s, mb_pid_t caller, uint64_t ref);
static void serve_accept(sock_t *l);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  sock_t *s = st->data;
  (void)b;
  if (nread > 0 && s->tls != NULL) {
    if (mb__tls_feed(s->tls, rbuf, (size_t)nread) != 0) {
      s->err = UV_ENOBUFS;
    } else if (s->handshaking) {
      step_handshake(s);
      return;
    } else {
      tls_drain(s);
      if (s->closing)
        return;
    }
  } else if (nread > 0) {
    int err = append(s, rbuf, (size_t)nread);
    if (err)
      s->err = err;
  } else if (nread < 0 && s->handshaking) {
    sock_close(s, A.closed); /* the peer left in the middle */
    return;
  } else if (nread == UV_EOF) {
    s->eof = true;
  } else if (nread < 0) {
    s->err = (int)nread;
  }
  deliver(s);
}

/* Read from the kernel only while someone wants a packet. */
static void on_datagram(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags);

static void update_udp(sock_t *s) {
  bool want =
      !s->closing && !s->held && (s->active != MB_ACTIVE_FALSE || s->wait.on);
  if (want && !s->reading) {
    if (uv_udp_recv_start(&s->u.udp, on_alloc, on_datagram) == 0)
      s->reading = true;
  } else if (!want && s->reading) {
    uv_udp_recv_stop(&s->u.udp);
    s->reading = false;
  }
}

static void update_reading(sock_t *s) {
  if (s->kind == K_UDP) {
    update_udp(s);
    return;
  }
  bool want = s->connected && !s->eof && !s->err && !s->closing && !s->held &&
              (s->active != MB_ACTIVE_FALSE || s->wait.on || s->handshaking);
  if (want && !s->reading) {
    int err = uv_read_start(&s->u.st, on_alloc, on_read);
    if (err) {
      s->err = err;
      deliver(s);
      return;
    }
    s->reading = true;
  } else if (!want && s->reading) {
    uv_read_stop(&s->u.st);
    s->reading = false;
  }
}

/* The peer broke the framing: the owner hears of it, the socket closes,
 * and nothing else is touched. */
static void bad_input(sock_t *s, const mb__atom_t *why) {
  mb_log(MB_LOG_WARNING, "socket #Ref<0.%u.%u.0>: %s from the peer, closing",
         (unsigned)(s->id >> 32), (unsigned)(s->id & 0xffffffffu), why->name);
  if (s->active != MB_ACTIVE_FALSE) {
    notify(s, A.tcp_error, NULL, 0, why);
    notify(s, A.tcp_closed, NULL, 0, NULL);
  }
  sock_close(s, why);
}

/* One packet from the buffer: its length in the buffer, 0 if incomplete,
 * or an error. */
static long next_packet(sock_t *s, size_t want, size_t *off, size_t *plen) {
  if (s->buf == NULL)
    return 0;
  const unsigned char *p = s->buf + s->start;
  size_t len = s->len - s->start;
  if (s->packet == MB_PACKET_RAW && want > 0) {
    *off = 0;
    *plen = want;
    return len >= want ? (long)want : 0;
  }
  return mb_packet_find(s->packet, packet_limit(s), p, len, off, plen);
}

static void spend_active(sock_t *s);
static void port_done(sock_t *s);

/* {Port, {data, {eol, Line}}} or {Port, {data, {noeol, Part}}}. */
static void notify_line(sock_t *s, bool eol, const void *data, size_t len) {
  mb_msg_t *l = mb__tuple_new(2);
  if (l != NULL)
    l = finish(l, 2,
               mb__tuple_atom(&l, eol ? A.eol : A.noeol) ||
                   mb__tuple_str(&l, data, len));
  mb_msg_t *v = l ? mb__tuple_new(2) : NULL;
  if (v != NULL)
    v = finish(v, 2, mb__tuple_atom(&v, A.data) || mb__tuple_value(&v, l));
  mb_msg_free(l);
  mb_msg_t *m = v ? mb__tuple_new(2) : NULL;
  if (m != NULL)
    m = finish(m, 2, mb__tuple_ref(&m, s->id) || mb__tuple_value(&m, v));
  mb_msg_free(v);
  if (m != NULL)
    mb_proc_send(s->owner, m);
}

/* A port with {line, N}: one line without its newline, or N bytes of a
 * longer one, or what is left at the end of the output, as Erlang's
 * ports frame them.  False when there is none yet. */
static bool deliver_line(sock_t *s) {
  const unsigned char *p = s->buf + s->start;
  size_t have = s->len - s->start, max = s->port->line;
  size_t scan = have < max ? have : max;
  const unsigned char *nl = scan ? memchr(p, '\n', scan) : NULL;
  if (nl != NULL) {
    notify_line(s, true, p, (size_t)(nl - p));
    consume(s, (size_t)(nl - p) + 1);
  } else if (have >= max || (have > 0 && (s->eof || s->err))) {
    notify_line(s, false, p, scan);
    consume(s, scan);
  } else {
    if (s->eof || s->err)
      port_done(s);
    return false;
  }
  spend_active(s);
  return true;
}

/* The active count after one packet: once and N end in passive mode, N
 * with {tcp_passive, Sock}. */
static void spend_active(sock_t *s) {
  if (s->active == MB_ACTIVE_ONCE) {
    s->active = MB_ACTIVE_FALSE;
  } else if (s->active > 0 && --s->active == 0) {
    s->active = MB_ACTIVE_FALSE;
    notify(s, s->kind == K_UDP ? A.udp_passive : A.tcp_passive, NULL, 0, NULL);
  }
}

/* All of a port's output is delivered: the exit status comes last. */
static void port_done(sock_t *s) {
  if (s->port->exited) {
    notify_port(s, A.exit_status, NULL, 0, s->port->status);
    sock_close(s, A.closed);
  }
}

/* Active mode: one packet to the owner.  False when there is none. */
static bool deliver_active(sock_t *s) {
  size_t off, plen;
  long n = next_packet(s, 0, &off, &plen);
  if (n < 0) {
    bad_input(s, n == MB_EPROTO ? A.http_error : A.emsgsize);
    return false;
  }
  if (n > 0 && http_packet(s)) {
    mb_msg_t *v = packet_value(s, s->buf + s->start + off, plen);
    if (v == NULL) {
      bad_input(s, A.http_error);
      return false;
    }
    notify_value(s, A.http, v);
    consume(s, (size_t)n);
    spend_active(s);
    return true;
  }
  if (s->kind == K_PORT && s->port->line > 0)
    return deliver_line(s);
  if (n > 0) {
    if (s->kind == K_PORT)
      notify_port(s, A.data, s->buf + s->start + off, plen, 0);
    else
      notify(s, A.tcp, s->buf + s->start + off, plen, NULL);
    consume(s, (size_t)n);
    spend_active(s);
    return true;
  }
  if (s->kind == K_PORT && (s->eof || s->err)) {
    port_done(s);
    return false;
  }
  if (s->eof || s->err) {
    if (s->err)
      notify(s, A.tcp_error, NULL, 0, uv_reason(s->err));
    notify(s, A.tcp_closed, NULL, 0, NULL);
    sock_close(s, A.closed);
  }
  return false;
}

/* Passive mode: answer the waiting recv if a packet is there. */
static void deliver_recv(sock_t *s) {
  size_t off, plen;
  long n = next_packet(s, s->wait.n, &off, &plen);
  if (n < 0) {
    bad_input(s, n == MB_EPROTO ? A.http_error : A.emsgsize);
  } else if (n > 0) {
    mb_msg_t *v = packet_value(s, s->buf + s->start + off, plen);
    if (v == NULL) {
      bad_input(s, http_packet(s) ? A.http_error : A.enomem);
      return;
    }
    consume(s, (size_t)n);
    wait_done(s, v);
  } else if (s->eof || s->err) {
    /* exit_on_close, as inet's default: the socket ends with the
     * stream. */
    sock_close(s, s->err ? uv_reason(s->err) : A.closed);
  }
}

static void deliver(sock_t *s) {
  if (s->kind == K_UDP || s->handshaking) {
    update_reading(s); /* datagrams are delivered as they come */
    return;
  }
  while (!s->closing && s->connected && !s->held) {
    if (s->active != MB_ACTIVE_FALSE) {
      if (!deliver_active(s))
        break;
    } else {
      if (s->wait.on)
        deliver_recv(s);
      break;
    }
  }
  if (!s->closing)
    update_reading(s);
}

/* ---- connecting ---- */

static void on_wait_timeout(uv_timer_t *t) {
  sock_t *s = t->data;
  if (!s->wait.on)
    return;
  if (s->handshaking) {
    sock_close(s, A.timeout); /* half a handshake is as good as none */
    return;
  }
  if (!s->connected && !s->listening) {
    sock_close(s, A.timeout); /* a connect that took too long */
    return;
  }
  wait_fail(s, A.timeout);
  if (s->listening)
    serve_accept(s); /* the next acceptor's turn */
  update_reading(s);
}

static void on_connect(uv_connect_t *req, int status) {
  sock_t *s = req->handle->data;
  if (s->closing)
    return; /* whoever closed it answered the wait */
  if (status < 0) {
    sock_close(s, uv_reason(status));
    return;
  }
  s->connected = true;
  apply_buffers(s);
  if (s->tls != NULL) {
    step_handshake(s); /* answers the connect when it is done */
    return;
  }
  mb_msg_t *v = value_sock(s->id);
  if (v == NULL) {
    sock_close(s, A.enomem);
    return;
  }
  wait_done(s, v);
  deliver(s);
}

/* ---- TLS ---- */

static void tls_conf_of(const req_t *r, mb__tls_config_t *c, bool server) {
  const mb_socket_opts_t *o = &r->opts;
  c->certfile = r->tlsstr[0][0] ? r->tlsstr[0] : NULL;
  c->keyfile = r->tlsstr[1][0] ? r->tlsstr[1] : NULL;
  c->cacertfile = r->tlsstr[2][0] ? r->tlsstr[2] : NULL;
  c->server_name = r->tlsstr[3][0] ? r->tlsstr[3] : NULL;
  c->alpn = r->tlsstr[4][0] ? r->tlsstr[4] : NULL;
  c->verify = o->verify < 0 ? !server : o->verify != 0;
  c->fail_if_no_peer_cert = o->fail_if_no_peer_cert != 0;
}

/* Plaintext that OpenSSL has, into the socket's buffer. */
static void tls_drain(sock_t *s) {
  const char *why = NULL;
  for (;;) {
    size_t n;
    int r = mb__tls_read(s->tls, rbuf, sizeof rbuf, &n, &why);
    if (r == MB_ECONN) {
      s->eof = true;
      break;
    }
    if (r != 0) {
      flush_tls(s, 0, 0);
      bad_input(s, atom_of(why) ? atom_of(why) : A.closed);
      return;
    }
    if (n == 0)
      break;
    if (append(s, rbuf, n) != 0) {
      s->err = UV_ENOBUFS;
      break;
    }
  }
  flush_tls(s, 0, 0); /* TLS 1.3 answers some records */
}

static void step_handshake(sock_t *s) {
  const char *why = NULL;
  int r = mb__tls_handshake(s->tls, &why);
  flush_tls(s, 0, 0);
  if (s->closing)
    return;
  if (r < 0) {
    sock_close(s, atom_of(why) ? atom_of(why) : A.closed);
    return;
  }
  if (r == 0) {
    update_reading(s);
    return;
  }
  s->handshaking = false;
  mb_msg_t *v = value_sock(s->id);
  if (v == NULL) {
    sock_close(s, A.enomem);
    return;
  }
  wait_done(s, v);
  tls_drain(s); /* data that came with the handshake's last flight */
  if (!s->closing)
    deliver(s);
}

static void start_connect(sock_t *s, const struct sockaddr *sa) {
  int err = uv_tcp_connect(&s->creq, &s->u.tcp, sa, on_connect);
  if (err)
    sock_close(s, uv_reason(err));
}

/* An address as text, or NULL for a name to resolve. */
static bool parse_ip(const char *host, int port, struct sockaddr_storage *sa) {
  return uv_ip4_addr(host, port, (struct sockaddr_in *)sa) == 0 ||
         uv_ip6_addr(host, port, (struct sockaddr_in6 *)sa) == 0;
}

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *res) {
  gai_t *g = (gai_t *)r;
  sock_t *s = lookup(g->id);
  if (s != NULL) {
    if (status < 0 || res == NULL) {
      sock_close(s, A.nxdomain);
    } else {
      struct sockaddr_storage sa;
      memcpy(&sa, res->ai_addr, res->ai_addrlen);
      if (sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)g->port);
      else
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)g->port);
      start_connect(s, (struct sockaddr *)&sa);
    }
  }
  uv_freeaddrinfo(res);
  free(g);
}

static void resolve(sock_t *s, const char *host, int port, int ipv6) {
  gai_t *g = malloc(sizeof *g);
  if (g == NULL) {
    sock_close(s, A.enomem);
    return;
  }
  g->id = s->id;
  g->port = port;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  /* inet by default, inet6 when asked, as gen_tcp resolves. */
  hints.ai_family = ipv6 ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  int err = uv_getaddrinfo(mb__loop(), &g->r, on_resolved, host, NULL, &hints);
  if (err) {
    free(g);
    sock_close(s, A.nxdomain);
  }
}

static void do_connect(req_t *r) {
  sock_t *s = sock_new(r->path[0] ? K_PIPE : K_TCP);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  apply_opts(s, &r->opts);
  wait_set(s, r->caller, r->ref, 0);
  if (!sock_adopt(s, r->caller))
    return;
  if (r->timeout >= 0)
    timer_start(s, &s->rtimer, r->timeout, on_wait_timeout);
  if (r->opts.tls) {
    mb__tls_config_t c;
    tls_conf_of(r, &c, false);
    const char *why = NULL;
    void *ctx = mb__tls_context(&c, false, &why);
    s->tls =
        ctx ? mb__tls_new(ctx, false, &c, (const char *)r->data, &why) : NULL;
    if (ctx != NULL)
      mb__tls_context_free(ctx); /* the connection holds its own ref */
    if (s->tls == NULL) {
      sock_close(s, atom_of(why) ? atom_of(why) : A.enomem);
      return;
    }
    s->handshaking = true;
  }
  if (s->kind == K_PIPE) {
    uv_pipe_connect(&s->creq, &s->u.pipe, r->path, on_connect);
    return;
  }
  const char *host = (const char *)r->data;
  struct sockaddr_storage sa;
  if (parse_ip(host, r->port, &sa))
    start_connect(s, (struct sockaddr *)&sa);
  else
    resolve(s, host, r->port, r->opts.ipv6);
}

/* ---- listening and accepting ---- */

/* An accept queued behind the one in the listener's `wait` (a pool of
 * acceptors, as gen_tcp queues them), with its own timeout.  Its timer is
 * its memory: on_closed frees it, and the listener counts it in its
 * handles. */
typedef struct acceptor_s {
  uv_timer_t timer; /* first, for on_closed */
  struct acceptor_s *next;
  mb_pid_t caller;
  uint64_t ref;
} acceptor_t;

static void acceptor_unlink(sock_t *l, acceptor_t *a) {
  acceptor_t **p = &l->accq;
  while (*p != a)
    p = &(*p)->next;
  *p = a->next;
  uv_close((uv_handle_t *)&a->timer, on_closed);
}

static void on_queued_timeout(uv_timer_t *t) {
  acceptor_t *a = (acceptor_t *)t;
  answer_error(a->caller, a->ref, A.timeout);
  acceptor_unlink(t->data, a);
}

static void queue_accept(sock_t *l, const req_t *r) {
  acceptor_t *a = malloc(sizeof *a);
  if (a == NULL) {
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  uv_timer_init(mb__loop(), &a->timer);
  a->timer.data = l;
  l->handles++;
  a->caller = r->caller;
  a->ref = r->ref;
  a->next = NULL;
  if (r->timeout >= 0)
    uv_timer_start(&a->timer, on_queued_timeout, (uint64_t)r->timeout, 0);
  acceptor_t **p = &l->accq;
  while (*p != NULL)
    p = &(*p)->next;
  *p = a;
}

/* The listener's wait is over: the next queued accept whose process is
 * alive takes it, with the time it has left. */
static void next_acceptor(sock_t *l) {
  while (!l->wait.on && l->accq != NULL) {
    acceptor_t *a = l->accq;
    if (mb_proc_alive(a->caller)) {
      wait_set(l, a->caller, a->ref, 0);
      if (uv_is_active((uv_handle_t *)&a->timer))
        timer_start(l, &l->rtimer, (long)uv_timer_get_due_in(&a->timer),
                    on_wait_timeout);
    }
    acceptor_unlink(l, a);
  }
}

/* A closing listener answers every queued accept. */
static void fail_acceptors(sock_t *l, const mb__atom_t *why) {
  while (l->accq != NULL) {
    answer_error(l->accq->caller, l->accq->ref, why);
    acceptor_unlink(l, l->accq);
  }
}

static void serve_accept(sock_t *l) {
  next_acceptor(l);
  while (l->wait.on && l->ready > 0) {
    if (!mb_proc_alive(l->wait.caller)) {
      /* No connection is taken for a process that has ended. */
      l->wait.on = false;
      timer_stop(l->rtimer);
      next_acceptor(l);
      continue;
    }
    l->ready--;
    sock_t *c = sock_new(l->kind);
    if (c == NULL) {
      wait_fail(l, A.enomem);
      return;
    }
    int err = uv_accept(&l->u.st, &c->u.st);
    if (err) {
      sock_close(c, A.closed);
      continue;
    }
    c->connected = true;
    mb_socket_opts_t o = l->inherit;
    apply_opts(c, &o);
    mb_pid_t owner = l->wait.caller;
    if (!sock_adopt(c, owner)) {
      wait_fail(l, A.closed);
      return;
    }
    if (l->tls_ctx != NULL) {
      /* The acceptor's answer comes when the handshake is done. */
      const char *why = NULL;
      c->tls = mb__tls_new(l->tls_ctx, true, &l->tls_conf, NULL, &why);
      if (c->tls == NULL) {
        sock_close(c, A.enomem);
        wait_fail(l, A.enomem);
        return;
      }
      c->handshaking = true;
      wait_set(c, owner, l->wait.ref, 0);
      l->wait.on = false;
      timer_stop(l->rtimer);
      timer_start(c, &c->rtimer, l->hs_timeout, on_wait_timeout);
      step_handshake(c);
      if (l->closing)
        return;
      next_acceptor(l);
      continue;
    }
    mb_msg_t *v = value_sock(c->id);
    if (v == NULL) {
      sock_close(c, A.enomem);
      wait_fail(l, A.enomem);
      return;
    }
    wait_done(l, v);
    deliver(c);
    next_acceptor(l);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  sock_t *l = server->data;
  if (status < 0) {
    mb_log(MB_LOG_WARNING, "socket: accept failed: %s", uv_strerror(status));
    return;
  }
  l->ready++;
  serve_accept(l);
}

/* Bind s to the request's path, or to its address and port. */
static int bind_to(sock_t *s, req_t *r) {
  if (s->kind == K_PIPE)
    return uv_pipe_bind(&s->u.pipe, r->path);
  const char *ip = r->ip[0] ? r->ip : r->opts.ipv6 ? "::" : "0.0.0.0";
  struct sockaddr_storage sa;
  if (!parse_ip(ip, r->port, &sa))
    return UV_EINVAL;
  if (s->kind == K_UDP)
    return uv_udp_bind(&s->u.udp, (struct sockaddr *)&sa,
                       (r->opts.set & MB_SOCKOPT_REUSEADDR) && r->opts.reuseaddr
                           ? UV_UDP_REUSEADDR
                           : 0);
  return uv_tcp_bind(&s->u.tcp, (struct sockaddr *)&sa, 0);
}

static void do_listen(req_t *r) {
  sock_t *s = sock_new(r->path[0] ? K_PIPE : K_TCP);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  apply_opts(s, &r->opts);
  s->inherit = r->opts;
  s->inherit.ip = NULL;
  if (!sock_adopt(s, r->caller)) {
    answer_error(r->caller, r->ref, A.closed);
    return;
  }
  if (r->opts.tls) {
    const char *why = NULL;
    tls_conf_of(r, &s->tls_conf, true);
    s->tls_conf.certfile = s->tls_conf.keyfile = s->tls_conf.cacertfile =
        s->tls_conf.server_name = s->tls_conf.alpn = NULL;
    mb__tls_config_t c;
    tls_conf_of(r, &c, true);
    s->tls_ctx = mb__tls_context(&c, true, &why);
    if (s->tls_ctx == NULL) {
      sock_close(s, A.closed);
      answer_error(r->caller, r->ref, atom_of(why) ? atom_of(why) : A.enomem);
      return;
    }
    s->hs_timeout =
        r->opts.handshake_timeout > 0 ? r->opts.handshake_timeout : 15000;
  }
  int err = bind_to(s, r);
  if (err == 0)
    err = uv_listen(&s->u.st, s->backlog, on_connection);
  if (err) {
    sock_close(s, A.closed);
    answer_error(r->caller, r->ref, uv_reason(err));
    return;
  }
  s->listening = true;
  s->connected = false;
  apply_buffers(s);
  mb_msg_t *v = value_sock(s->id);
  if (v == NULL) {
    sock_close(s, A.enomem);
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  answer(r->caller, r->ref, A.ok, v);
}

static void do_accept(req_t *r) {
  sock_t *l = lookup(r->sock);
  if (l == NULL || !l->listening) {
    answer_error(r->caller, r->ref, l == NULL ? A.closed : A.einval);
    return;
  }
  if (l->wait.on) {
    queue_accept(l, r);
    return;
  }
  wait_set(l, r->caller, r->ref, 0);
  if (r->timeout >= 0)
    timer_start(l, &l->rtimer, r->timeout, on_wait_timeout);
  serve_accept(l);
}

/* ---- sending ---- */

/* Where sends go: the socket, or a port's program's input. */
static uv_stream_t *out_stream(sock_t *s) {
  return s->kind == K_PORT ? (uv_stream_t *)&s->port->in : &s->u.st;
}

static void on_send_timeout(uv_timer_t *t) {
  sock_t *s = t->data;
  /* The peer has taken nothing for send_timeout: the writes waiting
   * answer timeout, and the socket closes (send_timeout_close). */
  if (s->active != MB_ACTIVE_FALSE)
    notify(s, A.tcp_closed, NULL, 0, NULL);
  sock_close(s, A.timeout);
}

static void on_write(uv_write_t *w, int status) {
  wreq_t *q = (wreq_t *)w;
  sock_t *s = w->handle->data;
  if (q->caller == 0)
    ; /* the socket's own bytes: nobody waits */
  else if (status == 0)
    answer(q->caller, q->ref, A.ok, NULL);
  else
    answer_error(q->caller, q->ref,
                 status == UV_ECANCELED && s->close_reason ? s->close_reason
                                                           : uv_reason(status));
  free(q);
  if (s->wtimer != NULL && !s->closing) {
    if (uv_stream_get_write_queue_size(out_stream(s)) == 0)
      uv_timer_stop(s->wtimer);
    else
      uv_timer_again(s->wtimer);
  }
}

/* The header of a length-prefixed packet, or -1 if len does not fit. */
static int put_header(int packet, size_t len, unsigned char *hdr) {
  if (packet != MB_PACKET_1 && packet != MB_PACKET_2 && packet != MB_PACKET_4)
    return 0;
  if (packet < 4 && len >> (8 * packet) != 0)
    return -1;
  if (packet == 4 && len > 0xffffffffu)
    return -1;
  for (int i = 0; i < packet; i++)
    hdr[i] = (unsigned char)(len >> (8 * (packet - 1 - i)));
  return packet;
}

/* Send bufs (total bytes): what the kernel takes at once, then the rest
 * through libuv's queue.  The caller gets its answer when all is sent
 * (caller 0: bytes the socket sends for itself, such as TLS records). */
static void transmit(sock_t *s, mb_pid_t caller, uint64_t ref, uv_buf_t *bufs,
                     unsigned nbufs, size_t total) {
  int wrote = uv_try_write(out_stream(s), bufs, nbufs);
  if (wrote < 0 && wrote != UV_EAGAIN) {
    if (caller)
      answer_error(caller, ref, uv_reason(wrote));
    return;
  }
  size_t done = wrote > 0 ? (size_t)wrote : 0;
  if (done == total) {
    if (caller)
      answer(caller, ref, A.ok, NULL);
    return;
  }
  /* The rest waits in libuv's queue; the sender waits for its answer. */
  wreq_t *q = malloc(sizeof *q + (total - done));
  if (q == NULL) {
    if (caller)
      answer_error(caller, ref, A.enomem);
    return;
  }
  q->caller = caller;
  q->ref = ref;
  size_t k = 0, at = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    for (size_t j = 0; j < bufs[i].len; j++, at++)
      if (at >= done)
        q->data[k++] = (unsigned char)bufs[i].base[j];
  }
  uv_buf_t rest = uv_buf_init((char *)q->data, (unsigned)k);
  int err = uv_write(&q->w, out_stream(s), &rest, 1, on_write);
  if (err) {
    free(q);
    if (caller)
      answer_error(caller, ref, uv_reason(err));
    return;
  }
  if (s->send_timeout > 0 &&
      (s->wtimer == NULL || !uv_is_active((uv_handle_t *)s->wtimer)))
    timer_start(s, &s->wtimer, s->send_timeout, on_send_timeout);
  if (s->wtimer != NULL)
    uv_timer_set_repeat(s->wtimer, (uint64_t)s->send_timeout);
}

/* Send what OpenSSL has for the network (records, alerts, handshake). */
static void flush_tls(sock_t *s, mb_pid_t caller, uint64_t ref) {
  size_t n = mb__tls_pending(s->tls);
  if (n == 0) {
    if (caller)
      answer(caller, ref, A.ok, NULL);
    return;
  }
  unsigned char *p = malloc(n);
  if (p == NULL) {
    if (caller)
      answer_error(caller, ref, A.enomem);
    return;
  }
  size_t got = mb__tls_take(s->tls, p, n);
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)got);
  transmit(s, caller, ref, &b, 1, got);
  free(p);
}

static void do_send(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s != NULL && !from_owner(s, r))
    return;
  if (s == NULL || !s->connected || s->kind == K_UDP || s->handshaking) {
    answer_error(r->caller, r->ref,
                 s == NULL      ? A.closed
                 : s->connected ? A.einval
                                : A.enotconn);
    return;
  }
  unsigned char hdr[4];
  int h = put_header(s->packet, r->len, hdr);
  if (h < 0) {
    answer_error(r->caller, r->ref, A.emsgsize);
    return;
  }
  if (s->tls != NULL) {
    if (mb__tls_write(s->tls, hdr, (size_t)h) != 0 ||
        mb__tls_write(s->tls, r->data, r->len) != 0) {
      answer_error(r->caller, r->ref, A.closed);
      return;
    }
    flush_tls(s, r->caller, r->ref);
    return;
  }
  uv_buf_t bufs[2] = {uv_buf_init((char *)hdr, (unsigned)h),
                      uv_buf_init((char *)r->data, (unsigned)r->len)};
  transmit(s, r->caller, r->ref, bufs + (h == 0), h == 0 ? 1 : 2,
           (size_t)h + r->len);
}

/* ---- the other requests ---- */

static void do_recv(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s == NULL || !s->connected) {
    answer_error(r->caller, r->ref, s == NULL ? A.closed : A.enotconn);
    return;
  }
  if (s->active != MB_ACTIVE_FALSE) {
    answer_error(r->caller, r->ref, A.einval);
    return;
  }
  if (s->wait.on) {
    answer_error(r->caller, r->ref, A.ealready);
    return;
  }
  wait_set(s, r->caller, r->ref, r->n);
  if (r->timeout >= 0)
    timer_start(s, &s->rtimer, r->timeout, on_wait_timeout);
  deliver(s);
}

static void do_setopts(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.closed);
    return;
  }
  if ((r->opts.set & MB_SOCKOPT_ACTIVE) && r->opts.active != 0 && s->wait.on &&
      !s->listening) {
    answer_error(r->caller, r->ref, A.einval); /* a recv is waiting */
    return;
  }
  apply_opts(s, &r->opts);
  unhold(s);
  answer(r->caller, r->ref, A.ok, NULL);
  if (s->connected)
    deliver(s);
}

static void do_owner(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.closed);
    return;
  }
  if (!from_owner(s, r))
    return;
  if (s->owner != r->caller) {
    answer_error(r->caller, r->ref, A.not_owner);
    return;
  }
  owner_unlink(s);
  /* A message to the port hands it over at once, with no messages of the
   * old owner's to pass on first (as Erlang's port_connect). */
  if (r->ref != MB_SOCKET_MESSAGE)
    hold(s, r->caller);
  if (sock_adopt(s, r->to)) {
    update_reading(s);
    if (r->ref == MB_SOCKET_MESSAGE) {
      port_reply(s->id, r->caller, A.connected);
      if (s->connected)
        deliver(s);
    }
    answer(r->caller, r->ref, A.ok, NULL);
  } else {
    answer_error(r->caller, r->ref, A.closed);
  }
}

static void do_close(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s != NULL && !from_owner(s, r))
    return;
  if (s != NULL)
    sock_close(s, A.closed);
  if (s != NULL && r->ref == MB_SOCKET_MESSAGE)
    port_reply(r->sock, r->caller, A.closed);
  answer(r->caller, r->ref, A.ok, NULL);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  sreq_t *q = (sreq_t *)req;
  if (status == 0)
    answer(q->caller, q->ref, A.ok, NULL);
  else
    answer_error(q->caller, q->ref, uv_reason(status));
  free(q);
}

static void do_shutdown(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s == NULL || !s->connected || s->kind == K_UDP) {
    answer_error(r->caller, r->ref,
                 s == NULL      ? A.closed
                 : s->connected ? A.einval
                                : A.enotconn);
    return;
  }
  if (r->how == 0) { /* read: nothing more is wanted from the peer */
    s->eof = true;
    answer(r->caller, r->ref, A.ok, NULL);
    deliver(s);
    return;
  }
  sreq_t *q = malloc(sizeof *q);
  if (q == NULL) {
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  q->caller = r->caller;
  q->ref = r->ref;
  int err = uv_shutdown(&q->r, out_stream(s), on_shutdown);
  if (err) {
    free(q);
    answer_error(r->caller, r->ref, uv_reason(err));
  }
}

/* An address as text and its port. */
static void addr_text(const struct sockaddr_storage *sa, char *ip, size_t len,
                      int *port) {
  if (sa->ss_family == AF_INET6) {
    uv_ip6_name((const struct sockaddr_in6 *)sa, ip, len);
    *port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  } else {
    uv_ip4_name((const struct sockaddr_in *)sa, ip, len);
    *port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
  }
}

/* {Address, Port}, or {Address, Port, Data} when data is given. */
static mb_msg_t *value_addr(const char *ip, int port, const void *data,
                            size_t len) {
  unsigned n = data ? 3 : 2;
  mb_msg_t *v = mb__tuple_new(n);
  if (v != NULL)
    v = finish(v, n,
               mb__tuple_str(&v, ip, strlen(ip)) || mb__tuple_int(&v, port) ||
                   (data && mb__tuple_str(&v, data, len)));
  return v;
}

static int name_of(sock_t *s, int peer, char *ip, size_t iplen, int *port) {
  *port = 0;
  if (s->kind == K_PIPE) {
    size_t n = iplen;
    return peer ? uv_pipe_getpeername(&s->u.pipe, ip, &n)
                : uv_pipe_getsockname(&s->u.pipe, ip, &n);
  }
  struct sockaddr_storage sa;
  int len = sizeof sa, err;
  if (s->kind == K_UDP)
    err = peer ? UV_ENOTCONN
               : uv_udp_getsockname(&s->u.udp, (struct sockaddr *)&sa, &len);
  else
    err = peer ? uv_tcp_getpeername(&s->u.tcp, (struct sockaddr *)&sa, &len)
               : uv_tcp_getsockname(&s->u.tcp, (struct sockaddr *)&sa, &len);
  if (err == 0)
    addr_text(&sa, ip, iplen, port);
  return err;
}

static void do_name(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.closed);
    return;
  }
  if (r->how >= 2) {
    char text[512];
    int e = s->tls == NULL ? MB_EINVAL
            : r->how == 2  ? mb__tls_alpn(s->tls, text, sizeof text)
                           : mb__tls_peer(s->tls, text, sizeof text);
    mb_msg_t *v = e ? NULL : value_str(text, strlen(text));
    if (v != NULL)
      answer(r->caller, r->ref, A.ok, v);
    else
      answer_error(r->caller, r->ref, e == MB_EINVAL ? A.einval : A.not_found);
    return;
  }
  char ip[MB_SOCKET_PATH_MAX + 1];
  int port;
  int err = name_of(s, r->how, ip, sizeof ip, &port);
  if (err) {
    answer_error(r->caller, r->ref, uv_reason(err));
    return;
  }
  mb_msg_t *v = value_addr(ip, port, NULL, 0);
  if (v == NULL)
    answer_error(r->caller, r->ref, A.enomem);
  else
    answer(r->caller, r->ref, A.ok, v);
}

/* ---- UDP ---- */

static void on_datagram(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  sock_t *s = h->data;
  (void)buf;
  (void)flags;
  if (nread < 0) {
    mb_log(MB_LOG_WARNING, "socket: UDP receive failed: %s",
           uv_strerror((int)nread));
    return;
  }
  if (addr == NULL)
    return; /* nothing more to read now */
  char ip[64];
  int port;
  addr_text((const struct sockaddr_storage *)addr, ip, sizeof ip, &port);
  if (s->active != MB_ACTIVE_FALSE) {
    mb_msg_t *m = mb__tuple_new(5);
    if (m != NULL)
      m = finish(m, 5,
                 mb__tuple_atom(&m, A.udp) || mb__tuple_ref(&m, s->id) ||
                     mb__tuple_str(&m, ip, strlen(ip)) ||
                     mb__tuple_int(&m, port) ||
                     mb__tuple_str(&m, rbuf, (size_t)nread));
    if (m != NULL)
      mb_proc_send(s->owner, m);
    spend_active(s);
  } else if (s->wait.on) {
    mb_msg_t *v = value_addr(ip, port, rbuf, (size_t)nread);
    if (v == NULL)
      wait_fail(s, A.enomem);
    else
      wait_done(s, v);
  }
  update_reading(s);
}

/* IPv4 multicast settings of a bound UDP socket, as inet's add_membership,
 * multicast_if, multicast_ttl and multicast_loop. */
static int apply_multicast(sock_t *s, const mb_socket_opts_t *o) {
  char group[INET_ADDRSTRLEN], iface[INET_ADDRSTRLEN];
  int err = 0;
  if (o->multicast_if != 0) {
    inet_ntop(AF_INET, &o->multicast_if, iface, sizeof iface);
    err = uv_udp_set_multicast_interface(&s->u.udp, iface);
  }
  if (err == 0 && o->multicast_group != 0) {
    inet_ntop(AF_INET, &o->multicast_group, group, sizeof group);
    inet_ntop(AF_INET, &o->membership_if, iface, sizeof iface);
    err = uv_udp_set_membership(&s->u.udp, group,
                                o->membership_if ? iface : NULL, UV_JOIN_GROUP);
  }
  if (err == 0 && (o->set & MB_SOCKOPT_MULTICAST_TTL))
    err = uv_udp_set_multicast_ttl(&s->u.udp, o->multicast_ttl);
  if (err == 0 && (o->set & MB_SOCKOPT_MULTICAST_LOOP))
    err = uv_udp_set_multicast_loop(&s->u.udp, o->multicast_loop);
  return err;
}

static void do_udp_open(req_t *r) {
  sock_t *s = sock_new(K_UDP);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  apply_opts(s, &r->opts);
  if (!sock_adopt(s, r->caller)) {
    answer_error(r->caller, r->ref, A.closed);
    return;
  }
  int err = bind_to(s, r);
  mb_msg_t *v = err ? NULL : value_sock(s->id);
  if (v == NULL) {
    sock_close(s, A.closed);
    answer_error(r->caller, r->ref, err ? uv_reason(err) : A.enomem);
    return;
  }
  s->connected = true; /* ready: sends and receives need no peer */
  apply_buffers(s);
  err = apply_multicast(s, &r->opts);
  if (err) {
    mb_msg_free(v);
    sock_close(s, A.closed);
    answer_error(r->caller, r->ref, uv_reason(err));
    return;
  }
  answer(r->caller, r->ref, A.ok, v);
  update_reading(s);
}

typedef struct {
  uv_udp_send_t r;
  mb_pid_t caller;
  uint64_t ref;
  unsigned char data[];
} ureq_t;

static void on_udp_sent(uv_udp_send_t *req, int status) {
  ureq_t *q = (ureq_t *)req;
  if (status == 0)
    answer(q->caller, q->ref, A.ok, NULL);
  else
    answer_error(q->caller, q->ref, uv_reason(status));
  free(q);
}

static void udp_send_to(sock_t *s, const req_t *r, const struct sockaddr *sa) {
  uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
  int sent = uv_udp_try_send(&s->u.udp, &b, 1, sa);
  if (sent >= 0) {
    answer(r->caller, r->ref, A.ok, NULL);
    return;
  }
  if (sent != UV_EAGAIN) {
    answer_error(r->caller, r->ref, uv_reason(sent));
    return;
  }
  ureq_t *q = malloc(sizeof *q + r->len);
  if (q == NULL) {
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  q->caller = r->caller;
  q->ref = r->ref;
  memcpy(q->data, r->data, r->len);
  b = uv_buf_init((char *)q->data, (unsigned)r->len);
  int err = uv_udp_send(&q->r, &s->u.udp, &b, 1, sa, on_udp_sent);
  if (err) {
    free(q);
    answer_error(r->caller, r->ref, uv_reason(err));
  }
}

/* A datagram for a host name, waiting for the name on libuv's thread
 * pool: the request is kept until then. */
typedef struct {
  uv_getaddrinfo_t g;
  req_t *r;
} udp_gai_t;

static void on_udp_resolved(uv_getaddrinfo_t *g, int status,
                            struct addrinfo *res) {
  udp_gai_t *u = (udp_gai_t *)g;
  req_t *r = u->r;
  sock_t *s = lookup(r->sock);
  if (s == NULL) {
    answer_error(r->caller, r->ref, A.closed);
  } else if (status < 0 || res == NULL) {
    answer_error(r->caller, r->ref, A.nxdomain);
  } else {
    struct sockaddr_storage sa;
    memcpy(&sa, res->ai_addr, res->ai_addrlen);
    if (sa.ss_family == AF_INET6)
      ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)r->port);
    else
      ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)r->port);
    udp_send_to(s, r, (struct sockaddr *)&sa);
  }
  uv_freeaddrinfo(res);
  free(r);
  free(u);
}

/* Resolve the request's host in the socket's address family, then send. */
static void udp_resolve(sock_t *s, const req_t *r) {
  udp_gai_t *u = malloc(sizeof *u);
  req_t *copy = malloc(sizeof *r + r->len + 1);
  if (u == NULL || copy == NULL) {
    free(u);
    free(copy);
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  memcpy(copy, r, sizeof *r + r->len + 1);
  u->r = copy;
  struct sockaddr_storage own;
  int len = sizeof own;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family =
      uv_udp_getsockname(&s->u.udp, (struct sockaddr *)&own, &len) == 0 &&
              own.ss_family == AF_INET6
          ? AF_INET6
          : AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  int err = uv_getaddrinfo(mb__loop(), &u->g, on_udp_resolved, copy->ip, NULL,
                           &hints);
  if (err) {
    free(u);
    free(copy);
    answer_error(r->caller, r->ref, A.nxdomain);
  }
}

static void do_udp_send(req_t *r) {
  sock_t *s = lookup(r->sock);
  if (s == NULL || s->kind != K_UDP) {
    answer_error(r->caller, r->ref, s == NULL ? A.closed : A.einval);
    return;
  }
  struct sockaddr_storage sa;
  if (parse_ip(r->ip, r->port, &sa))
    udp_send_to(s, r, (struct sockaddr *)&sa);
  else
    udp_resolve(s, r);
}

/* ---- ports ---- */

static void on_program_exit(uv_process_t *proc, int64_t status, int signal) {
  sock_t *s = proc->data;
  s->port->exited = true;
  s->port->status = signal ? 128 + signal : (int)status;
  if (s->closing) {
    s->port->proc_closed = true;
    uv_close((uv_handle_t *)proc, on_closed);
    return;
  }
  deliver(s);
}

/* r->data: n NUL-terminated strings, the program and its arguments. */
/* The program's environment: ours with the request's changes ("NAME=VALUE"
 * sets, "NAME" unsets), as Erlang's {env, Env}; NULL (inherit) when there
 * are none, or for want of memory.  The strings are ours and the
 * request's: only the array is to be freed. */
static char **port_env(const req_t *r, char *p) {
  extern char **environ;
  if (r->nenv == 0)
    return NULL;
  size_t n = 0;
  while (environ[n] != NULL)
    n++;
  char **env = malloc((n + r->nenv + 1) * sizeof *env);
  if (env == NULL)
    return NULL;
  memcpy(env, environ, n * sizeof *env);
  for (size_t i = 0; i < r->nenv; i++, p += strlen(p) + 1) {
    size_t name = strcspn(p, "=");
    size_t j = 0;
    while (j < n && !(strncmp(env[j], p, name) == 0 && env[j][name] == '='))
      j++;
    if (j < n)
      env[j] = env[--n]; /* unset, or set again below */
    if (p[name] == '=')
      env[n++] = p;
  }
  env[n] = NULL;
  return env;
}

static void do_port_open(req_t *r) {
  sock_t *s = sock_new(K_PORT);
  port_t *pt = calloc(1, sizeof *pt);
  if (s == NULL || pt == NULL) {
    free(pt);
    if (s != NULL)
      sock_close(s, A.enomem);
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  s->port = pt;
  uv_pipe_init(mb__loop(), &pt->in, 0);
  pt->in.data = s;
  pt->proc.data = s;
  s->handles++; /* the input pipe; the process counts once it runs */
  apply_opts(s, &r->opts);
  char *argv[r->n + 1];
  char *p = (char *)r->data;
  for (size_t i = 0; i < r->n; i++) {
    argv[i] = p;
    p += strlen(p) + 1;
  }
  argv[r->n] = NULL;
  pt->line = r->popts.line;
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&pt->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = &s->u.st;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  /* stderr_to_stdout: one pipe of our own for both of the program's
   * outputs (libuv makes a pipe per descriptor). */
  uv_file out[2] = {-1, -1};
  int err = 0;
  if (r->popts.stderr_to_stdout && (err = uv_pipe(out, 0, 0)) == 0 &&
      (err = uv_pipe_open(&s->u.pipe, out[0])) == 0) {
    out[0] = -1;
    stdio[1].flags = stdio[2].flags = UV_INHERIT_FD;
    stdio[1].data.fd = stdio[2].data.fd = out[1];
  }
  char **env = err ? NULL : port_env(r, p);
  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.file = argv[0];
  po.args = argv;
  po.env = env;
  po.exit_cb = on_program_exit;
  po.stdio = stdio;
  po.stdio_count = 3;
  po.cwd = r->path[0] ? r->path : NULL;
  if (err == 0 && r->nenv > 0 && env == NULL)
    err = UV_ENOMEM;
  if (err == 0)
    err = uv_spawn(mb__loop(), &pt->proc, &po);
  free(env);
  for (int i = 0; i < 2; i++)
    if (out[i] >= 0)
      close(out[i]);
  if (err) {
    /* libuv wants the handle closed even when the spawn failed. */
    s->handles++;
    pt->proc_closed = true;
    uv_close((uv_handle_t *)&pt->proc, on_closed);
    pt->exited = true;
    sock_close(s, A.closed);
    answer_error(r->caller, r->ref, uv_reason(err));
    return;
  }
  s->handles++;
  s->connected = true;
  if (!sock_adopt(s, r->caller)) {
    answer_error(r->caller, r->ref, A.closed);
    return;
  }
  mb_msg_t *v = value_sock(s->id);
  if (v == NULL) {
    sock_close(s, A.enomem);
    answer_error(r->caller, r->ref, A.enomem);
    return;
  }
  answer(r->caller, r->ref, A.ok, v);
  deliver(s);
}

static void do_owner_exit(req_t *r) {
  for (;;) {
    uv_mutex_lock(&owners_lock);
    sock_t *s = mb__map_get(&owners, r->caller);
    uv_mutex_unlock(&owners_lock);
    if (s == NULL)
      break;
    sock_close(s, A.closed);
  }
  /* It ended in the middle of a handover: the new owner takes over. */
  sock_t *h;
  while ((h = held_by(r->caller)) != NULL) {
    unhold(h);
    deliver(h);
  }
}

static void run_req(void *arg) {
  req_t *r = arg;
  switch (r->op) {
  case OP_CONNECT:
    do_connect(r);
    break;
  case OP_LISTEN:
    do_listen(r);
    break;
  case OP_ACCEPT:
    do_accept(r);
    break;
  case OP_SEND:
    do_send(r);
    break;
  case OP_RECV:
    do_recv(r);
    break;
  case OP_SETOPTS:
    do_setopts(r);
    break;
  case OP_OWNER:
    do_owner(r);
    break;
  case OP_CLOSE:
    do_close(r);
    break;
  case OP_SHUTDOWN:
    do_shutdown(r);
    break;
  case OP_NAME:
    do_name(r);
    break;
  case OP_OWNER_EXIT:
    do_owner_exit(r);
    break;
  case OP_UDP_OPEN:
    do_udp_open(r);
    break;
  case OP_UDP_SEND:
    do_udp_send(r);
    break;
  case OP_PORT_OPEN:
    do_port_open(r);
    break;
  }
  free(r);
}

/* ---- the API: requests queued for the loop ---- */

static req_t *req_new(op_t op, mb_pid_t caller, uint64_t ref, mb_socket_t sock,
                      size_t len) {
  req_t *r = calloc(1, sizeof *r + len + 1);
  if (r == NULL)
    return NULL;
  r->op = op;
  r->caller = caller;
  r->ref = ref;
  r->sock = sock;
  r->len = len;
  return r;
}

static int submit(req_t *r) {
  if (r == NULL)
    return MB_ENOMEM;
  if (!running) {
    free(r);
    return MB_ESTATE;
  }
  int err = mb__loop_call(run_req, r);
  if (err)
    free(r);
  return err;
}

static void copy_opts(req_t *r, const mb_socket_opts_t *o) {
  if (o == NULL)
    return;
  r->opts = *o;
  if (o->ip != NULL)
    snprintf(r->ip, sizeof r->ip, "%s", o->ip);
  if (o->path != NULL)
    snprintf(r->path, sizeof r->path, "%s", o->path);
  const char *tls[5] = {o->certfile, o->keyfile, o->cacertfile, o->server_name,
                        o->alpn};
  for (int i = 0; i < 5; i++)
    if (tls[i] != NULL)
      snprintf(r->tlsstr[i], sizeof r->tlsstr[i], "%s", tls[i]);
  r->opts.ip = NULL;
  r->opts.path = NULL;
  r->opts.certfile = r->opts.keyfile = r->opts.cacertfile = NULL;
  r->opts.server_name = r->opts.alpn = NULL;
}

static bool bad_path(const mb_socket_opts_t *o) {
  return o != NULL && o->path != NULL &&
         (o->path[0] == '\0' || strlen(o->path) > MB_SOCKET_PATH_MAX);
}

int mb_socket_connect(mb_pid_t caller, uint64_t ref, const char *host, int port,
                      const mb_socket_opts_t *o, long timeout_ms) {
  if (host == NULL || port < 0 || port > 65535 || bad_path(o))
    return MB_EINVAL;
  size_t len = strlen(host);
  req_t *r = req_new(OP_CONNECT, caller, ref, 0, len);
  if (r != NULL) {
    memcpy(r->data, host, len);
    copy_opts(r, o);
    r->port = port;
    r->timeout = timeout_ms;
  }
  return submit(r);
}

int mb_socket_listen(mb_pid_t caller, uint64_t ref, int port,
                     const mb_socket_opts_t *o) {
  if (port < 0 || port > 65535 || (o && o->ip && strlen(o->ip) >= 64) ||
      bad_path(o))
    return MB_EINVAL;
  req_t *r = req_new(OP_LISTEN, caller, ref, 0, 0);
  if (r != NULL) {
    copy_opts(r, o);
    r->port = port;
  }
  return submit(r);
}

int mb_socket_accept(mb_pid_t caller, uint64_t ref, mb_socket_t lsock,
                     long timeout_ms) {
  req_t *r = req_new(OP_ACCEPT, caller, ref, lsock, 0);
  if (r != NULL)
    r->timeout = timeout_ms;
  return submit(r);
}

int mb_socket_send(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                   const void *data, size_t len) {
  req_t *r = req_new(OP_SEND, caller, ref, s, len);
  if (r != NULL)
    memcpy(r->data, data, len);
  return submit(r);
}

int mb_socket_recv(mb_pid_t caller, uint64_t ref, mb_socket_t s, size_t n,
                   long timeout_ms) {
  req_t *r = req_new(OP_RECV, caller, ref, s, 0);
  if (r != NULL) {
    r->n = n;
    r->timeout = timeout_ms;
  }
  return submit(r);
}

int mb_socket_setopts(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                      const mb_socket_opts_t *o) {
  req_t *r = req_new(OP_SETOPTS, caller, ref, s, 0);
  if (r != NULL)
    copy_opts(r, o);
  return submit(r);
}

int mb_socket_controlling_process(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                                  mb_pid_t to) {
  req_t *r = req_new(OP_OWNER, caller, ref, s, 0);
  if (r != NULL)
    r->to = to;
  return submit(r);
}

int mb_socket_close(mb_pid_t caller, uint64_t ref, mb_socket_t s) {
  return submit(req_new(OP_CLOSE, caller, ref, s, 0));
}

int mb_socket_shutdown(mb_pid_t caller, uint64_t ref, mb_socket_t s, int how) {
  req_t *r = req_new(OP_SHUTDOWN, caller, ref, s, 0);
  if (r != NULL)
    r->how = how;
  return submit(r);
}

int mb_socket_name(mb_pid_t caller, uint64_t ref, mb_socket_t s, int peer) {
  req_t *r = req_new(OP_NAME, caller, ref, s, 0);
  if (r != NULL)
    r->how = peer;
  return submit(r);
}

int mb_socket_udp_open(mb_pid_t caller, uint64_t ref, int port,
                       const mb_socket_opts_t *o) {
  if (port < 0 || port > 65535 || (o && o->ip && strlen(o->ip) >= 64))
    return MB_EINVAL;
  req_t *r = req_new(OP_UDP_OPEN, caller, ref, 0, 0);
  if (r != NULL) {
    copy_opts(r, o);
    r->opts.path = NULL;
    r->path[0] = '\0';
    r->port = port;
  }
  return submit(r);
}

int mb_socket_udp_send(mb_pid_t caller, uint64_t ref, mb_socket_t s,
                       const char *ip, int port, const void *data, size_t len) {
  if (ip == NULL || ip[0] == '\0' || strlen(ip) >= 64 || port <= 0 ||
      port > 65535 || len > 65507)
    return MB_EINVAL;
  req_t *r = req_new(OP_UDP_SEND, caller, ref, s, len);
  if (r != NULL) {
    memcpy(r->data, data, len);
    snprintf(r->ip, sizeof r->ip, "%s", ip);
    r->port = port;
  }
  return submit(r);
}

int mb_port_open(mb_pid_t caller, uint64_t ref, const char *const *argv,
                 const char *cwd, const mb_port_opts_t *po,
                 const mb_socket_opts_t *o) {
  static const char *const none[] = {NULL};
  const char *const *env = po && po->env ? po->env : none;
  size_t n = 0, nenv = 0, len = 0;
  if (argv == NULL || argv[0] == NULL ||
      (cwd != NULL && strlen(cwd) > MB_SOCKET_PATH_MAX))
    return MB_EINVAL;
  for (; argv[n] != NULL; n++)
    len += strlen(argv[n]) + 1;
  for (; env[nenv] != NULL; nenv++)
    len += strlen(env[nenv]) + 1;
  if (n > 1024 || nenv > 1024)
    return MB_EINVAL;
  req_t *r = req_new(OP_PORT_OPEN, caller, ref, 0, len);
  if (r != NULL) {
    unsigned char *p = r->data;
    for (size_t i = 0; i < n + nenv; i++) {
      const char *a = i < n ? argv[i] : env[i - n];
      size_t l = strlen(a) + 1;
      memcpy(p, a, l);
      p += l;
    }
    r->n = n;
    r->nenv = nenv;
    if (po != NULL)
      r->popts = *po;
    r->popts.env = NULL;
    copy_opts(r, o);
    r->ip[0] = '\0';
    if (cwd != NULL)
      snprintf(r->path, sizeof r->path, "%s", cwd);
    else
      r->path[0] = '\0';
  }
  return submit(r);
}

void mb_socket_push(lua_State *L, mb_socket_t s) { mb__push_ref(L, s); }

int mb_socket_to(lua_State *L, int idx, mb_socket_t *out) {
  mb__lref_t *r = mb__to_ref(L, idx);
  if (r == NULL || r->node != 0 || !(r->id & SOCKET_BIT))
    return MB_EINVAL;
  *out = r->id;
  return 0;
}

/* ---- the subsystem ---- */

void mb__socket_owner_exit(mb_pid_t pid) {
  if (!running)
    return;
  uv_mutex_lock(&owners_lock);
  bool has = mb__map_get(&owners, pid) != NULL || atomic_load(&nheld) > 0;
  uv_mutex_unlock(&owners_lock);
  if (has)
    submit(req_new(OP_OWNER_EXIT, pid, 0, 0, 0));
}

int mb__socket_start(void) {
  const char *names[] = {
      "ok",           "error",         "tcp",         "tcp_closed",
      "tcp_error",    "tcp_passive",   "closed",      "timeout",
      "emsgsize",     "not_owner",     "ealready",    "einval",
      "enotconn",     "nxdomain",      "enomem",      "udp",
      "udp_passive",  "data",          "exit_status", "http",
      "http_request", "http_response", "http_error",  "ssl",
      "ssl_closed",   "ssl_error",     "ssl_passive", "not_found",
      "connected",    "eol",           "noeol"};
  const mb__atom_t **slots[] = {
      &A.ok,           &A.error,         &A.tcp,         &A.tcp_closed,
      &A.tcp_error,    &A.tcp_passive,   &A.closed,      &A.timeout,
      &A.emsgsize,     &A.not_owner,     &A.ealready,    &A.einval,
      &A.enotconn,     &A.nxdomain,      &A.enomem,      &A.udp,
      &A.udp_passive,  &A.data,          &A.exit_status, &A.http,
      &A.http_request, &A.http_response, &A.http_error,  &A.ssl,
      &A.ssl_closed,   &A.ssl_error,     &A.ssl_passive, &A.not_found,
      &A.connected,    &A.eol,           &A.noeol};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (mb__atom_intern(names[i], strlen(names[i]), slots[i]) != 0)
      return MB_ENOMEM;
  uv_mutex_init(&owners_lock);
  uv_mutex_init(&live_lock);
  uv_cond_init(&live_cond);
  mb__map_init(&table);
  mb__map_init(&owners);
  mb__map_init(&held_socks);
  atomic_store(&nheld, 0);
  nlive = 0;
  running = true;
  return 0;
}

/* At node stop nothing is left running: a port's program that has not
 * ended is killed, so that the stop does not wait for it. */
static void kill_and_close(sock_t *s) {
  if (s->port != NULL && !s->port->exited)
    uv_process_kill(&s->port->proc, SIGKILL);
  sock_close(s, A.closed);
}

static void close_all(void *arg) {
  (void)arg;
  size_t n = table.len, k = 0, i = 0;
  sock_t **all = n ? malloc(n * sizeof *all) : NULL;
  uint64_t key;
  void *val;
  while (all != NULL && mb__map_next(&table, &i, &key, &val))
    all[k++] = val;
  for (size_t j = 0; j < k; j++)
    kill_and_close(all[j]);
  free(all);
  /* Without memory for the list: one at a time, from the start. */
  while (table.len > 0) {
    i = 0;
    if (mb__map_next(&table, &i, &key, &val))
      kill_and_close(val);
  }
  /* The stopping thread frees the tables once this has run. */
  uv_mutex_lock(&live_lock);
  closed_all = true;
  uv_cond_broadcast(&live_cond);
  uv_mutex_unlock(&live_lock);
}

void mb__socket_stop(void) {
  if (!running)
    return;
  running = false;
  uv_mutex_lock(&live_lock);
  closed_all = false;
  uv_mutex_unlock(&live_lock);
  if (mb__loop_call(close_all, NULL) == 0) {
    uv_mutex_lock(&live_lock);
    while (nlive > 0 || !closed_all)
      uv_cond_wait(&live_cond, &live_lock);
    uv_mutex_unlock(&live_lock);
  }
  mb__map_free(&table);
  mb__map_free(&owners);
  mb__map_free(&held_socks);
  uv_cond_destroy(&live_cond);
  uv_mutex_destroy(&live_lock);
  uv_mutex_destroy(&owners_lock);
}
