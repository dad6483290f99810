/*
 * child.c: worker processes, as the supervisor sees them.
 *
 * A worker is forked with a socketpair on fd 3, in a process group of its
 * own, and exec'd. Its first message, WM_LOAD, carries the weights fd that
 * modeld opened. From then on everything it says is checked here and turned
 * into a slot event; anything malformed gets it killed. Its end is learnt
 * only from waitpid: the slot hears SEV_EXITED once the pid is reaped, which
 * is what lets a slot promise that no two workers ever overlap.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "../proto/clock.h"
#include "../proto/frame.h"
#include "../proto/log.h"
#include "../proto/peer.h"
#include "modeld.h"

struct child {
	LIST_ENTRY(child) link;
	struct slot_rt *rt;
	pid_t pid;
	struct peer *peer;
	struct event *ping;		/* heartbeat, every heartbeat_interval */
	struct event *escalate;		/* stop message -> SIGTERM -> SIGKILL */
	struct event *closed;		/* its channel closed: it must exit, or be killed */
	struct bufferevent *log;	/* its stderr, a pipe: lines go to modeld's log */
	uint64_t last_life_ms;
	uint64_t ping_seq;
	bool loaded;			/* loaded and warmed: the plain heartbeat timeout applies */
	bool stopping;
	bool sent_term;
	char killed_for[SLOT_MESSAGE_LEN];	/* why modeld killed it, for the exit message; "" if not */
	uint64_t file_bytes;		/* of the weights it was given */
};

static LIST_HEAD(, child) children = LIST_HEAD_INITIALIZER(children);
static unsigned nchildren;

static void feed(struct child *c, struct slot_ev *ev)
{
	slot_event(&c->rt->s, ev);
}

static void arm_ms(struct event *ev, uint64_t ms)
{
	struct timeval tv = clock_timeval(ms);
	event_add(ev, &tv);
}

static void child_signal(struct child *c, int sig)
{
	/* The group: nothing the worker started survives it. */
	if (kill(-c->pid, sig) < 0 && errno == ESRCH)
		kill(c->pid, sig);
}

/* Kills the worker once, for the reason its exit will be reported with. */
static void child_kill_for(struct child *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void child_kill_for(struct child *c, const char *fmt, ...)
{
	va_list ap;

	if (c->killed_for[0])	/* already killed, for a reason of its own: its channel breaks too */
		return;
	va_start(ap, fmt);
	vsnprintf(c->killed_for, sizeof c->killed_for, fmt, ap);
	va_end(ap);
	log_error("worker %d (slot %s) %s", (int)c->pid, c->rt->s.conf->name, c->killed_for);
	child_signal(c, SIGKILL);
}

void child_kill(struct child *c, const char *why)
{
	child_kill_for(c, "was killed: %s", why);
}

static void child_bad(struct child *c, const char *why)
{
	child_kill_for(c, "was killed for breaking the worker protocol: %s", why);
}

/* --- messages from the worker --- */

static int on_progress(struct child *c, const msgpack_object *m)
{
	struct slot_ev ev = { .type = SEV_PROGRESS };
	if (msg_u64(m, "bytes", &ev.a) || msg_u64(m, "total", &ev.b) || ev.a > ev.b)
		return -1;
	feed(c, &ev);
	return 0;
}

static int on_loaded(struct child *c, const msgpack_object *m)
{
	struct slot_ev ev = { .type = SEV_LOADED };
	uint64_t mem = 0, proto = 0, vocab = 0;
	if (msg_u64(m, "proto", &proto))
		return -1;
	if (proto != WPROTO_VERSION) {
		char why[96];
		snprintf(why, sizeof why, "it speaks worker protocol %llu, modeld %d (not from the same build?)",
			 (unsigned long long)proto, WPROTO_VERSION);
		child_bad(c, why);
		return 0;
	}
	if (msg_u64(m, "mem_bytes", &mem) || msg_u64(m, "vocab", &vocab) || vocab == 0 || vocab > UINT32_MAX)
		return -1;
	c->rt->s.vocab = (uint32_t)vocab;
	c->loaded = c->rt->s.model->warmup == 0;	/* else once warmed: both are quiet stretches */
	c->rt->s.mem_bytes = mem;
	c->rt->overhead = mem > c->file_bytes ? mem - c->file_bytes : 0;
	feed(c, &ev);
	return 0;
}

static int on_warmed(struct child *c, const msgpack_object *m)
{
	struct slot_ev ev = { .type = SEV_WARMED };
	if (msg_u64(m, "warmup_ms", &ev.a))
		return -1;
	c->loaded = true;
	feed(c, &ev);
	return 0;
}

/* code and message of a failure; the code must be one of the protocol's. */
static int read_failure(const msgpack_object *m, struct slot_ev *ev, char *msg, size_t len)
{
	const char *code, *text;
	size_t ncode, ntext;

	if (msg_str(m, "code", &code, &ncode) || msg_str(m, "message", &text, &ntext))
		return -1;
	ev->unavailable = ncode == strlen("unavailable") && memcmp(code, "unavailable", ncode) == 0;
	ev->code = ev->unavailable ? E_LOAD_FAILED : proto_err_parse(code, ncode);
	if (!ev->unavailable && (strlen(proto_err_name(ev->code)) != ncode ||
				 memcmp(proto_err_name(ev->code), code, ncode) != 0))
		return -1;	/* not a code the protocol names */
	snprintf(msg, len, "%.*s", (int)ntext, text);
	ev->message = msg;
	return 0;
}

static int on_failed(struct child *c, const msgpack_object *m)
{
	struct slot_ev ev = { .type = SEV_FAILED };
	char text[SLOT_MESSAGE_LEN];
	if (read_failure(m, &ev, text, sizeof text))
		return -1;
	feed(c, &ev);
	return 0;
}

static int on_pong(struct child *c, const msgpack_object *m)
{
	uint64_t mem;
	if (msg_u64(m, "mem_bytes", &mem) || msg_u64(m, "dev_free", &c->rt->dev_free) ||
	    msg_u64(m, "dev_total", &c->rt->dev_total))
		return -1;
	c->rt->s.mem_bytes = mem;
	return 0;
}

/* embed's vectors: count arrays of dim numbers each, flattened into *out. */
static int read_embeddings(const msgpack_object *m, struct work_out *o, float **out)
{
	const msgpack_object_array *a;
	int rc = msg_array(m, "embeddings", &a);

	if (rc == MSG_MISSING)
		return 0;
	if (rc || a->size > EMBED_MAX_TEXTS || (a->size && (a->ptr[0].type != MSGPACK_OBJECT_ARRAY ||
	    a->ptr[0].via.array.size == 0 || a->ptr[0].via.array.size > EMBED_MAX_DIM)))
		return -1;
	o->count = a->size;
	o->dim = a->size ? a->ptr[0].via.array.size : 0;
	*out = malloc((size_t)o->count * o->dim * sizeof **out + 1);
	if (!*out)
		abort();
	for (uint32_t i = 0; i < o->count; i++) {
		const msgpack_object *v = &a->ptr[i];
		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != o->dim)
			return -1;
		for (uint32_t j = 0; j < o->dim; j++) {
			const msgpack_object *x = &v->via.array.ptr[j];
			if (x->type != MSGPACK_OBJECT_FLOAT32 && x->type != MSGPACK_OBJECT_FLOAT64)
				return -1;
			(*out)[(size_t)i * o->dim + j] = (float)x->via.f64;
		}
	}
	o->embeddings = *out;
	return 0;
}

/* finish must be one of the reasons the protocol names. */
static int read_finish(const msgpack_object *m, struct work_out *o)
{
	static const char *const reasons[] = { "stop", "length", "cancelled" };
	const char *v;
	size_t n;
	uint64_t prompt = 0;
	int rc = msg_str(m, "finish", &v, &n);

	if (rc == MSG_MISSING)
		return 0;
	if (rc || msg_u64(m, "prompt_tokens", &prompt) || prompt > UINT32_MAX ||
	    msg_u64(m, "first_ms", &o->first_ms))
		return -1;
	for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
		if (n == strlen(reasons[i]) && memcmp(v, reasons[i], n) == 0)
			o->finish = reasons[i];
	o->prompt_tokens = (uint32_t)prompt;
	return o->finish ? 0 : -1;
}

static int on_tokens(struct child *c, const msgpack_object *m, enum slot_event type)
{
	struct work_out o = { 0 };
	struct slot_ev ev = { .type = type, .out = &o };
	uint32_t *tokens = NULL;
	float *embeddings = NULL;
	size_t n = 0;
	int rc = -1;

	/* o.text stays NULL when the engine sends none */
	if (msg_u64(m, "req", &ev.a) || msg_u32s(m, "tokens", &tokens, &n) == MSG_BAD_TYPE ||
	    n > INFER_MAX_TOKENS || msg_str(m, "text", &o.text, &o.ntext) == MSG_BAD_TYPE ||
	    (type == SEV_INFER_DONE && (read_finish(m, &o) || read_embeddings(m, &o, &embeddings))))
		goto out;
	o.tokens = tokens;
	o.ntokens = (uint32_t)n;
	feed(c, &ev);
	rc = 0;
out:
	free(tokens);
	free(embeddings);
	return rc;
}

static int on_infer_failed(struct child *c, const msgpack_object *m)
{
	struct slot_ev ev = { .type = SEV_INFER_FAILED };
	char text[SLOT_MESSAGE_LEN];
	if (msg_u64(m, "req", &ev.a) || read_failure(m, &ev, text, sizeof text))
		return -1;
	feed(c, &ev);
	return 0;
}

/* The keys each message of a worker may have: anything else is a breach. */
static const char *const wm_keys[][9] = {
	[WM_PROGRESS - WM_PROGRESS] = { "t", "bytes", "total" },
	[WM_LOADED - WM_PROGRESS] = { "t", "proto", "mem_bytes", "vocab" },
	[WM_WARMED - WM_PROGRESS] = { "t", "warmup_ms" },
	[WM_FAILED - WM_PROGRESS] = { "t", "code", "message" },
	[WM_PONG - WM_PROGRESS] = { "t", "seq", "mem_bytes", "dev_free", "dev_total" },
	[WM_TOKENS - WM_PROGRESS] = { "t", "req", "tokens", "text" },
	[WM_DONE - WM_PROGRESS] = { "t", "req", "tokens", "text", "finish", "prompt_tokens", "first_ms",
				    "embeddings" },
	[WM_INFER_FAILED - WM_PROGRESS] = { "t", "req", "code", "message" },
};

/* The first key of m that a message of its type may not have, or NULL. */
static const msgpack_object *unknown_key(const msgpack_object *m, uint64_t type)
{
	const char *const *keys = wm_keys[type - WM_PROGRESS];

	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *k = &m->via.map.ptr[i].key;
		bool known = false;
		for (int j = 0; keys[j] && !known; j++)
			known = k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(keys[j]) &&
				memcmp(k->via.str.ptr, keys[j], k->via.str.size) == 0;
		if (!known)
			return k;
	}
	return NULL;
}

static void child_dispatch(struct peer *p, const msgpack_object *m, void *arg)
{
	struct child *c = arg;
	uint64_t type = 0;
	int rc;

	if (m == NULL) {
		/* A worker that is exiting closes its channel first: its exit,
		 * reaped through SIGCHLD, says why. One that goes on running is
		 * of no use and is killed. */
		if (peer_protocol_error(p))
			child_bad(c, peer_error(p));
		else
			arm_ms(c->closed, CHILD_CLOSED_GRACE_MS);
		peer_free(p);
		c->peer = NULL;
		return;
	}
	c->last_life_ms = clock_mono_ms();
	if (msg_u64(m, "t", &type)) {
		child_bad(c, "message without a type");
		return;
	}
	const msgpack_object *key;
	if (type >= WM_PROGRESS && type <= WM_INFER_FAILED && (key = unknown_key(m, type)) != NULL) {
		char why[128];
		bool named = key->type == MSGPACK_OBJECT_STR;
		snprintf(why, sizeof why, "%s with a key it may not have: \"%.*s\"", proto_wmsg_name((int)type),
			 named ? (int)(key->via.str.size > 32 ? 32 : key->via.str.size) : 0,
			 named ? key->via.str.ptr : "");
		child_bad(c, why);
		return;
	}
	switch (type) {
	case WM_PROGRESS: rc = on_progress(c, m); break;
	case WM_LOADED: rc = on_loaded(c, m); break;
	case WM_WARMED: rc = on_warmed(c, m); break;
	case WM_FAILED: rc = on_failed(c, m); break;
	case WM_PONG: rc = on_pong(c, m); break;
	case WM_TOKENS: rc = on_tokens(c, m, SEV_TOKENS); break;
	case WM_DONE: rc = on_tokens(c, m, SEV_INFER_DONE); break;
	case WM_INFER_FAILED: rc = on_infer_failed(c, m); break;
	default: rc = -1; break;
	}
	if (rc < 0) {
		char why[64];
		snprintf(why, sizeof why, "malformed or unexpected %s", proto_wmsg_name((int)type));
		child_bad(c, why);
	}
}

/* --- heartbeats and stopping --- */

static void child_ping_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct child *c = arg;
	const struct slot_conf *conf = c->rt->s.conf;
	uint64_t limit = conf->heartbeat_timeout_ms * (c->loaded ? 1 : HEARTBEAT_LOADING_FACTOR);

	if (c->stopping || c->peer == NULL)
		return;
	if (clock_mono_ms() - c->last_life_ms > limit) {
		child_kill_for(c, "was killed: no heartbeat for %llu ms", (unsigned long long)limit);
		event_del(c->ping);
		return;
	}
	struct msgw w;
	msgw_wmsg(&w, WM_PING);
	msgw_ku64(&w, "seq", ++c->ping_seq);
	msgw_end(&w);
	child_send(c, &w);
	msgw_free(&w);
}

static void child_escalate_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct child *c = arg;
	uint64_t stop = c->rt->s.conf->stop_timeout_ms;
	uint64_t grace = stop / 2 < CHILD_STOP_GRACE_MS ? stop / 2 : CHILD_STOP_GRACE_MS;

	if (!c->sent_term) {
		log_info("worker %d did not stop; SIGTERM", (int)c->pid);
		c->sent_term = true;
		child_signal(c, SIGTERM);
		arm_ms(c->escalate, stop - grace);
		return;
	}
	log_warn("worker %d did not stop within %llu ms; SIGKILL", (int)c->pid, (unsigned long long)stop);
	child_signal(c, SIGKILL);
}

static void child_closed_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	child_kill_for(arg, "was killed: it closed its channel and went on running");
}

void child_stop(struct child *c, bool kill_now)
{
	uint64_t stop = c->rt->s.conf->stop_timeout_ms;
	uint64_t grace = stop / 2 < CHILD_STOP_GRACE_MS ? stop / 2 : CHILD_STOP_GRACE_MS;

	if (kill_now) {
		child_signal(c, SIGKILL);
		return;
	}
	if (c->stopping)
		return;
	c->stopping = true;
	struct msgw w;
	msgw_wmsg(&w, WM_STOP);
	msgw_end(&w);
	child_send(c, &w);
	msgw_free(&w);
	arm_ms(c->escalate, grace);
}

void child_send(struct child *c, struct msgw *w)
{
	if (c->peer)
		peer_send(c->peer, w);
}

pid_t child_pid(const struct child *c)
{
	return c->pid;
}

/* --- its log --- */

/* The whole lines in in (and with all, the rest too) go to modeld's log. */
static void relay_lines(struct evbuffer *in, bool all)
{
	char *line;
	size_t n;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		log_relay(line, n);
		free(line);
	}
	if (all && (n = evbuffer_get_length(in)) > 0) {
		line = (char *)evbuffer_pullup(in, (ev_ssize_t)n);
		log_relay(line, n);
		evbuffer_drain(in, n);
	}
}

static void child_log_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	relay_lines(in, evbuffer_get_length(in) > CHILD_LOG_LINE_MAX);
}

/* --- spawning --- */

/*
 * In the forked child: the worker gets /dev/null for stdin and stdout, the
 * log pipe for stderr, its channel on fd 3 and nothing else (the weights
 * come over the channel); no terminal to reach, no descriptor of modeld's.
 */
static void exec_worker(int chan, int log, const char *path, pid_t parent)
{
	char ppid[16];

	setpgid(0, 0);
	if (dup2(md.devnull, STDIN_FILENO) < 0 || dup2(md.devnull, STDOUT_FILENO) < 0 ||
	    dup2(log, STDERR_FILENO) < 0)
		_exit(126);
	if (chan == WORKER_CHANNEL_FD) {
		fcntl(chan, F_SETFD, 0);
	} else if (dup2(chan, WORKER_CHANNEL_FD) < 0) {
		_exit(126);
	}
	close_range(WORKER_CHANNEL_FD + 1, ~0U, 0);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	snprintf(ppid, sizeof ppid, "%d", (int)parent);
	execl(path, "modeld-worker", ppid, (char *)NULL);
	_exit(127);
}

/*
 * The engine a model runs on: the one configured, else by the file's magic:
 * GGUF is for the llama engine, anything else for the reference engine of
 * the slot's device.
 */
static const char *engine_for(const struct model *m, const char *device, int weights)
{
	char magic[4];

	if (m->engine)
		return m->engine;
	if (pread(weights, magic, sizeof magic, 0) == (ssize_t)sizeof magic && memcmp(magic, "GGUF", 4) == 0)
		return "llama";
	return strncmp(device, "cuda", 4) == 0 ? "cuda" : "cpu";
}

/* The first message: what to load and how, with the weights fd. */
static int send_load(int chan, const struct slot_rt *rt, int weights)
{
	const struct model *m = rt->s.model;
	const struct slot_conf *conf = rt->s.conf;
	struct msgw w;
	size_t len;

	msgw_wmsg(&w, WM_LOAD);
	msgw_ku64(&w, "proto", WPROTO_VERSION);
	msgw_kstr(&w, "model", m->name);
	msgw_kstr(&w, "engine", engine_for(m, conf->device, weights));
	msgw_kstr(&w, "engine_dir", md.engine_dir);
	msgw_kstr(&w, "device", conf->device);
	msgw_ku64(&w, "warmup", m->warmup);
	msgw_ku64(&w, "loader_threads", conf->loader_threads);
	msgw_ku64(&w, "loader_buffers", conf->loader_buffers);
	msgw_ku64(&w, "loader_chunk", conf->loader_chunk);
	msgw_ku64(&w, "ctx", m->ctx);
	msgw_ku64(&w, "threads", m->threads);
	msgw_ku64(&w, "batch", m->batch);
	if (m->gpu_layers != CONFIG_GPU_LAYERS_ALL)
		msgw_ku64(&w, "gpu_layers", m->gpu_layers);
	if (m->chat_template)
		msgw_kstr(&w, "chat_template", m->chat_template);
	msgw_kbool(&w, "embedding", m->embedding);
	if (md.conf.worker_uid != CONFIG_NO_USER) {
		msgw_ku64(&w, "uid", md.conf.worker_uid);
		msgw_ku64(&w, "gid", md.conf.worker_gid);
	}
	msgw_end(&w);
	const void *frame = msgw_frame(&w, &len);
	int rc = frame_send_fd(chan, frame, len, weights);
	msgw_free(&w);
	return rc;
}

static struct child *child_new(struct slot_rt *rt, pid_t pid, int chan)
{
	struct child *c = calloc(1, sizeof *c);
	if (!c)
		abort();
	c->rt = rt;
	c->pid = pid;
	c->last_life_ms = clock_mono_ms();
	evutil_make_socket_nonblocking(chan);
	c->peer = peer_new(md.base, chan, FRAME_MAX_DEFAULT, CLIENT_MAX_OUTPUT, child_dispatch, c);
	c->ping = event_new(md.base, -1, EV_PERSIST, child_ping_cb, c);
	c->escalate = evtimer_new(md.base, child_escalate_cb, c);
	c->closed = evtimer_new(md.base, child_closed_cb, c);
	arm_ms(c->ping, rt->s.conf->heartbeat_interval_ms);
	LIST_INSERT_HEAD(&children, c, link);
	nchildren++;
	return c;
}

int child_open_model(const struct model *m, uint64_t *size, char *err, size_t errlen)
{
	struct stat st;
	/* O_NONBLOCK: opening a FIFO must not wait for a writer */
	int fd = open(m->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open %s: %s", m->name, m->path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: %s is not a regular file", m->name, m->path);
		close(fd);
		return -1;
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

struct child *child_spawn(struct slot_rt *rt, char *err, size_t errlen)
{
	const struct model *m = rt->s.model;
	int sv[2], logp[2];
	uint64_t bytes;
	int weights = child_open_model(m, &bytes, err, errlen);

	if (weights < 0)
		return NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		close(weights);
		return NULL;
	}
	if (pipe2(logp, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		close(weights);
		return NULL;
	}
	pid_t parent = getpid(), pid = fork();
	if (pid == 0)
		exec_worker(sv[1], logp[1], md.worker_path, parent);
	close(sv[1]);
	close(logp[1]);
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		close(logp[0]);
		close(weights);
		return NULL;
	}
	setpgid(pid, pid);	/* also here, so that signals to the group work at once */
	if (send_load(sv[0], rt, weights) < 0)
		log_warn("worker %d: cannot send the load message: %s", (int)pid, strerror(errno));
	close(weights);
	log_info("slot %s: worker %d loading %s", rt->s.conf->name, (int)pid, m->name);
	struct child *c = child_new(rt, pid, sv[0]);
	c->file_bytes = bytes;
	evutil_make_socket_nonblocking(logp[0]);
	c->log = bufferevent_socket_new(md.base, logp[0], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->log, child_log_cb, NULL, NULL, c);
	bufferevent_enable(c->log, EV_READ);
	return c;
}

/* --- reaping --- */

static void describe_exit(const struct child *c, int status, char *buf, size_t len)
{
	if (c->killed_for[0])
		snprintf(buf, len, "%s", c->killed_for);
	else if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "ended (status %#x)", status);
}

static void child_free(struct child *c)
{
	if (c->log) {
		/* what it wrote last, before it exited, is read now */
		char buf[4096];
		ssize_t n;
		struct evbuffer *in = bufferevent_get_input(c->log);
		while ((n = read(bufferevent_getfd(c->log), buf, sizeof buf)) > 0)
			evbuffer_add(in, buf, (size_t)n);
		relay_lines(in, true);
		bufferevent_free(c->log);
	}
	if (c->peer)
		peer_free(c->peer);
	event_free(c->ping);
	event_free(c->escalate);
	event_free(c->closed);
	LIST_REMOVE(c, link);
	nchildren--;
	free(c);
}

static struct child *child_of_pid(pid_t pid)
{
	struct child *c;

	LIST_FOREACH(c, &children, link)
		if (c->pid == pid)
			return c;
	return NULL;
}

/*
 * modeld is its workers' subreaper: what a worker started and left behind,
 * even in a session of its own, becomes modeld's child when the worker
 * ends, and is killed here. Children are read from /proc.
 */
static void kill_orphans(void)
{
	char path[64];
	long pid;
	FILE *f;

	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	if (!(f = fopen(path, "re")))
		return;
	while (fscanf(f, "%ld", &pid) == 1) {
		if (child_of_pid((pid_t)pid))
			continue;
		log_warn("process %ld, left behind by a worker, is killed", pid);
		kill((pid_t)pid, SIGKILL);
	}
	fclose(f);
}

void child_reap(void)
{
	int status;
	pid_t pid;
	bool reaped = false;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct child *c = child_of_pid(pid);
		if (!c)
			continue;	/* an orphan of a worker, killed before */
		reaped = true;
		char how[SLOT_MESSAGE_LEN];
		describe_exit(c, status, how, sizeof how);
		log_info("worker %d (slot %s) %s", (int)pid, c->rt->s.conf->name, how);
		kill(-pid, SIGKILL);	/* anything left in its group */
		struct slot_rt *rt = c->rt;
		rt->child = NULL;
		child_free(c);
		struct slot_ev ev = { .type = SEV_EXITED, .message = how };
		slot_event(&rt->s, &ev);
	}
	if (reaped)
		kill_orphans();
}

unsigned child_count(void)
{
	return nchildren;
}

void child_kill_all(void)
{
	struct child *c;
	LIST_FOREACH(c, &children, link)
		child_signal(c, SIGKILL);
}
