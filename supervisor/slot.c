/*
 * slot.c: the slot state machine. See slot.h and docs/architecture.md.
 *
 * actions[state][event] names the action for an event in a state; where it
 * is empty, fallback[event] applies in every state. Actions are small, made
 * of the steps of step.c. Every request a slot holds ends in exactly one
 * step_req_end(), which is the one way out to the client.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/log.h"
#include "slot.h"
#include "step.h"

typedef void (*slot_action)(struct slot *s, const struct slot_ev *ev);


const char *slot_state_name(enum slot_state st)
{
	return step_state_name(st);
}

/* --- actions --- */

static void act_ignore(struct slot *s, const struct slot_ev *ev)
{
	log_debug("slot %s: event %d ignored in %s", s->conf->name, ev->type, step_state_name(s->state));
}

static void act_refuse(struct slot *s, const struct slot_ev *ev)
{
	char msg[96];
	snprintf(msg, sizeof msg, "slot %s is %s", s->conf->name, step_state_name(s->state));
	step_req_end(s, ev->req, E_NOT_READY, msg);
}

static void act_not_loaded(struct slot *s, const struct slot_ev *ev)
{
	char msg[96];
	snprintf(msg, sizeof msg, "slot %s has no model loaded", s->conf->name);
	step_req_end(s, ev->req, E_NOT_LOADED, msg);
}

static void act_reply_now(struct slot *s, const struct slot_ev *ev)
{
	step_req_end(s, ev->req, E_NONE, NULL);
}

static void act_start(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model)
		step_begin_switch(s, ev->model, NULL);
	else
		step_set_state(s, SS_EMPTY);
}

static void act_load(struct slot *s, const struct slot_ev *ev)
{
	step_begin_switch(s, ev->model, ev->req);
}

static void act_load_ready(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model == s->model)
		step_req_end(s, ev->req, E_NONE, NULL);
	else
		step_begin_switch(s, ev->model, ev->req);
}

/* switching_model, unloading_model, service_restarting: the latest target wins. */
static void act_load_retarget(struct slot *s, const struct slot_ev *ev)
{
	if (s->state == SS_RESTARTING && ev->model == s->model) {
		step_wait_for_load(s, ev->req);	/* the restart reloads it */
		return;
	}
	if (ev->model != step_heading(s)) {
		step_end_load_waiters(s, E_SUPERSEDED, "a load of another model replaced this one");
		step_new_target(s, ev->model);
	}
	step_wait_for_load(s, ev->req);
	step_enter(s, s->state == SS_RESTARTING ? SS_UNLOADING : s->state);
}

/* loading_model, warming_up: join the same model, abort for another (latest wins). */
static void act_load_while_loading(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model == s->model) {
		step_wait_for_load(s, ev->req);
		return;
	}
	step_end_load_waiters(s, E_SUPERSEDED, "a load of another model replaced this one");
	s->env->arm(s, 0);
	step_new_target(s, ev->model);
	step_wait_for_load(s, ev->req);
	if (!s->has_worker) {		/* it was waiting for the device */
		step_drop_device(s);
		step_start_load(s);
		return;
	}
	s->env->stop(s, true);
	step_set_state(s, SS_UNLOADING);
}

/* reconnecting: the same model waits for the retry. */
static void act_load_while_retrying(struct slot *s, const struct slot_ev *ev)
{
	if (ev->model == s->model && s->state == SS_RECONNECTING)
		step_wait_for_load(s, ev->req);
	else
		step_begin_switch(s, ev->model, ev->req);
}

static void act_unload(struct slot *s, const struct slot_ev *ev)
{
	step_begin_unload(s, ev->req, ev->req && ev->req->force, false);
}

static void act_restart(struct slot *s, const struct slot_ev *ev)
{
	if (s->model == NULL) {
		act_not_loaded(s, ev);
		return;
	}
	s->env->arm(s, 0);
	step_cancel_all_running(s, "the slot is restarting");
	s->next = NULL;
	if (s->has_worker)
		s->env->stop(s, s->state != SS_READY);
	step_set_state(s, SS_RESTARTING);
	step_req_end(s, ev->req, E_NONE, NULL);
	if (!s->has_worker) {
		s->next = s->model;
		step_start_load(s);
	}
}

/*
 * Puts r in the queue; in ready it may go to the worker at once. A request
 * left waiting gets its wait_ms timer (none is made for one that does not wait).
 */
static void queue_request(struct slot *s, struct req *r)
{
	if (slot_queue_length(s) >= s->conf->max_queue) {
		step_req_end(s, r, E_BUSY, "the slot's queue is full");
		return;
	}
	step_hold(&s->queue, r);
	if (s->state == SS_READY)
		step_dispatch_next(s);
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

	if (!r->model || r->model == step_heading(s))
		return false;
	if (step_may_autoload(s, r) && r->wait_ms > 0) {
		struct slot_ev load = { .type = SEV_LOAD, .model = r->model };
		slot_event(s, &load);
		return false;
	}
	snprintf(msg, sizeof msg, "model %s is not loaded in slot %s", r->model->name, s->conf->name);
	step_req_end(s, r, E_NOT_LOADED, msg);
	return true;
}

static void act_infer(struct slot *s, const struct slot_ev *ev)
{
	if (ev->req->gpu_try && s->env->device_busy(s)) {
		if (!s->env->forward(s, ev->req))
			step_req_end(s, ev->req, E_BUSY, "the device is busy (gpu = try)");
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
	if (!step_may_autoload(s, ev->req) || !ev->req->model || ev->req->wait_ms == 0) {
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
		 (unsigned long long)ev->req->wait_ms, s->conf->name, step_state_name(s->state));
	step_req_end(s, ev->req, E_TIMEOUT, msg);
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
		step_begin_unload(s, NULL, false, false);
	} else if (s->next) {
		step_job_note(s, &s->load_job, "load", s->next, "failed", "cancelled");
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
	struct slot_running *e = step_running_req(s, r);

	if (e && r->op == OP_INFER) {
		s->env->cancel_infer(s, r->seq);
		return;
	}
	if (e)
		step_cancel_running(s, e, "cancelled");
	else
		step_req_end(s, r, E_CANCELLED, "cancelled");
	if (load_waiter)
		abandon_load(s);
}

static void act_shutdown(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->shutting_down = true;
	s->env->arm(s, 0);
	step_drop_device(s);
	step_end_load_waiters(s, E_SHUTTING_DOWN, "modeld is shutting down");
	step_end_inference(s, E_SHUTTING_DOWN, "modeld is shutting down");
	s->next = NULL;
	if (s->has_worker) {
		s->env->stop(s, false);
		step_enter(s, SS_UNLOADING);
	}
}

static void act_progress(struct slot *s, const struct slot_ev *ev)
{
	s->bytes = ev->bytes;
	s->total = ev->total;
	s->env->progress(s);
}

static void act_loaded(struct slot *s, const struct slot_ev *ev)
{
	s->vocab = ev->vocab;
	s->parallel = ev->parallel;
	s->mem_bytes = ev->mem_bytes;
	s->load_ms = step_now(s) - s->load_started_ms;
	s->bytes = s->total;
	s->warmup_ms = 0;
	if (s->model->warmup == 0) {
		step_enter_ready(s);
		return;
	}
	s->env->arm(s, s->model->load_timeout_ms);
	step_set_state(s, SS_WARMING);
}

static void act_warmed(struct slot *s, const struct slot_ev *ev)
{
	s->warmup_ms = ev->warmup_ms;
	step_enter_ready(s);
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

	snprintf(msg, sizeof msg, "%s: %s", step_model_name(s->model), ev->message ? ev->message : "failed");
	s->env->stop(s, true);
	if (!ev->unavailable) {
		step_enter_error(s, ev->code == E_NONE ? E_LOAD_FAILED : ev->code, msg);
		return;
	}
	snprintf(s->message, sizeof s->message, "%s", ev->message ? ev->message : "device unusable");
	/* the requesters and the job end here; the retries are the slot's own */
	step_end_load_waiters(s, E_SERVICE_UNAVAILABLE, msg);
	step_job_note(s, &s->load_job, "load", s->model, "failed", msg);
	s->env->arm(s, s->backoff_ms);
	s->retry_at_ms = step_now(s) + s->backoff_ms;
	back_off(s);
	step_set_state(s, SS_UNAVAILABLE);
}

/* The load's requesters hear of it now; the worker's death is a failed load like any other. */
static void act_load_timeout(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	char msg[SLOT_MESSAGE_LEN];

	snprintf(msg, sizeof msg, "%s: %s timed out after %.1f s", step_model_name(s->model),
		 s->state == SS_WARMING ? "warmup" : "load", (double)s->model->load_timeout_ms / 1000);
	step_end_load_waiters(s, E_TIMEOUT, msg);
	s->env->kill(s, msg);
}

static void act_retry(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->next = s->model;
	step_start_load(s);
}

static void act_retry_device(struct slot *s, const struct slot_ev *ev)
{
	if (s->has_worker) {	/* the failed worker is not reaped yet */
		s->env->arm(s, s->backoff_ms);
		return;
	}
	s->attempt++;
	s->retry_at_ms = step_now(s);
	step_set_state(s, SS_RECONNECTING);
	act_retry(s, ev);
}

/* switching_model's timer: the debounce window closed, or the drain ran out. */
static void act_switch_deadline(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	if (s->debouncing) {
		s->debouncing = false;
		step_proceed_switch(s);
		return;
	}
	log_warn("slot %s: streams still running after drain_timeout; cancelling them", s->conf->name);
	step_cancel_all_running(s, "drain_timeout ran out during a switch");
	step_continue_switch(s);
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
	step_kill_worker(s, msg);
}

/* ready's timer: a stalled request, or idle_timeout without requests (or keep-alive) unloads the model. */
static void act_idle(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	uint64_t t = step_now(s);

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
	log_info("slot %s: %s idle; unloading it", s->conf->name, step_model_name(s->model));
	step_begin_unload(s, NULL, false, true);
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
	struct slot_running *e = step_running_of(s, ev->seq);
	struct req *r = e ? e->req : NULL;
	long long stranger;

	if (!e) {
		snprintf(msg, sizeof msg, "it broke the worker protocol: it answered request %llu, "
			 "which it was not given", (unsigned long long)ev->seq);
	} else if (r && r->op == OP_INFER && ev->out &&
		   (uint64_t)r->ntokens + ev->out->ntokens > r->gen.max_tokens) {
		snprintf(msg, sizeof msg, "it broke the worker protocol: %u tokens for a request of %u",
			 r->ntokens + ev->out->ntokens, r->gen.max_tokens);
	} else if (ev->out && (stranger = outside_vocab(s, ev->out)) >= 0) {
		snprintf(msg, sizeof msg, "it broke the worker protocol: token %lld is outside the model's "
			 "vocabulary of %u", stranger, s->vocab);
	} else {
		s->progress_ms = step_now(s);
		return true;
	}
	step_kill_worker(s, msg);
	return false;
}

static void act_tokens(struct slot *s, const struct slot_ev *ev)
{
	if (!worker_kept_to(s, ev))
		return;
	struct req *r = step_running_of(s, ev->seq)->req;
	if (!r)
		return;		/* cancelled meanwhile */
	req_add_output(r, ev->out, step_now(s));
	if (r->gen.stream)
		s->env->chunk(s, r, ev->out);
}

/* The worker finished a request: whatever the state, it has room for one more. */
static void act_infer_end(struct slot *s, const struct slot_ev *ev)
{
	if (!worker_kept_to(s, ev))
		return;
	struct slot_running *e = step_running_of(s, ev->seq);
	struct req *r = e->req;
	step_running_gone(s, e);
	if (s->nrunning == 0)
		step_drop_device(s);
	if (!r)
		return;		/* cancelled meanwhile */
	if (s->keep_until_ms < step_now(s) + r->keep_alive_ms)
		s->keep_until_ms = step_now(s) + r->keep_alive_ms;
	if (ev->type == SEV_INFER_DONE) {
		req_add_output(r, ev->out, step_now(s));
		/* text held back until the end (a split character, a possible stop) is streamed too */
		if (r->gen.stream && ev->out && (ev->out->ntokens || ev->out->ntext))
			s->env->chunk(s, r, ev->out);
		step_req_end(s, r, E_NONE, NULL);
	} else {
		step_req_end(s, r, ev->code, ev->message);
	}
}

static void act_infer_end_ready(struct slot *s, const struct slot_ev *ev)
{
	act_infer_end(s, ev);
	step_dispatch_next(s);
	step_settle_idle(s);
}

/* A drain: the switch goes on once the last stream has ended. */
static void act_infer_end_switching(struct slot *s, const struct slot_ev *ev)
{
	act_infer_end(s, ev);
	if (!s->nrunning && !s->debouncing)
		step_continue_switch(s);
}

/* The worker is gone: whatever ran on it ends. */
static void worker_gone(struct slot *s, const char *how)
{
	s->has_worker = false;
	s->pid = 0;
	step_drop_device(s);
	for (unsigned i = 0; i < s->nrunning; i++)
		if (s->running[i].req)
			step_req_end(s, s->running[i].req, E_WORKER_CRASHED, how);
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
		step_start_load(s);
}

/* A worker that died while its streams drained: the switch goes on. */
static void act_exited_switching(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	if (!s->debouncing)
		step_continue_switch(s);
}

/* The old worker is reaped: the unload is done, and the next model may start. */
static void act_exited_unloading(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	if (s->next) {
		step_unload_done_then_load(s);
	} else {
		step_enter_empty(s);
	}
}

static void act_exited_restarting(struct slot *s, const struct slot_ev *ev)
{
	worker_gone(s, ev->message);
	s->next = s->model;
	step_start_load(s);
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
	uint64_t t = step_now(s);
	char msg[SLOT_MESSAGE_LEN];

	if (s->state != SS_READY)
		s->failed_loads++;
	log_warn("slot %s: worker for %s %s", s->conf->name, step_model_name(s->model), ev->message);
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
		step_enter_error(s, E_WORKER_CRASHED, msg);
		return;
	}
	if (s->ndeaths >= s->conf->restart_limit) {
		snprintf(msg, sizeof msg, "worker died %u times within %.1f s; last: %s", s->ndeaths,
			 (double)s->conf->restart_window_ms / 1000, ev->message);
		step_enter_error(s, E_WORKER_CRASHED, msg);
		return;
	}
	s->attempt++;
	s->restarts++;
	s->next = NULL;
	s->retry_at_ms = t + s->backoff_ms;
	s->env->arm(s, s->backoff_ms);
	back_off(s);
	snprintf(s->message, sizeof s->message, "worker %s", ev->message);
	step_set_state(s, SS_RECONNECTING);
}

/* The device is ours: the load or the inference that waited for it goes on. */
static void act_locked_loading(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->locked = true;
	s->lock_wait = LOCK_NONE;
	step_spawn_worker(s);
}

static void act_locked_ready(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->locked = true;
	s->lock_wait = LOCK_NONE;
	step_dispatch_next(s);
	if (!s->nrunning) {		/* what waited for it is gone */
		step_drop_device(s);
		step_settle_idle(s);
	}
}

/* A grant that nothing waits for any more (the state moved on). */
static void act_locked_unwanted(struct slot *s, const struct slot_ev *ev)
{
	(void)ev;
	s->locked = true;
	s->lock_wait = LOCK_NONE;
	step_drop_device(s);
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
			step_req_end(s, r, E_UNKNOWN_MODEL, msg);
	}
	if (s->fallback == m)
		s->fallback = NULL;
	if (!slot_holds(s, m) || leaving || s->state == SS_INITIALIZING)
		return;
	if ((s->next ? s->next : s->model) == m)	/* the load its waiters wait for is m's */
		step_end_load_waiters(s, E_UNKNOWN_MODEL, msg);
	step_begin_unload(s, NULL, false, false);
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
		step_req_end(s, ev->req, E_SHUTTING_DOWN, "modeld is shutting down");
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

void slot_set_fallback(struct slot *s, const struct model *m)
{
	s->fallback = m;
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
