/*
 * server.c: the control socket and its clients.
 *
 * Each client is a peer (proto/peer.c); its frames go to the dispatch
 * function server_listen was given. A client keeps the list of its
 * requests that still wait for a reply, so that a client that goes away
 * has its requests cancelled (or, for loads, left to finish unheard) and
 * never leaves a dangling pointer behind.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <event2/listener.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "../proto/peer.h"
#include "config.h"
#include "core.h"
#include "server.h"

struct client {
	LIST_ENTRY(client) link;
	struct peer *peer;
	uid_t uid;
	pid_t pid;
	bool admin;
	unsigned subs;			/* bit mask of enum event_kind */
	struct req_list reqs;		/* waiting for their final reply */
	size_t max_frame;		/* the largest frame body it accepts (hello); SIZE_MAX: it did not say */
	uint64_t active_ms;		/* when it last sent a request */
	uint64_t stale;			/* slots (by index) whose state events were held back */
	struct client *next_dropped;	/* server_event's list of subscribers to let go */
	/*
	 * Told it fell too far behind: kept, and counted among the clients, until
	 * it has read that, hangs up or idles out; what it sends is not read.
	 */
	bool dropped;
};

static LIST_HEAD(, client) clients = LIST_HEAD_INITIALIZER(clients);
static unsigned nclients;
static uint64_t ndropped;
static struct evconnlistener *listener;
/* Listeners that pause when descriptors run out (the socket's, HTTP's), with the timer that resumes each. */
static struct guarded {
	struct evconnlistener *listener;
	struct event *resume;
} guarded[2];
static struct event *idle_sweep;	/* closes clients idle for client_idle_timeout */
static struct event_base *base;
static server_dispatch_fn dispatch;
static char *socket_path;
static uid_t own_uid;			/* modeld's: its clients administer */

static void write_error(struct msgw *w, uint64_t id, enum err code, const char *message);

/* The frame body's id, and whether it is a stream chunk (rather than a final reply). */
static uint64_t frame_id(const void *frame, size_t len, bool *chunk)
{
	msgpack_unpacked u;
	size_t off = 0;
	uint64_t id = 0;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)frame + FRAME_HEADER_LEN, len - FRAME_HEADER_LEN, &off) ==
	    MSGPACK_UNPACK_SUCCESS)
		msg_u64(&u.data, "id", &id);
	*chunk = msg_get(&u.data, "chunk") != NULL;
	msgpack_unpacked_destroy(&u);
	return id;
}

/*
 * No frame larger than the client said it accepts goes to it: a final reply
 * is replaced by too_large under its id; a chunk is left out (the final
 * reply holds its tokens and text too).
 */
void server_send(struct client *c, struct msgw *w)
{
	size_t len;
	const void *frame = msgw_frame(w, &len);
	bool chunk;

	if (len - FRAME_HEADER_LEN <= c->max_frame) {
		peer_send(c->peer, w);
		return;
	}
	uint64_t id = frame_id(frame, len, &chunk);
	if (chunk)
		return;
	char msg[160];
	struct msgw e;
	snprintf(msg, sizeof msg, "the reply is %zu bytes, over the %zu this client accepts (hello's max_frame)",
		 len - FRAME_HEADER_LEN, c->max_frame);
	write_error(&e, id, E_TOO_LARGE, msg);
	peer_send(c->peer, &e);
	msgw_free(&e);
}

void server_reply_send(struct client *c, struct msgw *w)
{
	msgw_end(w);
	server_send(c, w);
	msgw_free(w);
}

void server_reply_begin(struct msgw *w, uint64_t id)
{
	msgw_init(w);
	msgw_map(w);
	msgw_ku64(w, "id", id);
	msgw_kbool(w, "ok", true);
}

static void write_error(struct msgw *w, uint64_t id, enum err code, const char *message)
{
	msgw_init(w);
	msgw_map(w);
	msgw_ku64(w, "id", id);
	msgw_kbool(w, "ok", false);
	msgw_key(w, "error");
	msgw_map(w);
	msgw_kstr(w, "code", proto_err_name(code));
	msgw_kstr(w, "message", message);
	msgw_end(w);
	msgw_end(w);
}

void server_reply_error(struct client *c, uint64_t id, enum err code, const char *fmt, ...)
{
	char message[512];
	struct msgw w;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	write_error(&w, id, code, message);
	server_send(c, &w);
	msgw_free(&w);
}

struct req *server_find_req(struct client *c, uint64_t id)
{
	struct req *r;
	TAILQ_FOREACH(r, &c->reqs, asker_link)
		if (r->id == id)
			return r;
	return NULL;
}

void server_track(struct client *c, struct req *r)
{
	TAILQ_INSERT_TAIL(&c->reqs, r, asker_link);
}

void server_untrack(struct client *c, struct req *r)
{
	TAILQ_REMOVE(&c->reqs, r, asker_link);
}

/* The subscriber read its backlog: the latest state of each slot held back, once. */
static void caught_up(struct peer *p, void *arg)
{
	(void)p;
	struct client *c = arg;
	struct msgw w;

	for (size_t i = 0; i < core_nslots(); i++) {
		if (!(c->stale & (1ull << i)))
			continue;
		events_state_again(core_slot(i), &w);
		peer_send(c->peer, &w);
		msgw_free(&w);
	}
	c->stale = 0;
}

static void client_gone(struct client *c);
static void client_let_go(struct client *c);

/* The stale mask has a bit per slot. */
_Static_assert(CONFIG_MAX_SLOTS <= 64, "a client's stale mask is 64 bits");

/*
 * What a subscriber may owe is bounded: behind, it gets a slot's state
 * events coalesced into one when it catches up, and no progress or job
 * events (the coalesced state says where each slot ended up); past
 * SUBSCRIBER_MAX_OWED it is dropped, with an error frame that says why.
 */
/* Returns false when c must be dropped; the caller drops it (drop_lagging) once it is done with the list. */
static bool deliver_event(struct client *c, int kind, const struct slot *s, struct msgw *w, size_t len)
{
	size_t owed = peer_owed(c->peer);

	if (owed < SUBSCRIBER_BEHIND && !c->stale) {
		peer_send_later(c->peer, w);
	} else if (kind == EVK_STATE && s) {
		if (!c->stale)
			peer_when_drained(c->peer, SUBSCRIBER_BEHIND / 2, caught_up, c);
		c->stale |= 1ull << core_index(s);
	} else if (kind == EVK_PROGRESS || kind == EVK_JOB) {
		/* superseded by the coalesced state */
	} else if (owed + len <= SUBSCRIBER_MAX_OWED) {
		peer_send_later(c->peer, w);
	} else {
		return false;
	}
	return true;
}

/* The last of a dropped subscriber's output is written: it goes. */
static void dropped_drained(struct peer *p, void *arg)
{
	peer_free(p);
	client_gone(arg);
}

/*
 * Drops c, which owes too much: the events it has not begun to receive give
 * way to an error frame that says why, which it reads before its end of
 * the connection, however late it reads.
 */
static void drop_lagging(struct client *c)
{
	char message[128];
	struct msgw w;

	log_warn("client pid %d: %zu bytes of events unread; dropping it", (int)c->pid, peer_owed(c->peer));
	snprintf(message, sizeof message, "dropped: %zu bytes of events were left unread", peer_owed(c->peer));
	write_error(&w, 0, E_BUSY, message);
	peer_send_instead(c->peer, &w);
	msgw_free(&w);
	ndropped++;
	client_let_go(c);
	c->subs = 0;
	c->stale = 0;
	c->dropped = true;
	if (peer_owed(c->peer) == 0)
		dropped_drained(c->peer, c);
	else
		peer_when_drained(c->peer, 0, dropped_drained, c);
}


void server_event(const struct event_ref *e, struct msgw *w)
{
	struct client *c, *next, *dropped = NULL;
	size_t len = e->len;

	LIST_FOREACH(c, &clients, link)
		if ((c->subs & (1u << e->kind)) && len - FRAME_HEADER_LEN <= c->max_frame &&
		    !deliver_event(c, e->kind, e->slot, w, len)) {
			c->next_dropped = dropped;
			dropped = c;
		}
	/* after the walk: letting a client go cancels its requests, which may publish events */
	for (c = dropped; c; c = next) {
		next = c->next_dropped;
		drop_lagging(c);
	}
}

void server_subscribe(struct client *c, unsigned mask)
{
	c->subs = mask;
}

void server_set_max_frame(struct client *c, size_t max)
{
	c->max_frame = max;
}

bool server_is_admin(const struct client *c)
{
	return c->admin;
}

unsigned server_client_count(void)
{
	return nclients;
}

uint64_t server_dropped_count(void)
{
	return ndropped;
}

/* uid 0, modeld's own uid, and members of admin_group (by primary or other group). */
static bool peer_is_admin(const struct ucred *cred)
{
	gid_t groups[256];
	int n = (int)(sizeof groups / sizeof groups[0]);
	struct passwd *pw;

	gid_t admin_group = config_running()->admin_group;

	if (cred->uid == 0 || cred->uid == own_uid)
		return true;
	if (admin_group == CONFIG_NO_GROUP)
		return false;
	if (cred->gid == admin_group)
		return true;
	if ((pw = getpwuid(cred->uid)) == NULL || getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
		return false;
	for (int i = 0; i < n; i++)
		if (groups[i] == admin_group)
			return true;
	return false;
}

/*
 * c will not hear of its requests: those still in a slot are cancelled there
 * (a generation stops in the worker); loads and unloads go on, unheard.
 */
static void client_let_go(struct client *c)
{
	struct req *r;

	while ((r = TAILQ_FIRST(&c->reqs)) != NULL)
		core_cancel(r, true);	/* orphaned, its sink untracks it */
}

/* The client is gone; its peer is freed already, or to be. */
static void client_gone(struct client *c)
{
	client_let_go(c);
	LIST_REMOVE(c, link);
	nclients--;
	free(c);
}

static void client_dispatch(struct peer *p, const msgpack_object *msg, void *arg)
{
	struct client *c = arg;

	if (msg) {
		if (c->dropped)
			return;
		c->active_ms = clock_mono_ms();
		dispatch(c, msg);
		return;
	}
	if (peer_protocol_error(p)) {
		log_info("client pid %d: %s; closing it", (int)c->pid, peer_error(p));
		server_reply_error(c, 0, E_BAD_FRAME, "%s", peer_error(p));
		peer_free_after_flush(p);
	} else {
		if (peer_error(p))
			log_info("client pid %d: %s; dropped", (int)c->pid, peer_error(p));
		peer_free(p);
	}
	client_gone(c);
}

/* Whether a condition that may recur at every accept is due to be logged again. */
static bool log_due(uint64_t *last_ms)
{
	uint64_t t = clock_mono_ms();

	if (*last_ms && t - *last_ms < ACCEPT_LOG_MS)
		return false;
	*last_ms = t;
	return true;
}

/* A connection that is not taken hears why, in one error frame, before it is closed. */
static void refuse(int fd, enum err code, const char *why)
{
	static uint64_t logged_ms;
	struct msgw w;
	size_t len;

	if (log_due(&logged_ms))
		log_warn("refusing clients: %s", why);
	write_error(&w, 0, code, why);
	const void *frame = msgw_frame(&w, &len);
	if (send(fd, frame, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("a refused client: %s", strerror(errno));
	msgw_free(&w);
	close(fd);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	evconnlistener_enable(arg);
}

/*
 * Out of descriptors, the pending connection stays pending and the socket
 * stays readable: accepting pauses a while instead of spinning on EMFILE.
 */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)arg;
	static uint64_t logged_ms;
	int err = EVUTIL_SOCKET_ERROR();

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warn("accept: %s", strerror(err));
		return;
	}
	if (log_due(&logged_ms))
		log_error("accept: %s; not accepting for %d ms at a time while it lasts", strerror(err),
			  ACCEPT_PAUSE_MS);
	server_pause_accept(l);
}

void server_pause_accept(struct evconnlistener *l)
{
	struct timeval pause = clock_timeval(ACCEPT_PAUSE_MS);

	for (size_t i = 0; i < sizeof guarded / sizeof guarded[0]; i++)
		if (guarded[i].listener == l) {
			evconnlistener_disable(l);
			event_add(guarded[i].resume, &pause);
		}
}

void server_guard_accept(struct evconnlistener *l)
{
	for (size_t i = 0; i < sizeof guarded / sizeof guarded[0]; i++)
		if (!guarded[i].listener) {
			guarded[i].listener = l;
			guarded[i].resume = evtimer_new(base, accept_resume_cb, l);
			evconnlistener_set_error_cb(l, accept_error_cb);
			return;
		}
	abort();	/* more listeners than guarded has room for */
}

void server_unguard_accept(struct evconnlistener *l)
{
	for (size_t i = 0; i < sizeof guarded / sizeof guarded[0]; i++)
		if (guarded[i].listener == l) {
			event_free(guarded[i].resume);
			guarded[i] = (struct guarded){ NULL, NULL };
		}
}

/*
 * Why a new client of uid may not have a place, or NULL: one user may not
 * take every place, and the last admin_reserve places (at most a quarter
 * of max_clients) are kept for administrators.
 */
static const char *no_place_for(uid_t uid, bool admin)
{
	const struct config *conf = config_running();
	unsigned reserve = conf->admin_reserve < conf->max_clients / 4 ? conf->admin_reserve : conf->max_clients / 4;
	unsigned same_uid = 0;
	struct client *c;

	if (nclients >= conf->max_clients)
		return "max_clients reached";
	if (!admin && nclients + reserve >= conf->max_clients)
		return "the places left are kept for administrators (admin_reserve)";
	LIST_FOREACH(c, &clients, link)
		same_uid += c->uid == uid;
	if (same_uid >= conf->max_clients_per_uid)
		return "max_clients_per_uid reached for this user";
	return NULL;
}

/* Clients with nothing outstanding and no subscription, silent for client_idle_timeout, are closed. */
static void idle_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	uint64_t t = clock_mono_ms(), idle = config_running()->client_idle_timeout_ms;
	struct client *c, *next;

	for (c = LIST_FIRST(&clients); c; c = next) {
		next = LIST_NEXT(c, link);
		if (!TAILQ_EMPTY(&c->reqs) || c->subs || t - c->active_ms < idle)
			continue;
		log_info("client pid %d: idle; closing it", (int)c->pid);
		if (c->dropped) {	/* it was told why already */
			peer_free(c->peer);
		} else {
			server_reply_error(c, 0, E_TIMEOUT, "closed after %.1f s without a request",
					   (double)idle / 1000);
			peer_free_after_flush(c->peer);
		}
		client_gone(c);
	}
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
		      void *arg)
{
	(void)l; (void)sa; (void)len; (void)arg;
	struct ucred cred = { 0 };
	socklen_t clen = sizeof cred;

	if (core_shutting_down()) {
		refuse(fd, E_SHUTTING_DOWN, "modeld is shutting down");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		close(fd);
		return;
	}
	bool admin = peer_is_admin(&cred);
	const char *why = no_place_for(cred.uid, admin);
	if (why) {
		refuse(fd, E_BUSY, why);
		return;
	}
	struct client *c = calloc(1, sizeof *c);
	if (!c)
		abort();
	c->uid = cred.uid;
	c->pid = cred.pid;
	c->admin = admin;
	c->active_ms = clock_mono_ms();
	c->max_frame = SIZE_MAX;
	TAILQ_INIT(&c->reqs);
	c->peer = peer_new(base, fd, config_running()->max_frame, CLIENT_MAX_OUTPUT, client_dispatch, c);
	LIST_INSERT_HEAD(&clients, c, link);
	nclients++;
}

/* A socket file left by a modeld that died: connecting to it fails. */
static bool socket_in_use(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool used = fd >= 0 && connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0;
	if (fd >= 0)
		close(fd);
	return used;
}

/* The default /run/modeld may not exist yet on a fresh host: make the last directory. */
static void make_parent(const char *path)
{
	char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
	const char *slash = strrchr(path, '/');

	if (!slash || slash == path)
		return;
	snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	if (mkdir(dir, 0755) == 0)
		log_info("made %s", dir);
}

int server_listen(struct event_base *b, const char *path, mode_t mode, server_dispatch_fn fn, char *err,
		  size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const struct config *conf = config_running();

	base = b;
	dispatch = fn;
	own_uid = getuid();

	if (strlen(path) >= sizeof sun.sun_path) {
		snprintf(err, errlen, "socket path %s is too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (socket_in_use(&sun)) {
		snprintf(err, errlen, "%s: another modeld is listening there", path);
		return -1;
	}
	unlink(path);
	make_parent(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || chmod(path, mode) < 0 ||
	    (conf->socket_group != CONFIG_NO_GROUP && chown(path, (uid_t)-1, conf->socket_group) < 0) ||
	    listen(fd, 128) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	listener = evconnlistener_new(base, accept_cb, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!listener) {
		snprintf(err, errlen, "%s: cannot listen", path);
		close(fd);
		return -1;
	}
	server_guard_accept(listener);
	if (!(socket_path = strdup(path)))
		abort();
	if (conf->client_idle_timeout_ms) {
		/* a client is closed between one and one and a quarter timeouts after its last request */
		struct timeval every = clock_timeval(conf->client_idle_timeout_ms / 4 + 1);
		idle_sweep = event_new(base, -1, EV_PERSIST, idle_sweep_cb, NULL);
		event_add(idle_sweep, &every);
	}
	return 0;
}

/*
 * At exit: each client is told that modeld is shutting down (id 0; those
 * that do not read what they are owed may not hear it), and the socket
 * goes. Until then it was accepting, refusing with shutting_down.
 */
void server_close(void)
{
	struct client *c;

	LIST_FOREACH(c, &clients, link)
		if (!c->dropped)
			server_reply_error(c, 0, E_SHUTTING_DOWN, "modeld is shutting down");
	if (listener) {
		server_unguard_accept(listener);
		evconnlistener_free(listener);
		listener = NULL;
		if (idle_sweep)
			event_free(idle_sweep);
		idle_sweep = NULL;
		unlink(socket_path);
	}
	free(socket_path);
	socket_path = NULL;
}
