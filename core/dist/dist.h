/* What the runtime asks of distribution: where a signal for another node's
 * process goes, which node a {Name, Node} names, and stopping at node
 * stop.  Everything else of core/dist/ stays behind dist_internal.h.  Not
 * installed. */
#ifndef MB_DIST_H
#define MB_DIST_H

#include "internal.h"

/* This node's name, or NULL when it is not distributed. */
const mb__atom_t *mb__dist_node(void);
/* The one answer to "is {Name, Node} local?": when Node is this node, or
 * this node is not distributed, the process registered here as Name (0 if
 * none); otherwise the key that sends and monitors by name go by. */
mb_pid_t mb__dist_resolve(const mb__atom_t *name, const mb__atom_t *node);
/* A signal for a process of another node (to has MB_PID_REMOTE). */
int mb__dist_route(mb_pid_t to, mb_msg_t *m);
/* The key of {Name, Node}: sends and monitors to it go by name. */
mb_pid_t mb__dist_name_key(const mb__atom_t *name, const mb__atom_t *node);
/* At node stop: close every connection and the listener, unregister. */
void mb__dist_stop(void);

#endif
