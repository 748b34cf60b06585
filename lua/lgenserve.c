/* gen_serve: the receive-and-dispatch loop of a GenServer, in C.
 *
 * A GenServer spends its life waiting for a message, handing it to one of
 * its callbacks and keeping what the callback returns.  Written in Lua,
 * that loop and the return handling around it are code (prototypes,
 * constants, debug information) that every idle server keeps reachable,
 * several KB each.  Here the common case runs in C:
 *
 *   {'$gen_call', From, Request}  handle_call(Request, From, State)
 *   {'$gen_cast', Request}        handle_cast(Request, State)
 *   any other message             handle_info(Msg, State)
 *   the server's timeout          handle_info(timeout, State)
 *
 * with the returns "reply", Reply, State [, Timeout] (the reply goes to
 * From as {Tag, Reply}, as gen.reply sends it) and "noreply", State
 * [, Timeout].  A call is received taken apart (receive_call: From and
 * Request decoded without the tuple around them) and its reply written
 * as one message in C (mb_lua_reply); the Lua side and traced servers
 * see calls and replies whole, as they were.  Everything else is rare,
 * and goes to the Lua side of the behaviour, loaded when it happens:
 * system messages, $gen_stop, the parent's 'EXIT', a message without
 * handle_info, {continue = x}, any other return, an error in a callback,
 * a new version of the code.  The Lua side handles it as the whole loop
 * in Lua would, and returns here; the modules it loaded are then dropped
 * from package.loaded again, so that their prototypes can be collected.
 *
 * Callbacks run in lua_pcallk with a continuation, as receive does: they
 * may block (a call to another server), be preempted or run out of
 * memory, as in a loop written in Lua.  The loop's own state is the
 * server table `s` (mod, state, timeout, continue, gen), so that the Lua
 * side sees and changes exactly what it did before. */
#include <stdatomic.h>
#include <string.h>

#include <lauxlib.h>

#include "../core/moonbeam.h"
#include "lmoonbeam.h"

/* The stack of gen_serve, below the message being handled. */
enum {
  S = 1,  /* the server table */
  GEN_FN, /* moonbeam.codecache.generation, or nil */
  RARE,   /* the name of the Lua side's module */
  FORGET, /* the modules dropped after it, between spaces */
  MSGH,   /* the message handler of callbacks */
  A_CALL, /* the atoms the loop compares with */
  A_CAST,
  A_STOP,
  A_SYSTEM,
  A_EXIT,
  A_TIMEOUT,
  A_REPLY,
  A_NOREPLY,
  CALL_FROM, /* a call taken apart by receive_call: From and Request */
  CALL_REQ,
  LAST /* the message being handled (or the atom timeout; false for a call
        * taken apart); above it, a receive's or a callback's results */
};

/* What the continuation resumes. */
enum { K_RECEIVED, K_CALLED, K_NOREPLIED, K_REQUIRED, K_RARE_DONE };

/* An error in a callback becomes {Error, Traceback}, as the reason of a
 * process that raises: the traceback from the failing function up. */
static int on_error(lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  lua_pushcfunction(L, mb_lua_tuple);
  lua_insert(L, -3);
  lua_call(L, 2, 1);
  return 1;
}

/* The atoms the loop (in the order of its slots A_CALL..A_NOREPLY) and
 * the start use.  Each is the same light userdata in every process, for
 * as long as the OS process lives (core/value.c, core/atom.c), so it is
 * looked up by name once. */
enum {
  AT_CALL,
  AT_CAST,
  AT_STOP,
  AT_SYSTEM,
  AT_EXIT,
  AT_TIMEOUT,
  AT_REPLY,
  AT_NOREPLY,
  AT_OK,
  AT_GEN_ACK,
  AT_COUNT
};
static const char *const atom_names[AT_COUNT] = {
    "$gen_call", "$gen_cast", "$gen_stop", "system", "EXIT",
    "timeout",   "reply",     "noreply",   "ok",     "$gen_ack"};
static void *_Atomic atom_values[AT_COUNT];

static void push_atom(lua_State *L, int which) {
  void *v = atomic_load_explicit(&atom_values[which], memory_order_relaxed);
  if (v != NULL) {
    lua_pushlightuserdata(L, v);
    /* The atoms' metatable is set by the first atom a state makes. */
    if (lua_getmetatable(L, -1)) {
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pushcfunction(L, mb_lua_atom);
  lua_pushstring(L, atom_names[which]);
  lua_call(L, 1, 1);
  atomic_store_explicit(&atom_values[which], lua_touserdata(L, -1),
                        memory_order_relaxed);
}

/* Is the value at idx the tag `atom_idx` names, as a string or an atom? */
static int is_tag(lua_State *L, int idx, int atom_idx, const char *name) {
  if (lua_type(L, idx) != LUA_TSTRING)
    return lua_rawequal(L, idx, atom_idx);
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  return len == strlen(name) && memcmp(s, name, len) == 0;
}

/* Is the value at idx the name of the Lua side (RARE) or of one of the
 * modules in FORGET (names between spaces)? */
static int forgotten(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TSTRING)
    return 0;
  size_t len, rlen;
  const char *name = lua_tolstring(L, idx, &len);
  const char *rare = lua_tolstring(L, RARE, &rlen);
  if (len == rlen && memcmp(name, rare, len) == 0)
    return 1;
  for (const char *p = lua_tostring(L, FORGET); *p != '\0';) {
    size_t n = strcspn(p, " ");
    if (n == len && memcmp(p, name, n) == 0)
      return 1;
    p += n + (p[n] == ' ');
  }
  return 0;
}

/* Drop the Lua side and what it loaded (FORGET) from package.loaded;
 * true if any of them was there.  The names are compared with the keys
 * there, not made into strings of this state. */
static int forget(lua_State *L) {
  int dropped = 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    if (forgotten(L, -1)) {
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4); /* clearing a field while traversing is allowed */
      dropped = 1;
    }
  }
  lua_pop(L, 1);
  return dropped;
}

static int serve_k(lua_State *L, int status, lua_KContext ctx);

/* Hand an event to the Lua side: require(RARE).event(s, kind, a, b), with
 * a and b on top of the stack. */
static int rare(lua_State *L, const char *kind) {
  lua_pushstring(L, kind);
  lua_insert(L, -3);
  lua_getglobal(L, "require");
  lua_pushvalue(L, RARE);
  lua_callk(L, 1, 1, K_REQUIRED, serve_k);
  return serve_k(L, LUA_OK, K_REQUIRED);
}

/* A callback's outcome, for the Lua side: {n = N, ok, values...} as
 * gen.pack(xpcall(...)) gives it, from the results above LAST; leaves
 * the message and that table on top. */
static void pack_results(lua_State *L, int ok) {
  int n = lua_gettop(L) - LAST;
  luaL_checkstack(L, 3, "gen_serve"); /* a callback may return many */
  lua_createtable(L, n + 1, 1);
  lua_pushboolean(L, ok);
  lua_rawseti(L, -2, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, LAST + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n + 1);
  lua_setfield(L, -2, "n");
  lua_insert(L, LAST + 1);
  lua_settop(L, LAST + 1);
  lua_pushvalue(L, LAST);
  lua_insert(L, -2);
}

/* Call s.mod[name] with the n arguments on top in a protected call. */
static int call_back(lua_State *L, const char *name, int n, int k) {
  lua_getfield(L, S, "mod");
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  lua_insert(L, -(n + 1));
  lua_pcallk(L, n, LUA_MULTRET, MSGH, k, serve_k);
  return serve_k(L, LUA_OK, k);
}

/* Does s.mod have the callback `name`? */
static int has_callback(lua_State *L, const char *name) {
  lua_getfield(L, S, "mod");
  int t = lua_getfield(L, -1, name);
  lua_pop(L, 2);
  return t != LUA_TNIL;
}

/* Set s.timeout from the value at idx: nil (or no value) or a number. */
static void set_timeout(lua_State *L, int idx) {
  if (idx > lua_gettop(L))
    lua_pushnil(L);
  else
    lua_pushvalue(L, idx);
  lua_setfield(L, S, "timeout");
}

/* Is the optional timeout at idx one the loop keeps (nil or a number)?
 * {continue = x} and bad values are the Lua side's. */
static int plain_timeout(lua_State *L, int idx) {
  int t = idx > lua_gettop(L) ? LUA_TNIL : lua_type(L, idx);
  return t == LUA_TNIL || t == LUA_TNUMBER;
}

/* "noreply", State [, Timeout] from the results above LAST: kept, true;
 * or false for the Lua side. */
static int noreply(lua_State *L) {
  int n = lua_gettop(L) - LAST;
  int tag = LAST + 1;
  if (n < 1 || n > 3 || !is_tag(L, tag, A_NOREPLY, "noreply"))
    return 0;
  if (!plain_timeout(L, tag + 2))
    return 0;
  if (n < 2)
    lua_pushnil(L);
  else
    lua_pushvalue(L, tag + 1);
  lua_setfield(L, S, "state");
  set_timeout(L, tag + 2);
  return 1;
}

/* The call {'$gen_call', From, Request} from Label, From, Request on top,
 * for the Lua side, which gets messages whole. */
static void whole_call(lua_State *L) {
  lua_pushcfunction(L, mb_lua_tuple);
  lua_insert(L, -4);
  lua_call(L, 3, 1);
}

/* The call being handled as a message, at LAST, if receive_call took it
 * apart. */
static void make_whole(lua_State *L) {
  if (lua_type(L, LAST) == LUA_TTABLE)
    return;
  luaL_checkstack(L, 4, "gen_serve");
  lua_pushvalue(L, A_CALL);
  lua_pushvalue(L, CALL_FROM);
  lua_pushvalue(L, CALL_REQ);
  whole_call(L);
  lua_replace(L, LAST);
}

/* Send {Tag, Reply} to From = {Pid, Tag}: to Tag as an alias when it is a
 * ref, as gen.reply does.  A reply to this node is written in C; one to
 * another node (an Erlang caller's tag need not be a ref) or from a traced
 * server goes as gen.reply sends it. */
static void reply(lua_State *L, int from, int value) {
  if (mb_lua_reply(L, from, value))
    return;
  int top = lua_gettop(L);
  lua_rawgeti(L, from, 1); /* pid */
  lua_rawgeti(L, from, 2); /* tag */
  lua_pushcfunction(L, mb_lua_typeof);
  lua_pushvalue(L, top + 2);
  lua_call(L, 1, 1);
  int alias = strcmp(lua_tostring(L, -1), "ref") == 0;
  lua_pop(L, 1);
  lua_pushcfunction(L, alias ? mb_lua_send_alias : mb_lua_send);
  lua_pushvalue(L, top + 1);
  if (alias)
    lua_pushvalue(L, top + 2);
  lua_pushcfunction(L, mb_lua_tuple);
  lua_pushvalue(L, top + 2);
  lua_pushvalue(L, value);
  lua_call(L, 2, 1);
  lua_call(L, alias ? 3 : 2, 0);
  lua_settop(L, top);
}

/* "reply", Reply, State [, Timeout] from handle_call: the reply sent and
 * the rest kept, true; or false for the Lua side. */
static int replied(lua_State *L) {
  int n = lua_gettop(L) - LAST;
  int tag = LAST + 1;
  if (n < 1 || n > 4 || !is_tag(L, tag, A_REPLY, "reply"))
    return 0;
  if (!plain_timeout(L, tag + 3))
    return 0;
  if (lua_type(L, LAST) == LUA_TTABLE)
    lua_rawgeti(L, LAST, 2); /* From */
  else
    lua_pushvalue(L, CALL_FROM);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushnil(L); /* the reply or the state may be missing */
  lua_pushnil(L);
  lua_pushnil(L);
  int from = lua_gettop(L) - 3;
  for (int i = 1; i < n && i <= 3; i++)
    lua_copy(L, tag + i, from + i);
  reply(L, from, from + 1);
  lua_pushvalue(L, from + 2);
  lua_setfield(L, S, "state");
  set_timeout(L, from + 3);
  return 1;
}

/* Wait for the next message, as the Lua loop did: mb.receive(s.timeout),
 * with a call taken apart (receive_call). */
static int wait(lua_State *L) {
  lua_settop(L, LAST - 1);
  lua_pushnil(L); /* the last call's From and Request, not kept idle */
  lua_replace(L, CALL_FROM);
  lua_pushnil(L);
  lua_replace(L, CALL_REQ);
  int cont = lua_getfield(L, S, "continue") != LUA_TNIL;
  lua_pop(L, 1);
  if (cont) {
    lua_pushnil(L); /* LAST, and the event's a and b */
    lua_pushnil(L);
    lua_pushnil(L);
    return rare(L, "continue");
  }
  lua_pushnil(L); /* LAST */
  lua_pushcfunction(L, mb_lua_receive_call);
  lua_getfield(L, S, "timeout");
  lua_pushvalue(L, A_CALL);
  lua_callk(L, 2, LUA_MULTRET, K_RECEIVED, serve_k);
  return serve_k(L, LUA_OK, K_RECEIVED);
}

/* Is the module the server runs one that moonbeam.code changed since? */
static int code_changed(lua_State *L) {
  if (lua_getfield(L, S, "gen") == LUA_TNIL || lua_isnil(L, GEN_FN)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushvalue(L, GEN_FN);
  lua_call(L, 0, 1);
  int changed = !lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return changed;
}

/* A call receive_call took apart (Label, From, Request above LAST):
 * handle_call(Request, From, State), with From and Request kept below
 * LAST and LAST false, for what follows the callback. */
static int dispatch_call(lua_State *L) {
  if (code_changed(L)) {
    whole_call(L);
    lua_pushnil(L);
    return rare(L, "message");
  }
  lua_replace(L, CALL_REQ);
  lua_replace(L, CALL_FROM);
  lua_settop(L, LAST - 1);
  lua_pushboolean(L, 0); /* LAST */
  lua_pushvalue(L, CALL_REQ);
  lua_pushvalue(L, CALL_FROM);
  lua_getfield(L, S, "state");
  return call_back(L, "handle_call", 3, K_CALLED);
}

/* What receive_call gave (above LAST): handled here, or handed to the Lua
 * side. */
static int dispatch(lua_State *L) {
  if (lua_gettop(L) - LAST == 3)
    return dispatch_call(L);
  lua_settop(L, LAST + 2); /* the message and receive's second result */
  int msg = LAST + 1;
  if (code_changed(L))
    return rare(L, "message");
  if (lua_isnil(L, msg)) { /* the server's timeout */
    if (lua_getfield(L, S, "timeout") == LUA_TNIL ||
        !has_callback(L, "handle_info")) {
      lua_pop(L, 1);
      return rare(L, "message");
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setfield(L, S, "timeout");
    lua_settop(L, LAST - 1);
    lua_pushvalue(L, A_TIMEOUT); /* LAST */
    lua_pushvalue(L, A_TIMEOUT);
    lua_getfield(L, S, "state");
    return call_back(L, "handle_info", 2, K_NOREPLIED);
  }
  lua_settop(L, msg);
  lua_replace(L, LAST);
  int kind = 0;
  if (mb_lua_is_tuple(L, LAST)) {
    lua_rawgeti(L, LAST, 1);
    for (int a = A_CALL; a <= A_EXIT && !kind; a++)
      if (lua_rawequal(L, -1, a))
        kind = a;
    lua_pop(L, 1);
  }
  if (kind == A_CALL) {
    lua_rawgeti(L, LAST, 3);
    lua_rawgeti(L, LAST, 2);
    lua_getfield(L, S, "state");
    return call_back(L, "handle_call", 3, K_CALLED);
  }
  if (kind == A_CAST) {
    if (!has_callback(L, "handle_cast")) {
      lua_pushnil(L); /* as noreply with the state as it is */
      lua_setfield(L, S, "timeout");
      return wait(L);
    }
    lua_rawgeti(L, LAST, 2);
    lua_getfield(L, S, "state");
    return call_back(L, "handle_cast", 2, K_NOREPLIED);
  }
  if (kind == A_EXIT) { /* from the parent: the server ends */
    lua_rawgeti(L, LAST, 2);
    lua_getfield(L, S, "parent");
    if (!lua_compare(L, -1, -2, LUA_OPEQ))
      kind = 0; /* from anyone else: info */
    lua_pop(L, 2);
  }
  if (kind != 0 || !has_callback(L, "handle_info")) {
    lua_pushvalue(L, LAST);
    lua_pushnil(L);
    return rare(L, "message");
  }
  lua_pushvalue(L, LAST);
  lua_getfield(L, S, "state");
  return call_back(L, "handle_info", 2, K_NOREPLIED);
}

static int serve_k(lua_State *L, int status, lua_KContext ctx) {
  int ok = status == LUA_OK || status == LUA_YIELD;
  switch ((int)ctx) {
  case K_RECEIVED:
    return dispatch(L);
  case K_CALLED:
    if (ok && (replied(L) || noreply(L)))
      return wait(L);
    make_whole(L);
    pack_results(L, ok);
    return rare(L, "call");
  case K_NOREPLIED:
    if (ok && noreply(L))
      return wait(L);
    pack_results(L, ok);
    return rare(L, "noreply");
  case K_REQUIRED: /* kind, a, b, module */
    lua_getfield(L, -1, "event");
    lua_replace(L, -2);
    lua_pushvalue(L, S);
    lua_rotate(L, -5, 2); /* event, s, kind, a, b */
    lua_callk(L, 4, 0, K_RARE_DONE, serve_k);
    /* fall through */
  case K_RARE_DONE:
    forget(L);
    return wait(L);
  }
  return luaL_error(L, "gen_serve: bad continuation");
}

/* gen_serve(s, generation, rare, forget): serve messages until the server
 * ends (it never returns).  s is the server table; generation is
 * moonbeam.codecache's, called before each message when s.gen is set;
 * rare names the module whose event(s, kind, a, b) takes what the loop
 * leaves to Lua:
 *
 *   "message", msg, why     a message, or receive's nil, "timeout"
 *   "continue"              s.continue is set
 *   "call", msg, r          handle_call's outcome r, as gen.pack(xpcall())
 *   "noreply", last, r      handle_cast's, handle_info's
 *
 * generation nil stands for moonbeam.codecache's.  `forget` names the
 * modules (separated by spaces) dropped from package.loaded, with `rare`,
 * before the loop starts and after each event; when the first drop finds
 * any of them loaded (a start that went through Lua), a full collection
 * follows, so that an idle server keeps only what it needs. */
int mb_lgen_serve(lua_State *L) {
  luaL_checktype(L, S, LUA_TTABLE);
  luaL_checkstring(L, RARE);
  luaL_checkstring(L, FORGET);
  lua_settop(L, FORGET);
  lua_pushcfunction(L, on_error);
  for (int a = AT_CALL; a <= AT_NOREPLY; a++)
    push_atom(L, a);
  /* Room for a call's message and results (4 at most, or they go to
   * pack_results) and what replied() and reply() push on top of them; no
   * more, as the stack of an idle server keeps what its frames reserve.
   * LAST counts the slots below the message. */
  luaL_checkstack(L, LAST + 4 + 4 + 10 - lua_gettop(L), "gen_serve");
  if (lua_isnil(L, GEN_FN)) {
    lua_pushcfunction(L, mb_lua_code_generation);
    lua_replace(L, GEN_FN);
  }
  if (forget(L))
    lua_gc(L, LUA_GCCOLLECT);
  return wait(L);
}

/* ---- gen_init: a GenServer's start, in the new process ----
 *
 * What gen_server.start asks of the new process (OTP's init_it): take the
 * name, run init(Args) in a protected call, tell the starter how it went
 * ({'$gen_ack', Ref, true, nil}) and go on to the loop.  Written in Lua,
 * that code is loaded from the node's code cache by every server it
 * starts, which was most of the cost of a start.  Here the common case
 * runs in C: no name or a local one that is free, and init returning
 * "ok", State [, Timeout | {continue = x}].  Anything else (a global or
 * via name, a name taken, init raising or returning ignore, stop or a
 * bad value) goes to the Lua side, moonbeam.gen_server_event, which
 * handles it as the whole start in Lua does. */

/* The stack of gen_init. */
enum {
  I_STARTER = 1,
  I_REF,
  I_PARENT,
  I_NAME,
  I_MODULE,
  I_ARGS,
  I_S,    /* the server table */
  I_MSGH, /* the message handler of init */
  I_TOP   /* init's results from here */
};

/* What init_body's continuation resumes. */
enum { B_MODULE, B_INIT };

/* init_body(s, module, args) -> init's results: the callback module (a
 * table, or the name of a module to require) in s.mod, the code
 * generation in s.gen if it was named, then s.mod.init(args), all inside
 * the protected call so that a module that cannot be loaded fails the
 * start as init raising does. */
static int init_body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (ctx == B_INIT)
    return lua_gettop(L) - 4;
  lua_pushvalue(L, 4); /* the module */
  lua_setfield(L, 1, "mod");
  if (lua_type(L, 2) == LUA_TSTRING) {
    mb_lua_code_generation(L);
    lua_setfield(L, 1, "gen");
  }
  lua_getfield(L, 4, "init");
  lua_pushvalue(L, 3);
  lua_callk(L, 1, LUA_MULTRET, B_INIT, init_body_k);
  return init_body_k(L, LUA_OK, B_INIT);
}

static int init_body(lua_State *L) {
  lua_settop(L, 3);
  if (lua_type(L, 2) != LUA_TSTRING) {
    lua_pushvalue(L, 2);
    return init_body_k(L, LUA_OK, B_MODULE);
  }
  lua_getglobal(L, "require");
  lua_pushvalue(L, 2);
  lua_callk(L, 1, 1, B_MODULE, init_body_k);
  return init_body_k(L, LUA_OK, B_MODULE);
}

/* init's results (above I_MSGH) as a start: "ok", State [, Timeout |
 * {continue = x}] kept in s, true; or false for the Lua side. */
static int started(lua_State *L) {
  int n = lua_gettop(L) - I_MSGH;
  int tag = I_TOP, action = I_TOP + 2;
  if (n < 1 || n > 3)
    return 0;
  if (lua_type(L, tag) == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, tag), "ok") != 0)
      return 0;
  } else {
    push_atom(L, AT_OK);
    int ok = lua_rawequal(L, tag, -1);
    lua_pop(L, 1);
    if (!ok)
      return 0;
  }
  int t = n < 3 ? LUA_TNIL : lua_type(L, action);
  if (t == LUA_TTABLE) { /* {continue = x}: a table with a metatable is
                          * the Lua side's, where x.continue is read */
    if (lua_getmetatable(L, action)) {
      lua_pop(L, 1);
      return 0;
    }
    if (lua_getfield(L, action, "continue") == LUA_TNIL) {
      lua_pop(L, 1);
      return 0;
    }
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_setfield(L, I_S, "continue");
  } else if (t == LUA_TNUMBER) {
    lua_pushvalue(L, action);
    lua_setfield(L, I_S, "timeout");
  } else if (t != LUA_TNIL) {
    return 0;
  }
  if (n < 2)
    lua_pushnil(L);
  else
    lua_pushvalue(L, tag + 1);
  lua_setfield(L, I_S, "state");
  return 1;
}

/* Tell the starter that init is done: {'$gen_ack', Ref, true, nil}, as
 * gen.ack sends it (written in C unless the process is traced). */
static void ack(lua_State *L) {
  if (mb_lua_gen_ack(L, I_STARTER, I_REF))
    return;
  lua_pushcfunction(L, mb_lua_send);
  lua_pushvalue(L, I_STARTER);
  lua_pushcfunction(L, mb_lua_tuple);
  push_atom(L, AT_GEN_ACK);
  lua_pushvalue(L, I_REF);
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_call(L, 4, 1);
  lua_call(L, 2, 0);
}

static int init_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  int ok = status == LUA_OK || status == LUA_YIELD;
  if (ok && started(L)) {
    ack(L);
    lua_settop(L, I_S);
    return 1;
  }
  /* s and init's outcome, {n = N, ok, results...} as gen.pack(xpcall())
   * gives it, for the Lua side. */
  int n = lua_gettop(L) - I_MSGH;
  lua_createtable(L, n + 1, 1);
  lua_pushboolean(L, ok);
  lua_rawseti(L, -2, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, I_MSGH + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n + 1);
  lua_setfield(L, -2, "n");
  lua_pushvalue(L, I_S);
  lua_insert(L, -2);
  return 2;
}

/* gen_init(starter, ref, parent, name, module, args) -> s | s, r |
 * nothing: a GenServer's start, in its process (see above).  s: started
 * and acknowledged, the server table for gen_serve.  s, r: the name is
 * taken and init ran, its outcome r (as gen.pack(xpcall()) gives it) not
 * a plain start.  Nothing: the name is not one this takes (global, via)
 * or another process has it; nothing was done. */
int mb_lgen_init(lua_State *L) {
  lua_settop(L, I_ARGS);
  int t = lua_type(L, I_NAME);
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING && t != LUA_TLIGHTUSERDATA)
      return 0;
    lua_pushcfunction(L, mb_lua_register);
    lua_pushvalue(L, I_NAME);
    mb_lua_push_pid(L, mb_lua_self_pid(L));
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      return 0;
  }
  int named = lua_type(L, I_MODULE) == LUA_TSTRING;
  lua_createtable(L, 0,
                  (t != LUA_TNIL) + !lua_isnil(L, I_PARENT) + 2 * named + 2);
  if (t != LUA_TNIL) {
    lua_pushvalue(L, I_NAME);
    lua_setfield(L, I_S, "name");
  }
  if (!lua_isnil(L, I_PARENT)) {
    lua_pushvalue(L, I_PARENT);
    lua_setfield(L, I_S, "parent");
  }
  if (named) {
    lua_pushvalue(L, I_MODULE);
    lua_setfield(L, I_S, "modname");
  }
  lua_pushcfunction(L, on_error); /* I_MSGH */
  lua_pushcfunction(L, init_body);
  lua_pushvalue(L, I_S);
  lua_pushvalue(L, I_MODULE);
  lua_pushvalue(L, I_ARGS);
  lua_pcallk(L, 3, LUA_MULTRET, I_MSGH, 0, init_k);
  return init_k(L, LUA_OK, 0);
}
