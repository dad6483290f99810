/* engine.c: the table of built-in engines, and the error helper they share. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

static const struct engine *const builtin[] = {
	&engine_cpu,
#ifdef MODELD_HAVE_CUDA
	&engine_cuda,
#endif
};

const struct engine *engine_find(const char *name)
{
	for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
		if (strcmp(builtin[i]->name, name) == 0)
			return builtin[i];
	return NULL;
}

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
		    const uint32_t *input, uint32_t ninput, uint32_t max_tokens,
		    engine_token_fn emit, void *arg, struct engine_error *e)
{
	if (ninput == 0)
		return engine_fail(e, "bad_request", "input holds no tokens");
	for (uint32_t i = 0; i < ninput; i++)
		if (input[i] >= vocab)
			return engine_fail(e, "bad_request", "input token %u is not below the vocabulary size %u",
					   input[i], vocab);
	uint32_t t = input[ninput - 1];
	for (uint32_t n = 0; n < max_tokens; n++) {
		if (step(ctx, t, &t, e))
			return -1;
		if (emit && emit(arg, t))
			return engine_fail(e, "cancelled", "cancelled");
		if (t == eos)
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
