/*
 * slot.c: the slot state machine. See slot.h and docs/architecture.md.
 *
 * actions[state][event] names the action for an event in a state; where it
 * is empty, fallback[event] applies in every state. Actions are small and
 * only they change the slot. Every request a slot holds ends in exactly one
 * req_end(), which is the one way out to the client.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/log.h"
#include "slot.h"

typedef void (*slot_action)(struct slot *s, const struct slot_ev *ev);

static const char *const state_names[SS__COUNT] = {
	[SS_INITIALIZING] = "initializing",	[SS_EMPTY] = "empty",
	[SS_SWITCHING] = "switching_model",	[SS_UNLOADING] = "unloading_model",
	[SS_LOADING] = "loading_model",		[SS_WARMING] = "warming_up",
	[SS_READY] = "ready",			[SS_ERROR] = "error",
	[SS_RECONNECTING] = "reconnecting",	[SS_UNAVAILABLE] = "service_unavailable",
	[SS_RESTARTING] = "service_restarting",
};

const char *slot_state_name(enum slot_state st)
{
	return (st >= 0 && st < SS__COUNT) ? state_names[st] : "unknown";
}

static uint64_t now(struct slot *s)
{
	return s->env->now_ms(s->env->arg);
}

static const char *model_name(const struct model *m)
{
	return m ? m->name : "(none)";
}

/* The request the worker runs as seq, or NULL. */
static struct slot_running *running_of(struct slot *s, uint64_t seq)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].seq == seq)
			return &s->running[i];
	return NULL;
}

/* Where r runs at the worker, or NULL. */
static struct slot_running *running_req(struct slot *s, const struct req *r)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req == r)
			return &s->running[i];
	return NULL;
}

/* The worker has said its last of the request at e. */
static void running_gone(struct slot *s, struct slot_running *e)
{
	*e = s->running[--s->nrunning];
}

/* The one way a request leaves the slot: out of its list, then its reply. */
static void req_end(struct slot *s, struct req *r, enum err code, const char *message)
{
	struct slot_running *e;

	if (r->list) {
		TAILQ_REMOVE(r->list, r, link);
		r->list = NULL;
	} else if ((e = running_req(s, r)) != NULL) {
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
			req_end(s, r, E_NOT_READY, msg);
	}
}

static void set_state(struct slot *s, enum slot_state st)
{
	enum slot_state was = s->state;

	log_info("slot %s: %s -> %s (%s)", s->conf->name, state_names[s->state], state_names[st],
		 model_name(st == SS_UNLOADING || st == SS_SWITCHING ? s->next : s->model));
	s->state = st;
	s->since_ms = now(s);
	s->env->state_changed(s);
	if (was == SS_READY)
		end_those_that_would_not_wait(s);
}

static void end_all(struct slot *s, struct req_list *l, enum err code, const char *message)
{
	struct req *r;
	while ((r = TAILQ_FIRST(l)) != NULL)
		req_end(s, r, code, message);
}

static void hold(struct req_list *l, struct req *r)
{
	TAILQ_INSERT_TAIL(l, r, link);
	r->list = l;
}

/* Requests that asked for the load of s->next (or s->model) end with code. */
static void end_load_waiters(struct slot *s, enum err code, const char *message)
{
	end_all(s, &s->load_waiters, code, message);
}

/* The request at e ends, cancelled; the worker is told to stop it. */
static void cancel_running(struct slot *s, struct slot_running *e, const char *message)
{
	s->env->cancel_infer(s, e->seq);
	req_end(s, e->req, E_CANCELLED, message);
}

/* The requests at the worker end, cancelled, and the worker is told to stop them. */
static void cancel_all_running(struct slot *s, const char *message)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req)
			cancel_running(s, &s->running[i], message);
}

/* Every inference ends: those at the worker (which is going) and those queued. */
static void end_inference(struct slot *s, enum err code, const char *message)
{
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req)
			req_end(s, s->running[i].req, code, message);
	end_all(s, &s->queue, code, message);
}

/* Publishes a state: a transition, or new details of the same state. */
static void enter(struct slot *s, enum slot_state st)
{
	if (s->state == st)
		s->env->state_changed(s);
	else
		set_state(s, st);
}

static void job_note(struct slot *s, uint64_t *job, const char *op, const struct model *m,
		     const char *status, const char *message)
{
	if (*job == 0)
		return;
	s->env->job(s, *job, op, m, status, message);
	if (strcmp(status, "done") == 0 || strcmp(status, "failed") == 0)
		*job = 0;
}

/* A new load target: a new job, announced as queued. */
static void new_target(struct slot *s, const struct model *m)
{
	job_note(s, &s->load_job, "load", s->next ? s->next : s->model, "failed", "superseded");
	s->next = m;
	s->load_job = s->env->new_job(s->env->arg);
	job_note(s, &s->load_job, "load", m, "queued", NULL);
}

/* The model the slot is on its way to (or has), which requests may wait for. */
static const struct model *heading(const struct slot *s)
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
static void wait_on(struct slot *s, struct req *r, struct req_list *l, uint64_t job)
{
	if (r == NULL)
		return;
	r->job = job;
	if (r->wait)
		hold(l, r);
	else
		req_end(s, r, E_NONE, NULL);
}

static void wait_for_load(struct slot *s, struct req *r)
{
	wait_on(s, r, &s->load_waiters, s->load_job);
}

/* Takes the device lock for what; false while the slot waits for it (SEV_LOCKED follows). */
static bool take_device(struct slot *s, enum slot_lock_wait what, const char *op)
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
static void drop_device(struct slot *s)
{
	if (s->locked || s->lock_wait != LOCK_NONE)
		s->env->unlock(s);
	s->locked = false;
	s->lock_wait = LOCK_NONE;
}

static void start_load(struct slot *s);

/* Whether r's inference may load the model it names, switching if need be. */
static bool may_autoload(const struct slot *s, const struct req *r)
{
	return s->conf->autoload == AUTOLOAD_YES || (s->conf->autoload == AUTOLOAD_ADMIN && r->admin);
}

/* Errors end the load's waiters; queued requests wait on (a fallback, an admin load). */
static void enter_error(struct slot *s, enum err code, const char *message)
{
	snprintf(s->message, sizeof s->message, "%s", message);
	log_warn("slot %s: %s", s->conf->name, message);
	s->env->arm(s, 0);
	drop_device(s);
	s->next = NULL;
	end_load_waiters(s, code, message);
	set_state(s, SS_ERROR);
	job_note(s, &s->load_job, "load", s->model, "failed", message);
	if (s->fallback && s->model != s->fallback && !s->shutting_down) {
		log_info("slot %s: loading the fallback model %s", s->conf->name, s->fallback->name);
		s->next = s->fallback;
		if (!s->has_worker)
			start_load(s);
	}
}

/* With the device ours: the worker that loads s->model. */
static void spawn_worker(struct slot *s)
{
	char err[SLOT_MESSAGE_LEN];

	s->load_started_ms = now(s);
	if (s->env->spawn(s, err, sizeof err) < 0) {
		enter_error(s, E_LOAD_FAILED, err);
		return;
	}
	s->has_worker = true;
	s->worker_killed = false;
	job_note(s, &s->load_job, "load", s->model, "running", NULL);
	s->env->arm(s, s->model->load_timeout_ms);
	enter(s, SS_LOADING);
}

/* Loads s->next: the memory check, the device lock, then a worker; loading_model. */
static void start_load(struct slot *s)
{
	char err[SLOT_MESSAGE_LEN];

	/* Never a second worker: the old one must have been reaped. */
	assert(!s->has_worker);
	s->model = s->next;
	s->next = NULL;
	s->from = NULL;
	s->bytes = s->total = 0;
	s->load_started_ms = now(s);
	if (s->load_job == 0)
		s->load_job = s->env->new_job(s->env->arg);
	if (s->env->check_memory(s, s->model, 0, err, sizeof err) < 0) {
		enter_error(s, E_INSUFFICIENT_MEMORY, err);
		return;
	}
	if (!take_device(s, LOCK_LOAD, "load")) {
		set_state(s, SS_LOADING);	/* no worker until the device is ours */
		return;
	}
	spawn_worker(s);
}

static void begin_switch(struct slot *s, const struct model *m, struct req *r);

/* Requests left in the queue of an empty slot: reload, autoload, or not_loaded. */
static void settle_queue(struct slot *s, const struct model *last)
{
	struct req *r = TAILQ_FIRST(&s->queue);
	const struct model *want = r ? (r->model ? r->model : last) : NULL;

	if (r && want && (s->evicting || may_autoload(s, r))) {
		/* A request that raced an idle eviction waits for a fresh load. */
		s->evicting = false;
		begin_switch(s, want, NULL);
		return;
	}
	s->evicting = false;
	end_all(s, &s->queue, E_NOT_LOADED, "the slot was unloaded");
}

static void enter_empty(struct slot *s)
{
	const struct model *last = s->model;

	s->env->arm(s, 0);
	drop_device(s);
	end_load_waiters(s, E_CANCELLED, "the slot was unloaded");
	set_state(s, SS_EMPTY);
	job_note(s, &s->unload_job, "unload", last, "done", NULL);	/* a job ends after the state it reached */
	s->model = NULL;
	end_all(s, &s->unload_waiters, E_NONE, NULL);
	settle_queue(s, last);
}

/* The old worker is gone and a load comes next: an unload asked for meanwhile is done. */
static void unload_done_then_load(struct slot *s)
{
	job_note(s, &s->unload_job, "unload", s->model, "done", NULL);
	end_all(s, &s->unload_waiters, E_NONE, NULL);
	start_load(s);
}

/* The old worker goes (if any), then the next model loads (if any). */
static void continue_switch(struct slot *s)
{
	s->debouncing = false;
	if (s->has_worker) {
		s->env->stop(s, false);
		enter(s, SS_UNLOADING);
	} else if (s->next) {
		unload_done_then_load(s);
	} else {
		enter_empty(s);
	}
}

/* Streams running on the old model finish first, up to drain_timeout. */
static void proceed_switch(struct slot *s)
{
	if (s->nrunning) {
		s->env->arm(s, s->conf->drain_timeout_ms);
		return;
	}
	continue_switch(s);
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
	log_warn("slot %s: %s; keeping %s", s->conf->name, err, model_name(s->model));
	if (r)
		req_end(s, r, code, err);
	for (q = TAILQ_FIRST(&s->queue); q; q = next) {
		next = TAILQ_NEXT(q, link);
		if (q->model == m)
			req_end(s, q, code, err);
	}
	return true;
}

static void begin_switch(struct slot *s, const struct model *m, struct req *r)
{
	if (refused_before_unload(s, m, r))
		return;
	s->env->arm(s, 0);
	s->from = s->has_worker ? s->model : NULL;
	new_target(s, m);
	wait_for_load(s, r);
	set_state(s, SS_SWITCHING);
	if (s->conf->switch_debounce_ms) {
		s->debouncing = true;
		s->env->arm(s, s->conf->switch_debounce_ms);
		return;
	}
	proceed_switch(s);
}

/* In ready: no request running or waiting means the idle clock runs. */
static void settle_idle(struct slot *s)
{
	uint64_t idle = s->model->idle_timeout_ms ? s->model->idle_timeout_ms : s->conf->idle_timeout_ms;
	uint64_t t = now(s), due = t + idle;

	if (s->state != SS_READY || s->nrunning || !TAILQ_EMPTY(&s->queue) || idle == 0)
		return;
	if (s->keep_until_ms > due)
		due = s->keep_until_ms;
	s->env->arm(s, due - t);
}

/* The worker failed (hung, or broke the protocol): it dies, and what it runs with it. */
static void kill_worker(struct slot *s, const char *why)
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
static void dispatch_next(struct slot *s)
{
	struct req *r;
	char msg[160];

	while ((r = TAILQ_FIRST(&s->queue)) != NULL && worker_takes(s, r)) {
		if (r->model && r->model != s->model) {
			if (may_autoload(s, r)) {
				begin_switch(s, r->model, NULL);
				if (s->state == SS_READY)
					continue;	/* refused for memory: those requests ended */
				return;
			}
			snprintf(msg, sizeof msg, "model %s is not loaded in slot %s", r->model->name,
				 s->conf->name);
			req_end(s, r, E_NOT_LOADED, msg);
			continue;
		}
		if (!take_device(s, LOCK_INFER, "infer"))
			return;		/* r waits at the head of the queue */
		TAILQ_REMOVE(&s->queue, r, link);
		r->list = NULL;
		s->env->arm_req(s, r, 0);
		s->env->arm(s, s->conf->stall_timeout_ms);	/* not idle; a stall deadline */
		s->running[s->nrunning++] = (struct slot_running){ r->seq, r, r->op != OP_INFER };
		s->progress_ms = now(s);
		s->env->send_infer(s, r);
	}
}

static void enter_ready(struct slot *s)
{
	s->env->arm(s, 0);
	s->attempt = 0;
	s->failed_loads = 0;
	s->message[0] = '\0';
	s->keep_until_ms = 0;
	drop_device(s);		/* the load and warmup are done */
	set_state(s, SS_READY);
	job_note(s, &s->load_job, "load", s->model, "done", NULL);	/* a job ends after the state it reached */
	end_load_waiters(s, E_NONE, NULL);
	dispatch_next(s);	/* requests that waited for this load */
	settle_idle(s);
}

/*
 * Unloads the slot: at once when nothing runs (or with force, which cancels
 * what runs), else through switching_model while the streams drain.
 * evict: an idle eviction, after which requests that raced it reload.
 */
static void begin_unload(struct slot *s, struct req *r, bool force, bool evict)
{
	bool loading = s->state == SS_LOADING || s->state == SS_WARMING;

	s->env->arm(s, 0);
	s->debouncing = false;
	end_load_waiters(s, E_CANCELLED, "the slot was unloaded");
	job_note(s, &s->load_job, "load", s->next ? s->next : s->model, "failed", "cancelled by unload");
	s->next = NULL;
	s->evicting = evict;
	if (s->unload_job == 0) {
		s->unload_job = s->env->new_job(s->env->arg);
		job_note(s, &s->unload_job, "unload", s->model, "running", NULL);
	}
	if (force)
		cancel_all_running(s, "the slot was unloaded (force)");
	wait_on(s, r, &s->unload_waiters, s->unload_job);
	if (!s->has_worker) {
		enter_empty(s);
	} else if (s->nrunning && !force && !loading) {
		s->from = s->model;
		enter(s, SS_SWITCHING);
		proceed_switch(s);
	} else {
		/* A load in progress is aborted: the worker is killed, not asked. */
		s->env->stop(s, loading);
		enter(s, SS_UNLOADING);
	}
}

/* --- actions --- */

static void act_ignore(struct slot *s, const struct slot_ev *ev)
{
	log_debug("slot %s: event %d ignored in %s", s->conf->name, ev->type, state_names[s->state]);
}

static void act_refuse(struct slot *s, const struct slot_ev *ev)
{
	char msg[96];
	snprintf(msg, sizeof msg, "slot %s is %s", s->conf->name, state_names[s->state]);
	req_end(s, ev->req, E_NOT_READY, msg);
}

static void act_not_loaded(struct slot *s, const struct slot_ev *ev)
{
	char msg[96];
	snprintf(msg, sizeof msg, "slot %s has no model loaded", s->conf->name);
	req_end(s, ev->req, E_NOT_LOADED, msg);
}

static void act_reply_now(struct slot *s, const struct slot_ev *ev)
{
	req_end(s, ev->req, E_NONE, NULL);
}

static void act_start(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model)
		begin_switch(s, ev->model, NULL);
	else
		set_state(s, SS_EMPTY);
}

static void act_load(struct slot *s, const struct slot_ev *ev)
{
	begin_switch(s, ev->model, ev->req);
}

static void act_load_ready(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model == s->model)
		req_end(s, ev->req, E_NONE, NULL);
	else
		begin_switch(s, ev->model, ev->req);
}

/* switching_model, unloading_model, service_restarting: the latest target wins. */
static void act_load_retarget(struct slot *s, const struct slot_ev *ev)
{
	if (s->state == SS_RESTARTING && ev->model == s->model) {
		wait_for_load(s, ev->req);	/* the restart reloads it */
		return;
	}
	if (ev->model != heading(s)) {
		end_load_waiters(s, E_SUPERSEDED, "a load of another model replaced this one");
		new_target(s, ev->model);
	}
	wait_for_load(s, ev->req);
	enter(s, s->state == SS_RESTARTING ? SS_UNLOADING : s->state);
}

/* loading_model, warming_up: join the same model, abort for another (latest wins). */
static void act_load_while_loading(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model == s->model) {
		wait_for_load(s, ev->req);
		return;
	}
	end_load_waiters(s, E_SUPERSEDED, "a load of another model replaced this one");
	s->env->arm(s, 0);
	new_target(s, ev->model);
	wait_for_load(s, ev->req);
	if (!s->has_worker) {		/* it was waiting for the device */
		drop_device(s);
		start_load(s);
		return;
	}
	s->env->stop(s, true);
	set_state(s, SS_UNLOADING);
}

/* reconnecting: the same model waits for the retry. */
static void act_load_while_retrying(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model == s->model && s->state == SS_RECONNECTING)
		wait_for_load(s, ev->req);
	else
		begin_switch(s, ev->model, ev->req);
}

static void act_unload(struct slot *s, const struct slot_ev *ev)
{
	begin_unload(s, ev->req, ev->req && ev->req->force, false);
}

static void act_restart(struct slot *s, const struct slot_ev *ev)
{
	if (s->model == NULL) {
		act_not_loaded(s, ev);
		return;
	}
	s->env->arm(s, 0);
	cancel_all_running(s, "the slot is restarting");
	s->next = NULL;
	if (s->has_worker)
		s->env->stop(s, s->state != SS_READY);
	set_state(s, SS_RESTARTING);
	req_end(s, ev->req, E_NONE, NULL);
	if (!s->has_worker) {
		s->next = s->model;
		start_load(s);
	}
}

/*
 * Puts r in the queue; in ready it may go to the worker at once. A request
 * left waiting gets its wait_ms timer (none is made for one that does not wait).
 */
static void queue_request(struct slot *s, struct req *r)
{
	if (slot_queue_length(s) >= s->conf->max_queue) {
		req_end(s, r, E_BUSY, "the slot's queue is full");
		return;
	}
	hold(&s->queue, r);
	if (s->state == SS_READY)
		dispatch_next(s);
	/* r may have ended meanwhile (and be freed); if it still waits, it is the queue's last */
	if (TAILQ_LAST(&s->queue, req_list) == r)
		s->env->arm_req(s, r, r->wait_ms);
}

/*
 * An infer for a model the slot is not heading to: autoload it, or
 * not_loaded (also when it would not wait for the load: wait_ms 0).
 */
static bool wrong_model(struct slot *s, struct req *r)
{
	char msg[160];

	if (!r->model || r->model == heading(s))
		return false;
	if (may_autoload(s, r) && r->wait_ms > 0) {
		struct slot_ev load = { .type = SEV_LOAD, .model = r->model };
		slot_event(s, &load);
		return false;
	}
	snprintf(msg, sizeof msg, "model %s is not loaded in slot %s", r->model->name, s->conf->name);
	req_end(s, r, E_NOT_LOADED, msg);
	return true;
}

static void act_infer(struct slot *s, const struct slot_ev *ev)
{
	if (ev->req->gpu_try && s->env->device_busy(s)) {
		if (!s->env->forward(s, ev->req))
			req_end(s, ev->req, E_BUSY, "the device is busy (gpu = try)");
		return;
	}
	if (wrong_model(s, ev->req))
		return;
	queue_request(s, ev->req);
}

/* Not ready: wait in the queue up to wait_ms, or fail at once with wait_ms 0. */
static void act_infer_wait(struct slot *s, const struct slot_ev *ev)
{
	if (ev->req->wait_ms == 0) {
		act_refuse(s, ev);
		return;
	}
	act_infer(s, ev);
}

static void act_infer_empty(struct slot *s, const struct slot_ev *ev)
{
	if (!may_autoload(s, ev->req) || !ev->req->model || ev->req->wait_ms == 0) {
		act_not_loaded(s, ev);
		return;
	}
	act_infer(s, ev);
}

static void act_waited(struct slot *s, const struct slot_ev *ev)
{
	char msg[160];

	if (ev->req->list != &s->queue)
		return;
	snprintf(msg, sizeof msg, "waited %llu ms; slot %s is %s",
		 (unsigned long long)ev->req->wait_ms, s->conf->name, state_names[s->state]);
	req_end(s, ev->req, E_TIMEOUT, msg);
}

/* Whether a request in the queue waits for model m. */
static bool queued_for(const struct slot *s, const struct model *m)
{
	const struct req *q;

	TAILQ_FOREACH(q, &s->queue, link)
		if (q->model == m)
			return true;
	return false;
}

/*
 * The last requester of a load cancelled it: nobody wants the model, unless
 * an inference waits for it. A load under way or being retried is given up
 * as by an unload; a load that waits for the old worker to go is dropped,
 * and the slot ends empty.
 */
static void abandon_load(struct slot *s)
{
	const struct model *m = s->next ? s->next : s->model;

	if (!TAILQ_EMPTY(&s->load_waiters) || queued_for(s, m))
		return;
	if (s->state == SS_LOADING || s->state == SS_WARMING || s->state == SS_RECONNECTING ||
	    s->state == SS_UNAVAILABLE) {
		begin_unload(s, NULL, false, false);
	} else if (s->next) {
		job_note(s, &s->load_job, "load", s->next, "failed", "cancelled");
		s->next = NULL;
	}
}

/*
 * A running inference is asked to stop; the worker answers it with what it
 * made, finish_reason cancelled. Anything else cancelled ends at once, and
 * a load that no one waits for any more is abandoned.
 */
static void act_cancel(struct slot *s, const struct slot_ev *ev)
{
	struct req *r = ev->req;
	bool load_waiter = r->list == &s->load_waiters;
	struct slot_running *e = running_req(s, r);

	if (e && r->op == OP_INFER) {
		s->env->cancel_infer(s, r->seq);
		return;
	}
	if (e)
		cancel_running(s, e, "cancelled");
	else
		req_end(s, r, E_CANCELLED, "cancelled");
	if (load_waiter)
		abandon_load(s);
}

static void act_shutdown(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->shutting_down = true;
	s->env->arm(s, 0);
	drop_device(s);
	end_load_waiters(s, E_SHUTTING_DOWN, "modeld is shutting down");
	end_inference(s, E_SHUTTING_DOWN, "modeld is shutting down");
	s->next = NULL;
	if (s->has_worker) {
		s->env->stop(s, false);
		enter(s, SS_UNLOADING);
	}
}

static void act_progress(struct slot *s, const struct slot_ev *ev)
{
	s->bytes = ev->a;
	s->total = ev->b;
	s->env->progress(s);
}

static void act_loaded(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->load_ms = now(s) - s->load_started_ms;
	s->bytes = s->total;
	s->warmup_ms = 0;
	if (s->model->warmup == 0) {
		enter_ready(s);
		return;
	}
	s->env->arm(s, s->model->load_timeout_ms);
	set_state(s, SS_WARMING);
}

static void act_warmed(struct slot *s, const struct slot_ev *ev)
{
	s->warmup_ms = ev->a;
	enter_ready(s);
}

/* The next retry waits twice as long, up to restart_backoff_max. */
static void back_off(struct slot *s)
{
	uint64_t max = s->conf->restart_backoff_max_ms;
	s->backoff_ms = s->backoff_ms * 2 < max ? s->backoff_ms * 2 : max;
}

static void act_failed(struct slot *s, const struct slot_ev *ev)
{
	char msg[SLOT_MESSAGE_LEN];

	snprintf(msg, sizeof msg, "%s: %s", model_name(s->model), ev->message ? ev->message : "failed");
	s->env->stop(s, true);
	if (!ev->unavailable) {
		enter_error(s, ev->code == E_NONE ? E_LOAD_FAILED : ev->code, msg);
		return;
	}
	snprintf(s->message, sizeof s->message, "%s", ev->message ? ev->message : "device unusable");
	/* the requesters and the job end here; the retries are the slot's own */
	end_load_waiters(s, E_SERVICE_UNAVAILABLE, msg);
	job_note(s, &s->load_job, "load", s->model, "failed", msg);
	s->env->arm(s, s->backoff_ms);
	s->retry_at_ms = now(s) + s->backoff_ms;
	back_off(s);
	set_state(s, SS_UNAVAILABLE);
}

/* The load's requesters hear of it now; the worker's death is a failed load like any other. */
static void act_load_timeout(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	char msg[SLOT_MESSAGE_LEN];

	snprintf(msg, sizeof msg, "%s: %s timed out after %.1f s", model_name(s->model),
		 s->state == SS_WARMING ? "warmup" : "load", (double)s->model->load_timeout_ms / 1000);
	end_load_waiters(s, E_TIMEOUT, msg);
	s->env->kill(s, msg);
}

static void act_retry(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->next = s->model;
	start_load(s);
}

static void act_retry_device(struct slot *s, const struct slot_ev *ev)
{
	if (s->has_worker) {	/* the failed worker is not reaped yet */
		s->env->arm(s, s->backoff_ms);
		return;
	}
	s->attempt++;
	s->retry_at_ms = now(s);
	set_state(s, SS_RECONNECTING);
	act_retry(s, ev);
}

/* switching_model's timer: the debounce window closed, or the drain ran out. */
static void act_switch_deadline(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	if (s->debouncing) {
		s->debouncing = false;
		proceed_switch(s);
		return;
	}
	log_warn("slot %s: streams still running after drain_timeout; cancelling them", s->conf->name);
	cancel_all_running(s, "drain_timeout ran out during a switch");
	continue_switch(s);
}

/* No word from the worker on its request for stall_timeout: it is hung, and killed (its request gets worker_crashed). */
static void check_stall(struct slot *s, uint64_t t)
{
	char msg[SLOT_MESSAGE_LEN];
	uint64_t due = s->progress_ms + s->conf->stall_timeout_ms;

	if (s->conf->stall_timeout_ms == 0)
		return;
	if (t < due) {
		s->env->arm(s, due - t);	/* re-armed lazily: tokens do not touch the timer */
		return;
	}
	snprintf(msg, sizeof msg, "no token for %.1f s", (double)s->conf->stall_timeout_ms / 1000);
	kill_worker(s, msg);
}

/* ready's timer: a stalled request, or idle_timeout without requests (or keep-alive) unloads the model. */
static void act_idle(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	uint64_t t = now(s);

	if (s->nrunning) {
		check_stall(s, t);
		return;
	}
	if (!TAILQ_EMPTY(&s->queue))
		return;
	if (t < s->keep_until_ms) {
		s->env->arm(s, s->keep_until_ms - t);
		return;
	}
	log_info("slot %s: %s idle; unloading it", s->conf->name, model_name(s->model));
	begin_unload(s, NULL, false, true);
}

/*
 * What a worker says of a request must be about the one it was given, and
 * an inference's tokens no more than it asked for; else the worker is
 * broken, and killed. Returns whether the message may be used.
 */
/* The first token of o that the model does not have, or -1. */
static long long outside_vocab(const struct slot *s, const struct work_out *o)
{
	for (uint32_t i = 0; s->vocab && i < o->ntokens; i++)
		if (o->tokens[i] >= s->vocab)
			return o->tokens[i];
	return -1;
}

static bool worker_kept_to(struct slot *s, const struct slot_ev *ev)
{
	char msg[SLOT_MESSAGE_LEN];
	struct slot_running *e = running_of(s, ev->a);
	struct req *r = e ? e->req : NULL;
	long long stranger;

	if (!e) {
		snprintf(msg, sizeof msg, "it broke the worker protocol: it answered request %llu, "
			 "which it was not given", (unsigned long long)ev->a);
	} else if (r && r->op == OP_INFER && ev->out &&
		   (uint64_t)r->ntokens + ev->out->ntokens > r->gen.max_tokens) {
		snprintf(msg, sizeof msg, "it broke the worker protocol: %u tokens for a request of %u",
			 r->ntokens + ev->out->ntokens, r->gen.max_tokens);
	} else if (ev->out && (stranger = outside_vocab(s, ev->out)) >= 0) {
		snprintf(msg, sizeof msg, "it broke the worker protocol: token %lld is outside the model's "
			 "vocabulary of %u", stranger, s->vocab);
	} else {
		s->progress_ms = now(s);
		return true;
	}
	kill_worker(s, msg);
	return false;
}

static void act_tokens(struct slot *s, const struct slot_ev *ev)
{
	if (!worker_kept_to(s, ev))
		return;
	struct req *r = running_of(s, ev->a)->req;
	if (!r)
		return;		/* cancelled meanwhile */
	req_add_output(r, ev->out, now(s));
	if (r->gen.stream)
		s->env->chunk(s, r, ev->out);
}

/* The worker finished a request: whatever the state, it has room for one more. */
static void act_infer_end(struct slot *s, const struct slot_ev *ev)
{
	if (!worker_kept_to(s, ev))
		return;
	struct slot_running *e = running_of(s, ev->a);
	struct req *r = e->req;
	running_gone(s, e);
	if (s->nrunning == 0)
		drop_device(s);
	if (!r)
		return;		/* cancelled meanwhile */
	if (s->keep_until_ms < now(s) + r->keep_alive_ms)
		s->keep_until_ms = now(s) + r->keep_alive_ms;
	if (ev->type == SEV_INFER_DONE) {
		req_add_output(r, ev->out, now(s));
		/* text held back until the end (a split character, a possible stop) is streamed too */
		if (r->gen.stream && ev->out && (ev->out->ntokens || ev->out->ntext))
			s->env->chunk(s, r, ev->out);
		req_end(s, r, E_NONE, NULL);
	} else {
		req_end(s, r, ev->code, ev->message);
	}
}

static void act_infer_end_ready(struct slot *s, const struct slot_ev *ev)
{
	act_infer_end(s, ev);
	dispatch_next(s);
	settle_idle(s);
}

/* A drain: the switch goes on once the last stream has ended. */
static void act_infer_end_switching(struct slot *s, const struct slot_ev *ev)
{
	act_infer_end(s, ev);
	if (!s->nrunning && !s->debouncing)
		continue_switch(s);
}

/* The worker is gone: whatever ran on it ends. */
static void worker_gone(struct slot *s, const char *how)
{
	s->has_worker = false;
	s->pid = 0;
	drop_device(s);
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req)
			req_end(s, s->running[i].req, E_WORKER_CRASHED, how);
	s->nrunning = 0;
}

static void act_exited(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
}

/* In error, a reaped worker may make way for the fallback model. */
static void act_exited_error(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	if (s->next)
		start_load(s);
}

/* A worker that died while its streams drained: the switch goes on. */
static void act_exited_switching(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	if (!s->debouncing)
		continue_switch(s);
}

/* The old worker is reaped: the unload is done, and the next model may start. */
static void act_exited_unloading(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	if (s->next) {
		unload_done_then_load(s);
	} else {
		enter_empty(s);
	}
}

static void act_exited_restarting(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	s->next = s->model;
	start_load(s);
}

/* Drops deaths older than the window and records this one. */
static void tally_death(struct slot *s, uint64_t t)
{
	unsigned kept = 0;
	for (unsigned i = 0; i < s->ndeaths; i++)
		if (t - s->deaths[i] < s->conf->restart_window_ms)
			s->deaths[kept++] = s->deaths[i];
	s->ndeaths = kept;
	if (s->ndeaths < SLOT_MAX_DEATHS)
		s->deaths[s->ndeaths++] = t;
}

/*
 * An unexpected exit: back off and retry, or give up after restart_limit
 * deaths within restart_window, or as many loads in a row that never
 * reached ready however slowly they failed.
 */
static void act_crashed(struct slot *s, const struct slot_ev *ev)
{
	uint64_t t = now(s);
	char msg[SLOT_MESSAGE_LEN];

	if (s->state != SS_READY)
		s->failed_loads++;
	log_warn("slot %s: worker for %s %s", s->conf->name, model_name(s->model), ev->message);
	s->deaths_by[ev->death]++;
	worker_gone(s, ev->message);
	s->env->arm(s, 0);
	if (s->state == SS_READY && t - s->since_ms >= s->conf->restart_window_ms) {
		s->ndeaths = 0;		/* it stayed up for the window: a fresh start */
		s->backoff_ms = s->conf->restart_backoff_min_ms;
	}
	tally_death(s, t);
	if (s->failed_loads >= s->conf->restart_limit) {
		snprintf(msg, sizeof msg, "%u loads in a row failed; last: worker %s", s->failed_loads,
			 ev->message);
		enter_error(s, E_WORKER_CRASHED, msg);
		return;
	}
	if (s->ndeaths >= s->conf->restart_limit) {
		snprintf(msg, sizeof msg, "worker died %u times within %.1f s; last: %s", s->ndeaths,
			 (double)s->conf->restart_window_ms / 1000, ev->message);
		enter_error(s, E_WORKER_CRASHED, msg);
		return;
	}
	s->attempt++;
	s->restarts++;
	s->next = NULL;
	s->retry_at_ms = t + s->backoff_ms;
	s->env->arm(s, s->backoff_ms);
	back_off(s);
	snprintf(s->message, sizeof s->message, "worker %s", ev->message);
	set_state(s, SS_RECONNECTING);
}

/* The device is ours: the load or the inference that waited for it goes on. */
static void act_locked_loading(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->locked = true;
	s->lock_wait = LOCK_NONE;
	spawn_worker(s);
}

static void act_locked_ready(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->locked = true;
	s->lock_wait = LOCK_NONE;
	dispatch_next(s);
	if (!s->nrunning) {		/* what waited for it is gone */
		drop_device(s);
		settle_idle(s);
	}
}

/* A grant that nothing waits for any more (the state moved on). */
static void act_locked_unwanted(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->locked = true;
	s->lock_wait = LOCK_NONE;
	drop_device(s);
}

/* --- the table --- */

/*
 * A reload took model m out of the configuration: requests for it end
 * (unknown_model), and a slot that holds it or heads to it unloads, letting
 * running inferences finish as an unload does. A slot already unloading it
 * for another model goes on.
 */
static void act_retire(struct slot *s, const struct slot_ev *ev)
{
	const struct model *m = ev->model;
	bool leaving = (s->state == SS_UNLOADING || s->state == SS_SWITCHING) && s->next != m;
	struct req *r, *next;
	char msg[160];

	snprintf(msg, sizeof msg, "model %s was removed from the configuration", m->name);
	for (r = TAILQ_FIRST(&s->queue); r; r = next) {
		next = TAILQ_NEXT(r, link);
		if (r->model == m)
			req_end(s, r, E_UNKNOWN_MODEL, msg);
	}
	if (s->fallback == m)
		s->fallback = NULL;
	if (!slot_holds(s, m) || leaving || s->state == SS_INITIALIZING)
		return;
	if ((s->next ? s->next : s->model) == m)	/* the load its waiters wait for is m's */
		end_load_waiters(s, E_UNKNOWN_MODEL, msg);
	begin_unload(s, NULL, false, false);
}

static const slot_action fallback[SEV__COUNT] = {
	[SEV_START] = act_ignore,
	[SEV_LOAD] = act_refuse,
	[SEV_UNLOAD] = act_refuse,
	[SEV_RESTART] = act_refuse,
	[SEV_INFER] = act_infer_wait,
	[SEV_CANCEL] = act_cancel,
	[SEV_SHUTDOWN] = act_shutdown,
	[SEV_PROGRESS] = act_ignore,	/* from a worker already being stopped */
	[SEV_LOADED] = act_ignore,
	[SEV_WARMED] = act_ignore,
	[SEV_FAILED] = act_ignore,
	[SEV_TOKENS] = act_tokens,
	[SEV_INFER_DONE] = act_infer_end,
	[SEV_INFER_FAILED] = act_infer_end,
	[SEV_EXITED] = act_exited,
	[SEV_DEADLINE] = act_ignore,
	[SEV_WAITED] = act_waited,
	[SEV_LOCKED] = act_locked_unwanted,
	[SEV_RETIRE] = act_retire,
};

static const slot_action actions[SS__COUNT][SEV__COUNT] = {
	[SS_INITIALIZING] = {
		[SEV_START] = act_start,
	},
	[SS_EMPTY] = {
		[SEV_LOAD] = act_load,
		[SEV_UNLOAD] = act_reply_now,
		[SEV_RESTART] = act_not_loaded,
		[SEV_INFER] = act_infer_empty,
	},
	[SS_SWITCHING] = {
		[SEV_LOAD] = act_load_retarget,
		[SEV_UNLOAD] = act_unload,
		[SEV_INFER_DONE] = act_infer_end_switching,
		[SEV_INFER_FAILED] = act_infer_end_switching,
		[SEV_EXITED] = act_exited_switching,
		[SEV_DEADLINE] = act_switch_deadline,
	},
	[SS_UNLOADING] = {
		[SEV_LOAD] = act_load_retarget,
		[SEV_UNLOAD] = act_unload,
		[SEV_EXITED] = act_exited_unloading,
	},
	[SS_LOADING] = {
		[SEV_LOAD] = act_load_while_loading,
		[SEV_UNLOAD] = act_unload,
		[SEV_RESTART] = act_restart,
		[SEV_PROGRESS] = act_progress,
		[SEV_LOADED] = act_loaded,
		[SEV_FAILED] = act_failed,
		[SEV_EXITED] = act_crashed,
		[SEV_DEADLINE] = act_load_timeout,
		[SEV_LOCKED] = act_locked_loading,
	},
	[SS_WARMING] = {
		[SEV_LOAD] = act_load_while_loading,
		[SEV_UNLOAD] = act_unload,
		[SEV_RESTART] = act_restart,
		[SEV_WARMED] = act_warmed,
		[SEV_FAILED] = act_failed,
		[SEV_EXITED] = act_crashed,
		[SEV_DEADLINE] = act_load_timeout,
	},
	[SS_READY] = {
		[SEV_LOAD] = act_load_ready,
		[SEV_UNLOAD] = act_unload,
		[SEV_RESTART] = act_restart,
		[SEV_INFER] = act_infer,
		[SEV_INFER_DONE] = act_infer_end_ready,
		[SEV_INFER_FAILED] = act_infer_end_ready,
		[SEV_EXITED] = act_crashed,
		[SEV_DEADLINE] = act_idle,
		[SEV_LOCKED] = act_locked_ready,
	},
	[SS_ERROR] = {
		[SEV_LOAD] = act_load,
		[SEV_UNLOAD] = act_unload,
		[SEV_RESTART] = act_restart,
		[SEV_EXITED] = act_exited_error,
	},
	[SS_RECONNECTING] = {
		[SEV_LOAD] = act_load_while_retrying,
		[SEV_UNLOAD] = act_unload,
		[SEV_RESTART] = act_restart,
		[SEV_DEADLINE] = act_retry,
	},
	[SS_UNAVAILABLE] = {
		[SEV_LOAD] = act_load_while_retrying,
		[SEV_UNLOAD] = act_unload,
		[SEV_RESTART] = act_restart,
		[SEV_DEADLINE] = act_retry_device,
	},
	[SS_RESTARTING] = {
		[SEV_LOAD] = act_load_retarget,
		[SEV_UNLOAD] = act_unload,
		[SEV_EXITED] = act_exited_restarting,
	},
};

static void run_action(struct slot *s, const struct slot_ev *ev)
{
	slot_action act = actions[s->state][ev->type];

	if (act == NULL)
		act = fallback[ev->type];
	/* Once shutting down, only the workers' ends matter. */
	if (s->shutting_down && ev->req && ev->type != SEV_CANCEL) {
		req_end(s, ev->req, E_SHUTTING_DOWN, "modeld is shutting down");
		return;
	}
	act(s, ev);
}

/*
 * An event that an action raises (an inference that autoloads its model)
 * waits until that action is done: actions never run inside each other.
 */
void slot_event(struct slot *s, const struct slot_ev *ev)
{
	if (s->in_action) {
		assert(s->npending < SLOT_MAX_PENDING);
		s->pending[s->npending++] = *ev;
		return;
	}
	s->in_action = true;
	run_action(s, ev);
	for (unsigned i = 0; i < s->npending; i++)	/* one may raise more */
		run_action(s, &s->pending[i]);
	s->npending = 0;
	s->in_action = false;
}

void slot_init(struct slot *s, const struct slot_conf *conf, const struct model *fallback,
	       const struct slot_env *env)
{
	memset(s, 0, sizeof *s);
	s->conf = conf;
	s->fallback = fallback;
	s->env = env;
	s->state = SS_INITIALIZING;
	s->since_ms = env->now_ms(env->arg);
	s->backoff_ms = conf->restart_backoff_min_ms;
	TAILQ_INIT(&s->load_waiters);
	TAILQ_INIT(&s->unload_waiters);
	TAILQ_INIT(&s->queue);
}

const char *slot_death_name(enum worker_death d)
{
	static const char *const names[WD__COUNT] = { "exit", "signal", "killed", "protocol" };
	return d >= 0 && d < WD__COUNT ? names[d] : "unknown";
}

unsigned slot_queue_length(const struct slot *s)
{
	unsigned n = 0;
	const struct req *r;
	TAILQ_FOREACH(r, &s->queue, link)
		n++;
	return n;
}

bool slot_holds(const struct slot *s, const struct model *m)
{
	return m && (s->model == m || s->next == m) && s->state != SS_EMPTY;
}

static void write_model(struct msgw *w, const char *key, const struct model *m)
{
	msgw_kstr(w, key, m ? m->name : NULL);
}

const struct model *slot_shown_model(const struct slot *s)
{
	switch (s->state) {
	case SS_SWITCHING:
		return s->from;
	case SS_ERROR:
	case SS_EMPTY:
	case SS_INITIALIZING:
		return NULL;
	default:
		return s->model;
	}
}

void slot_write_details(const struct slot *s, struct msgw *w)
{
	uint64_t t = s->env->now_ms(s->env->arg);

	msgw_kstr(w, "state", state_names[s->state]);
	write_model(w, "model", slot_shown_model(s));
	switch (s->state) {
	case SS_SWITCHING:
		write_model(w, "from", s->from);
		write_model(w, "to", s->next);
		break;
	case SS_UNLOADING:
		write_model(w, "next", s->next);
		break;
	case SS_LOADING:
		msgw_key(w, "progress");
		msgw_map(w);
		msgw_ku64(w, "bytes", s->bytes);
		msgw_ku64(w, "total", s->total);
		msgw_end(w);
		break;
	case SS_ERROR:
		msgw_kstr(w, "message", s->message);
		write_model(w, "last_model", s->model);
		break;
	case SS_RECONNECTING:
		msgw_ku64(w, "attempt", s->attempt);
		msgw_ku64(w, "retry_in_ms", s->retry_at_ms > t ? s->retry_at_ms - t : 0);
		msgw_kstr(w, "message", s->message);	/* how the worker died */
		break;
	case SS_UNAVAILABLE:
		msgw_kstr(w, "message", s->message);
		msgw_ku64(w, "attempt", s->attempt);		/* tries so far; the next comes in retry_in_ms */
		msgw_ku64(w, "retry_in_ms", s->retry_at_ms > t ? s->retry_at_ms - t : 0);
		break;
	case SS_READY:
		msgw_ku64(w, "load_ms", s->load_ms);
		msgw_ku64(w, "warmup_ms", s->warmup_ms);
		break;
	default:	/* empty, initializing, warming_up, service_restarting: the model alone */
		break;
	}
}
