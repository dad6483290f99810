/*
 * step.h: the steps of the slot machine (step.c), for its actions in
 * slot.c. Nothing outside the machine includes this.
 */
#ifndef STEP_H
#define STEP_H

#include "slot.h"

const char *step_state_name(enum slot_state st);

uint64_t step_now(struct slot *s);

const char *step_model_name(const struct model *m);

/* The request the worker runs as seq, or NULL. */
struct slot_running *step_running_of(struct slot *s, uint64_t seq);

/* Where r runs at the worker, or NULL. */
struct slot_running *step_running_req(struct slot *s, const struct req *r);

/* The worker has said its last of the request at e. */
void step_running_gone(struct slot *s, struct slot_running *e);

/* The one way a request leaves the slot: out of its list, then its reply. */
void step_req_end(struct slot *s, struct req *r, enum err code, const char *message);

void step_set_state(struct slot *s, enum slot_state st);

void step_end_all(struct slot *s, struct req_list *l, enum err code, const char *message);

void step_hold(struct req_list *l, struct req *r);

/* Requests that asked for the load of s->next (or s->model) end with code. */
void step_end_load_waiters(struct slot *s, enum err code, const char *message);

/* The request at e ends, cancelled; the worker is told to stop it. */
void step_cancel_running(struct slot *s, struct slot_running *e, const char *message);

/* The requests at the worker end, cancelled, and the worker is told to stop them. */
void step_cancel_all_running(struct slot *s, const char *message);

/* Every inference ends: those at the worker (which is going) and those queued. */
void step_end_inference(struct slot *s, enum err code, const char *message);

/* Publishes a state: a transition, or new details of the same state. */
void step_enter(struct slot *s, enum slot_state st);

void step_job_note(struct slot *s, uint64_t *job, const char *op, const struct model *m,
		     const char *status, const char *message);

/* A new load target: a new job, announced as queued. */
void step_new_target(struct slot *s, const struct model *m);

/* The model the slot is on its way to (or has), which requests may wait for. */
const struct model *step_heading(const struct slot *s);

/* A load or unload request: it waits in l for its job to end, or is answered now. */
void step_wait_on(struct slot *s, struct req *r, struct req_list *l, uint64_t job);

void step_wait_for_load(struct slot *s, struct req *r);

/* Takes the device lock for what; false while the slot waits for it (SEV_LOCKED follows). */
bool step_take_device(struct slot *s, enum slot_lock_wait what, const char *op);

/* Gives the device lock back, or stops waiting for it. */
void step_drop_device(struct slot *s);

/* Whether r's inference may load the model it names, switching if need be. */
bool step_may_autoload(const struct slot *s, const struct req *r);

/* Errors end the load's waiters; queued requests wait on (a fallback, an admin load). */
void step_enter_error(struct slot *s, enum err code, const char *message);

/* With the device ours: the worker that loads s->model. */
void step_spawn_worker(struct slot *s);

/* Loads s->next: the memory check, the device lock, then a worker; loading_model. */
void step_start_load(struct slot *s);

void step_enter_empty(struct slot *s);

/* The old worker is gone and a load comes next: an unload asked for meanwhile is done. */
void step_unload_done_then_load(struct slot *s);

/* The old worker goes (if any), then the next model loads (if any). */
void step_continue_switch(struct slot *s);

/* Streams running on the old model finish first, up to drain_timeout. */
void step_proceed_switch(struct slot *s);

void step_begin_switch(struct slot *s, const struct model *m, struct req *r);

/* In ready: no request running or waiting means the idle clock runs. */
void step_settle_idle(struct slot *s);

/* The worker failed (hung, or broke the protocol): it dies, and what it runs with it. */
void step_kill_worker(struct slot *s, const char *why);

/* In ready: the head of the queue goes to the worker, while it takes more. */
void step_dispatch_next(struct slot *s);

void step_enter_ready(struct slot *s);

/*
 * Unloads the slot: at once when nothing runs (or with force, which cancels
 * what runs), else through switching_model while the streams drain.
 * evict: an idle eviction, after which requests that raced it reload.
 */
void step_begin_unload(struct slot *s, struct req *r, bool force, bool evict);

#endif
