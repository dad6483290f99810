/*
 * libFuzzer harness: arbitrary bytes as the body of an HTTP request, read
 * as modeld reads the body of /v1/completions, /v1/chat/completions,
 * /v1/embeddings (supervisor/httpreq.c, into a request as the socket's
 * readers fill it) and of /api/load and /api/unload (the msgpack a socket
 * client would have sent). Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../supervisor/httpreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One endpoint's reading of body, on a copy: reading takes fields out. */
static void read_as(const json_t *body, bool embeddings)
{
	json_t *copy = json_deep_copy(body);
	struct req r = { 0 };
	struct httpreq_embed emb;
	char err[256];

	if (!copy)
		return;
	httpreq_read(copy, embeddings, REQ_WAIT_FOREVER, &r, &emb, err, sizeof err);
	req_clear(&r);		/* read or not: what it holds is its own */
	json_decref(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	json_t *body = size <= HTTP_MAX_BODY ? httpreq_parse((const char *)data, size, err, sizeof err) : NULL;

	if (!body)
		return 0;
	read_as(body, false);
	read_as(body, true);
	json_decref(body);
	return 0;
}
