/* Coroutines inside processes.
 *
 * A process may use coroutines freely, and code inside a coroutine may be
 * preempted, receive and sleep.  For that, processes get their own
 * coroutine.resume and coroutine.wrap: when the coroutine they resume
 * yields to the scheduler (rather than to its resumer), they yield their own
 * thread too, and so on up to the process's main thread; when the process
 * runs again, each level resumes the one below it. */
#include <lauxlib.h>

#include "internal.h"

/* Resume `co` with `narg` values already on its stack.  Returns the number
 * of results moved to L, or -1 with the error on L's stack, or -2 if the
 * coroutine yielded to the scheduler. */
static int resume(lua_State *L, lua_State *co, int narg) {
  mb_proc_t *p = MB_PROC(L);
  int status = lua_status(co);
  if (status == LUA_OK && lua_gettop(co) == narg) {
    lua_pushliteral(L, "cannot resume dead coroutine");
    return -1;
  }
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_pushliteral(L, "cannot resume dead coroutine");
    return -1;
  }
  int nres;
  mb__proc_coro_hook(co);
  p->co_depth++;
  p->co_top = co;
  status = lua_resume(co, L, narg, &nres);
  p->co_depth--;
  if (status == LUA_YIELD && p->sched_yield) {
    lua_pop(co, nres);
    return -2;
  }
  p->co_top = L == p->L ? NULL : L;
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

/* Pass a scheduler yield up, or, where this thread cannot yield, let the
 * coroutine go on (it will be preempted at a later point). */
static int propagate(lua_State *L, lua_KContext ctx, lua_KFunction k) {
  if (lua_isyieldable(L))
    return lua_yieldk(L, 0, ctx, k);
  mb_proc_t *p = MB_PROC(L);
  if (p->yield_kind == MB_YIELD_WAIT)
    return luaL_error(L, "cannot wait for messages here (inside a C call)");
  p->sched_yield = false;
  return k(L, LUA_YIELD, ctx);
}

/* coroutine.resume's results from resume()'s: true and the r values it
 * left, or false and the error (r < 0). */
static int resume_results(lua_State *L, int r) {
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_resume_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_State *co = lua_tothread(L, 1);
  int base = (int)ctx; /* stack height of L before results */
  lua_settop(L, base);
  int r = resume(L, co, 0);
  if (r == -2)
    return propagate(L, ctx, co_resume_k);
  return resume_results(L, r);
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co != NULL, 1, "coroutine");
  int narg = lua_gettop(L) - 1;
  if (!lua_checkstack(co, narg))
    return luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, narg);
  int r = resume(L, co, narg);
  if (r == -2)
    return propagate(L, 1, co_resume_k);
  return resume_results(L, r);
}

static int wrap_finish(lua_State *L, int r, lua_KContext ctx);

static int wrap_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  lua_settop(L, (int)ctx);
  return wrap_finish(L, resume(L, co, 0), ctx);
}

static int wrap_finish(lua_State *L, int r, lua_KContext ctx) {
  if (r == -2)
    return propagate(L, ctx, wrap_k);
  if (r < 0) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

static int wrap_call(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int narg = lua_gettop(L);
  if (!lua_checkstack(co, narg))
    return luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, narg);
  return wrap_finish(L, resume(L, co, narg), 0);
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, wrap_call, 1);
  return 1;
}

/* Replace resume and wrap in the coroutine table on top of the stack. */
void mb__coro_patch(lua_State *L) {
  lua_pushcfunction(L, co_resume);
  lua_setfield(L, -2, "resume");
  lua_pushcfunction(L, co_wrap);
  lua_setfield(L, -2, "wrap");
}
