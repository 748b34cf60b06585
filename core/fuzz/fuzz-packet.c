/* libFuzzer target for the framing decoders (core/packet.c).
 *
 * Build with clang: cmake -DMB_FUZZ=ON (see CMakeLists.txt), then
 *   build-fuzz/fuzz/fuzz-packet core/fuzz/corpus/packet
 *
 * The first byte picks the framing and the limit; the rest is a byte
 * stream.  The decoder must never read past the stream, must return a
 * packet that lies inside it, must honour the limit, and must agree with
 * itself on a stream cut after a packet; an HTTP head that is found must
 * read as a value. */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      abort();                                                                 \
  } while (0)

static const int packets[] = {MB_PACKET_RAW,
                              MB_PACKET_1,
                              MB_PACKET_2,
                              MB_PACKET_4,
                              MB_PACKET_LINE,
                              MB_PACKET_HTTP,
                              MB_PACKET_HTTP_RESPONSE};
#define NPACKETS (sizeof packets / sizeof packets[0])

static bool http(int packet) {
  return packet == MB_PACKET_HTTP || packet == MB_PACKET_HTTP_RESPONSE;
}

static const mb__atom_t *atoms[2]; /* the tags of HTTP heads */

/* Split the whole stream into packets; returns how many bytes made
 * packets, or -1 at a framing error. */
static long frame_all(int packet, size_t limit, const unsigned char *p,
                      size_t len) {
  size_t at = 0;
  while (at < len) {
    size_t off, plen;
    long n = mb_packet_find(packet, limit, p + at, len - at, &off, &plen);
    if (n < 0) {
      CHECK(n == MB_ETOOBIG || (n == MB_EPROTO && http(packet)));
      return -1;
    }
    if (n == 0)
      break;
    CHECK((size_t)n <= len - at);
    CHECK(off + plen == (size_t)n);
    if (limit != 0 && packet != MB_PACKET_RAW)
      CHECK(plen <= limit);
    if (packet == MB_PACKET_LINE)
      CHECK(p[at + (size_t)n - 1] == '\n');
    if (http(packet)) {
      /* A head that was found reads as a value. */
      mb_msg_t *v = mb__http_head(packet == MB_PACKET_HTTP_RESPONSE, p + at,
                                  (size_t)n, atoms[0], atoms[1]);
      CHECK(v != NULL);
      mb_msg_free(v);
    }
    at += (size_t)n;
  }
  return (long)at;
}

/* libFuzzer's entry point. */
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  if (atoms[0] == NULL) {
    mb__atom_intern("http_request", 12, &atoms[0]);
    mb__atom_intern("http_response", 13, &atoms[1]);
  }
  if (size < 2)
    return 0;
  int packet = packets[data[0] % NPACKETS];
  size_t limit = (size_t)(data[0] >> 3) * 7; /* 0 = no limit */
  const unsigned char *p = data + 1;
  size_t len = size - 1;
  /* A copy of exactly the stream's size, so that ASan sees any read past
   * its end. */
  unsigned char *copy = malloc(len);
  CHECK(copy != NULL);
  memcpy(copy, p, len);
  long whole = frame_all(packet, limit, copy, len);
  /* The first packet does not depend on bytes after it. */
  size_t off, plen;
  long first = mb_packet_find(packet, limit, copy, len, &off, &plen);
  if (first > 0 && packet != MB_PACKET_RAW) {
    size_t off2, plen2;
    long again =
        mb_packet_find(packet, limit, copy, (size_t)first, &off2, &plen2);
    CHECK(again == first && off2 == off && plen2 == plen);
  }
  if (whole > 0 && packet != MB_PACKET_RAW)
    CHECK(frame_all(packet, limit, copy, (size_t)whole) == whole);
  free(copy);
  return 0;
}
