/*
 * httpreq.h: an HTTP request's JSON body as a request. OpenAI's names are
 * turned into the socket's, and the body is read by the socket's reader
 * (req_read, from JSON), so the bounds and the error messages are the
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
 * An inference's or an embedding's body into r (its op is set here): the
 * fields OpenAI names otherwise, then every argument the socket's request
 * takes (wait_ms, else default_wait_ms); embeddings' encoding_format and
 * dimensions into *emb. A body nested deeper than MSGW_MAX_DEPTH is
 * refused. The model is the caller's to read. Body is changed
 * as it is read. What r keeps is its own (copied). 0, or -1 with err
 * naming the field.
 */
int httpreq_read(json_t *body, bool embeddings, uint64_t default_wait_ms, struct req *r,
		 struct httpreq_embed *emb, char *err, size_t errlen);

#endif
