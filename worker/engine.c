/* engine.c: what engines share: the error helper, and the reference models' generation loop.
 * Linked into the worker and into every engine built as a shared object. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

int engine_fail(struct engine_error *e, const char *code, const char *fmt, ...)
{
	va_list ap;

	snprintf(e->code, sizeof e->code, "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
	return -1;
}

int engine_generate(struct engine_ctx *ctx, engine_step_fn step, uint32_t vocab, uint32_t eos,
		    const struct engine_request *rq, engine_piece_fn emit, void *arg,
		    struct engine_outcome *out, struct engine_error *e)
{
	if (!rq->input)
		return engine_fail(e, "bad_request", "this model takes token ids (input), not text");
	for (uint32_t i = 0; i < rq->ninput; i++)
		if (rq->input[i] >= vocab)
			return engine_fail(e, "bad_request", "input token %u is not below the vocabulary size %u",
					   rq->input[i], vocab);
	out->prompt_tokens = rq->ninput;
	out->eos = false;
	uint32_t t = rq->input[rq->ninput - 1];
	for (uint32_t n = 0; n < rq->max_tokens; n++) {
		if (step(ctx, t, &t, e))
			return -1;
		struct engine_piece p = { .token = t };
		out->eos = t == eos;
		if (emit(arg, &p) || out->eos)
			break;
	}
	return 0;
}

int engine_warmup(struct engine_ctx *ctx, engine_step_fn step, struct engine_error *e)
{
	uint32_t t = 0;

	for (int n = 0; n < ENGINE_WARMUP_TOKENS; n++)
		if (step(ctx, t, &t, e))
			return -1;
	return 0;
}
