/*
 * The slot state machine, without processes: a recording slot_env stands in
 * for workers, timers and clients, and each test drives one lifecycle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../proto/log.h"
#include "../../supervisor/slot.h"

#define MAX_STATES 64

struct rec {
	uint64_t now;
	int spawns, stops, kills, infers, cancels, chunks;
	uint64_t armed;			/* last arm() value */
	uint64_t req_armed;		/* last arm_req() value */
	unsigned req_timers;		/* arm_req() calls that started a timer */
	int memory;			/* what check_memory answers */
	bool device_taken;		/* another slot holds the device */
	int unlocks;
	enum slot_state states[MAX_STATES];
	int nstates;
	enum err last_code;
	uint32_t last_ntokens;
	char last_finish[sizeof "cancelled"];
	int finished;
	bool spawn_fails;
};

static struct rec rec;

static uint64_t r_now(void *a) { (void)a; return rec.now; }
static int r_spawn(struct slot *s, char *err, size_t n)
{
	if (rec.spawn_fails) {
		snprintf(err, n, "cannot open");
		return -1;
	}
	rec.spawns++;
	s->pid = 1000 + rec.spawns;
	return 0;
}
static void r_stop(struct slot *s, bool kill) { (void)s; if (kill) rec.kills++; else rec.stops++; }
static void r_kill(struct slot *s, const char *why) { (void)s; (void)why; rec.kills++; }
static void r_send_infer(struct slot *s, struct req *r) { (void)s; (void)r; rec.infers++; }
static void r_cancel(struct slot *s, uint64_t seq) { (void)s; (void)seq; rec.cancels++; }
static void r_arm(struct slot *s, uint64_t ms) { (void)s; rec.armed = ms; }
static void r_arm_req(struct slot *s, struct req *r, uint64_t ms)
{
	(void)s; (void)r;
	rec.req_armed = ms;
	rec.req_timers += ms != 0;
}
static int r_check_memory(struct slot *s, const struct model *m, uint64_t freed, char *msg, size_t n)
{
	(void)s; (void)m; (void)freed;
	snprintf(msg, n, "short of memory");
	return rec.memory;
}
static void r_finish(struct slot *s, struct req *r, enum err code, const char *m)
{
	(void)s; (void)m;
	rec.last_code = code;
	rec.finished++;
	rec.last_ntokens = r->ntokens;
	memcpy(rec.last_finish, r->finish, sizeof rec.last_finish);
	req_clear(r);
	free(r);
}
static void r_chunk(struct slot *s, struct req *r, const struct work_out *o) { (void)s; (void)r; (void)o; rec.chunks++; }
static void r_state(const struct slot *s)
{
	if (rec.nstates < MAX_STATES)
		rec.states[rec.nstates++] = s->state;
}
static void r_progress(struct slot *s) { (void)s; }
static void r_job(const struct slot *s, uint64_t j, const char *op, const struct model *m, const char *st,
		  const char *msg) { (void)s; (void)j; (void)op; (void)m; (void)st; (void)msg; }
static uint64_t jobs;
static uint64_t r_new_job(void *a) { (void)a; return ++jobs; }

static bool r_lock(struct slot *s, const char *op) { (void)s; (void)op; return !rec.device_taken; }
static void r_unlock(struct slot *s) { (void)s; rec.unlocks++; }
static bool r_device_busy(struct slot *s) { (void)s; return rec.device_taken; }
static bool r_forward(struct slot *s, struct req *r) { (void)s; (void)r; return false; }

static const struct slot_env env = {
	.lock = r_lock, .unlock = r_unlock, .device_busy = r_device_busy, .forward = r_forward,
	.now_ms = r_now, .spawn = r_spawn, .stop = r_stop, .kill = r_kill, .send_infer = r_send_infer,
	.cancel_infer = r_cancel, .arm = r_arm, .arm_req = r_arm_req, .check_memory = r_check_memory, .finish = r_finish, .chunk = r_chunk,
	.publish = r_state, .progress = r_progress, .job = r_job, .new_job = r_new_job,
};

static struct slot_conf conf = {
	.name = "s", .device = "cpu", .stop_timeout_ms = 10000, .restart_backoff_min_ms = 100,
	.restart_backoff_max_ms = 400, .restart_limit = 3, .restart_window_ms = 60000,
	.heartbeat_interval_ms = 1000, .heartbeat_timeout_ms = 5000, .max_queue = 4,
	.drain_timeout_ms = 30000,
};
static struct model ma = { .name = "a", .path = "a", .warmup = 1, .load_timeout_ms = 5000 };
static struct model mb = { .name = "b", .path = "b", .warmup = 0, .load_timeout_ms = 5000 };

static struct slot s;

static int setup(void **state)
{
	(void)state;
	memset(&rec, 0, sizeof rec);
	conf.switch_debounce_ms = conf.idle_timeout_ms = 0;
	conf.autoload = AUTOLOAD_NO;
	slot_init(&s, &conf, NULL, &env);
	struct slot_ev ev = { .type = SEV_START };
	slot_event(&s, &ev);
	return 0;
}

/* An event of type t; a warmed one took warmup_ms. */
static void feed(enum slot_event t, uint64_t warmup_ms)
{
	struct slot_ev ev = { .type = t, .warmup_ms = warmup_ms, .message = "exited with status 1" };
	slot_event(&s, &ev);
}

/* The worker says it has loaded, and takes parallel inferences at once. */
static void loaded(unsigned parallel)
{
	struct slot_ev ev = { .type = SEV_LOADED, .parallel = parallel };
	slot_event(&s, &ev);
}

static struct req *new_req(enum op op, const struct model *m)
{
	static uint64_t seq;
	struct req *r = calloc(1, sizeof *r);
	r->op = op;
	r->model = m;
	r->wait = true;
	r->gen.max_tokens = 16;
	r->seq = ++seq;
	r->slot = &s;
	return r;
}

static struct req *request(enum slot_event t, enum op op, const struct model *m)
{
	struct req *r = new_req(op, m);
	struct slot_ev ev = { .type = t, .req = r, .model = m };
	slot_event(&s, &ev);
	return r;
}

/* Loads m into the empty slot and takes it to ready. */
static void load_ready(const struct model *m)
{
	request(SEV_LOAD, OP_LOAD, m);
	loaded(1);
	if (m->warmup)
		feed(SEV_WARMED, 3);
	assert_int_equal(s.state, SS_READY);
}

static void test_starts_empty(void **state)
{
	(void)state;
	assert_int_equal(s.state, SS_EMPTY);
	assert_int_equal(rec.nstates, 1);
}

static void test_load_goes_through_states_in_order(void **state)
{
	(void)state;
	rec.nstates = 0;
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(rec.spawns, 1);
	assert_int_equal(rec.armed, ma.load_timeout_ms);
	assert_int_equal(rec.finished, 0);
	loaded(1);
	assert_int_equal(s.state, SS_WARMING);
	feed(SEV_WARMED, 3);
	enum slot_state want[] = { SS_SWITCHING, SS_LOADING, SS_WARMING, SS_READY };
	assert_int_equal(rec.nstates, 4);
	assert_memory_equal(rec.states, want, sizeof want);
	assert_int_equal(rec.finished, 1);
	assert_int_equal(rec.last_code, E_NONE);
	assert_int_equal(s.warmup_ms, 3);
}

static void test_switch_waits_for_the_old_worker(void **state)
{
	(void)state;
	load_ready(&ma);
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(s.state, SS_UNLOADING);
	assert_int_equal(rec.stops, 1);
	assert_int_equal(rec.spawns, 1);	/* no new worker before the old one is reaped */
	feed(SEV_EXITED, 0);
	assert_int_equal(rec.spawns, 2);
	assert_int_equal(s.state, SS_LOADING);
	assert_ptr_equal(s.model, &mb);
	loaded(1);
	assert_int_equal(s.state, SS_READY);	/* b has no warmup */
}

static void test_same_model_load_joins(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(rec.spawns, 1);
	loaded(1);
	feed(SEV_WARMED, 1);
	assert_int_equal(rec.finished, 2);
	assert_int_equal(rec.last_code, E_NONE);
}

static void test_load_of_another_model_supersedes(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(rec.finished, 1);
	assert_int_equal(rec.last_code, E_SUPERSEDED);
	assert_int_equal(rec.kills, 1);
	assert_int_equal(s.state, SS_UNLOADING);
	feed(SEV_EXITED, 0);
	assert_ptr_equal(s.model, &mb);
	assert_int_equal(s.state, SS_LOADING);
}

static void test_unload_during_load_cancels(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	request(SEV_UNLOAD, OP_UNLOAD, NULL);
	assert_int_equal(rec.last_code, E_CANCELLED);
	assert_int_equal(rec.kills, 1);
	feed(SEV_EXITED, 0);
	assert_int_equal(s.state, SS_EMPTY);
	assert_int_equal(rec.finished, 2);
	assert_int_equal(rec.last_code, E_NONE);
}

static void test_load_failure_is_error(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	struct slot_ev ev = { .type = SEV_FAILED, .code = E_LOAD_FAILED, .message = "bad magic" };
	slot_event(&s, &ev);
	assert_int_equal(s.state, SS_ERROR);
	assert_int_equal(rec.last_code, E_LOAD_FAILED);
	assert_non_null(strstr(s.message, "bad magic"));
	feed(SEV_EXITED, 0);
	assert_int_equal(s.state, SS_ERROR);
	load_ready(&mb);
}

static void test_load_timeouts_count_toward_the_restart_limit(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	for (unsigned i = 0; i < conf.restart_limit; i++) {
		assert_int_equal(s.state, SS_LOADING);
		int finished = rec.finished;
		feed(SEV_DEADLINE, 0);
		assert_int_equal(rec.kills, (int)i + 1);
		/* the requester hears of the first timeout, and only of it */
		assert_int_equal(rec.finished, finished + (i == 0));
		if (i == 0)
			assert_int_equal(rec.last_code, E_TIMEOUT);
		rec.now += conf.restart_window_ms;	/* slow deaths: the window alone never trips */
		feed(SEV_EXITED, 0);
		if (s.state == SS_RECONNECTING)
			feed(SEV_DEADLINE, 0);
	}
	assert_int_equal(s.state, SS_ERROR);
	assert_non_null(strstr(s.message, "3 loads in a row failed"));
}

static void test_crash_reconnects_with_backoff(void **state)
{
	(void)state;
	load_ready(&ma);
	rec.now = 1000;
	feed(SEV_EXITED, 0);
	assert_int_equal(s.state, SS_RECONNECTING);
	assert_int_equal(rec.armed, 100);
	assert_int_equal(s.attempt, 1);
	feed(SEV_DEADLINE, 0);
	assert_int_equal(s.state, SS_LOADING);
	assert_int_equal(rec.spawns, 2);
	slot_event(&s, &(struct slot_ev){ .type = SEV_EXITED, .death = WD_KILLED });	/* dies while loading */
	assert_int_equal(s.state, SS_RECONNECTING);
	assert_int_equal(rec.armed, 200);	/* doubled */
	/* what /metrics shows: each death by how it came, and the restarts */
	assert_int_equal(s.deaths_by[WD_EXIT], 1);
	assert_int_equal(s.deaths_by[WD_KILLED], 1);
	assert_int_equal(s.deaths_by[WD_SIGNAL], 0);
	assert_int_equal(s.restarts, 2);
}

static void test_too_many_deaths_is_error(void **state)
{
	(void)state;
	load_ready(&ma);
	for (unsigned i = 0; i < conf.restart_limit; i++) {
		rec.now += 10;
		feed(SEV_EXITED, 0);
		if (s.state == SS_RECONNECTING)
			feed(SEV_DEADLINE, 0);
	}
	assert_int_equal(s.state, SS_ERROR);
	assert_non_null(strstr(s.message, "3 times"));
}

static void test_infer_runs_only_when_ready(void **state)
{
	(void)state;
	request(SEV_INFER, OP_INFER, NULL);
	assert_int_equal(rec.last_code, E_NOT_LOADED);
	request(SEV_LOAD, OP_LOAD, &ma);
	request(SEV_INFER, OP_INFER, NULL);
	assert_int_equal(rec.last_code, E_NOT_READY);
	loaded(1);
	feed(SEV_WARMED, 1);
	unsigned timers = rec.req_timers;
	struct req *r = request(SEV_INFER, OP_INFER, &ma);
	assert_int_equal(rec.req_timers, timers);	/* it went to the worker: no wait, no timer */
	struct req *q = new_req(OP_INFER, &ma);
	q->wait_ms = 1000;
	slot_event(&s, &(struct slot_ev){ .type = SEV_INFER, .req = q, .model = &ma });
	assert_int_equal(rec.infers, 1);	/* one at a time at the worker */
	assert_int_equal(slot_queue_length(&s), 1);
	assert_int_equal(rec.req_timers, timers + 1);	/* the one that waits has its wait_ms running */
	uint32_t tokens[] = { 3, 4 };
	struct work_out out = { .tokens = tokens, .ntokens = 2, .finish = "length" };
	struct slot_ev done = { .type = SEV_INFER_DONE, .seq = r->seq, .out = &out };
	int before = rec.finished;
	slot_event(&s, &done);
	assert_int_equal(rec.finished, before + 1);
	assert_int_equal(rec.last_code, E_NONE);
	assert_int_equal(rec.last_ntokens, 2);	/* the answer carried the worker's tokens */
	assert_int_equal(rec.infers, 2);	/* the queued one went next */
}

static void test_parallel_inferences_at_the_worker(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	loaded(2);
	feed(SEV_WARMED, 1);
	struct req *a = request(SEV_INFER, OP_INFER, &ma);
	struct req *b = request(SEV_INFER, OP_INFER, &ma);
	struct req *c = request(SEV_INFER, OP_INFER, &ma);
	assert_int_equal(rec.infers, 2);
	assert_int_equal(s.nrunning, 2);
	assert_int_equal(slot_queue_length(&s), 1);
	/* a tokenize waits until nothing else runs, then goes alone */
	struct req *t = request(SEV_INFER, OP_TOKENIZE, &ma);
	struct work_out none = { .finish = "length" };
	struct slot_ev done = { .type = SEV_INFER_DONE, .seq = b->seq, .out = &none };
	slot_event(&s, &done);
	assert_int_equal(rec.infers, 3);	/* c joined a */
	assert_int_equal(s.nrunning, 2);
	done.seq = a->seq;
	slot_event(&s, &done);
	assert_int_equal(rec.infers, 3);	/* the tokenize still waits for c */
	done.seq = c->seq;
	slot_event(&s, &done);
	assert_int_equal(rec.infers, 4);
	assert_int_equal(s.nrunning, 1);
	assert_true(s.running[0].alone && s.running[0].req == t);
	/* a crash ends everything the worker ran */
	done.seq = t->seq;
	slot_event(&s, &done);
	request(SEV_INFER, OP_INFER, &ma);
	request(SEV_INFER, OP_INFER, &ma);
	int before = rec.finished;
	feed(SEV_EXITED, 0);
	assert_int_equal(rec.finished, before + 2);
	assert_int_equal(rec.last_code, E_WORKER_CRASHED);
	assert_int_equal(s.nrunning, 0);
}

static void test_crash_fails_the_running_request(void **state)
{
	(void)state;
	load_ready(&ma);
	request(SEV_INFER, OP_INFER, &ma);
	feed(SEV_EXITED, 0);
	assert_int_equal(rec.last_code, E_WORKER_CRASHED);
	assert_int_equal(s.state, SS_RECONNECTING);
}

static void cancel(struct req *r)
{
	struct slot_ev ev = { .type = SEV_CANCEL, .req = r };
	slot_event(&s, &ev);
}

static void test_cancel_stops_the_worker_request(void **state)
{
	(void)state;
	load_ready(&ma);
	struct req *r = request(SEV_INFER, OP_INFER, &ma);
	struct req *queued = request(SEV_INFER, OP_INFER, &ma);
	int before = rec.finished;
	cancel(queued);			/* never ran: ends at once */
	assert_int_equal(rec.finished, before + 1);
	assert_int_equal(rec.last_code, E_CANCELLED);
	cancel(r);			/* running: the worker is asked, and answers with what it made */
	assert_int_equal(rec.cancels, 1);
	assert_int_equal(rec.finished, before + 1);
	uint32_t tokens[] = { 3 };
	struct work_out out = { .tokens = tokens, .ntokens = 1, .finish = "cancelled" };
	struct slot_ev done = { .type = SEV_INFER_DONE, .seq = r->seq, .out = &out };
	slot_event(&s, &done);
	assert_int_equal(rec.finished, before + 2);
	assert_int_equal(rec.last_code, E_NONE);
	assert_int_equal(rec.last_ntokens, 1);
	assert_string_equal(rec.last_finish, "cancelled");
}

static void test_a_request_with_no_token_for_stall_timeout_kills_the_worker(void **state)
{
	(void)state;
	conf.stall_timeout_ms = 1000;
	load_ready(&ma);
	struct req *r = request(SEV_INFER, OP_INFER, &ma);
	assert_int_equal(rec.armed, 1000);
	uint32_t tokens[] = { 3 };
	struct work_out out = { .tokens = tokens, .ntokens = 1 };
	rec.now += 600;
	struct slot_ev tok = { .type = SEV_TOKENS, .seq = r->seq, .out = &out };
	slot_event(&s, &tok);
	rec.now += 600;
	feed(SEV_DEADLINE, 0);		/* 600 ms since the last token: not stalled */
	assert_int_equal(rec.kills, 0);
	assert_int_equal(rec.armed, 400);
	rec.now += 400;
	feed(SEV_DEADLINE, 0);
	assert_int_equal(rec.kills, 1);
	conf.stall_timeout_ms = 0;
}

static void test_a_worker_that_answers_what_it_was_not_asked_is_killed(void **state)
{
	(void)state;
	load_ready(&ma);
	struct req *r = request(SEV_INFER, OP_INFER, &ma);
	uint32_t tokens[17] = { 0 };
	struct work_out out = { .tokens = tokens, .ntokens = 1 };
	struct slot_ev stranger = { .type = SEV_TOKENS, .seq = r->seq + 1, .out = &out };
	slot_event(&s, &stranger);
	assert_int_equal(rec.kills, 1);
	out.ntokens = 17;		/* it asked for 16 */
	struct slot_ev excess = { .type = SEV_INFER_DONE, .seq = r->seq, .out = &out };
	slot_event(&s, &excess);
	assert_int_equal(rec.kills, 2);
}

static void test_memory_refuse_keeps_the_current_model(void **state)
{
	(void)state;
	load_ready(&ma);
	conf.memory_check = MEMCHECK_REFUSE;
	rec.memory = -1;
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(rec.last_code, E_INSUFFICIENT_MEMORY);
	assert_int_equal(s.state, SS_READY);
	assert_ptr_equal(s.model, &ma);
	assert_int_equal(rec.stops + rec.kills, 0);
	rec.memory = 0;
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(s.state, SS_UNLOADING);
	conf.memory_check = MEMCHECK_WARN;
}

static void test_a_stream_gets_the_text_its_end_released(void **state)
{
	(void)state;
	load_ready(&ma);
	struct req *r = new_req(OP_INFER, &ma);
	r->gen.stream = true;
	struct slot_ev ev = { .type = SEV_INFER, .req = r, .model = &ma };
	slot_event(&s, &ev);
	struct work_out end = { .text = "\xef\xbf\xbd", .ntext = 3, .finish = "length" };
	struct slot_ev done = { .type = SEV_INFER_DONE, .seq = r->seq, .out = &end };
	slot_event(&s, &done);
	assert_int_equal(rec.chunks, 1);
	assert_int_equal(rec.last_code, E_NONE);
}

static void test_restart_goes_through_service_restarting(void **state)
{
	(void)state;
	load_ready(&ma);
	rec.nstates = 0;
	request(SEV_RESTART, OP_RESTART, NULL);
	assert_int_equal(s.state, SS_RESTARTING);
	assert_int_equal(rec.stops, 1);
	feed(SEV_EXITED, 0);
	assert_int_equal(s.state, SS_LOADING);
	assert_ptr_equal(s.model, &ma);
}

static void test_unavailable_device_retries(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	struct slot_ev ev = { .type = SEV_FAILED, .unavailable = true, .message = "no driver" };
	slot_event(&s, &ev);
	assert_int_equal(s.state, SS_UNAVAILABLE);
	feed(SEV_DEADLINE, 0);
	assert_int_equal(rec.spawns, 1);	/* the failed worker is not reaped yet */
	feed(SEV_EXITED, 0);
	feed(SEV_DEADLINE, 0);
	assert_int_equal(rec.spawns, 2);
	assert_int_equal(s.state, SS_LOADING);
}

static void test_shutdown_ends_every_request(void **state)
{
	(void)state;
	load_ready(&ma);
	request(SEV_INFER, OP_INFER, &ma);
	request(SEV_INFER, OP_INFER, &ma);
	int before = rec.finished;
	feed(SEV_SHUTDOWN, 0);
	assert_int_equal(rec.finished, before + 2);
	assert_int_equal(rec.last_code, E_SHUTTING_DOWN);
	feed(SEV_EXITED, 0);
	assert_int_equal(s.state, SS_EMPTY);
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(rec.last_code, E_SHUTTING_DOWN);
}

static void test_spawn_failure_is_error(void **state)
{
	(void)state;
	rec.spawn_fails = true;
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(s.state, SS_ERROR);
	assert_int_equal(rec.last_code, E_LOAD_FAILED);
}


static struct req *infer_waiting(const struct model *m, uint64_t wait_ms)
{
	struct req *r = new_req(OP_INFER, m);
	r->wait_ms = wait_ms;
	struct slot_ev ev = { .type = SEV_INFER, .req = r, .model = m };
	slot_event(&s, &ev);
	return r;
}

static void test_requests_wait_for_ready_then_run_in_order(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	infer_waiting(&ma, 1000);
	infer_waiting(NULL, 1000);
	assert_int_equal(slot_queue_length(&s), 2);
	assert_int_equal(rec.req_armed, 1000);
	assert_int_equal(rec.infers, 0);
	loaded(1);
	feed(SEV_WARMED, 1);
	assert_int_equal(rec.infers, 1);
	assert_int_equal(slot_queue_length(&s), 1);
}

static void test_a_waiting_request_times_out(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	struct req *r = infer_waiting(&ma, 50);
	struct slot_ev ev = { .type = SEV_WAITED, .req = r };
	slot_event(&s, &ev);
	assert_int_equal(rec.last_code, E_TIMEOUT);
	assert_int_equal(slot_queue_length(&s), 0);
}

static void test_the_queue_is_bounded(void **state)
{
	(void)state;
	request(SEV_LOAD, OP_LOAD, &ma);
	for (unsigned i = 0; i < conf.max_queue; i++)
		infer_waiting(&ma, 1000);
	infer_waiting(&ma, 1000);
	assert_int_equal(rec.last_code, E_BUSY);
}

static void test_a_switch_drains_running_streams(void **state)
{
	(void)state;
	load_ready(&ma);
	struct req *r = infer_waiting(&ma, 1000);
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(s.state, SS_SWITCHING);
	assert_int_equal(rec.stops, 0);		/* the stream runs on */
	assert_int_equal(rec.armed, conf.drain_timeout_ms);
	struct req *later = infer_waiting(NULL, 1000);	/* queues behind the switch */
	(void)later;
	struct slot_ev done = { .type = SEV_INFER_DONE, .seq = r->seq };
	slot_event(&s, &done);
	assert_int_equal(rec.last_code, E_NONE);
	assert_int_equal(s.state, SS_UNLOADING);
	feed(SEV_EXITED, 0);
	loaded(1);
	assert_int_equal(s.state, SS_READY);
	assert_int_equal(rec.infers, 2);	/* the queued one ran on b */
}

static void test_requests_that_would_not_wait_end_when_ready_ends(void **state)
{
	(void)state;
	load_ready(&ma);
	infer_waiting(&ma, 1000);		/* at the worker */
	infer_waiting(&ma, 0);			/* behind it, with no timer */
	int before = rec.finished;
	feed(SEV_EXITED, 0);
	assert_int_equal(rec.finished, before + 2);	/* worker_crashed, then not_ready */
	assert_int_equal(rec.last_code, E_NOT_READY);
	assert_int_equal(slot_queue_length(&s), 0);
}

static void test_an_unload_overtaken_by_a_load_ends_when_the_worker_is_gone(void **state)
{
	(void)state;
	load_ready(&ma);
	infer_waiting(&ma, 1000);
	request(SEV_UNLOAD, OP_UNLOAD, NULL);		/* drains the stream */
	assert_int_equal(s.state, SS_SWITCHING);
	request(SEV_LOAD, OP_LOAD, &mb);		/* latest wins */
	int before = rec.finished;
	feed(SEV_EXITED, 0);				/* the worker dies while draining */
	assert_int_equal(s.state, SS_LOADING);
	assert_int_equal(rec.finished, before + 2);	/* the stream, and the unload */
	assert_int_equal(rec.last_code, E_NONE);
}

static void test_drain_timeout_cancels_streams(void **state)
{
	(void)state;
	load_ready(&ma);
	infer_waiting(&ma, 1000);
	request(SEV_LOAD, OP_LOAD, &mb);
	feed(SEV_DEADLINE, 0);
	assert_int_equal(rec.last_code, E_CANCELLED);
	assert_int_equal(rec.cancels, 1);
	assert_int_equal(s.state, SS_UNLOADING);
}

static void test_forced_unload_cancels_at_once(void **state)
{
	(void)state;
	load_ready(&ma);
	infer_waiting(&ma, 1000);
	struct req *r = new_req(OP_UNLOAD, NULL);
	r->force = true;
	struct slot_ev ev = { .type = SEV_UNLOAD, .req = r };
	slot_event(&s, &ev);
	assert_int_equal(rec.cancels, 1);
	assert_int_equal(s.state, SS_UNLOADING);
}

static void test_debounce_coalesces_a_burst(void **state)
{
	(void)state;
	load_ready(&mb);
	conf.switch_debounce_ms = 200;
	request(SEV_LOAD, OP_LOAD, &ma);
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(rec.last_code, E_SUPERSEDED);
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(s.state, SS_SWITCHING);
	assert_int_equal(rec.stops, 0);
	feed(SEV_DEADLINE, 0);		/* the window closes: one switch */
	assert_int_equal(s.state, SS_UNLOADING);
	feed(SEV_EXITED, 0);
	assert_ptr_equal(s.model, &ma);
	assert_int_equal(rec.spawns, 2);
}

static void test_idle_eviction_and_keep_alive(void **state)
{
	(void)state;
	conf.idle_timeout_ms = 500;
	load_ready(&mb);
	assert_int_equal(rec.armed, 500);
	struct req *r = infer_waiting(&mb, 1000);
	r->keep_alive_ms = 5000;
	assert_int_equal(rec.armed, 0);		/* busy: no idle clock */
	struct slot_ev done = { .type = SEV_INFER_DONE, .seq = r->seq };
	slot_event(&s, &done);
	assert_int_equal(rec.armed, 5000);	/* the keep-alive is longer */
	rec.now += 5000;
	feed(SEV_DEADLINE, 0);
	assert_int_equal(s.state, SS_UNLOADING);
	/* a request racing the eviction waits for a fresh load, never fails */
	int before = rec.finished;
	infer_waiting(&mb, 1000);
	feed(SEV_EXITED, 0);
	assert_int_equal(rec.finished, before);
	assert_int_equal(s.state, SS_LOADING);
	loaded(1);
	assert_int_equal(rec.infers, 2);
}

static void test_autoload_loads_what_infer_names(void **state)
{
	(void)state;
	conf.autoload = AUTOLOAD_YES;
	infer_waiting(&mb, 1000);
	assert_int_equal(s.state, SS_LOADING);
	loaded(1);
	assert_int_equal(rec.infers, 1);
}

static void test_autoload_admin_lets_only_administrators_switch(void **state)
{
	(void)state;
	conf.autoload = AUTOLOAD_ADMIN;
	load_ready(&ma);
	infer_waiting(&mb, 1000);		/* not an admin's */
	assert_int_equal(rec.last_code, E_NOT_LOADED);
	assert_int_equal(s.state, SS_READY);
	struct req *r = new_req(OP_INFER, &mb);
	r->wait_ms = 1000;
	r->admin = true;
	struct slot_ev ev = { .type = SEV_INFER, .req = r, .model = &mb };
	slot_event(&s, &ev);
	assert_int_not_equal(s.state, SS_READY);	/* switching to mb */
	assert_ptr_equal(s.next, &mb);
}

static void test_fallback_loads_after_a_failure(void **state)
{
	(void)state;
	slot_init(&s, &conf, &mb, &env);
	struct slot_ev start = { .type = SEV_START };
	slot_event(&s, &start);
	rec.nstates = 0;
	request(SEV_LOAD, OP_LOAD, &ma);
	struct slot_ev ev = { .type = SEV_FAILED, .code = E_LOAD_FAILED, .message = "bad" };
	slot_event(&s, &ev);
	assert_int_equal(rec.last_code, E_LOAD_FAILED);
	assert_int_equal(s.state, SS_ERROR);
	feed(SEV_EXITED, 0);
	assert_int_equal(s.state, SS_LOADING);
	assert_ptr_equal(s.model, &mb);
	enum slot_state want[] = { SS_SWITCHING, SS_LOADING, SS_ERROR, SS_LOADING };
	assert_memory_equal(rec.states, want, sizeof want);
}

static void test_memory_refusal_is_an_error(void **state)
{
	(void)state;
	rec.memory = -1;
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(rec.last_code, E_INSUFFICIENT_MEMORY);
	assert_int_equal(rec.spawns, 0);
	rec.memory = 1;				/* warn: the load goes on */
	request(SEV_LOAD, OP_LOAD, &ma);
	assert_int_equal(rec.spawns, 1);
}

static void test_a_load_waits_for_the_device(void **state)
{
	(void)state;
	rec.device_taken = true;
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(s.state, SS_LOADING);
	assert_int_equal(rec.spawns, 0);	/* no worker until the device is ours */
	rec.device_taken = false;
	feed(SEV_LOCKED, 0);
	assert_int_equal(rec.spawns, 1);
	loaded(1);
	assert_int_equal(s.state, SS_READY);
	assert_false(s.locked);			/* given back once loaded */
}

static void test_an_unload_stops_waiting_for_the_device(void **state)
{
	(void)state;
	rec.device_taken = true;
	request(SEV_LOAD, OP_LOAD, &mb);
	request(SEV_UNLOAD, OP_UNLOAD, NULL);
	assert_int_equal(s.state, SS_EMPTY);
	assert_int_equal(s.lock_wait, LOCK_NONE);
	assert_true(rec.unlocks > 0);
}

static void test_inference_waits_its_turn_or_tries(void **state)
{
	(void)state;
	load_ready(&mb);
	rec.device_taken = true;
	struct req *r = infer_waiting(&mb, 1000);
	assert_int_equal(rec.infers, 0);	/* waits at the head of the queue */
	rec.device_taken = false;
	feed(SEV_LOCKED, 0);
	assert_int_equal(rec.infers, 1);
	assert_int_equal(s.nrunning, 1);
	assert_int_equal(s.running[0].seq, r->seq);
	rec.device_taken = true;
	struct req *t = new_req(OP_INFER, &mb);
	t->gpu_try = true;
	struct slot_ev ev = { .type = SEV_INFER, .req = t };
	slot_event(&s, &ev);
	assert_int_equal(rec.last_code, E_BUSY);	/* no cpu_fallback */
}

static void test_a_load_during_restart_joins_it(void **state)
{
	(void)state;
	load_ready(&mb);
	request(SEV_RESTART, OP_RESTART, NULL);
	int before = rec.finished;
	request(SEV_LOAD, OP_LOAD, &mb);
	assert_int_equal(s.state, SS_RESTARTING);
	feed(SEV_EXITED, 0);
	loaded(1);
	assert_int_equal(rec.finished, before + 1);
	assert_int_equal(rec.last_code, E_NONE);
}

int main(void)
{
	log_init("test_slot", LOG_LVL_ERROR, 0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_starts_empty, setup),
		cmocka_unit_test_setup(test_load_goes_through_states_in_order, setup),
		cmocka_unit_test_setup(test_switch_waits_for_the_old_worker, setup),
		cmocka_unit_test_setup(test_same_model_load_joins, setup),
		cmocka_unit_test_setup(test_load_of_another_model_supersedes, setup),
		cmocka_unit_test_setup(test_unload_during_load_cancels, setup),
		cmocka_unit_test_setup(test_load_failure_is_error, setup),
		cmocka_unit_test_setup(test_load_timeouts_count_toward_the_restart_limit, setup),
		cmocka_unit_test_setup(test_crash_reconnects_with_backoff, setup),
		cmocka_unit_test_setup(test_too_many_deaths_is_error, setup),
		cmocka_unit_test_setup(test_infer_runs_only_when_ready, setup),
		cmocka_unit_test_setup(test_parallel_inferences_at_the_worker, setup),
		cmocka_unit_test_setup(test_crash_fails_the_running_request, setup),
		cmocka_unit_test_setup(test_cancel_stops_the_worker_request, setup),
		cmocka_unit_test_setup(test_a_stream_gets_the_text_its_end_released, setup),
		cmocka_unit_test_setup(test_memory_refuse_keeps_the_current_model, setup),
		cmocka_unit_test_setup(test_a_request_with_no_token_for_stall_timeout_kills_the_worker, setup),
		cmocka_unit_test_setup(test_a_worker_that_answers_what_it_was_not_asked_is_killed, setup),
		cmocka_unit_test_setup(test_restart_goes_through_service_restarting, setup),
		cmocka_unit_test_setup(test_unavailable_device_retries, setup),
		cmocka_unit_test_setup(test_shutdown_ends_every_request, setup),
		cmocka_unit_test_setup(test_spawn_failure_is_error, setup),
		cmocka_unit_test_setup(test_requests_wait_for_ready_then_run_in_order, setup),
		cmocka_unit_test_setup(test_a_waiting_request_times_out, setup),
		cmocka_unit_test_setup(test_the_queue_is_bounded, setup),
		cmocka_unit_test_setup(test_a_switch_drains_running_streams, setup),
		cmocka_unit_test_setup(test_drain_timeout_cancels_streams, setup),
		cmocka_unit_test_setup(test_requests_that_would_not_wait_end_when_ready_ends, setup),
		cmocka_unit_test_setup(test_an_unload_overtaken_by_a_load_ends_when_the_worker_is_gone, setup),
		cmocka_unit_test_setup(test_forced_unload_cancels_at_once, setup),
		cmocka_unit_test_setup(test_debounce_coalesces_a_burst, setup),
		cmocka_unit_test_setup(test_idle_eviction_and_keep_alive, setup),
		cmocka_unit_test_setup(test_autoload_loads_what_infer_names, setup),
		cmocka_unit_test_setup(test_autoload_admin_lets_only_administrators_switch, setup),
		cmocka_unit_test_setup(test_fallback_loads_after_a_failure, setup),
		cmocka_unit_test_setup(test_memory_refusal_is_an_error, setup),
		cmocka_unit_test_setup(test_a_load_waits_for_the_device, setup),
		cmocka_unit_test_setup(test_an_unload_stops_waiting_for_the_device, setup),
		cmocka_unit_test_setup(test_inference_waits_its_turn_or_tries, setup),
		cmocka_unit_test_setup(test_a_load_during_restart_joins_it, setup),
	};
	return cmocka_run_group_tests_name("slot", tests, NULL, NULL);
}
