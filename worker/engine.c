/* engine.c: what engines share: the error helper, and the reference models' generation.
 * Linked into the worker and into every engine built as a shared object. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A reference model's generation: the last token made, and how many more it may make. */
struct engine_seq {
	uint32_t last;
	uint32_t left;
};

int engine_ref_begin(uint32_t vocab, const struct engine_request *rq, struct engine_seq **seq,
		     uint32_t *prompt_tokens, struct engine_error *e)
{
	if (!rq->input)
		return engine_fail(e, "bad_request", "this model takes token ids (input), not text");
	if (rq->ninput >= ENGINE_REF_CTX)
		return engine_fail(e, "bad_request", "the prompt is %u tokens; this model takes at most %u",
				   rq->ninput, ENGINE_REF_CTX - 1);
	for (uint32_t i = 0; i < rq->ninput; i++)
		if (rq->input[i] >= vocab)
			return engine_fail(e, "bad_request", "input token %u is not below the vocabulary size %u",
					   rq->input[i], vocab);
	*seq = malloc(sizeof **seq);
	if (!*seq)
		return engine_fail(e, "insufficient_memory", "out of memory");
	uint32_t room = ENGINE_REF_CTX - rq->ninput;
	**seq = (struct engine_seq){ .last = rq->input[rq->ninput - 1],
				     .left = rq->max_tokens < room ? rq->max_tokens : room };
	*prompt_tokens = rq->ninput;
	return 0;
}

int engine_ref_step(struct engine_ctx *ctx, engine_step_fn step, uint32_t eos, struct engine_seq *const *seqs,
		    struct engine_step *st, unsigned n, struct engine_error *e)
{
	for (unsigned i = 0; i < n; i++) {
		struct engine_seq *q = seqs[i];
		st[i] = (struct engine_step){ 0 };
		if (q->left == 0) {	/* max_tokens 0 */
			st[i].done = true;
			continue;
		}
		if (step(ctx, q->last, &q->last, e))
			return -1;
		q->left--;
		if (q->last == eos) {	/* it ends the text and is not part of it, as with llama.cpp's models */
			st[i].eos = st[i].done = true;
			continue;
		}
		st[i].has_piece = true;
		st[i].piece = (struct engine_piece){ .token = q->last };
		st[i].done = q->left == 0;
	}
	return 0;
}

void engine_ref_end(struct engine_seq *seq)
{
	free(seq);
}

int engine_warmup(struct engine_ctx *ctx, engine_step_fn step, struct engine_error *e)
{
	uint32_t t = 0;

	for (int n = 0; n < ENGINE_WARMUP_TOKENS; n++)
		if (step(ctx, t, &t, e))
			return -1;
	return 0;
}
