/*
 * core.h: the slots of this modeld, and the one door into them.
 *
 * The core owns the slot array, gives each slot's machine its hands
 * (workers, timers, the device lock, replies) and tells what happens to
 * the watches registered with watch.h. Faces come in through three calls
 * only: core_submit (a request read by req_read), core_cancel, and, for a
 * reload, core_retire. No face builds a slot event.
 */
#ifndef CORE_H
#define CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "req.h"
#include "slot.h"

/* Progress events per load: at most one per this many ms. */
#define PROGRESS_EVENT_MS 100

struct child;
struct devlock;

/* A slot as the core runs it: the machine's view first, then what only the core knows. */
struct slot_rt {
	struct slot s;			/* first: the machine's view */
	size_t index;			/* in the running configuration's slots */
	struct event *deadline;
	struct child *child;
	uint64_t progress_sent_ms;
	bool progress_done_sent;	/* this load's last progress event (all its bytes) went out */
	uint64_t overhead;		/* memory the engine held beyond the file, last load */
	struct devlock *lock;		/* of its device, when that is exclusive */
};

/* The slots of the running configuration, on base; each initializing. */
void core_init(struct event_base *base);
/* Each slot leaves initializing: for the model initial gives it (NULL: none), or empty. */
void core_start(const struct model *(*initial)(const struct slot *s));
/* modeld stops: every slot unloads, and work is refused from now on. */
void core_shutdown(void);
bool core_shutting_down(void);
void core_free(void);

size_t core_nslots(void);
const struct slot *core_slot(size_t i);
/* A slot's place among the slots. */
size_t core_index(const struct slot *s);
/* The slot called name, or NULL. */
const struct slot *core_find(const char *name);

/*
 * Hands r, read by req_read, to its target's slot (the slot it names, else
 * the one that has its model, else the model's configured slot, else the
 * first); its final reply comes through its sink. -1 with err when there
 * is no such slot (r is the caller's still).
 */
int core_submit(struct req *r, struct req_error *err);
/*
 * r is cancelled: ended at once, or (a running inference) asked to stop.
 * asker_gone: its asker went away; r is orphaned, and a load or unload
 * goes on, unheard.
 */
void core_cancel(struct req *r, bool asker_gone);
/*
 * A reload took m out of the configuration (again: the definition that
 * replaces it, or NULL): requests for it end, a slot that holds it unloads
 * it, and loads again where it was loaded. Then each slot's fallback model
 * is the one the running configuration names.
 */
void core_retire(const struct model *m, const struct model *again);
/* Each slot's fallback model, as the running configuration names it now. */
void core_reconfigure(void);

#endif
