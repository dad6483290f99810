/*
 * core.c: the slots of this modeld (core.h), and the slot_env that gives
 * their machines hands: workers (child.c), a timer each, the device lock
 * (devlock.c), replies through each request's sink, and what happens told
 * to the registered watches (watch.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "child.h"
#include "core.h"
#include "devices.h"
#include "devlock.h"
#include "ggufmeta.h"
#include "watch.h"

static struct event_base *base;
static struct slot_rt *slots;
static size_t nslots;
static uint64_t last_job;
static bool shutting_down;

static struct slot_rt *find(const char *name);

static struct slot_rt *rt_of(struct slot *s)
{
	return (struct slot_rt *)s;	/* struct slot is the first member */
}

static uint64_t env_now(void *arg)
{
	(void)arg;
	return clock_mono_ms();
}

static int env_spawn(struct slot *s, char *err, size_t errlen)
{
	struct slot_rt *rt = rt_of(s);

	rt->child = child_spawn(rt, err, errlen);
	if (!rt->child)
		return -1;
	s->pid = (int)child_pid(rt->child);
	rt->progress_sent_ms = 0;
	rt->progress_done_sent = false;
	return 0;
}

static void env_stop(struct slot *s, bool kill)
{
	if (rt_of(s)->child)
		child_stop(rt_of(s)->child, kill);
}

static void env_kill(struct slot *s, const char *why)
{
	if (rt_of(s)->child)
		child_kill(rt_of(s)->child, why);
}

/* Ends w and sends it to the slot's worker, if it has one, with send (child_send or child_send_soon). */
static void to_worker(struct slot *s, struct msgw *w, void (*send)(struct child *, struct msgw *))
{
	msgw_end(w);
	if (rt_of(s)->child)
		send(rt_of(s)->child, w);
	msgw_free(w);
}

static void env_send_infer(struct slot *s, struct req *r)
{
	struct msgw w;

	switch (r->op) {
	case OP_TOKENIZE:
		msgw_wmsg(&w, WM_TOKENIZE);
		msgw_kstr(&w, "text", r->gen.prompt);
		msgw_kbool(&w, "add_special", r->add_special);
		msgw_kbool(&w, "parse_special", r->parse_special);
		break;
	case OP_DETOKENIZE:
		msgw_wmsg(&w, WM_DETOKENIZE);
		msgw_key(&w, "tokens");
		msgw_u32s(&w, r->gen.input, r->gen.ninput);
		break;
	case OP_EMBED:
		msgw_wmsg(&w, WM_EMBED);
		msgw_key(&w, "texts");
		msgw_array(&w);
		for (uint32_t i = 0; i < r->ntexts; i++)
			msgw_str(&w, r->texts[i]);
		msgw_end(&w);
		break;
	default:
		msgw_wmsg(&w, WM_INFER);
		if (r->gen.max_tokens_default && s->model && s->model->max_tokens)
			r->gen.max_tokens = s->model->max_tokens;
		gen_write(&w, &r->gen);
		break;
	}
	msgw_ku64(&w, "req", r->seq);
	r->sent_ms = clock_mono_ms();
	to_worker(s, &w, child_send_soon);
}

static void env_cancel_infer(struct slot *s, uint64_t seq)
{
	struct msgw w;

	log_debug("slot %s: the worker is asked to stop request %llu", s->conf->name, (unsigned long long)seq);
	msgw_wmsg(&w, WM_CANCEL);
	msgw_ku64(&w, "req", seq);
	to_worker(s, &w, child_send);
}

static void req_waited_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct req *r = arg;
	struct slot_ev ev = { .type = SEV_WAITED, .req = r };
	slot_event(r->slot, &ev);
}

static void env_arm_req(struct slot *s, struct req *r, uint64_t ms)
{
	(void)s;
	if (ms == REQ_WAIT_FOREVER)
		ms = 0;
	if (!r->timer) {
		if (ms == 0)
			return;
		r->timer = evtimer_new(base, req_waited_cb, r);
	}
	event_del(r->timer);
	if (ms) {
		struct timeval tv = clock_timeval(ms);
		event_add(r->timer, &tv);
	}
}

/* a + b, or UINT64_MAX where that overflows: a crafted file's estimate must not wrap to little */
static uint64_t plus(uint64_t a, uint64_t b)
{
	uint64_t r;
	return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

/*
 * What a GGUF model adds to its weights: the KV cache of its contexts (the
 * model's ctx, else its trained context up to LM_CTX_DEFAULT_MAX, as the
 * llama engine rounds it, for each of its parallel generations) and a
 * margin for compute buffers. 0 when fd is not
 * a GGUF file, or one whose metadata cannot be read (its load will say why).
 */
static uint64_t gguf_extra(const struct model *m, int fd, uint64_t weights)
{
	struct ggufmeta g;
	char err[GGUFMETA_ERR_LEN];

	if (ggufmeta_read(fd, &g, err) < 0)
		return 0;
	uint64_t ctx = m->ctx ? m->ctx : g.ctx_train && g.ctx_train < LM_CTX_DEFAULT_MAX ? g.ctx_train :
		       LM_CTX_DEFAULT_MAX;
	ctx = (ctx + LM_CTX_PAD - 1) / LM_CTX_PAD * LM_CTX_PAD;
	uint64_t parallel = m->embedding ? 1 : m->parallel ? m->parallel : LM_PARALLEL_DEFAULT;
	return plus(ggufmeta_kv_bytes(&g, ctx * parallel), LM_COMPUTE_MARGIN + weights / LM_COMPUTE_MARGIN_DIV);
}

/* A need for people: "about 1.5 GiB", or for one that saturated, what 64 bits cannot count. */
static void need_text(char *buf, size_t len, uint64_t need)
{
	char bytes[32];

	if (need == UINT64_MAX) {
		snprintf(buf, len, "more than 16 EiB");
		return;
	}
	log_bytes(bytes, sizeof bytes, need);
	snprintf(buf, len, "about %s", bytes);
}

/*
 * The need: the file's size plus what the engine added the last time this
 * slot loaded it, or for a GGUF model its estimate, whichever is more.
 */
static int env_check_memory(struct slot *s, const struct model *m, uint64_t freed, char *msg, size_t len)
{
	struct slot_rt *rt = rt_of(s);
	char need_s[48], free_s[32];
	uint64_t size;
	int fd;

	if (s->conf->memory_check == MEMCHECK_OFF || (fd = child_open_model(m, &size, msg, len)) < 0)
		return 0;	/* a file that cannot be read fails at spawn, with its own message */
	uint64_t extra = gguf_extra(m, fd, size);
	close(fd);
	uint64_t need = plus(size, extra > rt->overhead ? extra : rt->overhead);
	uint64_t avail = devices_free_bytes(s->conf->device);
	if (avail == 0 || need <= avail + freed)
		return 0;
	need_text(need_s, sizeof need_s, need);
	log_bytes(free_s, sizeof free_s, avail + freed);
	snprintf(msg, len, "%s needs %s; %s has %s free%s", m->name, need_s, s->conf->device, free_s,
		 freed ? " once the current model is unloaded" : "");
	if (s->conf->memory_check == MEMCHECK_REFUSE)
		return -1;
	log_warn("slot %s: %s (memory_check = warn: loading anyway)", s->conf->name, msg);
	watch_advisory(s, msg);
	return 1;
}

/*
 * A GGUF model on a GPU slot needs a llama engine built with CUDA: one the
 * probe found built without it is refused here. Where the probe found no
 * llama engine at all, the load fails, saying why it is missing.
 */
static int env_can_run(struct slot *s, const struct model *m, char *msg, size_t len)
{
	uint64_t size;
	int fd;

	if (strncmp(s->conf->device, "cuda", 4) != 0 || devices_llama() != PROBE_LLAMA_CPU ||
	    (fd = child_open_model(m, &size, msg, len)) < 0)
		return 0;	/* a file that cannot be read fails at spawn, with its own message */
	bool llama = strcmp(child_engine_for(m, s->conf->device, fd), "llama") == 0;
	close(fd);
	if (!llama)
		return 0;
	snprintf(msg, len, "%s runs on the llama engine, which is built here without CUDA (make LLAMA_CUDA=1 "
		 "builds one with it): it loads on cpu slots only", m->name);
	return -1;
}

static bool env_lock(struct slot *s, const char *op)
{
	struct devlock *l = rt_of(s)->lock;
	return l ? devlock_take(l, s, op) : true;
}

static void env_unlock(struct slot *s)
{
	struct devlock *l = rt_of(s)->lock;
	if (l)
		devlock_drop(l, s);
}

static bool env_device_busy(struct slot *s)
{
	struct devlock *l = rt_of(s)->lock;
	return l && devlock_busy(l);
}

/* Only a fallback slot that holds the very model the request is for may serve it. */
static bool env_forward(struct slot *s, struct req *r)
{
	struct slot_rt *to = s->conf->cpu_fallback ? find(s->conf->cpu_fallback) : NULL;
	const struct model *m = r->model ? r->model : s->model;

	if (!to || !m || to->s.model != m || to->s.state != SS_READY)
		return false;
	r->model = m;
	log_debug("slot %s: device busy; request %llu goes to %s", s->conf->name,
		  (unsigned long long)r->id, to->s.conf->name);
	struct slot_ev ev = { .type = SEV_INFER, .req = r, .model = r->model };
	r->slot = &to->s;
	slot_event(&to->s, &ev);
	return true;
}

static void env_arm(struct slot *s, uint64_t ms)
{
	struct event *ev = rt_of(s)->deadline;

	event_del(ev);
	if (ms) {
		struct timeval tv = clock_timeval(ms);
		event_add(ev, &tv);
	}
}

/* A request's wait timer is the slots' own; its reply and its memory are req.c's. */
static void env_finish(struct slot *s, struct req *r, enum err code, const char *message)
{
	if (r->timer)
		event_free(r->timer);
	r->timer = NULL;
	watch_request_done(r, code);
	req_reply(r, s, code, message);
}

static void env_chunk(struct slot *s, struct req *r, const struct work_out *o)
{
	(void)s;
	req_chunk(r, o);
}

/*
 * At most one progress event per PROGRESS_EVENT_MS per load, and always the
 * last, once: an engine may say it has read every byte more than once.
 */
static void env_progress(struct slot *s)
{
	struct slot_rt *rt = rt_of(s);
	uint64_t t = clock_mono_ms();

	if (s->bytes < s->total ? t - rt->progress_sent_ms < PROGRESS_EVENT_MS : rt->progress_done_sent)
		return;
	rt->progress_sent_ms = t;
	rt->progress_done_sent = s->bytes >= s->total;
	watch_progress(s);
}

static uint64_t env_new_job(void *arg)
{
	(void)arg;
	return ++last_job;
}

static const struct slot_env env = {
	.now_ms = env_now,
	.spawn = env_spawn,
	.stop = env_stop,
	.kill = env_kill,
	.send_infer = env_send_infer,
	.cancel_infer = env_cancel_infer,
	.arm = env_arm,
	.arm_req = env_arm_req,
	.check_memory = env_check_memory,
	.can_run = env_can_run,
	.lock = env_lock,
	.unlock = env_unlock,
	.device_busy = env_device_busy,
	.forward = env_forward,
	.finish = env_finish,
	.chunk = env_chunk,
	.publish = watch_state,
	.progress = env_progress,
	.job = watch_job,
	.new_job = env_new_job,
};

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct slot_ev ev = { .type = SEV_DEADLINE };
	slot_event(arg, &ev);
}

/* The slot called name, or NULL. */
static struct slot_rt *find(const char *name)
{
	for (size_t i = 0; i < nslots; i++)
		if (strcmp(slots[i].s.conf->name, name) == 0)
			return &slots[i];
	return NULL;
}

static const struct model *fallback_of(const struct slot_conf *c)
{
	return c->fallback_model ? config_model(config_running(), c->fallback_model) : NULL;
}

void core_init(struct event_base *b)
{
	const struct config *conf = config_running();

	base = b;
	nslots = conf->nslots;
	if (!(slots = calloc(nslots, sizeof *slots)))
		abort();
	for (size_t i = 0; i < nslots; i++) {
		struct slot_rt *rt = &slots[i];
		slot_init(&rt->s, &conf->slots[i], fallback_of(&conf->slots[i]), &env);
		rt->index = i;
		rt->deadline = evtimer_new(base, deadline_cb, &rt->s);
	}
	devlock_init();
	for (size_t i = 0; i < nslots; i++)
		slots[i].lock = devlock_of(config_slot_lock(slots[i].s.conf));
	devices_init();
}

void core_start(const struct model *(*initial)(const struct slot *s))
{
	for (size_t i = 0; i < nslots; i++) {
		struct slot_ev ev = { .type = SEV_START, .model = initial(&slots[i].s) };
		slot_event(&slots[i].s, &ev);
	}
}

void core_shutdown(void)
{
	struct slot_ev ev = { .type = SEV_SHUTDOWN };

	shutting_down = true;
	for (size_t i = 0; i < nslots; i++)
		slot_event(&slots[i].s, &ev);
}

bool core_shutting_down(void)
{
	return shutting_down;
}

void core_free(void)
{
	devlock_free();
	for (size_t i = 0; i < nslots; i++)
		event_free(slots[i].deadline);
	free(slots);
	slots = NULL;
	nslots = 0;
}

size_t core_nslots(void)
{
	return nslots;
}

const struct slot *core_slot(size_t i)
{
	return &slots[i].s;
}

size_t core_index(const struct slot *s)
{
	return ((const struct slot_rt *)s)->index;	/* a slot is the first member of its slot_rt */
}

const struct slot *core_find(const char *name)
{
	struct slot_rt *rt = find(name);
	return rt ? &rt->s : NULL;
}

/*
 * Where a request naming model m goes: the slot that has it (loaded,
 * loading or next), else the model's configured slot, else the first.
 */
static struct slot_rt *slot_for_model(const struct model *m)
{
	for (size_t i = 0; i < nslots; i++)
		if (slot_holds(&slots[i].s, m))
			return &slots[i];
	if (m->slot)
		return find(m->slot);
	return &slots[0];
}

/* The slot r is for: the one it names, else its model's; NULL with err. */
static struct slot_rt *target(const struct req *r, struct req_error *err)
{
	struct slot_rt *rt = NULL;

	if (r->slot_name && !(rt = find(r->slot_name)))
		req_fail(err, E_UNKNOWN_SLOT, "no slot called %s", r->slot_name);
	else if (!r->slot_name && r->model)
		rt = slot_for_model(r->model);
	else if (!r->slot_name)
		req_fail(err, E_BAD_REQUEST, "slot or model is required");
	return rt;
}

int core_submit(struct req *r, struct req_error *err)
{
	static const enum slot_event type_of[OP__COUNT] = {
		[OP_LOAD] = SEV_LOAD, [OP_UNLOAD] = SEV_UNLOAD, [OP_RESTART] = SEV_RESTART,
		[OP_INFER] = SEV_INFER, [OP_TOKENIZE] = SEV_INFER, [OP_DETOKENIZE] = SEV_INFER, [OP_EMBED] = SEV_INFER,
	};
	struct slot_rt *rt = target(r, err);

	if (!rt)
		return -1;
	if (r->op == OP_UNLOAD && r->model && !slot_holds(&rt->s, r->model)) {
		req_fail(err, E_NOT_LOADED, "model %s is not loaded in slot %s", r->model->name, rt->s.conf->name);
		return -1;
	}
	if (r->op == OP_UNLOAD || r->op == OP_RESTART)
		r->model = NULL;	/* the slot says what it held */
	r->slot = &rt->s;
	slot_event(&rt->s, &(struct slot_ev){ .type = type_of[r->op], .req = r, .model = r->model });
	return 0;
}

void core_cancel(struct req *r, bool asker_gone)
{
	bool admin = r->op == OP_LOAD || r->op == OP_UNLOAD || r->op == OP_RESTART;

	if (asker_gone)
		req_orphan(r);
	if (r->slot && !(asker_gone && admin))
		slot_event(r->slot, &(struct slot_ev){ .type = SEV_CANCEL, .req = r });
}

void core_retire(const struct model *m, const struct model *again)
{
	for (size_t i = 0; i < nslots; i++) {
		struct slot *s = &slots[i].s;
		bool held = slot_holds(s, m);
		slot_event(s, &(struct slot_ev){ .type = SEV_RETIRE, .model = m });
		if (held && again)
			slot_event(s, &(struct slot_ev){ .type = SEV_LOAD, .model = again });
	}
}

void core_reconfigure(void)
{
	for (size_t i = 0; i < nslots; i++)
		slot_set_fallback(&slots[i].s, fallback_of(slots[i].s.conf));
}
