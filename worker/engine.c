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
