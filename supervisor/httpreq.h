/*
 * httpreq.h: an HTTP request's JSON body as a request. OpenAI's names are
 * read as the socket's infer and embed arguments (through the same readers:
 * gen.c, req_read_texts), so the bounds and the error messages are the
 * socket's. Nothing here knows of libevent: a fuzzer calls it as it is.
 */
#ifndef HTTPREQ_H
#define HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <msgpack.h>

#include "../proto/msg.h"
#include "req.h"

/* The largest body modeld reads. */
#define HTTP_MAX_BODY (1 << 20)

/* How an embeddings answer is to be written: OpenAI's encoding_format and dimensions. */
struct httpreq_embed {
	bool base64;		/* little-endian float32, base64 */
	uint32_t dimensions;	/* the length asked for; 0: the model's */
};

/* text[0..n), which must be a JSON object: the object (the caller's), or NULL with err. */
json_t *httpreq_parse(const char *text, size_t n, char *err, size_t errlen);

/*
 * body as the msgpack a socket client would have sent, decoded into u: 0,
 * or -1 with err (too deep, or not a frame). Either way the caller frees
 * w (msgw_free) and u (msgpack_unpacked_destroy); u points into w's bytes.
 */
int httpreq_msg(const json_t *body, struct msgw *w, msgpack_unpacked *u, char *err, size_t errlen);

/*
 * An inference's or an embedding's body into r: how long it may wait
 * (wait_ms, else default_wait_ms), the fields OpenAI names otherwise, and
 * the arguments as the socket reads them; embeddings' encoding_format and
 * dimensions into *emb. Fields are taken out of body as they are read.
 * What r keeps is its own (copied). 0, or -1 with err naming the field.
 */
int httpreq_read(json_t *body, bool embeddings, uint64_t default_wait_ms, struct req *r,
		 struct httpreq_embed *emb, char *err, size_t errlen);

#endif
