/*
 * peer.c: see peer.h. A peer is a descriptor with one input buffer and one
 * output buffer of its own. Reads go straight into the input buffer, as
 * much as fits, without asking the kernel how much there is; frames are
 * decoded in place. A frame to send is written at once when nothing is
 * owed, and only what the socket did not take is buffered, with write
 * readiness asked for until it is gone: a reply costs one write and no
 * change to the loop's interest. Replies to the frames of one read go out
 * together, in one write, after the last is handled.
 */
#include <errno.h>
#include <stdbool.h>
#include <sys/queue.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "proto.h"
#include "peer.h"

/* Peers whose later output one turn of the loop writes, before it looks for more urgent work. */
#define PEER_LATER_BATCH 32
/*
 * How long output queued for later waits before it is written: the events of
 * one burst (a switch's states and jobs) then reach each subscriber in one
 * write, not one write each, which is most of a fan-out's cost.
 */
#define PEER_LATER_DELAY_US 2000

/* Room one read has at least: many requests' worth, and a page, as a thousand idle clients each keep it. */
#define PEER_READ_CHUNK 4096

/* Bytes, growing as needed: data[off, off + len) is what is held. */
struct bytes {
	char *data;
	size_t off, len, cap;
};

struct peer {
	int fd;
	struct event *rev;	/* readable: persistent while the peer is read */
	struct event *wev;	/* writable: added only while output is owed */
	struct event *later;	/* deferred work: the gone notice, or the free */
	struct event *soon;	/* writes what peer_send_soon queued; made on its first use */
	struct bytes in, out;
	size_t out_head;	/* bytes at the front of out that end a frame partly written */
	size_t max_frame;
	size_t max_output;
	peer_dispatch_fn dispatch;
	void *arg;
	const char *error;
	bool gone;		/* dispatch(NULL) delivered or scheduled */
	bool bad_frame;
	bool notice_pending;	/* `later` still has to deliver dispatch(NULL) */
	bool free_when_drained;
	bool free_pending;	/* `later` frees the peer */
	bool batching;		/* replies to a batch of frames: queued, then written together */
	int in_dispatch;
	peer_drained_fn drained;	/* called once when output falls to drained_at */
	void *drained_arg;
	size_t drained_at;
	bool later_listed;		/* in `later_peers`: peer_send_later queued output for it */
	LIST_ENTRY(peer) later_link;
};

/*
 * Output queued by peer_send_later, written PEER_LATER_DELAY_US after the
 * first of it by one event of the lowest priority: it runs in a turn of the
 * loop with nothing else to do, after the replies and the reads that wait.
 */
static LIST_HEAD(, peer) later_peers = LIST_HEAD_INITIALIZER(later_peers);
static struct event *later_flush;

/* Room for n more bytes after what b holds, moving what it holds to the front first. */
static void bytes_reserve(struct bytes *b, size_t n)
{
	if (b->off && b->off + b->len + n > b->cap) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	if (b->len + n > b->cap) {
		b->cap = b->len + n > 2 * b->cap ? b->len + n : 2 * b->cap;
		if (!(b->data = realloc(b->data, b->cap)))
			abort();
	}
}

static void bytes_add(struct bytes *b, const char *data, size_t n)
{
	bytes_reserve(b, n);
	memcpy(b->data + b->off + b->len, data, n);
	b->len += n;
}

static void bytes_take(struct bytes *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (b->len == 0)
		b->off = 0;
}

/* The length of the frame whose header starts at h: its header and its body. */
static size_t frame_length(const char *h)
{
	const unsigned char *u = (const unsigned char *)h;

	return FRAME_HEADER_LEN + ((size_t)u[0] << 24 | (size_t)u[1] << 16 | (size_t)u[2] << 8 | u[3]);
}

/* n bytes of out were written: keeps out_head, the end of a frame cut by the write, known. */
static void out_take(struct peer *p, size_t n)
{
	size_t at = p->out_head;

	while (at < n)
		at += frame_length(p->out.data + p->out.off + at);
	p->out_head = at - n;
	bytes_take(&p->out, n);
}

static void peer_really_free(struct peer *p)
{
	if (p->later_listed)
		LIST_REMOVE(p, later_link);
	event_free(p->rev);
	event_free(p->wev);
	event_free(p->later);
	if (p->soon)
		event_free(p->soon);
	close(p->fd);
	free(p->in.data);
	free(p->out.data);
	free(p);
}

/* Calls dispatch. False when the peer was freed by it. */
static bool peer_call(struct peer *p, const msgpack_object *msg)
{
	p->in_dispatch++;
	p->dispatch(p, msg, p->arg);
	p->in_dispatch--;
	if (p->free_pending && p->in_dispatch == 0) {
		peer_really_free(p);
		return false;
	}
	return true;
}

/* Marks the peer gone; the owner hears of it from the loop, never re-entrantly. */
static void peer_set_gone(struct peer *p, const char *why)
{
	if (p->gone)
		return;
	p->gone = true;
	p->notice_pending = true;
	if (!p->error)
		p->error = why;
	event_del(p->rev);
	event_active(p->later, 0, 0);
}

static void peer_later_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct peer *p = arg;

	if (p->free_pending || p->free_when_drained) {	/* the second: its flush ran out of time */
		peer_really_free(p);
		return;
	}
	if (p->notice_pending) {
		p->notice_pending = false;
		peer_call(p, NULL);
	}
}

/* Dispatches every whole frame held; false when the peer was freed. */
static bool peer_decode(struct peer *p)
{
	msgpack_unpacked msg;
	bool alive = true;

	msgpack_unpacked_init(&msg);
	while (p->in.len && !p->gone && !p->free_when_drained && !p->free_pending) {
		size_t used;
		const char *why = NULL;
		int rc = frame_decode(p->in.data + p->in.off, p->in.len, p->max_frame, &msg, &used, &why);
		if (rc == FRAME_MORE)
			break;
		if (rc == FRAME_ERROR) {
			p->bad_frame = true;
			peer_set_gone(p, why);
			break;
		}
		if (!(alive = peer_call(p, &msg.data)))
			break;
		bytes_take(&p->in, used);
	}
	msgpack_unpacked_destroy(&msg);
	return alive;
}

/* Writes what is owed until the socket takes no more; false when the peer is gone. */
static bool peer_flush(struct peer *p)
{
	while (p->out.len) {
		ssize_t n = write(p->fd, p->out.data + p->out.off, p->out.len);
		if (n > 0) {
			out_take(p, (size_t)n);
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && errno == EAGAIN) {
			break;
		} else {
			p->out.len = p->out.off = p->out_head = 0;	/* nobody will read it */
			if (p->free_when_drained)
				peer_free(p);
			else
				peer_set_gone(p, "connection error");
			return false;
		}
	}
	return true;
}

/* After output left: asks for write readiness only while some is owed; tells who waits for a drain. */
static void peer_wrote(struct peer *p)
{
	if (p->out.len)
		event_add(p->wev, NULL);
	else
		event_del(p->wev);
	if (p->free_when_drained && p->out.len == 0) {
		peer_free(p);
		return;
	}
	if (p->drained && p->out.len <= p->drained_at) {
		peer_drained_fn fn = p->drained;
		p->drained = NULL;
		fn(p, p->drained_arg);
	}
}

/* Writes what is owed now (a reply must not wait behind output queued for later). */
static void peer_flush_now(struct peer *p)
{
	if (p->later_listed) {
		LIST_REMOVE(p, later_link);
		p->later_listed = false;
	}
	if (peer_flush(p))
		peer_wrote(p);
}

static void peer_write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct peer *p = arg;

	if (peer_flush(p))
		peer_wrote(p);
}

static void peer_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct peer *p = arg;

	bytes_reserve(&p->in, PEER_READ_CHUNK);
	ssize_t n = read(fd, p->in.data + p->in.off + p->in.len, p->in.cap - p->in.off - p->in.len);
	if (n > 0) {
		p->in.len += (size_t)n;
		p->batching = true;
		if (!peer_decode(p))
			return;
		p->batching = false;
		if (p->out.len && !event_pending(p->wev, EV_WRITE, NULL))
			peer_flush_now(p);
	} else if (n == 0) {
		peer_set_gone(p, NULL);
	} else if (errno != EAGAIN && errno != EINTR) {
		peer_set_gone(p, "connection error");
	}
}

struct peer *peer_new(struct event_base *base, int fd, size_t max_frame, size_t max_output,
		      peer_dispatch_fn dispatch, void *arg)
{
	struct peer *p = calloc(1, sizeof *p);
	if (!p)
		abort();
	p->fd = fd;
	p->rev = event_new(base, fd, EV_READ | EV_PERSIST, peer_read_cb, p);
	p->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, peer_write_cb, p);
	p->later = event_new(base, -1, 0, peer_later_cb, p);
	if (!p->rev || !p->wev || !p->later || evutil_make_socket_nonblocking(fd) < 0)
		abort();
	p->max_frame = max_frame;
	p->max_output = max_output;
	p->dispatch = dispatch;
	p->arg = arg;
	event_add(p->rev, NULL);
	return p;
}

/* Whether len more bytes may go to p: it is not being freed, and over its output limit it is dropped instead. */
static bool peer_takes(struct peer *p, size_t len)
{
	if (p->free_pending)
		return false;
	if (p->out.len + len > p->max_output) {
		peer_set_gone(p, "output buffer over its limit");
		return false;
	}
	return true;
}

void peer_send(struct peer *p, struct msgw *w)
{
	size_t len;
	const char *frame = msgw_frame(w, &len);
	ssize_t n = 0;

	if (!peer_takes(p, len))
		return;
	if (p->out.len == 0 && !p->batching) {	/* nothing owed: straight to the socket */
		n = write(p->fd, frame, len);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			peer_set_gone(p, "connection error");
			return;
		}
		if (n < 0)
			n = 0;
		p->out_head = n > 0 ? len - (size_t)n : 0;
	}
	if ((size_t)n < len) {
		bool was_owed = p->out.len > 0;
		bytes_add(&p->out, frame + n, len - (size_t)n);
		if (p->later_listed && !p->batching)
			peer_flush_now(p);
		else if (!was_owed && !p->batching)
			event_add(p->wev, NULL);
	}
}

/* A few peers' queued output at a time, so that what is more urgent gets in between. */
static void later_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	struct peer *p;

	for (int n = 0; n < PEER_LATER_BATCH && (p = LIST_FIRST(&later_peers)) != NULL; n++) {
		LIST_REMOVE(p, later_link);
		p->later_listed = false;
		if (!p->free_pending && !event_pending(p->wev, EV_WRITE, NULL) && peer_flush(p))
			peer_wrote(p);
	}
	if (!LIST_EMPTY(&later_peers))
		event_active(later_flush, 0, 0);
}

/*
 * Appends the frame of w to what p is owed, for a write to come. True when
 * that write is the caller's to arrange: the socket is not already waited on.
 */
static bool peer_queue(struct peer *p, struct msgw *w)
{
	size_t len;
	const char *frame = msgw_frame(w, &len);

	if (!peer_takes(p, len))
		return false;
	bytes_add(&p->out, frame, len);
	return !event_pending(p->wev, EV_WRITE, NULL);
}

/* *ev, made on first use: an event of no descriptor on p's loop, calling cb with arg. */
static struct event *event_made(struct event **ev, struct peer *p, event_callback_fn cb, void *arg)
{
	if (!*ev && !(*ev = event_new(event_get_base(p->rev), -1, 0, cb, arg)))
		abort();
	return *ev;
}

void peer_send_later(struct peer *p, struct msgw *w)
{
	if (!peer_queue(p, w) || p->later_listed)
		return;		/* written when the socket takes more, or already due */
	if (!later_flush)
		event_priority_set(event_made(&later_flush, p, later_flush_cb, NULL),
				   PEER_LATER_PRIORITY);	/* fails harmlessly without priorities */
	if (LIST_EMPTY(&later_peers) && !event_pending(later_flush, EV_TIMEOUT, NULL)) {
		struct timeval delay = { 0, PEER_LATER_DELAY_US };
		evtimer_add(later_flush, &delay);
	}
	LIST_INSERT_HEAD(&later_peers, p, later_link);
	p->later_listed = true;
}

static void peer_soon_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	struct peer *p = arg;

	if (p->out.len && !p->free_pending && !event_pending(p->wev, EV_WRITE, NULL))
		peer_flush_now(p);
}

void peer_send_soon(struct peer *p, struct msgw *w)
{
	if (peer_queue(p, w))	/* after the events of this turn already due; once if called again */
		event_active(event_made(&p->soon, p, peer_soon_cb, p), 0, 0);
}

void peer_free_after_flush(struct peer *p)
{
	struct timeval limit = { PEER_FLUSH_SECONDS, 0 };

	p->free_when_drained = true;
	p->notice_pending = false;
	p->drained = NULL;
	event_del(p->rev);
	if (p->out.len == 0)
		peer_free(p);
	else
		event_add(p->later, &limit);	/* a peer that does not read is not waited for */
}

void peer_send_instead(struct peer *p, struct msgw *w)
{
	p->out.len = p->out_head;
	if (p->out.len == 0)
		p->out.off = 0;
	peer_send(p, w);
}

size_t peer_owed(const struct peer *p)
{
	return p->out.len;
}

void peer_when_drained(struct peer *p, size_t at, peer_drained_fn fn, void *arg)
{
	p->drained = fn;
	p->drained_arg = arg;
	p->drained_at = at;
}

const char *peer_error(const struct peer *p)
{
	return p->error;
}

bool peer_protocol_error(const struct peer *p)
{
	return p->bad_frame;
}

/* Frees now, or from the loop when called inside one of the peer's own callbacks. */
void peer_free(struct peer *p)
{
	p->free_pending = true;
	p->notice_pending = false;
	event_del(p->rev);
	event_del(p->wev);
	if (p->in_dispatch == 0)
		event_active(p->later, 0, 0);
}
