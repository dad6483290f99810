/* req.c: a request: its arguments, read from either face's wire format, and its answer (req.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
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

static uint64_t last_seq;

struct req *req_new(const struct req_sink *sink, void *asker, uint64_t id, enum op op, uint64_t now_ms)
{
	struct req *r = calloc(1, sizeof *r);

	if (!r)
		abort();
	r->sink = sink;
	r->asker = asker;
	r->id = id;
	r->op = op;
	r->seq = ++last_seq;
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
	free(r->slot_name);
	gen_free(&r->gen);
	for (uint32_t i = 0; i < r->ntexts; i++)
		free(r->texts[i]);
	free(r->texts);
	free(r->tokens);
	free(r->text);
	free(r->embeddings);
}

void req_fail(struct req_error *err, enum err code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
}

/* --- reading a request's arguments --- */

/* A keyed reader's result rc for key: true when it may be used; else err says why. */
static bool arg_ok(int rc, const char *key, bool required, const char *what, struct req_error *err)
{
	if (rc == MSG_BAD_TYPE)
		req_fail(err, E_BAD_REQUEST, "%s must be %s", key, what);
	else if (rc == MSG_MISSING && required)
		req_fail(err, E_BAD_REQUEST, "%s is required (%s)", key, what);
	else
		return true;
	return false;
}

static bool read_u64(struct arg m, const char *key, uint64_t *out, struct req_error *err)
{
	return arg_ok(arg_u64(m, key, out), key, false, "an unsigned integer", err);
}

static bool read_bool(struct arg m, const char *key, bool *out, struct req_error *err)
{
	return arg_ok(arg_bool(m, key, out), key, false, "a boolean", err);
}

/* A string argument; *out stays NULL when it is absent. */
static bool read_str(struct arg m, const char *key, bool required, char **out, struct req_error *err)
{
	*out = NULL;
	return arg_ok(arg_strdup(m, key, out), key, required, "a string without NUL bytes", err);
}

/* The request's target: the model it names (known to the running configuration) and the slot. */
static bool read_target(struct req *r, struct arg m, bool model_required, struct req_error *err)
{
	char *model = NULL;
	int rc = arg_strdup(m, "model", &model);
	bool ok = false;

	if (rc == MSG_BAD_TYPE || (rc == MSG_MISSING && model_required))
		req_fail(err, E_BAD_REQUEST, rc == MSG_BAD_TYPE ? "model must be a string without NUL bytes" :
			 "model is required (a string)");
	else if (arg_strdup(m, "slot", &r->slot_name) == MSG_BAD_TYPE)
		req_fail(err, E_BAD_REQUEST, "slot must be a string without NUL bytes");
	else if (model && !(r->model = config_model(config_running(), model)))
		req_fail(err, E_UNKNOWN_MODEL, "no model called %s", model);
	else
		ok = true;
	free(model);
	return ok;
}

/* gpu: "wait" (the default) or "try". */
static bool read_gpu(struct req *r, struct arg m, struct req_error *err)
{
	struct arg v = arg_get(m, "gpu");
	const char *s;
	size_t n;

	if (arg_type(v) == ARG_NONE)
		return true;
	if (arg_bytes(v, &s, &n) && n == 3 && memcmp(s, "try", 3) == 0)
		r->gpu_try = true;
	else if (!arg_bytes(v, &s, &n) || n != 4 || memcmp(s, "wait", 4) != 0) {
		req_fail(err, E_BAD_REQUEST, "gpu must be \"wait\" or \"try\"");
		return false;
	}
	return true;
}

/* How long work may wait for its model (default_ms unless it says), and keep it loaded after:
 * within the protocol's limits. */
static bool read_wait(struct req *r, struct arg m, uint64_t default_ms, struct req_error *err)
{
	uint64_t wait = 0;
	int rc = arg_u64(m, "wait_ms", &wait);

	if (!arg_ok(rc, "wait_ms", false, "an unsigned integer", err) ||
	    !read_u64(m, "keep_alive_ms", &r->keep_alive_ms, err) || !read_gpu(r, m, err))
		return false;
	if ((rc == MSG_OK && wait > INFER_MAX_WAIT_MS) || r->keep_alive_ms > INFER_MAX_WAIT_MS) {
		req_fail(err, E_BAD_REQUEST, "wait_ms and keep_alive_ms must be at most %u", INFER_MAX_WAIT_MS);
		return false;
	}
	r->wait_ms = rc == MSG_OK ? wait : default_ms;
	return true;
}

static bool read_infer(struct req *r, struct arg m, const struct req_read_opts *o, struct req_error *err)
{
	char why[GEN_ERR_LEN];

	(void)o;
	if (gen_read(m, &r->gen, why) == 0)
		return true;
	req_fail(err, E_BAD_REQUEST, "%s", why);
	return false;
}

static bool read_tokenize(struct req *r, struct arg m, const struct req_read_opts *o, struct req_error *err)
{
	(void)o;
	r->parse_special = true;
	if (!read_str(m, "text", true, &r->gen.prompt, err) || !read_bool(m, "add_special", &r->add_special, err) ||
	    !read_bool(m, "parse_special", &r->parse_special, err))
		return false;
	if (strlen(r->gen.prompt) > INFER_MAX_TEXT_BYTES) {
		req_fail(err, E_BAD_REQUEST, "text is %zu bytes; at most %u", strlen(r->gen.prompt),
			 INFER_MAX_TEXT_BYTES);
		return false;
	}
	return true;
}

static bool read_detokenize(struct req *r, struct arg m, const struct req_read_opts *o, struct req_error *err)
{
	size_t n = 0;

	(void)o;
	if (!arg_ok(arg_u32s(m, "tokens", &r->gen.input, &n), "tokens", true, "an array of token ids", err))
		return false;
	if (n > INFER_MAX_INPUT) {
		req_fail(err, E_BAD_REQUEST, "tokens must hold at most %u ids", INFER_MAX_INPUT);
		return false;
	}
	r->gen.ninput = (uint32_t)n;
	return true;
}

/* embed's texts (under o->texts): a string, or an array of 1 to EMBED_MAX_TEXTS strings. */
static bool read_embed(struct req *r, struct arg m, const struct req_read_opts *o, struct req_error *err)
{
	struct arg t = arg_get(m, o->texts);
	bool list = arg_type(t) == ARG_ARRAY;
	size_t n = list ? arg_len(t) : 1;
	const char *s;
	size_t len;

	bool ok = arg_type(t) != ARG_NONE && n >= 1 && n <= EMBED_MAX_TEXTS;
	for (size_t i = 0; ok && i < n; i++)
		ok = arg_bytes(list ? arg_at(t, i) : t, &s, &len) && !memchr(s, 0, len);
	if (!ok) {
		req_fail(err, E_BAD_REQUEST, "%s must be a string or an array of 1 to %u strings, without NUL bytes",
			 o->texts, EMBED_MAX_TEXTS);
		return false;
	}
	for (size_t i = 0; i < n; i++)
		if (arg_bytes(list ? arg_at(t, i) : t, &s, &len) && len > INFER_MAX_TEXT_BYTES) {
			req_fail(err, E_BAD_REQUEST, "%s[%zu] is %zu bytes; at most %u", o->texts, i, len,
				 INFER_MAX_TEXT_BYTES);
			return false;
		}
	if (!(r->texts = calloc(n, sizeof *r->texts)))
		abort();
	for (r->ntexts = 0; r->ntexts < n; r->ntexts++) {
		arg_bytes(list ? arg_at(t, r->ntexts) : t, &s, &len);
		if (!(r->texts[r->ntexts] = strndup(s, len)))
			abort();
	}
	return true;
}

/* load and unload: whether to wait for the job, force, and the target (a load's model is required). */
static bool read_admin(struct req *r, struct arg m, struct req_error *err)
{
	r->wait = true;
	return read_bool(m, "wait", &r->wait, err) && read_bool(m, "force", &r->force, err) &&
	       read_target(r, m, r->op == OP_LOAD, err);
}

int req_read(struct req *r, struct arg m, const struct req_read_opts *o, struct req_error *err)
{
	static bool (*const work[OP__COUNT])(struct req *, struct arg, const struct req_read_opts *,
					     struct req_error *) = {
		[OP_INFER] = read_infer, [OP_TOKENIZE] = read_tokenize,
		[OP_DETOKENIZE] = read_detokenize, [OP_EMBED] = read_embed,
	};

	switch (r->op) {
	case OP_LOAD: case OP_UNLOAD:
		return read_admin(r, m, err) ? 0 : -1;
	case OP_RESTART:
		return read_str(m, "slot", true, &r->slot_name, err) ? 0 : -1;
	default:
		return work[r->op] && work[r->op](r, m, o, err) && read_wait(r, m, o->wait_ms, err) &&
		       read_target(r, m, false, err) ? 0 : -1;
	}
}
