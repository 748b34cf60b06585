/* TLS over a socket's byte stream, with OpenSSL and memory BIOs.
 *
 * OpenSSL never touches the socket: socket.c feeds it what the network
 * brought (mb__tls_feed), takes plaintext out (mb__tls_read), gives it
 * plaintext to encrypt (mb__tls_write), and sends whatever OpenSSL wants
 * sent (mb__tls_take).  So the handshake and the data run on the I/O loop
 * like any other socket's bytes, and a peer that stops half-way blocks
 * nothing.  Loop thread only. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"

struct mb__tls_s {
  SSL *ssl;
  BIO *in, *out;    /* network -> OpenSSL, OpenSSL -> network */
  char detail[128]; /* OpenSSL's words for the last failure */
};

void mb__tls_init(void) {
  OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT | OPENSSL_INIT_LOAD_SSL_STRINGS |
                       OPENSSL_INIT_LOAD_CRYPTO_STRINGS,
                   NULL);
}

/* ALPN: "h2,http/1.1" as the wire's length-prefixed list. */
static int alpn_wire(const char *list, unsigned char *out, size_t cap) {
  size_t n = 0;
  while (*list) {
    const char *end = strchr(list, ',');
    size_t len = end ? (size_t)(end - list) : strlen(list);
    if (len == 0 || len > 255 || n + 1 + len > cap)
      return -1;
    out[n++] = (unsigned char)len;
    memcpy(out + n, list, len);
    n += len;
    list += len + (end != NULL);
  }
  return (int)n;
}

/* The server picks the first of its protocols that the client offers. */
static int select_alpn(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg) {
  (void)ssl;
  const unsigned char *mine = arg;
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, mine + 1, mine[0], in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static void free_alpn(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                      long argl, void *argp) {
  (void)parent;
  (void)ad;
  (void)idx;
  (void)argl;
  (void)argp;
  free(ptr);
}

static int alpn_index = -1;

static int load_files(SSL_CTX *ctx, const mb__tls_config_t *c,
                      const char **why) {
  if (c->certfile &&
      SSL_CTX_use_certificate_chain_file(ctx, c->certfile) != 1) {
    *why = "bad_certfile";
    return -1;
  }
  if (c->keyfile &&
      SSL_CTX_use_PrivateKey_file(ctx, c->keyfile, SSL_FILETYPE_PEM) != 1) {
    *why = "bad_keyfile";
    return -1;
  }
  if (c->cacertfile) {
    if (SSL_CTX_load_verify_locations(ctx, c->cacertfile, NULL) != 1) {
      *why = "bad_cacertfile";
      return -1;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    *why = "bad_cacertfile";
    return -1;
  }
  return 0;
}

void *mb__tls_context(const mb__tls_config_t *c, bool server,
                      const char **why) {
  SSL_CTX *ctx =
      SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) {
    *why = "enomem";
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (load_files(ctx, c, why) != 0) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  int mode = SSL_VERIFY_NONE;
  if (c->verify)
    mode = SSL_VERIFY_PEER |
           (server && c->fail_if_no_peer_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                              : 0);
  SSL_CTX_set_verify(ctx, mode, NULL);
  if (server && c->alpn && c->alpn[0]) {
    unsigned char *wire = malloc(256);
    int n = wire ? alpn_wire(c->alpn, wire + 1, 255) : -1;
    if (n <= 0) {
      free(wire);
      SSL_CTX_free(ctx);
      *why = "bad_alpn";
      return NULL;
    }
    wire[0] = (unsigned char)n;
    if (alpn_index < 0)
      alpn_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_alpn);
    SSL_CTX_set_ex_data(ctx, alpn_index, wire);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, wire);
  }
  return ctx;
}

void mb__tls_context_free(void *ctx) { SSL_CTX_free(ctx); }

static bool is_ip(const char *host) {
  unsigned char buf[16];
  return host != NULL && (inet_pton(AF_INET, host, buf) == 1 ||
                          inet_pton(AF_INET6, host, buf) == 1);
}

mb__tls_t *mb__tls_new(void *ctx, bool server, const mb__tls_config_t *c,
                       const char *host, const char **why) {
  mb__tls_t *t = calloc(1, sizeof *t);
  if (t == NULL || (t->ssl = SSL_new(ctx)) == NULL) {
    free(t);
    *why = "enomem";
    return NULL;
  }
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->in == NULL || t->out == NULL) {
    BIO_free(t->in);
    BIO_free(t->out);
    SSL_free(t->ssl);
    free(t);
    *why = "enomem";
    return NULL;
  }
  SSL_set_bio(t->ssl, t->in, t->out);
  if (server) {
    SSL_set_accept_state(t->ssl);
    return t;
  }
  SSL_set_connect_state(t->ssl);
  /* The name to check the certificate against, and to send as SNI: the
   * one given, else the host connected to. */
  const char *name = c->server_name ? c->server_name : host;
  if (name != NULL && name[0]) {
    if (is_ip(name)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
    } else {
      SSL_set_tlsext_host_name(t->ssl, name);
      SSL_set1_host(t->ssl, name);
    }
  }
  if (c->alpn && c->alpn[0]) {
    unsigned char wire[256];
    int n = alpn_wire(c->alpn, wire, sizeof wire);
    if (n <= 0 || SSL_set_alpn_protos(t->ssl, wire, (unsigned)n) != 0) {
      mb__tls_free(t);
      *why = "bad_alpn";
      return NULL;
    }
  }
  return t;
}

void mb__tls_free(mb__tls_t *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl); /* and its BIOs */
  free(t);
}

int mb__tls_feed(mb__tls_t *t, const void *p, size_t n) {
  return BIO_write(t->in, p, (int)n) == (int)n ? 0 : MB_ENOMEM;
}

/* Why the handshake or the stream failed, as an atom name. */
static const char *failure(mb__tls_t *t, const char *otherwise) {
  long v = SSL_get_verify_result(t->ssl);
  unsigned long e = ERR_peek_last_error();
  const char *text = v != X509_V_OK ? X509_verify_cert_error_string(v)
                                    : ERR_reason_error_string(e);
  snprintf(t->detail, sizeof t->detail, "%s", text ? text : "");
  ERR_clear_error();
  if (v != X509_V_OK)
    return "bad_certificate";
  if (ERR_GET_REASON(e) == SSL_R_NO_APPLICATION_PROTOCOL)
    return "no_application_protocol";
  if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
      ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED ||
      ERR_GET_REASON(e) == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
      ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
      ERR_GET_REASON(e) == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
    return "bad_certificate";
  return otherwise;
}

int mb__tls_handshake(mb__tls_t *t, const char **why) {
  int r = SSL_do_handshake(t->ssl);
  if (r == 1)
    return 1;
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  *why = failure(t, "handshake_failure");
  return MB_EPROTO;
}

int mb__tls_read(mb__tls_t *t, void *out, size_t cap, size_t *n,
                 const char **why) {
  *n = 0;
  int r = SSL_read(t->ssl, out, (int)(cap > 0x7fffffff ? 0x7fffffff : cap));
  if (r > 0) {
    *n = (size_t)r;
    return 0;
  }
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  if (e == SSL_ERROR_ZERO_RETURN)
    return MB_ECONN; /* close_notify: the peer's end of the stream */
  *why = failure(t, "decrypt_error");
  return MB_EPROTO;
}

int mb__tls_write(mb__tls_t *t, const void *p, size_t n) {
  if (n == 0)
    return 0;
  int r = SSL_write(t->ssl, p, (int)n);
  ERR_clear_error();
  return r == (int)n ? 0 : MB_EPROTO;
}

void mb__tls_close(mb__tls_t *t) {
  SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t mb__tls_pending(mb__tls_t *t) { return BIO_ctrl_pending(t->out); }

size_t mb__tls_take(mb__tls_t *t, void *out, size_t cap) {
  int r = BIO_read(t->out, out, (int)cap);
  return r > 0 ? (size_t)r : 0;
}

const char *mb__tls_detail(const mb__tls_t *t) { return t->detail; }

int mb__tls_alpn(mb__tls_t *t, char *out, size_t cap) {
  const unsigned char *p;
  unsigned n;
  SSL_get0_alpn_selected(t->ssl, &p, &n);
  if (n == 0 || n >= cap)
    return MB_ENOTFOUND;
  memcpy(out, p, n);
  out[n] = '\0';
  return 0;
}

int mb__tls_peer(mb__tls_t *t, char *out, size_t cap) {
  X509 *cert = SSL_get1_peer_certificate(t->ssl);
  if (cert == NULL)
    return MB_ENOTFOUND;
  X509_NAME_oneline(X509_get_subject_name(cert), out, (int)cap);
  X509_free(cert);
  return 0;
}
