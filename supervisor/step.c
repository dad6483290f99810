/*
 * step.c: the steps the slot machine's actions are made of (step.h):
 * holding and ending requests, taking the device, publishing a state, and
 * the moves between states that several actions share (load, switch,
 * unload, ready, error). Nothing here is called but from slot.c's actions
 * and from these steps themselves.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/log.h"
#include "step.h"

static const char *const state_names[SS__COUNT] = {
	[SS_INITIALIZING] = "initializing",	[SS_EMPTY] = "empty",
	[SS_SWITCHING] = "switching_model",	[SS_UNLOADING] = "unloading_model",
	[SS_LOADING] = "loading_model",		[SS_WARMING] = "warming_up",
	[SS_READY] = "ready",			[SS_ERROR] = "error",
	[SS_RECONNECTING] = "reconnecting",	[SS_UNAVAILABLE] = "service_unavailable",
	[SS_RESTARTING] = "service_restarting",
};

const char *step_state_name(enum slot_state st)
{
	return (st >= 0 && st < SS__COUNT) ? state_names[st] : "unknown";
}

uint64_t step_now(struct slot *s)
{
	return s->env->now_ms(s->env->arg);
}

const char *step_model_name(const struct model *m)
{
	return m ? m->name : "(none)";
}

/* The request the worker runs as seq, or NULL. */
struct slot_running *step_running_of(struct slot *s, uint64_t seq)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].seq == seq)
			return &s->running[i];
	return NULL;
}

/* Where r runs at the worker, or NULL. */
struct slot_running *step_running_req(struct slot *s, const struct req *r)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req == r)
			return &s->running[i];
	return NULL;
}

/* The worker has said its last of the request at e. */
void step_running_gone(struct slot *s, struct slot_running *e)
{
	*e = s->running[--s->nrunning];
}

/* The one way a request leaves the slot: out of its list, then its reply. */
void step_req_end(struct slot *s, struct req *r, enum err code, const char *message)
{
	struct slot_running *e;

	if (r->list) {
		TAILQ_REMOVE(r->list, r, link);
		r->list = NULL;
	} else if ((e = step_running_req(s, r)) != NULL) {
		e->req = NULL;		/* the worker's answer is still to come */
	}
	s->env->finish(s, r, code, message);
}

/*
 * Requests queued in ready behind a running one with wait_ms 0 asked not to
 * wait for a slot that is not ready: when it stops being ready, they end
 * (they have no timer that would end them).
 */
static void end_those_that_would_not_wait(struct slot *s)
{
	char msg[96];
	struct req *r, *next;

	snprintf(msg, sizeof msg, "slot %s is %s", s->conf->name, state_names[s->state]);
	for (r = TAILQ_FIRST(&s->queue); r; r = next) {
		next = TAILQ_NEXT(r, link);
		if (r->wait_ms == 0)
			step_req_end(s, r, E_NOT_READY, msg);
	}
}

void step_set_state(struct slot *s, enum slot_state st)
{
	enum slot_state was = s->state;

	log_info("slot %s: %s -> %s (%s)", s->conf->name, state_names[s->state], state_names[st],
		 step_model_name(st == SS_UNLOADING || st == SS_SWITCHING ? s->next : s->model));
	s->state = st;
	s->since_ms = step_now(s);
	s->env->publish(s);
	if (was == SS_READY)
		end_those_that_would_not_wait(s);
}

void step_end_all(struct slot *s, struct req_list *l, enum err code, const char *message)
{
	struct req *r;
	while ((r = TAILQ_FIRST(l)) != NULL)
		step_req_end(s, r, code, message);
}

void step_hold(struct req_list *l, struct req *r)
{
	TAILQ_INSERT_TAIL(l, r, link);
	r->list = l;
}

/* Requests that asked for the load of s->next (or s->model) end with code. */
void step_end_load_waiters(struct slot *s, enum err code, const char *message)
{
	step_end_all(s, &s->load_waiters, code, message);
}

/* The request at e ends, cancelled; the worker is told to stop it. */
void step_cancel_running(struct slot *s, struct slot_running *e, const char *message)
{
	s->env->cancel_infer(s, e->seq);
	step_req_end(s, e->req, E_CANCELLED, message);
}

/* The requests at the worker end, cancelled, and the worker is told to stop them. */
void step_cancel_all_running(struct slot *s, const char *message)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req)
			step_cancel_running(s, &s->running[i], message);
}

/* Every inference ends: those at the worker (which is going) and those queued. */
void step_end_inference(struct slot *s, enum err code, const char *message)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req)
			step_req_end(s, s->running[i].req, code, message);
	step_end_all(s, &s->queue, code, message);
}

/* Publishes a state: a transition, or new details of the same state. */
void step_enter(struct slot *s, enum slot_state st)
{
	if (s->state == st)
		s->env->publish(s);
	else
		step_set_state(s, st);
}

void step_job_note(struct slot *s, uint64_t *job, const char *op, const struct model *m,
		     const char *status, const char *message)
{
	if (*job == 0)
		return;
	s->env->job(s, *job, op, m, status, message);
	if (strcmp(status, "done") == 0 || strcmp(status, "failed") == 0)
		*job = 0;
}

/* A new load target: a new job, announced as queued. */
void step_new_target(struct slot *s, const struct model *m)
{
	step_job_note(s, &s->load_job, "load", s->next ? s->next : s->model, "failed", "superseded");
	s->next = m;
	s->load_job = s->env->new_job(s->env->arg);
	step_job_note(s, &s->load_job, "load", m, "queued", NULL);
}

/* The model the slot is on its way to (or has), which requests may wait for. */
const struct model *step_heading(const struct slot *s)
{
	switch (s->state) {
	case SS_SWITCHING: case SS_UNLOADING:
		/* an idle eviction comes back for requests that race it */
		return s->next ? s->next : s->evicting ? s->model : NULL;
	case SS_ERROR:
		return s->next;
	case SS_EMPTY: case SS_INITIALIZING:
		return NULL;
	default:
		return s->model;
	}
}

/* A load or unload request: it waits in l for its job to end, or is answered now. */
void step_wait_on(struct slot *s, struct req *r, struct req_list *l, uint64_t job)
{
	if (r == NULL)
		return;
	r->job = job;
	if (r->wait)
		step_hold(l, r);
	else
		step_req_end(s, r, E_NONE, NULL);
}

void step_wait_for_load(struct slot *s, struct req *r)
{
	step_wait_on(s, r, &s->load_waiters, s->load_job);
}

/* Takes the device lock for what; false while the slot waits for it (SEV_LOCKED follows). */
bool step_take_device(struct slot *s, enum slot_lock_wait what, const char *op)
{
	if (s->locked)
		return true;
	if (s->lock_wait == what)
		return false;
	if (s->env->lock(s, op)) {
		s->locked = true;
		s->lock_wait = LOCK_NONE;
		return true;
	}
	s->lock_wait = what;
	return false;
}

/* Gives the device lock back, or stops waiting for it. */
void step_drop_device(struct slot *s)
{
	if (s->locked || s->lock_wait != LOCK_NONE)
		s->env->unlock(s);
	s->locked = false;
	s->lock_wait = LOCK_NONE;
}


/* Whether r's inference may load the model it names, switching if need be. */
bool step_may_autoload(const struct slot *s, const struct req *r)
{
	return s->conf->autoload == AUTOLOAD_YES || (s->conf->autoload == AUTOLOAD_ADMIN && r->admin);
}

/* Errors end the load's waiters; queued requests wait on (a fallback, an admin load). */
void step_enter_error(struct slot *s, enum err code, const char *message)
{
	snprintf(s->message, sizeof s->message, "%s", message);
	log_warn("slot %s: %s", s->conf->name, message);
	s->env->arm(s, 0);
	step_drop_device(s);
	s->next = NULL;
	step_end_load_waiters(s, code, message);
	step_set_state(s, SS_ERROR);
	step_job_note(s, &s->load_job, "load", s->model, "failed", message);
	if (s->fallback && s->model != s->fallback && !s->shutting_down) {
		log_info("slot %s: loading the fallback model %s", s->conf->name, s->fallback->name);
		s->next = s->fallback;
		if (!s->has_worker)
			step_start_load(s);
	}
}

/* With the device ours: the worker that loads s->model. */
void step_spawn_worker(struct slot *s)
{
	char err[SLOT_MESSAGE_LEN];

	s->load_started_ms = step_now(s);
	if (s->env->spawn(s, err, sizeof err) < 0) {
		step_enter_error(s, E_LOAD_FAILED, err);
		return;
	}
	s->has_worker = true;
	s->worker_killed = false;
	step_job_note(s, &s->load_job, "load", s->model, "running", NULL);
	s->env->arm(s, s->model->load_timeout_ms);
	step_enter(s, SS_LOADING);
}

/* Loads s->next: the memory check, the device lock, then a worker; loading_model. */
void step_start_load(struct slot *s)
{
	char err[SLOT_MESSAGE_LEN];

	/* Never a second worker: the old one must have been reaped. */
	assert(!s->has_worker);
	s->model = s->next;
	s->next = NULL;
	s->from = NULL;
	s->bytes = s->total = 0;
	s->load_started_ms = step_now(s);
	if (s->load_job == 0)
		s->load_job = s->env->new_job(s->env->arg);
	if (s->env->check_memory(s, s->model, 0, err, sizeof err) < 0) {
		step_enter_error(s, E_INSUFFICIENT_MEMORY, err);
		return;
	}
	if (!step_take_device(s, LOCK_LOAD, "load")) {
		step_set_state(s, SS_LOADING);	/* no worker until the device is ours */
		return;
	}
	step_spawn_worker(s);
}


/* Requests left in the queue of an empty slot: reload, autoload, or not_loaded. */
static void settle_queue(struct slot *s, const struct model *last)
{
	struct req *r = TAILQ_FIRST(&s->queue);
	const struct model *want = r ? (r->model ? r->model : last) : NULL;

	if (r && want && (s->evicting || step_may_autoload(s, r))) {
		/* A request that raced an idle eviction waits for a fresh load. */
		s->evicting = false;
		step_begin_switch(s, want, NULL);
		return;
	}
	s->evicting = false;
	step_end_all(s, &s->queue, E_NOT_LOADED, "the slot was unloaded");
}

void step_enter_empty(struct slot *s)
{
	const struct model *last = s->model;

	s->env->arm(s, 0);
	step_drop_device(s);
	step_end_load_waiters(s, E_CANCELLED, "the slot was unloaded");
	step_set_state(s, SS_EMPTY);
	step_job_note(s, &s->unload_job, "unload", last, "done", NULL);	/* a job ends after the state it reached */
	s->model = NULL;
	step_end_all(s, &s->unload_waiters, E_NONE, NULL);
	settle_queue(s, last);
}

/* The old worker is gone and a load comes next: an unload asked for meanwhile is done. */
void step_unload_done_then_load(struct slot *s)
{
	step_job_note(s, &s->unload_job, "unload", s->model, "done", NULL);
	step_end_all(s, &s->unload_waiters, E_NONE, NULL);
	step_start_load(s);
}

/* The old worker goes (if any), then the next model loads (if any). */
void step_continue_switch(struct slot *s)
{
	s->debouncing = false;
	if (s->has_worker) {
		s->env->stop(s, false);
		step_enter(s, SS_UNLOADING);
	} else if (s->next) {
		step_unload_done_then_load(s);
	} else {
		step_enter_empty(s);
	}
}

/* Streams running on the old model finish first, up to drain_timeout. */
void step_proceed_switch(struct slot *s)
{
	if (s->nrunning) {
		s->env->arm(s, s->conf->drain_timeout_ms);
		return;
	}
	step_continue_switch(s);
}

/* switching_model: wait out the debounce window, then drain, then go on. */
/*
 * A model that cannot run on the slot's device at all (its engine here has
 * no GPU backend), or, with memory_check = refuse, one that will not fit
 * even once the current one is gone, is refused before that one is
 * unloaded: r, and the inferences queued for it, get load_failed or
 * insufficient_memory; the slot keeps what it has. A slot's first model
 * (r NULL, no worker) is not checked: its load fails as it will, saying why.
 */
static bool refused_before_unload(struct slot *s, const struct model *m, struct req *r)
{
	char err[SLOT_MESSAGE_LEN];
	struct req *q, *next;
	enum err code = E_LOAD_FAILED;

	if (!s->has_worker && !r)
		return false;
	if (!s->env->can_run || s->env->can_run(s, m, err, sizeof err) >= 0) {
		code = E_INSUFFICIENT_MEMORY;
		if (!s->has_worker || s->conf->memory_check != MEMCHECK_REFUSE ||
		    s->env->check_memory(s, m, s->mem_bytes, err, sizeof err) >= 0)
			return false;
	}
	log_warn("slot %s: %s; keeping %s", s->conf->name, err, step_model_name(s->model));
	if (r)
		step_req_end(s, r, code, err);
	for (q = TAILQ_FIRST(&s->queue); q; q = next) {
		next = TAILQ_NEXT(q, link);
		if (q->model == m)
			step_req_end(s, q, code, err);
	}
	return true;
}

void step_begin_switch(struct slot *s, const struct model *m, struct req *r)
{
	if (refused_before_unload(s, m, r))
		return;
	s->env->arm(s, 0);
	s->from = s->has_worker ? s->model : NULL;
	step_new_target(s, m);
	step_wait_for_load(s, r);
	step_set_state(s, SS_SWITCHING);
	if (s->conf->switch_debounce_ms) {
		s->debouncing = true;
		s->env->arm(s, s->conf->switch_debounce_ms);
		return;
	}
	step_proceed_switch(s);
}

/* In ready: no request running or waiting means the idle clock runs. */
void step_settle_idle(struct slot *s)
{
	uint64_t idle = s->model->idle_timeout_ms ? s->model->idle_timeout_ms : s->conf->idle_timeout_ms;
	uint64_t t = step_now(s), due = t + idle;

	if (s->state != SS_READY || s->nrunning || !TAILQ_EMPTY(&s->queue) || idle == 0)
		return;
	if (s->keep_until_ms > due)
		due = s->keep_until_ms;
	s->env->arm(s, due - t);
}

/* The worker failed (hung, or broke the protocol): it dies, and what it runs with it. */
void step_kill_worker(struct slot *s, const char *why)
{
	s->worker_killed = true;
	s->env->kill(s, why);
}

/* Whether the worker takes r now: up to parallel inferences together, anything else alone. */
static bool worker_takes(const struct slot *s, const struct req *r)
{
	if (s->worker_killed)
		return false;
	if (s->nrunning == 0)
		return true;
	return r->op == OP_INFER && !s->running[0].alone && s->nrunning < s->parallel;
}

/* In ready: the head of the queue goes to the worker, while it takes more. */
void step_dispatch_next(struct slot *s)
{
	struct req *r;
	char msg[160];

	while ((r = TAILQ_FIRST(&s->queue)) != NULL && worker_takes(s, r)) {
		if (r->model && r->model != s->model) {
			if (step_may_autoload(s, r)) {
				step_begin_switch(s, r->model, NULL);
				if (s->state == SS_READY)
					continue;	/* refused for memory: those requests ended */
				return;
			}
			snprintf(msg, sizeof msg, "model %s is not loaded in slot %s", r->model->name,
				 s->conf->name);
			step_req_end(s, r, E_NOT_LOADED, msg);
			continue;
		}
		if (!step_take_device(s, LOCK_INFER, "infer"))
			return;		/* r waits at the head of the queue */
		TAILQ_REMOVE(&s->queue, r, link);
		r->list = NULL;
		s->env->arm_req(s, r, 0);
		s->env->arm(s, s->conf->stall_timeout_ms);	/* not idle; a stall deadline */
		s->running[s->nrunning++] = (struct slot_running){ r->seq, r, r->op != OP_INFER };
		s->progress_ms = step_now(s);
		s->env->send_infer(s, r);
	}
}

void step_enter_ready(struct slot *s)
{
	s->env->arm(s, 0);
	s->attempt = 0;
	s->failed_loads = 0;
	s->message[0] = '\0';
	s->keep_until_ms = 0;
	step_drop_device(s);		/* the load and warmup are done */
	step_set_state(s, SS_READY);
	step_job_note(s, &s->load_job, "load", s->model, "done", NULL);	/* a job ends after the state it reached */
	step_end_load_waiters(s, E_NONE, NULL);
	step_dispatch_next(s);	/* requests that waited for this load */
	step_settle_idle(s);
}

/*
 * Unloads the slot: at once when nothing runs (or with force, which cancels
 * what runs), else through switching_model while the streams drain.
 * evict: an idle eviction, after which requests that raced it reload.
 */
void step_begin_unload(struct slot *s, struct req *r, bool force, bool evict)
{
	bool loading = s->state == SS_LOADING || s->state == SS_WARMING;

	s->env->arm(s, 0);
	s->debouncing = false;
	step_end_load_waiters(s, E_CANCELLED, "the slot was unloaded");
	step_job_note(s, &s->load_job, "load", s->next ? s->next : s->model, "failed", "cancelled by unload");
	s->next = NULL;
	s->evicting = evict;
	if (s->unload_job == 0) {
		s->unload_job = s->env->new_job(s->env->arg);
		step_job_note(s, &s->unload_job, "unload", s->model, "running", NULL);
	}
	if (force)
		step_cancel_all_running(s, "the slot was unloaded (force)");
	step_wait_on(s, r, &s->unload_waiters, s->unload_job);
	if (!s->has_worker) {
		step_enter_empty(s);
	} else if (s->nrunning && !force && !loading) {
		s->from = s->model;
		step_enter(s, SS_SWITCHING);
		step_proceed_switch(s);
	} else {
		/* A load in progress is aborted: the worker is killed, not asked. */
		s->env->stop(s, loading);
		step_enter(s, SS_UNLOADING);
	}
}

