/* Distribution: this node's name, the listener, connections to other nodes
 * and the version 6 handshake, framing and ticks (the Erlang distribution
 * protocol; see the facts in docs/distribution.md).  What the frames carry
 * is dist_signal.c's business.
 *
 * Threads: sockets, timers and the handshake run on the loop thread.  Any
 * thread may queue a frame for a node (mb__dist_queue): the connection
 * table and each connection's outgoing queue are under tab_lock; the
 * connection is created (and dialled) on first use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "dist_internal.h"

/* Capability flags (docs/distribution.md): the mandatory set, monitors by
 * pid and name, the new unlink protocol, spawn (for rpc), 32-bit pid
 * fields; PUBLISHED unless hidden.  No atom cache, no fragments: every
 * frame is a pass-through frame of self-contained terms. */
#define DFLAG_PUBLISHED 0x1ULL
#define DFLAG_MANDATORY 0x01070F94ULL
#define DFLAG_DIST_MONITOR 0x8ULL
#define DFLAG_DIST_MONITOR_NAME 0x20ULL
#define DFLAG_UNLINK_ID 0x2000000ULL
#define DFLAG_MANDATORY_25_DIGEST 0x4000000ULL
#define DFLAG_SPAWN (1ULL << 32)
#define DFLAG_V4_NC (1ULL << 34)
#define OUR_FLAGS                                                             \
  (DFLAG_MANDATORY | DFLAG_DIST_MONITOR | DFLAG_DIST_MONITOR_NAME |           \
   DFLAG_UNLINK_ID | DFLAG_MANDATORY_25_DIGEST | DFLAG_SPAWN | DFLAG_V4_NC)

#define HANDSHAKE_TIMEOUT_MS 7000 /* OTP's net_setuptime */
#define MAX_HANDSHAKE_MSG 1024
#define MAX_FRAME (256u << 20) /* a bigger frame closes the connection */

typedef enum {
  C_LOOKUP,      /* asking epmd for the port */
  C_CONNECTING,  /* TCP connect */
  C_HANDSHAKE,   /* messages with 2-byte lengths */
  C_UP,          /* frames with 4-byte lengths */
  C_WAITING,     /* refused ("nok") in a simultaneous connect: the socket is
                    closed, and what is queued waits for the other side's
                    connection to take it over (or the handshake timeout) */
  C_CLOSING
} conn_state_t;

typedef enum {
  H_SEND_NAME,  /* acceptor: waiting for 'N' */
  H_STATUS,     /* initiator: waiting for 's' */
  H_CHALLENGE,  /* initiator: waiting for 'N' challenge */
  H_REPLY,      /* acceptor: waiting for 'r' */
  H_ACK,        /* initiator: waiting for 'a' */
  H_ALIVE       /* acceptor: sent "alive", waiting for "true"/"false" */
} hs_state_t;

typedef struct frame_s {
  struct frame_s *next;
  size_t len;
  unsigned char data[];
} frame_t;

typedef struct write_s {
  uv_write_t req;
  frame_t *frames; /* freed when written */
} write_t;

struct mb__conn_s {
  uv_tcp_t tcp;     /* first: handle callbacks get the conn */
  uv_timer_t timer; /* handshake timeout, then the tick */
  uv_connect_t connect_req;
  const mb__atom_t *node; /* the peer; NULL until an acceptor learns it */
  bool initiator, tcp_open, timer_open, in_table;
  conn_state_t state; /* under tab_lock */
  hs_state_t hs;
  uint64_t flags; /* negotiated: ours & theirs */
  uint32_t peer_creation, my_challenge, peer_challenge;
  unsigned char *rbuf;
  size_t rlen, rcap;
  /* Under tab_lock: frames waiting to be written. */
  frame_t *out_head, *out_tail;
  bool flush_queued;
  /* Loop thread: tick bookkeeping. */
  bool wrote, read_any;
  int silent_ticks;
  atomic_int refs; /* the table's, loop calls pending, open handles */
  uint64_t id;
};

static struct {
  bool started, hidden;
  const mb__atom_t *name; /* alive@host */
  char alive[256], host[256];
  char cookie[256];
  uint32_t creation;
  unsigned ticktime; /* seconds */
  uv_tcp_t listener;
  int port;
} node;

static uv_mutex_t tab_lock;
static bool fuzzing; /* fed by mb__dist_fuzz_feed: no socket, no dialling */
static mb__map_t conns; /* node atom index + 1 -> conn (under tab_lock) */
static uint64_t next_conn_id = 1;

/* ---- small helpers ---- */

static uint64_t key_of(const mb__atom_t *a) { return (uint64_t)a->index + 1; }

/* MD5(cookie ++ decimal challenge), cookie first (dist_util:gen_digest). */
static void digest(uint32_t challenge, unsigned char out[16]) {
  char text[300];
  int n = snprintf(text, sizeof text, "%s%u", node.cookie, challenge);
  unsigned int len = 16;
  EVP_Digest(text, (size_t)n, out, &len, EVP_md5(), NULL);
}

static uint32_t random32(void) {
  uint32_t v = 0;
  if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
    v = (uint32_t)uv_hrtime() ^ (uint32_t)(uv_hrtime() >> 32);
  return v;
}

const mb__atom_t *mb__dist_node(void) { return node.started ? node.name : NULL; }

mb_pid_t mb__dist_resolve(const mb__atom_t *name, const mb__atom_t *peer) {
  const mb__atom_t *self = mb__dist_node();
  if (self == NULL || peer == self)
    return mb__registry_whereis(name);
  return mb__dist_name_key(name, peer);
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
  free(c->rbuf);
  free(c);
}

static void handle_closed(uv_handle_t *h) { conn_unref(h->data); }

static mb__conn_t *conn_new(const mb__atom_t *peer, bool initiator) {
  mb__conn_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->node = peer;
  c->initiator = initiator;
  atomic_init(&c->refs, 1); /* the table's, or the accept's */
  c->id = next_conn_id++;
  return c;
}

/* Close a connection (loop thread).  `why` is logged; when it was up, or
 * was the node's connection in the making, the signal layer fires
 * noconnection for everything that crossed it and nodedown for watchers.
 * One that never was the node's (an incoming attempt refused), or whose
 * place another took over before it came up, ends quietly. */
static void conn_close(mb__conn_t *c, const char *why) {
  bool was_up, was_current = false;
  uv_mutex_lock(&tab_lock);
  if (c->state == C_CLOSING) {
    uv_mutex_unlock(&tab_lock);
    return;
  }
  was_up = c->state == C_UP;
  c->state = C_CLOSING;
  if (c->in_table && c->node != NULL &&
      mb__map_get(&conns, key_of(c->node)) == c) {
    mb__map_del(&conns, key_of(c->node));
    c->in_table = false;
    was_current = true;
  }
  uv_mutex_unlock(&tab_lock);
  if (why != NULL)
    mb_log(was_up ? MB_LOG_WARNING : MB_LOG_DEBUG, "dist: connection to %s closed: %s",
           c->node ? c->node->name : "(unknown node)", why);
  if (c->node != NULL && (was_up || was_current))
    mb__dist_node_down(c->node, c->id, was_up);
  if (c->timer_open) {
    c->timer_open = false;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
  }
  if (c->tcp_open) {
    c->tcp_open = false;
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
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
  if (status < 0 && c->tcp_open)
    conn_close(c, uv_strerror(status));
}

/* Write a chain of frames (loop thread). */
static void write_frames(mb__conn_t *c, frame_t *frames) {
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
  int err = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, (unsigned)n, write_done);
  free(bufs);
  if (err) {
    w->req.handle = (uv_stream_t *)&c->tcp;
    write_done(&w->req, err);
    return;
  }
  c->wrote = true;
}

static frame_t *frame_new(size_t len) {
  frame_t *f = malloc(sizeof *f + len);
  if (f != NULL) {
    f->next = NULL;
    f->len = len;
  }
  return f;
}

/* A handshake message: 2-byte length, then the body. */
static void send_hs(mb__conn_t *c, const unsigned char *body, size_t len) {
  frame_t *f = frame_new(len + 2);
  if (f == NULL)
    return;
  mb__put16(f->data, (uint16_t)len);
  memcpy(f->data + 2, body, len);
  write_frames(c, f);
}

static void send_status(mb__conn_t *c, const char *status) {
  unsigned char buf[32];
  size_t n = strlen(status);
  buf[0] = 's';
  memcpy(buf + 1, status, n);
  send_hs(c, buf, n + 1);
}

/* Take what other threads queued, once the connection is up. */
static void flush(void *arg) {
  mb__conn_t *c = arg;
  uv_mutex_lock(&tab_lock);
  c->flush_queued = false;
  frame_t *f = NULL;
  if (c->state == C_UP) {
    f = c->out_head;
    c->out_head = c->out_tail = NULL;
  }
  uv_mutex_unlock(&tab_lock);
  write_frames(c, f);
  conn_unref(c);
}

/* ---- the tick ---- */

static void tick(uv_timer_t *t) {
  mb__conn_t *c = t->data;
  if (c->state != C_UP)
    return;
  if (!c->read_any) {
    if (++c->silent_ticks >= 4) {
      conn_close(c, "net_tick_timeout (the node did not answer)");
      return;
    }
  } else {
    c->silent_ticks = 0;
  }
  c->read_any = false;
  if (!c->wrote) {
    frame_t *f = frame_new(4);
    if (f != NULL) {
      memset(f->data, 0, 4);
      write_frames(c, f);
    }
  }
  c->wrote = false;
}

static void handshake_timeout(uv_timer_t *t) {
  mb__conn_t *c = t->data;
  if (c->state != C_UP)
    conn_close(c, "handshake timed out");
}

/* ---- the handshake ---- */

static void conn_up(mb__conn_t *c) {
  uv_mutex_lock(&tab_lock);
  c->state = C_UP;
  frame_t *f = c->out_head;
  c->out_head = c->out_tail = NULL;
  uv_mutex_unlock(&tab_lock);
  if (c->tcp_open) {
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_stop(&c->timer);
    uint64_t every = (uint64_t)node.ticktime * 1000 / 4;
    uv_timer_start(&c->timer, tick, every, every);
  }
  mb_log(MB_LOG_INFO, "dist: connected to %s%s", c->node->name,
         (c->flags & DFLAG_PUBLISHED) ? "" : " (hidden)");
  mb__dist_node_up(c->node, c);
  write_frames(c, f);
}

static void send_name(mb__conn_t *c) {
  unsigned char buf[600];
  size_t n = strlen(node.name->name);
  buf[0] = 'N';
  mb__put64(buf + 1, OUR_FLAGS | (node.hidden ? 0 : DFLAG_PUBLISHED));
  mb__put32(buf + 9, node.creation);
  mb__put16(buf + 13, (uint16_t)n);
  memcpy(buf + 15, node.name->name, n);
  send_hs(c, buf, 15 + n);
}

static void send_challenge(mb__conn_t *c) {
  unsigned char buf[600];
  size_t n = strlen(node.name->name);
  c->my_challenge = random32();
  buf[0] = 'N';
  mb__put64(buf + 1, OUR_FLAGS | (node.hidden ? 0 : DFLAG_PUBLISHED));
  mb__put32(buf + 9, c->my_challenge);
  mb__put32(buf + 13, node.creation);
  mb__put16(buf + 17, (uint16_t)n);
  memcpy(buf + 19, node.name->name, n);
  send_hs(c, buf, 19 + n);
}

static bool flags_ok(mb__conn_t *c, uint64_t theirs) {
  if ((theirs & DFLAG_MANDATORY) != DFLAG_MANDATORY &&
      !(theirs & DFLAG_MANDATORY_25_DIGEST)) {
    conn_close(c, "the node lacks mandatory capabilities");
    return false;
  }
  c->flags = theirs & (OUR_FLAGS | (node.hidden ? 0 : DFLAG_PUBLISHED));
  return true;
}

/* alive@host, with no NUL byte: the parts go on as C strings. */
static bool valid_name(const char *s, size_t n) {
  const char *at = memchr(s, '@', n);
  return at != NULL && at != s && at != s + n - 1 &&
         memchr(s, '\0', n) == NULL &&
         memchr(at + 1, '@', (size_t)(s + n - at - 1)) == NULL;
}

/* The accepted connection c becomes the node's connection (frames queued
 * from now on wait on it); `other`, if any, leaves the table and its
 * queued frames move to c.  Under tab_lock, in the same hold as the look
 * that found `other`: a frame queued in between would dial again.  The
 * caller then closes `other`. */
static void take_over(mb__conn_t *c, mb__conn_t *other) {
  if (other != NULL) {
    c->out_head = other->out_head;
    c->out_tail = other->out_tail;
    other->out_head = other->out_tail = NULL;
    if (other->in_table && mb__map_get(&conns, key_of(other->node)) == other)
      other->in_table = false;
  }
  mb__map_put(&conns, key_of(c->node), c);
  c->in_table = true;
}

/* Acceptor: the initiator's send_name. */
static void on_send_name(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len < 15 || m[0] != 'N') {
    conn_close(c, "bad send_name");
    return;
  }
  uint64_t theirs = mb__get64(m + 1);
  c->peer_creation = mb__get32(m + 9);
  size_t n = mb__get16(m + 13);
  if (15 + n > len || !valid_name((const char *)m + 15, n)) {
    send_status(c, "not_allowed");
    conn_close(c, "bad node name in send_name");
    return;
  }
  const mb__atom_t *peer;
  if (mb__atom_intern((const char *)m + 15, n, &peer) != 0) {
    conn_close(c, "node name too long");
    return;
  }
  c->node = peer;
  if (!flags_ok(c, theirs)) {
    send_status(c, "not_allowed");
    return;
  }
  /* Another connection with this node: simultaneous connect, or a node
   * that comes back. */
  const char *status = "ok";
  uv_mutex_lock(&tab_lock);
  mb__conn_t *other = mb__map_get(&conns, key_of(peer));
  if (other != NULL && other->state != C_UP) {
    if (strcmp(node.name->name, peer->name) > 0)
      status = "nok"; /* ours wins */
    else
      status = "ok_simultaneous";
  } else if (other != NULL) {
    status = "alive";
  }
  if (strcmp(status, "nok") != 0 && strcmp(status, "alive") != 0)
    take_over(c, other);
  uv_mutex_unlock(&tab_lock);
  send_status(c, status);
  if (strcmp(status, "nok") == 0) {
    conn_close(c, NULL);
    return;
  }
  if (strcmp(status, "alive") == 0) {
    c->hs = H_ALIVE;
    return;
  }
  if (other != NULL)
    conn_close(other, NULL);
  send_challenge(c);
  c->hs = H_REPLY;
}

static void on_alive_answer(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len >= 5 && m[0] == 's' && memcmp(m + 1, "true", 4) == 0) {
    uv_mutex_lock(&tab_lock);
    mb__conn_t *old = mb__map_get(&conns, key_of(c->node));
    if (old == c)
      old = NULL;
    take_over(c, old);
    uv_mutex_unlock(&tab_lock);
    if (old != NULL)
      conn_close(old, NULL);
    send_challenge(c);
    c->hs = H_REPLY;
    return;
  }
  conn_close(c, NULL);
}

/* Acceptor: challenge_reply. */
static void on_reply(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len != 21 || m[0] != 'r') {
    conn_close(c, "bad challenge_reply");
    return;
  }
  unsigned char want[16];
  digest(c->my_challenge, want);
  if (memcmp(want, m + 5, 16) != 0) {
    mb_log(MB_LOG_ERROR, "dist: connection attempt from %s refused: wrong cookie",
           c->node->name);
    conn_close(c, NULL);
    return;
  }
  c->peer_challenge = mb__get32(m + 1);
  unsigned char ack[17];
  ack[0] = 'a';
  digest(c->peer_challenge, ack + 1);
  send_hs(c, ack, sizeof ack);
  conn_up(c);
}

/* Initiator: status. */
static void on_status(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len < 2 || m[0] != 's') {
    conn_close(c, "bad status");
    return;
  }
  const char *s = (const char *)m + 1;
  size_t n = len - 1;
  if ((n == 2 && memcmp(s, "ok", 2) == 0) ||
      (n == 15 && memcmp(s, "ok_simultaneous", 15) == 0)) {
    c->hs = H_CHALLENGE;
  } else if (n == 5 && memcmp(s, "alive", 5) == 0) {
    send_status(c, "true");
    c->hs = H_CHALLENGE;
  } else if (n == 3 && memcmp(s, "nok", 3) == 0) {
    /* A simultaneous connect that the other side's attempt wins: it
     * takes over this entry and what is queued on it when its send_name
     * arrives (answered ok_simultaneous), within the handshake timeout. */
    uv_mutex_lock(&tab_lock);
    c->state = C_WAITING;
    uv_mutex_unlock(&tab_lock);
    if (c->tcp_open) {
      c->tcp_open = false;
      uv_close((uv_handle_t *)&c->tcp, handle_closed);
    }
  } else {
    conn_close(c, "refused by the node (not_allowed)");
  }
}

/* Initiator: the acceptor's challenge. */
static void on_challenge(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len < 19 || m[0] != 'N') {
    conn_close(c, "bad challenge");
    return;
  }
  uint64_t theirs = mb__get64(m + 1);
  c->peer_challenge = mb__get32(m + 9);
  c->peer_creation = mb__get32(m + 13);
  size_t n = mb__get16(m + 17);
  if (19 + n > len || n != c->node->len ||
      memcmp(m + 19, c->node->name, n) != 0) {
    conn_close(c, "the node answered with another name");
    return;
  }
  if (!flags_ok(c, theirs))
    return;
  unsigned char reply[21];
  reply[0] = 'r';
  c->my_challenge = random32();
  mb__put32(reply + 1, c->my_challenge);
  digest(c->peer_challenge, reply + 5);
  send_hs(c, reply, sizeof reply);
  c->hs = H_ACK;
}

/* Initiator: challenge_ack. */
static void on_ack(mb__conn_t *c, const unsigned char *m, size_t len) {
  unsigned char want[16];
  digest(c->my_challenge, want);
  if (len != 17 || m[0] != 'a' || memcmp(want, m + 1, 16) != 0) {
    mb_log(MB_LOG_ERROR, "dist: %s refused our cookie (or answered wrongly)",
           c->node->name);
    conn_close(c, NULL);
    return;
  }
  conn_up(c);
}

static void on_handshake_msg(mb__conn_t *c, const unsigned char *m, size_t len) {
  switch (c->hs) {
  case H_SEND_NAME: on_send_name(c, m, len); break;
  case H_STATUS: on_status(c, m, len); break;
  case H_CHALLENGE: on_challenge(c, m, len); break;
  case H_REPLY: on_reply(c, m, len); break;
  case H_ACK: on_ack(c, m, len); break;
  case H_ALIVE: on_alive_answer(c, m, len); break;
  }
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
      if (avail < 2)
        break;
      size_t n = mb__get16(p);
      if (n == 0 || n > MAX_HANDSHAKE_MSG) {
        conn_close(c, "bad handshake message length");
        return;
      }
      if (avail < 2 + n)
        break;
      off += 2 + n;
      on_handshake_msg(c, p + 2, n);
    } else {
      if (avail < 4)
        break;
      uint32_t n = mb__get32(p);
      if (n > MAX_FRAME) {
        conn_close(c, "frame too large");
        return;
      }
      if (avail < 4 + (size_t)n)
        break;
      off += 4 + (size_t)n;
      if (n > 0 && mb__dist_frame(c, c->node, p + 4, n) != 0) {
        conn_close(c, "malformed distribution message");
        return;
      }
    }
  }
  if (c->state != C_HANDSHAKE && c->state != C_UP)
    return;
  memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  mb__conn_t *c = s->data;
  if (nread < 0) {
    free(buf->base);
    conn_close(c, nread == UV_EOF ? "closed by the node" : uv_strerror((int)nread));
    return;
  }
  c->read_any = true;
  if (c->rlen + (size_t)nread > c->rcap) {
    size_t cap = c->rcap ? c->rcap : 4096;
    while (cap < c->rlen + (size_t)nread)
      cap *= 2;
    unsigned char *nb = realloc(c->rbuf, cap);
    if (nb == NULL) {
      free(buf->base);
      conn_close(c, "out of memory");
      return;
    }
    c->rbuf = nb;
    c->rcap = cap;
  }
  memcpy(c->rbuf + c->rlen, buf->base, (size_t)nread);
  c->rlen += (size_t)nread;
  free(buf->base);
  conn_ref(c); /* a message may close the connection under consume */
  consume(c);
  conn_unref(c);
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

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  mb__conn_t *c = conn_new(NULL, false);
  if (c == NULL)
    return;
  uv_tcp_init(mb__loop(), &c->tcp);
  c->tcp_open = true;
  conn_ref(c);
  c->state = C_HANDSHAKE;
  c->hs = H_SEND_NAME;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || start_io(c) != 0)
    conn_close(c, "accept failed");
}

/* ---- dialling ---- */

static void on_connected(uv_connect_t *req, int status) {
  mb__conn_t *c = req->data;
  if (c->state == C_CLOSING) {
    conn_unref(c);
    return;
  }
  if (status < 0) {
    conn_close(c, uv_strerror(status));
    conn_unref(c);
    return;
  }
  uv_mutex_lock(&tab_lock);
  c->state = C_HANDSHAKE;
  uv_mutex_unlock(&tab_lock);
  c->hs = H_STATUS;
  if (start_io(c) != 0) {
    conn_close(c, "cannot read");
  } else {
    send_name(c);
  }
  conn_unref(c);
}

typedef struct {
  uv_getaddrinfo_t req;
  mb__conn_t *c;
  int port;
} resolve_t;

static void connect_to(mb__conn_t *c, const struct sockaddr_in *addr);
static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

static void on_port(int err, int port, void *arg) {
  mb__conn_t *c = arg;
  if (c->state == C_CLOSING) {
    conn_unref(c);
    return;
  }
  if (err) {
    conn_close(c, err == MB_ENOTFOUND ? "not registered with epmd" : mb_strerror(err));
    conn_unref(c);
    return;
  }
  const char *host = strchr(c->node->name, '@') + 1;
  struct sockaddr_in addr;
  if (uv_ip4_addr(host, port, &addr) != 0) {
    /* A host name: resolve it, then connect (the reference goes along). */
    resolve_t *r = malloc(sizeof *r);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (r == NULL) {
      conn_close(c, "out of memory");
      conn_unref(c);
      return;
    }
    r->c = c;
    r->port = port;
    r->req.data = r;
    if (uv_getaddrinfo(mb__loop(), &r->req, on_resolved, host, NULL, &hints) != 0) {
      free(r);
      conn_close(c, "cannot resolve the host");
      conn_unref(c);
    }
    return;
  }
  connect_to(c, &addr);
}

static void connect_to(mb__conn_t *c, const struct sockaddr_in *addr) {
  uv_tcp_init(mb__loop(), &c->tcp);
  c->tcp.data = c;
  c->tcp_open = true;
  conn_ref(c);
  uv_mutex_lock(&tab_lock);
  c->state = C_CONNECTING;
  uv_mutex_unlock(&tab_lock);
  c->connect_req.data = c;
  if (uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)addr,
                     on_connected) != 0) {
    conn_close(c, "cannot connect");
    conn_unref(c);
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  resolve_t *r = req->data;
  mb__conn_t *c = r->c;
  if (status != 0 || res == NULL || c->state == C_CLOSING) {
    if (c->state != C_CLOSING)
      conn_close(c, "cannot resolve the host");
    conn_unref(c);
  } else {
    struct sockaddr_in addr = *(struct sockaddr_in *)res->ai_addr;
    addr.sin_port = htons((uint16_t)r->port);
    connect_to(c, &addr);
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
    conn_close(c, "epmd lookup failed");
    conn_unref(c);
  }
}

/* ---- the API for other threads ---- */

/* Queue a frame (4-byte length included) for a node, connecting on first
 * use.  Returns MB_ESTATE if distribution is off, MB_EINVAL for a name that
 * is not a node name; the frame is owned by the callee either way. */
int mb__dist_queue(const mb__atom_t *peer, unsigned char *data, size_t len) {
  if (!node.started)
    return MB_ESTATE;
  if (fuzzing)
    return 0;
  if (peer == node.name || !valid_name(peer->name, peer->len))
    return MB_EINVAL;
  frame_t *f = frame_new(len);
  if (f == NULL)
    return MB_ENOMEM;
  memcpy(f->data, data, len);
  bool dial_it = false, flush_it = false;
  uv_mutex_lock(&tab_lock);
  mb__conn_t *c = mb__map_get(&conns, key_of(peer));
  if (c == NULL) {
    c = conn_new(peer, true);
    if (c == NULL || mb__map_put(&conns, key_of(peer), c) != 0) {
      uv_mutex_unlock(&tab_lock);
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
  uv_mutex_unlock(&tab_lock);
  if (dial_it)
    mb__loop_call(dial, c);
  if (flush_it)
    mb__loop_call(flush, c);
  return 0;
}

static void disconnect(void *arg) {
  const mb__atom_t *peer = arg;
  uv_mutex_lock(&tab_lock);
  mb__conn_t *c = mb__map_get(&conns, key_of(peer));
  uv_mutex_unlock(&tab_lock);
  if (c != NULL)
    conn_close(c, "disconnected");
}

int mb__dist_disconnect(const mb__atom_t *peer) {
  return mb__loop_call(disconnect, (void *)peer);
}

/* The nodes connected now: mode 0 visible, 1 all, 2 hidden only. */
int mb__dist_nodes(const mb__atom_t **out, int max, int mode) {
  int n = 0;
  uv_mutex_lock(&tab_lock);
  size_t i = 0;
  uint64_t k;
  void *v;
  while (n < max && mb__map_next(&conns, &i, &k, &v)) {
    mb__conn_t *c = v;
    bool visible = (c->flags & DFLAG_PUBLISHED) != 0;
    if (c->state == C_UP && (mode == 1 || (mode == 0) == visible))
      out[n++] = c->node;
  }
  uv_mutex_unlock(&tab_lock);
  return n;
}

bool mb__dist_connected(const mb__atom_t *peer) {
  uv_mutex_lock(&tab_lock);
  mb__conn_t *c = mb__map_get(&conns, key_of(peer));
  bool up = c != NULL && c->state == C_UP;
  uv_mutex_unlock(&tab_lock);
  return up;
}

/* ---- starting ---- */

typedef struct {
  uv_mutex_t lock;
  uv_cond_t cond;
  bool done;
  int err;
} start_wait_t;

static void registered(int err, uint32_t creation, void *arg) {
  start_wait_t *w = arg;
  if (err == 0)
    node.creation = creation;
  uv_mutex_lock(&w->lock);
  w->err = err;
  w->done = true;
  uv_cond_signal(&w->cond);
  uv_mutex_unlock(&w->lock);
}

static void start_listening(void *arg) {
  start_wait_t *w = arg;
  struct sockaddr_in addr;
  uv_ip4_addr("0.0.0.0", node.port, &addr);
  int err = uv_tcp_init(mb__loop(), &node.listener);
  if (err == 0)
    err = uv_tcp_bind(&node.listener, (struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&node.listener, 128, on_connection);
  if (err == 0) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&node.listener, (struct sockaddr *)&ss, &len);
    node.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    err = mb__epmd_register(node.alive, node.port, registered, w);
  }
  if (err != 0)
    registered(err, 0, w);
}

int mb_dist_start(const mb_dist_config_t *cfg) {
  if (node.started)
    return MB_ESTATE;
  if (!mb_node_started())
    return MB_ESTATE;
  const char *name = cfg->name;
  if (name == NULL || strlen(name) >= sizeof node.alive + sizeof node.host ||
      cfg->cookie == NULL || strlen(cfg->cookie) >= sizeof node.cookie)
    return MB_EINVAL;
  const char *at = strchr(name, '@');
  if (at == NULL || at == name || at[1] == '\0' || strchr(at + 1, '@'))
    return MB_EINVAL;
  memcpy(node.alive, name, (size_t)(at - name));
  node.alive[at - name] = '\0';
  snprintf(node.host, sizeof node.host, "%s", at + 1);
  snprintf(node.cookie, sizeof node.cookie, "%s", cfg->cookie);
  node.hidden = cfg->hidden;
  node.ticktime = cfg->ticktime ? cfg->ticktime : 60;
  node.port = cfg->port;
  if (cfg->epmd_port < 0 || cfg->epmd_port > 65535)
    return MB_EINVAL;
  mb__epmd_set_port(cfg->epmd_port);
  int err = mb__atom_intern(name, strlen(name), &node.name);
  if (err)
    return err;
  uv_mutex_init(&tab_lock);
  mb__map_init(&conns);
  start_wait_t w;
  uv_mutex_init(&w.lock);
  uv_cond_init(&w.cond);
  w.done = false;
  w.err = 0;
  mb__loop_call(start_listening, &w);
  uv_mutex_lock(&w.lock);
  while (!w.done)
    uv_cond_wait(&w.cond, &w.lock);
  uv_mutex_unlock(&w.lock);
  uv_cond_destroy(&w.cond);
  uv_mutex_destroy(&w.lock);
  if (w.err != 0)
    return w.err;
  mb__etf_set_local(node.name, node.creation);
  node.started = true;
  mb_log(MB_LOG_INFO, "dist: node %s up on port %d", name, node.port);
  return 0;
}

int mb_dist_port(void) { return node.started ? node.port : 0; }

/* ---- stopping ---- */

static void close_all(void *arg) {
  start_wait_t *w = arg;
  uv_mutex_lock(&tab_lock);
  size_t n = conns.len, i = 0, k = 0;
  mb__conn_t **list = n ? malloc(n * sizeof *list) : NULL;
  uint64_t key;
  void *v;
  while (list && mb__map_next(&conns, &i, &key, &v))
    list[k++] = v;
  uv_mutex_unlock(&tab_lock);
  for (size_t j = 0; j < k; j++)
    conn_close(list[j], NULL);
  free(list);
  uv_close((uv_handle_t *)&node.listener, NULL);
  mb__epmd_stop();
  uv_mutex_lock(&w->lock);
  w->done = true;
  uv_cond_signal(&w->cond);
  uv_mutex_unlock(&w->lock);
}

void mb__dist_stop(void) {
  if (!node.started)
    return;
  start_wait_t w;
  uv_mutex_init(&w.lock);
  uv_cond_init(&w.cond);
  w.done = false;
  mb__loop_call(close_all, &w);
  uv_mutex_lock(&w.lock);
  while (!w.done)
    uv_cond_wait(&w.cond, &w.lock);
  uv_mutex_unlock(&w.lock);
  uv_cond_destroy(&w.cond);
  uv_mutex_destroy(&w.lock);
  node.started = false;
  mb__etf_set_local(NULL, 0);
}

/* ---- fuzzing ----
 * The handshake and frame reader take bytes from a fuzzer instead of a
 * socket: a connection with no handles, in the state the first byte picks
 * (0: an acceptor waiting for send_name, 1: an initiator waiting for the
 * status, 2: up), fed the rest.  Writes go nowhere. */

int mb__dist_fuzz_init(const char *name, const char *cookie) {
  mb_dist_config_t cfg = {0};
  const char *at = strchr(name, '@');
  if (at == NULL)
    return MB_EINVAL;
  snprintf(node.alive, sizeof node.alive, "%.*s", (int)(at - name), name);
  snprintf(node.host, sizeof node.host, "%s", at + 1);
  snprintf(node.cookie, sizeof node.cookie, "%s", cookie);
  node.ticktime = 60;
  (void)cfg;
  int err = mb__atom_intern(name, strlen(name), &node.name);
  if (err)
    return err;
  uv_mutex_init(&tab_lock);
  mb__map_init(&conns);
  node.creation = 1;
  mb__etf_set_local(node.name, node.creation);
  node.started = true;
  fuzzing = true;
  return 0;
}

void mb__dist_fuzz_feed(const unsigned char *data, size_t len) {
  if (len < 1)
    return;
  mb__conn_t *c = conn_new(NULL, data[0] == 1);
  if (c == NULL)
    return;
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
  conn_close(c, NULL);
  conn_unref(c);
}
