/* mb.gen_serve (lua/lgenserve.c), the receive-and-dispatch loop of a
 * GenServer, on its own: a server runs it with a callback module and a
 * Lua side (`rare`) that reports each event it is handed to the test
 * process and then runs what the test sends back.  Calls, casts, infos
 * and timeouts that return "reply" or "noreply" never reach the Lua side;
 * errors, bad returns, system messages, code changes and {continue} do,
 * with what the Lua loop needs, and the loop goes on after them with no
 * message lost.  Callbacks may block, are preempted, and end the server
 * when they take it over its memory limit. */
#include "test.h"

/* start(mod, state, [opts]): a server on gen_serve; its events come to
 * the caller as {'event', kind, a, b, state}, and it then runs f(s, kind,
 * a, b) from the caller's {'go', f}.  call(pid, req, [tag]) and cast(pid,
 * req) speak the protocol of moonbeam.gen; expect(pred) takes the next
 * message pred accepts, within 10 s. */
#define PRELUDE                                                                \
  "local mb = require 'moonbeam'\n"                                            \
  "local function start(mod, state, opts)\n"                                   \
  "  local me = mb.self()\n"                                                   \
  "  opts = opts or {}\n"                                                      \
  "  return mb.spawn_opt({max_heap = opts.max_heap}, function()\n"             \
  "    package.preload.test_rare = function()\n"                               \
  "      return {event = function(s, kind, a, b)\n"                            \
  "        mb.send(me, {'event', kind, a, b, s.state})\n"                      \
  "        local m = mb.receive(function(m)\n"                                 \
  "          return type(m) == 'table' and m[1] == 'go' end)\n"                \
  "        return m[2](s, kind, a, b)\n"                                       \
  "      end}\n"                                                               \
  "    end\n"                                                                  \
  "    local s = {mod = mod, state = state, timeout = opts.timeout,\n"         \
  "      gen = opts.gen and opts.gen() or nil}\n"                              \
  "    mb.gen_serve(s, opts.gen, 'test_rare', 'forgotten')\n"                  \
  "  end)\n"                                                                   \
  "end\n"                                                                      \
  "local function expect(pred)\n"                                              \
  "  return assert(mb.receive(pred, 10000), 'nothing came')\n"                 \
  "end\n"                                                                      \
  "local function reply_to(tag)\n"                                             \
  "  return expect(function(m)\n"                                              \
  "    return mb.typeof(m) == 'tuple' and m[1] == tag end)[2]\n"               \
  "end\n"                                                                      \
  "local function call(pid, req, tag)\n"                                       \
  "  tag = tag or mb.monitor(pid)\n"                                           \
  "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(mb.self(), tag), "   \
  "req))\n"                                                                    \
  "  return reply_to(tag)\n"                                                   \
  "end\n"                                                                      \
  "local function cast(pid, req)\n"                                            \
  "  mb.send(pid, mb.tuple(mb.atom['$gen_cast'], req))\n"                      \
  "end\n"                                                                      \
  "local function event()\n"                                                   \
  "  local m = expect(function(m)\n"                                           \
  "    return type(m) == 'table' and m[1] == 'event' end)\n"                   \
  "  return m[2], m[3], m[4], m[5]\n"                                          \
  "end\n"                                                                      \
  "local function go(pid, f) mb.send(pid, {'go', f or function() end}) end\n"  \
  "local function no_event()\n"                                                \
  "  assert(mb.receive(function(m)\n"                                          \
  "    return type(m) == 'table' and m[1] == 'event' end, 0) == nil,\n"        \
  "    'an event reached the Lua side')\n"                                     \
  "end\n"

static void run(int schedulers, const char *code) {
  test_node_start(schedulers);
  long long n = 0;
  int ok = test_run(code, &n);
  test_node_stop();
  ASSERT(ok);
  ASSERT_EQ(1, n);
}

/* Replies go to the From's pid as {Tag, Reply}, to a monitor's ref as an
 * alias (dropped once the caller demonitored) and to any other tag as a
 * plain message; casts and infos keep
 * their state, strings and atoms are both tags; nothing reaches Lua. */
TEST_IMPL(hot_returns_stay_in_c) {
  run(1, PRELUDE
      "return function()\n"
      "  local pid = start({\n"
      "    handle_call = function(req, from, n)\n"
      "      if req == 'late' then\n"
      "        mb.receive(function(m) return m == 'release' end)\n"
      "        return 'reply', 'late', n end\n"
      "      return 'reply', {req, n}, n + 1 end,\n"
      "    handle_cast = function(x, n) return mb.atom.noreply, n + x end,\n"
      "    handle_info = function(m, n) return 'noreply', n * 10, nil end,\n"
      "  }, 0)\n"
      "  local r = call(pid, 'a')\n"
      "  assert(r[1] == 'a' and r[2] == 0)\n"
      "  r = call(pid, 'b', 'plain tag')\n"
      "  assert(r[1] == 'b' and r[2] == 1)\n"
      "  cast(pid, 5)\n"
      "  mb.send(pid, 'an info')\n"
      "  r = call(pid, 'c', 42)\n"
      "  assert(r[2] == 70, r[2])\n"
      "  -- A reply to a caller that gave up (demonitored) is dropped.\n"
      "  local ref = mb.monitor(pid)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(mb.self(), "
      "ref),\n"
      "    'late'))\n"
      "  mb.demonitor(ref)\n"
      "  mb.send(pid, 'release')\n"
      "  assert(call(pid, 'after', 'plain')[2] == 71)\n"
      "  assert(mb.receive(function(m)\n"
      "    return mb.typeof(m) == 'tuple' and m[1] == ref end, 0) == nil,\n"
      "    'a reply came to an alias given up')\n"
      "  no_event()\n"
      "  mb.exit(pid, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* The reply {Tag, Reply} written in C is the message gen.reply sends:
 * pids, atoms, tuples and tables in Reply come as they were, a ref that
 * is no monitor's alias is a tag like any other, and a Reply that cannot
 * be sent ends the server with send_alias's error, naming msg[2]. */
TEST_IMPL(replies_are_the_messages_gen_reply_sends) {
  run(1, PRELUDE
      "return function()\n"
      "  local me = mb.self()\n"
      "  local pid = start({\n"
      "    handle_call = function(req, from, n)\n"
      "      if req == 'bad' then return 'reply', coroutine.create(print), n "
      "end\n"
      "      return 'reply', {mb.self(), mb.atom.x, mb.tuple(n, {a = req}),\n"
      "        from}, n + 1 end,\n"
      "  }, 0)\n"
      "  local tag = mb.make_ref()\n"
      "  local r = call(pid, 'a', tag)\n"
      "  assert(mb.typeof(r) == 'table' and r[1] == pid and r[2] == "
      "mb.atom.x)\n"
      "  assert(mb.typeof(r[3]) == 'tuple' and r[3][1] == 0 and r[3][2].a == "
      "'a')\n"
      "  assert(mb.typeof(r[4]) == 'tuple' and r[4][1] == me and r[4][2] == "
      "tag)\n"
      "  r = call(pid, 'b')\n"
      "  assert(r[3][1] == 1 and r[4][1] == me)\n"
      "  local ref = mb.monitor(pid)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, ref), "
      "'bad'))\n"
      "  local down = expect(function(m)\n"
      "    return mb.typeof(m) == 'tuple' and m[2] == ref end)\n"
      "  assert(down[1] == mb.atom.DOWN, tostring(down[1]))\n"
      "  local why = down[5][1]\n"
      "  assert(why:find('^send_alias: cannot send a coroutine at msg%[2%]'), "
      "why)\n"
      "  assert(mb.receive(function(m)\n"
      "    return mb.typeof(m) == 'tuple' and m[1] == ref end, 0) == nil,\n"
      "    'a reply came that could not be sent')\n"
      "  no_event()\n"
      "  return 1\n"
      "end\n");
}

/* A queued call reaches handle_call without the tuple around it being
 * decoded: Request and From come as sent (a table shared inside Request
 * stays one table); where the call goes to Lua (a bad return), Lua gets
 * the message whole; a call a callback's selective receive passed over
 * comes whole from where it was kept, and is handled in C all the same. */
TEST_IMPL(calls_taken_apart_are_whole_for_lua) {
  run(1, PRELUDE
      "return function()\n"
      "  local me = mb.self()\n"
      "  local pid = start({\n"
      "    handle_call = function(req, from, n)\n"
      "      if req == 'bogus' then return 'bogus', n end\n"
      "      if req == 'wait' then\n"
      "        return 'reply', mb.receive(function(m) return m == 'go on' "
      "end), n\n"
      "      end\n"
      "      if type(req) == 'table' then return 'reply', req[1] == req[2], n "
      "end\n"
      "      return 'reply', {req, mb.typeof(from), from[1], from[2]}, n end,\n"
      "  }, 0)\n"
      "  local t = {1}\n"
      "  assert(call(pid, {t, t}) == true, 'a shared table became two')\n"
      "  local r = call(pid, 'a', 'tg')\n"
      "  assert(r[1] == 'a' and r[2] == 'tuple' and r[3] == me and r[4] == "
      "'tg')\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, 'b'), "
      "'bogus'))\n"
      "  local kind, msg, res = event()\n"
      "  assert(kind == 'call' and mb.typeof(msg) == 'tuple', kind)\n"
      "  assert(msg[1] == mb.atom['$gen_call'] and msg[3] == 'bogus')\n"
      "  assert(mb.typeof(msg[2]) == 'tuple' and msg[2][1] == me and "
      "msg[2][2] == 'b')\n"
      "  assert(res[1] == true and res[2] == 'bogus')\n"
      "  go(pid)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, 'w'), "
      "'wait'))\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, 'k'), "
      "'kept'))\n"
      "  mb.send(pid, 'go on')\n"
      "  assert(reply_to('w') == 'go on')\n"
      "  assert(reply_to('k')[1] == 'kept')\n"
      "  no_event()\n"
      "  mb.exit(pid, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* An error in a callback reaches Lua as gen.pack(xpcall(...)) would give
 * it, {false, {Error, Traceback}}, the traceback from the failing
 * function up; the loop goes on after the event, with the state. */
TEST_IMPL(callback_error_goes_to_lua_with_a_traceback) {
  run(1,
      PRELUDE "return function()\n"
              "  local pid = start({\n"
              "    handle_call = function(req, from, n)\n"
              "      if req == 'fail' then error('boom') end\n"
              "      return 'reply', n, n end,\n"
              "  }, 7)\n"
              "  local tag = 't'\n"
              "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], "
              "mb.tuple(mb.self(), tag), 'fail'))\n"
              "  local kind, msg, r, state = event()\n"
              "  assert(kind == 'call' and msg[3] == 'fail' and state == 7)\n"
              "  assert(r.n == 2 and r[1] == false, 'not an error')\n"
              "  assert(mb.typeof(r[2]) == 'tuple', 'not {Error, Traceback}')\n"
              "  assert(r[2][1]:find('boom', 1, true), r[2][1])\n"
              "  local tb = r[2][2]\n"
              "  assert(tb:find('^stack traceback:'), tb)\n"
              "  assert(tb:find(\"'error'\", 1, true), tb)\n"
              "  assert(tb:find('gen_serve', 1, true), tb)\n"
              "  go(pid)\n"
              "  assert(call(pid, 'again') == 7)\n"
              "  no_event()\n"
              "  mb.exit(pid, 'kill')\n"
              "  return 1\n"
              "end\n");
}

/* The server's timeout: handle_info gets the atom timeout once, a timeout
 * of 0 fires at once; without handle_info, Lua gets receive's nil,
 * "timeout" with s.timeout still set. */
TEST_IMPL(timeout_goes_to_handle_info) {
  run(1, PRELUDE
      "return function()\n"
      "  local me = mb.self()\n"
      "  local pid = start({\n"
      "    handle_info = function(m, n)\n"
      "      mb.send(me, {'info', m, n})\n"
      "      if n < 3 then return 'noreply', n + 1, 0 end\n"
      "      return 'noreply', n\n"
      "    end,\n"
      "    handle_call = function(_, _, n) return 'reply', n, n end,\n"
      "  }, 1, {timeout = 5})\n"
      "  for i = 1, 3 do\n"
      "    local m = expect(function(m)\n"
      "      return type(m) == 'table' and m[1] == 'info' end)\n"
      "    assert(m[2] == mb.atom.timeout and m[3] == i)\n"
      "  end\n"
      "  assert(call(pid, 'n') == 3)\n"
      "  assert(call(pid, 'n') == 3)\n"
      "  assert(mb.receive(function(m)\n"
      "    return type(m) == 'table' and m[1] == 'info' end, 0) == nil,\n"
      "    'a timeout came without one being set')\n"
      "  mb.exit(pid, 'kill')\n"
      "  local bare = start({}, 'st', {timeout = 0})\n"
      "  local kind, a, b, state = event()\n"
      "  assert(kind == 'message' and a == nil and b == 'timeout')\n"
      "  go(bare, function(s) mb.send(me, {'timeout', s.timeout}) end)\n"
      "  assert(expect(function(m)\n"
      "    return type(m) == 'table' and m[1] == 'timeout' end)[2] == 0)\n"
      "  mb.exit(bare, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* Returns the loop does not keep itself reach Lua whole, as {n, true,
 * values...}, the reply not sent: a bad tag, too many values, a
 * {continue = x}, a stop; a call's bad return comes with the call. */
TEST_IMPL(other_returns_go_to_lua_whole) {
  run(1, PRELUDE
      "return function()\n"
      "  local pid = start({\n"
      "    handle_call = function(req, from, n)\n"
      "      if req == 'continue' then\n"
      "        return 'reply', 'r', n, {continue = 'x'} end\n"
      "      if req == 'stop' then return 'stop', 'normal', 'r', n end\n"
      "      return 'reply', n, n end,\n"
      "    handle_cast = function(x, n)\n"
      "      if x == 'bogus' then return 'bogus', 1, 2, 3 end\n"
      "      if x == 'long' then return 'noreply', n, nil, 4 end\n"
      "      if x == 'many' then\n"
      "        local t = {}\n"
      "        for i = 1, 300 do t[i] = i end\n"
      "        return table.unpack(t)\n"
      "      end\n"
      "      return 'noreply' end,\n"
      "  }, 0)\n"
      "  cast(pid, 'bogus')\n"
      "  local kind, last, r = event()\n"
      "  assert(kind == 'noreply' and last[2] == 'bogus')\n"
      "  assert(r.n == 5 and r[1] == true and r[2] == 'bogus' and r[5] == 3)\n"
      "  go(pid)\n"
      "  cast(pid, 'long')\n"
      "  kind, last, r = event()\n"
      "  assert(kind == 'noreply' and r.n == 5 and r[5] == 4)\n"
      "  go(pid)\n"
      "  cast(pid, 'many')\n"
      "  kind, last, r = event()\n"
      "  assert(kind == 'noreply' and r.n == 301 and r[301] == 300)\n"
      "  go(pid)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(mb.self(), 'c'), "
      "'continue'))\n"
      "  kind, last, r = event()\n"
      "  assert(kind == 'call' and last[3] == 'continue')\n"
      "  assert(r.n == 5 and r[4] == 0 and r[5].continue == 'x')\n"
      "  go(pid, function(s) s.continue = {'x'} end)\n"
      "  kind = event()\n"
      "  assert(kind == 'continue')\n"
      "  go(pid, function(s) s.continue = nil end)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(mb.self(), 's'), "
      "'stop'))\n"
      "  kind, last, r = event()\n"
      "  assert(kind == 'call' and r.n == 5 and r[2] == 'stop')\n"
      "  go(pid)\n"
      "  -- 'noreply' with no state: the state becomes nil, as in Lua.\n"
      "  cast(pid, 'none')\n"
      "  assert(call(pid, 'n') == nil)\n"
      "  no_event()\n"
      "  mb.exit(pid, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* System messages, $gen_stop, the parent's 'EXIT' and messages without
 * handle_info go to Lua; while Lua handles one, messages that come wait,
 * in order, and the loop handles them after; an 'EXIT' from another
 * process is an info.  The Lua side and the listed modules are dropped
 * from package.loaded after each event. */
TEST_IMPL(messages_wait_while_lua_handles_an_event) {
  run(2, PRELUDE
      "return function()\n"
      "  local me = mb.self()\n"
      "  local pid = start({\n"
      "    handle_call = function(req, from, n)\n"
      "      if req == 'loaded' then\n"
      "        return 'reply', {package.loaded.test_rare ~= nil,\n"
      "          package.loaded.forgotten ~= nil}, n end\n"
      "      return 'reply', n, n end,\n"
      "    handle_cast = function(x, n)\n"
      "      package.loaded.forgotten = true\n"
      "      return 'noreply', n .. x end,\n"
      "    handle_info = function(m, n)\n"
      "      return 'noreply', n .. '+' .. tostring(m[1]) end,\n"
      "  }, '')\n"
      "  mb.send(pid, mb.tuple(mb.atom.system, mb.tuple(me, 'sys'), "
      "'get_state'))\n"
      "  local kind, msg = event()\n"
      "  assert(kind == 'message' and msg[1] == mb.atom.system)\n"
      "  for i = 1, 5 do cast(pid, tostring(i)) end\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, 'during'), "
      "'n'))\n"
      "  go(pid, function(s, _, m)\n"
      "    mb.send(m[2][1], mb.tuple(m[2][2], package.loaded.test_rare ~= "
      "nil))\n"
      "  end)\n"
      "  assert(reply_to('sys') == true, 'the Lua side is loaded')\n"
      "  assert(reply_to('during') == '12345')\n"
      "  local loaded = call(pid, 'loaded')\n"
      "  assert(loaded[1] == false and loaded[2] == true)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_stop'], 'normal'))\n"
      "  kind, msg = event()\n"
      "  assert(kind == 'message' and msg[1] == mb.atom['$gen_stop'])\n"
      "  go(pid)\n"
      "  loaded = call(pid, 'loaded')\n"
      "  assert(loaded[1] == false and loaded[2] == false, 'not dropped')\n"
      "  mb.send(pid, mb.tuple(mb.atom.EXIT, me, 'other'))\n"
      "  assert(call(pid, 'n') == '12345+EXIT')\n"
      "  no_event()\n"
      "  local bare = start({}, 0)\n"
      "  mb.send(bare, 'hello')\n"
      "  kind, msg = event()\n"
      "  assert(kind == 'message' and msg == 'hello')\n"
      "  go(bare)\n"
      "  mb.exit(pid, 'kill')\n"
      "  mb.exit(bare, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* A new code generation is seen before the next message, which goes to
 * Lua with it; a server without one (s.gen nil) never asks. */
TEST_IMPL(code_change_goes_to_lua) {
  run(1, PRELUDE
      "return function()\n"
      "  local pid = start({\n"
      "    handle_cast = function(x, n) GEN = x return 'noreply', n end,\n"
      "    handle_call = function(_, _, n) return 'reply', GEN or 1, n end,\n"
      "  }, 0, {gen = function() return GEN or 1 end})\n"
      "  assert(call(pid, 'gen') == 1)\n"
      "  cast(pid, 2)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(mb.self(), 't'), "
      "'gen'))\n"
      "  local kind, msg, why = event()\n"
      "  assert(kind == 'message' and msg[3] == 'gen' and why == nil)\n"
      "  go(pid, function(s, _, m) s.gen = 2 mb.send(m[2][1], mb.tuple('t', "
      "0)) "
      "end)\n"
      "  assert(reply_to('t') == 0)\n"
      "  assert(call(pid, 'gen') == 2)\n"
      "  no_event()\n"
      "  mb.exit(pid, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* A callback may block in a receive (a call to another server) and is
 * preempted like any Lua code: with one scheduler, the caller runs while
 * a callback spins until the caller's message comes. */
TEST_IMPL(callbacks_block_and_are_preempted) {
  run(1, PRELUDE
      "return function()\n"
      "  local me = mb.self()\n"
      "  local pid = start({\n"
      "    handle_call = function(req, from, n)\n"
      "      local m = mb.receive(function(m) return m == 'release' end)\n"
      "      return 'reply', m, n end,\n"
      "    handle_cast = function(x, n)\n"
      "      mb.send(me, 'spinning')\n"
      "      local spins = 0\n"
      "      while mb.process_info(mb.self()).message_queue_len == 0 do\n"
      "        spins = spins + 1\n"
      "      end\n"
      "      return 'noreply', spins end,\n"
      "  }, 0)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, 'b'), "
      "'wait'))\n"
      "  mb.send(pid, 'release')\n"
      "  assert(reply_to('b') == 'release')\n"
      "  cast(pid, 'spin')\n"
      "  expect(function(m) return m == 'spinning' end)\n"
      "  mb.send(pid, mb.tuple(mb.atom['$gen_call'], mb.tuple(me, 'n'), 'n'))\n"
      "  mb.send(pid, 'release')\n"
      "  assert(reply_to('n') == 'release')\n"
      "  mb.exit(pid, 'kill')\n"
      "  return 1\n"
      "end\n");
}

/* A callback that takes the server over its memory limit ends it with
 * {memory_limit, Bytes}, as any process over its limit. */
TEST_IMPL(memory_limit_inside_a_callback) {
  run(1, PRELUDE "return function()\n"
                 "  local pid = start({\n"
                 "    handle_cast = function(x, n)\n"
                 "      local t = {}\n"
                 "      for i = 1, 1e7 do t[i] = {i} end\n"
                 "      return 'noreply', t end,\n"
                 "  }, 0, {max_heap = 1000000})\n"
                 "  local ref = mb.monitor(pid)\n"
                 "  cast(pid, 'grow')\n"
                 "  local down = expect(function(m)\n"
                 "    return mb.typeof(m) == 'tuple' and m[2] == ref end)\n"
                 "  local reason = down[5]\n"
                 "  assert(mb.typeof(reason) == 'tuple' and reason[1] == "
                 "mb.atom.memory_limit,\n"
                 "    tostring(reason))\n"
                 "  assert(reason[2] == 1000000)\n"
                 "  return 1\n"
                 "end\n");
}

/* mb.gen_init, a GenServer's start in its own process: init(args) with
 * "ok" (a string or an atom), State and an optional timeout or {continue
 * = x} is kept in s and acknowledged to the starter as gen.ack does;
 * every other outcome comes back as s, r without an acknowledgement; a
 * name it does not take (global, via, taken) comes back as nothing, with
 * init not run.  init(args) runs with a continuation: it may block. */
#define INIT_PRELUDE                                                           \
  "local mb = require 'moonbeam'\n"                                            \
  "local ACK = mb.atom['$gen_ack']\n"                                          \
  "local function expect(pred)\n"                                              \
  "  return assert(mb.receive(pred, 10000), 'nothing came')\n"                 \
  "end\n"                                                                      \
  "-- starts a process running setup(), if any, then gen_init; it sends\n"     \
  "-- back what gen_init returned, then waits for 'stop'.  Returns its\n"      \
  "-- pid and the ref.\n"                                                      \
  "local function init(mod, args, name, linked, setup)\n"                      \
  "  local me, ref = mb.self(), mb.make_ref()\n"                               \
  "  local pid = mb.spawn(function()\n"                                        \
  "    if setup then setup() end\n"                                            \
  "    local s, r = mb.gen_init(me, ref, linked and me or nil, name, mod, "    \
  "args)\n"                                                                    \
  "    mb.send(me, {'init', ref, s == nil and 'nothing' or s, r})\n"           \
  "    mb.receive(function(m) return m == 'stop' end)\n"                       \
  "  end)\n"                                                                   \
  "  return pid, ref\n"                                                        \
  "end\n"                                                                      \
  "local function result(ref)\n"                                               \
  "  local m = expect(function(m)\n"                                           \
  "    return type(m) == 'table' and m[1] == 'init' and m[2] == ref end)\n"    \
  "  return m[3], m[4]\n"                                                      \
  "end\n"                                                                      \
  "local function acked(ref)\n"                                                \
  "  return mb.receive(function(m)\n"                                          \
  "    return mb.typeof(m) == 'tuple' and m[1] == ACK and m[2] == ref end, "   \
  "0)\n"                                                                       \
  "end\n"

TEST_IMPL(gen_init_takes_the_common_start) {
  run(1, INIT_PRELUDE
      "return function()\n"
      "  local mod = {init = function(a) return 'ok', a * 2, 50 end}\n"
      "  local pid, ref = init(mod, 21, 'gi_named')\n"
      "  local s, r = result(ref)\n"
      "  assert(type(s) == 'table' and r == nil)\n"
      "  assert(s.state == 42 and s.timeout == 50 and s.name == 'gi_named')\n"
      "  assert(s.mod.init and s.gen == nil and s.continue == nil)\n"
      "  assert(mb.whereis('gi_named') == pid)\n"
      "  local a = assert(acked(ref), 'no ack')\n"
      "  assert(a[3] == true and a[4] == nil and a.n == 4)\n"
      "  mb.send(pid, 'stop')\n"
      "  mod = {init = function() return mb.atom.ok, 's', {continue = 7} end}\n"
      "  pid, ref = init(mod, nil, mb.atom.gi_atom, true)\n"
      "  s, r = result(ref)\n"
      "  assert(s.state == 's' and s.continue[1] == 7 and s.timeout == nil)\n"
      "  assert(s.parent == mb.self() and mb.whereis('gi_atom') == pid)\n"
      "  assert(acked(ref))\n"
      "  mb.send(pid, 'stop')\n"
      "  pid, ref = init('gi_by_name', nil, nil, false, function()\n"
      "    package.preload.gi_by_name = function()\n"
      "      return {init = function() return 'ok' end}\n"
      "    end\n"
      "  end)\n"
      "  s, r = result(ref)\n"
      "  assert(s.modname == 'gi_by_name' and math.type(s.gen) == 'integer')\n"
      "  assert(s.state == nil and acked(ref))\n"
      "  mb.send(pid, 'stop')\n"
      "  return 1\n"
      "end\n");
}

TEST_IMPL(gen_init_leaves_the_rest_to_lua) {
  run(1, INIT_PRELUDE
      "return function()\n"
      "  local cases = {\n"
      "    {function() error('no') end, false},\n"
      "    {function() return 'ignore' end, true, 'ignore'},\n"
      "    {function() return 'stop', 'why' end, true, 'stop'},\n"
      "    {function() return 'ok', 1, 'hibernate' end, true, 'ok'},\n"
      "    {function() return 'ok', 1, setmetatable({}, {}) end, true, "
      "'ok'},\n"
      "    {function() return 'ok', 1, 2, 3 end, true, 'ok'},\n"
      "    {function() end, true},\n"
      "  }\n"
      "  for i, c in ipairs(cases) do\n"
      "    local pid, ref = init({init = c[1]}, nil, 'gi_rest' .. i)\n"
      "    local s, r = result(ref)\n"
      "    assert(type(s) == 'table' and type(r) == 'table', i)\n"
      "    assert(r[1] == c[2] and r[2] == c[3] or not c[2], i)\n"
      "    if not c[2] then\n"
      "      assert(mb.typeof(r[2]) == 'tuple', i)\n"
      "      assert(tostring(r[2][1]):find('no', 1, true), i)\n"
      "      assert(r[2][2]:find('stack traceback', 1, true), i)\n"
      "    end\n"
      "    assert(mb.whereis('gi_rest' .. i) == pid, i)\n"
      "    assert(acked(ref) == nil, i)\n"
      "    mb.send(pid, 'stop')\n"
      "  end\n"
      "  local pid, ref = init('gi_no_such_module')\n"
      "  local s, r = result(ref)\n"
      "  assert(r[1] == false and "
      "tostring(r[2][1]):find('gi_no_such_module'))\n"
      "  mb.send(pid, 'stop')\n"
      "  -- names it does not take: init does not run\n"
      "  local ran = {init = function() error('ran') end}\n"
      "  mb.register('gi_taken', mb.self())\n"
      "  for _, name in ipairs({'gi_taken', {'global', 'g'}, "
      "mb.tuple(mb.atom.via, 'm', 'n')}) do\n"
      "    pid, ref = init(ran, nil, name)\n"
      "    assert(result(ref) == 'nothing')\n"
      "    assert(acked(ref) == nil)\n"
      "    mb.send(pid, 'stop')\n"
      "  end\n"
      "  assert(mb.whereis('gi_taken') == mb.self())\n"
      "  return 1\n"
      "end\n");
}

/* Starts on four schedulers at once, with inits that block until told to
 * go: every start is acknowledged once, to its own starter. */
TEST_IMPL(gen_init_blocks_and_runs_on_all_schedulers) {
  run(4, INIT_PRELUDE
      "return function()\n"
      "  local me = mb.self()\n"
      "  local mod = {init = function(n)\n"
      "    mb.receive(function(m) return m == 'go' end)\n"
      "    return 'ok', n\n"
      "  end}\n"
      "  local starters = {}\n"
      "  for k = 1, 8 do\n"
      "    starters[k] = mb.spawn(function()\n"
      "      local pids = {}\n"
      "      for i = 1, 50 do\n"
      "        local pid, ref = init(mod, i)\n"
      "        mb.send(pid, 'go')\n"
      "        local s = result(ref)\n"
      "        assert(s.state == i)\n"
      "        assert(acked(ref) and not acked(ref))\n"
      "        pids[#pids + 1] = pid\n"
      "      end\n"
      "      for _, p in ipairs(pids) do mb.send(p, 'stop') end\n"
      "      mb.send(me, 'done')\n"
      "    end)\n"
      "  end\n"
      "  for k = 1, 8 do expect(function(m) return m == 'done' end) end\n"
      "  return 1\n"
      "end\n");
}

TEST_LIST(TEST_ENTRY(hot_returns_stay_in_c),
          TEST_ENTRY(replies_are_the_messages_gen_reply_sends),
          TEST_ENTRY(calls_taken_apart_are_whole_for_lua),
          TEST_ENTRY(callback_error_goes_to_lua_with_a_traceback),
          TEST_ENTRY(timeout_goes_to_handle_info),
          TEST_ENTRY(other_returns_go_to_lua_whole),
          TEST_ENTRY(messages_wait_while_lua_handles_an_event),
          TEST_ENTRY(code_change_goes_to_lua),
          TEST_ENTRY(callbacks_block_and_are_preempted),
          TEST_ENTRY(memory_limit_inside_a_callback),
          TEST_ENTRY(gen_init_takes_the_common_start),
          TEST_ENTRY(gen_init_leaves_the_rest_to_lua),
          TEST_ENTRY(gen_init_blocks_and_runs_on_all_schedulers))
