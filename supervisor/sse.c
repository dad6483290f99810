/*
 * sse.c: events as server-sent events (sse.h), each with its seq as its id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "../proto/frame.h"
#include "../proto/json.h"
#include "core.h"
#include "httpio.h"
#include "sse.h"

/*
 * A client reading events as server-sent events: all of some kinds (of one
 * slot), or one job's. What it may owe is bounded: a stream that starts
 * from a Last-Event-ID, or that left HTTP_STREAM_STEP unread, is behind:
 * it is given the kept events from `next` on, HTTP_STREAM_STEP at a time
 * as it reads them, until it has caught up with the live ones.
 */
struct stream {
	LIST_ENTRY(stream) link;
	struct evhttp_request *er;
	unsigned kinds;			/* a bit per event kind */
	const struct slot *slot;	/* only this slot's events; NULL: every slot's */
	uint64_t job;			/* only this job's, ending with it; 0: not a job's stream */
	uint64_t next;			/* behind: the seq of the next event it is to be given */
	bool behind;
};

static LIST_HEAD(, stream) streams = LIST_HEAD_INITIALIZER(streams);
static struct event *keepalive;

/* An event as one server-sent event, its id the event's seq; NULL if it does not decode. */
static char *event_text(const struct event_ref *e)
{
	msgpack_unpacked u;
	size_t used;
	const char *why;
	char *data = NULL, *text = NULL;

	msgpack_unpacked_init(&u);
	if (frame_decode(e->frame, e->len, e->len, &u, &used, &why) == FRAME_OK) {
		json_t *j = msg_to_json(&u.data);
		data = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	if (data && asprintf(&text, "id: %llu\ndata: %s\n\n", (unsigned long long)e->seq, data) < 0)
		text = NULL;
	free(data);
	msgpack_unpacked_destroy(&u);
	return text;
}

static bool stream_wants(const struct stream *wt, const struct event_ref *e)
{
	if (wt->job)
		return e->job == wt->job;
	return (wt->kinds & (1u << e->kind)) && (!wt->slot || wt->slot == e->slot);
}

static void stream_caught_up(struct evhttp_connection *conn, void *arg);

/* Writes text to the stream; with more_when_read, goes on catching up once the client has read it all. */
static void stream_write(struct stream *wt, const char *text, bool more_when_read)
{
	struct evbuffer *out = evbuffer_new();

	evbuffer_add(out, text, strlen(text));
	if (more_when_read)
		evhttp_send_reply_chunk_with_cb(wt->er, out, stream_caught_up, wt);
	else
		evhttp_send_reply_chunk(wt->er, out);
	evbuffer_free(out);
}

/* The stream ends: the job did, or modeld stops. */
static void stream_end(struct stream *wt)
{
	evhttp_connection_set_closecb(evhttp_request_get_connection(wt->er), NULL, NULL);
	evhttp_send_reply_end(wt->er);
	LIST_REMOVE(wt, link);
	free(wt);
}

/* The client went away; evhttp has let go of the exchange, which ending it frees. */
static void stream_closed(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	struct stream *wt = arg;

	evhttp_send_reply_end(wt->er);
	LIST_REMOVE(wt, link);
	free(wt);
}

/* Tells a stream that the events after seq after up to first_kept - 1 are gone. */
static void stream_missed(struct stream *wt, uint64_t after, uint64_t first_kept)
{
	char gap[160];

	snprintf(gap, sizeof gap, "data: {\"event\":\"missed\",\"after\":%llu,\"first_kept\":%llu}\n\n",
		 (unsigned long long)after, (unsigned long long)first_kept);
	stream_write(wt, gap, false);
}

/*
 * Gives a stream that is behind the kept events from wt->next on, until the
 * client owes HTTP_STREAM_STEP (the rest once it has read that) or it has
 * caught up. A job's stream may end in it: false then (wt is freed).
 */
static bool stream_catch_up(struct stream *wt)
{
	while (wt->next <= events_last_seq()) {
		if (wt->next < events_first_kept()) {
			stream_missed(wt, wt->next - 1, events_first_kept());
			wt->next = events_first_kept();
		}
		const struct event_ref *e = events_kept(wt->next++);
		char *text = stream_wants(wt, e) ? event_text(e) : NULL;
		if (!text)
			continue;
		bool step_done = httpio_owed(wt->er) >= HTTP_STREAM_STEP;
		stream_write(wt, text, step_done);
		free(text);
		if (wt->job && e->job_over) {
			stream_end(wt);
			return false;
		}
		if (step_done)
			return true;
	}
	wt->behind = false;
	return true;
}

/* The client of a stream that is behind has read what it was given. */
static void stream_caught_up(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	struct stream *wt = arg;

	if (wt->behind)
		stream_catch_up(wt);
}

void sse_event(const struct event_ref *e, struct msgw *w)
{
	struct stream *wt = LIST_FIRST(&streams), *next;
	char *text = NULL;

	(void)w;
	for (; wt; wt = next) {
		next = LIST_NEXT(wt, link);
		if (wt->behind || !stream_wants(wt, e))
			continue;	/* one behind is given e from the kept events */
		if (!text && !(text = event_text(e)))
			return;
		bool fell_behind = httpio_owed(wt->er) > HTTP_STREAM_STEP;
		if (fell_behind) {
			wt->behind = true;
			wt->next = e->seq + 1;
		}
		stream_write(wt, text, fell_behind);
		if (wt->job && e->job_over)
			stream_end(wt);
	}
	free(text);
}

static void keep_alive(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	struct stream *wt;

	/* a comment: proxies and the idle timeout see a live stream (one behind is being written to) */
	LIST_FOREACH(wt, &streams, link)
		if (!wt->behind)
			stream_write(wt, ":\n\n", false);
}

/*
 * Starts the stream of er as wt: the live events, after the kept ones since
 * seq after when replay; false when it ended at once (ended and freed).
 */
static bool stream_start(struct stream *wt, struct evhttp_request *er, uint64_t after, bool replay)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(er);

	wt->er = er;
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_send_reply_start(er, HTTP_OK, "OK");
	httpio_bound_send_buffer(er);
	LIST_INSERT_HEAD(&streams, wt, link);
	evhttp_connection_set_closecb(evhttp_request_get_connection(er), stream_closed, wt);
	stream_write(wt, ":\n\n", false);
	if (!replay)
		return true;
	if (after > events_last_seq()) {	/* a seq of an earlier modeld */
		stream_missed(wt, after, events_first_kept());
		return true;
	}
	wt->behind = true;
	wt->next = after + 1;
	return stream_catch_up(wt);
}

/* The Last-Event-ID a reconnecting client sends (or ?last_event_id=) into *id; *have false if none
 * (or empty). -1 when it is not a decimal event number. */
static int last_event_id(struct evhttp_request *er, struct evkeyvalq *query, uint64_t *id, bool *have)
{
	const char *v = evhttp_find_header(evhttp_request_get_input_headers(er), "Last-Event-ID");

	if (!v)
		v = evhttp_find_header(query, "last_event_id");
	*id = 0;
	*have = v && *v;
	return *have ? proto_parse_u64(v, UINT64_MAX, id) : 0;
}

/* A comma-separated list of event kinds as a mask; 0 if one is not a kind. */
static unsigned parse_kinds(const char *list)
{
	unsigned mask = 0;

	for (const char *p = list; *p; p += *p == ',') {
		size_t n = strcspn(p, ",");
		int k = proto_event_parse(p, n);
		if (k < 0)
			return 0;
		mask |= 1u << k;
		p += n;
	}
	return mask;
}

/* GET /v1/events[?events=state,progress][&slot=NAME]: events as they happen, from Last-Event-ID on. */
void sse_events(struct evhttp_request *er)
{
	struct evkeyvalq query;
	const char *kinds, *slot;
	struct stream *wt = calloc(1, sizeof *wt);
	bool have;

	if (!wt)
		abort();
	evhttp_parse_query_str(evhttp_uri_get_query(evhttp_request_get_evhttp_uri(er)) ?
			       evhttp_uri_get_query(evhttp_request_get_evhttp_uri(er)) : "", &query);
	wt->kinds = (1u << EVK__COUNT) - 1;
	if ((kinds = evhttp_find_header(&query, "events")) != NULL)
		wt->kinds = parse_kinds(kinds);
	wt->slot = (slot = evhttp_find_header(&query, "slot")) != NULL ? core_find(slot) : NULL;
	uint64_t after;
	if (last_event_id(er, &query, &after, &have) < 0) {
		httpio_error(er, 400, "invalid_request_error", "bad_request",
			   "Last-Event-ID (or last_event_id) must be an event's seq, a decimal number");
		free(wt);
	} else if (!wt->kinds || (slot && !wt->slot)) {
		httpio_error(er, wt->kinds ? 404 : 400, "invalid_request_error", wt->kinds ? "unknown_slot" : "bad_request",
			   wt->kinds ? "no slot of that name" : "events is a comma-separated list of event kinds");
		free(wt);
	} else
		stream_start(wt, er, after, have);
	evhttp_clear_headers(&query);
}

/* GET /api/jobs/ID (the job) or /api/jobs/ID/events (its events so far and to its end). */
void sse_job(struct evhttp_request *er, const char *rest)
{
	char *end;
	unsigned long long id = strtoull(rest, &end, 10);
	const struct job_rec *j = end != rest ? events_find_job(id) : NULL;
	struct msgw w;

	if (!j || (*end && strcmp(end, "/events") != 0)) {
		httpio_error(er, 404, "invalid_request_error", "not_found", "no such job (the last 64 are kept)");
		return;
	}
	if (!*end) {
		msgw_init(&w);
		events_write_job(&w, j);
		httpio_json(er, HTTP_OK, httpio_frame_json(&w));
		return;
	}
	struct stream *wt = calloc(1, sizeof *wt);
	if (!wt)
		abort();
	wt->job = id;
	if (stream_start(wt, er, events_first_kept() - 1, true) && j->over) {
		/* its events are no longer kept: where it ended, as its last job event said */
		msgw_init(&w);
		events_write_job(&w, j);
		json_t *last = httpio_frame_json(&w);
		char *data = json_dumps(last, JSON_COMPACT);
		stream_write(wt, "data: ", false);
		stream_write(wt, data ? data : "{}", false);
		stream_write(wt, "\n\n", false);
		free(data);
		json_decref(last);
		stream_end(wt);
	}
}


void sse_init(struct event_base *base)
{
	struct timeval every = { HTTP_KEEPALIVE_SECONDS, 0 };

	keepalive = event_new(base, -1, EV_PERSIST, keep_alive, NULL);
	event_add(keepalive, &every);
}

void sse_stop(void)
{
	while (!LIST_EMPTY(&streams))
		stream_end(LIST_FIRST(&streams));
	if (keepalive)
		event_free(keepalive);
	keepalive = NULL;
}
