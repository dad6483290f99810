/* wmsg.c: a worker's messages, read and checked (wmsg.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/msg.h"
#include "wmsg.h"

/* The keys each message of a worker may have: anything else is a breach. */
static const char *const wm_keys[][9] = {
	[WM_PROGRESS - WM_PROGRESS] = { "t", "bytes", "total" },
	[WM_LOADED - WM_PROGRESS] = { "t", "proto", "mem_bytes", "vocab", "parallel" },
	[WM_WARMED - WM_PROGRESS] = { "t", "warmup_ms" },
	[WM_FAILED - WM_PROGRESS] = { "t", "code", "message" },
	[WM_PONG - WM_PROGRESS] = { "t", "seq", "mem_bytes", "dev_free", "dev_total" },
	[WM_TOKENS - WM_PROGRESS] = { "t", "req", "tokens", "text" },
	[WM_DONE - WM_PROGRESS] = { "t", "req", "tokens", "text", "finish", "prompt_tokens", "first_ms",
				    "embeddings" },
	[WM_INFER_FAILED - WM_PROGRESS] = { "t", "req", "code", "message" },
};

/* The first key of m that a message of its type may not have, or NULL. */
static const msgpack_object *unknown_key(const msgpack_object *m, uint64_t type)
{
	const char *const *keys = wm_keys[type - WM_PROGRESS];

	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *k = &m->via.map.ptr[i].key;
		bool known = false;
		for (int j = 0; keys[j] && !known; j++)
			known = k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(keys[j]) &&
				memcmp(k->via.str.ptr, keys[j], k->via.str.size) == 0;
		if (!known)
			return k;
	}
	return NULL;
}

/* code and message of a failure; the code must be one of the protocol's. */
static int read_failure(const msgpack_object *m, struct wmsg_in *w)
{
	const char *code, *text;
	size_t ncode, ntext;

	if (msg_str(m, "code", &code, &ncode) || msg_str(m, "message", &text, &ntext))
		return -1;
	w->unavailable = ncode == strlen("unavailable") && memcmp(code, "unavailable", ncode) == 0;
	w->code = w->unavailable ? E_LOAD_FAILED : proto_err_parse(code, ncode);
	if (!w->unavailable && (strlen(proto_err_name(w->code)) != ncode ||
				memcmp(proto_err_name(w->code), code, ncode) != 0))
		return -1;	/* not a code the protocol names */
	snprintf(w->message, sizeof w->message, "%.*s", (int)ntext, text);
	return 0;
}

/* embed's vectors: count arrays of dim numbers each, flattened. */
static int read_embeddings(const msgpack_object *m, struct wmsg_in *w)
{
	const msgpack_object_array *a;
	struct work_out *o = &w->out;
	int rc = msg_array(m, "embeddings", &a);

	if (rc == MSG_MISSING)
		return 0;
	if (rc || a->size > EMBED_MAX_TEXTS || (a->size && (a->ptr[0].type != MSGPACK_OBJECT_ARRAY ||
	    a->ptr[0].via.array.size == 0 || a->ptr[0].via.array.size > EMBED_MAX_DIM)))
		return -1;
	o->count = a->size;
	o->dim = a->size ? a->ptr[0].via.array.size : 0;
	w->embeddings = malloc((size_t)o->count * o->dim * sizeof *w->embeddings + 1);
	if (!w->embeddings)
		abort();
	for (uint32_t i = 0; i < o->count; i++) {
		const msgpack_object *v = &a->ptr[i];
		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != o->dim)
			return -1;
		for (uint32_t j = 0; j < o->dim; j++) {
			const msgpack_object *x = &v->via.array.ptr[j];
			if (x->type != MSGPACK_OBJECT_FLOAT32 && x->type != MSGPACK_OBJECT_FLOAT64)
				return -1;
			w->embeddings[(size_t)i * o->dim + j] = (float)x->via.f64;
		}
	}
	o->embeddings = w->embeddings;
	uint64_t tokens = 0;
	if (msg_u64(m, "prompt_tokens", &tokens) == MSG_BAD_TYPE || tokens > UINT32_MAX)
		return -1;
	o->prompt_tokens = (uint32_t)tokens;
	return 0;
}

/* finish must be one of the reasons the protocol names. */
static int read_finish(const msgpack_object *m, struct work_out *o)
{
	static const char *const reasons[] = { "stop", "length", "cancelled" };
	const char *v;
	size_t n;
	uint64_t prompt = 0;
	int rc = msg_str(m, "finish", &v, &n);

	if (rc == MSG_MISSING)
		return 0;
	if (rc || msg_u64(m, "prompt_tokens", &prompt) || prompt > UINT32_MAX ||
	    msg_u64(m, "first_ms", &o->first_ms))
		return -1;
	for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
		if (n == strlen(reasons[i]) && memcmp(v, reasons[i], n) == 0)
			o->finish = reasons[i];
	o->prompt_tokens = (uint32_t)prompt;
	return o->finish ? 0 : -1;
}

/* tokens and text, streamed or final; the rest of the answer with the final one. */
static int read_output(const msgpack_object *m, struct wmsg_in *w)
{
	size_t n = 0;

	/* out.text stays NULL when the engine sends none */
	if (msg_u64(m, "req", &w->req) || msg_u32s(m, "tokens", &w->tokens, &n) == MSG_BAD_TYPE ||
	    n > INFER_MAX_TOKENS || msg_str(m, "text", &w->out.text, &w->out.ntext) == MSG_BAD_TYPE)
		return -1;
	w->out.tokens = w->tokens;
	w->out.ntokens = (uint32_t)n;
	return w->type == WM_DONE && (read_finish(m, &w->out) || read_embeddings(m, w)) ? -1 : 0;
}

/* The fields of w's type, all present and of the right types. */
static int read_fields(const msgpack_object *m, struct wmsg_in *w)
{
	switch (w->type) {
	case WM_PROGRESS:
		return msg_u64(m, "bytes", &w->bytes) || msg_u64(m, "total", &w->total) || w->bytes > w->total;
	case WM_LOADED:
		return msg_u64(m, "proto", &w->proto) || msg_u64(m, "mem_bytes", &w->mem_bytes) ||
		       msg_u64(m, "vocab", &w->vocab) || w->vocab == 0 || w->vocab > UINT32_MAX ||
		       msg_u64(m, "parallel", &w->parallel) || w->parallel == 0 || w->parallel > PROTO_PARALLEL_MAX;
	case WM_WARMED:
		return msg_u64(m, "warmup_ms", &w->warmup_ms);
	case WM_PONG:
		return msg_u64(m, "seq", &w->seq) || msg_u64(m, "mem_bytes", &w->mem_bytes) ||
		       msg_u64(m, "dev_free", &w->dev_free) || msg_u64(m, "dev_total", &w->dev_total);
	case WM_FAILED:
		return read_failure(m, w);
	case WM_INFER_FAILED:
		return msg_u64(m, "req", &w->req) || read_failure(m, w);
	default:	/* WM_TOKENS, WM_DONE */
		return read_output(m, w);
	}
}

int wmsg_read(const msgpack_object *m, struct wmsg_in *w, char *why, size_t len)
{
	const msgpack_object *key;

	memset(w, 0, sizeof *w);
	if (msg_u64(m, "t", &w->type)) {
		snprintf(why, len, "message without a type");
		return -1;
	}
	if (w->type < WM_PROGRESS || w->type > WM_INFER_FAILED) {
		snprintf(why, len, "a message of type %llu, which a worker does not send",
			 (unsigned long long)w->type);
		return -1;
	}
	if ((key = unknown_key(m, w->type)) != NULL) {
		bool named = key->type == MSGPACK_OBJECT_STR;
		snprintf(why, len, "%s with a key it may not have: \"%.*s\"", proto_wmsg_name((int)w->type),
			 named ? (int)(key->via.str.size > 32 ? 32 : key->via.str.size) : 0,
			 named ? key->via.str.ptr : "");
		return -1;
	}
	if (read_fields(m, w)) {
		snprintf(why, len, "malformed or unexpected %s", proto_wmsg_name((int)w->type));
		return -1;
	}
	return 0;
}

void wmsg_free(struct wmsg_in *w)
{
	free(w->tokens);
	free(w->embeddings);
	w->tokens = NULL;
	w->embeddings = NULL;
}
