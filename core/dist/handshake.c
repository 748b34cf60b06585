/* The version 6 handshake of the Erlang distribution protocol, both sides
 * (docs/distribution.md): names and capability flags, the cookie's
 * challenge and its MD5 digest, and simultaneous connects, decided as OTP's
 * dist_util decides them.  conn.c frames the messages (2-byte lengths) and
 * calls mb__conn_handshake_msg with each; mb__conn_up hands the connection
 * back once both sides agree.  Loop thread only. */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "conn.h"

/* MD5(cookie ++ decimal challenge), cookie first (dist_util:gen_digest). */
static void digest(uint32_t challenge, unsigned char out[16]) {
  char text[300];
  int n = snprintf(text, sizeof text, "%s%u", mb__dist_self.cookie, challenge);
  unsigned int len = 16;
  EVP_Digest(text, (size_t)n, out, &len, EVP_md5(), NULL);
}

static uint32_t random32(void) {
  uint32_t v = 0;
  if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
    v = (uint32_t)uv_hrtime() ^ (uint32_t)(uv_hrtime() >> 32);
  return v;
}

void mb__conn_send_name(mb__conn_t *c) {
  unsigned char buf[600];
  size_t n = strlen(mb__dist_self.name->name);
  buf[0] = 'N';
  mb__put64(buf + 1, OUR_FLAGS | (mb__dist_self.hidden ? 0 : DFLAG_PUBLISHED));
  mb__put32(buf + 9, mb__dist_self.creation);
  mb__put16(buf + 13, (uint16_t)n);
  memcpy(buf + 15, mb__dist_self.name->name, n);
  mb__conn_send_hs(c, buf, 15 + n);
}

static void send_challenge(mb__conn_t *c) {
  unsigned char buf[600];
  size_t n = strlen(mb__dist_self.name->name);
  c->my_challenge = random32();
  buf[0] = 'N';
  mb__put64(buf + 1, OUR_FLAGS | (mb__dist_self.hidden ? 0 : DFLAG_PUBLISHED));
  mb__put32(buf + 9, c->my_challenge);
  mb__put32(buf + 13, mb__dist_self.creation);
  mb__put16(buf + 17, (uint16_t)n);
  memcpy(buf + 19, mb__dist_self.name->name, n);
  mb__conn_send_hs(c, buf, 19 + n);
}

static bool flags_ok(mb__conn_t *c, uint64_t theirs) {
  if ((theirs & DFLAG_MANDATORY) != DFLAG_MANDATORY &&
      !(theirs & DFLAG_MANDATORY_25_DIGEST)) {
    mb__conn_close(c, "the node lacks mandatory capabilities");
    return false;
  }
  c->flags =
      theirs & (OUR_FLAGS | (mb__dist_self.hidden ? 0 : DFLAG_PUBLISHED));
  return true;
}

bool mb__dist_valid_name(const char *s, size_t n) {
  const char *at = memchr(s, '@', n);
  return at != NULL && at != s && at != s + n - 1 &&
         memchr(s, '\0', n) == NULL &&
         memchr(at + 1, '@', (size_t)(s + n - at - 1)) == NULL;
}

/* The accepted connection c becomes the node's connection (frames queued
 * from now on wait on it); `other`, if any, leaves the table and its
 * queued frames move to c.  Under mb__dist_tab_lock, in the same hold as
 * the look that found `other`: a frame queued in between would dial
 * again.  The caller then closes `other`. */
static void take_over(mb__conn_t *c, mb__conn_t *other) {
  if (other != NULL) {
    c->out_head = other->out_head;
    c->out_tail = other->out_tail;
    other->out_head = other->out_tail = NULL;
    if (other->in_table &&
        mb__map_get(&mb__dist_conns, key_of(other->node)) == other)
      other->in_table = false;
  }
  mb__map_put(&mb__dist_conns, key_of(c->node), c);
  c->in_table = true;
}

/* What the acceptor answers a send_name for a node it may already have a
 * connection with: a simultaneous connect is decided by the names, as
 * OTP's dist_util decides it; a node with a live connection is asked
 * whether it is a new incarnation ("alive").  Nothing changes in the
 * table here: the peer has not proved the cookie yet. */
static const char *status_for(const char *name, size_t len) {
  const char *status = "ok";
  uv_mutex_lock(&mb__dist_tab_lock);
  mb__conn_t *other = mb__conn_find(name, len);
  if (other != NULL && other->state == C_UP)
    status = "alive";
  else if (other != NULL && other->state != C_CLOSING)
    status = strcmp(mb__dist_self.name->name, other->node->name) > 0
                 ? "nok" /* ours wins */
                 : "ok_simultaneous";
  uv_mutex_unlock(&mb__dist_tab_lock);
  return status;
}

/* Acceptor: the initiator's send_name. */
static void on_send_name(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len < 15 || m[0] != 'N') {
    mb__conn_close(c, "bad send_name");
    return;
  }
  uint64_t theirs = mb__get64(m + 1);
  c->peer_creation = mb__get32(m + 9);
  size_t n = mb__get16(m + 13);
  if (15 + n > len || n > MB_ATOM_MAXLEN ||
      memchr(m + 15, '\0', n) != NULL ||
      !mb__dist_valid_name((const char *)m + 15, n)) {
    mb__conn_send_status(c, "not_allowed");
    mb__conn_close(c, "bad node name in send_name");
    return;
  }
  memcpy(c->claimed, m + 15, n);
  c->claimed[n] = '\0';
  if (!flags_ok(c, theirs)) {
    mb__conn_send_status(c, "not_allowed");
    return;
  }
  const char *status = status_for(c->claimed, n);
  mb__conn_send_status(c, status);
  if (strcmp(status, "nok") == 0) {
    mb__conn_close(c, NULL);
  } else if (strcmp(status, "alive") == 0) {
    c->hs = H_ALIVE;
  } else {
    send_challenge(c);
    c->hs = H_REPLY;
  }
}

/* Acceptor: "true" (a new incarnation of a node we are connected with:
 * go on; the old connection stays until the new one has proved the
 * cookie) or "false". */
static void on_alive_answer(mb__conn_t *c, const unsigned char *m,
                            size_t len) {
  if (len == 5 && m[0] == 's' && memcmp(m + 1, "true", 4) == 0) {
    send_challenge(c);
    c->hs = H_REPLY;
    return;
  }
  mb__conn_close(c, NULL);
}

/* Acceptor: the peer proved the cookie.  Only now does its name become an
 * atom and the connection the node's, replacing any other one (a pending
 * attempt of ours, or the connection of an earlier incarnation), as OTP's
 * net_kernel replaces it only once the new handshake has authenticated. */
static bool adopt(mb__conn_t *c) {
  const mb__atom_t *peer;
  int err = mb__atom_intern(c->claimed, strlen(c->claimed), &peer);
  if (err != 0) {
    mb_log(MB_LOG_ERROR, "dist: connection from %s refused: %s", c->claimed,
           mb_strerror(err));
    mb__conn_close(c, NULL);
    return false;
  }
  uv_mutex_lock(&mb__dist_tab_lock);
  c->node = peer;
  mb__conn_t *old = mb__map_get(&mb__dist_conns, key_of(peer));
  take_over(c, old);
  uv_mutex_unlock(&mb__dist_tab_lock);
  if (old != NULL)
    mb__conn_close(old, old->state == C_UP ? "replaced by a new connection"
                                           : NULL);
  return true;
}

/* Acceptor: challenge_reply. */
static void on_reply(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len != 21 || m[0] != 'r') {
    mb__conn_close(c, "bad challenge_reply");
    return;
  }
  unsigned char want[16];
  digest(c->my_challenge, want);
  if (CRYPTO_memcmp(want, m + 5, 16) != 0) {
    mb_log(MB_LOG_ERROR,
           "dist: connection attempt from %s refused: wrong cookie",
           mb__conn_label(c));
    mb__conn_close(c, NULL);
    return;
  }
  if (!adopt(c))
    return;
  c->peer_challenge = mb__get32(m + 1);
  unsigned char ack[17];
  ack[0] = 'a';
  digest(c->peer_challenge, ack + 1);
  mb__conn_send_hs(c, ack, sizeof ack);
  mb__conn_up(c);
}

/* Initiator: status. */
static void on_status(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len < 2 || m[0] != 's') {
    mb__conn_close(c, "bad status");
    return;
  }
  const char *s = (const char *)m + 1;
  size_t n = len - 1;
  if ((n == 2 && memcmp(s, "ok", 2) == 0) ||
      (n == 15 && memcmp(s, "ok_simultaneous", 15) == 0)) {
    c->hs = H_CHALLENGE;
  } else if (n == 5 && memcmp(s, "alive", 5) == 0) {
    mb__conn_send_status(c, "true");
    c->hs = H_CHALLENGE;
  } else if (n == 3 && memcmp(s, "nok", 3) == 0) {
    /* A simultaneous connect that the other side's attempt wins: it
     * takes over this entry and what is queued on it when its send_name
     * arrives (answered ok_simultaneous), within the handshake timeout. */
    uv_mutex_lock(&mb__dist_tab_lock);
    c->state = C_WAITING;
    uv_mutex_unlock(&mb__dist_tab_lock);
    if (c->tcp_open) {
      c->tcp_open = false;
      uv_close((uv_handle_t *)&c->tcp, mb__conn_handle_closed);
    }
  } else {
    mb__conn_close(c, "refused by the node (not_allowed)");
  }
}

/* Initiator: the acceptor's challenge. */
static void on_challenge(mb__conn_t *c, const unsigned char *m, size_t len) {
  if (len < 19 || m[0] != 'N') {
    mb__conn_close(c, "bad challenge");
    return;
  }
  uint64_t theirs = mb__get64(m + 1);
  c->peer_challenge = mb__get32(m + 9);
  c->peer_creation = mb__get32(m + 13);
  size_t n = mb__get16(m + 17);
  if (19 + n > len || n != c->node->len ||
      memcmp(m + 19, c->node->name, n) != 0) {
    mb__conn_close(c, "the node answered with another name");
    return;
  }
  if (!flags_ok(c, theirs))
    return;
  unsigned char reply[21];
  reply[0] = 'r';
  c->my_challenge = random32();
  mb__put32(reply + 1, c->my_challenge);
  digest(c->peer_challenge, reply + 5);
  mb__conn_send_hs(c, reply, sizeof reply);
  c->hs = H_ACK;
}

/* Initiator: challenge_ack. */
static void on_ack(mb__conn_t *c, const unsigned char *m, size_t len) {
  unsigned char want[16];
  digest(c->my_challenge, want);
  if (len != 17 || m[0] != 'a' || CRYPTO_memcmp(want, m + 1, 16) != 0) {
    mb_log(MB_LOG_ERROR, "dist: %s refused our cookie (or answered wrongly)",
           c->node->name);
    mb__conn_close(c, NULL);
    return;
  }
  mb__conn_up(c);
}

void mb__conn_handshake_msg(mb__conn_t *c, const unsigned char *m, size_t len) {
  switch (c->hs) {
  case H_SEND_NAME:
    on_send_name(c, m, len);
    break;
  case H_STATUS:
    on_status(c, m, len);
    break;
  case H_CHALLENGE:
    on_challenge(c, m, len);
    break;
  case H_REPLY:
    on_reply(c, m, len);
    break;
  case H_ACK:
    on_ack(c, m, len);
    break;
  case H_ALIVE:
    on_alive_answer(c, m, len);
    break;
  }
}
