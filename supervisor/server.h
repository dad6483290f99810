/*
 * server.h: the control socket and its clients (server.c): transport only.
 * Each client is a peer whose frames go to the dispatch function given to
 * server_listen (the socket protocol, ops.c). A client keeps the list of
 * its requests that wait for a reply, so that one that goes away has them
 * cancelled (core_cancel) and leaves no dangling pointer behind.
 */
#ifndef SERVER_H
#define SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <msgpack.h>

#include "../proto/msg.h"
#include "../proto/proto.h"
#include "events.h"
#include "req.h"

/* The smallest max_frame a client may ask for: room for any error reply. */
#define CLIENT_MIN_FRAME 1024u
/* A subscriber owing this much is behind: its state events are coalesced, its progress and job events left out. */
#define SUBSCRIBER_BEHIND (64u << 10)
/* A subscriber owing more events than this is dropped, told why. */
#define SUBSCRIBER_MAX_OWED (256u << 10)
/* The most a client may leave unread before it is dropped. */
#define CLIENT_MAX_OUTPUT (8u << 20)
/* Out of descriptors, accepting pauses this long; the condition is logged at most every ACCEPT_LOG_MS. */
#define ACCEPT_PAUSE_MS 250
#define ACCEPT_LOG_MS 10000

struct client;
struct evconnlistener;

/* What a client's frame is given to: m is the decoded frame, which does not outlive the call. */
typedef void (*server_dispatch_fn)(struct client *c, const msgpack_object *m);

/* Listens on path (mode, and the running configuration's socket_group) on base; frames go to dispatch. */
int server_listen(struct event_base *base, const char *path, mode_t mode, server_dispatch_fn dispatch, char *err,
		  size_t errlen);
/* At exit: each client is told modeld is shutting down, and the socket goes. */
void server_close(void);
/* The events sink of the socket's subscribers (events.h). */
void server_event(const struct event_ref *e, struct msgw *w);
void server_reply_error(struct client *c, uint64_t id, enum err code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A success reply: begin it, add results, then send it (which frees it). */
void server_reply_begin(struct msgw *w, uint64_t id);
void server_reply_send(struct client *c, struct msgw *w);
/* Sends w, an ended frame, to c: one larger than c accepts is replaced (a reply) or left out (a chunk). */
void server_send(struct client *c, struct msgw *w);
/* c's request r waits for its reply: it is cancelled if c goes (r->asker_link). */
void server_track(struct client *c, struct req *r);
/* r has had its reply, or was let go. */
void server_untrack(struct client *c, struct req *r);
/* c's request under id that has not had its final reply, or NULL. */
struct req *server_find_req(struct client *c, uint64_t id);
void server_subscribe(struct client *c, unsigned mask);
/* The largest frame body c accepts, as its hello said. */
void server_set_max_frame(struct client *c, size_t max);
bool server_is_admin(const struct client *c);
unsigned server_client_count(void);
/* Out of descriptors, l stops accepting for ACCEPT_PAUSE_MS at a time instead of spinning; unguard before freeing l. */
void server_guard_accept(struct evconnlistener *l);
void server_unguard_accept(struct evconnlistener *l);
/* A guarded l stops accepting for ACCEPT_PAUSE_MS. */
void server_pause_accept(struct evconnlistener *l);
/* Subscribers dropped for leaving events unread, since start. */
uint64_t server_dropped_count(void);

#endif
