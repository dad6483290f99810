/*
 * watch.h: what the core tells whoever registered to hear it.
 *
 * The core (core.c, devlock.c) names no watcher: it calls watch_state(),
 * watch_job() and the rest, which call every registered watch in the order
 * of registration (main.c registers them). A watcher fills the members it
 * wants and leaves the others NULL. Watchers run inside the core's calls:
 * they read what they are given and must not call back into the core.
 */
#ifndef WATCH_H
#define WATCH_H

#include <stdint.h>

#include "../proto/proto.h"

struct model;
struct req;
struct slot;

struct watch {
	/* A slot's state changed, or its details did (a load's progress in its state, a new job). */
	void (*state)(const struct slot *s);
	/* A load read more of its file (at most once per PROGRESS_EVENT_MS, and its last bytes once). */
	void (*progress)(const struct slot *s);
	/* A job moved on: status "queued", "running", "done" or "failed"; message may be NULL. */
	void (*job)(const struct slot *s, uint64_t job, const char *op, const struct model *m, const char *status,
		    const char *message);
	/* Something an operator should know; s NULL: about no slot. */
	void (*advisory)(const struct slot *s, const char *message);
	/* A device lock: status "waiting", "started" or "completed" for op. */
	void (*gpu)(const char *device, const struct slot *s, const char *op, const char *status);
	/* A request's one final reply is about to be sent, with code. */
	void (*request_done)(const struct req *r, enum err code);
};

#define WATCH_MAX 8

/* Registers w (kept, not copied), after those registered before it. */
void watch_add(const struct watch *w);
/* Forgets every watch (at exit). */
void watch_clear(void);
void watch_state(const struct slot *s);
void watch_progress(const struct slot *s);
void watch_job(const struct slot *s, uint64_t job, const char *op, const struct model *m, const char *status,
	       const char *message);
void watch_advisory(const struct slot *s, const char *message);
void watch_gpu(const char *device, const struct slot *s, const char *op, const char *status);
void watch_request_done(const struct req *r, enum err code);

#endif
