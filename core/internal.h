/* Names shared between the core's files (mb__ prefix).  Not installed. */
#ifndef MB_INTERNAL_H
#define MB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <uv.h>

#include "moonbeam.h"

/* ---- memory of Lua states and messages ----
 * mimalloc where available: processes allocate on one thread and free on
 * another all the time, which glibc's malloc serves with locked arenas.
 * Sanitizer builds use the C library's allocator, which they can see. */
#ifdef MB_USE_MIMALLOC
#include <mimalloc.h>
#define mb__mem_alloc mi_malloc
#define mb__mem_realloc mi_realloc
#define mb__mem_free mi_free
#else
#include <stdlib.h>
#define mb__mem_alloc malloc
#define mb__mem_realloc realloc
#define mb__mem_free free
#endif

/* A lock of a table that lives as long as the OS process, ready before any
 * call (libuv's uv_mutex_t is a pthread_mutex_t on Unix): such tables need
 * no initialisation on each call. */
#define MB__MUTEX_INIT PTHREAD_MUTEX_INITIALIZER

/* ---- big-endian integers, as every wire format here writes them ---- */
static inline uint16_t mb__get16(const unsigned char *p) {
  return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t mb__get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}
static inline uint64_t mb__get64(const unsigned char *p) {
  return (uint64_t)mb__get32(p) << 32 | mb__get32(p + 4);
}
static inline void mb__put16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}
static inline void mb__put32(unsigned char *p, uint32_t v) {
  mb__put16(p, (uint16_t)(v >> 16));
  mb__put16(p + 2, (uint16_t)v);
}
static inline void mb__put64(unsigned char *p, uint64_t v) {
  mb__put32(p, (uint32_t)(v >> 32));
  mb__put32(p + 4, (uint32_t)v);
}

/* ---- map.c: u64 -> pointer hash map (not thread-safe: callers lock) ---- */
struct mb__map_slot {
  uint64_t key; /* 0 marks an empty slot, so 0 is not a valid key */
  void *val;
};
typedef struct {
  struct mb__map_slot *slots;
  uint32_t cap, len;
} mb__map_t;
void mb__map_init(mb__map_t *m);
void mb__map_free(mb__map_t *m);
void *mb__map_get(const mb__map_t *m, uint64_t key);
int mb__map_put(mb__map_t *m, uint64_t key, void *val);
void *mb__map_del(mb__map_t *m, uint64_t key);
/* Iterate: start with *i = 0; false when there is no more. */
bool mb__map_next(const mb__map_t *m, size_t *i, uint64_t *key, void **val);

/* ---- atom.c: the node's atom table; atoms live until the node ends ---- */
typedef struct {
  uint32_t index;
  uint32_t len;
  char name[]; /* NUL-terminated */
} mb__atom_t;
#define MB_ATOM_MAXLEN 255
#define MB_ATOM_MAX (1u << 20) /* atoms in a node, as the BEAM's default */
/* MB_ETOOBIG for a name longer than MB_ATOM_MAXLEN, MB_ELIMIT when the
 * table is full (the BEAM's system_limit). */
int mb__atom_intern(const char *name, size_t len, const mb__atom_t **out);
/* The atom of that name if it exists, or MB_ENOTFOUND: never adds one. */
int mb__atom_find(const char *name, size_t len, const mb__atom_t **out);
const mb__atom_t *mb__atom_at(uint32_t index);

/* ---- msg.c: messages and signals ----
 * A message holds one Lua value in moonbeam's copy format.  Signals travel
 * in the same queue as messages so that the order between one sender and
 * one receiver is kept for both (as Erlang guarantees). */
typedef enum {
  MB_SIG_MSG = 0,
  MB_SIG_EXIT,      /* from, data = reason; flags: MB_SIGF_LINKED */
  MB_SIG_LINK,      /* from */
  MB_SIG_UNLINK,    /* from */
  MB_SIG_MONITOR,   /* from = watcher, ref */
  MB_SIG_DEMONITOR, /* ref */
  MB_SIG_DOWN,      /* a 'DOWN' message: the watcher forgets ref, then
                       it is an ordinary message */
  MB_SIG_ALIAS      /* a message sent to a monitor's ref as an alias:
                       delivered only while that monitor is active (so a
                       reply that comes after its call gave up is dropped) */
} mb__sig_kind_t;

#define MB_SIGF_LINKED 1 /* an exit signal sent because of a link */
#define MB_SIGF_DOWN 2   /* a queued message that came as a DOWN signal */
/* The value is in Erlang's external term format, as it came from another
 * node. */
#define MB_MSGF_ETF 4
#define MB_MSGF_COUNTED 8 /* counted in its receiver's mq_bytes */
/* An exit signal a process gets when its queue takes it over its memory
 * limit: it cannot be trapped. */
#define MB_SIGF_MEMORY 16

struct mb_msg_s {
  struct mb_msg_s *next;
  uint8_t kind;     /* mb__sig_kind_t */
  uint8_t has_refs; /* the value holds shared tables, cycles or functions */
  uint8_t flags;
  mb_pid_t from;
  uint64_t ref;
  size_t len, cap;
  unsigned char *data; /* points into the same allocation or elsewhere */
};
mb_msg_t *mb__msg_new(size_t cap);
/* The one growable buffer: room for n more bytes, or append them.  0 or
 * MB_ENOMEM; *m may move. */
int mb__msg_reserve(mb_msg_t **m, size_t n);
int mb__msg_append(mb_msg_t **m, const void *p, size_t n);
/* A signal with no value: its kind, sender and ref. */
mb_msg_t *mb__signal_new(mb__sig_kind_t kind, mb_pid_t from, uint64_t ref);
/* Encode value `idx` of L; `root` names the value in error paths. */
int mb__msg_encode(lua_State *L, int idx, const char *root, mb_msg_t **out,
                   char *err, size_t errlen);
/* Encode the n values of L from `first` on as the table {n = n, ...} they
 * would make (as spawn's arguments travel), in one pass, without making
 * it. */
int mb__msg_encode_seq(lua_State *L, int first, int n, const char *root,
                       mb_msg_t **out, char *err, size_t errlen);
/* Push the values of such a table, not the table, and return how many;
 * -1 (nothing pushed) for a message of another shape. */
int mb__msg_decode_seq(lua_State *L, const mb_msg_t *m);

void mb__require(lua_State *L, const char *name); /* proc.c */
/* A standard or preloaded library that mb__require opens without the
 * package library. */
bool mb__require_opener(const char *name); /* proc.c */

/* Tuples written directly, for signals turned into messages. */
mb_msg_t *mb__tuple_new(unsigned n);
int mb__tuple_atom(mb_msg_t **m, const mb__atom_t *a);
int mb__tuple_pid(mb_msg_t **m, mb_pid_t pid);
int mb__tuple_ref(mb_msg_t **m, uint64_t ref);
int mb__tuple_int(mb_msg_t **m, lua_Integer v);
int mb__tuple_str(mb_msg_t **m, const void *p, size_t len);
int mb__tuple_value(mb_msg_t **m, const mb_msg_t *v);
int mb__tuple_end(mb_msg_t **m, unsigned n);
/* A tuple of n elements inside one being written; closed by tuple_end. */
int mb__tuple_open(mb_msg_t **m, unsigned n);
/* The Lua value at idx, as mb__msg_encode encodes it. */
int mb__tuple_lua(lua_State *L, int idx, const char *root, mb_msg_t **m,
                  char *err, size_t errlen);
/* Is m (in moonbeam's format) a table whose first element is this node's
 * ref `ref`?  Read without decoding. */
bool mb__msg_first_is_ref(const mb_msg_t *m, uint64_t ref);
/* Push element i of the table message m, decoding no more of m than it
 * has to. */
void mb__msg_decode_field(lua_State *L, const mb_msg_t *m, lua_Integer i);
/* Is m (in moonbeam's format) the tuple {Label, From, Request}?  If so,
 * push From and Request, decoded without the tuple around them, and
 * return true; otherwise push nothing. */
bool mb__msg_call_fields(lua_State *L, const mb_msg_t *m,
                         const mb__atom_t *label);
mb_msg_t *mb__msg_atom(const mb__atom_t *a);
mb_msg_t *mb__msg_dup(const mb_msg_t *m);
bool mb__msg_is_atom(const mb_msg_t *m, const mb__atom_t *a);

/* Atoms the core itself uses, interned at start (so that a full atom
 * table never keeps the core from naming them). */
typedef struct {
  const mb__atom_t *normal, *kill, *killed, *noproc, *EXIT, *DOWN, *process,
      *memory_limit, *shutdown, *out_of_memory, *empty, *nonode, *timeout,
      *noconnection;
} mb__atoms_t;
extern mb__atoms_t mb__atoms;
int mb__atoms_init(void);

/* ---- remote.c: pids and refs of other nodes as 64-bit keys ---- */
mb_pid_t mb__remote_pid_key(uint32_t node, uint32_t creation, uint32_t num,
                            uint32_t serial);
bool mb__remote_pid(mb_pid_t key, uint32_t *node, uint32_t *creation,
                    uint32_t *num, uint32_t *serial);
/* {Name, Node} as a key (node: atom index + 1, name: atom index), for
 * sends and monitors by name; no pid's key is ever one of these. */
mb_pid_t mb__remote_name_key(uint32_t node, uint32_t name);
bool mb__remote_name(mb_pid_t key, uint32_t *node, uint32_t *name);
uint64_t mb__remote_ref_key(uint32_t node, uint32_t creation, uint32_t len,
                            const uint32_t *words);
bool mb__remote_ref(uint64_t key, uint32_t *node, uint32_t *creation,
                    uint32_t *len, uint32_t *words);

/* ---- value.c: Lua representation of pids, refs, atoms and tuples ---- */
#define MB_TUPLE_MT "moonbeam.tuple"
#define MB_LIST_MT "moonbeam.list"
#define MB_MAP_MT "moonbeam.map"
#define MB_PID_MT "moonbeam.pid"
#define MB_REF_MT "moonbeam.ref"
typedef enum {
  MB_KIND_PLAIN = 0,
  MB_KIND_TUPLE,
  MB_KIND_LIST,
  MB_KIND_MAP
} mb__table_kind_t;

/* The metatables value.c keeps track of in each process's state: the
 * table kinds, then pids and refs. */
typedef enum {
  MB__MT_PID = MB_KIND_MAP + 1,
  MB__MT_REF,
  MB__MT_COUNT
} mb__mt_t;
typedef struct mb_proc_s mb_proc_t;
/* A pid in Lua.  node is 0 for this node's pids (id is then the process
 * number); for another node's, the index + 1 of the node name's atom, with
 * the ID, Serial and Creation it has on the wire. */
typedef struct {
  mb_pid_t id;
  mb_proc_t *proc; /* local: a counted ref taken on first send, or NULL */
  uint32_t node, creation, num, serial;
} mb__lpid_t;
/* A ref in Lua: this node's are a 64-bit number; another node's keep their
 * words (up to 5) as they came. */
#define MB_REF_MAXWORDS 5
typedef struct {
  uint64_t id;
  uint32_t node, creation, len;
  uint32_t words[MB_REF_MAXWORDS];
} mb__lref_t;
/* Erlang values Lua has no type for, kept as their external term format so
 * they go back unchanged: big integers, bitstrings, funs, ports, and
 * other terms Lua cannot hold as they came (a map with keys equal in Lua,
 * an atom longer than the atom table holds). */
typedef enum {
  MB_TERM_BIGNUM = 1,
  MB_TERM_BITSTRING,
  MB_TERM_FUN,
  MB_TERM_PORT,
  MB_TERM_OTHER
} mb__term_kind_t;
typedef struct {
  uint8_t kind;
  uint32_t len;
  unsigned char bytes[]; /* the ETF encoding, tag included, without 131 */
} mb__lterm_t;
#define MB_TERM_MT "moonbeam.term"
/* Make, in a process's blank state, what its first pid needs. */
void mb__value_prepare(lua_State *L);
void mb__push_pid(lua_State *L, mb_pid_t pid);
void mb__push_ref(lua_State *L, uint64_t ref);
void mb__push_atom(lua_State *L, const mb__atom_t *a);
void mb__push_remote_pid(lua_State *L, uint32_t node, uint32_t creation,
                         uint32_t num, uint32_t serial);
void mb__push_remote_ref(lua_State *L, uint32_t node, uint32_t creation,
                         uint32_t len, const uint32_t *words);
void mb__push_term(lua_State *L, mb__term_kind_t kind, const void *bytes,
                   size_t len);
mb__lterm_t *mb__to_term(lua_State *L, int idx);
/* The key the core addresses a pid by (local number or remote key). */
mb_pid_t mb__pid_key(const mb__lpid_t *p);
/* A registered name at idx: an atom, or a string naming one; or a Lua
 * error. */
const mb__atom_t *mb__check_name(lua_State *L, int idx);
/* Raise "fname: the atom table is full (...: system_limit)". */
int mb__atom_table_full(lua_State *L, const char *fname);
/* {Name, Node} at idx (a table of two strings or atoms)? */
bool mb__to_remote_name(lua_State *L, int idx, const mb__atom_t **name,
                        const mb__atom_t **node);
const mb__atom_t *mb__to_atom(lua_State *L, int idx);
/* Push the registry's table under `key`, created on first use with weak
 * keys or values (`mode` as __mode: "k", "v" or "kv"). */
void mb__push_weak_table(lua_State *L, const void *key, const char *mode);

/* Where an unsendable value sits inside what was sent (".a[2].tail"), for
 * the encoders' errors: built from the leaf up, as the encoder unwinds. */
typedef struct {
  char buf[512];
  size_t pos; /* the path is buf + pos */
} mb__path_t;
void mb__path_reset(mb__path_t *p);
void mb__path_prepend(mb__path_t *p, const char *seg);
/* The key at kidx as a segment: .name, [2], [1.5], ["a b"], [ok]. */
void mb__path_key(mb__path_t *p, lua_State *L, int kidx);
void mb__path_index(mb__path_t *p, lua_Integer i);
#define mb__path_str(p) ((p)->buf + (p)->pos)
mb__lpid_t *mb__to_pid(lua_State *L, int idx);
/* Push the value at idx as text, as tostring gives it; raises only when
 * even the fallback finds no memory.  A __tostring that raises, runs out
 * of memory or gives no string makes opaque text instead ("<table
 * 0x...: __tostring failed>"). */
const char *mb__tostring(lua_State *L, int idx, size_t *len);
mb__lref_t *mb__to_ref(lua_State *L, int idx);
/* Metatable for a table kind; created on first use in a state. */
void mb__push_kind_mt(lua_State *L, mb__table_kind_t kind);
mb__table_kind_t mb__table_kind(lua_State *L, int idx);
uint64_t mb__ref_next(void);
/* A ref made by monitor() is also an alias (Erlang's): a message sent to it
 * (send_alias) arrives only while the monitor is active.  Other refs do not
 * have this bit, and messages sent to them always arrive. */
#define MB_REF_ALIAS (1ULL << 62)

/* ---- log.c ---- */
/* mb_log, for a report of `kind` (see mb_log_event) about the process
 * `about`, whose pid the JSON line carries (the text names it already). */
void mb__log_report(mb_log_level_t level, const char *kind, mb_pid_t about,
                    const char *fmt, ...);

/* ---- trace.c: tracing processes ---- */
#define MB_TRACE_SEND 0x01u
#define MB_TRACE_RECEIVE 0x02u
#define MB_TRACE_CALL 0x04u
#define MB_TRACE_SPAWN 0x08u
#define MB_TRACE_EXIT 0x10u
#define MB_TRACE_LINK 0x20u
/* The one test the watched paths make when tracing is off. */
#define MB__TRACING(p, flags)                                                  \
  (atomic_load_explicit(&(p)->trace, memory_order_relaxed) & (flags))
int mb__trace_init(void);
/* The events, each called only when MB__TRACING says so, by the process
 * itself: the destination and the message of a send at those indexes of
 * L; the message just received at the top of L; the other process of a
 * link or unlink at `other`; the exit reason. */
void mb__trace_send(mb_proc_t *p, lua_State *L, int dest, int msg);
void mb__trace_receive(mb_proc_t *p, lua_State *L);
void mb__trace_link(mb_proc_t *p, lua_State *L, bool link, int other);
void mb__trace_exit(mb_proc_t *p, const mb_msg_t *reason);

/* ---- proc.c: processes ---- */
typedef enum {
  MB_PS_RUNNABLE, /* in a run queue, or running (see on_cpu) */
  MB_PS_WAITING,  /* blocked in receive or sleep */
  MB_PS_EXITING
} mb__proc_state_t;

typedef enum {
  MB_YIELD_NONE,
  MB_YIELD_PREEMPT, /* reductions spent: back to the run queue */
  MB_YIELD_WAIT,    /* wants a message, a timeout or a signal */
  MB_YIELD_EXIT     /* ends with p->exit_reason */
} mb__yield_kind_t;

typedef struct mb__waitlink_s mb__waitlink_t;

/* A process.  Fields are grouped by who may touch them. */
struct mb_proc_s {
  /* Set at spawn, then read-only. */
  mb_pid_t pid;
  atomic_int refs;  /* the process table holds one while alive */
  size_t mem_limit; /* max_heap, for senders (max_mem below may move) */

  /* The inbox: a stack of messages and signals, newest first, that
   * senders push onto by compare-and-swap without the lock (mailbox.c).
   * The process takes it whole, and closes it (MB__INBOX_CLOSED) as it
   * ends, under `lock`, so that readers from other threads walk it under
   * `lock` (mb__inbox_peek) while nothing in it is freed. */
  _Atomic(mb_msg_t *) inbox_head;
  /* Under `lock`: what other threads hand to the process.  `state`,
   * `inbox_head` and `timed_out` are also read without the lock, to decide
   * who wakes a waiting process (see mb__proc_wake). */
  uv_mutex_t lock;
  _Atomic int state;     /* mb__proc_state_t */
  uint32_t timer_gen;    /* generation of the armed timer */
  atomic_bool timed_out; /* the armed timer fired */
  mb__waitlink_t *waiters;
  atomic_bool sig_pending; /* the inbox holds a signal other than a message */
  /* Bytes of the messages queued and not yet taken by receive (in the
   * inbox or q_head), which count against mem_limit as the Lua state
   * does: added by senders under `lock`, taken off by the owner. */
  atomic_size_t mq_bytes;
  atomic_bool mq_over; /* a message went over the limit: it is being ended */

  /* Written by the owner under `lock`, so that process_info can read them
   * from another thread. */
  mb__map_t links;        /* pid -> 1 */
  mb__map_t monitors;     /* ref -> target pid: monitors this process holds */
  mb__map_t monitored_by; /* ref -> watcher pid */
  bool trap_exit;
  const mb__atom_t *name; /* registered name; under the registry lock too */

  /* Written by the owner, read by anyone (relaxed). */
  atomic_size_t mem;
  atomic_size_t mq_len;
  _Atomic uint64_t reductions; /* slices run, and messages taken */
  /* Trace flags and session (trace.c): written by anyone under the trace
   * lock, read by the owner. */
  _Atomic uint32_t trace;
  atomic_bool poked;  /* the watchdog ended its slice */
  atomic_bool on_cpu; /* running now (for process_info) */
  /* Who holds the Lua state and the fields owned by the thread running
   * the process (mb__hold_t), changed by compare-and-swap: a scheduler
   * from the start of a slice to its end (and for good once the process
   * ends), or a reader of its stack or queue (stack.c) for a few
   * microseconds, during which a scheduler that wants to run it waits. */
  _Atomic int hold;

  /* Owned by the thread running the process. */
  lua_State *L;
  mb_msg_t *q_head, *q_tail; /* drained from inbox, not yet decoded */
  size_t q_len;
  int saved_ref; /* registry ref of decoded-but-skipped queue */
  lua_Integer sq_head, sq_tail;
  /* The first element of each saved message, at sq_keys[i - sq_base] for
   * saved entry i, so that a prefilter turns them away without Lua. */
  struct mb__sq_key_s *sq_keys;
  lua_Integer sq_base, sq_cap;
  /* This state's metatables of tuples, lists, maps, pids and refs, by
   * mb__mt_t: registry refs to push them (pids' and refs' are kept by
   * their cache instead, their ref stays 0) and addresses to recognise
   * them, 0 and NULL until value.c first meets them (see value.c). */
  int mt_ref[MB__MT_COUNT];
  const void *mt_ptr[MB__MT_COUNT];
  uint64_t timer_id; /* armed timer, 0 = none */
  mb__yield_kind_t yield_kind;
  bool sched_yield; /* a coroutine yielded to the scheduler, not its resumer */
  int co_depth;     /* coroutines being resumed by coro.c */
  /* The innermost coroutine coro.c resumes (kept while it waits for the
   * scheduler), NULL for none: where a reader's stack starts (stack.c). */
  lua_State *co_top;
  size_t max_mem;
  bool started, mem_exceeded;
  mb_msg_t *exit_reason; /* set when an exit signal or exit() ends it */
  mb_msg_t *start_fn, *start_args; /* consumed at first run */
  char *start_mod, *start_fun;
  int nargs;

  /* Under the scheduler's run queue lock. */
  mb_proc_t *rq_next;
  uint64_t slice; /* the scheduler's slice it inherits when woken */
  /* Under the process table shard lock. */
  mb_proc_t *hash_next;
};

/* Who holds a process's Lua state (mb_proc_s.hold). */
typedef enum {
  MB_HOLD_NONE, /* suspended: queued, waiting, or not started */
  MB_HOLD_RUN,  /* a scheduler runs it, or it has ended */
  MB_HOLD_READ  /* a reader copies its frames or queue (stack.c) */
} mb__hold_t;

/* The process whose state L is (or a coroutine of), or NULL for any other
 * Lua state, such as a host's. */
mb_proc_t *mb__proc_of(lua_State *L);
#define MB_PROC(L) mb__proc_of(L)

mb_proc_t *mb__proc_lookup(mb_pid_t pid); /* returns a counted ref */
/* End the running process's slice (from the watchdog thread). */
void mb__proc_poke(mb_proc_t *p);
/* Give a coroutine the hook that ends slices inside coroutines. */
void mb__proc_coro_hook(lua_State *co);
void mb__proc_unref(mb_proc_t *p);
/* Run the process for one slice on the calling scheduler thread. */
void mb__proc_run(mb_proc_t *p);
/* After making a reason to run true (a message in the inbox, a timer
 * fired): make the process runnable if it waits.  The waker and the
 * process going to wait each store then load (state against inbox or
 * timed_out), so one of them always sees the other. */
void mb__proc_wake(mb_proc_t *p);
/* Append a message or signal to p's inbox; false (and m freed) if p is
 * exiting. */
bool mb__proc_deliver(mb_proc_t *p, mb_msg_t *m);
/* The inbox of a process that has ended: nothing is pushed onto it. */
#define MB__INBOX_CLOSED ((mb_msg_t *)(uintptr_t)1)
/* Close p's inbox as it ends (under p->lock): what it held, oldest first. */
mb_msg_t *mb__inbox_close(mb_proc_t *p);
/* Under p->lock: p's inbox, newest first; NULL if empty or closed. */
mb_msg_t *mb__inbox_peek(mb_proc_t *p);
/* The owner took m out of its queue (decoded or dropped it): its bytes no
 * longer count against the limit. */
void mb__proc_uncount(mb_proc_t *p, const mb_msg_t *m);
/* Send a signal to `to`: MB_ENOPROC if there is no such live process. */
int mb__signal(mb_pid_t to, mb_msg_t *m);
/* Handle the signals in the process's inbox (owner only).  Returns true if
 * one of them ends the process (p->exit_reason is then set). */
bool mb__proc_handle_signals(mb_proc_t *p);
void mb__proc_shutdown_all(void);
int mb__proc_init(void);
/* Make one blank state for the spawns to come, if the pool has room;
 * false when it is full.  Drained when the schedulers have stopped. */
bool mb__proc_pool_fill(void);
int mb__proc_pool_size(void);
size_t mb__proc_pool_taken(void); /* states spawns took, all told */
void mb__proc_pool_drain(void);
/* Called by the process's own thread: the timer of a receive, armed when
 * it is about to wait (it sets timed_out when it fires). */
void mb__proc_timer_arm(mb_proc_t *p, uint64_t ms);
void mb__proc_timer_disarm(mb_proc_t *p);
/* The owner took a message out of its queue: count it, and publish the
 * queue's length. */
void mb__proc_took(mb_proc_t *p);
const mb_config_t *mb__config(void);
void mb__proc_config(const mb_config_t *cfg);
/* A spawn another node asked for: link to and/or be monitored by
 * `watcher` (a remote key) with ref `watch_ref`, before the process runs;
 * and `before_start(pid, arg)` runs once the pid exists and before the
 * process can run (to answer the request first). */
typedef struct {
  mb_pid_t watcher;
  int watcher_link;
  uint64_t watch_ref;
  void (*before_start)(mb_pid_t pid, void *arg);
  void *before_start_arg;
} mb__spawn_remote_t;
int mb__proc_spawn_remote(mb_spawn_opts_t *o, const mb__spawn_remote_t *r,
                          mb_pid_t *out);
/* Remove a queued {'DOWN', ref, ...} message (demonitor with flush). */
int mb__proc_flush_down(lua_State *L, mb_proc_t *p, uint64_t ref);
/* Take m out of p's private queue (prev: the one before it, or NULL) and
 * off its memory count; m is not freed.  Owner only. */
void mb__queue_remove(mb_proc_t *p, mb_msg_t *prev, mb_msg_t *m);
/* Drop the queued 'DOWN' of monitor ref, if one is in p's private queue
 * (not decoded yet): true if one was.  Owner only. */
bool mb__queue_drop_down(mb_proc_t *p, uint64_t ref);
/* Push the first `max` messages of p's own queue (p runs L). */
int mb__proc_peek_self(lua_State *L, mb_proc_t *p, int max);
/* The calling process, or a Lua error naming `fname`. */
mb_proc_t *mb__proc_self(lua_State *L, const char *fname);
/* Yield the calling thread to the scheduler (from a process's main thread
 * or a coroutine resumed by coro.c) with continuation k. */
int mb__proc_yield(lua_State *L, mb__yield_kind_t kind, lua_KContext ctx,
                   lua_KFunction k);

/* ---- stack.c: the frames of a process that is not running ---- */
#define MB_STACK_FRAMES 32 /* frames copied, innermost first */
typedef struct {
  char src[LUA_IDSIZE]; /* as a traceback shows it: "[C]", a file name */
  char name[48];        /* the function's name where known, or "" */
  int line, defined;    /* current line, and the line it was defined at */
  char what;            /* 'L' Lua function, 'm' main chunk, 'C' C function */
} mb__frame_t;
typedef struct {
  int n;     /* frames copied */
  bool more; /* there were more than MB_STACK_FRAMES */
  mb__frame_t f[MB_STACK_FRAMES];
} mb__stack_t;
/* Take p's Lua state and the fields its owner thread keeps (its queue)
 * for reading, for a few microseconds: 0; MB_ESTATE while a scheduler
 * runs it; MB_ENOPROC once it ends.  Nothing may be allocated in its state
 * meanwhile. */
int mb__proc_hold_read(mb_proc_t *p);
void mb__proc_release_read(mb_proc_t *p);
/* Copy the frames of p (alive; the caller holds a counted ref), or of the
 * calling process when p is self and L its state; with `current`, only
 * up to the one mb__stack_current finds.  0; MB_ESTATE while p runs on
 * another thread; MB_ENOPROC once it ends. */
int mb__stack_read(lua_State *L, mb_proc_t *p, bool current, mb__stack_t *out);
/* One frame as text, "file.lua:42 in function 'loop'", into buf. */
void mb__frame_text(const mb__frame_t *f, char *buf, size_t cap);
/* The frame an operator asks about: the innermost Lua frame (the
 * function that waits, not the runtime's C receive), or NULL. */
const mb__frame_t *mb__stack_current(const mb__stack_t *s);

/* ---- link.c: links, monitors, exit signals ---- */
/* Act on one signal taken from the inbox; messages are queued. */
void mb__link_handle(mb_proc_t *p, mb_msg_t *m);
/* What a process does with its links and monitors as it ends. */
void mb__link_exit(mb_proc_t *p, const mb_msg_t *reason, mb_msg_t *inbox);
/* Note a monitor the process holds (for monitors set up elsewhere). */
void mb__link_monitor_add(mb_proc_t *p, uint64_t ref, mb_pid_t target);
/* Forget it: returns its target, or 0 if the process held no such
 * monitor (its 'DOWN' came, or it was never set up). */
mb_pid_t mb__link_monitor_del(mb_proc_t *p, uint64_t ref);
/* The watched side of a monitor of a process of this node, set or ended
 * by the watcher itself, under the process's lock, not by a signal through
 * its inbox (no signal wakes a process that waits, as a server between
 * calls).  watch: 0, or MB_ENOPROC if the process has ended, or
 * MB_ENOMEM, having set nothing. */
int mb__link_watch(mb_proc_t *target, uint64_t ref, mb_pid_t watcher);
void mb__link_unwatch(mb_proc_t *target, uint64_t ref);
/* Set up a link or monitor with a process that has not started yet. */
int mb__link_new_child(mb_proc_t *parent, mb_proc_t *child, bool link,
                       uint64_t monitor_ref);

/* ---- registry.c: registered names ---- */
mb_pid_t mb__registry_whereis(const mb__atom_t *name);
void mb__registry_remove_proc(mb_proc_t *p);

/* ---- socket.c: sockets owned by processes ---- */
int mb__socket_start(void);
/* Close every socket and wait until they are gone (before the loop
 * stops). */
void mb__socket_stop(void);
/* A process has ended: close the sockets it owns. */
void mb__socket_owner_exit(mb_pid_t pid);

/* ---- tls.c: TLS over a socket's bytes, with OpenSSL's memory BIOs ---- */
typedef struct {
  const char *certfile, *keyfile, *cacertfile, *server_name, *alpn;
  bool verify, fail_if_no_peer_cert;
} mb__tls_config_t;
typedef struct mb__tls_s mb__tls_t;
/* Set OpenSSL up for the node, before any other use of it: without its
 * clean-up at exit, which would otherwise run while the schedulers still
 * hash, encrypt or speak TLS (atexit handlers run last registered first,
 * and OpenSSL registers its own on first use, after the node's). */
void mb__tls_init(void);
/* An SSL_CTX for a client or a server; NULL with *why (an atom's name:
 * bad_certfile, bad_keyfile, bad_cacertfile, bad_alpn, enomem). */
void *mb__tls_context(const mb__tls_config_t *c, bool server, const char **why);
void mb__tls_context_free(void *ctx);
/* A connection's TLS state; `host` is checked and sent as SNI unless
 * c->server_name says otherwise. */
mb__tls_t *mb__tls_new(void *ctx, bool server, const mb__tls_config_t *c,
                       const char *host, const char **why);
void mb__tls_free(mb__tls_t *t);
/* Bytes from the network. */
int mb__tls_feed(mb__tls_t *t, const void *p, size_t n);
/* 1 done, 0 wants more bytes, MB_EPROTO with *why (bad_certificate,
 * handshake_failure, no_application_protocol). */
int mb__tls_handshake(mb__tls_t *t, const char **why);
/* Plaintext into out (*n = 0: none yet); MB_ECONN at the peer's
 * close_notify; MB_EPROTO with *why. */
int mb__tls_read(mb__tls_t *t, void *out, size_t cap, size_t *n,
                 const char **why);
int mb__tls_write(mb__tls_t *t, const void *p, size_t n);
void mb__tls_close(mb__tls_t *t); /* queue close_notify */
/* What OpenSSL has for the network. */
size_t mb__tls_pending(mb__tls_t *t);
size_t mb__tls_take(mb__tls_t *t, void *out, size_t cap);
/* OpenSSL's words for the last failure ("unable to get local issuer
 * certificate", "wrong version number"), or "". */
const char *mb__tls_detail(const mb__tls_t *t);
int mb__tls_alpn(mb__tls_t *t, char *out, size_t cap);
int mb__tls_peer(mb__tls_t *t, char *out, size_t cap);

/* ---- http.c: HTTP heads as packets (Debian's libhttp-parser) ---- */
#define MB_HTTP_MAX_HEADERS 100
/* The length of the head at the start of buf, 0 if incomplete,
 * MB_ETOOBIG past limit, MB_EPROTO if malformed. */
long mb__http_find(int response, size_t limit, const unsigned char *buf,
                   size_t len);
/* The value of a whole head (as found by mb__http_find):
 *   {request_tag, Method, Uri, {Major, Minor}, {{name, Value}, ...}} or
 *   {response_tag, {Major, Minor}, Status, Reason, {{name, Value}, ...}}
 * with header names in lower case; NULL if malformed or out of memory. */
mb_msg_t *mb__http_head(int response, const unsigned char *buf, size_t len,
                        const mb__atom_t *request_tag,
                        const mb__atom_t *response_tag);

/* ---- modcache.c: Lua modules compiled once per node ---- */
void mb__modcache_install(lua_State *L);
int mb__modcache_require(lua_State *L); /* require, without package */
/* The registry's field for the package library's require, once opened. */
#define MB__REQUIRE_KEY "moonbeam.require"

/* ---- coro.c ---- */
void mb__coro_patch(lua_State *L);

/* ---- sched.c: M:N scheduler ---- */
int mb__sched_start(int n);
void mb__sched_stop(void);
/* Put a runnable process at the back of a run queue. */
void mb__sched_enqueue(mb_proc_t *p);
/* Make a process woken by a message runnable: on a scheduler thread it
 * runs next, in what is left of the waker's time slice. */
void mb__sched_wake(mb_proc_t *p);
/* Wake a sleeping scheduler, if there is one, for work of its own (it
 * refills the pool of blank states). */
void mb__sched_wake_idle(void);
int mb__sched_count(void);
/* Counters of scheduler i, read without locks (see stats.c). */
typedef struct {
  uint64_t busy_ns; /* time a process ran, sampled at each watchdog tick */
  uint64_t msgs;    /* messages taken by receive */
  uint64_t runs;    /* processes run */
  size_t run_queue; /* processes waiting to run there */
} mb__sched_sample_t;
void mb__sched_sample(int i, mb__sched_sample_t *out);
uint64_t mb__sched_uptime_ns(void);
/* The memory of all live processes' Lua states, summed under each
 * shard's lock. */
void mb__proc_totals(size_t *mem);
uint32_t mb__atom_count(void);
/* Keep a logged line in the ring that mb.log_tail reads (stats.c). */
void mb__log_keep(int level, uint64_t unix_ms, const char *pid,
                  const char *text, size_t len);
/* Count a message taken by the process running on this thread. */
void mb__sched_note_message(void);
/* The process is ready to run its slice: from now on the watchdog may poke
 * it (called once its state is held and cleared of an earlier poke). */
void mb__sched_enter(mb_proc_t *p);
/* The running process is about to end: the watchdog must let it be. */
void mb__sched_leave(void);

/* ---- loop.c: the node's libuv loop, in a thread of its own ---- */
typedef void (*mb__loop_fn)(void *arg);
/* For a handle left open at stop: the close callback that frees it. */
typedef uv_close_cb (*mb__loop_close_cb)(uv_handle_t *h);
int mb__loop_start(void);
void mb__loop_stop(mb__loop_close_cb closer);
uv_loop_t *mb__loop(void);
bool mb__on_loop(void);
/* Run fn(arg) on the loop thread, soon. */
int mb__loop_call(mb__loop_fn fn, void *arg);
/* Run fn(arg) on the loop thread when it next wakes for any reason,
 * without waking it. */
int mb__loop_call_later(mb__loop_fn fn, void *arg);
/* Wake the loop (to run what was queued with mb__loop_call_later). */
void mb__loop_wake(void);

/* ---- timer.c: timers on the node's libuv loop thread ---- */
typedef enum { MB_TIMER_WAKE, MB_TIMER_SEND } mb__timer_kind_t;
int mb__timer_start(void);
void mb__timer_stop(void);
/* Wake `pid` after ms unless its timer_gen moved on.  Returns the timer id. */
uint64_t mb__timer_wake(uint64_t ms, mb_pid_t pid, uint32_t gen);
/* Cancel a timer; returns milliseconds left, or -1 if it already fired. */
int64_t mb__timer_cancel(uint64_t id);

#endif
