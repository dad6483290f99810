/*
 * wmsg.h: a worker's message, read and checked before anything acts on it.
 *
 * Nothing a worker says is trusted: a message of an unknown type, with a
 * key its type does not have, a value of the wrong type or out of bounds,
 * or an error code the protocol does not name is a breach, and the reader
 * says which. What the message means for the slot is child.c's business.
 */
#ifndef WMSG_H
#define WMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "../proto/proto.h"
#include "req.h"

#define WMSG_TEXT_LEN 256

struct wmsg_in {
	uint64_t type;			/* enum wmsg, WM_PROGRESS to WM_INFER_FAILED */
	uint64_t bytes, total;		/* progress */
	uint64_t proto, vocab, parallel;	/* loaded */
	uint64_t mem_bytes;		/* loaded, pong */
	uint64_t warmup_ms;		/* warmed */
	uint64_t seq, dev_free, dev_total;	/* pong */
	uint64_t req;			/* tokens, done, infer_failed */
	enum err code;			/* failed, infer_failed */
	bool unavailable;		/* failed: the device, not the model */
	char message[WMSG_TEXT_LEN];
	struct work_out out;		/* tokens, done; text points into the message read */
	uint32_t *tokens;		/* owned: out.tokens */
	float *embeddings;		/* owned: out.embeddings */
};

/* Reads m into w: 0, or -1 with why naming the breach. wmsg_free w either way. */
int wmsg_read(const msgpack_object *m, struct wmsg_in *w, char *why, size_t len);
void wmsg_free(struct wmsg_in *w);

#endif
