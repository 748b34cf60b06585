/* The Lua entry points of distribution: this node's name, the nodes it is
 * connected to, node monitors, disconnecting, and spawn requests. */
#include <string.h>

#include <lauxlib.h>

#include "dist_internal.h"

static const mb__atom_t *check_node(lua_State *L, int idx) {
  const mb__atom_t *a = mb__to_atom(L, idx);
  if (a != NULL) {
    if (memchr(a->name, '\0', a->len) != NULL)
      luaL_argerror(L, idx, "node name with a NUL byte");
    return a;
  }
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_typeerror(L, idx, "node name (string or atom)");
  const char *s = lua_tolstring(L, idx, &len);
  if (memchr(s, '@', len) == NULL)
    luaL_argerror(L, idx, "a node name is name@host");
  if (memchr(s, '\0', len) != NULL)
    luaL_argerror(L, idx, "node name with a NUL byte");
  int err = mb__atom_intern(s, len, &a);
  if (err == MB_ELIMIT)
    mb__atom_table_full(L, "node name");
  if (err != 0)
    luaL_argerror(L, idx, "node name too long");
  return a;
}

/* node([pid | ref]) -> the node of the pid or ref (Erlang's node/1), or
 * this node's name; nonode@nohost before distribution is started. */
int mb_lua_node(lua_State *L) {
  const mb__atom_t *a = mb__dist_node();
  if (a == NULL)
    a = mb__atoms.nonode;
  if (!lua_isnoneornil(L, 1)) {
    const mb__lpid_t *p = mb__to_pid(L, 1);
    const mb__lref_t *r = p ? NULL : mb__to_ref(L, 1);
    if (p == NULL && r == NULL)
      return luaL_typeerror(L, 1, "pid or ref");
    uint32_t node = p ? p->node : r->node;
    if (node != 0)
      a = mb__atom_at(node - 1);
  }
  mb__push_atom(L, a);
  return 1;
}

/* nodes(["visible" | "hidden" | "connected"]) -> list of node names */
int mb_lua_nodes(lua_State *L) {
  static const char *const kinds[] = {"visible", "connected", "hidden", NULL};
  int kind = luaL_checkoption(L, 1, "visible", kinds);
  const mb__atom_t *list[1024];
  int n = mb__dist_node() ? mb__dist_nodes(list, 1024, kind) : 0;
  lua_createtable(L, n, 0);
  int k = 0;
  for (int i = 0; i < n; i++) {
    mb__push_atom(L, list[i]);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* monitor_node(node, flag): {nodedown, Node} when the connection goes. */
int mb_lua_monitor_node(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "monitor_node");
  const mb__atom_t *n = check_node(L, 1);
  int err =
      mb__dist_monitor_node(p->pid, n, lua_isnone(L, 2) || lua_toboolean(L, 2));
  if (err == MB_ESTATE)
    return luaL_error(L, "monitor_node: this node is not distributed");
  if (err)
    mb_lua_error(L, "monitor_node", err, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* monitor_nodes(flag): {nodeup, Node} and {nodedown, Node} for all. */
int mb_lua_monitor_nodes(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "monitor_nodes");
  mb__dist_monitor_nodes(p->pid, lua_isnone(L, 1) || lua_toboolean(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* node_watch(node) -> ref: {Ref, true} once the node is connected (at
 * once if it is), {Ref, false} if connecting fails; the node is dialled.
 * What dist.connect waits on, leaving the caller's monitor_node and
 * monitor_nodes subscriptions as they were. */
int mb_lua_node_watch(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "node_watch");
  const mb__atom_t *n = check_node(L, 1);
  uint64_t ref = mb__ref_next();
  int err = mb__dist_node_watch(p->pid, n, ref);
  if (err == MB_ESTATE)
    return luaL_error(L, "node_watch: this node is not distributed");
  if (err)
    mb_lua_error(L, "node_watch", err, NULL);
  mb_lua_push_ref(L, ref);
  return 1;
}

/* node_unwatch(node, ref) -> false if its message was already sent. */
int mb_lua_node_unwatch(lua_State *L) {
  const mb__atom_t *n = check_node(L, 1);
  mb__lref_t *r = mb__to_ref(L, 2);
  luaL_argexpected(L, r != NULL, 2, "ref");
  lua_pushboolean(L, mb__dist_node_unwatch(n, r->id));
  return 1;
}

int mb_lua_disconnect(lua_State *L) {
  const mb__atom_t *n = check_node(L, 1);
  if (mb__dist_node() == NULL || !mb__dist_connected(n)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  mb__dist_disconnect(n);
  lua_pushboolean(L, 1);
  return 1;
}

/* spawn_request(node, module, function, args, [{reply = false}]) -> ref:
 * the other node runs module:function(args...) monitored by the caller,
 * which gets {spawn_reply, Ref, ok, Pid} (or error, Reason), then the DOWN;
 * with reply = false, neither (a cast). */
int mb_lua_spawn_request(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "spawn_request");
  const mb__atom_t *n = check_node(L, 1);
  const mb__atom_t *mod = mb__to_atom(L, 2), *fun = mb__to_atom(L, 3);
  if (mod == NULL)
    mod = mb__check_name(L, 2);
  if (fun == NULL)
    fun = mb__check_name(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  if (mb__dist_node() == NULL)
    return luaL_error(L, "spawn_request: this node is not distributed");
  bool reply = true;
  if (lua_istable(L, 5)) {
    lua_getfield(L, 5, "reply");
    reply = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  uint64_t ref = mb__ref_next() | MB_REF_ALIAS;
  if (reply)
    mb__link_monitor_add(p, ref, mb__dist_name_key(mod, n));
  char err[600];
  int r = mb__dist_spawn_request(L, n, p->pid, ref, mod, fun, 4, reply, err,
                                 sizeof err);
  if (r != 0)
    mb_lua_error(L, "spawn_request", r, r == MB_EBADTERM ? err : NULL);
  mb__push_ref(L, ref);
  return 1;
}
