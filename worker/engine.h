/*
 * engine.h: the interface between modeld-worker and an engine, version 3.
 * This file is the whole contract for an engine author.
 *
 * An engine runs one model in one worker process. The worker calls, in
 * order: open, load, (the sandbox is entered here: no file may be opened
 * after load returns), warmup, then infer, tokenize, detokenize and embed
 * any number of times, one at a time, and close; memory at any time after
 * open, during load too (heartbeats ask for it). Engines built as shared objects (modeld-engine-NAME.so in the
 * engine directory) export ENGINE_SYMBOL, a `const struct engine
 * *modeld_engine(void)`; the worker loads them before the sandbox and
 * refuses one whose abi_version is not ENGINE_ABI_VERSION.
 *
 * Errors are reported in a struct engine_error: a client protocol error
 * code ("load_failed", "insufficient_memory", "bad_request", ...) and a
 * message for people. The special code ENGINE_UNAVAILABLE means the device
 * itself cannot be used (no driver, no device): the slot goes to
 * service_unavailable rather than error.
 */
#ifndef ENGINE_H
#define ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENGINE_ABI_VERSION 3
#define ENGINE_SYMBOL "modeld_engine"
#define ENGINE_WARMUP_TOKENS 4
#define ENGINE_UNAVAILABLE "unavailable"

struct engine_error {
	char code[32];
	char message[256];
};

struct engine_params {
	const char *device;		/* "cpu" or "cuda:N" */
	const char *model;		/* for messages */
	/* the cuda engine's loader; 0: the engine's default */
	unsigned loader_threads;	/* reader threads */
	unsigned loader_buffers;	/* pinned buffers per thread */
	size_t loader_chunk;		/* bytes per read and copy */
	/* language models; 0 (NULL) leaves the engine's default */
	uint32_t ctx;			/* context length in tokens */
	int32_t gpu_layers;		/* layers on the GPU; -1: all on a GPU device, none on cpu */
	uint32_t threads;		/* compute threads */
	uint32_t batch;			/* tokens per decode of a prompt */
	const char *chat_template;	/* instead of the model's */
	bool embedding;			/* the model serves embed */
	/* The worker's log: level 0 error, 1 warning, 2 info, 3 debug. */
	void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
	/* To be called often (every few ms at least) during long computations
	 * that emit nothing, such as a prompt's decode, so that the worker can
	 * answer heartbeats; nonzero means stop: the request was cancelled. */
	int (*tick)(void *arg);
	void *tick_arg;
};

/* What an engine can do beyond generating from token ids. */
#define ENGINE_TEXT 1u		/* tokenize, detokenize; requests with prompt or messages */

struct engine_message {
	const char *role;
	const char *content;
};

struct engine_sampling {
	double temperature;		/* 0: greedy */
	uint32_t top_k;			/* 0: off */
	double top_p;			/* 1: off */
	double min_p;			/* 0: off */
	double repeat_penalty;		/* 1: off */
	uint64_t seed;			/* ENGINE_SEED_RANDOM: a different one each time */
};

#define ENGINE_SEED_RANDOM UINT64_MAX

/* One generation. The prompt is exactly one of input, prompt and messages. */
struct engine_request {
	const uint32_t *input;
	uint32_t ninput;
	const char *prompt;
	const struct engine_message *messages;
	uint32_t nmessages;
	uint32_t max_tokens;
	struct engine_sampling sampling;
};

/* One generated token and its bytes (text is NULL for engines without ENGINE_TEXT;
 * the bytes of one token need not be whole UTF-8 characters). */
struct engine_piece {
	uint32_t token;
	const char *text;
	size_t len;
};

/* What a generation came to. */
struct engine_outcome {
	uint32_t prompt_tokens;
	bool eos;			/* the model ended it (else max_tokens or emit did) */
};

/* Load progress; returns nonzero to abort the load. */
typedef int (*engine_progress_fn)(void *arg, uint64_t bytes, uint64_t total);
/* One generated piece; returns nonzero to stop generating. */
typedef int (*engine_piece_fn)(void *arg, const struct engine_piece *p);

struct engine_mem {
	uint64_t used;		/* memory this engine holds: on the device, or the process's on cpu */
	uint64_t free, total;	/* the device's */
};

struct engine_ctx;

struct engine {
	unsigned abi_version;
	const char *name;
	unsigned flags;		/* ENGINE_TEXT */
	int (*open)(struct engine_ctx **ctx, const struct engine_params *p, struct engine_error *e);
	/* Loads the weights from fd (pread, mmap, or /proc/self/fd/N; the offset is not used). */
	int (*load)(struct engine_ctx *ctx, int fd, engine_progress_fn progress, void *arg,
		    struct engine_error *e);
	int (*warmup)(struct engine_ctx *ctx, struct engine_error *e);
	/*
	 * Generates up to rq->max_tokens, emitting each piece; stops early at
	 * the model's end of generation or when emit returns nonzero. Whatever
	 * one request needs (sampler, batch) lives in an object of its own, not
	 * in ctx. 0, or -1 with e.
	 */
	int (*infer)(struct engine_ctx *ctx, const struct engine_request *rq, engine_piece_fn emit,
		     void *arg, struct engine_outcome *out, struct engine_error *e);
	void (*memory)(struct engine_ctx *ctx, struct engine_mem *m);
	/* After load: how many token ids the model knows; every token it makes is below that. */
	uint32_t (*vocab)(struct engine_ctx *ctx);
	void (*close)(struct engine_ctx *ctx);
	/* With ENGINE_TEXT: text to token ids and back. add_special adds the BOS (or
	 * whatever the model adds); parse_special reads special tokens written as
	 * text. The caller frees *tokens and *text. */
	int (*tokenize)(struct engine_ctx *ctx, const char *text, bool add_special, bool parse_special,
			uint32_t **tokens, size_t *n, struct engine_error *e);
	int (*detokenize)(struct engine_ctx *ctx, const uint32_t *tokens, size_t n, char **text,
			  size_t *len, struct engine_error *e);
	/* For models opened with embedding: one normalized vector for text, *dim floats
	 * (the caller frees *vec). NULL when the engine has no embeddings. */
	int (*embed)(struct engine_ctx *ctx, const char *text, float **vec, size_t *dim,
		     struct engine_error *e);
};

typedef const struct engine *(*engine_entry_fn)(void);

extern const struct engine engine_cpu;
#ifdef MODELD_HAVE_CUDA
extern const struct engine engine_cuda;
#include <stdio.h>
/* Writes "cuda:N<TAB>total<TAB>free<TAB>name" per GPU to f. 0, or -1 with e. */
int cuda_probe(FILE *f, struct engine_error *e);
#endif

/* One step of a reference model: the token after t. 0, or -1 with e. */
typedef int (*engine_step_fn)(struct engine_ctx *ctx, uint32_t t, uint32_t *next, struct engine_error *e);

/*
 * Generation as the reference engines do it: the input checked against the
 * vocabulary, then steps from its last token, each emitted, up to
 * max_tokens, stopping after eos (UINT32_MAX: none) or when emit asks to.
 */
int engine_generate(struct engine_ctx *ctx, engine_step_fn step, uint32_t vocab, uint32_t eos,
		    const struct engine_request *rq, engine_piece_fn emit, void *arg,
		    struct engine_outcome *out, struct engine_error *e);
/* A warmup: a few steps from token 0, their output discarded. */
int engine_warmup(struct engine_ctx *ctx, engine_step_fn step, struct engine_error *e);

/* Fills e; returns -1 so that callers can `return engine_fail(...)`. */
int engine_fail(struct engine_error *e, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
