/*
 * req.h: a client request that outlives the frame it came in.
 *
 * load, unload, restart and infer requests wait in a slot (as load or
 * unload waiters, in the infer queue, or at the worker) until the slot's
 * machine gives them their one final reply through slot_env.finish. The
 * client that sent it may be gone by then: client is NULL, nothing is sent.
 */
#ifndef REQ_H
#define REQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "../proto/proto.h"

struct client;
struct model;

TAILQ_HEAD(req_list, req);

struct req {
	TAILQ_ENTRY(req) link;		/* in the slot list that holds it */
	TAILQ_ENTRY(req) client_link;	/* in its client's list of outstanding requests */
	uint64_t id;			/* the client's id */
	uint64_t seq;			/* unique in this modeld; names it to workers */
	enum op op;
	struct client *client;
	const struct model *model;
	struct slot *slot;		/* the slot holding it, until its reply */
	struct req_list *list;		/* the slot list holding it, or NULL */
	uint64_t job;
	bool wait;
	bool force;
	uint64_t started_ms;
	/* infer */
	uint64_t wait_ms;		/* the longest it may wait in a queue */
	uint64_t keep_alive_ms;		/* keeps the model loaded this long after it */
	bool gpu_try;			/* the device lock: try, not wait */
	void *timer;			/* the supervisor's timer for wait_ms */
	uint32_t *input;
	uint32_t ninput;
	uint32_t max_tokens;
	bool stream;
	uint32_t *tokens;		/* generated so far */
	uint32_t ntokens;
};

#endif
