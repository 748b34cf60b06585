/* Framing: splitting a received byte stream into packets, as gen_tcp's
 * {packet, 1 | 2 | 4 | line | http} do (HTTP heads: http.c).  Pure
 * functions of the bytes buffered so far, so that the fuzzer
 * (core/fuzz/fuzz-packet.c) can drive them without a socket.  A peer
 * decides the lengths it announces: every length is checked against the
 * limit before anything is allocated for it. */
#include <string.h>

#include "internal.h"

static long find_line(size_t limit, const unsigned char *buf, size_t len,
                      size_t *plen) {
  size_t scan = limit != 0 && limit < len ? limit : len;
  const unsigned char *nl = memchr(buf, '\n', scan);
  if (nl != NULL) {
    *plen = (size_t)(nl - buf) + 1;
    return (long)*plen;
  }
  /* No end within the limit: the line can only grow past it. */
  if (limit != 0 && len >= limit)
    return MB_ETOOBIG;
  return 0;
}

static long find_prefixed(int hdr, size_t limit, const unsigned char *buf,
                          size_t len, size_t *plen) {
  if (len < (size_t)hdr)
    return 0;
  size_t n = 0;
  for (int i = 0; i < hdr; i++)
    n = (n << 8) | buf[i];
  if (limit != 0 && n > limit)
    return MB_ETOOBIG;
  if (len - (size_t)hdr < n)
    return 0;
  *plen = n;
  return (long)(n + (size_t)hdr);
}

long mb_packet_find(int packet, size_t limit, const unsigned char *buf,
                    size_t len, size_t *off, size_t *plen) {
  *off = 0;
  *plen = 0;
  if (len == 0)
    return packet < 0 || packet > MB_PACKET_HTTP_RESPONSE || packet == 3
               ? MB_EINVAL
               : 0;
  switch (packet) {
  case MB_PACKET_RAW:
    *plen = len;
    return (long)len;
  case MB_PACKET_LINE:
    return find_line(limit, buf, len, plen);
  case MB_PACKET_HTTP:
  case MB_PACKET_HTTP_RESPONSE: {
    long n = mb__http_find(packet == MB_PACKET_HTTP_RESPONSE, limit, buf, len);
    if (n > 0)
      *plen = (size_t)n;
    return n;
  }
  case MB_PACKET_1:
  case MB_PACKET_2:
  case MB_PACKET_4:
    *off = (size_t)packet;
    return find_prefixed(packet, limit, buf, len, plen);
  default:
    return MB_EINVAL;
  }
}
