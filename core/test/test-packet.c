/* Framing: each decoder finds the first packet of a stream, waits for
 * more when it is cut short, and refuses what is past its limit. */
#include "../internal.h"
#include "test.h"

static long find(int packet, size_t limit, const char *s, size_t len,
                 size_t *off, size_t *plen) {
  return mb_packet_find(packet, limit, (const unsigned char *)s, len, off,
                        plen);
}

TEST_IMPL(length_prefixes) {
  size_t off, plen;
  ASSERT_EQ(4, find(MB_PACKET_1, 0, "\3abcX", 5, &off, &plen));
  ASSERT(off == 1 && plen == 3);
  ASSERT_EQ(0, find(MB_PACKET_1, 0, "\3ab", 3, &off, &plen));
  ASSERT_EQ(7, find(MB_PACKET_2, 0, "\0\5hello", 7, &off, &plen));
  ASSERT(off == 2 && plen == 5);
  ASSERT_EQ(6, find(MB_PACKET_4, 0, "\0\0\0\2hi", 6, &off, &plen));
  ASSERT_EQ(0, find(MB_PACKET_4, 0, "\0\0\0", 3, &off, &plen));
  /* A giant announced length is refused before any byte of it comes. */
  ASSERT_EQ(MB_ETOOBIG,
            find(MB_PACKET_4, 1024, "\x7f\xff\xff\xff", 4, &off, &plen));
  ASSERT_EQ(4, find(MB_PACKET_4, 0, "\0\0\0\0X", 5, &off, &plen));
  ASSERT_EQ(0u, plen);
}

TEST_IMPL(lines) {
  size_t off, plen;
  ASSERT_EQ(4, find(MB_PACKET_LINE, 0, "one\ntwo", 7, &off, &plen));
  ASSERT(off == 0 && plen == 4);
  ASSERT_EQ(0, find(MB_PACKET_LINE, 0, "no end", 6, &off, &plen));
  ASSERT_EQ(MB_ETOOBIG, find(MB_PACKET_LINE, 4, "toolong", 7, &off, &plen));
  ASSERT_EQ(4, find(MB_PACKET_LINE, 4, "abc\nmore", 8, &off, &plen));
}

TEST_IMPL(http_heads) {
  size_t off, plen;
  const char *req = "GET /x HTTP/1.1\r\nHost: a\r\n\r\nBODY";
  size_t head = strlen("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ((long)head, find(MB_PACKET_HTTP, 0, req, strlen(req), &off, &plen));
  ASSERT_EQ(head, plen);
  ASSERT_EQ(0, find(MB_PACKET_HTTP, 0, req, head - 1, &off, &plen));
  ASSERT_EQ(MB_EPROTO,
            find(MB_PACKET_HTTP, 0, "\1\2\3 junk\r\n\r\n", 12, &off, &plen));
  ASSERT_EQ(MB_ETOOBIG,
            find(MB_PACKET_HTTP, 10, req, strlen(req), &off, &plen));
  const char *resp = "HTTP/1.1 204 No Content\r\n\r\n";
  ASSERT_EQ((long)strlen(resp),
            find(MB_PACKET_HTTP_RESPONSE, 0, resp, strlen(resp), &off, &plen));
  /* A head reads as {http_request, "GET", "/x", {1, 1}, {{"host", "a"}}}. */
  const mb__atom_t *rq, *rs;
  mb__atom_intern("http_request", 12, &rq);
  mb__atom_intern("http_response", 13, &rs);
  mb_msg_t *v = mb__http_head(0, (const unsigned char *)req, head, rq, rs);
  ASSERT(v != NULL);
  lua_State *L = luaL_newstate();
  mb_msg_decode(L, v);
  lua_rawgeti(L, -1, 2);
  ASSERT(strcmp(lua_tostring(L, -1), "GET") == 0);
  lua_rawgeti(L, -2, 3);
  ASSERT(strcmp(lua_tostring(L, -1), "/x") == 0);
  lua_rawgeti(L, -3, 5);
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -1, 1);
  ASSERT(strcmp(lua_tostring(L, -1), "host") == 0);
  lua_close(L);
  mb_msg_free(v);
}

TEST_LIST(TEST_ENTRY(length_prefixes), TEST_ENTRY(lines),
          TEST_ENTRY(http_heads))
