/* The external term format: byte-exact encodings of a zoo of terms (the
 * reference bytes come from OTP 25's term_to_binary(T, [{minor_version,
 * 2}])), Lua values that come back equal, non-canonical input written back
 * canonically, the reader and writer of control tuples, and malformed
 * input that is refused without a crash. */
#include "../etf.h"
#include "test.h"

static lua_State *L;

/* ---- reference encodings, from OTP 25 ---- */

static const unsigned char v_small0[] = {131, 97, 0};
static const unsigned char v_small255[] = {131, 97, 255};
static const unsigned char v_int256[] = {131, 98, 0, 0, 1, 0};
static const unsigned char v_neg1[] = {131, 98, 255, 255, 255, 255};
static const unsigned char v_int32max[] = {131, 98, 127, 255, 255, 255};
static const unsigned char v_int32min[] = {131, 98, 128, 0, 0, 0};
static const unsigned char v_big32p[] = {131, 110, 4, 0, 0, 0, 0, 128};
static const unsigned char v_big32n[] = {131, 110, 4, 1, 1, 0, 0, 128};
static const unsigned char v_int64max[] = {131, 110, 8,   0,   255, 255,
                                           255, 255, 255, 255, 255, 127};
static const unsigned char v_int64min[] = {131, 110, 8, 1, 0, 0,
                                           0,   0,   0, 0, 0, 128};
static const unsigned char v_float15[] = {131, 70, 63, 248, 0, 0, 0, 0, 0, 0};
static const unsigned char v_floatneg0[] = {131, 70, 128, 0, 0, 0, 0, 0, 0, 0};
static const unsigned char v_float01[] = {131, 70,  63,  185, 153,
                                          153, 153, 153, 153, 154};
static const unsigned char v_floatbig[] = {131, 70,  126, 55,  228,
                                           60,  136, 0,   117, 156};
static const unsigned char v_floattiny[] = {131, 70, 0, 0, 0, 0, 0, 0, 0, 1};
static const unsigned char v_bin_empty[] = {131, 109, 0, 0, 0, 0};
static const unsigned char v_bin_hello[] = {131, 109, 0,   0,   0,  5,
                                            104, 101, 108, 108, 111};
static const unsigned char v_bin_zero[] = {131, 109, 0, 0, 0, 3, 97, 0, 98};
static const unsigned char v_atom_ok[] = {131, 119, 2, 111, 107};
static const unsigned char v_atom_empty[] = {131, 119, 0};
static const unsigned char v_atom_unicode[] = {131, 119, 13,  104, 195, 169,
                                               108, 108, 111, 95,  208, 188,
                                               208, 184, 209, 128};
static const unsigned char v_atom_255[] = {
    131, 119, 255, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97, 97,
    97,  97,  97,  97, 97, 97};
static const unsigned char v_atom_true[] = {131, 119, 4, 116, 114, 117, 101};
static const unsigned char v_atom_false[] = {131, 119, 5,   102,
                                             97,  108, 115, 101};
static const unsigned char v_atom_nil[] = {131, 119, 3, 110, 105, 108};
static const unsigned char v_tuple0[] = {131, 104, 0};
static const unsigned char v_tuple3[] = {131, 104, 3,   97,  1,   109, 0,
                                         0,   0,   3,   116, 119, 111, 119,
                                         5,   116, 104, 114, 101, 101};
static const unsigned char v_tuple_nil[] = {131, 104, 2,   119, 3,   110,
                                            105, 108, 119, 2,   111, 107};
static const unsigned char v_list_empty[] = {131, 106};
static const unsigned char v_list_bytes[] = {131, 107, 0, 3, 1, 2, 3};
static const unsigned char v_list_mixed[] = {131, 108, 0, 0, 0, 3,  97, 1,
                                             109, 0,   0, 0, 1, 97, 70, 64,
                                             4,   0,   0, 0, 0, 0,  0,  106};
static const unsigned char v_list_256[] = {131, 108, 0, 0, 0,  2, 98,
                                           0,   0,   1, 0, 97, 1, 106};
static const unsigned char v_list_nested[] = {
    131, 108, 0, 0, 0, 3, 107, 0, 1, 1, 108, 0, 0, 0, 1, 104, 0, 106, 106, 106};
static const unsigned char v_improper[] = {131, 108, 0, 0, 0, 1, 97, 1, 97, 2};
static const unsigned char v_improper_bin[] = {131, 108, 0,   0, 0, 2, 97, 1,
                                               97,  2,   109, 0, 0, 0, 1,  116};
static const unsigned char v_alias_ref[] = {
    131, 108, 0, 0, 0, 1, 119, 5, 97, 108, 105, 97, 115, 90, 0, 3, 119, 3, 97,
    64,  104, 0, 0, 0, 7, 0,   0, 0,  1,   0,   0,  0,   2,  0, 0, 0,   3};
static const unsigned char v_map_empty[] = {131, 116, 0, 0, 0, 0};
static const unsigned char v_map_atom[] = {131, 116, 0,  0,  0, 1,
                                           119, 1,   97, 97, 1};
static const unsigned char v_map_bin[] = {131, 116, 0,   0, 0, 1, 109, 0,  0, 0,
                                          1,   107, 109, 0, 0, 0, 1,   118};
static const unsigned char v_map_nested[] = {
    131, 116, 0,  0,   0, 4,   97,  1,   97,  2, 70, 64,  4, 0,   0, 0,
    0,   0,   0,  119, 3, 110, 105, 108, 119, 1, 97, 116, 0, 0,   0, 2,
    119, 1,   98, 107, 0, 2,   1,   2,   119, 1, 99, 104, 1, 119, 1, 120,
    109, 0,   0,  0,   1, 115, 70,  64,  12,  0, 0,  0,   0, 0,   0};
static const unsigned char v_map_keys[] = {
    131, 116, 0,   0,  0,   13,  98,  255, 255, 255, 251, 97,  4,   97,  10,
    97,  3,   70,  63, 248, 0,   0,   0,   0,   0,   0,   97,  5,   119, 0,
    97,  13,  119, 1,  97,  97,  2,   119, 4,   116, 114, 117, 101, 97,  12,
    119, 1,   122, 97, 1,   104, 1,   97,  1,   97,  8,   104, 2,   97,  0,
    97,  0,   97,  9,  106, 97,  10,  107, 0,   1,   1,   97,  11,  109, 0,
    0,   0,   1,   97, 97,  7,   109, 0,   0,   0,   1,   98,  97,  6};
static const unsigned char v_map_tuple_val[] = {
    131, 116, 0,   0,   0,   1,   119, 2,   111, 107, 104, 2,
    119, 3,   110, 105, 108, 119, 5,   102, 97,  108, 115, 101};
static const unsigned char v_pid_local[] = {
    131, 88,  119, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
    115, 116, 0,   0,  0,   5,   0,   0,   0,   0,   0,  0,   0,   0};
static const unsigned char v_pid_local_max[] = {
    131, 88,  119, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
    115, 116, 0,   0,  127, 255, 0,   0,   31,  255, 0,  0,   0,   0};
static const unsigned char v_pid_remote[] = {
    131, 88, 119, 3, 97, 64, 104, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
static const unsigned char v_pid_remote_big[] = {
    131, 88,  119, 6, 98, 64, 104, 111, 115, 116, 0,
    1,   134, 160, 0, 0,  35, 40,  0,   0,   0,   3};
static const unsigned char v_pid_prev[] = {
    131, 88,  119, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
    115, 116, 0,   0,  0,   5,   0,   0,   0,   0,   0,  0,   0,   9};
static const unsigned char v_ref_local[] = {
    131, 90,  0,   3,   119, 13,  110, 111, 110, 111, 100, 101,
    64,  110, 111, 104, 111, 115, 116, 0,   0,   0,   0,   0,
    0,   0,   5,   0,   0,   0,   0,   0,   0,   0,   0};
static const unsigned char v_ref_local_hi[] = {
    131, 90,  0,   3,   119, 13,  110, 111, 110, 111, 100, 101,
    64,  110, 111, 104, 111, 115, 116, 0,   0,   0,   0,   0,
    0,   0,   7,   0,   0,   0,   1,   0,   0,   0,   0};
static const unsigned char v_ref_remote[] = {131, 90, 0, 3, 119, 3, 97, 64, 104,
                                             0,   0,  0, 7, 0,   0, 0,  1,  0,
                                             0,   0,  2, 0, 0,   0, 3};
static const unsigned char v_ref_remote5[] = {
    131, 90, 0, 5, 119, 3, 97, 64, 104, 0, 0, 0, 7, 0, 0, 0, 1,
    0,   0,  0, 2, 0,   0, 0,  3,  0,   0, 0, 4, 0, 0, 0, 5};
static const unsigned char v_ref_erl[] = {
    131, 90,  0,   3,   119, 13,  110, 111, 110, 111, 100, 101,
    64,  110, 111, 104, 111, 115, 116, 0,   0,   0,   0,   0,
    3,   193, 181, 230, 168, 0,   1,   32,  213, 184, 89};
static const unsigned char v_bits3[] = {131, 77, 0, 0, 0, 1, 3, 160};
static const unsigned char v_bits28[] = {131, 77, 0, 0, 0, 3, 4, 1, 2, 48};
static const unsigned char v_bignum70[] = {131, 110, 9, 0, 0, 0, 0,
                                           0,   0,   0, 0, 0, 64};
static const unsigned char v_bignum70n[] = {131, 110, 9, 1, 0, 0, 0,
                                            0,   0,   0, 0, 0, 64};
static const unsigned char v_bignum63[] = {131, 110, 8, 0, 0, 0,
                                           0,   0,   0, 0, 0, 128};
static const unsigned char v_bignum63n[] = {131, 110, 8, 1, 1, 0,
                                            0,   0,   0, 0, 0, 128};
static const unsigned char v_bignum64[] = {131, 110, 9, 0, 0, 0, 0,
                                           0,   0,   0, 0, 0, 1};
static const unsigned char v_bignum_large[] = {
    131, 111, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0,   0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16};
static const unsigned char v_fun_export[] = {
    131, 113, 119, 5, 108, 105, 115, 116, 115, 119, 3, 109, 97, 112, 97, 2};
static const unsigned char v_fun_local[] = {
    131, 112, 0,   0,   0,   72,  1,   207, 84, 131, 111, 116, 76,  52,  162,
    254, 10,  234, 32,  91,  245, 44,  67,  0,  0,   0,   0,   0,   0,   0,
    1,   119, 4,   118, 101, 99,  115, 97,  0,  98,  6,   122, 164, 27,  88,
    119, 13,  110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116,
    0,   0,   0,   9,   0,   0,   0,   0,   0,  0,   0,   0,   97,  42};
static const unsigned char v_port[] = {
    131, 89,  119, 13,  110, 111, 110, 111, 100, 101, 64, 110, 111,
    104, 111, 115, 116, 0,   0,   0,   0,   0,   0,   0,  0};
static const unsigned char v_mixed[] = {
    131, 104, 5,   119, 2,   111, 107, 108, 0,   0,   0,   1,   116,
    0,   0,   0,   2,   109, 0,   0,   0,   2,   105, 100, 97,  12,
    109, 0,   0,   0,   4,   116, 97,  103, 115, 108, 0,   0,   0,
    2,   119, 1,   97,  119, 1,   98,  106, 106, 70,  64,  10,  0,
    0,   0,   0,   0,   0,   109, 0,   0,   0,   1,   120, 88,  119,
    13,  110, 111, 110, 111, 100, 101, 64,  110, 111, 104, 111, 115,
    116, 0,   0,   0,   9,   0,   0,   0,   0,   0,   0,   0,   0};
/* non-canonical inputs */
static const unsigned char v_in_atom_ext[] = {131, 100, 0, 2, 111, 107};
static const unsigned char v_in_atom_latin1[] = {131, 100, 0, 1, 233};
static const unsigned char v_out_atom_latin1[] = {131, 119, 2, 195, 169};
static const unsigned char v_in_float_ext[] = {
    131, 99, 49, 46, 53, 48, 48, 48,  48, 48, 48, 48, 48, 48, 48, 48, 48,
    48,  48, 48, 48, 48, 48, 48, 101, 43, 48, 48, 0,  0,  0,  0,  0};
static const unsigned char v_in_tuple_atoms[] = {
    131, 104, 3,   100, 0,   2,   111, 107, 100, 0,
    5,   101, 114, 114, 111, 114, 100, 0,   1,   228};
static const unsigned char v_out_tuple_atoms[] = {131, 104, 3,   119, 2,   111,
                                                  107, 119, 5,   101, 114, 114,
                                                  111, 114, 119, 2,   195, 164};
static const unsigned char v_out_list12[] = {131, 107, 0, 2, 1, 2};
static const unsigned char v_out_list1_2[] = {131, 108, 0, 0,  0,
                                              1,   97,  1, 97, 2};
static const unsigned char v_out_atom_foo[] = {131, 119, 3, 102, 111, 111};
static const unsigned char v_out_int5[] = {131, 97, 5};
static const unsigned char v_in_fun_export[] = {131, 113, 100, 0,   5,   108,
                                                105, 115, 116, 115, 100, 0,
                                                3,   109, 97,  112, 97,  2};
static const unsigned char v_in_port_nonode[] = {
    131, 102, 100, 0,   13,  110, 111, 110, 111, 100, 101, 64,
    110, 111, 104, 111, 115, 116, 0,   0,   0,   0,   0};

#define V(name) v_##name, sizeof v_##name
#define N(name) #name, V(name)

/* Each Lua expression (or none: the term has no Lua constructor) and its
 * canonical encoding. */
static const struct {
  const char *expr;
  const char *name; /* the vector's name, for the Lua checks below */
  const unsigned char *bytes;
  size_t len;
} zoo[] = {
    {"0", N(small0)},
    {"255", N(small255)},
    {"256", N(int256)},
    {"-1", N(neg1)},
    {"2147483647", N(int32max)},
    {"-2147483648", N(int32min)},
    {"2147483648", N(big32p)},
    {"-2147483649", N(big32n)},
    {"math.maxinteger", N(int64max)},
    {"math.mininteger", N(int64min)},
    {"1.5", N(float15)},
    {"-0.0", N(floatneg0)},
    {"0.1", N(float01)},
    {"1.0e300", N(floatbig)},
    {"5e-324", N(floattiny)},
    {"''", N(bin_empty)},
    {"'hello'", N(bin_hello)},
    {"'a\\0b'", N(bin_zero)},
    {"A.ok", N(atom_ok)},
    {"A['']", N(atom_empty)},
    {"A['h\xc3\xa9llo_\xd0\xbc\xd0\xb8\xd1\x80']", N(atom_unicode)},
    {"A(string.rep('a', 255))", N(atom_255)},
    {"true", N(atom_true)},
    {"false", N(atom_false)},
    {"nil", N(atom_nil)},
    {"mb.tuple()", N(tuple0)},
    {"mb.tuple(1, 'two', A.three)", N(tuple3)},
    {"mb.tuple(nil, A.ok)", N(tuple_nil)},
    {"{}", N(list_empty)},
    {"mb.list()", N(list_empty)},
    {"{1, 2, 3}", N(list_bytes)},
    {"mb.list(1, 2, 3)", N(list_bytes)},
    {"{1, 'a', 2.5}", N(list_mixed)},
    {"{256, 1}", N(list_256)},
    {"{{1}, {mb.tuple()}, {}}", N(list_nested)},
    {"improper(2, 1)", N(improper)},
    {"improper('t', 1, 2)", N(improper_bin)},
    {"improper(etf.rref('a@h', 7, 1, 2, 3), A.alias)", N(alias_ref)},
    {"mb.map()", N(map_empty)},
    {"mb.map{[A.a] = 1}", N(map_atom)},
    {"{k = 'v'}", N(map_bin)},
    {"mb.map{[A.a] = mb.map{[A.b] = {1, 2}, [A.c] = mb.tuple(A.x)},"
     " [1] = 2, s = 3.5, [2.5] = A['nil']}",
     N(map_nested)},
    {"mb.map{[A.z] = 1, [A.a] = 2, [10] = 3, [-5] = 4, [1.5] = 5, b = 6,"
     " a = 7, [mb.tuple(1)] = 8, [mb.tuple(0, 0)] = 9, [mb.list()] = 10,"
     " [mb.list(1)] = 11, [true] = 12, [A['']] = 13}",
     N(map_keys)},
    {"mb.map{[A.ok] = mb.tuple(nil, false)}", N(map_tuple_val)},
    {"etf.pid(5, 0)", N(pid_local)},
    {"etf.pid(32767, 8191)", N(pid_local_max)},
    {"etf.rpid('a@h', 1, 1, 0)", N(pid_remote)},
    {"etf.rpid('b@host', 3, 100000, 9000)", N(pid_remote_big)},
    {"etf.rpid('nonode@nohost', 9, 5, 0)", N(pid_prev)},
    {"etf.ref(5)", N(ref_local)},
    {"etf.ref(1 << 32 | 7)", N(ref_local_hi)},
    {"etf.rref('a@h', 7, 1, 2, 3)", N(ref_remote)},
    {"etf.rref('a@h', 7, 1, 2, 3, 4, 5)", N(ref_remote5)},
    {"mb.tuple(A.ok, {{id = 12, tags = {A.a, A.b}}}, 3.25, 'x',"
     " etf.pid(9, 0))",
     N(mixed)},
    {NULL, N(ref_erl)},
    {NULL, N(bits3)},
    {NULL, N(bits28)},
    {NULL, N(bignum70)},
    {NULL, N(bignum70n)},
    {NULL, N(bignum63)},
    {NULL, N(bignum63n)},
    {NULL, N(bignum64)},
    {NULL, N(bignum_large)},
    {NULL, N(fun_export)},
    {NULL, N(fun_local)},
    {NULL, N(port)},
};

/* Input in older or non-canonical forms, and how it is written back. */
#define S(lit) (const unsigned char *)(lit), sizeof(lit) - 1
static const struct {
  const unsigned char *in;
  size_t in_len;
  const unsigned char *out;
  size_t out_len;
} canon[] = {
    {V(in_atom_ext), V(atom_ok)},
    {S("\203s\002ok"), V(atom_ok)},
    {S("\203v\000\002ok"), V(atom_ok)},
    {V(in_atom_latin1), V(out_atom_latin1)},
    {V(in_tuple_atoms), V(out_tuple_atoms)},
    {V(in_float_ext), V(float15)},
    {S("\203b\000\000\000\005"), V(out_int5)},
    {S("\203n\001\000\005"), V(out_int5)},
    {S("\203n\003\000\005\000\000"), V(out_int5)},
    {S("\203o\000\000\000\001\000\005"), V(out_int5)},
    {S("\203n\001\001\000"), V(small0)},
    {S("\203n\005\000\000\000\000\200\000"), V(big32p)},
    {S("\203b\377\377\377\377"), V(neg1)},
    {S("\203l\000\000\000\001a\001l\000\000\000\001a\002j"), V(out_list12)},
    {S("\203l\000\000\000\000j"), V(list_empty)},
    {S("\203k\000\000"), V(list_empty)},
    {S("\203l\000\000\000\000w\003foo"), V(out_atom_foo)},
    {S("\203l\000\000\000\001a\001k\000\001\002"), V(out_list12)},
    {S("\203l\000\000\000\001a\001l\000\000\000\000a\002"), V(out_list1_2)},
    {S("\203M\000\000\000\002\010\001\002"),
     S("\203m\000\000\000\002\001\002")},
    {S("\203M\000\000\000\000\000"), V(bin_empty)},
    {S("\203M\000\000\000\001\003\277"), V(bits3)},
    {S("\203i\000\000\000\002a\001a\002"), S("\203h\002a\001a\002")},
    {S("\203gd\000\003a@h\000\000\000\001\000\000\000\000\001"), V(pid_remote)},
    {S("\203r\000\003d\000\003a@h\007\000\000\000\001\000\000\000\002\000\000"
       "\000\003"),
     V(ref_remote)},
    {S("\203ed\000\003a@h\000\000\000\005\007"),
     S("\203Z\000\001w\003a@h\000\000\000\007\000\000\000\005")},
    {V(in_port_nonode), V(port)},
    {S("\203xd\000\003a@h\000\000\000\001\000\000\000\002\000\000\000\003"),
     S("\203xw\003a@h\000\000\000\001\000\000\000\002\000\000\000\003")},
    {V(in_fun_export), V(fun_export)},
    {S("\203t\000\000\000\002w\001ba\001w\001aa\002"),
     S("\203t\000\000\000\002w\001aa\002w\001ba\001")},
};

/* Input that must be refused, and words from the reason. */
static const struct {
  const unsigned char *in;
  size_t len;
  const char *why;
} malformed[] = {
    {S(""), "version byte"},
    {S("\202a\000"), "version byte"},
    {S("\203"), "truncated"},
    {S("\203a\001\000"), "bytes after the term"},
    {S("\203P\000\000\000\001x\234"), "compressed"},
    {S("\203R\000"), "atom cache"},
    {S("\203u\000\000\000\000"), "unknown tag"},
    {S("\203y"), "unknown tag"},
    {S("\203\000"), "unknown tag"},
    {S("\203l\377\377\377\377j"), "beyond the end"},
    {S("\203m\377\377\377\377xx"), "truncated"},
    {S("\203t\377\377\377\377"), "beyond the end"},
    {S("\203i\377\377\377\377"), "beyond the end"},
    {S("\203k\377\377\001\002"), "truncated"},
    {S("\203o\377\377\377\377\000\001"), "truncated"},
    {S("\203d\377\377ab"), "truncated"},
    {S("\203M\377\377\377\377\001\000"), "truncated"},
    {S("\203Z\377\377w\003a@h"), "more than 5"},
    {S("\203Z\000\000w\003a@h\000\000\000\000"), "more than 5"},
    {S("\203Z\000\006w\003a@h\000\000\000\000"), "more than 5"},
    {S("\203Xw\010ev\000il@vm\000\000\000\001\000\000\000\000\000\000"
       "\000\001"),
     "NUL byte"},
    {S("\203Z\000\001w\010ev\000il@vm\000\000\000\001\000\000\000\001"),
     "NUL byte"},
    {S("\203p\377\377\377\377\000"), "size is wrong"},
    {S("\203p\000\000\000\004"), "size is wrong"},
    {S("\203F\177\370\000\000\000\000\000\000"), "NaN"},
    {S("\203F\177\360\000\000\000\000\000\000"), "NaN"},
    {S("\203F\377\360\000\000\000\000\000\000"), "NaN"},
    {S("\203cnan\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
       "\000\000\000\000\000\000\000\000\000\000\000\000\000\000"),
     "NaN"},
    {S("\203cinf\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
       "\000\000\000\000\000\000\000\000\000\000\000\000\000\000"),
     "NaN"},
    {S("\203c1.5x\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
       "\000\000\000\000\000\000\000\000\000\000\000\000\000"),
     "not a number"},
    {S("\203w\001\377"), "UTF-8"},
    {S("\203w\002\300\200"), "UTF-8"},
    {S("\203w\003\355\240\200"), "UTF-8"},
    {S("\203w\001\303"), "UTF-8"},
    {S("\203w\004\364\220\200\200"), "UTF-8"},
    {S("\203M\000\000\000\001\000\000"), "bit count"},
    {S("\203M\000\000\000\001\011\000"), "bit count"},
    {S("\203M\000\000\000\000\001"), "bit count"},
    {S("\203t\000\000\000\002a\001a\001a\001a\002"), "key twice"},
    {S("\203qw\001mw\001fb\000\000\000\001"), "arity"},
    {S("\203h\001"), "beyond the end"},
    {S("\203l\000\000\000\001a\001"), "truncated"},
};

/* ---- Lua helpers ---- */

static int l_encode(lua_State *ls) {
  mb_msg_t *m;
  char err[256];
  int top = lua_gettop(ls);
  if (mb__etf_encode(ls, 1, "msg", &m, err, sizeof err) != 0) {
    ASSERT_EQ(top, lua_gettop(ls));
    lua_pushnil(ls);
    lua_pushstring(ls, err);
    return 2;
  }
  ASSERT_EQ(top, lua_gettop(ls));
  lua_pushlstring(ls, (const char *)m->data, m->len);
  mb_msg_free(m);
  return 1;
}

static int l_decode(lua_State *ls) {
  size_t len;
  const char *s = luaL_checklstring(ls, 1, &len);
  char err[256];
  int top = lua_gettop(ls);
  if (mb__etf_decode(ls, (const unsigned char *)s, len, err, sizeof err) != 0) {
    ASSERT_EQ(top, lua_gettop(ls));
    lua_pushboolean(ls, 0);
    lua_pushstring(ls, err);
    return 2;
  }
  ASSERT_EQ(top + 1, lua_gettop(ls));
  lua_pushboolean(ls, 1);
  lua_insert(ls, -2);
  return 2;
}

static const mb__atom_t *atom(const char *name) {
  const mb__atom_t *a;
  ASSERT_EQ(0, mb__atom_intern(name, strlen(name), &a));
  return a;
}

static int l_pid(lua_State *ls) {
  lua_Integer id = luaL_checkinteger(ls, 1), serial = luaL_checkinteger(ls, 2);
  mb__push_pid(ls, (mb_pid_t)(id | serial << 15));
  return 1;
}

static int l_rpid(lua_State *ls) {
  const mb__atom_t *node = atom(luaL_checkstring(ls, 1));
  mb__push_remote_pid(ls, node->index + 1, (uint32_t)luaL_checkinteger(ls, 2),
                      (uint32_t)luaL_checkinteger(ls, 3),
                      (uint32_t)luaL_checkinteger(ls, 4));
  return 1;
}

static int l_ref(lua_State *ls) {
  mb__push_ref(ls, (uint64_t)luaL_checkinteger(ls, 1));
  return 1;
}

static int l_rref(lua_State *ls) {
  const mb__atom_t *node = atom(luaL_checkstring(ls, 1));
  uint32_t words[MB_REF_MAXWORDS], n = (uint32_t)lua_gettop(ls) - 2;
  for (uint32_t i = 0; i < n && i < MB_REF_MAXWORDS; i++)
    words[i] = (uint32_t)luaL_checkinteger(ls, 3 + (int)i);
  mb__push_remote_ref(ls, node->index + 1, (uint32_t)luaL_checkinteger(ls, 2),
                      n, words);
  return 1;
}

/* Equality in the term model: a plain sequence equals a list, another
 * plain table a map; tuples and lists compare their n elements. */
static const char *prelude =
    "local mb, etf = ...\n"
    "A = mb.atom\n"
    "function improper(tail, ...)\n"
    "  local l = mb.list(...); l.tail = tail; return l\n"
    "end\n"
    "local function kind(v)\n"
    "  local k = mb.typeof(v)\n"
    "  if k ~= 'table' then return k end\n"
    "  local n = 0\n"
    "  for _ in pairs(v) do n = n + 1 end\n"
    "  if n == #v then return 'list' end\n"
    "  return 'map'\n"
    "end\n"
    "local function len(v) return v.n or #v end\n"
    "function eq(a, b)\n"
    "  local ka, kb = kind(a), kind(b)\n"
    "  if ka ~= kb then return false end\n"
    "  if ka == 'number' then return math.type(a) == math.type(b) and a == b "
    "end\n"
    "  if ka == 'tuple' or ka == 'list' then\n"
    "    if len(a) ~= len(b) then return false end\n"
    "    for i = 1, len(a) do if not eq(a[i], b[i]) then return false end end\n"
    "    if ka == 'list' then\n"
    "      if (a.tail == nil) ~= (b.tail == nil) then return false end\n"
    "      return a.tail == nil or eq(a.tail, b.tail)\n"
    "    end\n"
    "    return true\n"
    "  end\n"
    "  if ka == 'map' then\n"
    "    local na, nb = 0, 0\n"
    "    for _ in pairs(b) do nb = nb + 1 end\n"
    "    for k, v in pairs(a) do\n"
    "      na = na + 1\n"
    "      local found = false\n"
    "      for k2, v2 in pairs(b) do\n"
    "        if eq(k, k2) then found = eq(v, v2) break end\n"
    "      end\n"
    "      if not found then return false end\n"
    "    end\n"
    "    return na == nb\n"
    "  end\n"
    "  return a == b\n"
    "end\n";

static void lua_check(const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, 0);
}

static void push_expr(const char *expr) {
  char code[1024];
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", expr, lua_tostring(L, -1));
    abort();
  }
}

static void dump(const char *what, const unsigned char *b, size_t n) {
  fprintf(stderr, "%s (%zu bytes):", what, n);
  for (size_t i = 0; i < n && i < 200; i++)
    fprintf(stderr, " %d", b[i]);
  fprintf(stderr, "\n");
}

static void expect_bytes(const mb_msg_t *m, const unsigned char *want, size_t n,
                         const char *what) {
  if (m->len != n || memcmp(m->data, want, n) != 0) {
    fprintf(stderr, "%s: wrong encoding\n", what);
    dump("got ", m->data, m->len);
    dump("want", want, n);
    abort();
  }
}

static mb_msg_t *encode_top(const char *what) {
  mb_msg_t *m;
  char err[256];
  if (mb__etf_encode(L, -1, "msg", &m, err, sizeof err) != 0) {
    fprintf(stderr, "%s: %s\n", what, err);
    abort();
  }
  return m;
}

static void decode_ok(const unsigned char *b, size_t n, const char *what) {
  char err[256];
  int top = lua_gettop(L);
  if (mb__etf_decode(L, b, n, err, sizeof err) != 0) {
    fprintf(stderr, "%s: %s\n", what, err);
    abort();
  }
  ASSERT_EQ(top + 1, lua_gettop(L));
}

/* The term decoded and written again, through a local message too. */
static void check_rewrite(const unsigned char *in, size_t in_len,
                          const unsigned char *out, size_t out_len,
                          const char *what) {
  decode_ok(in, in_len, what);
  mb_msg_t *m = encode_top(what);
  expect_bytes(m, out, out_len, what);
  mb_msg_free(m);

  char err[256];
  ASSERT_EQ(0, mb_msg_encode(L, -1, &m, err, sizeof err));
  lua_pop(L, 1);
  mb_msg_decode(L, m);
  mb_msg_free(m);
  m = encode_top(what);
  expect_bytes(m, out, out_len, what);
  mb_msg_free(m);
  lua_pop(L, 1);

  mb__etf_reader_t r;
  ASSERT_EQ(0, mb__etf_reader_init(&r, in, in_len));
  ASSERT_EQ(0, mb__etf_skip(&r));
  ASSERT(r.p == r.end);
}

/* ---- the zoo ---- */

static void run_zoo(void) {
  for (size_t i = 0; i < sizeof zoo / sizeof zoo[0]; i++) {
    const char *what = zoo[i].expr ? zoo[i].expr : "(decoded only)";
    if (zoo[i].expr != NULL) {
      push_expr(zoo[i].expr);
      mb_msg_t *m = encode_top(what);
      expect_bytes(m, zoo[i].bytes, zoo[i].len, what);
      mb_msg_free(m);
      /* and it decodes to an equal value */
      lua_getglobal(L, "eq");
      lua_insert(L, -2);
      decode_ok(zoo[i].bytes, zoo[i].len, what);
      lua_call(L, 2, 1);
      if (!lua_toboolean(L, -1)) {
        fprintf(stderr, "%s: decodes to another value\n", what);
        abort();
      }
      lua_pop(L, 1);
    }
    check_rewrite(zoo[i].bytes, zoo[i].len, zoo[i].bytes, zoo[i].len, what);
  }
  ASSERT_EQ(0, lua_gettop(L));
}

static void run_canonical(void) {
  for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
    char what[32];
    snprintf(what, sizeof what, "canon[%zu]", i);
    check_rewrite(canon[i].in, canon[i].in_len, canon[i].out, canon[i].out_len,
                  what);
  }
}

/* What the opaque terms and special atoms look like in Lua. */
static const char *decoded_values =
    "local function d(s) local ok, v = etf.decode(s) assert(ok, v) return v "
    "end\n"
    "local V = ...\n"
    "assert(mb.typeof(d(V.bignum70)) == 'bignum')\n"
    "assert(tostring(d(V.bignum70)) == '1180591620717411303424')\n"
    "assert(tostring(d(V.bignum70n)) == '-1180591620717411303424')\n"
    "assert(tostring(d(V.bignum63)) == '9223372036854775808')\n"
    "assert(d(V.int64min) == math.mininteger)\n"
    "assert(math.type(d(V.big32p)) == 'integer')\n"
    "assert(mb.typeof(d(V.bits3)) == 'bitstring')\n"
    "assert(mb.typeof(d(V.fun_export)) == 'fun')\n"
    "assert(mb.typeof(d(V.fun_local)) == 'fun')\n"
    "assert(mb.typeof(d(V.port)) == 'port')\n"
    "assert(d(V.bits3) == d(V.bits3))\n"
    "assert(d(V.atom_nil) == nil and d(V.atom_true) == true)\n"
    "local t = d(V.tuple_nil)\n"
    "assert(mb.typeof(t) == 'tuple' and t.n == 2 and t[1] == nil)\n"
    "local m = d(V.map_nested)\n"
    "assert(m[2.5] == A['nil'] and m.s == 3.5 and m[1] == 2)\n"
    "assert(mb.typeof(m[A.a]) == 'map' and m[A.a][A.b].n == 2)\n"
    "local l = d(V.alias_ref)\n"
    "assert(mb.typeof(l) == 'list' and l.n == 1 and l[1] == A.alias)\n"
    "assert(mb.typeof(l.tail) == 'ref' and l.tail == etf.rref('a@h', 7, 1, "
    "2, 3))\n"
    "assert(d(V.pid_local) == etf.pid(5, 0))\n"
    "assert(d(V.pid_prev) ~= etf.pid(5, 0))\n"
    "assert(d(V.ref_local) == etf.ref(5))\n"
    "local s = d(V.list_bytes)\n"
    "assert(mb.typeof(s) == 'list' and s.n == 3 and s[3] == 3)\n"
    "assert(mb.typeof(d(V.list_empty)) == 'list' and d(V.list_empty).n == 0)\n";

/* The zoo's vectors, by name, in a table. */
static void push_vectors(void) {
  lua_newtable(L);
  for (size_t i = 0; i < sizeof zoo / sizeof zoo[0]; i++) {
    lua_pushlstring(L, (const char *)zoo[i].bytes, zoo[i].len);
    lua_setfield(L, -2, zoo[i].name);
  }
}

static void run_decoded_values(void) {
  ASSERT_EQ(LUA_OK, luaL_loadstring(L, decoded_values));
  push_vectors();
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
}

/* ---- large terms, built here ---- */

static void put_be32(luaL_Buffer *b, uint32_t v) {
  luaL_addchar(b, (char)(v >> 24));
  luaL_addchar(b, (char)(v >> 16));
  luaL_addchar(b, (char)(v >> 8));
  luaL_addchar(b, (char)v);
}

static void put_small_int(luaL_Buffer *b, uint32_t v) {
  if (v <= 255) {
    luaL_addchar(b, 'a');
    luaL_addchar(b, (char)v);
  } else {
    luaL_addchar(b, 'b');
    put_be32(b, v);
  }
}

/* Encode the value at the top, compare with the string below it, decode
 * and encode again. */
static void check_large(const char *what) {
  size_t n;
  const unsigned char *want = (const unsigned char *)lua_tolstring(L, -2, &n);
  mb_msg_t *m = encode_top(what);
  expect_bytes(m, want, n, what);
  mb_msg_free(m);
  lua_pop(L, 1);
  check_rewrite(want, n, want, n, what);
  lua_pop(L, 1);
}

static void run_large(void) {
  luaL_Buffer b;
  /* A 2 MB binary. */
  size_t big = 2 << 20;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "\203m");
  put_be32(&b, (uint32_t)big);
  for (size_t i = 0; i < big; i++)
    luaL_addchar(&b, (char)(i * 7));
  luaL_pushresult(&b);
  lua_pushlstring(L, lua_tostring(L, -1) + 6, big);
  check_large("2 MB binary");

  /* A tuple of 300 integers. */
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "\203i");
  put_be32(&b, 300);
  for (uint32_t i = 1; i <= 300; i++)
    put_small_int(&b, i);
  luaL_pushresult(&b);
  push_expr("(function() local t = {} for i = 1, 300 do t[i] = i end "
            "return mb.tuple(table.unpack(t)) end)()");
  check_large("tuple of 300");

  /* Lists of 100k integers, 65535 bytes (a STRING_EXT), 65536 bytes. */
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "\203l");
  put_be32(&b, 100000);
  for (uint32_t i = 1; i <= 100000; i++)
    put_small_int(&b, i);
  luaL_addchar(&b, 'j');
  luaL_pushresult(&b);
  push_expr("(function() local t = {} for i = 1, 100000 do t[i] = i end "
            "return t end)()");
  check_large("list of 100k");

  luaL_buffinit(L, &b);
  luaL_addstring(&b, "\203k\377\377");
  for (uint32_t i = 0; i < 65535; i++)
    luaL_addchar(&b, (char)(i % 256));
  luaL_pushresult(&b);
  push_expr("(function() local t = {} for i = 1, 65535 do t[i] = (i - 1) % "
            "256 end return t end)()");
  check_large("list of 65535 bytes");

  luaL_buffinit(L, &b);
  luaL_addstring(&b, "\203l");
  put_be32(&b, 65536);
  for (uint32_t i = 0; i < 65536; i++)
    put_small_int(&b, 1);
  luaL_addchar(&b, 'j');
  luaL_pushresult(&b);
  push_expr("(function() local t = {} for i = 1, 65536 do t[i] = 1 end "
            "return t end)()");
  check_large("list of 65536 bytes");

  /* A chain of 100k one-element LIST_EXT tails is one list. */
  luaL_buffinit(L, &b);
  luaL_addchar(&b, (char)131);
  for (int i = 0; i < 100000; i++)
    luaL_addlstring(&b, "l\000\000\000\001a\001", 7);
  luaL_addchar(&b, 'j');
  luaL_pushresult(&b);
  size_t n;
  const unsigned char *chain = (const unsigned char *)lua_tolstring(L, -1, &n);
  decode_ok(chain, n, "chain");
  mb_msg_t *m = encode_top("chain");
  ASSERT_EQ(m->len, 6 + 2 * 100000 + 1);
  ASSERT(m->data[1] == 'l' && m->data[m->len - 1] == 'j');
  mb_msg_free(m);
  lua_settop(L, 0);
}

/* ---- Lua values sent and back ---- */

static const char *roundtrips =
    "local values = {\n"
    "  {1, 2, 3}, {a = 1, b = {c = {d = 'deep'}}}, {1, 'two', {3}},\n"
    "  {[1] = 'a', [3] = 'c'}, {x = true, y = false}, {[true] = 1},\n"
    "  mb.map{[1] = 'one', [2] = 'two'}, mb.map{[A.k] = A.v},\n"
    "  mb.tuple(1, nil, 3), mb.list(nil, 1), mb.tuple(mb.tuple(mb.tuple())),\n"
    "  {['with space'] = 1, [''] = 2}, {[-1] = 1, [0] = 0},\n"
    "  {[mb.tuple(A.a, 1)] = 'tuple key', [1.5] = 'float key'},\n"
    "  {1.0, -2.5, 1e-300}, {math.maxinteger, math.mininteger, 1 << 40},\n"
    "  {etf.pid(1, 2), etf.ref(99), etf.rpid('x@y', 1, 2, 3)},\n"
    "  improper(mb.tuple(), 1, 2, 3), string.rep('z', 300),\n"
    "  A.ok, 42, 'text', true, {t = {}}, mb.list(mb.list(mb.list())),\n"
    "}\n"
    "for i, v in ipairs(values) do\n"
    "  local bytes = assert(etf.encode(v))\n"
    "  local ok, back = etf.decode(bytes)\n"
    "  assert(ok, back)\n"
    "  assert(eq(v, back), 'value ' .. i .. ' came back different')\n"
    "  assert(etf.encode(back) == bytes, 'value ' .. i .. ' re-encodes')\n"
    "end\n"
    "-- a shared table is no cycle: it is written twice\n"
    "local shared = {1}\n"
    "local ok, back = etf.decode(etf.encode({shared, shared}))\n"
    "assert(ok and eq(back, {{1}, {1}}) and back[1] ~= back[2])\n";

static const char *refusals =
    "local function refused(v, msg)\n"
    "  local bytes, err = etf.encode(v)\n"
    "  assert(bytes == nil, 'encoded: ' .. msg)\n"
    "  assert(err:find(msg, 1, true), err)\n"
    "end\n"
    "refused({f = function() end},\n"
    "  'cannot send a function to another node at msg.f')\n"
    "refused({1, coroutine.create(print)},\n"
    "  'cannot send a coroutine to another node at msg[2]')\n"
    "refused({a = {io.stdout}}, 'cannot send a userdata to another node at "
    "msg.a[1]')\n"
    "local t = {x = {}}; t.x.self = t\n"
    "refused(t, 'cannot send a cycle to another node at msg.x.self')\n"
    "refused({x = 0/0}, 'cannot send a NaN or infinite float to another node "
    "at msg.x')\n"
    "refused(math.huge, 'cannot send a NaN or infinite float to another node "
    "at msg')\n"
    "refused({[print] = 1}, 'cannot send a function used as a key to another "
    "node at msg')\n"
    "refused(mb.tuple(1, mb.map{[A.k] = {print}}), 'at msg[2][k][1]')\n"
    "refused(improper(print, 1), 'at msg.tail')\n"
    "refused(improper(2), 'an improper list with no elements')\n"
    "refused(setmetatable({n = 'x'}, getmetatable(mb.tuple())), 'n is not "
    "a count')\n"
    "refused(A['\\255'], 'an atom that is not valid UTF-8')\n"
    "refused(mb.map{[mb.tuple(1)] = 1, [mb.tuple(1)] = 2},\n"
    "  'cannot send a map with two keys equal as terms to another node at "
    "msg')\n"
    "local deep = {}\n"
    "for i = 1, 199999 do deep = {deep} end\n"
    "assert(etf.encode(deep))\n"
    "local ok, back = etf.decode(etf.encode(deep))\n"
    "assert(ok, back)\n"
    "refused({deep}, 'nested more than 200000 levels')\n";

static void run_lua_values(void) {
  lua_check(roundtrips);
  lua_check(refusals);
}

/* ---- the reader and writer ---- */

static void run_control(void) {
  /* A REG_SEND as OTP sent it (docs/erlang-distribution.md, 3.1). */
  static const unsigned char reg_send[] =
      "\203h\004a\006Xw\016tls1@127.0.0.1\000\000\000\066\000\000\000\000"
      "\153\000\347\131w\000w\003rex";
  mb__etf_reader_t r;
  uint32_t arity;
  int64_t op;
  mb__etf_pid_t pid;
  const mb__atom_t *a;
  ASSERT_EQ(0, mb__etf_reader_init(&r, reg_send, sizeof reg_send - 1));
  ASSERT_EQ(MB_ETF_SMALL_TUPLE, mb__etf_peek(&r));
  ASSERT_EQ(0, mb__etf_read_tuple(&r, &arity));
  ASSERT_EQ(4u, arity);
  const unsigned char *at = r.p;
  ASSERT_EQ(MB_EBADTERM, mb__etf_read_atom(&r, &a));
  ASSERT(r.p == at && r.why != NULL);
  ASSERT_EQ(0, mb__etf_read_int(&r, &op));
  ASSERT_EQ(6, op);
  ASSERT_EQ(0, mb__etf_read_pid(&r, &pid));
  ASSERT(pid.node == atom("tls1@127.0.0.1") && pid.id == 0x36 &&
         pid.serial == 0 && pid.creation == 0x6b00e759);
  mb_pid_t local;
  ASSERT(!mb__etf_pid_local(&pid, &local));
  ASSERT_EQ(0, mb__etf_read_atom(&r, &a));
  ASSERT(a == atom(""));
  ASSERT_EQ(0, mb__etf_read_atom(&r, &a));
  ASSERT(a == atom("rex"));
  ASSERT_EQ(-1, mb__etf_peek(&r));

  /* The same tuple written, with this node as tls1@127.0.0.1. */
  mb__etf_set_local(atom("tls1@127.0.0.1"), 0x6b00e759);
  mb_msg_t *m = mb__msg_new(8);
  ASSERT_EQ(0, mb__etf_write_version(&m));
  ASSERT_EQ(0, mb__etf_write_tuple(&m, 4));
  ASSERT_EQ(0, mb__etf_write_int(&m, 6));
  ASSERT_EQ(0, mb__etf_write_local_pid(&m, 0x36));
  ASSERT_EQ(0, mb__etf_write_atom(&m, atom("")));
  ASSERT_EQ(0, mb__etf_write_atom(&m, atom("rex")));
  expect_bytes(m, reg_send, sizeof reg_send - 1, "REG_SEND");
  ASSERT(mb__etf_pid_local(&pid, &local) && local == 0x36);

  /* A message after it, then pids and refs of this node and its previous
   * incarnation. */
  lua_pushboolean(L, 1);
  char err[128];
  ASSERT_EQ(0, mb__etf_write_value(&m, L, -1, "msg", err, sizeof err));
  ASSERT(m->len == sizeof reg_send - 1 + 6 &&
         memcmp(m->data + m->len - 6, "\203w\004true" + 1, 6) == 0);
  lua_pushcfunction(L, l_pid);
  size_t before = m->len;
  ASSERT_EQ(MB_EBADTERM,
            mb__etf_write_value(&m, L, -1, "msg", err, sizeof err));
  ASSERT(m->len == before && strstr(err, "a function") != NULL);
  lua_settop(L, 0);
  mb_msg_free(m);

  m = mb__msg_new(8);
  mb__etf_ref_t ref = {atom("tls1@127.0.0.1"), 0x6b00e759, 3, {7, 1, 0}};
  uint64_t id;
  ASSERT(mb__etf_ref_local(&ref, &id) && id == (1ull << 32 | 7));
  ASSERT_EQ(0, mb__etf_write_version(&m));
  ASSERT_EQ(0, mb__etf_write_tuple(&m, 5));
  ASSERT_EQ(0, mb__etf_write_local_ref(&m, id));
  ASSERT_EQ(0, mb__etf_write_ref(&m, &ref));
  ref.creation = 1;
  ASSERT(!mb__etf_ref_local(&ref, &id));
  ASSERT_EQ(0, mb__etf_write_ref(&m, &ref));
  pid.creation = 1;
  ASSERT_EQ(0, mb__etf_write_pid(&m, &pid));
  ASSERT_EQ(0, mb__etf_write_int(&m, INT64_MIN));
  decode_ok(m->data, m->len, "refs");
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  ASSERT(lua_rawequal(L, -1, -2)); /* local ref, written two ways */
  mb__lref_t *lr = mb__to_ref(L, -1);
  ASSERT(lr != NULL && lr->node == 0 && lr->id == (1ull << 32 | 7));
  lua_rawgeti(L, -3, 3);
  lr = mb__to_ref(L, -1);
  ASSERT(lr != NULL && lr->node != 0 && lr->creation == 1);
  lua_rawgeti(L, -4, 4);
  mb__lpid_t *lp = mb__to_pid(L, -1);
  ASSERT(lp != NULL && lp->node != 0 && lp->creation == 1 && lp->num == 0x36);
  lua_rawgeti(L, -5, 5);
  ASSERT(lua_tointeger(L, -1) == INT64_MIN);
  lua_settop(L, 0);

  mb__etf_reader_t rr;
  ASSERT_EQ(0, mb__etf_reader_init(&rr, m->data, m->len));
  ASSERT_EQ(0, mb__etf_read_tuple(&rr, &arity));
  mb__etf_ref_t got;
  ASSERT_EQ(0, mb__etf_read_ref(&rr, &got));
  ASSERT(mb__etf_ref_local(&got, &id) && id == (1ull << 32 | 7));
  ASSERT_EQ(0, mb__etf_skip(&rr));
  ASSERT_EQ(0, mb__etf_skip(&rr));
  ASSERT_EQ(MB_EBADTERM, mb__etf_read_ref(&rr, &got));
  ASSERT_EQ(0, mb__etf_read_pid(&rr, &pid));
  ASSERT_EQ(0, mb__etf_read_int(&rr, &op));
  ASSERT(op == INT64_MIN && rr.p == rr.end);
  mb_msg_free(m);

  /* Integers beyond 64 bits are not read as integers. */
  ASSERT_EQ(0, mb__etf_reader_init(&rr, v_bignum64, sizeof v_bignum64));
  ASSERT_EQ(MB_EBADTERM, mb__etf_read_int(&rr, &op));
  ASSERT_EQ(0, mb__etf_skip(&rr));

  mb__etf_set_local(NULL, 0);
  const mb__atom_t *node;
  uint32_t creation;
  ASSERT_EQ(0, mb__etf_get_local(&node, &creation));
  ASSERT(node == atom("nonode@nohost") && creation == 0);
}

/* ---- malformed input ---- */

/* Decoding fails, pushes nothing, and skipping agrees. */
static void expect_refused(const unsigned char *b, size_t n, const char *why) {
  char err[256] = "";
  int top = lua_gettop(L);
  if (mb__etf_decode(L, b, n, err, sizeof err) == 0) {
    dump("decoded", b, n);
    abort();
  }
  ASSERT_EQ(top, lua_gettop(L));
  if (why != NULL && strstr(err, why) == NULL) {
    fprintf(stderr, "expected '%s', got '%s'\n", why, err);
    abort();
  }
  mb__etf_reader_t r;
  if (mb__etf_reader_init(&r, b, n) == 0 && mb__etf_skip(&r) == 0 &&
      r.p == r.end)
    ASSERT(strstr(err, "key twice") != NULL);
}

/* Decoding gives an opaque term of kind "term", which encodes back to
 * the same bytes if `same` (a Latin-1 atom goes back in UTF-8). */
static void expect_opaque(const unsigned char *b, size_t n, bool same) {
  char err[256] = "";
  int top = lua_gettop(L);
  if (mb__etf_decode(L, b, n, err, sizeof err) != 0) {
    fprintf(stderr, "refused: %s\n", err);
    abort();
  }
  mb__lterm_t *t = mb__to_term(L, -1);
  ASSERT(t != NULL && t->kind == MB_TERM_OTHER);
  ASSERT(!same || (t->len == n - 1 && memcmp(t->bytes, b + 1, n - 1) == 0));
  lua_settop(L, top);
}

static void run_malformed(void) {
  for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
    expect_refused(malformed[i].in, malformed[i].len, malformed[i].why);

  /* Every proper prefix of every zoo entry. */
  for (size_t i = 0; i < sizeof zoo / sizeof zoo[0]; i++)
    for (size_t n = 0; n < zoo[i].len; n++)
      expect_refused(zoo[i].bytes, n, NULL);

  /* Atoms Erlang allows that the atom table cannot hold are opaque
  terms; longer ones are refused. */
  unsigned char b[1100] = {131, 'd', 0, 200};
  memset(b + 4, 0xe9, 200);
  expect_opaque(b, 4 + 200, false);
  b[1] = 'v';
  b[2] = 510 >> 8;
  b[3] = 510 & 0xff;
  for (int i = 0; i < 255; i++)
    memcpy(b + 4 + 2 * i, "\303\251", 2);
  expect_opaque(b, 4 + 510, true);
  /* So are maps with keys equal in Lua, or a float key Lua would make an
   * integer; one with a key twice is refused. */
  expect_opaque((const unsigned char *)"\203t\000\000\000\002a\001a\001"
                "F?\360\000\000\000\000\000\000a\002", 21, true);
  expect_opaque((const unsigned char *)"\203t\000\000\000\001"
                "F?\360\000\000\000\000\000\000a\002", 17, true);
  expect_refused((const unsigned char *)"\203t\000\000\000\002"
                 "F?\360\000\000\000\000\000\000a\001"
                 "F?\360\000\000\000\000\000\000a\002", 28, "key twice");
  b[2] = 1;
  b[3] = 0; /* 256 characters */
  memset(b + 4, 'a', 256);
  expect_refused(b, 4 + 256, "255 characters");

  /* Tuples, lists and maps nested to the limit, and one level more. */
  enum { LIMIT = MB_ETF_MAX_DEPTH };
  static unsigned char deep[16 + 7 * (LIMIT + 1) + (LIMIT + 1)];
  for (int kind = 0; kind < 3; kind++) {
    static const char *open[] = {"h\001", "l\000\000\000\001",
                                 "t\000\000\000\001a\001"};
    static const size_t open_len[] = {2, 5, 7};
    {
      int levels = LIMIT;
      size_t n = 0;
      deep[n++] = 131;
      for (int i = 0; i < levels; i++) {
        memcpy(deep + n, open[kind], open_len[kind]);
        n += open_len[kind];
      }
      memcpy(deep + n, "w\001x", 3);
      n += 3;
      if (kind == 1) /* each list's tail */
        for (int i = 0; i < levels; i++)
          deep[n++] = 'j';
      decode_ok(deep, n, "the limit's levels");
      mb_msg_t *m = encode_top("the limit's levels");
      expect_bytes(m, deep, n, "the limit's levels");
      mb_msg_free(m);
      lua_pop(L, 1);
      /* one more level is too many */
      memmove(deep + 1 + open_len[kind], deep + 1, n - 1);
      memcpy(deep + 1, open[kind], open_len[kind]);
      n += open_len[kind];
      if (kind == 1)
        deep[n++] = 'j';
      expect_refused(deep, n, "nested more than 200000");
    }
  }

  /* Every tag, followed by zeros or by 0xff. */
  for (int tag = 0; tag < 256; tag++)
    for (int fill = 0; fill < 2; fill++) {
      unsigned char t[40];
      memset(t, fill ? 0xff : 0, sizeof t);
      t[0] = 131;
      t[1] = (unsigned char)tag;
      for (size_t n = 1; n <= sizeof t; n++) {
        char err[256];
        int top = lua_gettop(L);
        if (mb__etf_decode(L, t, n, err, sizeof err) == 0)
          lua_pop(L, 1);
        ASSERT_EQ(top, lua_gettop(L));
      }
    }
}

/* Random damage to valid terms: never a crash; whatever decodes encodes,
 * and encodes the same after another round (the canonical form is
 * stable). */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static void damage(unsigned char *b, size_t *n, size_t cap) {
  int edits = 1 + (int)rnd(4);
  for (int i = 0; i<edits && * n> 1; i++) {
    size_t at = 1 + rnd((uint32_t)(*n - 1));
    switch (rnd(4)) {
    case 0:
      b[at] = (unsigned char)rnd(256);
      break;
    case 1:
      b[at] ^= (unsigned char)(1u << rnd(8));
      break;
    case 2:
      if (*n < cap) {
        memmove(b + at + 1, b + at, *n - at);
        b[at] = (unsigned char)rnd(256);
        ++*n;
      }
      break;
    default:
      memmove(b + at, b + at + 1, *n - at - 1);
      --*n;
    }
  }
}

static void run_damage(void) {
  unsigned char b[512];
  int decoded = 0;
  for (int iter = 0; iter < 200000; iter++) {
    size_t z = rnd(sizeof zoo / sizeof zoo[0]);
    if (zoo[z].len > sizeof b - 8)
      continue;
    size_t n = zoo[z].len;
    memcpy(b, zoo[z].bytes, n);
    damage(b, &n, sizeof b);
    char err[256];
    mb__etf_reader_t r;
    bool skips = mb__etf_reader_init(&r, b, n) == 0 && mb__etf_skip(&r) == 0 &&
                 r.p == r.end;
    if (mb__etf_decode(L, b, n, err, sizeof err) != 0) {
      ASSERT_EQ(0, lua_gettop(L));
      ASSERT(!skips || strstr(err, "key twice") != NULL);
      continue;
    }
    ASSERT(skips);
    decoded++;
    mb_msg_t *m1;
    if (mb__etf_encode(L, -1, "msg", &m1, err, sizeof err) != 0) {
      /* compound keys Lua keeps apart but Erlang takes as one */
      ASSERT(strstr(err, "two keys equal as terms") != NULL);
      lua_settop(L, 0);
      continue;
    }
    lua_settop(L, 0);
    decode_ok(m1->data, m1->len, "re-encoded");
    mb_msg_t *m2 = encode_top("re-encoded");
    expect_bytes(m2, m1->data, m1->len, "stable");
    mb_msg_free(m1);
    mb_msg_free(m2);
    lua_settop(L, 0);
  }
  printf("damaged terms: %d of 200000 still decoded\n", decoded);
}

/* The state every case runs its Lua in: moonbeam, the etf helpers above,
 * and the prelude. */
static void setup(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "moonbeam", luaopen_moonbeam, 0);
  static const luaL_Reg fns[] = {{"encode", l_encode}, {"decode", l_decode},
                                 {"pid", l_pid},       {"rpid", l_rpid},
                                 {"ref", l_ref},       {"rref", l_rref},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_setglobal(L, "etf");
  lua_setglobal(L, "mb");
  ASSERT_EQ(LUA_OK, luaL_loadstring(L, prelude));
  lua_getglobal(L, "mb");
  lua_getglobal(L, "etf");
  lua_call(L, 2, 0);
}

TEST_IMPL(zoo) {
  setup();
  run_zoo();
  lua_close(L);
}

TEST_IMPL(canonical) {
  setup();
  run_canonical();
  lua_close(L);
}

TEST_IMPL(decoded_values) {
  setup();
  run_decoded_values();
  lua_close(L);
}

TEST_IMPL(large) {
  setup();
  run_large();
  lua_close(L);
}

TEST_IMPL(lua_values) {
  setup();
  run_lua_values();
  lua_close(L);
}

TEST_IMPL(control) {
  setup();
  run_control();
  lua_close(L);
}

TEST_IMPL(malformed) {
  setup();
  run_malformed();
  lua_close(L);
}

TEST_IMPL(damage) {
  setup();
  run_damage();
  lua_close(L);
}

TEST_LIST(TEST_ENTRY(zoo), TEST_ENTRY(canonical), TEST_ENTRY(decoded_values),
          TEST_ENTRY(large), TEST_ENTRY(lua_values), TEST_ENTRY(control),
          TEST_ENTRY(malformed), TEST_ENTRY(damage))
