/* Processes: the process table, spawning, the Lua state of each process,
 * running a slice, and exiting.
 *
 * Threads: a process's Lua state and the fields under "owned by the thread
 * running the process" are touched by one scheduler thread at a time (the
 * one that took it from a run queue).  Other threads push onto its inbox
 * without a lock (mailbox.c) and wake it; everything else they do to it
 * (wait for it, read its links or queue) goes through its lock. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "internal.h"

#define SHARDS 64
/* Inside coroutines, where the watchdog cannot reach, a count hook checks
 * every CORO_HOOK_COUNT instructions whether the slice is over. */
#define CORO_HOOK_COUNT 1000

typedef struct {
  uv_mutex_t lock;
  mb__map_t map; /* pid -> mb_proc_t* */
} shard_t;

struct mb__waitlink_s {
  mb__waitlink_t *next;
  uv_mutex_t lock;
  uv_cond_t cond;
  bool done;
  int normal;
  mb_msg_t *reason;
  mb_pid_t pid;
};

static shard_t shards[SHARDS];
static atomic_uint next_pid = 1;
static atomic_size_t nprocs;
static mb_config_t config;

#define MAX_PRELOAD 16
/* Preloaded modules: appended under preload_lock, read without a lock by
 * every process (an entry is complete before npreload counts it). */
static struct {
  char name[64];
  lua_CFunction open;
} preload[MAX_PRELOAD];
static atomic_int npreload;
static uv_mutex_t preload_lock = MB__MUTEX_INIT;

static lua_CFunction find_preload(const char *name) {
  int n = atomic_load_explicit(&npreload, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (strcmp(preload[i].name, name) == 0)
      return preload[i].open;
  return NULL;
}

int mb_node_preload(const char *name, lua_CFunction open) {
  lua_CFunction have = find_preload(name);
  if (have != NULL)
    return have == open ? 0 : MB_EEXIST;
  if (strlen(name) >= sizeof preload[0].name)
    return MB_EINVAL;
  uv_mutex_lock(&preload_lock);
  int n = atomic_load(&npreload), err = 0;
  if (find_preload(name) == NULL) {
    if (n == MAX_PRELOAD) {
      err = MB_ENOMEM;
    } else {
      strcpy(preload[n].name, name);
      preload[n].open = open;
      atomic_store_explicit(&npreload, n + 1, memory_order_release);
    }
  }
  uv_mutex_unlock(&preload_lock);
  return err;
}

int mb__proc_init(void) {
  static bool once;
  if (once)
    return 0;
  once = true;
  for (int i = 0; i < SHARDS; i++) {
    uv_mutex_init(&shards[i].lock);
    mb__map_init(&shards[i].map);
  }
  return 0;
}

/* Call fn on every live process, each shard under its lock (fn must not
 * block or call back into the table). */
static void each_proc(void (*fn)(mb_proc_t *p, void *ctx), void *ctx) {
  for (int i = 0; i < SHARDS; i++) {
    shard_t *s = &shards[i];
    uv_mutex_lock(&s->lock);
    size_t it = 0;
    uint64_t key;
    void *val;
    while (mb__map_next(&s->map, &it, &key, &val))
      fn(val, ctx);
    uv_mutex_unlock(&s->lock);
  }
}

/* Pids gathered by each_proc, at most cap of them. */
typedef struct {
  mb_pid_t *pids;
  size_t n, cap;
} pid_list_t;

static void add_pid(mb_proc_t *p, void *ctx) {
  pid_list_t *l = ctx;
  if (l->n < l->cap)
    l->pids[l->n++] = p->pid;
}

const mb_config_t *mb__config(void) { return &config; }

void mb__proc_config(const mb_config_t *cfg) {
  config = *cfg;
  if (config.max_processes == 0)
    config.max_processes = MB_MAX_PROCESSES_DEFAULT;
  if (config.max_processes > MB_PID_MAX / 2)
    config.max_processes = MB_PID_MAX / 2; /* leave free numbers to find */
  config.lua_path = cfg->lua_path ? strdup(cfg->lua_path) : NULL;
  config.lua_cpath = cfg->lua_cpath ? strdup(cfg->lua_cpath) : NULL;
}

/* ---- the process table ---- */

static shard_t *shard_of(mb_pid_t pid) { return &shards[pid % SHARDS]; }

/* Count a process about to be spawned, unless the node has its limit of
 * processes alive; the count drops when the process has ended, its Lua
 * state closed (finalizers run as part of it). */
static bool count_add(void) {
  if (atomic_fetch_add(&nprocs, 1) < config.max_processes)
    return true;
  atomic_fetch_sub(&nprocs, 1);
  return false;
}

static void count_remove(void) { atomic_fetch_sub(&nprocs, 1); }

static mb_pid_t table_add(mb_proc_t *p) {
  for (;;) {
    mb_pid_t pid = atomic_fetch_add(&next_pid, 1) & MB_PID_MAX;
    if (pid == 0)
      continue;
    shard_t *s = shard_of(pid);
    uv_mutex_lock(&s->lock);
    int taken = mb__map_get(&s->map, pid) != NULL;
    int err = taken ? 0 : mb__map_put(&s->map, pid, p);
    uv_mutex_unlock(&s->lock);
    if (err)
      return 0;
    if (!taken)
      return pid;
  }
}

static void table_remove(mb_pid_t pid) {
  shard_t *s = shard_of(pid);
  uv_mutex_lock(&s->lock);
  mb__map_del(&s->map, pid);
  uv_mutex_unlock(&s->lock);
}

mb_proc_t *mb__proc_lookup(mb_pid_t pid) {
  if (pid == 0)
    return NULL;
  shard_t *s = shard_of(pid);
  uv_mutex_lock(&s->lock);
  mb_proc_t *p = mb__map_get(&s->map, pid);
  if (p != NULL)
    atomic_fetch_add(&p->refs, 1);
  uv_mutex_unlock(&s->lock);
  return p;
}

void mb__proc_unref(mb_proc_t *p) {
  if (atomic_fetch_sub(&p->refs, 1) == 1) {
    uv_mutex_destroy(&p->lock);
    mb__mem_free(p);
  }
}

size_t mb_proc_count(void) { return atomic_load(&nprocs); }

int mb_proc_alive(mb_pid_t pid) {
  mb_proc_t *p = mb__proc_lookup(pid);
  if (p == NULL)
    return 0;
  mb__proc_unref(p);
  return 1;
}

/* ---- the Lua state of a process ---- */

/* Every allocation of a process's state goes through here, so that its
 * memory is known and its limit enforced. */
static void *proc_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mb_proc_t *p = ud;
  /* Only the owner writes mem; others read it for process_info. */
  size_t mem = atomic_load_explicit(&p->mem, memory_order_relaxed);
  if (ptr == NULL)
    osize = 0;
  if (nsize == 0) {
    mb__mem_free(ptr);
    atomic_store_explicit(&p->mem, mem - osize, memory_order_relaxed);
    return NULL;
  }
  if (nsize > osize && p->max_mem != 0 && mem + nsize - osize > p->max_mem) {
    /* Refused: Lua raises "not enough memory", and the process ends at
     * the next instruction where it can, even if it catches the error. */
    if (!p->mem_exceeded && p->L != NULL)
      mb__proc_poke(p);
    p->mem_exceeded = true;
    return NULL;
  }
  /* A new block takes the allocator's fast path, not realloc's. */
  void *n = ptr == NULL ? mb__mem_alloc(nsize) : mb__mem_realloc(ptr, nsize);
  if (n != NULL)
    atomic_store_explicit(&p->mem, mem + nsize - osize, memory_order_relaxed);
  return n;
}

mb_proc_t *mb__proc_of(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == proc_alloc ? ud : NULL;
}

static const luaL_Reg stdlibs[] = {
    {LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
    {LUA_IOLIBNAME, luaopen_io},        {LUA_OSLIBNAME, luaopen_os},
    {LUA_STRLIBNAME, luaopen_string},   {LUA_MATHLIBNAME, luaopen_math},
    {LUA_UTF8LIBNAME, luaopen_utf8},    {LUA_DBLIBNAME, luaopen_debug},
    {LUA_LOADLIBNAME, luaopen_package}, {NULL, NULL}};

static lua_CFunction stdlib_opener(const char *name) {
  for (const luaL_Reg *l = stdlibs; l->name; l++)
    if (strcmp(l->name, name) == 0)
      return l->func;
  return NULL;
}

/* package.preload's loader for a standard library: require "os" opens it
 * as the globals' lazy __index would, so lazy loading stays invisible. */
static int stdlib_loader(lua_State *L) {
  mb__require(L, luaL_checkstring(L, 1));
  return 1;
}

bool mb__require_opener(const char *name) {
  return strcmp(name, LUA_GNAME) == 0 || stdlib_opener(name) != NULL ||
         find_preload(name) != NULL;
}

static void open_package(lua_State *L) {
  luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 1);
  /* The package library's own require, for mb__modcache_require to hand
   * over to (the global may be replaced by then). */
  if (lua_getfield(L, LUA_REGISTRYINDEX, MB__REQUIRE_KEY) == LUA_TNIL) {
    lua_getglobal(L, "require");
    lua_setfield(L, LUA_REGISTRYINDEX, MB__REQUIRE_KEY);
  }
  lua_pop(L, 1);
  if (config.lua_path) {
    lua_pushstring(L, config.lua_path);
    lua_setfield(L, -2, "path");
  }
  if (config.lua_cpath) {
    lua_pushstring(L, config.lua_cpath);
    lua_setfield(L, -2, "cpath");
  }
  mb__modcache_install(L);
  lua_getfield(L, -1, "preload");
  int n = atomic_load_explicit(&npreload, memory_order_acquire);
  for (int i = 0; i < n; i++) {
    lua_pushcfunction(L, preload[i].open);
    lua_setfield(L, -2, preload[i].name);
  }
  for (const luaL_Reg *l = stdlibs; l->name; l++) {
    lua_pushcfunction(L, stdlib_loader);
    lua_setfield(L, -2, l->name);
  }
  lua_pushcfunction(L, stdlib_loader);
  lua_setfield(L, -2, LUA_GNAME);
  lua_pop(L, 2);
}

/* Standard libraries are opened on first use, so an idle process pays only
 * for the bare state.  The base library too, one function at a time: a
 * process that calls type and pcall has those two in its globals, not the
 * library's twenty-odd.  Its functions are found by name in base_fns, read
 * once from a state of its own (they have no upvalues, so one serves every
 * state). */
typedef struct {
  char name[24];
  lua_CFunction fn;
} base_fn_t;

static base_fn_t base_fns[48];
static int nbase_fns;
static uv_once_t base_once = UV_ONCE_INIT;

static void read_base_fns(void) {
  lua_State *S = luaL_newstate();
  if (S == NULL)
    return; /* then ensure_base opens the whole library */
  luaL_requiref(S, LUA_GNAME, luaopen_base, 1);
  lua_pushnil(S);
  while (lua_next(S, -2) != 0) {
    size_t len;
    const char *k =
        lua_type(S, -2) == LUA_TSTRING ? lua_tolstring(S, -2, &len) : NULL;
    if (k != NULL && len < sizeof base_fns[0].name &&
        lua_tocfunction(S, -1) != NULL &&
        nbase_fns < (int)(sizeof base_fns / sizeof base_fns[0])) {
      memcpy(base_fns[nbase_fns].name, k, len + 1);
      base_fns[nbase_fns++].fn = lua_tocfunction(S, -1);
    }
    lua_pop(S, 1);
  }
  lua_close(S);
}

static void ensure_base(lua_State *L);

/* Push the base library's value `k` (a function, _G or _VERSION) and set
 * it in the globals at 1; false, with nothing pushed, if there is none. */
static bool push_base(lua_State *L, const char *k) {
  uv_once(&base_once, read_base_fns);
  if (nbase_fns == 0) { /* no list (out of memory): the whole library */
    ensure_base(L);
    lua_pushstring(L, k);
    if (lua_rawget(L, 1) != LUA_TNIL)
      return true;
    lua_pop(L, 1);
    return false;
  }
  if (strcmp(k, LUA_GNAME) == 0) {
    lua_pushglobaltable(L);
  } else if (strcmp(k, "_VERSION") == 0) {
    lua_pushliteral(L, LUA_VERSION);
  } else {
    int i = 0;
    while (i < nbase_fns && strcmp(base_fns[i].name, k) != 0)
      i++;
    if (i == nbase_fns)
      return false;
    lua_pushcfunction(L, base_fns[i].fn);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, 1, k);
  return true;
}

/* Set the value on top as field k of the table below it, unless the table
 * has one already; pops the value. */
static void set_if_nil(lua_State *L, const char *k) {
  lua_pushstring(L, k);
  bool has = lua_rawget(L, -3) != LUA_TNIL;
  lua_pop(L, 1);
  if (has) {
    lua_pop(L, 1);
    return;
  }
  lua_setfield(L, -2, k);
}

/* The whole base library, as luaopen_base sets it (require "_G"), but for
 * what the process has set already: a global of its own stays. */
static void ensure_base(lua_State *L) {
  uv_once(&base_once, read_base_fns);
  if (nbase_fns == 0) {
    luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
    lua_pop(L, 1);
    return;
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_GNAME) == LUA_TNIL) {
    lua_pushglobaltable(L);
    for (int i = 0; i < nbase_fns; i++) {
      lua_pushcfunction(L, base_fns[i].fn);
      set_if_nil(L, base_fns[i].name);
    }
    lua_pushglobaltable(L);
    set_if_nil(L, LUA_GNAME);
    lua_pushliteral(L, LUA_VERSION);
    set_if_nil(L, "_VERSION");
    lua_setfield(L, -3, LUA_GNAME);
  }
  lua_pop(L, 2);
}

/* Push package.loaded, made with room for the first module (most
 * processes load one: moonbeam), not a rehash when it comes. */
static void push_loaded(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
}

/* With package.loaded on top, which has no module `name`: open it with
 * `open` and leave it in package.loaded[name] and, in its place, on top
 * (luaL_requiref without looking package.loaded and the name up again). */
static void open_loaded(lua_State *L, const char *name, lua_CFunction open) {
  lua_pushcfunction(L, open);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  lua_remove(L, -2);
}

/* Push module `name`, opening standard and preloaded libraries directly and
 * anything else through require. */
void mb__require(lua_State *L, const char *name) {
  push_loaded(L);
  if (lua_getfield(L, -1, name) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1); /* package.loaded stays for a preload (open_loaded) */
  if (strcmp(name, LUA_GNAME) == 0) {
    lua_pop(L, 1);
    ensure_base(L);
    lua_pushglobaltable(L);
    return;
  }
  if (strcmp(name, LUA_LOADLIBNAME) == 0) {
    lua_pop(L, 1);
    open_package(L);
    lua_getglobal(L, LUA_LOADLIBNAME);
    return;
  }
  lua_CFunction open = stdlib_opener(name);
  if (open != NULL) {
    lua_pop(L, 1);
    luaL_requiref(L, name, open, 1);
    if (open == luaopen_coroutine)
      mb__coro_patch(L);
    return;
  }
  lua_CFunction pre = find_preload(name);
  if (pre != NULL) {
    open_loaded(L, name, pre);
    return;
  }
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    open_package(L);
    lua_getglobal(L, "require");
  }
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
}

/* __index of the globals table, and of strings until the string library
 * is opened: opens a library when its name is used.  (One metatable serves
 * both, to keep a new state small.) */
static int lazy_index(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    mb__require(L, LUA_STRLIBNAME);
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
  }
  const char *k = lua_tostring(L, 2);
  if (k == NULL)
    return 0;
  if (strcmp(k, "require") == 0) {
    /* A require that opens the package library only when it needs it. */
    lua_pushcfunction(L, mb__modcache_require);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "require");
    return 1;
  }
  if (stdlib_opener(k) != NULL) {
    mb__require(L, k);
    return 1;
  }
  return push_base(L, k) ? 1 : 0;
}

static void hook(lua_State *L, lua_Debug *ar);

static lua_State *new_state(mb_proc_t *p) {
  lua_State *L = lua_newstate(proc_alloc, p);
  if (L == NULL)
    return NULL;
  lua_pushglobaltable(L);
  lua_pushliteral(L, "");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_index);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -1);
  lua_setmetatable(L, -3);
  lua_setmetatable(L, -3);
  lua_pop(L, 2);
  return L;
}

/* Blank states made ahead of demand: a scheduler with nothing to run
 * makes a process structure and its bare state (lua_newstate and the
 * globals' metatable, about a third of a spawn's instructions, and the
 * first touch of fresh memory), and a spawn takes one instead of making
 * it.  The pool is refilled only while a scheduler idles, so it takes no
 * time from processes; a spawn that finds it empty makes its own. */
#define POOL_MAX 64
static uv_mutex_t pool_lock = MB__MUTEX_INIT;
static mb_proc_t *pool[POOL_MAX];
static atomic_int npool; /* written under pool_lock */
static atomic_size_t ntaken;

static mb_proc_t *blank_new(void) {
  mb_proc_t *p = mb__mem_alloc(sizeof *p);
  if (p == NULL)
    return NULL;
  memset(p, 0, sizeof *p);
  if ((p->L = new_state(p)) == NULL) {
    mb__mem_free(p);
    return NULL;
  }
  mb__value_prepare(p->L);
  return p;
}

static mb_proc_t *pool_take(void) {
  if (atomic_load_explicit(&npool, memory_order_relaxed) == 0)
    return NULL;
  uv_mutex_lock(&pool_lock);
  mb_proc_t *p = npool > 0 ? pool[--npool] : NULL;
  bool low = npool == POOL_MAX / 2;
  uv_mutex_unlock(&pool_lock);
  if (p != NULL)
    atomic_fetch_add_explicit(&ntaken, 1, memory_order_relaxed);
  if (low) /* a scheduler that sleeps may refill it */
    mb__sched_wake_idle();
  return p;
}

bool mb__proc_pool_fill(void) {
  if (atomic_load_explicit(&npool, memory_order_relaxed) >= POOL_MAX)
    return false;
  mb_proc_t *p = blank_new();
  if (p == NULL)
    return false;
  uv_mutex_lock(&pool_lock);
  bool kept = npool < POOL_MAX;
  if (kept)
    pool[npool++] = p;
  uv_mutex_unlock(&pool_lock);
  if (!kept) {
    lua_close(p->L);
    mb__mem_free(p);
  }
  return kept;
}

int mb__proc_pool_size(void) { return atomic_load(&npool); }

size_t mb__proc_pool_taken(void) { return atomic_load(&ntaken); }

void mb__proc_pool_drain(void) {
  uv_mutex_lock(&pool_lock);
  while (npool > 0) {
    mb_proc_t *p = pool[--npool];
    lua_close(p->L);
    mb__mem_free(p);
  }
  uv_mutex_unlock(&pool_lock);
}

/* Preemption.  A process runs without a hook (a count hook makes the Lua
 * VM trace every instruction, which halves its speed).  When its time
 * slice is over, the scheduler's watchdog thread pokes it: it sets a count
 * hook on the process's main thread (lua_sethook is safe to call from
 * another thread, as lua.c does from a signal handler) and raises `poked`.
 * The hook then yields to the scheduler at the first point where the
 * process can yield; code inside a C call that cannot yield (a sort
 * comparator, a receive matcher) runs on until it returns. */
static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mb_proc_t *p = MB_PROC(L);
  bool main = L == p->L;
  if (!main && !atomic_load(&p->poked) && !atomic_load(&p->sig_pending) &&
      !p->mem_exceeded)
    return; /* a coroutine's periodic check: the slice goes on */
  if ((!main && p->co_depth == 0) || !lua_isyieldable(L)) {
    if (main)
      lua_sethook(L, hook, LUA_MASKCOUNT, 100); /* try again soon */
    return;
  }
  if (main)
    lua_sethook(L, NULL, 0, 0);
  p->yield_kind = MB_YIELD_PREEMPT;
  if (p->mem_exceeded || mb__proc_handle_signals(p))
    p->yield_kind = MB_YIELD_EXIT;
  p->sched_yield = !main;
  lua_yield(L, 0);
}

void mb__proc_poke(mb_proc_t *p) {
  atomic_store(&p->poked, true);
  lua_sethook(p->L, hook, LUA_MASKCOUNT, 1);
}

void mb__proc_coro_hook(lua_State *co) {
  lua_sethook(co, hook, LUA_MASKCOUNT, CORO_HOOK_COUNT);
}

int mb__proc_yield(lua_State *L, mb__yield_kind_t kind, lua_KContext ctx,
                   lua_KFunction k) {
  mb_proc_t *p = MB_PROC(L);
  if (!lua_isyieldable(L))
    return luaL_error(L, "cannot wait or end the process here (inside a "
                         "C call such as a receive matcher or a sort "
                         "comparator)");
  p->yield_kind = kind;
  p->sched_yield = L != p->L;
  return lua_yieldk(L, 0, ctx, k);
}

/* ---- spawning ---- */

static mb__waitlink_t *waitlink_new(void);
static void waitlink_free(mb__waitlink_t *w);

static void proc_free(mb_proc_t *p) {
  mb_msg_free(p->start_fn);
  mb_msg_free(p->start_args);
  free(p->start_mod);
  free(p->start_fun);
  uv_mutex_destroy(&p->lock);
  mb__mem_free(p);
}

static int set_start(mb_proc_t *p, const mb_spawn_opts_t *o) {
  int kinds = (o->fn != NULL) + (o->module != NULL) + (o->file != NULL);
  if (kinds != 1 || (o->module != NULL) != (o->function != NULL))
    return MB_EINVAL;
  if (o->module != NULL) {
    p->start_mod = strdup(o->module);
    p->start_fun = strdup(o->function);
  } else if (o->file != NULL) {
    p->start_mod = strdup(o->file);
  }
  if (o->fn == NULL &&
      (p->start_mod == NULL || (o->module != NULL && p->start_fun == NULL)))
    return MB_ENOMEM;
  return 0;
}

int mb_proc_spawn_opts(mb_spawn_opts_t *o, mb_pid_t *out) {
  return mb__proc_spawn_remote(o, NULL, out);
}

int mb__proc_spawn_remote(mb_spawn_opts_t *o, const mb__spawn_remote_t *r,
                          mb_pid_t *out) {
  if (!count_add()) {
    mb_msg_free(o->fn);
    mb_msg_free(o->args);
    return MB_ELIMIT;
  }
  mb_proc_t *p = pool_take();
  if (p == NULL && (p = mb__mem_alloc(sizeof *p)) != NULL)
    memset(p, 0, sizeof *p);
  if (p == NULL) {
    count_remove();
    mb_msg_free(o->fn);
    mb_msg_free(o->args);
    return MB_ENOMEM;
  }
  atomic_init(&p->refs, 1);
  uv_mutex_init(&p->lock);
  p->state = MB_PS_RUNNABLE;
  p->saved_ref = LUA_NOREF;
  p->max_mem = o->max_heap ? o->max_heap : config.max_heap;
  p->mem_limit = p->max_mem;
  p->start_fn = o->fn;
  p->start_args = o->args;
  int err = set_start(p, o);
  if (err == 0 && p->L == NULL && (p->L = new_state(p)) == NULL)
    err = MB_ENOMEM;
  /* A blank state bigger than the limit: as lua_newstate would refuse. */
  if (err == 0 && p->max_mem != 0 && p->mem > p->max_mem)
    err = MB_ENOMEM;
  if (err == 0 && o->waiter != NULL && (p->waiters = waitlink_new()) == NULL)
    err = MB_ENOMEM;
  if (err == 0 && (p->pid = table_add(p)) == 0)
    err = MB_ENOMEM;
  if (err == 0 && (o->link || o->monitor)) {
    mb_proc_t *parent = mb__proc_lookup(o->parent);
    if (parent != NULL) {
      o->monitor_ref = o->monitor ? mb__ref_next() | MB_REF_ALIAS : 0;
      mb__link_new_child(parent, p, o->link, o->monitor_ref);
      mb__proc_unref(parent);
    }
  }
  if (err == 0 && r != NULL && r->watcher != 0) {
    uv_mutex_lock(&p->lock);
    if (r->watcher_link)
      mb__map_put(&p->links, r->watcher, (void *)1);
    if (r->watch_ref != 0)
      mb__map_put(&p->monitored_by, r->watch_ref,
                  (void *)(uintptr_t)r->watcher);
    uv_mutex_unlock(&p->lock);
  }
  if (err) {
    if (p->pid != 0)
      table_remove(p->pid);
    if (p->L != NULL)
      lua_close(p->L);
    if (p->waiters != NULL)
      waitlink_free(p->waiters);
    proc_free(p);
    count_remove();
    return err;
  }
  if (o->waiter != NULL) {
    p->waiters->pid = p->pid;
    *o->waiter = (mb_waiter_t *)p->waiters;
  }
  if (out != NULL)
    *out = p->pid;
  if (r != NULL && r->before_start != NULL)
    r->before_start(p->pid, r->before_start_arg);
  mb__sched_enqueue(p);
  return 0;
}

int mb_proc_spawn(mb_msg_t *fn, mb_msg_t *args, mb_pid_t *out) {
  mb_spawn_opts_t o = {0};
  o.fn = fn;
  o.args = args;
  return mb_proc_spawn_opts(&o, out);
}

int mb_proc_spawn_mfa(const char *mod, const char *fun, mb_msg_t *args,
                      mb_pid_t *out) {
  mb_spawn_opts_t o = {0};
  o.module = mod;
  o.function = fun;
  o.args = args;
  return mb_proc_spawn_opts(&o, out);
}

/* ---- the first slice: find the function and call it ---- */

static int main_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* Push the start arguments and return how many there are. */
static int push_args(lua_State *L, mb_proc_t *p, bool as_arg_global) {
  if (p->start_args == NULL)
    return 0;
  int nargs = as_arg_global ? -1 : mb__msg_decode_seq(L, p->start_args);
  if (nargs >= 0) {
    mb_msg_free(p->start_args);
    p->start_args = NULL;
    return nargs;
  }
  mb_msg_decode(L, p->start_args);
  mb_msg_free(p->start_args);
  p->start_args = NULL;
  if (as_arg_global) {
    lua_pushvalue(L, -1);
    lua_setglobal(L, "arg");
  }
  int t = lua_gettop(L);
  lua_getfield(L, t, "n");
  lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1)
                                       : (lua_Integer)lua_rawlen(L, t);
  lua_pop(L, 1);
  luaL_checkstack(L, (int)n, "too many arguments");
  for (lua_Integer i = 1; i <= n; i++)
    lua_rawgeti(L, t, i);
  lua_remove(L, t);
  return (int)n;
}

static int proc_main(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  /* A script (no function, no module) gets its arguments as `arg` too. */
  bool script = p->start_fn == NULL && p->start_fun == NULL;
  lua_settop(L, 0);
  if (p->start_fn != NULL) {
    mb_msg_decode(L, p->start_fn);
    mb_msg_free(p->start_fn);
    p->start_fn = NULL;
    if (!lua_isfunction(L, 1))
      return luaL_error(L, "spawn: not a function");
  } else if (p->start_fun == NULL) {
    ensure_base(L);
    if (luaL_loadfile(L, p->start_mod) != LUA_OK)
      return lua_error(L);
  } else {
    mb__require(L, p->start_mod);
    if (!lua_istable(L, -1))
      return luaL_error(L, "spawn: module '%s' is not a table", p->start_mod);
    if (lua_getfield(L, -1, p->start_fun) != LUA_TFUNCTION)
      return luaL_error(L, "spawn: module '%s' has no function '%s'",
                        p->start_mod, p->start_fun);
    lua_remove(L, -2);
  }
  int n = push_args(L, p, script);
  lua_callk(L, n, LUA_MULTRET, 0, main_k);
  return main_k(L, LUA_OK, 0);
}

/* ---- running and exiting ---- */

/* The crash report is built in a protected call, under the process's
 * memory limit and this much more: an error value whose __tostring raises,
 * loops on allocating or returns no string ends up as opaque text, and
 * running out of memory ends the report, never the node. */
#define REPORT_HEADROOM ((size_t)1 << 20)

/* Build the exit reason of a crashed process on its stack: a tuple of the
 * error value and the traceback, as Erlang gives {Reason, Stack}. */
static void push_crash_reason(lua_State *L, int err) {
  luaL_traceback(L, L, NULL, 0);
  lua_createtable(L, 2, 1);
  lua_pushvalue(L, err);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, 2);
  lua_pushinteger(L, 2);
  lua_setfield(L, -2, "n");
  mb__push_kind_mt(L, MB_KIND_TUPLE);
  lua_setmetatable(L, -2);
}

static void log_crash(lua_State *L, mb_proc_t *p, int reason) {
  lua_rawgeti(L, reason, 1);
  const char *what = mb__tostring(L, -1, NULL);
  lua_rawgeti(L, reason, 2);
  const char *tb = lua_tostring(L, -1);
  uv_mutex_lock(&p->lock);
  const mb__atom_t *name = p->name;
  uv_mutex_unlock(&p->lock);
  mb__log_report(MB_LOG_ERROR, "crash_report", p->pid,
                 "process <0.%u.%u>%s%s%s terminating\n"
                 "** (error) %s\n  %s",
                 MB_PID_ID(p->pid), MB_PID_SERIAL(p->pid),
                 name ? " (registered as " : "", name ? name->name : "",
                 name ? ")" : "", what, tb ? tb : "");
  lua_pop(L, 4);
}

/* report(err, p, out): log the crash and encode its reason into *out. */
static int report(lua_State *L) {
  mb_proc_t *p = lua_touserdata(L, 2);
  mb_msg_t **out = lua_touserdata(L, 3);
  push_crash_reason(L, 1);
  int reason = lua_gettop(L);
  if (mb__msg_encode(L, reason, "reason", out, NULL, 0) != 0) {
    /* An error value that cannot be sent: keep its text. */
    lua_rawgeti(L, reason, 1);
    mb__tostring(L, -1, NULL);
    lua_rawseti(L, reason, 1);
    lua_pop(L, 1);
    mb__msg_encode(L, reason, "reason", out, NULL, 0);
  }
  log_crash(L, p, reason);
  return 0;
}

static mb_msg_t *out_of_memory(mb_proc_t *p) {
  mb_log(MB_LOG_ERROR, "process <0.%u.%u> terminating: out of memory",
         MB_PID_ID(p->pid), MB_PID_SERIAL(p->pid));
  return mb__msg_atom(mb__atoms.out_of_memory);
}

/* The exit reason of a process that raised: {Error, Traceback}, logged in
 * a crash report.  A process over its memory limit gets {memory_limit,
 * Bytes} instead, and one whose memory ran out (or whose report could not
 * be built for want of memory) out_of_memory. */
static mb_msg_t *crash_reason(mb_proc_t *p, lua_State *L, int status) {
  mb_msg_t *m = NULL;
  if (p->mem_exceeded) {
    mb_log(MB_LOG_ERROR,
           "process <0.%u.%u> killed: it exceeded its memory limit of %zu "
           "bytes",
           MB_PID_ID(p->pid), MB_PID_SERIAL(p->pid), p->max_mem);
    m = mb__tuple_new(2);
    if (m != NULL &&
        (mb__tuple_atom(&m, mb__atoms.memory_limit) ||
         mb__tuple_int(&m, (lua_Integer)p->max_mem) || mb__tuple_end(&m, 2))) {
      mb_msg_free(m);
      m = NULL;
    }
    return m;
  }
  if (status == LUA_ERRMEM || !lua_checkstack(L, 4))
    return out_of_memory(p);
  size_t limit = p->max_mem;
  if (limit != 0)
    p->max_mem = limit + REPORT_HEADROOM;
  int err = lua_gettop(L);
  lua_pushcfunction(L, report);
  lua_pushvalue(L, err);
  lua_pushlightuserdata(L, p);
  lua_pushlightuserdata(L, &m);
  bool reported = lua_pcall(L, 3, 0, 0) == LUA_OK;
  if (!reported)
    lua_pop(L, 1);
  p->max_mem = limit;
  if (m == NULL)
    return out_of_memory(p);
  if (!reported)
    mb_log(MB_LOG_ERROR,
           "process <0.%u.%u> terminating (no crash report: out of memory)",
           MB_PID_ID(p->pid), MB_PID_SERIAL(p->pid));
  return m;
}

static void free_queue(mb_msg_t *m) {
  while (m != NULL) {
    mb_msg_t *next = m->next;
    mb_msg_free(m);
    m = next;
  }
}

/* Pack the values left on the stack by a finished process into a table. */
static void pack_results(lua_State *L, int nres) {
  lua_createtable(L, nres, 1);
  lua_insert(L, -nres - 1);
  for (int i = nres; i >= 1; i--)
    lua_rawseti(L, -i - 1, i);
  lua_pushinteger(L, nres);
  lua_setfield(L, -2, "n");
}

static void notify_waiters(mb__waitlink_t *w, const mb_msg_t *result,
                           int normal) {
  while (w != NULL) {
    mb__waitlink_t *next = w->next;
    uv_mutex_lock(&w->lock);
    w->reason = result ? mb__msg_dup(result) : NULL;
    w->normal = normal;
    w->done = true;
    uv_cond_signal(&w->cond);
    uv_mutex_unlock(&w->lock);
    w = next;
  }
}

/* End the process.  status is the Lua status of its last resume (LUA_YIELD
 * when an exit signal or exit() ends it, with p->exit_reason set). */
static void proc_exit(mb_proc_t *p, int status, int nres) {
  lua_State *L = p->L;
  mb__sched_leave();
  mb_msg_t *reason = p->exit_reason, *result = NULL;
  p->exit_reason = NULL;
  int normal;
  if (reason == NULL && status == LUA_OK)
    reason = mb__msg_atom(mb__atoms.normal);
  else if (reason == NULL)
    reason = crash_reason(p, L, status);
  if (reason == NULL)
    reason = mb__msg_atom(mb__atoms.killed); /* out of memory */
  normal = reason != NULL && mb__msg_is_atom(reason, mb__atoms.normal);
  if (reason != NULL && MB__TRACING(p, MB_TRACE_EXIT))
    mb__trace_exit(p, reason);

  uv_mutex_lock(&p->lock);
  atomic_store(&p->state, MB_PS_EXITING);
  mb__waitlink_t *waiters = p->waiters;
  p->waiters = NULL;
  mb_msg_t *inbox = mb__inbox_close(p);
  p->timer_gen++;
  uv_mutex_unlock(&p->lock);

  if (waiters != NULL && status == LUA_OK && normal) {
    p->max_mem = 0;
    pack_results(L, nres);
    char err[256];
    if (mb__msg_encode(L, -1, "result", &result, err, sizeof err) != 0)
      result = NULL;
  }
  table_remove(p->pid);
  mb__socket_owner_exit(p->pid);
  if (reason != NULL)
    mb__link_exit(p, reason, inbox);
  mb__proc_timer_disarm(p);
  free_queue(inbox);
  free_queue(p->q_head);
  p->q_head = p->q_tail = NULL;
  lua_close(L);
  p->L = NULL;
  count_remove();
  free(p->sq_keys);
  p->sq_keys = NULL;
  mb_msg_free(p->start_fn);
  mb_msg_free(p->start_args);
  free(p->start_mod);
  free(p->start_fun);
  p->start_fn = p->start_args = NULL;
  p->start_mod = p->start_fun = NULL;
  notify_waiters(waiters, result ? result : reason, normal);
  mb_msg_free(result);
  mb_msg_free(reason);
  mb__proc_unref(p);
}

static void add_reductions(mb_proc_t *p, uint64_t n) {
  uint64_t r = atomic_load_explicit(&p->reductions, memory_order_relaxed);
  atomic_store_explicit(&p->reductions, r + n, memory_order_relaxed);
}

/* Take the Lua state from a reader (stack.c), who gives it back within
 * microseconds: it copies a bounded number of frames, or of queued
 * messages (under the process's lock, as a sender takes it), and touches
 * nothing in the state meanwhile. */
static void hold_for_run(mb_proc_t *p) {
  int none = MB_HOLD_NONE;
  while (!atomic_compare_exchange_weak(&p->hold, &none, MB_HOLD_RUN)) {
    none = MB_HOLD_NONE;
    sched_yield();
  }
}

void mb__proc_run(mb_proc_t *p) {
  lua_State *L = p->L;
  int nargs = 0, nres = 0;
  /* Held until the slice ends, or for good if the process ends in it (a
   * reader then never touches the closed state). */
  hold_for_run(p);
  if (atomic_load(&p->sig_pending) && mb__proc_handle_signals(p)) {
    mb__sched_leave();
    proc_exit(p, LUA_YIELD, 0);
    return;
  }
  p->yield_kind = MB_YIELD_NONE;
  p->sched_yield = false;
  atomic_store(&p->poked, false);
  atomic_store_explicit(&p->on_cpu, true, memory_order_relaxed);
  lua_sethook(L, NULL, 0, 0);
  mb__sched_enter(p); /* a poke from now on ends this slice */
  if (!p->started) {
    p->started = true;
    lua_pushcfunction(L, proc_main);
  }
  int status = lua_resume(L, NULL, nargs, &nres);
  /* Another scheduler may take the process (and end it) once it is queued
   * again: the watchdog must be done with it first. */
  mb__sched_leave();
  atomic_store_explicit(&p->on_cpu, false, memory_order_relaxed);
  add_reductions(p, 1);
  if (status != LUA_YIELD || p->yield_kind == MB_YIELD_EXIT ||
      p->mem_exceeded) {
    proc_exit(p, status, nres);
    return;
  }
  lua_pop(L, nres);
  /* Given back before another scheduler can take the process. */
  atomic_store(&p->hold, MB_HOLD_NONE);
  if (p->yield_kind != MB_YIELD_WAIT) {
    mb__sched_enqueue(p);
    return;
  }
  /* Wait, unless what it waits for came meanwhile (see mb__proc_wake).
   * Once WAITING, a waker may run it elsewhere, even to its end: hold a
   * reference while looking. */
  atomic_fetch_add(&p->refs, 1);
  atomic_store(&p->state, MB_PS_WAITING);
  if (atomic_load(&p->inbox_head) != NULL || atomic_load(&p->timed_out)) {
    int waiting = MB_PS_WAITING;
    if (atomic_compare_exchange_strong(&p->state, &waiting, MB_PS_RUNNABLE))
      mb__sched_enqueue(p);
  }
  mb__proc_unref(p);
}

/* ---- waiting for a process from outside ---- */

static mb__waitlink_t *waitlink_new(void) {
  mb__waitlink_t *w = calloc(1, sizeof *w);
  if (w != NULL) {
    uv_mutex_init(&w->lock);
    uv_cond_init(&w->cond);
  }
  return w;
}

static void waitlink_free(mb__waitlink_t *w) {
  mb_msg_free(w->reason);
  uv_cond_destroy(&w->cond);
  uv_mutex_destroy(&w->lock);
  free(w);
}

int mb_waiter_new(mb_pid_t pid, mb_waiter_t **out) {
  mb_proc_t *p = mb__proc_lookup(pid);
  if (p == NULL)
    return MB_ENOPROC;
  mb__waitlink_t *w = waitlink_new();
  if (w == NULL) {
    mb__proc_unref(p);
    return MB_ENOMEM;
  }
  w->pid = pid;
  int err = 0;
  uv_mutex_lock(&p->lock);
  if (atomic_load(&p->state) == MB_PS_EXITING) {
    err = MB_ENOPROC;
  } else {
    w->next = p->waiters;
    p->waiters = w;
  }
  uv_mutex_unlock(&p->lock);
  mb__proc_unref(p);
  if (err) {
    waitlink_free(w);
    return err;
  }
  *out = (mb_waiter_t *)w;
  return 0;
}

int mb_waiter_wait(mb_waiter_t *waiter, long timeout_ms, mb_msg_t **reason,
                   int *normal) {
  mb__waitlink_t *w = (mb__waitlink_t *)waiter;
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  int err = 0;
  uv_mutex_lock(&w->lock);
  while (!w->done && err == 0) {
    if (timeout_ms < 0) {
      uv_cond_wait(&w->cond, &w->lock);
      continue;
    }
    uint64_t now = uv_hrtime();
    if (now >= deadline ||
        uv_cond_timedwait(&w->cond, &w->lock, deadline - now) != 0)
      err = w->done ? 0 : MB_ETIMEDOUT;
  }
  if (w->done) {
    *reason = w->reason;
    *normal = w->normal;
    w->reason = NULL;
  }
  uv_mutex_unlock(&w->lock);
  return err;
}

void mb_waiter_free(mb_waiter_t *waiter) {
  mb__waitlink_t *w = (mb__waitlink_t *)waiter;
  bool unlinked = false;
  mb_proc_t *p = mb__proc_lookup(w->pid);
  if (p != NULL) {
    uv_mutex_lock(&p->lock);
    for (mb__waitlink_t **pp = &p->waiters; *pp; pp = &(*pp)->next)
      if (*pp == w) {
        *pp = w->next;
        unlinked = true;
        break;
      }
    uv_mutex_unlock(&p->lock);
    mb__proc_unref(p);
  }
  /* Not in the list: the exiting process took it and will signal it. */
  uv_mutex_lock(&w->lock);
  while (!unlinked && !w->done)
    uv_cond_wait(&w->cond, &w->lock);
  uv_mutex_unlock(&w->lock);
  waitlink_free(w);
}

/* ---- inspection ---- */

static const char *state_name(mb__proc_state_t s) {
  static const char *names[] = {"runnable", "waiting", "exiting"};
  return names[s];
}

/* What process_info reports, copied under the process's lock so that no
 * Lua call (which may raise on memory) is made while holding it. */
typedef struct {
  const char *status;
  bool exiting, trap_exit;
  const mb__atom_t *name;
  size_t queue_len, mem, max_mem;
  uint64_t reductions;
  mb_pid_t *pids; /* links, then monitors, then monitored_by (malloc'd) */
  size_t npids[3];
} info_t;

/* Copy a table's pids: its keys (links) or its values (monitors). */
static size_t copy_pids(const mb__map_t *m, bool keys, mb_pid_t *out) {
  size_t n = 0, i = 0;
  uint64_t k;
  void *v;
  while (mb__map_next(m, &i, &k, &v))
    out[n++] = keys ? (mb_pid_t)k : (mb_pid_t)(uintptr_t)v;
  return n;
}

/* Take the snapshot; false when out of memory. */
static bool info_take(mb_proc_t *p, info_t *info) {
  uv_mutex_lock(&p->lock);
  size_t cap = p->links.len + p->monitors.len + p->monitored_by.len;
  info->pids = malloc((cap ? cap : 1) * sizeof *info->pids);
  if (info->pids == NULL) {
    uv_mutex_unlock(&p->lock);
    return false;
  }
  int state = atomic_load(&p->state);
  info->exiting = state == MB_PS_EXITING;
  info->status = state == MB_PS_RUNNABLE && atomic_load(&p->on_cpu)
                     ? "running"
                     : state_name((mb__proc_state_t)state);
  size_t inbox = 0;
  for (mb_msg_t *m = mb__inbox_peek(p); m; m = m->next)
    inbox += m->kind == MB_SIG_MSG;
  info->queue_len =
      inbox + atomic_load_explicit(&p->mq_len, memory_order_relaxed);
  mb_pid_t *at = info->pids;
  at += info->npids[0] = copy_pids(&p->links, true, at);
  at += info->npids[1] = copy_pids(&p->monitors, false, at);
  info->npids[2] = copy_pids(&p->monitored_by, false, at);
  info->trap_exit = p->trap_exit;
  info->name = p->name;
  uv_mutex_unlock(&p->lock);
  info->mem = atomic_load_explicit(&p->mem, memory_order_relaxed);
  info->reductions = atomic_load_explicit(&p->reductions, memory_order_relaxed);
  info->max_mem = p->max_mem;
  return true;
}

static void push_pids(lua_State *L, const mb_pid_t *pids, size_t n,
                      const char *field) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    mb__push_pid(L, pids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, field);
}

static void set_int(lua_State *L, const char *field, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, field);
}

/* The snapshot as a table (in a protected call: the caller frees). */
static int push_info(lua_State *L) {
  const info_t *info = lua_touserdata(L, 1);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, info->status);
  lua_setfield(L, -2, "status");
  set_int(L, "message_queue_len", (lua_Integer)info->queue_len);
  push_pids(L, info->pids, info->npids[0], "links");
  push_pids(L, info->pids + info->npids[0], info->npids[1], "monitors");
  push_pids(L, info->pids + info->npids[0] + info->npids[1], info->npids[2],
            "monitored_by");
  lua_pushboolean(L, info->trap_exit);
  lua_setfield(L, -2, "trap_exit");
  if (info->name != NULL) {
    lua_pushlstring(L, info->name->name, info->name->len);
    lua_setfield(L, -2, "registered_name");
  }
  set_int(L, "memory", (lua_Integer)info->mem);
  set_int(L, "reductions", (lua_Integer)info->reductions);
  set_int(L, "max_heap", (lua_Integer)info->max_mem);
  return 1;
}

/* process_info(pid, "current_function") -> "file.lua:42 in function
 * 'loop'" (false before it runs Lua code); process_info(pid,
 * "current_stacktrace") -> a list of such lines, innermost first.  Both
 * "running" while the process runs on another thread (see stack.c), nil
 * if it is not alive. */
static int process_info_item(lua_State *L, mb_proc_t *p, bool all) {
  mb__stack_t s;
  int err = mb__stack_read(L, p, !all, &s);
  mb__proc_unref(p);
  if (err == MB_ENOPROC)
    return 0;
  if (err == MB_ESTATE) {
    lua_pushliteral(L, "running");
    return 1;
  }
  char line[256];
  if (!all) {
    const mb__frame_t *f = mb__stack_current(&s);
    if (f == NULL)
      lua_pushboolean(L, 0);
    else {
      mb__frame_text(f, line, sizeof line);
      lua_pushstring(L, line);
    }
    return 1;
  }
  lua_createtable(L, s.n + s.more, 0);
  for (int i = 0; i < s.n; i++) {
    mb__frame_text(&s.f[i], line, sizeof line);
    lua_pushstring(L, line);
    lua_rawseti(L, -2, i + 1);
  }
  if (s.more) {
    lua_pushliteral(L, "...");
    lua_rawseti(L, -2, s.n + 1);
  }
  return 1;
}

/* process_info(pid) -> table, or nil if the process is not alive. */
int mb_lua_process_info(lua_State *L) {
  mb__lpid_t *lp = mb__to_pid(L, 1);
  if (lp == NULL)
    return luaL_typeerror(L, 1, "pid");
  static const char *const items[] = {"current_function", "current_stacktrace",
                                      NULL};
  int item = -1;
  if (!lua_isnoneornil(L, 2)) {
    const char *name = luaL_checkstring(L, 2);
    for (item = 0; items[item] && strcmp(items[item], name) != 0; item++)
      ;
    if (items[item] == NULL)
      return luaL_argerror(L, 2,
                           "current_function or current_stacktrace "
                           "expected");
  }
  if (lp->node != 0)
    return 0; /* not a process of this node */
  mb_proc_t *p = mb__proc_lookup(lp->id);
  if (p == NULL)
    return 0;
  if (item >= 0)
    return process_info_item(L, p, item == 1);
  info_t info = {0};
  bool ok = info_take(p, &info);
  mb__proc_unref(p);
  if (!ok)
    return mb_lua_error(L, "process_info", MB_ENOMEM, NULL);
  if (info.exiting) {
    free(info.pids);
    return 0;
  }
  lua_pushcfunction(L, push_info);
  lua_pushlightuserdata(L, &info);
  int status = lua_pcall(L, 1, 1, 0);
  free(info.pids);
  if (status != LUA_OK)
    return lua_error(L);
  return 1;
}

/* processes() -> list of every live pid (those started while it runs may
 * be left out). */
int mb_lua_processes(lua_State *L) {
  /* The pids, in memory that Lua frees should a push below raise. */
  pid_list_t l = {.cap = mb_proc_count() + 64};
  l.pids = lua_newuserdatauv(L, l.cap * sizeof *l.pids, 0);
  each_proc(add_pid, &l);
  lua_createtable(L, (int)l.n, 0);
  for (size_t j = 0; j < l.n; j++) {
    mb__push_pid(L, l.pids[j]);
    lua_rawseti(L, -2, (lua_Integer)j + 1);
  }
  return 1;
}

static void add_mem(mb_proc_t *p, void *ctx) {
  *(size_t *)ctx += atomic_load_explicit(&p->mem, memory_order_relaxed);
}

void mb__proc_totals(size_t *mem) {
  *mem = 0;
  each_proc(add_mem, mem);
}

static int mb_msg_decode_lua(lua_State *L) {
  mb_msg_decode(L, lua_touserdata(L, 1));
  return 1;
}

/* At most this many bytes of messages are copied for process_messages,
 * part of it while the process is held. */
#define MAX_COPY_BYTES (1u << 20)

typedef struct {
  mb_msg_t *first, **tail;
  int n, max;
  size_t bytes;
  bool nomem;
} copies_t;

/* Whether c has room for more copies. */
static bool copies_room(const copies_t *c) {
  return !c->nomem && c->n < c->max && c->bytes < MAX_COPY_BYTES;
}

/* Append a copy of m, if it is a message, to c. */
static void copy_message(copies_t *c, const mb_msg_t *m) {
  if (m->kind != MB_SIG_MSG)
    return;
  mb_msg_t *copy = mb__msg_new(m->len);
  if (copy == NULL) {
    c->nomem = true;
    return;
  }
  memcpy(copy->data, m->data, m->len);
  copy->len = m->len;
  copy->kind = m->kind;
  copy->flags = m->flags;
  copy->has_refs = m->has_refs;
  copy->from = m->from;
  *c->tail = copy;
  c->tail = &copy->next;
  c->n++;
  c->bytes += m->len;
}

/* Append copies of the messages from m on, within c's bounds. */
static void copy_messages(copies_t *c, const mb_msg_t *m) {
  for (; m && copies_room(c); m = m->next)
    copy_message(c, m);
}

/* Append copies of the messages of p's inbox (under p->lock), oldest
 * first: the inbox is a stack, newest first, so it is walked backwards
 * through an array of its messages. */
static void copy_inbox(copies_t *c, mb_proc_t *p) {
  /* Senders may push meanwhile: what lies under `top` stays as it is. */
  const mb_msg_t *top = mb__inbox_peek(p);
  size_t n = 0;
  for (const mb_msg_t *m = top; m; m = m->next)
    n++;
  if (n == 0)
    return;
  const mb_msg_t **all = malloc(n * sizeof *all);
  if (all == NULL) {
    c->nomem = true;
    return;
  }
  size_t i = n;
  for (const mb_msg_t *m = top; m; m = m->next)
    all[--i] = m;
  for (i = 0; i < n && copies_room(c); i++)
    copy_message(c, all[i]);
  free(all);
}

/* Copies of the first messages (at most c->max) in p's queue.  While p is
 * not running it is held (see stack.c), and its whole queue is there to
 * read but for what a selective receive looked at and left, which is
 * decoded in its state: *skipped says how many those are, and the copies
 * begin after them.  While it runs, only its inbox (what arrived since it
 * last ran) is read, and *skipped is -1. */
static void queue_copies(mb_proc_t *p, copies_t *c, lua_Integer *skipped) {
  bool held = mb__proc_hold_read(p) == 0;
  *skipped = held ? p->sq_tail - p->sq_head : -1;
  uv_mutex_lock(&p->lock);
  if (held)
    copy_messages(c, p->q_head);
  if (!c->nomem)
    copy_inbox(c, p);
  uv_mutex_unlock(&p->lock);
  if (held)
    mb__proc_release_read(p);
}

static void free_copies(mb_msg_t *m) {
  while (m != NULL) {
    mb_msg_t *next = m->next;
    mb_msg_free(m);
    m = next;
  }
}

/* Decode the copies into a list (in a protected call: the caller frees).
 * A message that cannot be read here shows as the reason why. */
static int push_copies(lua_State *L) {
  const mb_msg_t *m = lua_touserdata(L, 1);
  lua_newtable(L);
  for (int i = 1; m != NULL; m = m->next, i++) {
    lua_pushcfunction(L, mb_msg_decode_lua);
    lua_pushlightuserdata(L, (void *)m);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      const char *why = lua_tostring(L, -1);
      lua_pushfstring(L, "(unreadable: %s)", why ? why : "?");
      lua_remove(L, -2);
    }
    lua_rawseti(L, -2, i);
  }
  return 1;
}

/* process_messages(pid, [max]) -> the first messages (at most max, 10 by
 * default, and at most MAX_COPY_BYTES of them) in the mailbox of a
 * process of this node, as copies, and how many messages come before
 * them that are not shown; nil if it is not alive.  For the calling
 * process, its whole queue (0 not shown).  For another that is not
 * running, its queue but for the messages a selective receive looked at
 * and left, which are decoded in its own state (how many: the second
 * value).  For one that runs at that moment, only what arrived since it
 * last ran, and false. */
int mb_lua_process_messages(lua_State *L) {
  mb__lpid_t *lp = mb__to_pid(L, 1);
  if (lp == NULL)
    return luaL_typeerror(L, 1, "pid");
  lua_Integer max = luaL_optinteger(L, 2, 10);
  luaL_argcheck(L, max >= 0 && max <= 1000, 2, "must be from 0 to 1000");
  if (lp->node != 0)
    return 0;
  mb_proc_t *self = MB_PROC(L);
  if (self != NULL && self->pid == lp->id) {
    mb__proc_peek_self(L, self, (int)max);
    lua_pushinteger(L, 0);
    return 2;
  }
  mb_proc_t *p = mb__proc_lookup(lp->id);
  if (p == NULL)
    return 0;
  copies_t c = {.max = (int)max};
  c.tail = &c.first;
  lua_Integer skipped;
  queue_copies(p, &c, &skipped);
  mb__proc_unref(p);
  if (c.nomem) {
    free_copies(c.first);
    return mb_lua_error(L, "process_messages", MB_ENOMEM, NULL);
  }
  lua_pushcfunction(L, push_copies);
  lua_pushlightuserdata(L, c.first);
  int status = lua_pcall(L, 1, 1, 0);
  free_copies(c.first);
  if (status != LUA_OK)
    return lua_error(L);
  if (skipped < 0)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, skipped);
  return 2;
}

/* One row of process_table, read under the process's lock. */
typedef struct {
  mb_pid_t pid;
  const char *status;
  const mb__atom_t *name;
  size_t mem, queue_len, links, monitors;
  uint64_t reductions;
} row_t;

typedef struct {
  row_t *rows;
  size_t n, cap;
} row_list_t;

static void add_row(mb_proc_t *p, void *ctx) {
  row_list_t *l = ctx;
  if (l->n < l->cap)
    l->rows[l->n++].pid = p->pid;
}

/* Read p's row; false if it is exiting. */
static bool row_take(mb_proc_t *p, row_t *r) {
  uv_mutex_lock(&p->lock);
  int state = atomic_load(&p->state);
  size_t inbox = 0;
  for (mb_msg_t *m = mb__inbox_peek(p); m; m = m->next)
    inbox += m->kind == MB_SIG_MSG;
  r->queue_len = inbox + atomic_load_explicit(&p->mq_len, memory_order_relaxed);
  r->name = p->name;
  r->links = p->links.len;
  r->monitors = p->monitors.len;
  uv_mutex_unlock(&p->lock);
  r->status = state == MB_PS_RUNNABLE && atomic_load(&p->on_cpu)
                  ? "running"
                  : state_name((mb__proc_state_t)state);
  r->mem = atomic_load_explicit(&p->mem, memory_order_relaxed);
  r->reductions = atomic_load_explicit(&p->reductions, memory_order_relaxed);
  return state != MB_PS_EXITING;
}

static int by_pid(const void *a, const void *b) {
  mb_pid_t x = MB_PID_ID(((const row_t *)a)->pid);
  mb_pid_t y = MB_PID_ID(((const row_t *)b)->pid);
  return (x > y) - (x < y);
}

/* Largest first; equal ones by pid. */
#define BY_FIELD(field)                                                        \
  static int by_##field(const void *a, const void *b) {                        \
    const row_t *x = a, *y = b;                                                \
    if (x->field != y->field)                                                  \
      return x->field < y->field ? 1 : -1;                                     \
    return by_pid(a, b);                                                       \
  }
BY_FIELD(mem)
BY_FIELD(reductions)
BY_FIELD(queue_len)
#undef BY_FIELD

static void set_column(lua_State *L, int t, const char *field, int i) {
  lua_getfield(L, t, field);
  lua_insert(L, -2);
  lua_rawseti(L, -2, i);
  lua_pop(L, 1);
}

static void push_row(lua_State *L, int t, const row_t *r, int i) {
  mb__push_pid(L, r->pid);
  set_column(L, t, "pid", i);
  lua_pushstring(L, r->status);
  set_column(L, t, "status", i);
  if (r->name != NULL)
    lua_pushlstring(L, r->name->name, r->name->len);
  else
    lua_pushboolean(L, 0);
  set_column(L, t, "name", i);
  lua_pushinteger(L, (lua_Integer)r->mem);
  set_column(L, t, "memory", i);
  lua_pushinteger(L, (lua_Integer)r->reductions);
  set_column(L, t, "reductions", i);
  lua_pushinteger(L, (lua_Integer)r->queue_len);
  set_column(L, t, "message_queue_len", i);
  lua_pushinteger(L, (lua_Integer)r->links);
  set_column(L, t, "links", i);
  lua_pushinteger(L, (lua_Integer)r->monitors);
  set_column(L, t, "monitors", i);
}

/* process_table([sort], [n]) -> {total = count, pid = {...}, status =
 * {...}, name = {...}, memory = {...}, reductions = {...},
 * message_queue_len = {...}, links = {...}, monitors = {...}}: what
 * process_info says of the live processes, in columns (row i of each is
 * one process; name[i] is false for a process without one), sorted by
 * `sort` ("memory", "reductions", "message_queue_len": largest first;
 * "pid", the default: in order), the first n rows (all by default).
 * Cheaper than process_info for each: one pass, no table per process,
 * no copy of its links and monitors, and a row in Lua only for the n. */
int mb_lua_process_table(lua_State *L) {
  static const char *const sorts[] = {"pid", "memory", "reductions",
                                      "message_queue_len", NULL};
  static int (*const cmp[])(const void *, const void *) = {
      by_pid, by_mem, by_reductions, by_queue_len};
  static const char *const columns[] = {
      "pid",   "status",  "name", "memory", "reductions", "message_queue_len",
      "links", "monitors"};
  int sort = luaL_checkoption(L, 1, "pid", sorts);
  lua_Integer max = luaL_optinteger(L, 2, LUA_MAXINTEGER);
  luaL_argcheck(L, max >= 0, 2, "must not be negative");
  size_t cap = mb_proc_count() + 64, n = 0;
  /* The rows, in memory that Lua frees should a push below raise. */
  row_t *rows = lua_newuserdatauv(L, cap * sizeof *rows, 0);
  int keep = lua_gettop(L);
  row_list_t l = {.rows = rows, .cap = cap};
  each_proc(add_row, &l);
  n = l.n;
  size_t live = 0;
  for (size_t j = 0; j < n; j++) {
    mb_proc_t *p = mb__proc_lookup(rows[j].pid);
    if (p == NULL)
      continue;
    row_t r = {.pid = rows[j].pid};
    if (row_take(p, &r))
      rows[live++] = r;
    mb__proc_unref(p);
  }
  qsort(rows, live, sizeof *rows, cmp[sort]);
  size_t shown = (lua_Unsigned)max < live ? (size_t)max : live;
  lua_createtable(L, 0, 9);
  int t = lua_gettop(L);
  for (size_t c = 0; c < sizeof columns / sizeof *columns; c++) {
    lua_createtable(L, (int)shown, 0);
    lua_setfield(L, t, columns[c]);
  }
  lua_pushinteger(L, (lua_Integer)live);
  lua_setfield(L, t, "total");
  for (size_t j = 0; j < shown; j++)
    push_row(L, t, &rows[j], (int)j + 1);
  lua_remove(L, keep);
  return 1;
}

mb_pid_t mb_lua_self_pid(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  return p ? p->pid : 0;
}

mb_pid_t mb_lua_check_self(lua_State *L, const char *fname) {
  return mb__proc_self(L, fname)->pid;
}

int mb_lua_self(lua_State *L) {
  mb_proc_t *p = MB_PROC(L);
  if (p == NULL)
    return luaL_error(L, "self: not called inside a moonbeam process");
  mb__push_pid(L, p->pid);
  return 1;
}

int mb_lua_memory(lua_State *L) {
  mb_proc_t *p = mb__proc_self(L, "memory");
  lua_pushinteger(L, (lua_Integer)atomic_load(&p->mem));
  return 1;
}
