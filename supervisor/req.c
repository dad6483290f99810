/* req.c: a request's arguments and answer (req.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "req.h"

static void *grow(void *p, size_t have, size_t add, size_t size)
{
	p = realloc(p, (have + add) * size + 1);
	if (!p)
		abort();
	return p;
}

void req_add_output(struct req *r, const struct work_out *o, uint64_t now_ms)
{
	if (!o)
		return;
	if (o->ntokens) {
		/* a streamed token is timed as it comes; tokens that come all at once, by the worker */
		if (!r->first_token_ms)
			r->first_token_ms = o->finish && r->sent_ms ? r->sent_ms + o->first_ms : now_ms;
		r->tokens = grow(r->tokens, r->ntokens, o->ntokens, sizeof *r->tokens);
		memcpy(r->tokens + r->ntokens, o->tokens, (size_t)o->ntokens * sizeof *o->tokens);
		r->ntokens += o->ntokens;
	}
	if (o->text) {
		r->text = grow(r->text, r->ntext, o->ntext, 1);
		memcpy(r->text + r->ntext, o->text, o->ntext);
		r->ntext += o->ntext;
	}
	if (o->finish) {
		snprintf(r->finish, sizeof r->finish, "%s", o->finish);
		r->prompt_tokens = o->prompt_tokens;
	}
	if (o->count) {
		size_t n = (size_t)o->count * o->dim;
		free(r->embeddings);
		r->embeddings = malloc(n * sizeof *r->embeddings + 1);
		if (!r->embeddings)
			abort();
		memcpy(r->embeddings, o->embeddings, n * sizeof *r->embeddings);
		r->count = o->count;
		r->dim = o->dim;
		r->prompt_tokens = o->prompt_tokens;
	}
}

struct req *req_new(const struct req_sink *sink, uint64_t id, enum op op, uint64_t seq, uint64_t now_ms)
{
	struct req *r = calloc(1, sizeof *r);

	if (!r)
		abort();
	r->sink = sink;
	r->id = id;
	r->op = op;
	r->seq = seq;
	r->started_ms = now_ms;
	return r;
}

void req_orphan(struct req *r)
{
	if (r->sink)
		r->sink->forget(r);
	r->sink = NULL;
}

void req_chunk(struct req *r, const struct work_out *o)
{
	if (r->sink)
		r->sink->chunk(r, o);
}

void req_reply(struct req *r, const struct slot *s, enum err code, const char *message)
{
	if (r->sink)
		r->sink->finish(r, s, code, message);
	req_discard(r);
}

void req_discard(struct req *r)
{
	req_orphan(r);
	req_clear(r);
	free(r);
}

void req_clear(struct req *r)
{
	gen_free(&r->gen);
	for (uint32_t i = 0; i < r->ntexts; i++)
		free(r->texts[i]);
	free(r->texts);
	free(r->tokens);
	free(r->text);
	free(r->embeddings);
}

/* texts: a string, or an array of 1 to EMBED_MAX_TEXTS strings. */
int req_read_texts(const msgpack_object *o, struct req *r, const char *name, char *err, size_t len)
{
	const msgpack_object *items = o;
	uint32_t n = 1;

	if (o && o->type == MSGPACK_OBJECT_ARRAY) {
		items = o->via.array.ptr;
		n = o->via.array.size;
	}
	bool ok = o && n >= 1 && n <= EMBED_MAX_TEXTS;
	for (uint32_t i = 0; ok && i < n; i++)
		ok = items[i].type == MSGPACK_OBJECT_STR && !memchr(items[i].via.str.ptr, 0, items[i].via.str.size);
	if (!ok) {
		snprintf(err, len, "%s must be a string or an array of 1 to %u strings, without NUL bytes", name,
			 EMBED_MAX_TEXTS);
		return -1;
	}
	for (uint32_t i = 0; i < n; i++)
		if (items[i].via.str.size > INFER_MAX_TEXT_BYTES) {
			snprintf(err, len, "%s[%u] is %u bytes; at most %u", name, i, items[i].via.str.size,
				 INFER_MAX_TEXT_BYTES);
			return -1;
		}
	r->texts = calloc(n, sizeof *r->texts);
	if (!r->texts)
		abort();
	for (r->ntexts = 0; r->ntexts < n; r->ntexts++)
		if (!(r->texts[r->ntexts] = strndup(items[r->ntexts].via.str.ptr, items[r->ntexts].via.str.size)))
			abort();
	return 0;
}
