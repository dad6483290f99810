/*
 * The slot machine under random events: loads, unloads, restarts, infers,
 * cancels, worker messages, crashes and timers, in the order a random
 * world would send them. After every event the invariants are checked:
 * at most one worker, never a spawn before the last worker was reaped,
 * never more requests at the worker than it takes (parallel, 1 to 3 by
 * seed), every request ended exactly once; at the end, with the world answering
 * everything, no request is left where nothing can end it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../proto/log.h"
#include "../../supervisor/slot.h"

#define SEEDS 2000
#define STEPS 400
#define MAX_REQS 64
#define MAX_PARALLEL 3

/* The world: one worker at most (the machine's promise), its requests, timers. */
static struct world {
	uint64_t rng, now;
	bool alive, stopping, loaded, warmed;
	unsigned parallel;		/* what the worker says it takes */
	uint64_t at_worker[MAX_PARALLEL];	/* the requests the worker runs */
	bool cancel_sent[MAX_PARALLEL];
	unsigned nat;
	uint64_t timer_at;		/* the slot's timer; 0 unarmed */
	struct req *reqs[MAX_REQS];	/* not yet answered */
	int nreqs;
	uint64_t *ended;		/* seqs answered, to find a second answer */
	size_t nended, cap;
	uint64_t next_seq;
	int seed, step;
} w;

static struct slot s;
/* Over all seeds: the runs did reach what they are meant to test. */
static unsigned long served, readies, crashes_seen;

static uint64_t rnd(uint64_t n)
{
	w.rng ^= w.rng << 13;
	w.rng ^= w.rng >> 7;
	w.rng ^= w.rng << 17;
	return w.rng % n;
}

#define check(cond, fmt, ...) \
	do { if (!(cond)) fail_msg("seed %d step %d: " fmt, w.seed, w.step, ##__VA_ARGS__); } while (0)

static uint64_t e_now(void *a) { (void)a; return w.now; }

static int e_spawn(struct slot *sl, char *err, size_t n)
{
	(void)err; (void)n;
	check(!w.alive, "a worker was spawned while another lived");
	w.alive = true;
	w.stopping = w.loaded = w.warmed = false;
	w.nat = 0;
	sl->pid = 100 + w.seed;
	return 0;
}

static void e_stop(struct slot *sl, bool kill) { (void)sl; (void)kill; w.stopping = true; }
static void e_kill(struct slot *sl, const char *why) { (void)sl; (void)why; w.stopping = true; }

static void e_send_infer(struct slot *sl, struct req *r)
{
	(void)sl;
	check(w.alive && !w.stopping, "a request went to a worker that is not there");
	check(w.nat < w.parallel, "request %u went to a worker that takes %u", w.nat + 1, w.parallel);
	w.cancel_sent[w.nat] = false;
	w.at_worker[w.nat++] = r->seq;
}

static void e_cancel(struct slot *sl, uint64_t seq)
{
	(void)sl;
	for (unsigned i = 0; i < w.nat; i++)
		w.cancel_sent[i] |= w.at_worker[i] == seq;
}
static void e_arm(struct slot *sl, uint64_t ms) { (void)sl; w.timer_at = ms ? w.now + ms : 0; }
static void e_arm_req(struct slot *sl, struct req *r, uint64_t ms) { (void)sl; r->timer = ms ? (void *)1 : NULL; }
static int e_memory(struct slot *sl, const struct model *m, uint64_t f, char *msg, size_t n)
{
	(void)sl; (void)m; (void)f; (void)msg; (void)n;
	return 0;
}
static bool e_lock(struct slot *sl, const char *op) { (void)sl; (void)op; return true; }
static void e_unlock(struct slot *sl) { (void)sl; }
static bool e_busy(struct slot *sl) { (void)sl; return false; }
static bool e_forward(struct slot *sl, struct req *r) { (void)sl; (void)r; return false; }
static void e_chunk(struct slot *sl, struct req *r, const struct work_out *o) { (void)sl; (void)r; (void)o; }
static void e_state(const struct slot *sl)
{
	readies += sl->state == SS_READY;
	crashes_seen += sl->state == SS_RECONNECTING;
}
static void e_progress(struct slot *sl) { (void)sl; }
static void e_job(const struct slot *sl, uint64_t j, const char *op, const struct model *m, const char *st,
		  const char *msg)
{
	(void)sl; (void)j; (void)op; (void)m; (void)st; (void)msg;
}
static uint64_t jobs;
static uint64_t e_new_job(void *a) { (void)a; return ++jobs; }

static void e_finish(struct slot *sl, struct req *r, enum err code, const char *msg)
{
	(void)sl; (void)msg;
	served += r->op == OP_INFER && code == E_NONE;
	for (size_t i = 0; i < w.nended; i++)
		check(w.ended[i] != r->seq, "request %llu was answered twice", (unsigned long long)r->seq);
	if (w.nended == w.cap) {
		w.cap = w.cap ? w.cap * 2 : 256;
		w.ended = realloc(w.ended, w.cap * sizeof *w.ended);
	}
	w.ended[w.nended++] = r->seq;
	for (int i = 0; i < w.nreqs; i++)
		if (w.reqs[i] == r)
			w.reqs[i] = w.reqs[--w.nreqs];
	req_clear(r);
	free(r);
}

static const struct slot_env env = {
	.now_ms = e_now, .spawn = e_spawn, .stop = e_stop, .kill = e_kill, .send_infer = e_send_infer,
	.cancel_infer = e_cancel, .arm = e_arm, .arm_req = e_arm_req, .check_memory = e_memory,
	.lock = e_lock, .unlock = e_unlock, .device_busy = e_busy, .forward = e_forward, .finish = e_finish,
	.chunk = e_chunk, .publish = e_state, .progress = e_progress, .job = e_job, .new_job = e_new_job,
};

static struct slot_conf conf = {
	.name = "s", .device = "cpu", .stop_timeout_ms = 1000, .restart_backoff_min_ms = 10,
	.restart_backoff_max_ms = 40, .restart_limit = 3, .restart_window_ms = 500,
	.heartbeat_interval_ms = 100, .heartbeat_timeout_ms = 500, .max_queue = 6, .drain_timeout_ms = 300,
	.stall_timeout_ms = 700, .autoload = AUTOLOAD_YES,
};
static struct model models[] = {
	{ .name = "a", .path = "a", .warmup = 1, .load_timeout_ms = 400 },
	{ .name = "b", .path = "b", .warmup = 0, .load_timeout_ms = 400 },
};

static void feed(struct slot_ev ev)
{
	slot_event(&s, &ev);
	check(s.has_worker == w.alive, "has_worker %d, but a worker is %s", s.has_worker,
	      w.alive ? "alive" : "gone");
	check(s.state != SS_READY || s.has_worker, "ready without a worker");
	check(!s.nrunning || w.alive, "a request in flight at no worker");
	check(s.nrunning == w.nat || !w.alive, "the slot counts %u requests at the worker, which runs %u",
	      s.nrunning, w.nat);
}

static struct req *new_req(enum op op, const struct model *m)
{
	struct req *r = calloc(1, sizeof *r);
	r->op = op;
	r->model = m;
	r->seq = ++w.next_seq;
	r->slot = &s;
	r->wait = rnd(2);
	r->force = rnd(2);
	r->wait_ms = rnd(3) ? 1000 : 0;
	r->gen.max_tokens = 1 + (uint32_t)rnd(4);
	r->gen.stream = rnd(2);
	r->admin = true;
	w.reqs[w.nreqs++] = r;
	return r;
}

static const struct model *some_model(void) { return &models[rnd(2)]; }

/* A client's request (a load, unload, restart, infer or cancel), or a reload that retires a model. */
static void client_step(void)
{
	struct slot_ev ev = { 0 };

	if (w.nreqs == MAX_REQS)
		return;
	if (rnd(16) == 0) {	/* rarer than requests: it unloads */
		feed((struct slot_ev){ .type = SEV_RETIRE, .model = some_model() });
		return;
	}
	switch (rnd(6)) {
	case 0: ev = (struct slot_ev){ .type = SEV_LOAD, .model = some_model() };
		ev.req = new_req(OP_LOAD, ev.model);
		break;
	case 1: ev = (struct slot_ev){ .type = SEV_UNLOAD, .req = new_req(OP_UNLOAD, NULL) }; break;
	case 2: ev = (struct slot_ev){ .type = SEV_RESTART, .req = new_req(OP_RESTART, NULL) }; break;
	case 3:
	case 4: ev = (struct slot_ev){ .type = SEV_INFER, .model = rnd(3) ? some_model() : NULL };
		ev.req = new_req(OP_INFER, ev.model);
		break;
	default:
		if (w.nreqs == 0)
			return;
		ev = (struct slot_ev){ .type = SEV_CANCEL, .req = w.reqs[rnd((uint64_t)w.nreqs)] };
		if (!ev.req->slot)
			return;
	}
	feed(ev);
}

/* What the worker says next, if anything; crashes now and then. With cooperate, no crash and no failure. */
static bool worker_step(bool cooperate)
{
	static const uint32_t tok[4] = { 1, 2, 3, 4 };
	struct work_out out = { .tokens = tok, .ntokens = 1, .finish = "length" };
	struct slot_ev ev = { .message = "exited", .out = &out };

	if (!w.alive)
		return false;
	if (w.stopping || (!cooperate && rnd(20) == 0)) {
		w.alive = false;
		ev.type = SEV_EXITED;
	} else if (!w.loaded) {
		w.loaded = true;
		ev.parallel = w.parallel;
		ev.type = !cooperate && rnd(8) == 0 ? SEV_FAILED : SEV_LOADED;
		ev.code = E_LOAD_FAILED;
	} else if (!w.warmed && s.state == SS_WARMING) {
		w.warmed = true;
		ev.type = SEV_WARMED;
	} else if (w.nat) {
		unsigned i = (unsigned)rnd(w.nat);
		ev.seq = w.at_worker[i];
		ev.type = w.cancel_sent[i] || rnd(3) == 0 ? SEV_INFER_DONE : SEV_TOKENS;
		if (w.cancel_sent[i])
			out.finish = "cancelled";
		if (ev.type == SEV_INFER_DONE) {
			out.ntokens = 0;
			w.at_worker[i] = w.at_worker[--w.nat];
			w.cancel_sent[i] = w.cancel_sent[w.nat];
		}
	} else {
		return false;
	}
	feed(ev);
	return true;
}

/* The slot's timer, or a request's wait timer (with cooperate, the first one armed). */
static bool timer_step(bool cooperate)
{
	for (int i = 0; i < w.nreqs; i++) {
		if (w.reqs[i]->timer && (cooperate || rnd(2))) {
			struct req *r = w.reqs[i];
			r->timer = NULL;
			feed((struct slot_ev){ .type = SEV_WAITED, .req = r });
			return true;
		}
	}
	if (!w.timer_at)
		return false;
	if (w.timer_at > w.now)
		w.now = w.timer_at;
	w.timer_at = 0;
	feed((struct slot_ev){ .type = SEV_DEADLINE });
	return true;
}

static bool at_worker(const struct req *r)
{
	for (unsigned i = 0; i < s.nrunning; i++)
		if (s.running[i].req == r)
			return true;
	return false;
}

static const char *where(const struct req *r)
{
	return r->list == &s.queue ? "queued" : r->list == &s.load_waiters ? "waiting for a load" :
	       r->list == &s.unload_waiters ? "waiting for an unload" : at_worker(r) ? "at the worker" :
	       "in no list";
}

static void run(int seed)
{
	memset(&w, 0, sizeof w);
	w.seed = seed;
	w.rng = 0x9e3779b97f4a7c15ull * (uint64_t)(seed + 1);
	conf.switch_debounce_ms = rnd(2) ? 0 : 60;
	conf.idle_timeout_ms = rnd(2) ? 0 : 300;
	conf.autoload = (enum autoload)rnd(3);
	w.parallel = 1 + (unsigned)rnd(MAX_PARALLEL);
	slot_init(&s, &conf, rnd(2) ? &models[1] : NULL, &env);
	feed((struct slot_ev){ .type = SEV_START });
	for (w.step = 0; w.step < STEPS; w.step++) {
		w.now += rnd(50);
		switch (rnd(3)) {
		case 0: client_step(); break;
		case 1: worker_step(false); break;
		default: timer_step(false); break;
		}
	}
	/* The world answers everything from now on: every request must end. */
	for (int n = 0; n < 10000 && w.nreqs > 0; n++)
		if (!worker_step(true) && !timer_step(true))
			break;
	check(w.nreqs == 0, "%d requests left with nothing to end them (slot %s); the first: %s, %s", w.nreqs,
	      slot_state_name(s.state), proto_op_name(w.reqs[0]->op), where(w.reqs[0]));
	feed((struct slot_ev){ .type = SEV_SHUTDOWN });
	while (worker_step(true))
		;
	check(!w.alive, "a worker outlived the shutdown");
	free(w.ended);
}

static void test_random_events_keep_the_invariants(void **state)
{
	(void)state;
	log_init("test_slot_random", LOG_LVL_ERROR, 0);		/* thousands of transitions otherwise */
	for (int seed = 0; seed < SEEDS; seed++)
		run(seed);
	assert_true(served > SEEDS && readies > SEEDS && crashes_seen > SEEDS / 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_events_keep_the_invariants),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
