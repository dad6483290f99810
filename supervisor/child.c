/*
 * child.c: worker processes, as the supervisor sees them.
 *
 * A worker is started (posix_spawn) with a socketpair on fd 3, in a process
 * group of its own. Its first message, WM_LOAD, carries the weights fd that
 * modeld opened. From then on everything it says is checked here and turned
 * into a slot event; anything malformed gets it killed. Its end is learnt
 * only from waitpid: the slot hears SEV_EXITED once the pid is reaped, which
 * is what lets a slot promise that no two workers ever overlap.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
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
#include "child.h"
#include "core.h"
#include "devices.h"
#include "wmsg.h"

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
	bool said_loaded, said_warmed;	/* each is said once, in that order */
	bool stopping;
	bool sent_term;
	char killed_for[SLOT_MESSAGE_LEN];	/* why modeld killed it, for the exit message; "" if not */
	enum worker_death death;		/* when killed_for says it was killed: for what */
	uint64_t file_bytes;		/* of the weights it was given */
};

static LIST_HEAD(, child) children = LIST_HEAD_INITIALIZER(children);
static unsigned nchildren;
static struct event_base *base;
static int devnull = -1;		/* workers' stdin and stdout */

int child_init(struct event_base *b)
{
	base = b;
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	return devnull < 0 ? -1 : 0;
}

void child_end(void)
{
	if (devnull >= 0)
		close(devnull);
	devnull = -1;
}

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
static void child_kill_for(struct child *c, enum worker_death death, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void child_kill_for(struct child *c, enum worker_death death, const char *fmt, ...)
{
	va_list ap;

	if (c->killed_for[0])	/* already killed, for a reason of its own: its channel breaks too */
		return;
	va_start(ap, fmt);
	vsnprintf(c->killed_for, sizeof c->killed_for, fmt, ap);
	va_end(ap);
	c->death = death;
	log_error("worker %d (slot %s) %s", (int)c->pid, c->rt->s.conf->name, c->killed_for);
	child_signal(c, SIGKILL);
}

void child_kill(struct child *c, const char *why)
{
	child_kill_for(c, WD_KILLED, "was killed: %s", why);
}

static void child_bad(struct child *c, const char *why)
{
	child_kill_for(c, WD_PROTOCOL, "was killed for breaking the worker protocol: %s", why);
}

/* --- messages from the worker --- */

/* The worker has loaded: what it reports goes to its slot in the event, and its memory to the devices. */
static void on_loaded(struct child *c, const struct wmsg_in *w)
{
	struct slot_ev ev = { .type = SEV_LOADED, .vocab = (uint32_t)w->vocab, .parallel = (unsigned)w->parallel,
			      .mem_bytes = w->mem_bytes };

	if (c->said_loaded) {
		child_bad(c, "it said it had loaded a second time");
		return;
	}
	c->said_loaded = true;
	if (w->proto != WPROTO_VERSION) {
		char why[96];
		snprintf(why, sizeof why, "it speaks worker protocol %llu, modeld %d (not from the same build?)",
			 (unsigned long long)w->proto, WPROTO_VERSION);
		child_bad(c, why);
		return;
	}
	c->loaded = c->rt->s.model->warmup == 0;	/* else once warmed: both are quiet stretches */
	devices_report_memory(c->rt->index, w->mem_bytes);
	c->rt->overhead = w->mem_bytes > c->file_bytes ? w->mem_bytes - c->file_bytes : 0;
	feed(c, &ev);
}

/* What a worker's message, read and checked (wmsg.c), means for its slot. */
static void on_message(struct child *c, const struct wmsg_in *w)
{
	struct slot_ev ev = { .seq = w->req, .out = &w->out, .code = w->code, .unavailable = w->unavailable,
			      .message = w->message };

	switch (w->type) {
	case WM_PROGRESS:
		feed(c, &(struct slot_ev){ .type = SEV_PROGRESS, .bytes = w->bytes, .total = w->total });
		return;
	case WM_LOADED:
		on_loaded(c, w);
		return;
	case WM_WARMED:
		if (!c->said_loaded || c->said_warmed) {
			child_bad(c, c->said_warmed ? "it said it had warmed up a second time" :
				  "it said it had warmed up before it had loaded");
			return;
		}
		c->said_warmed = true;
		c->loaded = true;
		feed(c, &(struct slot_ev){ .type = SEV_WARMED, .warmup_ms = w->warmup_ms });
		return;
	case WM_PONG:
		devices_report(c->rt->index, w->mem_bytes, w->dev_free, w->dev_total);
		return;
	case WM_FAILED:
		ev.type = SEV_FAILED;
		break;
	case WM_TOKENS:
		ev.type = SEV_TOKENS;
		break;
	case WM_DONE:
		ev.type = SEV_INFER_DONE;
		break;
	default:	/* WM_INFER_FAILED */
		ev.type = SEV_INFER_FAILED;
		break;
	}
	feed(c, &ev);
}

static void child_dispatch(struct peer *p, const msgpack_object *m, void *arg)
{
	struct child *c = arg;
	struct wmsg_in w;
	char why[128];

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
	if (wmsg_read(m, &w, why, sizeof why) == 0)
		on_message(c, &w);
	else
		child_bad(c, why);
	wmsg_free(&w);
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
		child_kill_for(c, WD_KILLED, "was killed: no heartbeat for %llu ms", (unsigned long long)limit);
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
	child_kill_for(arg, WD_KILLED, "was killed: it closed its channel and went on running");
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

void child_send_soon(struct child *c, struct msgw *w)
{
	if (c->peer)
		peer_send_soon(c->peer, w);
}

pid_t child_pid(const struct child *c)
{
	return c->pid;
}

/* --- its log --- */

/* The whole lines in in (and with all, the rest too) go to modeld's log, as c's. */
static void relay_lines(const struct child *c, struct evbuffer *in, bool all)
{
	char *line;
	size_t n;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		log_relay((int)c->pid, line, n);
		free(line);
	}
	if (all && (n = evbuffer_get_length(in)) > 0) {
		line = (char *)evbuffer_pullup(in, (ev_ssize_t)n);
		log_relay((int)c->pid, line, n);
		evbuffer_drain(in, n);
	}
}

static void child_log_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);

	relay_lines(arg, in, evbuffer_get_length(in) > CHILD_LOG_LINE_MAX);
}

/* --- spawning --- */

/*
 * Starts the worker: /dev/null for stdin and stdout, the log pipe for
 * stderr, its channel on fd 3 and nothing else (the weights come over the
 * channel), a process group of its own, no signal blocked. posix_spawn
 * shares modeld's memory until the exec instead of copying its page
 * tables, so a spawn costs the same however much modeld holds.
 * The pid, or -1 with errno.
 */
static pid_t spawn_worker_process(int chan, int log, const char *path, pid_t parent)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none;
	char ppid[16];
	char *argv[] = { "modeld-worker", ppid, NULL };
	pid_t pid;

	snprintf(ppid, sizeof ppid, "%d", (int)parent);
	sigemptyset(&none);
	if (posix_spawn_file_actions_init(&fa))
		return -1;
	posix_spawnattr_init(&at);
	/* dup2 onto itself clears close-on-exec, as the channel needs when it is fd 3 already */
	int rc = posix_spawn_file_actions_adddup2(&fa, devnull, STDIN_FILENO) ||
		 posix_spawn_file_actions_adddup2(&fa, devnull, STDOUT_FILENO) ||
		 posix_spawn_file_actions_adddup2(&fa, log, STDERR_FILENO) ||
		 posix_spawn_file_actions_adddup2(&fa, chan, WORKER_CHANNEL_FD) ||
		 posix_spawn_file_actions_addclosefrom_np(&fa, WORKER_CHANNEL_FD + 1) ||
		 posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK) ||
		 posix_spawnattr_setpgroup(&at, 0) || posix_spawnattr_setsigmask(&at, &none);
	if (rc == 0)
		rc = posix_spawn(&pid, path, &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	errno = rc;
	return rc ? -1 : pid;
}

const char *child_engine_for(const struct model *m, const char *device, int weights)
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
	msgw_kstr(&w, "engine", child_engine_for(m, conf->device, weights));
	msgw_kstr(&w, "engine_dir", config_running()->engine_path);
	msgw_kstr(&w, "device", conf->device);
	msgw_ku64(&w, "warmup", m->warmup);
	msgw_ku64(&w, "loader_threads", conf->loader_threads);
	msgw_ku64(&w, "loader_buffers", conf->loader_buffers);
	msgw_ku64(&w, "loader_chunk", conf->loader_chunk);
	msgw_ku64(&w, "ctx", m->ctx);
	msgw_ku64(&w, "threads", m->threads);
	msgw_ku64(&w, "batch", m->batch);
	msgw_ku64(&w, "parallel", m->parallel);
	if (m->gpu_layers != CONFIG_GPU_LAYERS_ALL)
		msgw_ku64(&w, "gpu_layers", m->gpu_layers);
	if (m->chat_template)
		msgw_kstr(&w, "chat_template", m->chat_template);
	msgw_kbool(&w, "embedding", m->embedding);
	if (config_running()->worker_uid != CONFIG_NO_USER) {
		msgw_ku64(&w, "uid", config_running()->worker_uid);
		msgw_ku64(&w, "gid", config_running()->worker_gid);
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
	c->peer = peer_new(base, chan, FRAME_MAX_DEFAULT, CHILD_MAX_OUTPUT, child_dispatch, c);
	c->ping = event_new(base, -1, EV_PERSIST, child_ping_cb, c);
	c->escalate = evtimer_new(base, child_escalate_cb, c);
	c->closed = evtimer_new(base, child_closed_cb, c);
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
	const char *worker = config_running()->worker_path;
	pid_t pid = spawn_worker_process(sv[1], logp[1], worker, getpid());
	close(sv[1]);
	close(logp[1]);
	if (pid < 0) {
		snprintf(err, errlen, "cannot start %s: %s", worker, strerror(errno));
		close(sv[0]);
		close(logp[0]);
		close(weights);
		return NULL;
	}
	if (send_load(sv[0], rt, weights) < 0)
		log_warn("worker %d: cannot send the load message: %s", (int)pid, strerror(errno));
	close(weights);
	log_info("slot %s: worker %d loading %s", rt->s.conf->name, (int)pid, m->name);
	struct child *c = child_new(rt, pid, sv[0]);
	c->file_bytes = bytes;
	evutil_make_socket_nonblocking(logp[0]);
	c->log = bufferevent_socket_new(base, logp[0], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->log, child_log_cb, NULL, NULL, c);
	bufferevent_enable(c->log, EV_READ);
	return c;
}

/* --- reaping --- */

/* How the worker ended, in words (buf) and as a cause. */
static enum worker_death describe_exit(const struct child *c, int status, char *buf, size_t len)
{
	if (c->killed_for[0]) {
		snprintf(buf, len, "%s", c->killed_for);
		return c->death;
	}
	if (WIFSIGNALED(status)) {
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
		return WD_SIGNAL;
	}
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else
		snprintf(buf, len, "ended (status %#x)", status);
	return WD_EXIT;
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
		relay_lines(c, in, true);
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
		enum worker_death death = describe_exit(c, status, how, sizeof how);
		log_info("worker %d (slot %s) %s", (int)pid, c->rt->s.conf->name, how);
		kill(-pid, SIGKILL);	/* anything left in its group */
		struct slot_rt *rt = c->rt;
		rt->child = NULL;
		child_free(c);
		struct slot_ev ev = { .type = SEV_EXITED, .message = how, .death = death };
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
