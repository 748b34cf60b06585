/* Error codes as values, with their names and texts. */
#include <lauxlib.h>

#include "moonbeam.h"

const char *mb_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define XX(name, text)                                                         \
  case MB_E##name:                                                             \
    return text;
    MB_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown error";
  }
}

const char *mb_err_name(int err) {
  switch (err) {
  case 0:
    return "OK";
#define XX(name, _)                                                            \
  case MB_E##name:                                                             \
    return "E" #name;
    MB_ERRNO_MAP(XX)
#undef XX
  default:
    return "EUNKNOWN";
  }
}

int mb_lua_error(lua_State *L, const char *fname, int err, const char *detail) {
  return luaL_error(L, "%s: %s", fname, detail ? detail : mb_strerror(err));
}
