/* Reading the stack of a process that is not running (mb_proc_stack,
 * process_info's current_function and current_stacktrace), and its queue
 * (process_messages): a process waiting in receive inside a known
 * function is read, from the host's thread and from processes on four
 * schedulers, while others send to it and wake it; every read finds it
 * there or running, and no message or wake-up is lost. */
#include <stdatomic.h>
#include <stdbool.h>

#include <uv.h>

#include "test.h"

#define SENDERS 8
#define PER_SENDER 2000

static mb_pid_t waiter;
static atomic_bool stop_reading;
static atomic_long host_reads, host_found;

/* A waiting process's stack: its receive, then the function that called
 * it, line and name. */
static int waits_in_wait_here(const char *text) {
  return strncmp(text, "[C] in function 'receive'\n", 26) == 0 &&
         strstr(text, ":7 in function 'wait_here'\n") != NULL;
}

static void reader_main(void *arg) {
  (void)arg;
  char buf[2048];
  while (!atomic_load(&stop_reading)) {
    int r = mb_proc_stack(waiter, buf, sizeof buf);
    ASSERT(r == 0 || r == MB_ESTATE);
    atomic_fetch_add(&host_reads, 1);
    if (r == 0) {
      /* Suspended in receive, or preempted (rarely) elsewhere in it. */
      ASSERT(strstr(buf, "in function 'wait_here'\n") != NULL);
      atomic_fetch_add(&host_found, waits_in_wait_here(buf));
    }
  }
}

/* Line 7 is the receive. */
static const char *waiter_code =
    "local mb = require 'moonbeam'\n"
    "return function()\n"
    "  mb.register('stack_waiter', mb.self())\n"
    "  local n = 0\n"
    "  local function wait_here()\n"
    "    while true do\n"
    "      local m = mb.receive()\n"
    "      if m == 'stop' then return end\n"
    "      if type(m) == 'table' then mb.send(m[1], {'count', n})\n"
    "      else n = n + 1 end\n"
    "    end\n"
    "  end\n"
    "  wait_here()\n"
    "  return n\n"
    "end\n";

TEST_IMPL(reads_a_waiting_process_while_others_wake_it) {
  test_node_start(4);
  mb_waiter_t *w;
  mb_spawn_opts_t o = {0};
  o.fn = test_function(waiter_code);
  o.waiter = &w;
  ASSERT_EQ(0, mb_proc_spawn_opts(&o, &waiter));

  /* Until it waits in receive (bounded): before it first runs its stack
   * is empty. */
  char buf[2048];
  int tries = 0;
  while (!(mb_proc_stack(waiter, buf, sizeof buf) == 0 &&
           waits_in_wait_here(buf))) {
    ASSERT(++tries < 1000000);
    sched_yield();
  }

  uv_thread_t reader;
  ASSERT_EQ(0, uv_thread_create(&reader, reader_main, NULL));
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local w = assert(mb.whereis('stack_waiter'))\n"
      "  local done = 0\n"
      "  for i = 1, 8 do\n"
      "    mb.spawn(function()\n"
      "      for j = 1, 2000 do mb.send(w, j) end\n"
      "      mb.send(me, 'sent')\n"
      "    end)\n"
      "  end\n"
      "  for i = 1, 4 do\n"
      "    mb.spawn(function()\n"
      "      local found = 0\n"
      "      for j = 1, 2000 do\n"
      "        local f = mb.process_info(w, 'current_function')\n"
      "        assert(f == 'running' or f:find(\"in function 'wait_here'$\"),"
      " f)\n"
      "        if f ~= 'running' then found = found + 1 end\n"
      "        local t = mb.process_info(w, 'current_stacktrace')\n"
      "        assert(t == 'running' or t[1] == \"[C] in function "
      "'receive'\" or t[1]:find(\"in function 'wait_here'$\"), t[1])\n"
      "        local head, skipped = mb.process_messages(w, 5)\n"
      "        assert(skipped == false or skipped == 0, skipped)\n"
      "        for _, m in ipairs(head) do assert(math.type(m) == 'integer') "
      "end\n"
      "      end\n"
      "      mb.send(me, {'read', found})\n"
      "    end)\n"
      "  end\n"
      "  local sent, read = 0, 0\n"
      "  while sent < 8 or read < 4 do\n"
      "    local m = assert(mb.receive(30000), 'timed out')\n"
      "    if m == 'sent' then sent = sent + 1 else read = read + 1 end\n"
      "  end\n"
      "  mb.send(w, {me})\n"
      "  local c = assert(mb.receive(function(m) return type(m) == 'table' "
      "and m[1] == 'count' end, 30000), 'no count')\n"
      "  return c[2]\n"
      "end\n",
      &n));
  ASSERT_EQ(SENDERS * PER_SENDER, n);
  atomic_store(&stop_reading, true);
  uv_thread_join(&reader);
  ASSERT(atomic_load(&host_reads) > 0);
  ASSERT(test_run("local mb = require 'moonbeam'\n"
                  "return function()\n"
                  "  mb.send(mb.whereis('stack_waiter'), 'stop')\n"
                  "end\n",
                  NULL));

  mb_msg_t *r = NULL;
  int normal = 0;
  ASSERT_EQ(0, mb_waiter_wait(w, 30000, &r, &normal));
  ASSERT_EQ(1, normal);
  mb_msg_free(r);
  mb_waiter_free(w);
  ASSERT_EQ(MB_ENOPROC, mb_proc_stack(waiter, buf, sizeof buf));
  fprintf(stderr, "host reads %ld, of which found waiting %ld\n",
          atomic_load(&host_reads), atomic_load(&host_found));
  test_node_stop();
}

/* A process reading its own stack needs no hold, and sees its caller. */
TEST_IMPL(reads_its_own_stack) {
  test_node_start(2);
  long long n = 0;
  ASSERT(
      test_run("local mb = require 'moonbeam'\n"
               "return function()\n"
               "  local function where_am_i()\n"
               "    return mb.process_info(mb.self(), 'current_stacktrace')\n"
               "  end\n"
               "  local t = where_am_i()\n"
               "  assert(t[1]:find(\":4 in function 'where_am_i'$\"), t[1])\n"
               "  local ok, err = pcall(mb.process_info, mb.self(), 'x')\n"
               "  assert(not ok and err:find('current_function'), err)\n"
               "  return #t\n"
               "end\n",
               &n));
  ASSERT(n >= 2);
  test_node_stop();
}

/* A process that waits inside a coroutine is read from that coroutine's
 * frames on, then its main thread's; once the coroutine has yielded to
 * its resumer, from the main thread's again. */
TEST_IMPL(reads_a_process_waiting_in_a_coroutine) {
  test_node_start(2);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local function in_coroutine() return mb.receive() end\n"
      "  local function on_main() return mb.receive() end\n"
      "  local p = mb.spawn(function()\n"
      "    local co = coroutine.wrap(function()\n"
      "      mb.send(me, 'waiting')\n"
      "      in_coroutine()\n"
      "      coroutine.yield()\n"
      "    end)\n"
      "    co()\n"
      "    mb.send(me, 'back')\n"
      "    on_main()\n"
      "  end)\n"
      "  local function settle(text)\n"
      "    assert(mb.receive(5000) == text)\n"
      "    -- Once it waits, nothing wakes it until the next message.\n"
      "    for _ = 1, 5000 do\n"
      "      if mb.process_info(p).status == 'waiting' then\n"
      "        return mb.process_info(p, 'current_stacktrace')\n"
      "      end\n"
      "      mb.sleep(1)\n"
      "    end\n"
      "    error('never waited')\n"
      "  end\n"
      "  local t = settle('waiting')\n"
      "  assert(t[2]:find(\":4 in function 'in_coroutine'$\"), t[2])\n"
      "  assert(t[4] == \"[C] in function 'co'\", t[4])\n"
      "  assert(mb.process_info(p, 'current_function') == t[2])\n"
      "  mb.send(p, 'go on')\n"
      "  t = settle('back')\n"
      "  assert(t[2]:find(\":5 in function 'on_main'$\"), t[2])\n"
      "  mb.exit(p, 'kill')\n"
      "  return #t\n"
      "end\n",
      &n));
  ASSERT(n >= 3);
  test_node_stop();
}

TEST_LIST(TEST_ENTRY(reads_a_waiting_process_while_others_wake_it),
          TEST_ENTRY(reads_its_own_stack),
          TEST_ENTRY(reads_a_process_waiting_in_a_coroutine))
