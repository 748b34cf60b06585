/* What conn.c (the connection table and its I/O) and handshake.c (the
 * version 6 handshake) share: a connection and this node's identity.  Not
 * installed. */
#ifndef MB_DIST_CONN_H
#define MB_DIST_CONN_H

#include "dist_internal.h"

/* Capability flags (docs/distribution.md): the mandatory set, monitors by
 * pid and name, the new unlink protocol, spawn (for rpc), 32-bit pid
 * fields, exit reasons after the control tuple (EXIT_PAYLOAD); PUBLISHED
 * unless hidden.  No atom cache, no fragments: every
 * frame is a pass-through frame of self-contained terms. */
#define DFLAG_PUBLISHED 0x1ULL
#define DFLAG_MANDATORY 0x01070F94ULL
#define DFLAG_DIST_MONITOR 0x8ULL
#define DFLAG_DIST_MONITOR_NAME 0x20ULL
#define DFLAG_EXIT_PAYLOAD 0x400000ULL
#define DFLAG_UNLINK_ID 0x2000000ULL
#define DFLAG_MANDATORY_25_DIGEST 0x4000000ULL
#define DFLAG_SPAWN (1ULL << 32)
#define DFLAG_V4_NC (1ULL << 34)
#define OUR_FLAGS                                                              \
  (DFLAG_MANDATORY | DFLAG_DIST_MONITOR | DFLAG_DIST_MONITOR_NAME |            \
   DFLAG_EXIT_PAYLOAD | DFLAG_UNLINK_ID | DFLAG_MANDATORY_25_DIGEST |          \
   DFLAG_SPAWN | DFLAG_V4_NC)

typedef enum {
  C_LOOKUP,     /* asking epmd for the port */
  C_CONNECTING, /* TCP connect */
  C_HANDSHAKE,  /* messages with 2-byte lengths */
  C_UP,         /* frames with 4-byte lengths */
  C_WAITING,    /* refused ("nok") in a simultaneous connect: the socket is
                    closed, and what is queued waits for the other side's
                    connection to take it over (or the handshake timeout) */
  C_CLOSING
} conn_state_t;

typedef enum {
  H_SEND_NAME, /* acceptor: waiting for 'N' */
  H_STATUS,    /* initiator: waiting for 's' */
  H_CHALLENGE, /* initiator: waiting for 'N' challenge */
  H_REPLY,     /* acceptor: waiting for 'r' */
  H_ACK,       /* initiator: waiting for 'a' */
  H_ALIVE      /* acceptor: sent "alive", waiting for "true"/"false" */
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
  /* The peer.  An acceptor learns it only once the peer has proved the
   * cookie: until then the name it claims waits in `claimed`, not
   * interned, and the connection is in no table (nothing an
   * unauthenticated peer sends is kept). */
  const mb__atom_t *node;
  char claimed[MB_ATOM_MAXLEN + 1];
  bool initiator, tcp_open, timer_open, in_table;
  /* Acceptor: counted against the bounds on handshakes and on
   * connections per source address (conn.c); loop thread. */
  bool counted, handshaking;
  uint32_t source;  /* IPv4 address, host order, or a hash of IPv6's */
  char address[48]; /* the peer's address as text, for the log */
  /* With TLS distribution: the connection's TLS state, and whether its
   * TLS handshake is done (the distribution handshake follows inside). */
  mb__tls_t *tls;
  bool tls_up, tls_heard;
  conn_state_t state; /* under tab_lock */
  hs_state_t hs;
  uint64_t flags; /* negotiated: ours & theirs */
  uint32_t peer_creation, my_challenge, peer_challenge;
  unsigned char *rbuf;
  size_t rlen, rcap;
  /* Under tab_lock: frames waiting to be written, and the writes the
   * loop thread has in hand (taken from the queue or handed to libuv and
   * not done).  With none of either, a sender writes to the socket
   * itself (mb__dist_queue). */
  frame_t *out_head, *out_tail;
  bool flush_queued;
  int writing;
  uint64_t direct_at; /* when a sender last wrote itself (uv_hrtime) */
  int fd;             /* the socket's, once up: senders write to it */
  /* Tick bookkeeping: wrote is also set by senders writing themselves. */
  atomic_bool wrote;
  bool read_any;
  int silent_ticks;
  atomic_int refs; /* the table's, loop calls pending, open handles */
  uint64_t id;
};

/* This node as distribution sees it; set by mb_dist_start. */
typedef struct {
  bool started, hidden;
  const mb__atom_t *name; /* alive@host */
  char alive[256], host[256];
  char cookie[256];
  uint32_t creation;
  unsigned ticktime; /* seconds */
  uv_tcp_t listener;
  int port;
  /* TLS distribution: the contexts of both sides, made at start. */
  bool tls, ipv6;
  void *tls_server, *tls_client;
} mb__dist_self_t;
extern mb__dist_self_t mb__dist_self;
/* The connection table, node atom index + 1 -> conn, under tab_lock. */
extern uv_mutex_t mb__dist_tab_lock;
extern mb__map_t mb__dist_conns;

static inline uint64_t key_of(const mb__atom_t *a) {
  return (uint64_t)a->index + 1;
}

/* ---- conn.c ---- */
/* Close the connection; `why` is logged when not NULL. */
void mb__conn_close(mb__conn_t *c, const char *why);
/* The close callback of a connection's handles. */
void mb__conn_handle_closed(uv_handle_t *h);
void mb__conn_write_frames(mb__conn_t *c, frame_t *frames);
/* A handshake message: 2-byte length, then the body. */
void mb__conn_send_hs(mb__conn_t *c, const unsigned char *body, size_t len);
void mb__conn_send_status(mb__conn_t *c, const char *status);
/* The handshake succeeded: frames flow, the tick starts. */
void mb__conn_up(mb__conn_t *c);
/* The connection with the node `name` (len bytes) in the table, if any:
 * found by name, so that a name an unauthenticated peer claims needs no
 * atom.  Under mb__dist_tab_lock. */
mb__conn_t *mb__conn_find(const char *name, size_t len);
/* The peer's name for the log: the node, the claimed name, or a mark. */
const char *mb__conn_label(const mb__conn_t *c);

/* ---- handshake.c ---- */
/* alive@host, with no NUL byte: the parts go on as C strings. */
bool mb__dist_valid_name(const char *s, size_t n);
/* Initiator: the first message. */
void mb__conn_send_name(mb__conn_t *c);
/* One handshake message, by the state the connection is in. */
void mb__conn_handshake_msg(mb__conn_t *c, const unsigned char *m, size_t len);

#endif
