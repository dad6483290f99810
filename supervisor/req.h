/*
 * req.h: a client request, read once into one shape whatever face it came
 * through, and kept until its one final reply.
 *
 * A face (the socket's ops, HTTP) makes a request with req_new, reads its
 * arguments with req_read (from msgpack or JSON: the same bounds and error
 * messages either way) and hands it to the core (core_submit). It waits in
 * a slot (as a load or unload waiter, in the infer queue, or at the
 * worker) until the slot's machine gives it its one final reply, which
 * req_reply sends through the request's sink (its face) before freeing it.
 * A face whose client went away orphans its requests (req_orphan): their
 * replies go nowhere.
 */
#ifndef REQ_H
#define REQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "../proto/args.h"
#include "../proto/gen.h"
#include "../proto/proto.h"

/* The longest a request may wait in a queue. */
#define INFER_MAX_WAIT_MS (24u * 3600 * 1000)
/* How long an inference waits for its slot by default, on the socket. */
#define INFER_DEFAULT_WAIT_MS 30000
/* wait_ms of a request that waits as long as its client does (HTTP, whose hang-up ends it) */
#define REQ_WAIT_FOREVER UINT64_MAX
#define REQ_ERROR_LEN 256

struct model;

TAILQ_HEAD(req_list, req);

/* What one message of a worker carried for a request (tokens and text
 * streamed or final; the rest only in the final one). */
struct work_out {
	const uint32_t *tokens;
	uint32_t ntokens;
	const char *text;		/* NULL: the engine has no text */
	size_t ntext;
	const char *finish;		/* infer: "stop", "length" or "cancelled"; NULL otherwise */
	uint32_t prompt_tokens;
	uint64_t first_ms;		/* with finish: from the worker's start to its first token */
	const float *embeddings;	/* embed: count vectors of dim floats */
	uint32_t count, dim;
};

struct req;
struct slot;

/* Where a request's replies go: its face. */
struct req_sink {
	/* The one final reply: code E_NONE with the op's results, else the error. */
	void (*finish)(struct req *r, const struct slot *s, enum err code, const char *message);
	/* Part of a streamed answer. */
	void (*chunk)(struct req *r, const struct work_out *o);
	/* The request goes away (answered or discarded): the sink lets go of it. */
	void (*forget)(struct req *r);
};

/* Why a request was refused: its code, and a message that names what is wrong. */
struct req_error {
	enum err code;
	char message[REQ_ERROR_LEN];
};

struct req {
	TAILQ_ENTRY(req) link;		/* in the slot list that holds it */
	TAILQ_ENTRY(req) asker_link;	/* in its asker's list of outstanding requests, if it keeps one */
	uint64_t id;			/* the client's id */
	uint64_t seq;			/* unique in this modeld; names it to workers */
	enum op op;
	const struct req_sink *sink;	/* NULL once its asker has gone: its replies go nowhere */
	void *asker;			/* the sink's: who asked (a socket client, an HTTP exchange) */
	/* its target: the model named (NULL: none), the slot named (NULL: the model's) */
	const struct model *model;
	char *slot_name;
	struct slot *slot;		/* the slot holding it, until its reply */
	struct req_list *list;		/* the slot list holding it, or NULL */
	uint64_t job;
	bool wait;
	bool force;
	bool admin;			/* its client may administer: autoload = admin lets it load */
	uint64_t started_ms;
	/* infer */
	uint64_t wait_ms;		/* the longest it may wait in a queue */
	uint64_t keep_alive_ms;		/* keeps the model loaded this long after it */
	bool gpu_try;			/* the device lock: try, not wait */
	void *timer;			/* the core's timer for wait_ms */
	/* what the worker is asked: infer's generation (gen.stream for every
	 * op), tokenize's text (gen.prompt), detokenize's tokens (gen.input),
	 * embed's texts */
	struct gen gen;
	bool add_special, parse_special;
	char **texts;
	uint32_t ntexts;
	/* the answer so far */
	uint32_t *tokens;
	uint32_t ntokens;
	char *text;			/* NULL until the worker sends text */
	size_t ntext;
	char finish[sizeof "cancelled"];
	uint32_t prompt_tokens;
	uint64_t sent_ms;		/* when it went to the worker */
	uint64_t first_token_ms;	/* when its first token was made, 0 before */
	float *embeddings;
	uint32_t count, dim;
};

/* What the faces read differently: how long work waits by default, and the name of embed's texts. */
struct req_read_opts {
	uint64_t wait_ms;
	const char *texts;
};

/* A request of op under the asker's id, its replies to sink; it takes the next seq, which names it to workers. */
struct req *req_new(const struct req_sink *sink, void *asker, uint64_t id, enum op op, uint64_t now_ms);
/*
 * The arguments of r's op from map (msgpack or JSON) into r, copied: map
 * may go once this returns. 0, or -1 with err naming what is wrong.
 */
int req_read(struct req *r, struct arg map, const struct req_read_opts *opts, struct req_error *err);
void req_fail(struct req_error *err, enum err code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Its asker has gone: the request goes on, unheard. */
void req_orphan(struct req *r);
/* Streams part of r's answer to its sink. */
void req_chunk(struct req *r, const struct work_out *o);
/* r's final reply (through its sink), then r is freed. */
void req_reply(struct req *r, const struct slot *s, enum err code, const char *message);
/* r goes away unanswered (its asker was answered already, or is gone). */
void req_discard(struct req *r);
/* Adds what a worker's message carried (o; NULL: nothing) to r's answer; now_ms dates a first token. */
void req_add_output(struct req *r, const struct work_out *o, uint64_t now_ms);
/* Frees what r holds (not r itself). */
void req_clear(struct req *r);

#endif
