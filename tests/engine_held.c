/*
 * An engine whose load reads the first bytes of the model and then holds,
 * reporting no progress, until the worker tells it to stop (an unload): a
 * test looks at a worker in the middle of reading its model file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../worker/engine.h"

/* How long the load sleeps between asking the worker whether to go on. */
#define HELD_POLL_NS (10 * 1000 * 1000)

struct engine_ctx {
	int unused;
};

static int fail(struct engine_error *e, const char *code, const char *message)
{
	snprintf(e->code, sizeof e->code, "%s", code);
	snprintf(e->message, sizeof e->message, "%s", message);
	return -1;
}

static int held_open(struct engine_ctx **ctx, const struct engine_params *p, struct engine_error *e)
{
	(void)p;
	*ctx = calloc(1, sizeof **ctx);
	return *ctx ? 0 : fail(e, "load_failed", "out of memory");
}

/* Progress stays at 0 bytes of the file's: the worker goes on answering heartbeats. */
static int held_load(struct engine_ctx *ctx, int fd, engine_progress_fn progress, void *arg,
		     struct engine_error *e)
{
	const struct timespec pause = { 0, HELD_POLL_NS };
	unsigned char head[8];
	struct stat st;

	(void)ctx;
	if (fstat(fd, &st) || st.st_size <= 0 || pread(fd, head, sizeof head, 0) <= 0)
		return fail(e, "load_failed", "cannot read the model file");
	while (!progress(arg, 0, (uint64_t)st.st_size))
		nanosleep(&pause, NULL);
	return fail(e, "cancelled", "load stopped");
}

static void held_memory(struct engine_ctx *ctx, struct engine_mem *m)
{
	(void)ctx;
	*m = (struct engine_mem){ 0 };
}

static void held_close(struct engine_ctx *ctx)
{
	free(ctx);
}

static const struct engine held = {
	.abi_version = ENGINE_ABI_VERSION,
	.name = "held",
	.open = held_open,
	.load = held_load,
	.memory = held_memory,
	.close = held_close,
};

__attribute__((visibility("default"))) const struct engine *modeld_engine(void);
const struct engine *modeld_engine(void)
{
	return &held;
}
