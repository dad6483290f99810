/*
 * modeld-worker: runs one model for one slot of modeld.
 *
 * Started by modeld with the channel on fd 3. The first message is WM_LOAD,
 * which carries the weights fd: the worker opens no file itself (an engine
 * that is a shared object is opened before the sandbox). It drops to its
 * user and every capability, opens its engine, enters the sandbox (a
 * loading one, which may still open files to read: llama.cpp opens the
 * model by its path; on a GPU, the driver its device files), loads,
 * reports, enters the loaded sandbox, warms up and then serves requests
 * until WM_STOP or the end of the channel: up to `parallel` WM_INFER at once,
 * stepped together (the engine batches them where it can, and a request
 * that comes joins between steps), or one WM_TOKENIZE, WM_DETOKENIZE or
 * WM_EMBED when no inference runs. Pings are answered between chunks of
 * work, so a long load or generation is never taken for a hung worker.
 *
 * Role: may compute, talk on fd 3 and hold memory; nothing else.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "../proto/clock.h"
#include "../proto/frame.h"
#include "../proto/log.h"
#include "../proto/proto.h"
#include "../proto/gen.h"
#include "engine.h"
#include "engines.h"
#include "sandbox.h"
#include "text.h"

/* Seconds between progress reports are the supervisor's business; this
 * only keeps the channel from flooding on fast loads. */
#define PROGRESS_EVERY_MS 50
/* How often a busy engine's ticks look at the channel. */
#define TICK_EVERY_MS 20

/* A request at the worker: an inference from its arrival to its end, or one text operation. */
struct job {
	uint64_t req;			/* 0 when free */
	struct gen gen;			/* an inference's request */
	struct engine_seq *seq;		/* once begun */
	bool stream;
	bool cancel;			/* stop generating */
	uint32_t *pending;		/* tokens produced and not yet sent */
	size_t npending, cap;
	uint32_t ntokens;		/* produced in all */
	struct text text;
	const char *finish;		/* infer's finish_reason, once known */
	uint32_t prompt_tokens;
	uint64_t start_ms;		/* when the request came */
	uint64_t first_ms;		/* from then to its first token; 0 before one */
};

struct worker {
	struct chan chan;
	const struct engine *engine;
	struct engine_ctx *ctx;
	struct job *jobs;		/* parallel of them, for inferences */
	unsigned parallel;
	unsigned busy;			/* jobs that are not free */
	struct job op;			/* a text operation, served whole */
	bool serving;			/* loaded and warmed up: requests may come */
	bool stop;			/* leave as soon as the current work ends */
	uint64_t last_progress_ms;
	uint64_t last_tick_ms;
	uid_t uid;			/* to drop to before loading, or SANDBOX_KEEP_IDS */
	gid_t gid;
};

#ifdef __SANITIZE_ADDRESS__
/*
 * LeakSanitizer checks at exit by stopping the process's threads with ptrace,
 * which the seccomp filter (rightly) refuses, and the worker dies of SIGSYS
 * on its way out. Sanitizer builds of the worker therefore run without the
 * exit-time leak check; ASan's other checks stay on.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "detect_leaks=0";
}
#endif

static void send_or_die(struct worker *w, struct msgw *m)
{
	if (chan_send(&w->chan, m) < 0) {
		log_error("channel write failed: %s", strerror(errno));
		_exit(1);
	}
	msgw_free(m);
}

static void send_error(struct worker *w, enum wmsg type, uint64_t req, const struct engine_error *e)
{
	struct msgw m;
	msgw_wmsg(&m, type);
	if (req)
		msgw_ku64(&m, "req", req);
	msgw_kstr(&m, "code", e->code);
	msgw_kstr(&m, "message", e->message);
	msgw_end(&m);
	send_or_die(w, &m);
}

static void send_pong(struct worker *w, uint64_t seq)
{
	struct engine_mem mem = { 0 };
	struct msgw m;

	if (w->ctx)
		w->engine->memory(w->ctx, &mem);
	msgw_wmsg(&m, WM_PONG);
	msgw_ku64(&m, "seq", seq);
	msgw_ku64(&m, "mem_bytes", mem.used);
	msgw_ku64(&m, "dev_free", mem.free);
	msgw_ku64(&m, "dev_total", mem.total);
	msgw_end(&m);
	send_or_die(w, &m);
}

/* A message about request j: its type and id; more keys may follow. */
static void job_msg(const struct job *j, struct msgw *m, enum wmsg type)
{
	msgw_wmsg(m, type);
	msgw_ku64(m, "req", j->req);
}

/* The request's last message: WM_DONE with what m holds, and how an inference ended. */
static void send_done(struct worker *w, const struct job *j, struct msgw *m)
{
	if (j->finish) {
		msgw_kstr(m, "finish", j->finish);
		msgw_ku64(m, "prompt_tokens", j->prompt_tokens);
		msgw_ku64(m, "first_ms", j->first_ms);
	}
	msgw_end(m);
	send_or_die(w, m);
}

/* Sends the tokens of j not yet sent and the text that may go with them. */
static void flush_tokens(struct worker *w, struct job *j, enum wmsg type)
{
	const char *text;
	size_t n = text_take(&j->text, type == WM_DONE, &text);
	struct msgw m;

	job_msg(j, &m, type);
	msgw_key(&m, "tokens");
	msgw_u32s(&m, j->pending, j->npending);
	if (w->engine->flags & ENGINE_TEXT) {
		msgw_key(&m, "text");
		msgw_strn(&m, text, n);
	}
	if (type == WM_DONE)
		return send_done(w, j, &m);
	msgw_end(&m);
	send_or_die(w, &m);
	j->npending = 0;
}

/* Anything malformed from modeld is a broken supervisor: nothing to serve. */
static void malformed(enum wmsg type)
{
	log_error("malformed %s from modeld", proto_wmsg_name(type));
	_exit(1);
}

/* A request begins in job j: its id, and the reply as yet empty. */
static void job_begin(struct worker *w, struct job *j, uint64_t req)
{
	j->req = req;
	j->seq = NULL;
	j->stream = false;
	j->cancel = false;
	j->npending = 0;
	j->ntokens = 0;
	j->finish = NULL;
	j->prompt_tokens = 0;
	j->start_ms = clock_mono_ms();
	j->first_ms = 0;
	text_init(&j->text, NULL, 0);
	w->busy++;
}

static void job_end(struct worker *w, struct job *j)
{
	if (j->seq)
		w->engine->end(w->ctx, j->seq);
	j->seq = NULL;
	gen_free(&j->gen);
	text_free(&j->text);
	j->req = 0;
	w->busy--;
}

/* The last of a request's reply, when it failed. */
static void job_fail(struct worker *w, struct job *j, const struct engine_error *e)
{
	send_error(w, WM_INFER_FAILED, j->req, e);
}

/* The job of request req, or with req 0 a free one for an inference; NULL if none. */
static struct job *job_of(struct worker *w, uint64_t req)
{
	for (unsigned i = 0; i < w->parallel; i++)
		if (w->jobs[i].req == req)
			return &w->jobs[i];
	return req && w->op.req == req ? &w->op : NULL;
}

/* Whether no work under way is still wanted: stop, or every request cancelled. */
static bool nothing_wanted(const struct worker *w)
{
	if (w->stop || !w->busy)
		return w->stop;
	for (unsigned i = 0; i < w->parallel; i++)
		if (w->jobs[i].req && !w->jobs[i].cancel)
			return false;
	return !w->op.req || w->op.cancel;
}

/* WM_INFER: the request waits in a free job for the next step to begin it. */
static void take_infer(struct worker *w, const msgpack_object *msg)
{
	char err[GEN_ERR_LEN];
	uint64_t req = 0;
	struct job *j = job_of(w, 0);

	if (!w->serving || !j) {
		log_error("WM_INFER from modeld with %u of %u inferences running", w->busy, w->parallel);
		_exit(1);
	}
	if (msg_u64(msg, "req", &req) || req == 0 || job_of(w, req) || w->op.req)
		malformed(WM_INFER);
	job_begin(w, j, req);
	if (gen_read(arg_msgpack(msg), &j->gen, err))
		malformed(WM_INFER);
	j->stream = j->gen.stream;
	text_init(&j->text, j->gen.stop, j->gen.nstop);
}

/*
 * Handles what may arrive at any time: ping, cancel, stop, and an inference
 * (it joins those running at the next step). A text operation is served in
 * serve(), when nothing else runs; one arriving otherwise is a protocol error.
 */
static void handle_interrupt(struct worker *w, const msgpack_object *msg)
{
	uint64_t type = 0, v = 0;
	struct job *j;

	if (msg_u64(msg, "t", &type) != MSG_OK) {
		log_error("message without a type from modeld");
		_exit(1);
	}
	switch (type) {
	case WM_PING:
		msg_u64(msg, "seq", &v);
		send_pong(w, v);
		break;
	case WM_CANCEL:
		if (msg_u64(msg, "req", &v) == MSG_OK && v && (j = job_of(w, v)) != NULL)
			j->cancel = true;
		break;
	case WM_STOP:
		w->stop = true;
		for (unsigned i = 0; i < w->parallel; i++)
			w->jobs[i].cancel = true;
		break;
	case WM_INFER:
		take_infer(w, msg);
		break;
	default:
		log_error("unexpected %s from modeld", proto_wmsg_name((int)type));
		_exit(1);
	}
}

/* Reads what is waiting on the channel, without blocking. */
static void service_channel(struct worker *w)
{
	const msgpack_object *msg;
	int rc;

	w->last_tick_ms = clock_mono_ms();
	while ((rc = chan_read(&w->chan, 0, &msg)) == 1)
		handle_interrupt(w, msg);
	if (rc < 0)	/* modeld is gone or broke the protocol: nothing to serve */
		_exit(rc < 0 && w->chan.error ? 1 : 0);
}

static int on_progress(void *arg, uint64_t bytes, uint64_t total)
{
	struct worker *w = arg;
	uint64_t t = clock_mono_ms();

	if (bytes == total || t - w->last_progress_ms >= PROGRESS_EVERY_MS) {
		struct msgw m;
		w->last_progress_ms = t;
		msgw_wmsg(&m, WM_PROGRESS);
		msgw_ku64(&m, "bytes", bytes);
		msgw_ku64(&m, "total", total);
		msgw_end(&m);
		send_or_die(w, &m);
		service_channel(w);
	}
	return w->stop;
}

/* The engine is busy: serve the channel now and then (pings, cancel). Nonzero: what it computes
 * is no longer wanted. */
static int on_tick(void *arg)
{
	struct worker *w = arg;

	if (clock_mono_ms() - w->last_tick_ms >= TICK_EVERY_MS)
		service_channel(w);
	return nothing_wanted(w);
}

/* A piece of j: held for the next message. True when a stop string ends the text. */
static bool add_piece(struct job *j, const struct engine_piece *p)
{
	if (j->npending == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 64;
		j->pending = realloc(j->pending, j->cap * sizeof *j->pending);
		if (!j->pending)
			abort();
	}
	j->pending[j->npending++] = p->token;
	if (j->ntokens++ == 0)
		j->first_ms = clock_mono_ms() - j->start_ms;
	return p->text && text_add(&j->text, p->text, p->len);
}

static void request_from_gen(const struct gen *g, struct engine_request *rq, struct engine_message *msgs)
{
	for (uint32_t i = 0; i < g->nmessages; i++)
		msgs[i] = (struct engine_message){ g->messages[i].role, g->messages[i].content };
	*rq = (struct engine_request){
		.input = g->input, .ninput = g->ninput, .prompt = g->prompt,
		.messages = g->nmessages ? msgs : NULL, .nmessages = g->nmessages,
		.max_tokens = g->max_tokens,
		.sampling = { .temperature = g->temperature, .top_k = g->top_k, .top_p = g->top_p,
			      .min_p = g->min_p, .repeat_penalty = g->repeat_penalty, .seed = g->seed },
	};
}

/* An inference ends: the last of its tokens and how it ended, or its error. */
static void finish_infer(struct worker *w, struct job *j, const char *finish, const struct engine_error *e)
{
	if (e) {
		job_fail(w, j, e);
	} else {
		j->finish = finish;
		flush_tokens(w, j, WM_DONE);
	}
	job_end(w, j);
}

/* The engine begins a waiting inference; one it refuses ends with the reason. */
static void begin_infer(struct worker *w, struct job *j)
{
	struct engine_error e = { 0 };
	struct engine_request rq;
	struct engine_message *msgs = calloc(j->gen.nmessages + 1, sizeof *msgs);

	if (!msgs)
		abort();
	request_from_gen(&j->gen, &rq, msgs);
	if ((rq.prompt || rq.messages) && !(w->engine->flags & ENGINE_TEXT))
		engine_fail(&e, "bad_request", "this model takes token ids (input), not text");
	else
		w->engine->begin(w->ctx, &rq, &j->seq, &j->prompt_tokens, &e);
	free(msgs);
	if (e.code[0])
		finish_infer(w, j, NULL, &e);
}

/* One step of every running inference; the ones that ended (or were cancelled) answer. */
static void step_infers(struct worker *w)
{
	struct engine_seq *seqs[PROTO_PARALLEL_MAX];
	struct engine_step st[PROTO_PARALLEL_MAX];
	struct job *js[PROTO_PARALLEL_MAX];
	struct engine_error e = { 0 };
	unsigned n = 0;

	for (unsigned i = 0; i < w->parallel; i++) {
		struct job *j = &w->jobs[i];
		if (j->req && j->cancel)	/* what was made before the cancel is the answer */
			finish_infer(w, j, "cancelled", NULL);
		else if (j->seq)
			js[n] = j, seqs[n++] = j->seq;
	}
	int rc = n ? w->engine->step(w->ctx, seqs, st, n, &e) : 0;
	chan_hold_sends(&w->chan);	/* what the step made goes in one write */
	for (unsigned i = 0; i < n; i++) {
		struct job *j = js[i];
		if (rc) {		/* a cancel may have cut the step short */
			finish_infer(w, j, j->cancel ? "cancelled" : NULL, j->cancel ? NULL : &e);
			continue;
		}
		bool stopped = st[i].has_piece && add_piece(j, &st[i].piece);
		if (st[i].done || stopped)
			finish_infer(w, j, st[i].eos || stopped ? "stop" : "length", NULL);
		else if (j->stream && j->npending)
			flush_tokens(w, j, WM_TOKENS);
	}
	if (chan_flush(&w->chan) < 0) {
		log_error("channel write failed: %s", strerror(errno));
		_exit(1);
	}
}

/* The engine's text operation, or a bad_request saying the model has none. */
static bool has_text(struct worker *w, struct engine_error *e)
{
	if (w->engine->flags & ENGINE_TEXT)
		return true;
	engine_fail(e, "bad_request", "this model has no tokenizer");
	return false;
}

static void do_tokenize(struct worker *w, const msgpack_object *msg)
{
	struct engine_error e = { 0 };
	bool add_special = false, parse_special = true;
	char *text = NULL;
	uint32_t *tokens = NULL;
	size_t n = 0;

	if (msg_strdup(msg, "text", &text) || msg_bool(msg, "add_special", &add_special) ||
	    msg_bool(msg, "parse_special", &parse_special))
		malformed(WM_TOKENIZE);
	if (!has_text(w, &e) ||
	    w->engine->tokenize(w->ctx, text, add_special, parse_special, &tokens, &n, &e)) {
		job_fail(w, &w->op, &e);
	} else {
		struct msgw m;
		job_msg(&w->op, &m, WM_DONE);
		msgw_key(&m, "tokens");
		msgw_u32s(&m, tokens, n);
		send_done(w, &w->op, &m);
	}
	free(tokens);
	free(text);
}

static void do_detokenize(struct worker *w, const msgpack_object *msg)
{
	struct engine_error e = { 0 };
	uint32_t *tokens = NULL;
	size_t n = 0, len = 0;
	char *text = NULL;

	if (msg_u32s(msg, "tokens", &tokens, &n))
		malformed(WM_DETOKENIZE);
	if (!has_text(w, &e) || w->engine->detokenize(w->ctx, tokens, n, &text, &len, &e)) {
		job_fail(w, &w->op, &e);
	} else {
		const char *valid;
		text_add(&w->op.text, text, len);	/* token bytes need not be valid UTF-8 */
		len = text_take(&w->op.text, true, &valid);
		struct msgw m;
		job_msg(&w->op, &m, WM_DONE);
		msgw_key(&m, "text");
		msgw_strn(&m, valid, len);
		send_done(w, &w->op, &m);
	}
	free(tokens);
	free(text);
}

/*
 * The strings of msg's array "texts", copied (NULL-terminated, free with
 * free_texts): the embedding loop serves the channel between texts, and a
 * message received there frees msg and what it points into.
 */
static char **copy_texts(const msgpack_object *msg)
{
	const msgpack_object_array *a;

	if (msg_array(msg, "texts", &a))
		malformed(WM_EMBED);
	char **texts = calloc(a->size + 1, sizeof *texts);
	if (!texts)
		abort();
	for (uint32_t i = 0; i < a->size; i++) {
		if (a->ptr[i].type != MSGPACK_OBJECT_STR)
			malformed(WM_EMBED);
		if (!(texts[i] = strndup(a->ptr[i].via.str.ptr, a->ptr[i].via.str.size)))
			abort();
	}
	return texts;
}

static void free_texts(char **texts)
{
	for (char **t = texts; *t; t++)
		free(*t);
	free(texts);
}

/* One vector per text; the first failure fails the request. Keeps nothing of msg. */
static void do_embed(struct worker *w, const msgpack_object *msg)
{
	struct engine_error e = { 0 };
	char **texts = copy_texts(msg);

	struct msgw m;
	job_msg(&w->op, &m, WM_DONE);
	msgw_key(&m, "embeddings");
	msgw_array(&m);
	for (char **t = texts; *t && !e.code[0]; t++) {
		float *vec = NULL;
		size_t dim = 0;
		uint32_t ntokens = 0;
		if (!w->engine->embed)
			engine_fail(&e, "bad_request", "this model does not serve embeddings");
		else if (w->engine->embed(w->ctx, *t, &vec, &dim, &ntokens, &e) == 0)
			msgw_f32s(&m, vec, dim);
		w->op.prompt_tokens += ntokens;
		free(vec);
		service_channel(w);
	}
	free_texts(texts);
	msgw_end(&m);
	msgw_ku64(&m, "prompt_tokens", w->op.prompt_tokens);
	if (e.code[0]) {
		msgw_free(&m);
		job_fail(w, &w->op, &e);
	} else {
		send_done(w, &w->op, &m);
	}
}

/* A text operation (WM_TOKENIZE, WM_DETOKENIZE, WM_EMBED), served to its end while no inference runs. */
static void serve_text_op(struct worker *w, enum wmsg type, const msgpack_object *msg)
{
	uint64_t req = 0;

	if (w->busy) {
		log_error("%s from modeld while %u inferences run", proto_wmsg_name(type), w->busy);
		_exit(1);
	}
	if (msg_u64(msg, "req", &req) || req == 0)
		malformed(type);
	job_begin(w, &w->op, req);
	switch (type) {
	case WM_TOKENIZE: do_tokenize(w, msg); break;
	case WM_DETOKENIZE: do_detokenize(w, msg); break;
	default: do_embed(w, msg); break;
	}
	job_end(w, &w->op);
}

/* The log engines are given (engine.h's levels are log.h's). */
static void engine_log(int level, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	log_msg((enum log_level)level, "%s", text);
}

/* WM_LOAD: what to load, where, and how. */
struct load_args {
	char *engine, *engine_dir, *device, *model, *chat_template;
	uint64_t warmup;
	uint64_t proto;			/* the worker protocol modeld speaks; 0 from one that does not say */
	struct engine_params params;
};

/* An optional unsigned setting: 0 (the engine's default) when absent. */
static uint64_t setting(const msgpack_object *msg, const char *key, uint64_t max)
{
	uint64_t v = 0;

	if (msg_u64(msg, key, &v) == MSG_BAD_TYPE || v > max)
		malformed(WM_LOAD);
	return v;
}

/* The first message: WM_LOAD with the weights fd. Returns the fd. */
static int read_load(struct worker *w, struct load_args *a)
{
	const msgpack_object *msg;
	struct engine_params *p = &a->params;
	uint64_t type = 0, uid = 0, gid = 0;

	if (chan_read(&w->chan, -1, &msg) != 1 || msg_u64(msg, "t", &type) || type != WM_LOAD ||
	    msg_strdup(msg, "engine", &a->engine) || msg_strdup(msg, "engine_dir", &a->engine_dir) ||
	    msg_strdup(msg, "device", &a->device) || msg_strdup(msg, "model", &a->model) ||
	    msg_u64(msg, "warmup", &a->warmup) || msg_u64(msg, "proto", &a->proto) == MSG_BAD_TYPE ||
	    msg_strdup(msg, "chat_template", &a->chat_template) == MSG_BAD_TYPE ||
	    msg_bool(msg, "embedding", &p->embedding) == MSG_BAD_TYPE) {
		log_error("expected WM_LOAD from modeld");
		exit(1);
	}
	p->device = a->device;
	p->model = a->model;
	p->log = engine_log;
	p->tick = on_tick;
	p->tick_arg = w;
	p->chat_template = a->chat_template;
	p->loader_threads = (unsigned)setting(msg, "loader_threads", UINT_MAX);
	p->loader_buffers = (unsigned)setting(msg, "loader_buffers", UINT_MAX);
	p->loader_chunk = (size_t)setting(msg, "loader_chunk", SIZE_MAX);
	p->ctx = (uint32_t)setting(msg, "ctx", UINT32_MAX);
	p->threads = (uint32_t)setting(msg, "threads", UINT32_MAX);
	p->batch = (uint32_t)setting(msg, "batch", UINT32_MAX);
	p->parallel = (uint32_t)setting(msg, "parallel", PROTO_PARALLEL_MAX);
	/* absent: the device decides (all layers on a GPU) */
	p->gpu_layers = msg_get(msg, "gpu_layers") ? (int32_t)setting(msg, "gpu_layers", INT32_MAX) : -1;
	w->uid = msg_u64(msg, "uid", &uid) == MSG_OK && msg_u64(msg, "gid", &gid) == MSG_OK ?
		 (uid_t)uid : SANDBOX_KEEP_IDS;
	w->gid = (gid_t)gid;
	int fd = chan_take_fd(&w->chan);
	if (fd < 0) {
		log_error("WM_LOAD came without the weights fd");
		exit(1);
	}
	return fd;
}

static void load_args_free(struct load_args *a)
{
	free(a->engine);
	free(a->engine_dir);
	free(a->device);
	free(a->model);
	free(a->chat_template);
}

/* How many inferences run at once: as asked, within what the engine can, else its default. */
static unsigned choose_parallel(const struct engine *eng, unsigned asked)
{
	unsigned max = eng->parallel_max ? eng->parallel_max : 1;

	if (asked == 0)
		asked = eng->parallel_default ? eng->parallel_default : 1;
	return asked < max ? asked : max;
}

static void report_loaded(struct worker *w)
{
	struct engine_mem mem = { 0 };
	struct msgw m;

	w->engine->memory(w->ctx, &mem);
	msgw_wmsg(&m, WM_LOADED);
	msgw_ku64(&m, "proto", WPROTO_VERSION);
	msgw_ku64(&m, "mem_bytes", mem.used);
	msgw_ku64(&m, "vocab", w->engine->vocab(w->ctx));
	msgw_ku64(&m, "parallel", w->parallel);
	msgw_end(&m);
	send_or_die(w, &m);
}

/* Loads, sandboxes and warms up; on failure, reports it and exits. */
static void load_model(struct worker *w)
{
	struct engine_error e = { 0 };
	struct load_args a = { 0 };
	char err[256];
	int debug = getenv("MODELD_SECCOMP_DEBUG") != NULL;
	int fd = read_load(w, &a);

	if (a.proto != WPROTO_VERSION) {
		engine_fail(&e, "load_failed", "modeld-worker speaks worker protocol %d and modeld %llu: "
			    "install them from the same build", WPROTO_VERSION, (unsigned long long)a.proto);
		goto failed;
	}
	/* nothing from outside (engine, weights) is touched with modeld's privileges */
	if (sandbox_drop_privileges(w->uid, w->gid, err, sizeof err)) {
		engine_fail(&e, "load_failed", "%s", err);
		goto failed;
	}
	w->engine = engines_find(a.engine, a.engine_dir, &e);
	if (!w->engine) {
		/* A device whose engine is not built here is as unusable as one without a driver. */
		if (strcmp(a.engine, "cuda") == 0)
			engine_fail(&e, ENGINE_UNAVAILABLE, "no engine called cuda in this build");
		goto failed;
	}
	w->parallel = choose_parallel(w->engine, a.params.parallel);
	a.params.parallel = w->parallel;
	w->jobs = calloc(w->parallel, sizeof *w->jobs);
	if (!w->jobs)
		abort();
	if (w->engine->open(&w->ctx, &a.params, &e))
		goto failed;
	/* a crafted model file meets a worker that may no longer do much: it is read in the sandbox,
	 * which opens files only to read them but where a GPU driver opens its device files */
	if (sandbox_enter(strcmp(a.device, "cpu") ? SANDBOX_LOADING_DEVICE : SANDBOX_LOADING, debug,
			  err, sizeof err)) {
		engine_fail(&e, "load_failed", "sandbox: %s", err);
		goto failed;
	}
	if (w->engine->load(w->ctx, fd, on_progress, w, &e))
		goto failed;
	close(fd);
	report_loaded(w);
	if (sandbox_enter(SANDBOX_LOADED, debug, err, sizeof err)) {
		engine_fail(&e, "load_failed", "sandbox: %s", err);
		goto failed;
	}
	uint64_t t0 = clock_mono_ms();
	for (uint64_t i = 0; i < a.warmup; i++)
		if (w->engine->warmup(w->ctx, &e))
			goto failed;
	if (a.warmup) {
		struct msgw m;
		msgw_wmsg(&m, WM_WARMED);
		msgw_ku64(&m, "warmup_ms", clock_mono_ms() - t0);
		msgw_end(&m);
		send_or_die(w, &m);
	}
	load_args_free(&a);
	return;
failed:
	if (w->stop)	/* asked to leave mid-load: nothing to report */
		exit(0);
	log_error("%s: %s", a.model, e.message);
	send_error(w, WM_FAILED, 0, &e);
	exit(1);
}

/* Begins the inferences that came since the last step. */
static void begin_waiting(struct worker *w)
{
	for (unsigned i = 0; i < w->parallel; i++) {
		struct job *j = &w->jobs[i];
		if (j->req && !j->seq && !j->cancel)
			begin_infer(w, j);
	}
}

/*
 * Requests, until WM_STOP or the channel's end. With nothing running the
 * worker waits in a receive; while inferences run it steps them and looks at
 * the channel when one of them ended (its successor may be there already)
 * or every TICK_EVERY_MS, so that a request joins at the next step.
 */
static void serve(struct worker *w)
{
	const msgpack_object *msg;
	uint64_t type = 0;
	int rc = 1;

	w->serving = true;
	while (!w->stop || w->busy) {
		if (w->busy == 0) {
			if ((rc = chan_read(&w->chan, -1, &msg)) != 1)
				break;
			w->last_tick_ms = clock_mono_ms();	/* the channel was read just now */
			msg_u64(msg, "t", &type);
			if (type == WM_TOKENIZE || type == WM_DETOKENIZE || type == WM_EMBED)
				serve_text_op(w, (enum wmsg)type, msg);
			else
				handle_interrupt(w, msg);
			/* Inferences that came with this one join it before the first step. With
			 * none running, what came next (a text operation behind a ping, say) is
			 * read by the receive above, which serves every kind. */
			if (w->busy && chan_buffered(&w->chan))
				service_channel(w);
			continue;
		}
		unsigned before = w->busy;
		begin_waiting(w);
		step_infers(w);
		if ((w->busy && w->busy < before) || chan_buffered(&w->chan))
			service_channel(w);
		else
			on_tick(w);
	}
	if (rc < 0 && w->chan.error)
		log_error("channel: %s", w->chan.error);
}

/*
 * modeld-worker --probe [ENGINE_DIR]: one line per GPU on stdout ("cuda:N",
 * total and free bytes, name, tab-separated), for modeld's inventory at
 * start, and whether the llama engine in ENGINE_DIR runs on a GPU
 * ("engine", "llama", "gpu" or "cpu"). Exits 0 with no GPU lines when there
 * is no usable GPU (the reason on stderr).
 */
static int probe(const char *engine_dir)
{
	struct engine_error e = { 0 };
	const struct engine *llama;

#ifdef MODELD_HAVE_CUDA
	if (cuda_probe(stdout, &e) < 0)
		log_info("no GPU: %s", e.message);
#else
	log_info("no GPU: this build has no cuda engine");
#endif
	if (engine_dir && (llama = engines_find("llama", engine_dir, &e)) != NULL)
		printf("engine\tllama\t%s\n", llama->flags & ENGINE_GPU ? "gpu" : "cpu");
	return 0;
}

int main(int argc, char **argv)
{
	struct worker w = { 0 };

	if (argc > 1 && strcmp(argv[1], "--probe") == 0) {
		log_init("modeld-worker", LOG_LVL_INFO, 0);
		return probe(argc > 2 ? argv[2] : NULL);
	}
	pid_t parent = argc > 1 ? (pid_t)atoi(argv[1]) : 0;

	log_init("modeld-worker", getenv("MODELD_WORKER_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_INFO, 0);
	/* Die with modeld, so that a crashed supervisor leaves no worker holding memory;
	 * then check that modeld did not die before the request took effect. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (parent && getppid() != parent)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	chan_init(&w.chan, WORKER_CHANNEL_FD, FRAME_MAX_DEFAULT);
	load_model(&w);
	serve(&w);
	w.engine->close(w.ctx);
	chan_free(&w.chan);
	for (unsigned i = 0; i < w.parallel; i++)
		free(w.jobs[i].pending);
	free(w.jobs);
	free(w.op.pending);
	return 0;
}
