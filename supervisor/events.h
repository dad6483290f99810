/*
 * events.h: the events of the client protocol, kept and fanned out.
 *
 * events.c is a watcher (events_watch, registered by main.c): what the
 * core tells it becomes an event with the next seq, is kept (the last
 * EVENTS_KEPT, for HTTP clients that reconnect; the last JOBS_KEPT jobs
 * with where each stands, for the jobs view), and goes to every sink
 * registered with events_add_sink (the socket's subscribers, HTTP's event
 * streams), in the order they were registered.
 */
#ifndef EVENTS_H
#define EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../proto/msg.h"
#include "slot.h"
#include "watch.h"

#define EVENTS_KEPT 1024
#define JOBS_KEPT 64
#define EVENTS_MAX_SINKS 4

/* An event as published: its frame (msgpack, with its length header) and what it is about. */
struct event_ref {
	uint64_t seq;
	enum event_kind kind;
	const struct slot *slot;
	uint64_t job;		/* progress and job events: the job; 0 otherwise */
	bool job_over;		/* the job event that says the job is done or failed */
	const void *frame;
	size_t len;
};

/* A job and where it stands, as its last job event said. */
struct job_rec {
	uint64_t id;
	char op[8];
	const struct slot *slot;
	const struct model *model;
	char status[8];
	char message[SLOT_MESSAGE_LEN];
	bool over;				/* done or failed */
	uint64_t started_ms, updated_ms;	/* wall clock */
};

/* Where an event goes as it is published: e, and the frame it was written in (w, ended). Neither outlives the call. */
typedef void (*events_sink)(const struct event_ref *e, struct msgw *w);

extern const struct watch events_watch;

/* Room for the slots' last state events; after core_init. */
void events_init(void);
void events_add_sink(events_sink sink);
/* The event of that seq while it is kept (until EVENTS_KEPT more come), else NULL. */
const struct event_ref *events_kept(uint64_t seq);
uint64_t events_first_kept(void);
/* The seq of the last event published (0: none yet). */
uint64_t events_last_seq(void);
void events_free(void);
/* A job among the last JOBS_KEPT, or NULL. */
const struct job_rec *events_find_job(uint64_t id);
/* One job, as a whole map. */
void events_write_job(struct msgw *w, const struct job_rec *j);
/* "jobs": the kept jobs, newest first. */
void events_write_jobs(struct msgw *w);
/* The slot's state now, marked coalesced, under the seq of its last state event: for a subscriber whose state
 * events were held back while it was behind. w is ended, for sending. */
void events_state_again(const struct slot *s, struct msgw *w);

#endif
