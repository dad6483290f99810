/*
 * modeld-worker: runs one model for one slot of modeld.
 *
 * Started by modeld with the channel on fd 3. The first message is WM_LOAD,
 * which carries the weights fd: the worker opens no file itself. It loads,
 * reports, enters the sandbox, warms up and then serves WM_INFER until
 * WM_STOP or the end of the channel. Pings are answered between chunks of
 * work, so a long load or generation is never taken for a hung worker.
 *
 * Role: may compute, talk on fd 3 and hold memory; nothing else.
 */
#include <errno.h>
#include <signal.h>
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
#include "engine.h"
#include "sandbox.h"

/* Seconds between progress reports are the supervisor's business; this
 * only keeps the channel from flooding on fast loads. */
#define PROGRESS_EVERY_MS 50

struct worker {
	struct chan chan;
	const struct engine *engine;
	struct engine_ctx *ctx;
	uint64_t infer_req;	/* the request being generated, 0 when none */
	bool cancel;		/* stop the current generation */
	bool stop;		/* leave as soon as the current work ends */
	uint64_t last_progress_ms;
	uint32_t *pending;	/* tokens produced and not yet sent */
	size_t npending;
	bool stream;
	uid_t uid;		/* to drop to once loaded, or SANDBOX_KEEP_IDS */
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

static void flush_tokens(struct worker *w, enum wmsg type)
{
	struct msgw m;

	msgw_wmsg(&m, type);
	msgw_ku64(&m, "req", w->infer_req);
	msgw_key(&m, "tokens");
	msgw_u32s(&m, w->pending, w->npending);
	msgw_end(&m);
	send_or_die(w, &m);
	w->npending = 0;
}

/*
 * Handles the messages that may arrive while work is under way: ping,
 * cancel, stop. WM_INFER and WM_LOAD are not expected then (the supervisor
 * sends one request at a time); one arriving is a protocol error.
 */
static void handle_interrupt(struct worker *w, const msgpack_object *msg)
{
	uint64_t type = 0, v = 0;

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
		if (msg_u64(msg, "req", &v) == MSG_OK && v == w->infer_req)
			w->cancel = true;
		break;
	case WM_STOP:
		w->stop = w->cancel = true;
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

static int on_token(void *arg, uint32_t token)
{
	struct worker *w = arg;

	w->pending[w->npending++] = token;
	if (w->stream)
		flush_tokens(w, WM_TOKENS);
	service_channel(w);
	return w->cancel;
}

static void do_infer(struct worker *w, const msgpack_object *msg)
{
	struct engine_error e = { 0 };
	uint32_t *input = NULL;
	size_t ninput = 0;
	uint64_t req = 0, max_tokens = 0;
	bool stream = false;

	if (msg_u64(msg, "req", &req) || req == 0 || msg_u64(msg, "max_tokens", &max_tokens) ||
	    max_tokens > UINT32_MAX || msg_u32s(msg, "input", &input, &ninput) ||
	    msg_bool(msg, "stream", &stream) || ninput > UINT32_MAX) {
		log_error("malformed WM_INFER from modeld");
		_exit(1);
	}
	w->infer_req = req;
	w->cancel = false;
	w->stream = stream;
	w->npending = 0;
	w->pending = realloc(w->pending, (max_tokens ? max_tokens : 1) * sizeof *w->pending);
	if (!w->pending)
		abort();
	if (w->engine->infer(w->ctx, input, (uint32_t)ninput, (uint32_t)max_tokens, on_token, w, &e))
		send_error(w, WM_INFER_FAILED, req, &e);
	else
		flush_tokens(w, WM_DONE);
	free(input);
	w->infer_req = 0;
}

/* The first message: WM_LOAD with the weights fd. Returns the fd. */
static int read_load(struct worker *w, char **engine, char **device, char **model,
		     uint64_t *warmup, struct engine_params *p)
{
	const msgpack_object *msg;
	uint64_t type = 0, threads = 0, buffers = 0, chunk = 0, uid = 0, gid = 0;

	if (chan_read(&w->chan, -1, &msg) != 1 || msg_u64(msg, "t", &type) || type != WM_LOAD ||
	    msg_strdup(msg, "engine", engine) || msg_strdup(msg, "device", device) ||
	    msg_strdup(msg, "model", model) || msg_u64(msg, "warmup", warmup)) {
		log_error("expected WM_LOAD from modeld");
		exit(1);
	}
	/* loader settings are optional: 0 leaves the engine's default */
	msg_u64(msg, "threads", &threads);
	msg_u64(msg, "buffers", &buffers);
	msg_u64(msg, "chunk", &chunk);
	p->threads = (unsigned)threads;
	p->buffers = (unsigned)buffers;
	p->chunk = (size_t)chunk;
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

static void report_loaded(struct worker *w)
{
	struct engine_mem mem = { 0 };
	struct msgw m;

	w->engine->memory(w->ctx, &mem);
	msgw_wmsg(&m, WM_LOADED);
	msgw_ku64(&m, "mem_bytes", mem.used);
	msgw_end(&m);
	send_or_die(w, &m);
}

/* Loads, sandboxes and warms up; on failure, reports it and exits. */
static void load_model(struct worker *w)
{
	struct engine_error e = { 0 };
	char *engine = NULL, *device = NULL, *model = NULL, err[256];
	uint64_t warmup = 0;
	struct engine_params params = { 0 };
	int fd = read_load(w, &engine, &device, &model, &warmup, &params);
	params.device = device;
	params.model = model;

	w->engine = engine_find(engine);
	if (!w->engine) {
		/* A device whose engine is not built here is as unusable as one without a driver. */
		engine_fail(&e, strcmp(engine, "cuda") == 0 ? ENGINE_UNAVAILABLE : "load_failed",
			    "no engine called %s in this build", engine);
		goto failed;
	}
	if (w->engine->open(&w->ctx, &params, &e))
		goto failed;
	if (w->engine->load(w->ctx, fd, on_progress, w, &e))
		goto failed;
	close(fd);
	report_loaded(w);
	if (sandbox_enter(getenv("MODELD_SECCOMP_DEBUG") != NULL, w->uid, w->gid, err, sizeof err)) {
		engine_fail(&e, "load_failed", "sandbox: %s", err);
		goto failed;
	}
	uint64_t t0 = clock_mono_ms();
	for (uint64_t i = 0; i < warmup; i++)
		if (w->engine->warmup(w->ctx, &e))
			goto failed;
	if (warmup) {
		struct msgw m;
		msgw_wmsg(&m, WM_WARMED);
		msgw_ku64(&m, "warmup_ms", clock_mono_ms() - t0);
		msgw_end(&m);
		send_or_die(w, &m);
	}
	free(engine); free(device); free(model);
	return;
failed:
	if (w->stop)	/* asked to leave mid-load: nothing to report */
		exit(0);
	log_error("%s: %s", model ? model : "model", e.message);
	send_error(w, WM_FAILED, 0, &e);
	exit(1);
}

static void serve(struct worker *w)
{
	const msgpack_object *msg;
	uint64_t type = 0;
	int rc;

	while (!w->stop && (rc = chan_read(&w->chan, -1, &msg)) == 1) {
		if (msg_u64(msg, "t", &type) == MSG_OK && type == WM_INFER)
			do_infer(w, msg);
		else
			handle_interrupt(w, msg);
	}
	if (!w->stop && w->chan.error)
		log_error("channel: %s", w->chan.error);
}

/*
 * modeld-worker --probe: one line per GPU on stdout ("cuda:N", total and
 * free bytes, name, tab-separated), for modeld's inventory at start. Exits
 * 0 with no lines when there is no usable GPU (the reason on stderr).
 */
static int probe(void)
{
#ifdef MODELD_HAVE_CUDA
	struct engine_error e = { 0 };
	if (cuda_probe(stdout, &e) < 0)
		log_info("no GPU: %s", e.message);
#else
	log_info("no GPU: this build has no cuda engine");
#endif
	return 0;
}

int main(int argc, char **argv)
{
	struct worker w = { 0 };

	if (argc > 1 && strcmp(argv[1], "--probe") == 0) {
		log_init("modeld-worker", LOG_LVL_INFO, 0);
		return probe();
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
	free(w.pending);
	return 0;
}
