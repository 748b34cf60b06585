/* The core's values in a Lua state, for bindings that include only
 * moonbeam.h (lua/lsocket.c, lua/lterm.c). */
#include "etf.h"
#include "internal.h"

int mb_value_to_pid(lua_State *L, int idx, mb_pid_t *out) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p == NULL || p->node != 0)
    return MB_EINVAL;
  *out = p->id;
  return 0;
}

uint64_t mb_value_new_ref(void) { return mb__ref_next(); }

int mb_value_to_term(lua_State *L, int idx, char *err, size_t errlen) {
  mb_msg_t *m;
  int rc = mb__etf_encode(L, idx, "term", &m, err, errlen);
  if (rc != 0)
    return rc;
  lua_pushlstring(L, (const char *)m->data, m->len);
  mb_msg_free(m);
  return 0;
}

int mb_value_from_term(lua_State *L, const void *buf, size_t len, int safe,
                       char *err, size_t errlen) {
  return safe ? mb__etf_decode_safe(L, buf, len, err, errlen)
              : mb__etf_decode(L, buf, len, err, errlen);
}

const char *mb_value_to_atom(lua_State *L, int idx) {
  const mb__atom_t *a = mb__to_atom(L, idx);
  return a ? a->name : NULL;
}
