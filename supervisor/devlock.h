/*
 * devlock.h: one lock per exclusive device, so that the GPU-heavy work of
 * all slots on it (load, warmup, inference) runs one at a time, in the
 * order it was asked for.
 */
#ifndef DEVLOCK_H
#define DEVLOCK_H

#include <stdbool.h>

#include "slot.h"

struct devlock;

/* Makes the locks of the exclusive devices the running configuration's slots use. */
void devlock_init(void);
void devlock_free(void);
/* The lock of the device, or NULL when that device is not exclusive. */
struct devlock *devlock_of(const char *device);
/*
 * Takes the lock for s (op names the work, for gpu events). True when s
 * holds it now; else s waits in line and gets SEV_LOCKED when its turn comes.
 */
bool devlock_take(struct devlock *l, struct slot *s, const char *op);
/* Gives the lock back, or leaves the line; the next in line gets it. */
void devlock_drop(struct devlock *l, struct slot *s);
/* Whether the lock is held (by any slot). */
bool devlock_busy(const struct devlock *l);

#endif
