/* Keys of other nodes' pids and of {Name, Node}: every value a peer can
 * put in a pid (Number 0xFFFFFFFF included) stays a pid, and a name key
 * is never taken for one. */
#include "../dist/dist_internal.h"
#include "test.h"

static const mb__atom_t *atom(const char *s) {
  const mb__atom_t *a;
  ASSERT_EQ(0, mb__atom_intern(s, strlen(s), &a));
  return a;
}

TEST_IMPL(name_keys_are_never_taken_for_pids) {
  const mb__atom_t *node = atom("peer@127.0.0.1"), *name = atom("echo");
  uint32_t n = node->index + 1;
  mb_pid_t by_name = mb__dist_name_key(name, node);
  /* The pid a peer may send with the fields a name key once had. */
  mb_pid_t pid = mb__remote_pid_key(n, 0, 0xffffffffu, name->index);
  ASSERT(by_name != 0 && pid != 0);
  ASSERT(by_name != pid);

  uint32_t rn, creation, num, serial, rname;
  ASSERT(mb__remote_pid(pid, &rn, &creation, &num, &serial));
  ASSERT(rn == n && creation == 0 && num == 0xffffffffu &&
         serial == name->index);
  ASSERT(!mb__remote_name(pid, &rn, &rname));
  ASSERT(mb__remote_name(by_name, &rn, &rname));
  ASSERT(rn == n && rname == name->index);
  ASSERT(!mb__remote_pid(by_name, &rn, &creation, &num, &serial));
  ASSERT_EQ(by_name, mb__dist_name_key(name, node));

  /* Written as a term: the pid as it came; a name is no pid at all. */
  mb_msg_t *m = mb__msg_new(64);
  ASSERT_EQ(0, mb__etf_write_local_pid(&m, pid));
  static const unsigned char want[] = "Xw\016peer@127.0.0.1\377\377\377\377";
  ASSERT(m->len == 3 + 14 + 12 && memcmp(m->data, want, 3 + 14 + 4) == 0);
  size_t len = m->len;
  ASSERT_EQ(MB_EINVAL, mb__etf_write_local_pid(&m, by_name));
  ASSERT_EQ(len, m->len);
  mb_msg_free(m);
}

TEST_LIST(TEST_ENTRY(name_keys_are_never_taken_for_pids))
