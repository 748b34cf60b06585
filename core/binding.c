/* The core's values in a Lua state, for bindings that include only
 * moonbeam.h (lua/lsocket.c). */
#include "internal.h"

int mb_value_to_pid(lua_State *L, int idx, mb_pid_t *out) {
  mb__lpid_t *p = mb__to_pid(L, idx);
  if (p == NULL || p->node != 0)
    return MB_EINVAL;
  *out = p->id;
  return 0;
}

uint64_t mb_value_new_ref(void) { return mb__ref_next(); }
