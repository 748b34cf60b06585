/* Distribution: this node's name, the listener, connections to other nodes,
 * framing and ticks (the Erlang distribution protocol; see the facts in
 * docs/distribution.md).  The version 6 handshake is handshake.c's; what
 * the frames carry is signal.c's business.
 *
 * Threads: sockets, timers and the handshake run on the loop thread.  Any
 * thread may queue a frame for a node (mb__dist_queue): the connection
 * table and each connection's outgoing queue are under mb__dist_tab_lock;
 * the connection is created (and dialled) on first use. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

#define HANDSHAKE_TIMEOUT_MS 7000 /* OTP's net_setuptime */
#define MAX_HANDSHAKE_MSG 1024
#define MAX_FRAME (256u << 20) /* a bigger frame closes the connection */
/* Bounds on incoming connections, so that idle or hostile sockets cannot
 * lock real peers out or use up the process's file descriptors: those
 * still in the handshake (each ends within HANDSHAKE_TIMEOUT_MS) from one
 * source address, and all connections from one source: a connection
 * beyond them is accepted and closed at once.  Beyond MAX_HANDSHAKES in
 * the handshake in all, the oldest of them is closed instead, so that
 * many sources together cannot hold a real peer out either: its
 * handshake takes a few round trips, theirs never ends. */
#define MAX_HANDSHAKES 128
#define MAX_HANDSHAKES_PER_SOURCE 16
#define MAX_CONNS_PER_SOURCE 512

mb__dist_self_t mb__dist_self;
uv_mutex_t mb__dist_tab_lock;
mb__map_t
    mb__dist_conns;  /* node atom index + 1 -> conn (under mb__dist_tab_lock) */
static bool fuzzing; /* fed by mb__dist_fuzz_feed: no socket, no dialling */
static uint64_t next_conn_id = 1;
/* Loop thread: incoming connections in the handshake, and per source
 * address (IPv4 + 1) its connections in the handshake (low 16 bits) and
 * in all (the bits above). */
static int handshakes;
static mb__map_t per_source;
/* Loop thread: the incoming connections, by id, closed at stop even
 * while in the handshake (not in the table yet). */
static mb__map_t incoming;
static uint64_t last_refusal_log;
static char last_refusal[256];

/* ---- small helpers ---- */

const mb__atom_t *mb__dist_node(void) {
  return mb__dist_self.started ? mb__dist_self.name : NULL;
}

mb_pid_t mb__dist_resolve(const mb__atom_t *name, const mb__atom_t *peer) {
  const mb__atom_t *self = mb__dist_node();
  if (self == NULL) /* only nonode@nohost is this node; no other is reachable */
    return peer == mb__atoms.nonode ? mb__registry_whereis(name) : 0;
  if (peer == self)
    return mb__registry_whereis(name);
  return mb__dist_name_key(name, peer);
}

mb__conn_t *mb__conn_find(const char *name, size_t len) {
  size_t i = 0;
  uint64_t k;
  void *v;
  while (mb__map_next(&mb__dist_conns, &i, &k, &v)) {
    mb__conn_t *c = v;
    if (c->node->len == len && memcmp(c->node->name, name, len) == 0)
      return c;
  }
  return NULL;
}

const char *mb__conn_label(const mb__conn_t *c) {
  if (c->node != NULL)
    return c->node->name;
  return c->claimed[0] != '\0' ? c->claimed : "(unknown node)";
}

/* ---- bounds on incoming connections (loop thread) ---- */

static uintptr_t source_counts(uint32_t source) {
  return (uintptr_t)mb__map_get(&per_source, (uint64_t)source + 1);
}

static void set_source_counts(uint32_t source, uintptr_t v) {
  if (v == 0)
    mb__map_del(&per_source, (uint64_t)source + 1);
  else
    mb__map_put(&per_source, (uint64_t)source + 1, (void *)v);
}

/* The incoming connection in the handshake that came first. */
static mb__conn_t *oldest_handshake(void) {
  mb__conn_t *oldest = NULL;
  size_t i = 0;
  uint64_t k;
  void *v;
  while (mb__map_next(&incoming, &i, &k, &v)) {
    mb__conn_t *c = v;
    if (c->handshaking && (oldest == NULL || c->id < oldest->id))
      oldest = c;
  }
  return oldest;
}

/* Count a new incoming connection from `source`, or say why not. */
static const char *admit(mb__conn_t *c, uint32_t source) {
  uintptr_t v = source_counts(source);
  if ((v & 0xffff) >= MAX_HANDSHAKES_PER_SOURCE)
    return "too many connections in the handshake from one address";
  if ((v >> 16) >= MAX_CONNS_PER_SOURCE)
    return "too many connections from one address";
  if (mb__map_put(&per_source, (uint64_t)source + 1,
                  (void *)(v + 1 + (1u << 16))) != 0)
    return "out of memory";
  mb__conn_t *oldest = handshakes >= MAX_HANDSHAKES ? oldest_handshake() : NULL;
  if (oldest != NULL)
    mb__conn_close(oldest,
                   "too many connections in the handshake; the oldest goes");
  handshakes++;
  mb__map_put(&incoming, c->id, c);
  c->source = source;
  c->counted = c->handshaking = true;
  return NULL;
}

/* The handshake of a counted connection ended (up, or closing). */
static void handshake_ended(mb__conn_t *c) {
  if (!c->counted || !c->handshaking)
    return;
  c->handshaking = false;
  handshakes--;
  set_source_counts(c->source, source_counts(c->source) - 1);
}

static void uncount(mb__conn_t *c) {
  mb__map_del(&incoming, c->id);
  handshake_ended(c);
  if (!c->counted)
    return;
  c->counted = false;
  set_source_counts(c->source, source_counts(c->source) - (1u << 16));
}

/* ---- connection lifetime ---- */

static void conn_ref(mb__conn_t *c) { atomic_fetch_add(&c->refs, 1); }

static void conn_unref(mb__conn_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) > 1)
    return;
  frame_t *f = c->out_head;
  while (f != NULL) {
    frame_t *next = f->next;
    free(f);
    f = next;
  }
  mb__tls_free(c->tls);
  free(c->rbuf);
  free(c);
}

void mb__conn_handle_closed(uv_handle_t *h) { conn_unref(h->data); }

static mb__conn_t *conn_new(const mb__atom_t *peer, bool initiator) {
  mb__conn_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->node = peer;
  c->initiator = initiator;
  c->fd = -1;
  atomic_init(&c->refs, 1); /* the table's, or the accept's */
  c->id = next_conn_id++;
  return c;
}

/* Close a connection (loop thread).  `why` is logged; when it was up, or
 * was the node's connection in the making, the signal layer fires
 * noconnection for everything that crossed it and nodedown for watchers.
 * One that never was the node's (an incoming attempt refused), or whose
 * place another took over before it came up, ends quietly. */
void mb__conn_close(mb__conn_t *c, const char *why) {
  bool was_up, was_current = false;
  uv_mutex_lock(&mb__dist_tab_lock);
  if (c->state == C_CLOSING) {
    uv_mutex_unlock(&mb__dist_tab_lock);
    return;
  }
  was_up = c->state == C_UP;
  c->state = C_CLOSING;
  if (c->in_table && c->node != NULL &&
      mb__map_get(&mb__dist_conns, key_of(c->node)) == c) {
    mb__map_del(&mb__dist_conns, key_of(c->node));
    c->in_table = false;
    was_current = true;
  }
  uv_mutex_unlock(&mb__dist_tab_lock);
  uncount(c);
  if (why != NULL)
    mb_log(was_up ? MB_LOG_WARNING : MB_LOG_DEBUG,
           "dist: connection to %s closed: %s", mb__conn_label(c), why);
  if (c->node != NULL && (was_up || was_current))
    mb__dist_node_down(c->node, c->id, was_up);
  if (c->timer_open) {
    c->timer_open = false;
    uv_close((uv_handle_t *)&c->timer, mb__conn_handle_closed);
  }
  if (c->tcp_open) {
    c->tcp_open = false;
    uv_close((uv_handle_t *)&c->tcp, mb__conn_handle_closed);
  }
  conn_unref(c); /* the table's reference */
}

/* ---- writing ---- */

static void write_done(uv_write_t *req, int status) {
  write_t *w = (write_t *)req;
  mb__conn_t *c = req->handle->data;
  frame_t *f = w->frames;
  while (f != NULL) {
    frame_t *next = f->next;
    free(f);
    f = next;
  }
  free(w);
  uv_mutex_lock(&mb__dist_tab_lock);
  c->writing--;
  uv_mutex_unlock(&mb__dist_tab_lock);
  if (status < 0 && c->tcp_open)
    mb__conn_close(c, uv_strerror(status));
}

/* Write a chain of frames to the socket as they are (loop thread). */
static void write_raw(mb__conn_t *c, frame_t *frames) {
  size_t n = 0;
  for (frame_t *f = frames; f; f = f->next)
    n++;
  if (n == 0)
    return;
  write_t *w = malloc(sizeof *w);
  uv_buf_t *bufs = malloc(n * sizeof *bufs);
  if (w == NULL || bufs == NULL || !c->tcp_open) {
    free(w);
    free(bufs);
    while (frames) {
      frame_t *next = frames->next;
      free(frames);
      frames = next;
    }
    return;
  }
  size_t i = 0;
  for (frame_t *f = frames; f; f = f->next)
    bufs[i++] = uv_buf_init((char *)f->data, (unsigned)f->len);
  w->frames = frames;
  uv_mutex_lock(&mb__dist_tab_lock);
  c->writing++; /* until write_done */
  uv_mutex_unlock(&mb__dist_tab_lock);
  int err =
      uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, (unsigned)n, write_done);
  free(bufs);
  if (err) {
    w->req.handle = (uv_stream_t *)&c->tcp;
    write_done(&w->req, err);
    return;
  }
  atomic_store_explicit(&c->wrote, true, memory_order_relaxed);
}

static frame_t *frame_new(size_t len) {
  frame_t *f = malloc(sizeof *f + len);
  if (f != NULL) {
    f->next = NULL;
    f->len = len;
  }
  return f;
}

static void free_frames(frame_t *f) {
  while (f != NULL) {
    frame_t *next = f->next;
    free(f);
    f = next;
  }
}

/* Send what OpenSSL has for the network. */
static void tls_flush(mb__conn_t *c) {
  size_t n = mb__tls_pending(c->tls);
  if (n == 0)
    return;
  frame_t *f = frame_new(n);
  if (f == NULL) {
    mb__conn_close(c, "out of memory");
    return;
  }
  f->len = mb__tls_take(c->tls, f->data, n);
  write_raw(c, f);
}

/* Write a chain of frames, through TLS with TLS distribution (loop
 * thread). */
void mb__conn_write_frames(mb__conn_t *c, frame_t *frames) {
  if (c->tls == NULL) {
    write_raw(c, frames);
    return;
  }
  /* Frames queued together go in one write, so that many small
   * messages share TLS records instead of taking one each. */
  size_t total = 0;
  for (frame_t *f = frames; f != NULL; f = f->next)
    total += f->len;
  unsigned char *one =
      frames && frames->next && total <= (1u << 30) ? malloc(total) : NULL;
  int err = 0;
  if (one != NULL) {
    size_t off = 0;
    for (frame_t *f = frames; f != NULL; f = f->next) {
      memcpy(one + off, f->data, f->len);
      off += f->len;
    }
    err = mb__tls_write(c->tls, one, total);
    free(one);
  } else {
    for (frame_t *f = frames; f != NULL && err == 0; f = f->next)
      err = mb__tls_write(c->tls, f->data, f->len);
  }
  free_frames(frames);
  if (err != 0)
    mb__conn_close(c, "TLS: cannot encrypt");
  else
    tls_flush(c);
}

/* Handshake messages have a 2-byte length over plain TCP, a 4-byte one
 * over TLS (OTP opens its TLS socket with {packet, 4} and keeps it). */
static size_t hs_prefix(void) { return mb__dist_self.tls ? 4 : 2; }

/* A handshake message: its length, then the body. */
void mb__conn_send_hs(mb__conn_t *c, const unsigned char *body, size_t len) {
  size_t pre = hs_prefix();
  frame_t *f = frame_new(len + pre);
  if (f == NULL)
    return;
  if (pre == 4)
    mb__put32(f->data, (uint32_t)len);
  else
    mb__put16(f->data, (uint16_t)len);
  memcpy(f->data + pre, body, len);
  mb__conn_write_frames(c, f);
}

void mb__conn_send_status(mb__conn_t *c, const char *status) {
  unsigned char buf[32];
  size_t n = strlen(status);
  buf[0] = 's';
  memcpy(buf + 1, status, n);
  mb__conn_send_hs(c, buf, n + 1);
}

/* Take what other threads queued, once the connection is up. */
static void flush(void *arg) {
  mb__conn_t *c = arg;
  uv_mutex_lock(&mb__dist_tab_lock);
  c->flush_queued = false;
  frame_t *f = NULL;
  if (c->state == C_UP) {
    f = c->out_head;
    c->out_head = c->out_tail = NULL;
  }
  c->writing++; /* the frames taken go before any later sender's */
  uv_mutex_unlock(&mb__dist_tab_lock);
  mb__conn_write_frames(c, f);
  uv_mutex_lock(&mb__dist_tab_lock);
  c->writing--;
  uv_mutex_unlock(&mb__dist_tab_lock);
  conn_unref(c);
}

/* ---- refusals ---- */

/* A refused connection is logged at most once a second for the same
 * reason, whatever the address: a flood of them must not flood the log,
 * and refusals for other reasons (a TLS peer's bad certificate) are still
 * heard. */
static void log_refusal(const char *address, const char *why) {
  uint64_t now = uv_now(mb__loop());
  if (last_refusal_log != 0 && now - last_refusal_log < 1000 &&
      strncmp(why, last_refusal, sizeof last_refusal - 1) == 0)
    return;
  last_refusal_log = now;
  snprintf(last_refusal, sizeof last_refusal, "%s", why);
  mb_log(MB_LOG_WARNING, "dist: connection from %s refused: %s", address, why);
}

/* A connection that fails before it is up for a reason its operator
 * must hear of (TLS, a node that speaks the other protocol): one warning,
 * then it closes. */
static void refuse(mb__conn_t *c, const char *why) {
  if (c->initiator)
    mb_log(MB_LOG_WARNING, "dist: connection to %s failed: %s", c->node->name,
           why);
  else
    log_refusal(c->address, why);
  mb__conn_close(c, NULL);
}

/* TLS failed: why, in the ssl application's words and OpenSSL's. */
static void refuse_tls(mb__conn_t *c, const char *stage, const char *why) {
  char text[256];
  const char *detail = mb__tls_detail(c->tls);
  snprintf(text, sizeof text, "TLS %s failed: %s%s%s%s", stage, why,
           detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
  refuse(c, text);
}

/* ---- the tick ---- */

static void tick(uv_timer_t *t) {
  mb__conn_t *c = t->data;
  if (c->state != C_UP)
    return;
  if (!c->read_any) {
    if (++c->silent_ticks >= 4) {
      mb__conn_close(c, "net_tick_timeout (the node did not answer)");
      return;
    }
  } else {
    c->silent_ticks = 0;
  }
  c->read_any = false;
  if (!atomic_exchange_explicit(&c->wrote, false, memory_order_relaxed)) {
    frame_t *f = frame_new(4);
    if (f != NULL) {
      memset(f->data, 0, 4);
      mb__conn_write_frames(c, f);
    }
    atomic_store_explicit(&c->wrote, false, memory_order_relaxed);
  }
}

static void handshake_timeout(uv_timer_t *t) {
  mb__conn_t *c = t->data;
  if (c->state == C_UP)
    return;
  if (c->tls != NULL && !c->tls_up)
    refuse(c, "TLS handshake timed out (does the node use TLS "
              "distribution?)");
  else
    mb__conn_close(c, "handshake timed out");
}

/* ---- the handshake's end: the connection is up ---- */

void mb__conn_up(mb__conn_t *c) {
  uv_os_fd_t fd = -1;
  if (c->tcp_open)
    uv_fileno((uv_handle_t *)&c->tcp, &fd);
  uv_mutex_lock(&mb__dist_tab_lock);
  c->fd = fd;
  c->state = C_UP;
  frame_t *f = c->out_head;
  c->out_head = c->out_tail = NULL;
  c->writing++; /* the frames that waited go first */
  uv_mutex_unlock(&mb__dist_tab_lock);
  handshake_ended(c);
  if (c->tcp_open) {
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_stop(&c->timer);
    uint64_t every = (uint64_t)mb__dist_self.ticktime * 1000 / 4;
    uv_timer_start(&c->timer, tick, every, every);
  }
  mb_log(MB_LOG_INFO, "dist: connected to %s%s", c->node->name,
         (c->flags & DFLAG_PUBLISHED) ? "" : " (hidden)");
  mb__dist_node_up(c->node, c);
  mb__conn_write_frames(c, f);
  uv_mutex_lock(&mb__dist_tab_lock);
  c->writing--;
  uv_mutex_unlock(&mb__dist_tab_lock);
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

/* Take whole messages out of the read buffer. */
static void consume(mb__conn_t *c) {
  size_t off = 0;
  while (c->state == C_HANDSHAKE || c->state == C_UP) {
    size_t avail = c->rlen - off;
    const unsigned char *p = c->rbuf + off;
    if (c->state == C_HANDSHAKE) {
      size_t pre = hs_prefix();
      if (avail < pre)
        break;
      if (pre == 2 && p[0] >= 0x14 && p[0] <= 0x17 && p[1] == 3) {
        /* A TLS record: no handshake message is that long. */
        refuse(c, "the node speaks TLS: it uses TLS distribution, this "
                  "node plain TCP");
        return;
      }
      size_t n = pre == 4 ? mb__get32(p) : mb__get16(p);
      if (n == 0 || n > MAX_HANDSHAKE_MSG) {
        mb__conn_close(c, "bad handshake message length");
        return;
      }
      if (avail < pre + n)
        break;
      off += pre + n;
      mb__conn_handshake_msg(c, p + pre, n);
    } else {
      if (avail < 4)
        break;
      uint32_t n = mb__get32(p);
      if (n > MAX_FRAME) {
        mb__conn_close(c, "frame too large");
        return;
      }
      if (avail < 4 + (size_t)n)
        break;
      off += 4 + (size_t)n;
      if (n > 0 && mb__dist_frame(c, c->node, p + 4, n) != 0) {
        mb__conn_close(c, "malformed distribution message");
        return;
      }
    }
  }
  if (c->state != C_HANDSHAKE && c->state != C_UP)
    return;
  memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
}

/* Room for n more bytes in the read buffer. */
static bool reserve(mb__conn_t *c, size_t n) {
  if (c->rlen + n <= c->rcap)
    return true;
  size_t cap = c->rcap ? c->rcap : 4096;
  while (cap < c->rlen + n)
    cap *= 2;
  unsigned char *nb = realloc(c->rbuf, cap);
  if (nb == NULL) {
    mb__conn_close(c, "out of memory");
    return false;
  }
  c->rbuf = nb;
  c->rcap = cap;
  return true;
}

/* The socket ended before the connection was up: where that says the
 * two nodes speak different protocols, a warning says so. */
static void closed_early(mb__conn_t *c, const char *why) {
  if (c->tls != NULL && !c->tls_up)
    refuse(c, "closed by the node in the TLS handshake (does it use TLS "
              "distribution?)");
  else if (c->tls == NULL && c->initiator && c->hs == H_STATUS)
    refuse(c, "closed by the node before the handshake's status (does it "
              "use TLS distribution?)");
  else
    mb__conn_close(c, why);
}

/* Bytes from the socket of a TLS connection: the TLS handshake, then
 * plaintext into the read buffer. */
static bool tls_input(mb__conn_t *c, const unsigned char *p, size_t n) {
  if (!c->tls_heard && n > 0 && p[0] != 0x16 && p[0] != 0x15) {
    /* Neither a handshake nor an alert record: not TLS at all. */
    refuse(c, "not TLS: the node uses plain-TCP distribution, this node "
              "TLS");
    return false;
  }
  c->tls_heard = true;
  if (mb__tls_feed(c->tls, p, n) != 0) {
    mb__conn_close(c, "out of memory");
    return false;
  }
  const char *why = NULL;
  if (!c->tls_up) {
    int r = mb__tls_handshake(c->tls, &why);
    tls_flush(c);
    if (r < 0) {
      refuse_tls(c, "handshake", why);
      return false;
    }
    if (r == 0 || c->state != C_HANDSHAKE)
      return false;
    c->tls_up = true;
    if (c->initiator)
      mb__conn_send_name(c);
  }
  for (;;) {
    size_t got = 0;
    if (!reserve(c, 16384))
      return false;
    int r =
        mb__tls_read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen, &got, &why);
    if (r == MB_ECONN) {
      closed_early(c, "closed by the node");
      return false;
    }
    if (r < 0) {
      if (c->state == C_UP)
        mb__conn_close(c, "TLS failed");
      else
        refuse_tls(c, "connection", why);
      return false;
    }
    if (got == 0)
      break;
    c->rlen += got;
  }
  tls_flush(c); /* what reading made OpenSSL answer */
  return c->state == C_HANDSHAKE || c->state == C_UP;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  mb__conn_t *c = s->data;
  if (nread < 0) {
    free(buf->base);
    if (c->state == C_HANDSHAKE)
      closed_early(c, nread == UV_EOF ? "closed by the node"
                                      : uv_strerror((int)nread));
    else
      mb__conn_close(c, nread == UV_EOF ? "closed by the node"
                                        : uv_strerror((int)nread));
    return;
  }
  c->read_any = true;
  conn_ref(c); /* a message may close the connection under consume */
  bool go;
  if (c->tls != NULL) {
    go = tls_input(c, (const unsigned char *)buf->base, (size_t)nread);
  } else {
    go = reserve(c, (size_t)nread);
    if (go) {
      memcpy(c->rbuf + c->rlen, buf->base, (size_t)nread);
      c->rlen += (size_t)nread;
    }
  }
  free(buf->base);
  if (go)
    consume(c);
  conn_unref(c);
}

/* With TLS distribution: the connection's TLS state; the initiator sends
 * its hello.  The initiator checks the certificate against the host of
 * the node's name, and sends that host as SNI, as OTP's does. */
static int start_tls(mb__conn_t *c) {
  if (!mb__dist_self.tls)
    return 0;
  mb__tls_config_t cfg = {0};
  const char *why = "enomem";
  const char *host = c->initiator ? strchr(c->node->name, '@') + 1 : NULL;
  c->tls = mb__tls_new(c->initiator ? mb__dist_self.tls_client
                                    : mb__dist_self.tls_server,
                       !c->initiator, &cfg, host, &why);
  if (c->tls == NULL)
    return MB_ENOMEM;
  if (c->initiator) {
    if (mb__tls_handshake(c->tls, &why) < 0)
      return MB_EPROTO;
    tls_flush(c);
  }
  return 0;
}

static int start_io(mb__conn_t *c) {
  c->tcp.data = c;
  c->timer.data = c;
  uv_timer_init(mb__loop(), &c->timer);
  c->timer_open = true;
  conn_ref(c);
  uv_timer_start(&c->timer, handshake_timeout, HANDSHAKE_TIMEOUT_MS, 0);
  return uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ---- incoming ---- */

/* The peer's address: as text into c->address, and as the key the
 * bounds count by: an IPv4 address in host order, or a hash of an IPv6
 * one (0 if unknown). */
static uint32_t peer_address(mb__conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  strcpy(c->address, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, c->address, sizeof c->address);
    return ntohl(a->sin_addr.s_addr);
  }
  if (ss.ss_family != AF_INET6)
    return 0;
  struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
  uv_ip6_name(a, c->address, sizeof c->address);
  uint32_t h = 2166136261u; /* FNV-1a */
  for (int i = 0; i < 16; i++)
    h = (h ^ a->sin6_addr.s6_addr[i]) * 16777619u;
  return h;
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  mb__conn_t *c = conn_new(NULL, false);
  if (c == NULL)
    return;
  uv_tcp_init(mb__loop(), &c->tcp);
  c->tcp.data = c;
  c->tcp_open = true;
  conn_ref(c);
  c->state = C_HANDSHAKE;
  c->hs = H_SEND_NAME;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    mb__conn_close(c, "accept failed");
    return;
  }
  uint32_t source = peer_address(c);
  const char *refused = admit(c, source);
  if (refused != NULL) {
    log_refusal(c->address, refused);
    mb__conn_close(c, NULL);
  } else if (start_io(c) != 0 || start_tls(c) != 0) {
    mb__conn_close(c, "accept failed");
  }
}

/* ---- dialling ---- */

static void on_connected(uv_connect_t *req, int status) {
  mb__conn_t *c = req->data;
  if (c->state == C_CLOSING) {
    conn_unref(c);
    return;
  }
  if (status < 0) {
    mb__conn_close(c, uv_strerror(status));
    conn_unref(c);
    return;
  }
  uv_mutex_lock(&mb__dist_tab_lock);
  c->state = C_HANDSHAKE;
  uv_mutex_unlock(&mb__dist_tab_lock);
  c->hs = H_STATUS;
  if (start_io(c) != 0) {
    mb__conn_close(c, "cannot read");
  } else if (mb__dist_self.tls) {
    if (start_tls(c) != 0)
      mb__conn_close(c, "TLS: cannot start");
  } else {
    mb__conn_send_name(c);
  }
  conn_unref(c);
}

typedef struct {
  uv_getaddrinfo_t req;
  mb__conn_t *c;
  int port;
} resolve_t;

static void connect_to(mb__conn_t *c, const struct sockaddr *addr);
static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res);

static void on_port(int err, int port, void *arg) {
  mb__conn_t *c = arg;
  if (c->state == C_CLOSING) {
    conn_unref(c);
    return;
  }
  if (err) {
    mb__conn_close(c, err == MB_ENOTFOUND ? "not registered with epmd"
                                          : mb_strerror(err));
    conn_unref(c);
    return;
  }
  const char *host = strchr(c->node->name, '@') + 1;
  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
    /* A host name: resolve it, then connect (the reference goes along). */
    resolve_t *r = malloc(sizeof *r);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = mb__dist_self.ipv6 ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (r == NULL) {
      mb__conn_close(c, "out of memory");
      conn_unref(c);
      return;
    }
    r->c = c;
    r->port = port;
    r->req.data = r;
    if (uv_getaddrinfo(mb__loop(), &r->req, on_resolved, host, NULL, &hints) !=
        0) {
      free(r);
      mb__conn_close(c, "cannot resolve the host");
      conn_unref(c);
    }
    return;
  }
  connect_to(c, (struct sockaddr *)&addr);
}

static void connect_to(mb__conn_t *c, const struct sockaddr *addr) {
  uv_tcp_init(mb__loop(), &c->tcp);
  c->tcp.data = c;
  c->tcp_open = true;
  conn_ref(c);
  uv_mutex_lock(&mb__dist_tab_lock);
  c->state = C_CONNECTING;
  uv_mutex_unlock(&mb__dist_tab_lock);
  c->connect_req.data = c;
  if (uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connected) != 0) {
    mb__conn_close(c, "cannot connect");
    conn_unref(c);
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  resolve_t *r = req->data;
  mb__conn_t *c = r->c;
  if (status != 0 || res == NULL || c->state == C_CLOSING) {
    if (c->state != C_CLOSING)
      mb__conn_close(c, "cannot resolve the host");
    conn_unref(c);
  } else {
    struct sockaddr_storage addr;
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    /* sin_port and sin6_port lie at the same place */
    ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)r->port);
    connect_to(c, (struct sockaddr *)&addr);
  }
  uv_freeaddrinfo(res);
  free(r);
}

static void dial(void *arg) {
  mb__conn_t *c = arg;
  char alive[256];
  /* mb__dist_queue let only alive@host names with no NUL through. */
  const char *at = memchr(c->node->name, '@', c->node->len);
  size_t n = (size_t)(at - c->node->name);
  memcpy(alive, c->node->name, n);
  alive[n] = '\0';
  /* The reference of this call carries on into the lookup callback. */
  if (mb__epmd_lookup(at + 1, alive, on_port, c) != 0) {
    mb__conn_close(c, "epmd lookup failed");
    conn_unref(c);
  }
}

/* ---- the API for other threads ---- */

/* A sender writes to the socket itself at most once in this time; what it
 * sends sooner is queued, so that the loop thread writes a burst of
 * messages in one system call, while a message that comes alone (a
 * request, a reply) goes out at once, without a thread switch. */
#define DIRECT_GAP_NS 10000

/* Write to the connection's socket from the calling thread, without
 * blocking: the bytes written, or -1.  tab_lock held, the connection up. */
static ssize_t write_now(mb__conn_t *c, const unsigned char *data, size_t len) {
  if (c->fd < 0)
    return -1;
  ssize_t n;
  do
    n = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n > 0)
    atomic_store_explicit(&c->wrote, true, memory_order_relaxed);
  return n;
}

bool mb__dist_exit_payload(const mb__atom_t *peer) {
  if (!mb__dist_self.started)
    return false;
  uv_mutex_lock(&mb__dist_tab_lock);
  mb__conn_t *c = mb__map_get(&mb__dist_conns, key_of(peer));
  bool yes = c != NULL && c->state == C_UP && (c->flags & DFLAG_EXIT_PAYLOAD);
  uv_mutex_unlock(&mb__dist_tab_lock);
  return yes;
}

/* Queue a frame (4-byte length included) for a node, connecting on first
 * use.  Returns MB_ESTATE if distribution is off, MB_EINVAL for a name that
 * is not a node name; the frame is owned by the callee either way. */
int mb__dist_queue(const mb__atom_t *peer, unsigned char *data, size_t len) {
  if (!mb__dist_self.started)
    return MB_ESTATE;
  if (fuzzing)
    return 0;
  if (peer == mb__dist_self.name || !mb__dist_valid_name(peer->name, peer->len))
    return MB_EINVAL;
  bool dial_it = false, flush_it = false;
  uv_mutex_lock(&mb__dist_tab_lock);
  mb__conn_t *c = mb__map_get(&mb__dist_conns, key_of(peer));
  uint64_t now;
  if (c != NULL && c->state == C_UP && c->tls == NULL && c->out_head == NULL &&
      !c->flush_queued && c->writing == 0 &&
      (now = uv_hrtime()) - c->direct_at >= DIRECT_GAP_NS) {
    /* Nothing is queued or being written: write here, on the sender's
     * thread, and spare the loop thread a wake-up.  The lock keeps the
     * loop thread from starting a write meanwhile, and the connection
     * from closing. */
    c->direct_at = now;
    ssize_t n = write_now(c, data, len);
    if (n == (ssize_t)len) {
      uv_mutex_unlock(&mb__dist_tab_lock);
      return 0;
    }
    if (n > 0) { /* the rest goes the usual way, first in the queue */
      data += n;
      len -= (size_t)n;
    }
  }
  frame_t *f = frame_new(len);
  if (f == NULL) {
    uv_mutex_unlock(&mb__dist_tab_lock);
    return MB_ENOMEM;
  }
  memcpy(f->data, data, len);
  if (c == NULL) {
    c = conn_new(peer, true);
    if (c == NULL || mb__map_put(&mb__dist_conns, key_of(peer), c) != 0) {
      uv_mutex_unlock(&mb__dist_tab_lock);
      free(c);
      free(f);
      return MB_ENOMEM;
    }
    c->in_table = true;
    c->state = C_LOOKUP;
    conn_ref(c); /* for dial */
    dial_it = true;
  }
  if (c->out_tail)
    c->out_tail->next = f;
  else
    c->out_head = f;
  c->out_tail = f;
  if (c->state == C_UP && !c->flush_queued) {
    c->flush_queued = true;
    conn_ref(c); /* for flush */
    flush_it = true;
  }
  uv_mutex_unlock(&mb__dist_tab_lock);
  if (dial_it)
    mb__loop_call(dial, c);
  if (flush_it)
    mb__loop_call(flush, c);
  return 0;
}

static void disconnect(void *arg) {
  const mb__atom_t *peer = arg;
  uv_mutex_lock(&mb__dist_tab_lock);
  mb__conn_t *c = mb__map_get(&mb__dist_conns, key_of(peer));
  uv_mutex_unlock(&mb__dist_tab_lock);
  if (c != NULL)
    mb__conn_close(c, "disconnected");
}

int mb__dist_disconnect(const mb__atom_t *peer) {
  return mb__loop_call(disconnect, (void *)peer);
}

/* The nodes connected now: mode 0 visible, 1 all, 2 hidden only. */
int mb__dist_nodes(const mb__atom_t **out, int max, int mode) {
  int n = 0;
  uv_mutex_lock(&mb__dist_tab_lock);
  size_t i = 0;
  uint64_t k;
  void *v;
  while (n < max && mb__map_next(&mb__dist_conns, &i, &k, &v)) {
    mb__conn_t *c = v;
    bool visible = (c->flags & DFLAG_PUBLISHED) != 0;
    if (c->state == C_UP && (mode == 1 || (mode == 0) == visible))
      out[n++] = c->node;
  }
  uv_mutex_unlock(&mb__dist_tab_lock);
  return n;
}

bool mb__dist_connected(const mb__atom_t *peer) {
  uv_mutex_lock(&mb__dist_tab_lock);
  mb__conn_t *c = mb__map_get(&mb__dist_conns, key_of(peer));
  bool up = c != NULL && c->state == C_UP;
  uv_mutex_unlock(&mb__dist_tab_lock);
  return up;
}

/* ---- starting ---- */

/* A caller's thread waiting for work it handed to the loop thread. */
typedef struct {
  uv_mutex_t lock;
  uv_cond_t cond;
  bool done;
  int err;
} start_wait_t;

static void wait_done(start_wait_t *w, int err) {
  uv_mutex_lock(&w->lock);
  w->err = err;
  w->done = true;
  uv_cond_signal(&w->cond);
  uv_mutex_unlock(&w->lock);
}

/* Run fn(w) on the loop thread and wait until it calls wait_done. */
static int on_loop_and_wait(mb__loop_fn fn) {
  start_wait_t w;
  uv_mutex_init(&w.lock);
  uv_cond_init(&w.cond);
  w.done = false;
  w.err = 0;
  mb__loop_call(fn, &w);
  uv_mutex_lock(&w.lock);
  while (!w.done)
    uv_cond_wait(&w.cond, &w.lock);
  uv_mutex_unlock(&w.lock);
  uv_cond_destroy(&w.cond);
  uv_mutex_destroy(&w.lock);
  return w.err;
}

static void registered(int err, uint32_t creation, void *arg) {
  if (err == 0)
    mb__dist_self.creation = creation;
  wait_done(arg, err);
}

/* Where to listen, and on which ports: set by mb_dist_start. */
static struct sockaddr_storage listen_addr;
static int listen_min, listen_max;

/* A socket listening on listen_addr at `port`, or a libuv error
 * (UV_EADDRINUSE: taken).  Made by hand, as libuv would report a port
 * in use only at uv_listen, on a handle that could not try the next. */
static int listen_socket(int port, uv_os_sock_t *out) {
  struct sockaddr_storage a = listen_addr;
  socklen_t len = a.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in);
  ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)port);
  int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (bind(fd, (struct sockaddr *)&a, len) != 0 || listen(fd, 128) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  *out = fd;
  return 0;
}

/* Listen on the first free port of the range (OTP's listen loop). */
static int listen_in_range(void) {
  uv_os_sock_t fd = -1;
  int err = UV_EADDRINUSE;
  for (int port = listen_min; port <= listen_max && err == UV_EADDRINUSE;
       port++)
    err = listen_socket(port, &fd);
  if (err != 0)
    return err;
  err = uv_tcp_init(mb__loop(), &mb__dist_self.listener);
  if (err != 0) {
    close(fd);
    return err;
  }
  err = uv_tcp_open(&mb__dist_self.listener, fd);
  if (err != 0)
    close(fd);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&mb__dist_self.listener, 128, on_connection);
  if (err != 0)
    uv_close((uv_handle_t *)&mb__dist_self.listener, NULL);
  return err;
}

static void start_listening(void *arg) {
  start_wait_t *w = arg;
  int err = listen_in_range();
  if (err != 0) {
    char ip[64] = "?";
    uv_ip_name((struct sockaddr *)&listen_addr, ip, sizeof ip);
    mb_log(MB_LOG_ERROR, "dist: cannot listen on %s, port %d-%d: %s", ip,
           listen_min, listen_max, uv_strerror(err));
    /* libuv's codes are not ours: no port free is a limit reached. */
    err = err == UV_EADDRINUSE ? MB_ELIMIT : MB_ECONN;
  } else {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&mb__dist_self.listener, (struct sockaddr *)&ss, &len);
    mb__dist_self.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    err = mb__epmd_register(mb__dist_self.alive, mb__dist_self.port, registered,
                            w);
  }
  if (err != 0)
    registered(err, 0, w);
}

/* Where to listen: use_interface (IPv4 or IPv6) or every interface of
 * the family; the ports: the range, else `port` (0: any). */
static int listen_config(const mb_dist_config_t *cfg) {
  const char *ip = cfg->use_interface;
  if (ip == NULL || ip[0] == '\0')
    ip = cfg->ipv6 ? "::" : "0.0.0.0";
  memset(&listen_addr, 0, sizeof listen_addr);
  if (uv_ip4_addr(ip, 0, (struct sockaddr_in *)&listen_addr) != 0 &&
      uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&listen_addr) != 0) {
    mb_log(MB_LOG_ERROR, "dist: inet_dist_use_interface: not an address: %s",
           ip);
    return MB_EINVAL;
  }
  listen_min = listen_max = cfg->port;
  if (cfg->listen_min > 0) {
    listen_min = cfg->listen_min;
    listen_max = cfg->listen_max > 0 ? cfg->listen_max : cfg->listen_min;
  }
  if (listen_min < 0 || listen_max > 65535 || listen_max < listen_min) {
    mb_log(MB_LOG_ERROR, "dist: bad listen port range %d-%d", listen_min,
           listen_max);
    return MB_EINVAL;
  }
  return 0;
}

/* One side's TLS context from its options, or NULL with the reason
 * logged.  The key defaults to the certificate's file, as in ssl. */
static void *tls_side(const mb_dist_tls_opts_t *o, bool server) {
  const char *side = server ? "server" : "client";
  if (server && (o->certfile == NULL || o->certfile[0] == '\0')) {
    mb_log(MB_LOG_ERROR, "dist: TLS distribution needs the server's certfile");
    return NULL;
  }
  mb__tls_config_t c = {0};
  c.certfile = o->certfile;
  c.keyfile = o->keyfile ? o->keyfile : o->certfile;
  c.cacertfile = o->cacertfile;
  c.verify = o->verify < 0 ? !server : o->verify != 0;
  c.fail_if_no_peer_cert = o->fail_if_no_peer_cert != 0;
  const char *why = "enomem";
  void *ctx = mb__tls_context(&c, server, &why);
  if (ctx == NULL)
    mb_log(MB_LOG_ERROR, "dist: TLS distribution: the %s options: %s", side,
           why);
  return ctx;
}

static void tls_contexts_free(void) {
  mb__tls_context_free(mb__dist_self.tls_server);
  mb__tls_context_free(mb__dist_self.tls_client);
  mb__dist_self.tls_server = mb__dist_self.tls_client = NULL;
  mb__dist_self.tls = false;
}

static int tls_config(const mb_dist_config_t *cfg) {
  mb__dist_self.tls = cfg->tls != 0;
  if (!cfg->tls)
    return 0;
  mb__dist_self.tls_server = tls_side(&cfg->tls_server, true);
  mb__dist_self.tls_client = tls_side(&cfg->tls_client, false);
  if (mb__dist_self.tls_server == NULL || mb__dist_self.tls_client == NULL) {
    tls_contexts_free();
    return MB_EINVAL;
  }
  return 0;
}

int mb_dist_start(const mb_dist_config_t *cfg) {
  if (mb__dist_self.started)
    return MB_ESTATE;
  if (!mb_node_started())
    return MB_ESTATE;
  const char *name = cfg->name;
  if (name == NULL ||
      strlen(name) >= sizeof mb__dist_self.alive + sizeof mb__dist_self.host ||
      cfg->cookie == NULL || strlen(cfg->cookie) >= sizeof mb__dist_self.cookie)
    return MB_EINVAL;
  const char *at = strchr(name, '@');
  if (at == NULL || at == name || at[1] == '\0' || strchr(at + 1, '@'))
    return MB_EINVAL;
  memcpy(mb__dist_self.alive, name, (size_t)(at - name));
  mb__dist_self.alive[at - name] = '\0';
  snprintf(mb__dist_self.host, sizeof mb__dist_self.host, "%s", at + 1);
  snprintf(mb__dist_self.cookie, sizeof mb__dist_self.cookie, "%s",
           cfg->cookie);
  mb__dist_self.hidden = cfg->hidden;
  mb__dist_self.ticktime = cfg->ticktime ? cfg->ticktime : 60;
  mb__dist_self.port = cfg->port;
  if (cfg->epmd_port < 0 || cfg->epmd_port > 65535)
    return MB_EINVAL;
  mb__epmd_set_port(cfg->epmd_port);
  mb__dist_self.ipv6 = cfg->ipv6 != 0;
  mb__epmd_set_ipv6(mb__dist_self.ipv6);
  int err = listen_config(cfg);
  if (err == 0)
    err = mb__atom_intern(name, strlen(name), &mb__dist_self.name);
  if (err == 0)
    err = tls_config(cfg);
  if (err)
    return err;
  uv_mutex_init(&mb__dist_tab_lock);
  mb__map_init(&mb__dist_conns);
  mb__map_init(&per_source);
  mb__map_init(&incoming);
  err = on_loop_and_wait(start_listening);
  if (err != 0) {
    tls_contexts_free();
    return err;
  }
  mb__etf_set_local(mb__dist_self.name, mb__dist_self.creation);
  mb__dist_self.started = true;
  mb_log(MB_LOG_INFO, "dist: node %s up on port %d%s", name, mb__dist_self.port,
         mb__dist_self.tls ? " (TLS)" : "");
  return 0;
}

int mb_dist_port(void) {
  return mb__dist_self.started ? mb__dist_self.port : 0;
}

/* ---- stopping ---- */

static void close_all(void *arg) {
  start_wait_t *w = arg;
  uv_mutex_lock(&mb__dist_tab_lock);
  size_t n = mb__dist_conns.len, i = 0, k = 0;
  mb__conn_t **list = n ? malloc(n * sizeof *list) : NULL;
  uint64_t key;
  void *v;
  while (list && mb__map_next(&mb__dist_conns, &i, &key, &v))
    list[k++] = v;
  uv_mutex_unlock(&mb__dist_tab_lock);
  for (size_t j = 0; j < k; j++)
    mb__conn_close(list[j], NULL);
  free(list);
  /* Then the incoming connections still in the handshake. */
  i = 0;
  while (mb__map_next(&incoming, &i, &key, &v)) {
    mb__conn_close(v, NULL);
    i = 0; /* closing changed the map */
  }
  mb__map_free(&incoming);
  mb__map_free(&per_source);
  uv_close((uv_handle_t *)&mb__dist_self.listener, NULL);
  mb__epmd_stop();
  wait_done(w, 0);
}

void mb__dist_stop(void) {
  if (!mb__dist_self.started)
    return;
  on_loop_and_wait(close_all);
  mb__dist_self.started = false;
  tls_contexts_free();
  mb__etf_set_local(NULL, 0);
}

/* ---- fuzzing ----
 * The handshake and frame reader take bytes from a fuzzer instead of a
 * socket: a connection with no handles, in the state the first byte picks
 * (modulo 3, 0: an acceptor waiting for mb__conn_send_name, 1: an initiator
 * waiting for the status, 2: up; and 3 to 5 the same with the handshake's
 * 4-byte lengths of TLS distribution, past TLS itself), fed the rest.
 * Writes go nowhere. */

int mb__dist_fuzz_init(const char *name, const char *cookie) {
  mb_dist_config_t cfg = {0};
  const char *at = strchr(name, '@');
  if (at == NULL)
    return MB_EINVAL;
  snprintf(mb__dist_self.alive, sizeof mb__dist_self.alive, "%.*s",
           (int)(at - name), name);
  snprintf(mb__dist_self.host, sizeof mb__dist_self.host, "%s", at + 1);
  snprintf(mb__dist_self.cookie, sizeof mb__dist_self.cookie, "%s", cookie);
  mb__dist_self.ticktime = 60;
  (void)cfg;
  int err = mb__atom_intern(name, strlen(name), &mb__dist_self.name);
  if (err)
    return err;
  uv_mutex_init(&mb__dist_tab_lock);
  mb__map_init(&mb__dist_conns);
  mb__dist_self.creation = 1;
  mb__etf_set_local(mb__dist_self.name, mb__dist_self.creation);
  mb__dist_self.started = true;
  fuzzing = true;
  return 0;
}

void mb__dist_fuzz_feed(const unsigned char *data, size_t len) {
  if (len < 1)
    return;
  mb__conn_t *c = conn_new(NULL, data[0] % 3 == 1);
  if (c == NULL)
    return;
  mb__dist_self.tls = data[0] / 3 % 2 == 1;
  const mb__atom_t *peer;
  mb__atom_intern("peer@localhost", 14, &peer);
  switch (data[0] % 3) {
  case 0:
    c->state = C_HANDSHAKE;
    c->hs = H_SEND_NAME;
    break;
  case 1:
    c->node = peer;
    c->state = C_HANDSHAKE;
    c->hs = H_STATUS;
    break;
  default:
    c->node = peer;
    c->state = C_UP;
    break;
  }
  conn_ref(c); /* ours, until the end */
  c->rbuf = malloc(len);
  if (c->rbuf != NULL) {
    memcpy(c->rbuf, data + 1, len - 1);
    c->rlen = c->rcap = len - 1;
    consume(c);
  }
  mb__conn_close(c, NULL);
  conn_unref(c);
}
