/* Reading the stack of another process (process_info's current_function
 * and current_stacktrace), as observer and recon show what a process is
 * doing; and the hold that also lets process_messages read its queue.
 *
 * A process's Lua state is touched by one thread at a time.  One that is
 * not running is suspended in a yield (waiting in receive, or preempted
 * and queued), and its frames stay as they are until a scheduler resumes
 * it; lua_getstack and lua_getinfo("Sln") only read them.  So a reader
 * takes the state with a compare-and-swap on `hold` (NONE -> READ), which
 * fails while a scheduler holds it (RUN: it runs, or it has ended); a
 * scheduler that wants to run it meanwhile waits for NONE (see
 * hold_for_run in proc.c).  Nothing else about the process changes: a
 * message that arrives meanwhile is queued and wakes it as always, and it
 * runs once the reader is done.
 *
 * The reader pushes nothing and allocates nothing in the state (that
 * could run a collection, and finalizers, on the wrong thread): it copies
 * at most MB_STACK_FRAMES frames into a buffer of its own, and makes text
 * and Lua values from the copy after it has given the state back. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "internal.h"

static void copy_str(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

/* A frame's file as an operator reads it: a module of the standard
 * library from its "moonbeam/" on ("moonbeam/gen_server_loop.lua"),
 * another file by its name, without the directories; other chunks as a
 * traceback shows them. */
static void copy_src(char *dst, size_t cap, const lua_Debug *ar) {
  if (ar->source == NULL || ar->source[0] != '@') {
    copy_str(dst, cap, ar->short_src);
    return;
  }
  const char *path = ar->source + 1, *from = strrchr(path, '/');
  from = from ? from + 1 : path;
  for (const char *m = path; (m = strstr(m, "/moonbeam/")) != NULL; m++)
    from = m + 1;
  size_t len = strlen(from);
  if (len >= cap) /* keep the end, as Lua's short_src does */
    snprintf(dst, cap, "...%s", from + len - (cap - 4));
  else
    memcpy(dst, from, len + 1);
}

/* Append the frames of L from `level` on; with `current`, only up to the
 * first Lua frame (what mb__stack_current looks for).  True once that is
 * found, or there is no more room. */
static bool copy_frames(lua_State *L, int level, bool current,
                        mb__stack_t *out) {
  lua_Debug ar;
  while (lua_getstack(L, level++, &ar)) {
    if (out->n == MB_STACK_FRAMES) {
      out->more = true;
      return true;
    }
    mb__frame_t *f = &out->f[out->n++];
    lua_getinfo(L, "Sln", &ar);
    copy_src(f->src, sizeof f->src, &ar);
    copy_str(f->name, sizeof f->name, ar.name);
    f->line = ar.currentline;
    f->defined = ar.linedefined;
    f->what = ar.what[0] == 'C' ? 'C' : ar.what[0] == 'm' ? 'm' : 'L';
    if (current && f->what != 'C')
      return true;
  }
  return false;
}

/* The frames of a process: those of the coroutine it runs or waits in
 * (`top`, from `level` on), then its main thread's.  A coroutine that
 * resumed that one, between the two, is left out. */
static void copy_stack(mb_proc_t *p, lua_State *top, int level, bool current,
                       mb__stack_t *out) {
  out->n = 0;
  out->more = false;
  if (top != NULL && top != p->L) {
    if (copy_frames(top, level, current, out))
      return;
    level = 0;
  }
  copy_frames(p->L, level, current, out);
}

int mb__proc_hold_read(mb_proc_t *p) {
  int none = MB_HOLD_NONE;
  if (!atomic_compare_exchange_strong(&p->hold, &none, MB_HOLD_READ))
    return atomic_load(&p->state) == MB_PS_EXITING ? MB_ENOPROC : MB_ESTATE;
  return 0;
}

void mb__proc_release_read(mb_proc_t *p) {
  atomic_store(&p->hold, MB_HOLD_NONE);
}

int mb__stack_read(lua_State *L, mb_proc_t *p, bool current, mb__stack_t *out) {
  if (L != NULL && MB_PROC(L) == p) {
    copy_stack(p, L, 1, current, out); /* level 0: the C function asking */
    return 0;
  }
  int err = mb__proc_hold_read(p);
  if (err != 0)
    return err;
  copy_stack(p, p->co_top, 0, current, out);
  mb__proc_release_read(p);
  return 0;
}

void mb__frame_text(const mb__frame_t *f, char *buf, size_t cap) {
  if (f->what == 'm')
    snprintf(buf, cap, "%s:%d in main chunk", f->src, f->line);
  else if (f->what == 'C')
    snprintf(buf, cap, "[C] in function '%s'", f->name[0] ? f->name : "?");
  else if (f->name[0])
    snprintf(buf, cap, "%s:%d in function '%s'", f->src, f->line, f->name);
  else
    snprintf(buf, cap, "%s:%d in function <%s:%d>", f->src, f->line, f->src,
             f->defined);
}

const mb__frame_t *mb__stack_current(const mb__stack_t *s) {
  for (int i = 0; i < s->n; i++)
    if (s->f[i].what != 'C')
      return &s->f[i];
  return NULL;
}

int mb_proc_stack(mb_pid_t pid, char *buf, size_t cap) {
  if (cap == 0)
    return MB_EINVAL;
  buf[0] = '\0';
  mb_proc_t *p = mb__proc_lookup(pid);
  if (p == NULL)
    return MB_ENOPROC;
  mb__stack_t s;
  int err = mb__stack_read(NULL, p, false, &s);
  mb__proc_unref(p);
  if (err != 0)
    return err;
  size_t at = 0;
  for (int i = 0; i < s.n && at + 1 < cap; i++) {
    mb__frame_t *f = &s.f[i];
    mb__frame_text(f, buf + at, cap - at);
    at += strlen(buf + at);
    if (at + 1 < cap) {
      buf[at++] = '\n';
      buf[at] = '\0';
    }
  }
  return 0;
}
