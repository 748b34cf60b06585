/* A message decodes to an equal value in another state, and an unsendable
 * value is refused with the path to it. */
#include "../internal.h"
#include "test.h"

static const char *roundtrip =
    "local t = {1, 2.5, 'x\\0y', true, false, {a = {b = {c = 'deep'}}},\n"
    "  [10] = 'hole', [math.maxinteger] = math.mininteger}\n"
    "t.self = t\n"
    "t.shared1 = t[6]; t.shared2 = t[6]\n"
    "return t\n";

static const char *check =
    "local t = ...\n"
    "assert(t[1] == 1 and math.type(t[1]) == 'integer')\n"
    "assert(t[2] == 2.5 and t[3] == 'x\\0y' and t[4] == true and t[5] == "
    "false)\n"
    "assert(t[6].a.b.c == 'deep' and t[10] == 'hole')\n"
    "assert(t[math.maxinteger] == math.mininteger)\n"
    "assert(t.self == t and t.shared1 == t.shared2 and t.shared1 == t[6])\n";

/* Encode what `code` returns; MB_EBADTERM leaves the reason in err. */
static int encode(const char *code, mb_msg_t **m, char *err, size_t len) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  ASSERT_EQ(LUA_OK, luaL_dostring(L, code));
  int r = mb_msg_encode(L, -1, m, err, len);
  lua_close(L);
  return r;
}

TEST_IMPL(decodes_to_an_equal_value_in_another_state) {
  mb_msg_t *m;
  char err[256];
  ASSERT_EQ(0, encode(roundtrip, &m, err, sizeof err));
  lua_State *b = luaL_newstate();
  luaL_openlibs(b);
  ASSERT_EQ(LUA_OK, luaL_loadstring(b, check));
  mb_msg_decode(b, m);
  if (lua_pcall(b, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(b, -1));
    abort();
  }
  mb_msg_free(m);
  lua_close(b);
}

/* A scalar alone takes the short ways through encoding and decoding: each
 * comes back as it went, integers (small, large, at the limits) as
 * integers and floats as floats. */
TEST_IMPL(a_scalar_alone_comes_back_as_it_went) {
  static const char *values[] = {
      "return 0",      "return -128",           "return 127",
      "return 128",    "return -129",           "return math.maxinteger",
      "return math.mininteger", "return 2.0",   "return -0.5",
      "return 1/0",    "return 'abc'",          "return ('x'):rep(300)",
      "return ''",     "return true",           "return false",
      "return nil"};
  lua_State *b = luaL_newstate();
  luaL_openlibs(b);
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    mb_msg_t *m;
    char err[256];
    ASSERT_EQ(0, encode(values[i], &m, err, sizeof err));
    ASSERT_EQ(LUA_OK, luaL_dostring(b, values[i]));
    mb_msg_decode(b, m);
    mb_msg_free(m);
    ASSERT(lua_rawequal(b, -1, -2) ||
           (lua_isnil(b, -1) && lua_isnil(b, -2)));
    ASSERT_EQ(lua_isinteger(b, -2), lua_isinteger(b, -1));
    ASSERT_EQ(lua_type(b, -2), lua_type(b, -1));
    lua_pop(b, 2);
  }
  lua_close(b);
}

TEST_IMPL(refuses_a_coroutine_with_its_path) {
  mb_msg_t *m;
  char err[256];
  ASSERT_EQ(MB_EBADTERM, encode("return {x = {1, coroutine.create(print)}}", &m,
                                err, sizeof err));
  ASSERT(strstr(err, "cannot send a coroutine at value.x[2]") != NULL);
}

/* Nesting up to the limit is copied; one level more is refused. */
TEST_IMPL(copies_nesting_to_the_limit_and_refuses_one_level_more) {
  lua_State *a = luaL_newstate(), *b = luaL_newstate();
  mb_msg_t *m;
  char err[256];
  ASSERT_EQ(LUA_OK, luaL_dostring(a, "local t = {} for i = 2, 200000 do "
                                     "t = {t} end return t"));
  ASSERT_EQ(0, mb_msg_encode(a, -1, &m, err, sizeof err));
  ASSERT_EQ(0, mb_msg_decode(b, m));
  mb_msg_free(m);
  lua_createtable(a, 1, 0); /* {chain}: one level more */
  lua_pushvalue(a, -2);
  lua_rawseti(a, -2, 1);
  ASSERT_EQ(MB_EBADTERM, mb_msg_encode(a, -1, &m, err, sizeof err));
  ASSERT(strstr(err, "nested more than 200000 levels deep at value[1][1]") !=
         NULL);
  lua_close(a);
  lua_close(b);
}

/* Each process's state knows its metatables of tuples, lists, maps, pids
 * and refs by address once met (value.c): values made in a coroutine or
 * decoded from a message keep their kind, and a table whose metatable
 * merely looks like a tuple's is a plain table. */
TEST_IMPL(knows_each_kind_by_its_metatable) {
  test_node_start(2);
  long long n = 0;
  ASSERT(test_run(
      "local mb = require 'moonbeam'\n"
      "return function()\n"
      "  local me = mb.self()\n"
      "  local function make()\n"
      "    return {mb.tuple(1), mb.list(2), mb.map({a = 1}), mb.self(),\n"
      "      mb.make_ref()}\n"
      "  end\n"
      "  local kinds = {'tuple', 'list', 'map', 'pid', 'ref'}\n"
      "  local count = 0\n"
      "  local function check(vals)\n"
      "    for i, v in ipairs(vals) do\n"
      "      assert(mb.typeof(v) == kinds[i], mb.typeof(v))\n"
      "      count = count + 1\n"
      "    end\n"
      "  end\n"
      "  local fake = setmetatable({1, n = 1}, {__name = 'tuple',\n"
      "    __tostring = getmetatable(mb.tuple()).__tostring})\n"
      "  assert(mb.typeof(fake) == 'table')\n"
      "  local co = coroutine.wrap(function()\n"
      "    check(make()) return make()\n"
      "  end)\n"
      "  local made = co()\n"
      "  check(made)\n"
      "  mb.spawn(function(to) mb.send(to, make()) end, me)\n"
      "  check(mb.receive())\n"
      "  mb.send(me, made)\n"
      "  local back = mb.receive()\n"
      "  check(back)\n"
      "  assert(back[4] == me and back[5] == made[5])\n"
      "  mb.send(me, fake)\n"
      "  assert(mb.typeof(mb.receive()) == 'table')\n"
      "  return count\n"
      "end\n",
      &n));
  ASSERT_EQ(20, n);
  test_node_stop();
}

/* Encode the table that `code` returns with ref 42 as its global `ref`. */
static mb_msg_t *encode_with_ref(lua_State *L, const char *code) {
  mb__push_ref(L, 42);
  lua_setglobal(L, "ref");
  ASSERT_EQ(LUA_OK, luaL_dostring(L, code));
  mb_msg_t *m;
  ASSERT_EQ(0, mb_msg_encode(L, -1, &m, NULL, 0));
  lua_pop(L, 1);
  return m;
}

/* A call's wait reads the queued messages as they are encoded. */
TEST_IMPL(tells_a_message_that_starts_with_a_ref_without_decoding_it) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  const char *yes[] = {"return {ref, 'reply'}", "return {ref}",
                       "return {ref, nil, 3, n = 3}"};
  const char *no[] = {"return {'reply', ref}", "return 'ref'", "return {}",
                      "return {{ref}}", "return {x = ref}"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    mb_msg_t *m = encode_with_ref(L, yes[i]);
    ASSERT(mb__msg_first_is_ref(m, 42));
    ASSERT(!mb__msg_first_is_ref(m, 43));
    m->flags |= MB_MSGF_ETF; /* another node's term: not read here */
    ASSERT(!mb__msg_first_is_ref(m, 42));
    mb_msg_free(m);
  }
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    mb_msg_t *m = encode_with_ref(L, no[i]);
    ASSERT(!mb__msg_first_is_ref(m, 42));
    mb_msg_free(m);
  }
  lua_close(L);
}

/* The reply of {Tag, Reply} is decoded alone, or from the whole table
 * when shared tables tie it to the rest. */
TEST_IMPL(decodes_one_field_of_a_table_message) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  struct {
    const char *code;
    lua_Integer field;
    const char *check;
  } cases[] = {
      {"return {ref, 'reply'}", 2, "return ... == 'reply'"},
      {"return {ref, {a = {b = 1}}, 'after'}", 2, "return (...).a.b == 1"},
      {"return {1, 2.5, true, 'skip', 'me'}", 5, "return ... == 'me'"},
      {"return {ref}", 2, "return ... == nil"},
      {"local t = {} return {ref, {t, t}, t}", 2,
       "local v = ... return v[1] == v[2]"},
      {"return {'a', {x = 1}, 'c'}", 3, "return ... == 'c'"},
      {"return {ref, 1, [5] = 'hash'}", 5, "return ... == 'hash'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mb_msg_t *m = encode_with_ref(L, cases[i].code);
    int top = lua_gettop(L);
    ASSERT_EQ(LUA_OK, luaL_loadstring(L, cases[i].check));
    mb__msg_decode_field(L, m, cases[i].field);
    ASSERT_EQ(top + 2, lua_gettop(L));
    ASSERT_EQ(LUA_OK, lua_pcall(L, 1, 1, 0));
    if (!lua_toboolean(L, -1)) {
      fprintf(stderr, "case %zu: %s\n", i, cases[i].code);
      abort();
    }
    lua_settop(L, top);
    mb_msg_free(m);
  }
  lua_close(L);
}

/* Spawn's arguments: values encoded one after the other are the message
 * of the table {n = n, ...} they would make, and come out as those values
 * again, nils in place, a table given twice still one table. */
TEST_IMPL(encodes_values_as_the_table_they_would_make) {
  lua_State *a = luaL_newstate(), *b = luaL_newstate();
  luaL_openlibs(b);
  char err[256];
  mb_msg_t *seq, *table;
  ASSERT_EQ(LUA_OK, luaL_dostring(a, "local t = {k = 'v'}\n"
                                     "return 1, 'x', t, t"));
  ASSERT_EQ(0, mb__msg_encode_seq(a, 1, 4, "args", &seq, err, sizeof err));
  ASSERT_EQ(LUA_OK, luaL_dostring(a, "local t = {k = 'v'}\n"
                                     "return {1, 'x', t, t, n = 4}"));
  ASSERT_EQ(0, mb_msg_encode(a, -1, &table, err, sizeof err));
  ASSERT_EQ(mb_msg_size(table), mb_msg_size(seq));
  ASSERT_EQ(0, memcmp(table->data, seq->data, seq->len));
  mb_msg_free(seq);
  lua_settop(a, 0);
  ASSERT_EQ(LUA_OK, luaL_dostring(a, "local t = {k = 'v'}\n"
                                     "return 1, nil, t, 'x', t, nil"));
  ASSERT_EQ(0, mb__msg_encode_seq(a, 1, 6, "args", &seq, err, sizeof err));
  ASSERT_EQ(LUA_OK,
            luaL_loadstring(b, "local n = select('#', ...)\n"
                               "local a, b, t, x, u, c = ...\n"
                               "assert(n == 6 and a == 1 and b == nil)\n"
                               "assert(x == 'x' and c == nil)\n"
                               "assert(t == u and t.k == 'v')"));
  ASSERT_EQ(6, mb__msg_decode_seq(b, seq));
  if (lua_pcall(b, 6, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(b, -1));
    abort();
  }
  mb_msg_free(seq);
  mb_msg_free(table);
  lua_close(a);
  lua_close(b);
}

/* Any other table, or not a table, is left for mb_msg_decode. */
TEST_IMPL(decodes_as_values_only_a_table_of_its_shape) {
  static const char *others[] = {"return {1, 2}", "return {1, 2, n = 3}",
                                 "return {1, 2, n = 2, m = 1}",
                                 "return mb_tuple", "return 'x'"};
  lua_State *a = luaL_newstate(), *b = luaL_newstate();
  char err[256];
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    if (strcmp(others[i], "return mb_tuple") == 0) {
      mb_msg_t *t = mb__tuple_new(2);
      ASSERT(t != NULL);
      ASSERT_EQ(0, mb__tuple_int(&t, 1));
      ASSERT_EQ(0, mb__tuple_int(&t, 2));
      ASSERT_EQ(0, mb__tuple_end(&t, 2));
      ASSERT_EQ(-1, mb__msg_decode_seq(b, t));
      mb_msg_free(t);
      continue;
    }
    mb_msg_t *m;
    ASSERT_EQ(LUA_OK, luaL_dostring(a, others[i]));
    ASSERT_EQ(0, mb_msg_encode(a, -1, &m, err, sizeof err));
    ASSERT_EQ(-1, mb__msg_decode_seq(b, m));
    ASSERT_EQ(0, lua_gettop(b));
    mb_msg_free(m);
  }
  lua_close(a);
  lua_close(b);
}

/* A value that cannot be sent is named by its place among the values. */
TEST_IMPL(names_a_value_it_cannot_send_by_its_place) {
  lua_State *a = luaL_newstate();
  luaL_openlibs(a);
  char err[256];
  mb_msg_t *m;
  ASSERT_EQ(LUA_OK,
            luaL_dostring(a, "return 1, {x = coroutine.create(print)}"));
  ASSERT_EQ(MB_EBADTERM,
            mb__msg_encode_seq(a, 1, 2, "args", &m, err, sizeof err));
  ASSERT(strstr(err, "cannot send a coroutine at args[2].x") != NULL);
  ASSERT_EQ(MB_EBADTERM,
            mb__msg_encode_seq(a, 2, 1, "args", &m, err, sizeof err));
  ASSERT(strstr(err, "cannot send a coroutine at args[1].x") != NULL);
  lua_close(a);
}

TEST_LIST(
    TEST_ENTRY(encodes_values_as_the_table_they_would_make),
    TEST_ENTRY(decodes_as_values_only_a_table_of_its_shape),
    TEST_ENTRY(names_a_value_it_cannot_send_by_its_place),
    TEST_ENTRY(decodes_to_an_equal_value_in_another_state),
    TEST_ENTRY(a_scalar_alone_comes_back_as_it_went),
    TEST_ENTRY(refuses_a_coroutine_with_its_path),
    TEST_ENTRY(copies_nesting_to_the_limit_and_refuses_one_level_more),
    TEST_ENTRY(knows_each_kind_by_its_metatable),
    TEST_ENTRY(tells_a_message_that_starts_with_a_ref_without_decoding_it),
    TEST_ENTRY(decodes_one_field_of_a_table_message))
