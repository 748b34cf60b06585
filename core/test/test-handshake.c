/* The handshake keeps nothing of a peer that has not proved the cookie:
 * the name it claims in send_name is not interned, whether it then gives
 * a wrong digest or says nothing more.  Bytes go to a socketless
 * connection (mb__dist_fuzz_feed), as the fuzzer feeds them; the node,
 * which has no listener, ends with the test process. */
#include "test.h"

#include "dist/dist_internal.h"

/* Whether the atom table holds `name`, read without interning it. */
static bool has_atom(const char *name) {
  const mb__atom_t *a;
  for (uint32_t i = 0; (a = mb__atom_at(i)) != NULL; i++)
    if (strcmp(a->name, name) == 0)
      return true;
  return false;
}

/* Input for an accepting connection: send_name claiming `name`, then,
 * when `reply`, a challenge_reply with a wrong digest. */
static size_t handshake_input(unsigned char *buf, const char *name,
                              bool reply) {
  size_t n = strlen(name), len = 0;
  buf[len++] = 0; /* an accepting connection */
  mb__put16(buf + len, (uint16_t)(15 + n));
  buf[len + 2] = 'N';
  mb__put64(buf + len + 3, 0xD07DF7FBDULL); /* what OTP 25 offers */
  mb__put32(buf + len + 11, 1);
  mb__put16(buf + len + 15, (uint16_t)n);
  memcpy(buf + len + 17, name, n);
  len += 17 + n;
  if (reply) {
    mb__put16(buf + len, 21);
    memset(buf + len + 2, 0, 21);
    buf[len + 2] = 'r';
    len += 23;
  }
  return len;
}

static void start(void) {
  mb_log_set_level(MB_LOG_ERROR + 1);
  mb_config_t cfg = {0};
  cfg.schedulers = 1;
  ASSERT_EQ(mb_node_start(&cfg), 0);
  ASSERT_EQ(mb__dist_fuzz_init("self@localhost", "cookie"), 0);
}

TEST_IMPL(wrong_digest_interns_nothing) {
  unsigned char buf[600];
  start();
  size_t len = handshake_input(buf, "ghost1@nowhere", true);
  mb__dist_fuzz_feed(buf, len);
  ASSERT(!has_atom("ghost1@nowhere"));
}

TEST_IMPL(silent_peer_interns_nothing) {
  unsigned char buf[600];
  start();
  for (int i = 0; i < 1000; i++) {
    char name[64];
    snprintf(name, sizeof name, "ghost%d@nowhere", i);
    mb__dist_fuzz_feed(buf, handshake_input(buf, name, false));
  }
  ASSERT(!has_atom("ghost0@nowhere"));
  ASSERT(!has_atom("ghost999@nowhere"));
}

TEST_LIST(TEST_ENTRY(wrong_digest_interns_nothing),
          TEST_ENTRY(silent_peer_interns_nothing))
