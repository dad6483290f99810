/*
 * ops.h: the socket protocol (ops.c): the op table, its argument readers
 * (req_read for every op that waits in a slot) and the socket's result
 * writers. server.c hands it each client's frames (ops_dispatch).
 */
#ifndef OPS_H
#define OPS_H

#include <msgpack.h>

#include "../proto/msg.h"
#include "config.h"
#include "req.h"
#include "slot.h"

struct client;

/* What the reload op runs: the configuration read again and applied; -1 with err (the running one stays). */
typedef int (*ops_reload_fn)(struct config_changes *n, char *err, size_t errlen);

/* The reload op runs reload. Aborts, naming it, if an op has no handler: at start, so that no request finds one missing. */
void ops_init(ops_reload_fn reload);
/* One frame of c's, m (which does not outlive the call): the op it names, run or refused. */
void ops_dispatch(struct client *c, const msgpack_object *m);
/* The results of r, a request that waited in slot s and ended well, after "slot". */
void ops_write_result(struct msgw *w, const struct slot *s, const struct req *r);

#endif
