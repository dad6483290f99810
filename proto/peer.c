/* peer.c: see peer.h. */
#include <stdbool.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "frame.h"
#include "proto.h"
#include "peer.h"

struct peer {
	struct bufferevent *bev;
	struct event *later;	/* deferred work: the gone notice, or the free */
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
	int in_dispatch;
	peer_drained_fn drained;	/* called once when output falls to drained_at */
	void *drained_arg;
	size_t drained_at;
};

static void peer_really_free(struct peer *p)
{
	bufferevent_free(p->bev);
	event_free(p->later);
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
	bufferevent_disable(p->bev, EV_READ);
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

static void peer_read_cb(struct bufferevent *bev, void *arg)
{
	struct peer *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	msgpack_unpacked msg;

	msgpack_unpacked_init(&msg);
	while (!p->gone && !p->free_when_drained && !p->free_pending) {
		size_t len = evbuffer_get_length(in), used;
		const char *why = NULL;
		/* A frame's bytes must be contiguous for the decoder. */
		size_t want = len < p->max_frame + FRAME_HEADER_LEN ? len : p->max_frame + FRAME_HEADER_LEN;
		const unsigned char *buf = evbuffer_pullup(in, (ev_ssize_t)want);
		int rc = frame_decode(buf, want, p->max_frame, &msg, &used, &why);
		if (rc == FRAME_MORE)
			break;
		if (rc == FRAME_ERROR) {
			p->bad_frame = true;
			peer_set_gone(p, why);
			break;
		}
		if (!peer_call(p, &msg.data))
			break;
		evbuffer_drain(in, used);
	}
	msgpack_unpacked_destroy(&msg);
}

static void peer_write_cb(struct bufferevent *bev, void *arg)
{
	struct peer *p = arg;
	size_t owed = evbuffer_get_length(bufferevent_get_output(bev));

	if (p->free_when_drained && owed == 0) {
		peer_free(p);
		return;
	}
	if (p->drained && owed <= p->drained_at) {
		peer_drained_fn fn = p->drained;
		p->drained = NULL;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		fn(p, p->drained_arg);
	}
}

static void peer_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct peer *p = arg;

	if (p->free_when_drained) {
		peer_free(p);
		return;
	}
	if (what & BEV_EVENT_EOF)
		peer_set_gone(p, NULL);
	else if (what & BEV_EVENT_ERROR)
		peer_set_gone(p, "connection error");
}

struct peer *peer_new(struct event_base *base, int fd, size_t max_frame, size_t max_output,
		      peer_dispatch_fn dispatch, void *arg)
{
	struct peer *p = calloc(1, sizeof *p);
	if (!p)
		abort();
	p->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	p->later = event_new(base, -1, 0, peer_later_cb, p);
	if (!p->bev || !p->later)
		abort();
	p->max_frame = max_frame;
	p->max_output = max_output;
	p->dispatch = dispatch;
	p->arg = arg;
	bufferevent_setcb(p->bev, peer_read_cb, peer_write_cb, peer_event_cb, p);
	bufferevent_enable(p->bev, EV_READ | EV_WRITE);
	return p;
}

void peer_send(struct peer *p, struct msgw *w)
{
	size_t len;
	const void *frame = msgw_frame(w, &len);
	struct evbuffer *out = bufferevent_get_output(p->bev);

	if (p->free_pending)
		return;
	if (evbuffer_get_length(out) + len > p->max_output) {
		peer_set_gone(p, "output buffer over its limit");
		return;
	}
	evbuffer_add(out, frame, len);
}

void peer_free_after_flush(struct peer *p)
{
	struct timeval limit = { PEER_FLUSH_SECONDS, 0 };

	p->free_when_drained = true;
	p->notice_pending = false;
	p->drained = NULL;
	bufferevent_disable(p->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(p->bev)) == 0)
		peer_free(p);
	else
		event_add(p->later, &limit);	/* a peer that does not read is not waited for */
}

size_t peer_owed(const struct peer *p)
{
	return evbuffer_get_length(bufferevent_get_output(p->bev));
}

void peer_when_drained(struct peer *p, size_t at, peer_drained_fn fn, void *arg)
{
	p->drained = fn;
	p->drained_arg = arg;
	p->drained_at = at;
	bufferevent_setwatermark(p->bev, EV_WRITE, at, 0);
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
	bufferevent_disable(p->bev, EV_READ | EV_WRITE);
	if (p->in_dispatch == 0)
		event_active(p->later, 0, 0);
}
