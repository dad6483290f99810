/*
 * peer.h: a framed msgpack connection on a libevent bufferevent.
 *
 * The read callback decodes whole frames and hands each map to dispatch().
 * A peer that is gone, for whatever reason (EOF, a read error, a bad frame,
 * its output over the limit), arrives as dispatch(peer, NULL, arg) exactly
 * once, with peer_error() saying why (NULL for a plain EOF); nothing is
 * dispatched after that. The owner then frees the peer: peer_free() at once,
 * or peer_free_after_flush() to get a last reply out first (after a bad
 * frame). Both are safe inside dispatch: memory goes after it returns.
 */
#ifndef PEER_H
#define PEER_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <msgpack.h>

#include "msg.h"

struct peer;
typedef void (*peer_dispatch_fn)(struct peer *p, const msgpack_object *msg, void *arg);
typedef void (*peer_drained_fn)(struct peer *p, void *arg);

/* The loop's priorities: its events have PEER_PRIORITIES / 2 (the default); peer_send_later's writes the lowest. */
#define PEER_PRIORITIES 3
#define PEER_LATER_PRIORITY (PEER_PRIORITIES - 1)

/* peer_free_after_flush frees a peer that has not read its output within this. */
#define PEER_FLUSH_SECONDS 5

struct peer *peer_new(struct event_base *base, int fd, size_t max_frame, size_t max_output,
		      peer_dispatch_fn dispatch, void *arg);
/* Sends the frame of w: written at once when nothing is owed. Over the output limit, the peer is dropped instead. */
void peer_send(struct peer *p, struct msgw *w);
/*
 * Queues the frame of w, to be written in a later turn of the loop that has
 * nothing more urgent (what many peers are told: events), so that it does
 * not stand in the way of replies. Its order with peer_send's is kept.
 */
void peer_send_later(struct peer *p, struct msgw *w);
/*
 * Queues the frame of w, to be written once the events of this turn of the
 * loop that are as urgent have run, with whatever they queued for p too:
 * the requests that many clients' reads of one turn hand one worker go in
 * one write. Its order with peer_send's is kept.
 */
void peer_send_soon(struct peer *p, struct msgw *w);
/*
 * Sends the frame of w in place of the frames queued for p that it has not
 * begun to receive (the end of one it has begun still goes first): what a
 * peer that fell too far behind is told last.
 */
void peer_send_instead(struct peer *p, struct msgw *w);
/* Stops reading; frees the peer once its queued output is written (or fails, or
 * PEER_FLUSH_SECONDS have passed). */
void peer_free_after_flush(struct peer *p);
/* Bytes queued for the peer, not yet written to it. */
size_t peer_owed(const struct peer *p);
/* Calls fn once, when what is owed falls to at bytes or below. */
void peer_when_drained(struct peer *p, size_t at, peer_drained_fn fn, void *arg);
const char *peer_error(const struct peer *p);
/* True when the peer went away for sending something that is not a frame. */
bool peer_protocol_error(const struct peer *p);
void peer_free(struct peer *p);

#endif
