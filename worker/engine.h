/*
 * engine.h: the interface between modeld-worker and an engine, version 1.
 *
 * An engine runs one model in one worker process. The worker calls, in
 * order: open, load, (the sandbox is entered here), warmup, then infer any
 * number of times, memory at any time after load, and close. Engines built
 * as shared objects export `const struct engine *modeld_engine(void)` and
 * are loaded before the sandbox; the worker refuses an abi_version other
 * than ENGINE_ABI_VERSION.
 *
 * Errors are reported in a struct engine_error: a client protocol error
 * code ("load_failed", "insufficient_memory", "bad_request", ...) and a
 * message for people. The special code ENGINE_UNAVAILABLE means the device
 * itself cannot be used (no driver, no device): the slot goes to
 * service_unavailable rather than error.
 */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define ENGINE_ABI_VERSION 1
#define ENGINE_WARMUP_TOKENS 4
#define ENGINE_UNAVAILABLE "unavailable"

struct engine_error {
	char code[32];
	char message[256];
};

struct engine_params {
	const char *device;	/* "cpu" or "cuda:N" */
	const char *model;	/* for messages */
	unsigned threads;	/* loader threads; 0: the engine's default */
	unsigned buffers;	/* pinned buffers per loader thread; 0: default */
	size_t chunk;		/* bytes per read and copy; 0: default */
};

/* Load progress; returns nonzero to abort the load. */
typedef int (*engine_progress_fn)(void *arg, uint64_t bytes, uint64_t total);
/* One generated token; returns nonzero to stop generating (cancel). */
typedef int (*engine_token_fn)(void *arg, uint32_t token);

struct engine_mem {
	uint64_t used;		/* device memory this engine holds */
	uint64_t free, total;	/* the device's */
};

struct engine_ctx;

struct engine {
	unsigned abi_version;
	const char *name;
	int (*open)(struct engine_ctx **ctx, const struct engine_params *p, struct engine_error *e);
	/* Loads the weights from fd (read with pread; the offset is not used). */
	int (*load)(struct engine_ctx *ctx, int fd, engine_progress_fn progress, void *arg,
		    struct engine_error *e);
	int (*warmup)(struct engine_ctx *ctx, struct engine_error *e);
	/* Generates up to max_tokens after input; stops early after the model's eos. */
	int (*infer)(struct engine_ctx *ctx, const uint32_t *input, uint32_t ninput,
		     uint32_t max_tokens, engine_token_fn emit, void *arg, struct engine_error *e);
	void (*memory)(struct engine_ctx *ctx, struct engine_mem *m);
	void (*close)(struct engine_ctx *ctx);
};

extern const struct engine engine_cpu;
#ifdef MODELD_HAVE_CUDA
extern const struct engine engine_cuda;
#include <stdio.h>
/* Writes "cuda:N<TAB>total<TAB>free<TAB>name" per GPU to f. 0, or -1 with e. */
int cuda_probe(FILE *f, struct engine_error *e);
#endif

/* The built-in engine called name, or NULL. */
const struct engine *engine_find(const char *name);

/* One step of an engine's model: the token after t. 0, or -1 with e. */
typedef int (*engine_step_fn)(struct engine_ctx *ctx, uint32_t t, uint32_t *next, struct engine_error *e);

/*
 * Generation as every engine does it: the input checked against the
 * vocabulary, then steps from its last token, each emitted, up to max_tokens,
 * stopping after eos (UINT32_MAX: none) or when emit asks to stop (cancelled).
 */
int engine_generate(struct engine_ctx *ctx, engine_step_fn step, uint32_t vocab, uint32_t eos,
		    const uint32_t *input, uint32_t ninput, uint32_t max_tokens,
		    engine_token_fn emit, void *arg, struct engine_error *e);
/* A warmup: a few steps from token 0, their output discarded. */
int engine_warmup(struct engine_ctx *ctx, engine_step_fn step, struct engine_error *e);

/* Fills e; returns -1 so that callers can `return engine_fail(...)`. */
int engine_fail(struct engine_error *e, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
