/* EPMD: the client against the built-in server and against a real epmd;
 * both servers against raw requests (whole, split, duplicate, old
 * version), the built-in one against malformed requests, a real Erlang
 * node, epmd's own client and a second moonbeam node.  Ports are free ones
 * of 127.0.0.1; every program started is stopped by its pid.  The parts
 * that need Erlang are skipped, with a line saying so, where it is not
 * installed. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#include "dist/dist_internal.h"

#define WAIT_MS 30000 /* the bound on every wait */

/* ---- the API, made synchronous ---- */

typedef struct {
  bool done;
  int err;
  uint32_t value;
  char text[8192];
} result_t;

static uv_mutex_t lock;
static uv_cond_t cond;

static void finish(result_t *r, int err, uint32_t value, const char *text) {
  uv_mutex_lock(&lock);
  r->err = err;
  r->value = value;
  if (text != NULL)
    snprintf(r->text, sizeof r->text, "%s", text);
  r->done = true;
  uv_cond_broadcast(&cond);
  uv_mutex_unlock(&lock);
}

static void on_register(int err, uint32_t creation, void *arg) {
  ASSERT(mb__on_loop());
  finish(arg, err, creation, NULL);
}

static void on_lookup(int err, int port, void *arg) {
  ASSERT(mb__on_loop());
  finish(arg, err, (uint32_t)port, NULL);
}

static void on_names(int err, const char *text, void *arg) {
  ASSERT(mb__on_loop());
  ASSERT(err != 0 || text != NULL);
  finish(arg, err, 0, text);
}

static int await(result_t *r) {
  uv_mutex_lock(&lock);
  for (int i = 0; i < WAIT_MS / 100 && !r->done; i++)
    uv_cond_timedwait(&cond, &lock, 100 * 1000000ull);
  bool done = r->done;
  uv_mutex_unlock(&lock);
  ASSERT(done);
  return r->err;
}

static int do_register(const char *alive, int port, uint32_t *creation) {
  static result_t r;
  memset(&r, 0, sizeof r);
  ASSERT_EQ(0, mb__epmd_register(alive, port, on_register, &r));
  int err = await(&r);
  if (creation != NULL)
    *creation = r.value;
  return err;
}

static int do_lookup(const char *host, const char *alive, int *port) {
  static result_t r;
  memset(&r, 0, sizeof r);
  ASSERT_EQ(0, mb__epmd_lookup(host, alive, on_lookup, &r));
  int err = await(&r);
  if (port != NULL)
    *port = (int)r.value;
  return err;
}

static int do_names(const char *host, char *text, size_t cap) {
  static result_t r;
  memset(&r, 0, sizeof r);
  ASSERT_EQ(0, mb_epmd_names(host, on_names, &r));
  int err = await(&r);
  snprintf(text, cap, "%s", err == 0 ? r.text : "");
  return err;
}

/* Unregistering is seen by others a moment later: poll, bounded. */
static void await_lookup(const char *alive, int want_err, int want_port) {
  int err = 0, port = 0;
  for (int i = 0; i < WAIT_MS / 20; i++) {
    err = do_lookup("127.0.0.1", alive, &port);
    if (err == want_err && (err != 0 || port == want_port))
      return;
    usleep(20000);
  }
  fprintf(stderr, "lookup %s: %s %d\n", alive, mb_err_name(err), port);
  ASSERT(0);
}

static void set_epmd_port(int port) {
  char s[16];
  snprintf(s, sizeof s, "%d", port);
  ASSERT_EQ(0, setenv("ERL_EPMD_PORT", s, 1));
}

/* ---- raw clients, with blocking sockets and bounded waits ---- */

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT(fd >= 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A port nobody listens on now. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  socklen_t len = sizeof a;
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(0, bind(fd, (struct sockaddr *)&a, sizeof a));
  ASSERT_EQ(0, getsockname(fd, (struct sockaddr *)&a, &len));
  close(fd);
  return ntohs(a.sin_port);
}

static void await_listening(int port, bool want) {
  for (int i = 0; i < WAIT_MS / 20; i++) {
    int fd = raw_connect(port);
    if (fd >= 0)
      close(fd);
    if ((fd >= 0) == want)
      return;
    usleep(20000);
  }
  ASSERT(0);
}

/* One byte at a time when split, so that the server reads the request in
 * pieces.  False if the server closed the connection meanwhile. */
static bool raw_send(int fd, const void *data, size_t n, bool split) {
  const char *p = data;
  size_t step = split ? 1 : n;
  for (size_t i = 0; i < n; i += step) {
    if (send(fd, p + i, step, MSG_NOSIGNAL) != (ssize_t)step)
      return false;
    if (split)
      usleep(2000);
  }
  return true;
}

/* Up to `want` bytes (0: until EOF); *eof tells if the peer closed. */
static size_t raw_read(int fd, unsigned char *buf, size_t cap, size_t want,
                       bool *eof) {
  size_t got = 0;
  *eof = false;
  while (got < cap && (want == 0 || got < want)) {
    ssize_t n = recv(fd, buf + got, cap - got, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      *eof = true;
      break;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      break; /* the 5 s timeout */
    got += (size_t)n;
  }
  return got;
}

static size_t put_alive2(unsigned char *out, const char *name, int hi,
                         int port) {
  size_t n = strlen(name);
  unsigned char *p = out;
  *p++ = (unsigned char)((13 + n) >> 8);
  *p++ = (unsigned char)(13 + n);
  *p++ = 120;
  *p++ = (unsigned char)(port >> 8);
  *p++ = (unsigned char)port;
  *p++ = 77;
  *p++ = 0;
  *p++ = 0, *p++ = (unsigned char)hi;
  *p++ = 0, *p++ = 5;
  *p++ = 0, *p++ = (unsigned char)n;
  memcpy(p, name, n);
  p += n;
  *p++ = 0, *p++ = 0;
  return (size_t)(p - out);
}

/* Register over a connection that stays open; the reply goes to rep. */
static int raw_register(int epmd, const char *name, int hi, int port,
                        unsigned char rep[6], bool split) {
  unsigned char req[300];
  bool eof;
  int fd = raw_connect(epmd);
  ASSERT(fd >= 0);
  ASSERT(raw_send(fd, req, put_alive2(req, name, hi, port), split));
  size_t want = hi >= 6 ? 6 : 4;
  ASSERT_EQ(want, raw_read(fd, rep, want, want, &eof));
  return fd;
}

/* A one-shot request; the reply is read to EOF. */
static size_t raw_query(int epmd, const void *req, size_t n, unsigned char *buf,
                        size_t cap, bool split) {
  bool eof;
  int fd = raw_connect(epmd);
  ASSERT(fd >= 0);
  ASSERT(raw_send(fd, req, n, split));
  size_t got = raw_read(fd, buf, cap, 0, &eof);
  ASSERT(eof);
  close(fd);
  return got;
}

static size_t port_please(int epmd, const char *name, unsigned char *buf,
                          size_t cap) {
  unsigned char req[300];
  size_t n = strlen(name);
  req[0] = 0, req[1] = (unsigned char)(n + 1), req[2] = 122;
  memcpy(req + 3, name, n);
  return raw_query(epmd, req, n + 3, buf, cap, false);
}

static void raw_names(int epmd, char *text, size_t cap) {
  static const unsigned char req[] = {0, 1, 110};
  unsigned char buf[8192];
  size_t n = raw_query(epmd, req, 3, buf, sizeof buf - 1, false);
  ASSERT(n >= 4);
  ASSERT_EQ((uint32_t)epmd,
            (uint32_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3]);
  buf[n] = '\0';
  snprintf(text, cap, "%s", (char *)buf + 4);
}

static void await_gone(int epmd, const char *name) {
  unsigned char buf[64];
  for (int i = 0; i < WAIT_MS / 20; i++) {
    if (port_please(epmd, name, buf, sizeof buf) == 2 && buf[1] != 0)
      return;
    usleep(20000);
  }
  ASSERT(0);
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* What both servers must do alike, as the protocol says.  Creations
 * differ: the built-in server counts registrations; epmd gives a new name
 * its latest creation and a name seen before the one after its last. */
static void check_wire(int epmd, bool builtin) {
  unsigned char rep[6], buf[256];
  char text[8192];
  bool eof;
  int a = raw_register(epmd, "wire1", 6, 5001, rep, true);
  ASSERT(rep[0] == 118 && rep[1] == 0);
  uint32_t c1 = get32(rep + 2);
  ASSERT(c1 != 0);
  /* The built-in server closes a refused registration; epmd leaves it
   * open. */
  int dup = raw_register(epmd, "wire1", 6, 5009, rep, false);
  ASSERT(rep[0] == 118 && rep[1] != 0);
  close(dup);
  int b = raw_register(epmd, "wire2", 5, 5002, rep, false);
  ASSERT(rep[0] == 121 && rep[1] == 0);
  ASSERT(rep[2] == 0 && rep[3] >= 1 && rep[3] <= 3);
  int c = raw_register(epmd, "wire3", 6, 5003, rep, false);
  ASSERT(rep[0] == 118 && rep[1] == 0);
  ASSERT(get32(rep + 2) != 0);
  ASSERT(!builtin || get32(rep + 2) - c1 == 2); /* wire2 took one */

  static const unsigned char found[] = {119, 0,   0x13, 0x89, 77, 0,   0,
                                        6,   0,   5,    0,    5,  'w', 'i',
                                        'r', 'e', '1',  0,    0};
  ASSERT_EQ(sizeof found, port_please(epmd, "wire1", buf, sizeof buf));
  ASSERT_EQ(0, memcmp(found, buf, sizeof found));
  ASSERT_EQ(2, port_please(epmd, "nope", buf, sizeof buf));
  ASSERT(buf[0] == 119 && buf[1] != 0);
  static const unsigned char split[] = {0, 6, 122, 'w', 'i', 'r', 'e', '1'};
  ASSERT_EQ(sizeof found,
            raw_query(epmd, split, sizeof split, buf, sizeof buf, true));
  ASSERT_EQ(0, memcmp(found, buf, sizeof found));

  raw_names(epmd, text, sizeof text);
  ASSERT(strstr(text, "name wire1 at port 5001\n") != NULL);
  ASSERT(strstr(text, "name wire2 at port 5002\n") != NULL);
  ASSERT(strstr(text, "name wire3 at port 5003\n") != NULL);

  /* Nothing may follow ALIVE2_REQ: the registration ends. */
  ASSERT(raw_send(c, "zz", 2, false));
  ASSERT_EQ(0, raw_read(c, buf, sizeof buf, 0, &eof));
  ASSERT(eof);
  close(c);
  await_gone(epmd, "wire3");
  /* Closing the connection unregisters. */
  close(a);
  await_gone(epmd, "wire1");
  close(b);
  await_gone(epmd, "wire2");
}

/* Each is closed without a reply, and the server goes on. */
static void check_malformed(int epmd) {
  static const struct {
    const char *what;
    size_t len;
    const char *bytes;
  } bad[] = {
      {"length 0", 2, "\0\0"},
      {"oversized", 12,
       "\xff\xff"
       "0123456789"},
      {"unknown request", 3, "\0\1Q"},
      {"DUMP_REQ", 3, "\0\1d"},
      {"PORT_PLEASE2 without a name", 3, "\0\1z"},
      {"NAMES with a byte more", 4, "\0\2nx"},
      {"short ALIVE2", 7, "\0\5x\0\1M\0"},
      {"ALIVE2 name beyond it", 17,
       "\0\x0fx\0\1M\0\0\6\0\5\0\xc8"
       "ab\0\0"},
      {"ALIVE2 extra beyond it", 17, "\0\x0fx\0\1M\0\0\6\0\5\0\2ab\0\7"},
      {"ALIVE2 empty name", 15, "\0\x0dx\0\1M\0\0\6\0\5\0\0\0\0"},
      {"ALIVE2 newline in name", 18, "\0\x10x\0\1M\0\0\6\0\5\0\3a\nb\0\0"},
      {"ALIVE2 NUL in name", 18, "\0\x10x\0\1M\0\0\6\0\5\0\3a\0b\0\0"},
      {"ALIVE2 and more", 19, "\0\x0fx\0\1M\0\0\6\0\5\0\2ab\0\0zz"},
  };
  unsigned char buf[64];
  char text[8192];
  size_t n_bad = sizeof bad / sizeof bad[0];
  for (size_t i = 0; i < n_bad; i++) {
    bool eof;
    int fd = raw_connect(epmd);
    ASSERT(fd >= 0);
    /* Split, some of them; the last must come whole to be one request
     * with more after it. */
    raw_send(fd, bad[i].bytes, bad[i].len, i % 2 == 0 && i + 1 < n_bad);
    size_t got = raw_read(fd, buf, sizeof buf, 0, &eof);
    if (got != 0 || !eof)
      fprintf(stderr, "%s: %zu bytes, eof %d\n", bad[i].what, got, eof);
    ASSERT(got == 0 && eof);
    close(fd);
  }
  /* Half a request, then gone. */
  int fd = raw_connect(epmd);
  raw_send(fd, "\0\x09zab", 5, false);
  close(fd);
  /* Two requests at once: the first is answered, the rest dropped. */
  static const unsigned char two[] = {0, 5, 122, 'n', 'o', 'p', 'e', 0, 1, 110};
  ASSERT_EQ(2, raw_query(epmd, two, sizeof two, buf, sizeof buf, false));
  ASSERT(buf[0] == 119 && buf[1] == 1);
  raw_names(epmd, text, sizeof text);
  ASSERT(strstr(text, "name ab ") == NULL);
}

/* ---- programs started by the test ---- */

static char *find_program(const char *name) {
  static char path[4096];
  const char *dirs = getenv("PATH");
  while (dirs != NULL && *dirs != '\0') {
    size_t n = strcspn(dirs, ":");
    snprintf(path, sizeof path, "%.*s/%s", (int)n, dirs, name);
    if (access(path, X_OK) == 0)
      return path;
    dirs += n + (dirs[n] == ':');
  }
  return NULL;
}

static char *find_epmd(void) {
  static char path[4096];
  glob_t g;
  if (glob("/usr/lib/erlang/erts-*/bin/epmd", 0, NULL, &g) == 0 &&
      g.gl_pathc > 0) {
    snprintf(path, sizeof path, "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    return path;
  }
  char *p = find_program("epmd");
  return p ? strcpy(path, p) : NULL;
}

/* The programs started, killed by pid if the test fails or is killed. */
static volatile pid_t children[8];

static void kill_children(int sig) {
  for (int i = 0; i < 8; i++)
    if (children[i] > 0)
      kill(children[i], SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void on_failure(void) {
  signal(SIGABRT, kill_children); /* ASSERT */
  signal(SIGTERM, kill_children);
  signal(SIGINT, kill_children);
  signal(SIGALRM, kill_children);
  alarm(110); /* within ctest's 120 s, which would leave them running */
}

static void track(pid_t pid, pid_t was) {
  for (int i = 0; i < 8; i++)
    if (children[i] == was) {
      children[i] = pid;
      return;
    }
  ASSERT(0);
}

/* In the child, between fork and exec: async-signal-safe calls only.  It
 * dies with the test, however the test ends. */
static void exec_child(char *const argv[], int in, int out, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent || dup2(in, 0) < 0 || dup2(out, 1) < 0)
    _exit(127);
  execve(argv[0], argv, environ);
  _exit(127);
}

/* Start argv with pipes for its stdin and stdout when asked for, or else
 * /dev/null. */
static pid_t start(char *const argv[], int *in, int *out) {
  int ip[2], op[2];
  ASSERT_EQ(0, pipe2(ip, O_CLOEXEC));
  ASSERT_EQ(0, pipe2(op, O_CLOEXEC));
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT(null >= 0);
  pid_t parent = getpid(), pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0)
    exec_child(argv, in ? ip[0] : null, out ? op[1] : null, parent);
  track(pid, 0);
  close(null);
  close(ip[0]);
  close(op[1]);
  if (in)
    *in = ip[1];
  else
    close(ip[1]);
  if (out)
    *out = op[0];
  else
    close(op[0]);
  return pid;
}

/* Wait for it to exit, bounded; then kill it (by its pid). */
static int reap(pid_t pid) {
  int status = -1;
  for (int i = 0; i < WAIT_MS / 20; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      track(0, pid);
      return status;
    }
    usleep(20000);
  }
  fprintf(stderr, "pid %d did not exit\n", (int)pid);
  ASSERT(0); /* kills it */
  return status;
}

/* Read what fd writes until `marker` is in it, or EOF (marker NULL). */
static void read_until(int fd, char *buf, size_t cap, const char *marker) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < WAIT_MS / 100; i++) {
    if (marker && strstr(buf, marker))
      return;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0)
      continue;
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n <= 0 && marker == NULL)
      return;
    ASSERT(n > 0);
    len += (size_t)n;
    buf[len] = '\0';
  }
  fprintf(stderr, "waited for %s; got: %s\n", marker ? marker : "EOF", buf);
  ASSERT(0);
}

/* A second moonbeam node: registers, says how it went, and stays
 * registered until its stdin closes. */
static int child_main(const char *alive) {
  ASSERT_EQ(0, uv_mutex_init(&lock));
  ASSERT_EQ(0, uv_cond_init(&cond));
  ASSERT_EQ(0, mb__loop_start());
  uint32_t creation = 0;
  int err = do_register(alive, 7777, &creation);
  printf("register %s %u\n", mb_err_name(err), (unsigned)creation);
  fflush(stdout);
  char c;
  while (err == 0 && read(0, &c, 1) > 0)
    ;
  mb__epmd_stop();
  mb__loop_stop(NULL);
  return 0;
}

static void check_moonbeam_child(int epmd, uint32_t after) {
  char *argv[] = {"/proc/self/exe", "child", "mbtest", NULL};
  char out[256];
  int in, o;
  pid_t pid = start(argv, NULL, &o);
  read_until(o, out, sizeof out, "\n");
  ASSERT(strstr(out, "register EEXIST") == out);
  close(o);
  ASSERT_EQ(0, reap(pid));

  argv[2] = "mbkid";
  pid = start(argv, &in, &o);
  read_until(o, out, sizeof out, "\n");
  unsigned creation = 0;
  ASSERT_EQ(1, sscanf(out, "register OK %u", &creation));
  ASSERT((int32_t)(creation - after) > 0);
  int port = 0;
  ASSERT_EQ(0, do_lookup("127.0.0.1", "mbkid", &port));
  ASSERT_EQ(7777, port);
  close(in);
  close(o);
  ASSERT_EQ(0, reap(pid));
  await_lookup("mbkid", MB_ENOTFOUND, 0);
  (void)epmd;
}

/* A real Erlang node registers with the built-in server and uses it to
 * list names and find ours; then epmd's own client lists them. */
static void check_erlang_node(int epmd, uint32_t ours) {
  char *erl = find_program("erl");
  char *epmd_bin = find_epmd();
  if (erl == NULL || epmd_bin == NULL) {
    printf("skipped: Erlang is not installed\n");
    return;
  }
  char *argv[] = {
      erl,
      "-sname",
      "mbt1",
      "-setcookie",
      "mbtest",
      "-noshell",
      "-start_epmd",
      "false",
      "-kernel",
      "inet_dist_use_interface",
      "{127,0,0,1}",
      "-eval",
      "io:format(\"names ~p~n\", [erl_epmd:names({127,0,0,1})]),"
      "io:format(\"mbtest ~p~n\","
      "  [erl_epmd:port_please(\"mbtest\", {127,0,0,1})]),"
      "{port, P, _} = erl_epmd:port_please(\"mbt1\", {127,0,0,1}),"
      "io:format(\"self ~p ~p~n\", [P, erlang:system_info(creation)]),"
      "io:format(\"ready~n\"),"
      "io:get_line(\"\"),"
      "halt().",
      NULL};
  char out[4096], text[8192], line[64];
  int in, o, eo, port = 0;
  unsigned creation = 0;
  pid_t pid = start(argv, &in, &o);
  read_until(o, out, sizeof out, "ready\n");
  ASSERT(strstr(out, "{\"mbtest\",5555}") != NULL);
  ASSERT(strstr(out, "mbtest {port,5555,") != NULL);
  ASSERT_EQ(2, sscanf(strstr(out, "self "), "self %d %u", &port, &creation));
  ASSERT((int32_t)(creation - ours) > 0);
  int found = 0;
  ASSERT_EQ(0, do_lookup("127.0.0.1", "mbt1", &found));
  ASSERT_EQ(port, found);
  ASSERT_EQ(0, do_names("localhost", text, sizeof text));
  snprintf(line, sizeof line, "name mbt1 at port %d\n", port);
  ASSERT(strstr(text, line) != NULL);

  char eport[16];
  snprintf(eport, sizeof eport, "%d", epmd);
  char *names[] = {epmd_bin, "-port", eport, "-names", NULL};
  pid_t npid = start(names, NULL, &eo);
  read_until(eo, text, sizeof text, NULL);
  close(eo);
  ASSERT_EQ(0, reap(npid));
  ASSERT(strstr(text, "name mbtest at port 5555") != NULL);
  ASSERT(strstr(text, line) != NULL);

  close(in); /* io:get_line returns eof: the node halts */
  close(o);
  ASSERT_EQ(0, reap(pid));
  await_lookup("mbt1", MB_ENOTFOUND, 0);
  printf("built-in server: Erlang node and epmd -names ok\n");
}

/* ---- a fake EPMD, to see the client read replies ---- */

/* Accepts one connection on lfd, reads one request, sends `reply` (a byte
 * at a time when split), then closes, or first waits for the client to
 * close when keep is set. */
typedef struct {
  int lfd;
  const unsigned char *reply;
  size_t len;
  bool split, keep;
  unsigned char req[512];
  size_t req_len;
  bool client_closed;
  uv_thread_t thread;
} fake_t;

static int fake_listen(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {0};
  socklen_t len = sizeof a;
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(0, bind(fd, (struct sockaddr *)&a, sizeof a));
  ASSERT_EQ(0, listen(fd, 8));
  ASSERT_EQ(0, getsockname(fd, (struct sockaddr *)&a, &len));
  struct timeval tv = {5, 0}; /* bounds accept */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  *port = ntohs(a.sin_port);
  set_epmd_port(*port);
  return fd;
}

static void fake_main(void *arg) {
  fake_t *f = arg;
  bool eof;
  int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
  ASSERT(fd >= 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  f->req_len = raw_read(fd, f->req, sizeof f->req, 2, &eof);
  size_t n = f->req_len == 2 ? (size_t)(f->req[0] << 8 | f->req[1]) : 0;
  f->req_len += raw_read(fd, f->req + 2, n, n, &eof);
  raw_send(fd, f->reply, f->len, f->split);
  unsigned char rest[16];
  if (f->keep)
    f->client_closed = raw_read(fd, rest, sizeof rest, 0, &eof) == 0 && eof;
  close(fd);
}

static void fake_start(fake_t *f, int lfd, const void *reply, size_t len,
                       bool split, bool keep) {
  memset(f, 0, sizeof *f);
  f->lfd = lfd;
  f->reply = reply;
  f->len = len;
  f->split = split;
  f->keep = keep;
  ASSERT_EQ(0, uv_thread_create(&f->thread, fake_main, f));
}

static void check_client_reads(void) {
  static const unsigned char x_ok[] = {118, 0, 0x12, 0x34, 0x56, 0x78},
                             old_ok[] = {121, 0, 0, 2},
                             taken[] = {118, 1, 0, 0, 0, 99},
                             junk[] = {'H', 'T', 'T', 'P'},
                             found[] = {119, 0, 0x1f, 0x90, 77,  0, 0, 6,
                                        0,   5, 0,    1,    'x', 0, 0},
                             cut[] = {119, 0, 0x1f}, names[] = {0, 0};
  static const unsigned char alive2[] = {0, 15, 120, 0x15, 0xb3, 77,  0, 0, 6,
                                         0, 5,  0,   2,    'm',  'b', 0, 0};
  fake_t f;
  int port, lfd = fake_listen(&port);
  uint32_t creation = 0;
  int found_port = 0;
  char text[64];

  /* The reply comes split; the registration stays until unregistered. */
  fake_start(&f, lfd, x_ok, sizeof x_ok, true, true);
  ASSERT_EQ(0, do_register("mb", 5555, &creation));
  ASSERT_EQ(0x12345678u, creation);
  mb__epmd_unregister();
  uv_thread_join(&f.thread);
  ASSERT_EQ(sizeof alive2, f.req_len);
  ASSERT_EQ(0, memcmp(alive2, f.req, sizeof alive2));
  ASSERT(f.client_closed);

  fake_start(&f, lfd, old_ok, sizeof old_ok, false, true);
  ASSERT_EQ(0, do_register("mb", 5555, &creation));
  ASSERT_EQ(2u, creation);
  mb__epmd_unregister();
  uv_thread_join(&f.thread);
  ASSERT(f.client_closed);

  fake_start(&f, lfd, taken, sizeof taken, false, false);
  ASSERT_EQ(MB_EEXIST, do_register("mb", 5555, NULL));
  uv_thread_join(&f.thread);
  fake_start(&f, lfd, junk, sizeof junk, false, false);
  ASSERT_EQ(MB_EPROTO, do_register("mb", 5555, NULL));
  uv_thread_join(&f.thread);
  fake_start(&f, lfd, junk, 0, false, false);
  ASSERT_EQ(MB_ECONN, do_register("mb", 5555, NULL));
  uv_thread_join(&f.thread);

  fake_start(&f, lfd, found, sizeof found, true, false);
  ASSERT_EQ(0, do_lookup("127.0.0.1", "x", &found_port));
  ASSERT_EQ(8080, found_port);
  uv_thread_join(&f.thread);
  ASSERT(f.req_len == 4 && memcmp(f.req, "\0\2zx", 4) == 0);
  fake_start(&f, lfd, cut, sizeof cut, false, false);
  ASSERT_EQ(MB_EPROTO, do_lookup("127.0.0.1", "x", &found_port));
  uv_thread_join(&f.thread);
  fake_start(&f, lfd, names, sizeof names, false, false);
  ASSERT_EQ(MB_EPROTO, do_names("127.0.0.1", text, sizeof text));
  uv_thread_join(&f.thread);

  /* Connected (the kernel accepts for the listener), never answered. */
  ASSERT_EQ(MB_ETIMEDOUT, do_lookup("127.0.0.1", "x", &found_port));
  close(lfd);
}

/* ---- the parts ---- */

static void check_arguments(void) {
  result_t r = {0};
  ASSERT_EQ(MB_EINVAL, mb__epmd_register("", 1, on_register, &r));
  ASSERT_EQ(MB_EINVAL, mb__epmd_register("a@b", 1, on_register, &r));
  ASSERT_EQ(MB_EINVAL, mb__epmd_register("a\nb", 1, on_register, &r));
  ASSERT_EQ(MB_EINVAL, mb__epmd_register("a", 0, on_register, &r));
  ASSERT_EQ(MB_EINVAL, mb__epmd_register("a", 70000, on_register, &r));
  ASSERT_EQ(MB_EINVAL, mb__epmd_lookup("", "a", on_lookup, &r));
  ASSERT_EQ(MB_EINVAL, mb__epmd_lookup("127.0.0.1", "", on_lookup, &r));
  ASSERT_EQ(MB_EINVAL, mb_epmd_names(NULL, on_names, &r));
  ASSERT_EQ(0, setenv("ERL_EPMD_PORT", "43x", 1));
  ASSERT_EQ(MB_EINVAL, mb_epmd_names("127.0.0.1", on_names, &r));
}

/* Nothing listens: this node serves EPMD. */
static void check_builtin(int epmd) {
  char text[8192];
  uint32_t creation = 0;
  int port = 0;
  set_epmd_port(epmd);
  ASSERT_EQ(MB_ECONN, do_lookup("127.0.0.1", "mbtest", &port));
  ASSERT_EQ(0, do_register("mbtest", 5555, &creation));
  ASSERT(creation != 0);
  ASSERT_EQ(MB_ESTATE, do_register("mbother", 5556, NULL));
  ASSERT_EQ(0, do_lookup("127.0.0.1", "mbtest", &port));
  ASSERT_EQ(5555, port);
  ASSERT_EQ(0, do_lookup("localhost", "mbtest", &port));
  ASSERT_EQ(5555, port);
  ASSERT_EQ(MB_ENOTFOUND, do_lookup("127.0.0.1", "nope", &port));
  ASSERT_EQ(0, do_names("127.0.0.1", text, sizeof text));
  ASSERT(strstr(text, "name mbtest at port 5555\n") != NULL);

  printf("built-in server: client ok\n");
  check_wire(epmd, true);
  printf("built-in server: protocol ok\n");
  check_malformed(epmd);
  printf("built-in server: malformed requests ok\n");
  check_moonbeam_child(epmd, creation);
  printf("built-in server: second moonbeam node ok\n");
  check_erlang_node(epmd, creation);

  /* Unregistering, then registering again, with the server kept. */
  mb__epmd_unregister();
  await_lookup("mbtest", MB_ENOTFOUND, 0);
  uint32_t again = 0;
  ASSERT_EQ(0, do_register("mbtest", 5557, &again));
  ASSERT((int32_t)(again - creation) > 0);
  await_lookup("mbtest", 0, 5557);

  mb__epmd_stop();
  await_listening(epmd, false);
  ASSERT_EQ(MB_ECONN, do_lookup("127.0.0.1", "mbtest", &port));
  printf("built-in server: stopped ok\n");
}

/* A real epmd listens: this node uses it and serves nothing. */
static void check_real_epmd(int epmd) {
  char *bin = find_epmd();
  if (bin == NULL) {
    printf("skipped: no epmd\n");
    return;
  }
  char eport[16], text[8192];
  snprintf(eport, sizeof eport, "%d", epmd);
  char *argv[] = {bin, "-port", eport, "-address", "127.0.0.1", NULL};
  pid_t pid = start(argv, NULL, NULL);
  await_listening(epmd, true);
  set_epmd_port(epmd);

  uint32_t creation = 0, again = 0;
  int port = 0;
  ASSERT_EQ(0, do_register("mbreal", 6666, &creation));
  ASSERT(creation != 0);
  ASSERT_EQ(0, do_lookup("127.0.0.1", "mbreal", &port));
  ASSERT_EQ(6666, port);
  ASSERT_EQ(MB_ENOTFOUND, do_lookup("localhost", "nope", &port));
  ASSERT_EQ(0, do_names("127.0.0.1", text, sizeof text));
  ASSERT(strstr(text, "name mbreal at port 6666\n") != NULL);
  unsigned char rep[6];
  int dup = raw_register(epmd, "mbreal", 6, 1, rep, false);
  ASSERT(rep[0] == 118 && rep[1] != 0);
  close(dup);

  check_wire(epmd, false);

  mb__epmd_unregister();
  await_lookup("mbreal", MB_ENOTFOUND, 0);
  ASSERT_EQ(0, do_register("mbreal", 6667, &again));
  ASSERT(again != 0 && again != creation);
  mb__epmd_stop();
  await_lookup("mbreal", MB_ENOTFOUND, 0);

  ASSERT_EQ(0, kill(pid, SIGTERM));
  reap(pid);
  await_listening(epmd, false); /* and none of ours took its place */
  printf("real epmd: ok\n");
}

/* Tests use 127.0.0.1 only; the built-in server would otherwise listen on
 * every interface. */
static void setup(void) {
  ASSERT_EQ(0, setenv("ERL_EPMD_ADDRESS", "127.0.0.1", 1));
  on_failure();
  ASSERT_EQ(0, uv_mutex_init(&lock));
  ASSERT_EQ(0, uv_cond_init(&cond));
  ASSERT_EQ(0, mb__loop_start());
}

TEST_IMPL(refuses_bad_arguments) {
  setup();
  check_arguments();
  mb__loop_stop(NULL);
}

TEST_IMPL(client_reads_every_reply) {
  setup();
  check_client_reads();
  mb__loop_stop(NULL);
}

TEST_IMPL(builtin_server) {
  setup();
  check_builtin(free_port());
  mb__loop_stop(NULL);
}

TEST_IMPL(real_epmd) {
  setup();
  check_real_epmd(free_port());
  mb__loop_stop(NULL);
}

static const test_case_t test_cases[] = {TEST_ENTRY(refuses_bad_arguments),
                                         TEST_ENTRY(client_reads_every_reply),
                                         TEST_ENTRY(builtin_server),
                                         TEST_ENTRY(real_epmd),
                                         {NULL, NULL}};

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "child") == 0)
    return child_main(argv[2]);
  return test_main(argc, argv, test_cases);
}
