/* moonbeam.crypto: the few primitives of Erlang's crypto module that the
 * standard library needs (the gossip strategy's encrypted heartbeats), on
 * OpenSSL's EVP interface:
 *
 *   hash("sha256", data)                     -> digest
 *   strong_rand_bytes(n)                     -> n random bytes
 *   aes_256_cbc(key, iv, data, encrypt)      -> data, or nil, reason
 *
 * aes_256_cbc pads nothing, as crypto:crypto_one_time(aes_256_cbc, ...)
 * does not: the data must be whole 16-byte blocks. */
#include <string.h>

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lmoonbeam.h"

static int l_hash(lua_State *L) {
  static const char *const names[] = {"sha256", "sha1", "md5", NULL};
  int kind = luaL_checkoption(L, 1, NULL, names);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const EVP_MD *md = kind == 0   ? EVP_sha256()
                     : kind == 1 ? EVP_sha1()
                                 : EVP_md5();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data, len, out, &n, md, NULL) != 1)
    return luaL_error(L, "hash: the digest failed");
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

static int l_strong_rand_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 65536, 1, "a count from 0 to 65536 expected");
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  if (n > 0 && RAND_bytes(p, (int)n) != 1)
    return luaL_error(L, "strong_rand_bytes: no random bytes to be had");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

static int l_aes_256_cbc(lua_State *L) {
  size_t klen, ivlen, len;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *iv = luaL_checklstring(L, 2, &ivlen);
  const char *data = luaL_checklstring(L, 3, &len);
  int encrypt = lua_toboolean(L, 4);
  luaL_argcheck(L, klen == 32, 1, "a 32-byte key expected");
  luaL_argcheck(L, ivlen == 16, 2, "a 16-byte IV expected");
  if (len % 16 != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "the data are not whole 16-byte blocks");
    return 2;
  }
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL)
    return luaL_error(L, "aes_256_cbc: out of memory");
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, len + 16);
  int n = 0, tail = 0;
  int ok = EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL,
                             (const unsigned char *)key,
                             (const unsigned char *)iv, encrypt) == 1 &&
           EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
           EVP_CipherUpdate(ctx, out, &n, (const unsigned char *)data,
                            (int)len) == 1 &&
           EVP_CipherFinal_ex(ctx, out + n, &tail) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok)
    return luaL_error(L, "aes_256_cbc: the cipher failed");
  luaL_pushresultsize(&b, (size_t)(n + tail));
  return 1;
}

int luaopen_moonbeam_crypto(lua_State *L) {
  static const luaL_Reg funcs[] = {{"hash", l_hash},
                                   {"strong_rand_bytes", l_strong_rand_bytes},
                                   {"aes_256_cbc", l_aes_256_cbc},
                                   {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
