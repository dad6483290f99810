/*
 * sse.h: events as server-sent events (sse.c): GET /v1/events and a job's
 * events, from a Last-Event-ID on, with what a client may owe bounded.
 */
#ifndef SSE_H
#define SSE_H

#include <event2/event.h>
#include <event2/http.h>

#include "events.h"

/* An event stream with nothing to say gets a comment this often, so that it is seen to live. */
#define HTTP_KEEPALIVE_SECONDS 15
/*
 * An event stream that owes its client this much is behind: it is given the
 * kept events this much at a time, the next once the client has read it, so
 * that a client that does not read costs little. A stream (of events or of
 * tokens) has its socket's send buffer set to HTTP_STREAM_SNDBUF, which
 * bounds what the kernel holds for a client that does not read.
 */
#define HTTP_STREAM_STEP (64u << 10)
#define HTTP_STREAM_SNDBUF (64u << 10)

/* The streams' keep-alive runs on base. */
void sse_init(struct event_base *base);
/* As modeld stops: every stream ends. */
void sse_stop(void);
/* The events sink of the HTTP event streams (events.h). */
void sse_event(const struct event_ref *e, struct msgw *w);
/* GET /v1/events[?events=state,progress][&slot=NAME]. */
void sse_events(struct evhttp_request *er);
/* GET /api/jobs/ID (the job) or /api/jobs/ID/events (its events so far and to its end); rest is after /api/jobs/. */
void sse_job(struct evhttp_request *er, const char *rest);

#endif
