/* HTTP heads as packets: {packet, http} and {packet, http_response}.
 *
 * The bytes are read by Node.js's http_parser (Debian's libhttp-parser),
 * which stops, paused, right after the head; the body stays in the
 * socket's buffer for the owner to take in raw mode, as with gen_tcp's
 * {packet, http_bin}.  Like the other decoders (packet.c), these functions
 * look only at the bytes given, so the fuzzer can drive them. */
#include <ctype.h>
#include <string.h>

#include <http_parser.h>

#include "internal.h"

typedef struct {
  const char *p;
  size_t n;
} slice_t;

/* What a head holds, as slices of the buffer it was read from. */
typedef struct {
  bool done;
  size_t nheaders;
  slice_t url, reason;
  slice_t name[MB_HTTP_MAX_HEADERS], value[MB_HTTP_MAX_HEADERS];
} head_t;

static int on_headers_complete(http_parser *p) {
  ((head_t *)p->data)->done = true;
  http_parser_pause(p, 1);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  ((head_t *)p->data)->url = (slice_t){at, n};
  return 0;
}

static int on_status(http_parser *p, const char *at, size_t n) {
  ((head_t *)p->data)->reason = (slice_t){at, n};
  return 0;
}

/* A buffer read in one go gives each field and value in one piece. */
static int on_field(http_parser *p, const char *at, size_t n) {
  head_t *h = p->data;
  if (h->nheaders == MB_HTTP_MAX_HEADERS)
    return -1; /* too many: the head is refused */
  h->name[h->nheaders] = (slice_t){at, n};
  h->value[h->nheaders] = (slice_t){at + n, 0};
  h->nheaders++;
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  head_t *h = p->data;
  if (h->nheaders > 0)
    h->value[h->nheaders - 1] = (slice_t){at, n};
  return 0;
}

/* Parse the head at the start of buf; the length it takes, 0 when more
 * is needed, or an error. */
static long parse(int response, size_t limit, const unsigned char *buf,
                  size_t len, http_parser *p, head_t *h) {
  http_parser_settings st;
  memset(&st, 0, sizeof st);
  st.on_headers_complete = on_headers_complete;
  st.on_url = on_url;
  st.on_status = on_status;
  st.on_header_field = on_field;
  st.on_header_value = on_value;
  memset(h, 0, sizeof *h);
  http_parser_init(p, response ? HTTP_RESPONSE : HTTP_REQUEST);
  p->data = h;
  size_t scan = limit != 0 && limit < len ? limit : len;
  size_t n = http_parser_execute(p, &st, (const char *)buf, scan);
  /* Paused on the head's last byte, which it has not counted. */
  if (h->done)
    return n < scan ? (long)n + 1 : MB_EPROTO;
  if (HTTP_PARSER_ERRNO(p) != HPE_OK)
    return MB_EPROTO;
  if (limit != 0 && len >= limit)
    return MB_ETOOBIG;
  return 0;
}

long mb__http_find(int response, size_t limit, const unsigned char *buf,
                   size_t len) {
  http_parser p;
  head_t h;
  return parse(response, limit, buf, len, &p, &h);
}

static int put_slice(mb_msg_t **m, slice_t s) {
  return mb__tuple_str(m, s.p, s.n);
}

/* {Name, Value} with the name in lower case, as HTTP/2 writes names. */
static mb_msg_t *header(slice_t name, slice_t value) {
  char low[256];
  size_t n = name.n < sizeof low ? name.n : sizeof low;
  for (size_t i = 0; i < n; i++)
    low[i] = (char)tolower((unsigned char)name.p[i]);
  mb_msg_t *m = mb__tuple_new(2);
  if (m != NULL && (mb__tuple_str(&m, low, n) || put_slice(&m, value) ||
                    mb__tuple_end(&m, 2))) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

static mb_msg_t *headers(const head_t *h) {
  mb_msg_t *m = mb__tuple_new((unsigned)h->nheaders);
  for (size_t i = 0; m != NULL && i < h->nheaders; i++) {
    mb_msg_t *one = header(h->name[i], h->value[i]);
    if (one == NULL || mb__tuple_value(&m, one)) {
      mb_msg_free(m);
      m = NULL;
    }
    mb_msg_free(one);
  }
  if (m != NULL && mb__tuple_end(&m, (unsigned)h->nheaders)) {
    mb_msg_free(m);
    m = NULL;
  }
  return m;
}

static mb_msg_t *version(const http_parser *p) {
  mb_msg_t *m = mb__tuple_new(2);
  if (m != NULL && (mb__tuple_int(&m, p->http_major) ||
                    mb__tuple_int(&m, p->http_minor) || mb__tuple_end(&m, 2))) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}

mb_msg_t *mb__http_head(int response, const unsigned char *buf, size_t len,
                        const mb__atom_t *request_tag,
                        const mb__atom_t *response_tag) {
  http_parser p;
  head_t h;
  if (parse(response, 0, buf, len, &p, &h) != (long)len)
    return NULL;
  mb_msg_t *hs = headers(&h), *v = version(&p);
  mb_msg_t *m = hs && v ? mb__tuple_new(5) : NULL;
  int err = m == NULL;
  if (!err && response) {
    err = mb__tuple_atom(&m, response_tag) || mb__tuple_value(&m, v) ||
          mb__tuple_int(&m, p.status_code) || put_slice(&m, h.reason);
  } else if (!err) {
    const char *method = http_method_str((enum http_method)p.method);
    err = mb__tuple_atom(&m, request_tag) ||
          mb__tuple_str(&m, method, strlen(method)) || put_slice(&m, h.url) ||
          mb__tuple_value(&m, v);
  }
  if (!err)
    err = mb__tuple_value(&m, hs) || mb__tuple_end(&m, 5);
  mb_msg_free(hs);
  mb_msg_free(v);
  if (err) {
    mb_msg_free(m);
    return NULL;
  }
  return m;
}
