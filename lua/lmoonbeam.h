/* The binding's functions for the programs that link it (the launcher, the
 * C tests), beside the public moonbeam.h. */
#ifndef MB_LMOONBEAM_H
#define MB_LMOONBEAM_H

#include <lua.h>

/* The module `moonbeam` (require "moonbeam"). */
int luaopen_moonbeam(lua_State *L);

/* The modules `moonbeam.socket` (lsocket.c) and `moonbeam.term`
 * (lterm.c), and their registration as preloaded modules of every
 * process. */
int luaopen_moonbeam_socket(lua_State *L);
int luaopen_moonbeam_term(lua_State *L);
/* moonbeam.crypto (lcrypto.c): hashes, random bytes, AES-256-CBC. */
int luaopen_moonbeam_crypto(lua_State *L);
void mb_lsocket_register(lua_State *L);
/* mb.send to a port or socket (Erlang's Port ! {Pid, ...}): 1 when idx 1
 * is one and the message was taken, 0 when it is not a socket. */
int mb_lsocket_port_send(lua_State *L);

/* gen_serve(s, generation, rare, forget): a GenServer's receive-and-
 * dispatch loop (lgenserve.c). */
int mb_lgen_serve(lua_State *L);
/* gen_init(starter, ref, parent, name, module, args): a GenServer's start
 * in its own process, up to the loop (lgenserve.c). */
int mb_lgen_init(lua_State *L);

/* start_distribution(settings): the one place that starts distribution,
 * for Lua code and for the launcher alike.  Raises on failure. */
int lmb_start_distribution(lua_State *L);

#endif
