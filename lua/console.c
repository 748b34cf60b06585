/* The shell's console: a thread of its own that reads lines from stdin and
 * hands each to the process that asked for it, as the message
 * {"$console", line}, or {"$console", false} at the end of input.  A person
 * typing takes seconds: reading on this thread keeps every scheduler free
 * meanwhile, where a process calling io.read would hold one.
 *
 * When stdin and stdout are terminals and libedit is there, lines are
 * edited, with a history kept in $MOONBEAM_HISTORY (default
 * ~/.moonbeam_history; empty for none), and Tab completes a word from
 * those the reader gave with its request (the shell gives its globals,
 * locals and their fields: "mb.spawn").  A log line written while a
 * prompt waits goes above it: the prompt line is cleared first and drawn
 * again after.  Otherwise the prompt is written
 * and a plain line read, so that a pipe can drive the shell.
 *
 * The module moonbeam.console, preloaded in every process by the launcher:
 *
 *   console.read(prompt [, words]) ask for a line; it comes as a message;
 *                                  words (a list) are what Tab completes
 *   console.line_editing()         whether lines are edited
 *   console.pid(node, id, serial)  a pid from its three numbers */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <lauxlib.h>

#ifdef MB_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include <uv.h>

#include "../core/moonbeam.h"
#include "launcher.h"
#include "lmoonbeam.h"

#define HISTORY_LINES 1000

/* Set once, before the thread starts; read-only after. */
static bool editing;
static struct termios saved_tty;
static bool have_tty;
static char history[4096];

/* Under `lock`: the request the thread serves next, and whether it is
 * reading a line now. */
static uv_mutex_t lock;
static uv_cond_t wanted;
static bool started, pending, reading;
static char *prompt;
static char *shown; /* the prompt of the line being read, while it is */
static mb_pid_t reader;
static char **words; /* NULL-terminated, sorted by the reader; or NULL */
static uv_thread_t thread;
static uv_once_t once = UV_ONCE_INIT;

/* Owned by the console thread. */
static bool at_eof;

static void init(void) {
  uv_mutex_init(&lock);
  uv_cond_init(&wanted);
  const char *term = getenv("TERM");
  have_tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tty) == 0;
#ifdef MB_HAVE_LIBEDIT
  editing = have_tty && isatty(STDOUT_FILENO) &&
            !(term != NULL && strcmp(term, "dumb") == 0);
#else
  (void)term;
#endif
  const char *file = getenv("MOONBEAM_HISTORY");
  const char *home = getenv("HOME");
  if (file != NULL)
    snprintf(history, sizeof history, "%s", file);
  else if (home != NULL)
    snprintf(history, sizeof history, "%s/.moonbeam_history", home);
}

void console_restore(void) {
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  bool thread_started = started;
  uv_mutex_unlock(&lock);
  if (editing && thread_started)
    tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
}

int console_evaluating(void) {
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  int busy = started && !pending && !reading;
  uv_mutex_unlock(&lock);
  return busy;
}

/* ---- the thread ---- */

static void free_words(char **w) {
  for (size_t i = 0; w != NULL && w[i] != NULL; i++)
    free(w[i]);
  free(w);
}

/* The logger's hook (see mb_log_set_around): while a line is read, take the
 * prompt (and what is typed) off the screen before a log line, and draw
 * them again after it. */
static void around_log(int after) {
  uv_mutex_lock(&lock);
  bool waiting = reading && shown != NULL;
  uv_mutex_unlock(&lock);
  if (!waiting)
    return;
#ifdef MB_HAVE_LIBEDIT
  if (editing) {
    if (!after) {
      fputs("\r\033[K", stdout);
      fflush(stdout);
    } else {
      rl_forced_update_display();
    }
    return;
  }
#endif
  if (!after) {
    fputc('\n', stdout); /* end the prompt's line */
    fflush(stdout);
  } else {
    uv_mutex_lock(&lock);
    if (reading && shown != NULL)
      fputs(shown, stdout);
    uv_mutex_unlock(&lock);
    fflush(stdout);
  }
}

#ifdef MB_HAVE_LIBEDIT
/* libedit's generator: the state-th word starting with text, malloc'd. */
static char *complete_word(const char *text, int state) {
  static size_t next, len;
  if (state == 0) {
    next = 0;
    len = strlen(text);
  }
  char *match = NULL;
  uv_mutex_lock(&lock);
  while (match == NULL && words != NULL && words[next] != NULL) {
    const char *w = words[next++];
    if (strncmp(w, text, len) == 0)
      match = strdup(w);
  }
  uv_mutex_unlock(&lock);
  return match;
}
#endif

/* A line without its newline, malloc'd; NULL at the end of input. */
static char *read_line(const char *text) {
#ifdef MB_HAVE_LIBEDIT
  if (editing) {
    char *line = readline(text);
    if (line == NULL) {
      fputc('\n', stdout); /* Ctrl-D leaves the cursor after the prompt */
      fflush(stdout);
    } else if (*line != '\0') {
      add_history(line);
      if (*history)
        write_history(history);
    }
    return line;
  }
#endif
  fputs(text, stdout);
  fflush(stdout);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, stdin);
  if (n < 0) {
    free(line);
    return NULL;
  }
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  return line;
}

/* Send {"$console", line or false} to `to`, built in the thread's state L,
 * where the moonbeam module is at index 1. */
static void deliver(lua_State *L, mb_pid_t to, const char *line) {
  lua_settop(L, 1);
  lua_getfield(L, 1, "tuple");
  lua_getfield(L, 1, "atom");
  lua_getfield(L, -1, "$console");
  lua_remove(L, -2);
  if (line != NULL)
    lua_pushstring(L, line);
  else
    lua_pushboolean(L, 0);
  lua_call(L, 2, 1);
  mb_msg_t *m;
  if (mb_msg_encode(L, -1, &m, NULL, 0) == 0)
    mb_proc_send(to, m);
}

static int open_state(lua_State *L) {
  luaL_requiref(L, "moonbeam", luaopen_moonbeam, 0);
  return 1;
}

static void console_thread(void *arg) {
  (void)arg;
  /* The state that builds the messages: moonbeam at index 1. */
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return;
  lua_pushcfunction(L, open_state);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    lua_close(L);
    return;
  }
#ifdef MB_HAVE_LIBEDIT
  if (editing) {
    /* The main thread handles SIGINT and SIGTERM with libuv: libedit must
     * not take them over while it reads. */
    rl_catch_signals = 0;
    rl_readline_name = "moonbeam";
    /* Words are Lua names with their dots and colons: "mb.spawn". */
    rl_completion_entry_function = complete_word;
    rl_completer_word_break_characters = " \t\n\"'><=;|&{(,+-*/%^~#[]";
    using_history();
    stifle_history(HISTORY_LINES);
    if (*history)
      read_history(history);
  }
#endif
  for (;;) {
    uv_mutex_lock(&lock);
    while (!pending)
      uv_cond_wait(&wanted, &lock);
    pending = false;
    reading = true;
    char *text = prompt;
    prompt = NULL;
    shown = text;
    uv_mutex_unlock(&lock);

    char *line = at_eof ? NULL : read_line(text ? text : "");
    at_eof = line == NULL;

    uv_mutex_lock(&lock);
    mb_pid_t to = reader;
    reading = false;
    shown = NULL;
    uv_mutex_unlock(&lock);
    free(text);
    deliver(L, to, line);
    free(line);
  }
}

/* ---- the module ---- */

/* read(prompt): the line comes to the caller as a message.  A request made
 * while a line is being read (its reader died and another asks) takes that
 * line: it goes to the newest reader, under the prompt already shown. */
/* The strings of the list at idx, as a NULL-terminated array; NULL when
 * there is no list (or no memory: Tab then completes nothing). */
static char **copy_words(lua_State *L, int idx) {
  if (!lua_istable(L, idx))
    return NULL;
  size_t n = (size_t)lua_rawlen(L, idx), k = 0;
  char **w = calloc(n + 1, sizeof *w);
  for (size_t i = 1; w != NULL && i <= n; i++) {
    if (lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TSTRING &&
        (w[k] = strdup(lua_tostring(L, -1))) != NULL)
      k++;
    lua_pop(L, 1);
  }
  return w;
}

static int l_read(lua_State *L) {
  const char *text = luaL_optstring(L, 1, "");
  mb_pid_t self = mb_lua_check_self(L, "read");
  char **new_words = copy_words(L, 2);
  char *copy = strdup(text);
  if (copy == NULL) {
    free_words(new_words);
    return luaL_error(L, "read: out of memory");
  }
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  reader = self;
  char **old_words = words;
  words = new_words;
  if (!reading) {
    free(prompt);
    prompt = copy;
    copy = NULL;
    pending = true;
  }
  int err = 0;
  if (!started) {
    err = uv_thread_create(&thread, console_thread, NULL);
    started = err == 0;
    if (started)
      mb_log_set_around(around_log);
  }
  uv_cond_signal(&wanted);
  uv_mutex_unlock(&lock);
  free_words(old_words);
  free(copy);
  if (err != 0)
    return luaL_error(L, "read: cannot start the console thread: %s",
                      uv_strerror(err));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_line_editing(lua_State *L) {
  uv_once(&once, init);
  lua_pushboolean(L, editing);
  return 1;
}

/* pid(node, id, serial): node 0 is this node; others need distribution. */
static int l_pid(lua_State *L) {
  lua_Integer node = luaL_checkinteger(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  lua_Integer serial = luaL_checkinteger(L, 3);
  luaL_argcheck(L, node == 0, 1, "pids of other nodes need distribution");
  luaL_argcheck(L, id >= 0 && id <= 0x7fff, 2, "id out of range 0..32767");
  luaL_argcheck(L, serial >= 0 && serial <= 0x1fff, 3,
                "serial out of range 0..8191");
  mb_lua_push_pid(L, (mb_pid_t)id | (mb_pid_t)serial << 15);
  return 1;
}

int luaopen_moonbeam_console(lua_State *L) {
  static const luaL_Reg funcs[] = {{"read", l_read},
                                   {"line_editing", l_line_editing},
                                   {"pid", l_pid},
                                   {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
