/*
 * engine.h: the interface between modeld-worker and an engine, version 5.
 * This file is the whole contract for an engine author.
 *
 * An engine runs one model in one worker process. The worker calls, in
 * order: open, load, (the sandbox is entered here: no file may be opened
 * after load returns), warmup, then generations (begin, step, end), tokenize,
 * detokenize and embed any number of times, and close; memory at any time after
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

#define ENGINE_ABI_VERSION 5
#define ENGINE_SYMBOL "modeld_engine"
#define ENGINE_WARMUP_TOKENS 4
#define ENGINE_UNAVAILABLE "unavailable"
/* A reference model's context: its prompt and what it generates, together. */
#define ENGINE_REF_CTX 4096

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
	uint32_t parallel;		/* generations at once: set by the worker from the engine's
					 * parallel_default and parallel_max */
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
#define ENGINE_GPU 2u		/* runs on a GPU slot (an engine without it runs on cpu slots only) */

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

/* What one step did for one generation. */
struct engine_step {
	bool has_piece;			/* it made piece (valid until the next step) */
	struct engine_piece piece;
	bool done;			/* it has ended: the model's end (eos), max_tokens or the context's */
	bool eos;			/* the model ended it */
};

/* Load progress; returns nonzero to abort the load. */
typedef int (*engine_progress_fn)(void *arg, uint64_t bytes, uint64_t total);

struct engine_mem {
	uint64_t used;		/* memory this engine holds: on the device, or the process's on cpu */
	uint64_t free, total;	/* the device's */
};

struct engine_ctx;
struct engine_seq;		/* one generation's state, the engine's own */

struct engine {
	unsigned abi_version;
	const char *name;
	unsigned flags;		/* ENGINE_TEXT, ENGINE_GPU */
	/* Generations at once when the model does not say (parallel = 0), and at most. */
	unsigned parallel_default, parallel_max;
	int (*open)(struct engine_ctx **ctx, const struct engine_params *p, struct engine_error *e);
	/*
	 * Loads the weights from fd (pread, or /proc/self/fd/N; the offset is
	 * not used) into the engine's own memory. Not mapped: the file may be
	 * written over in place while the model serves, and a mapping of a file
	 * cut short kills the worker with SIGBUS at the next read.
	 */
	int (*load)(struct engine_ctx *ctx, int fd, engine_progress_fn progress, void *arg,
		    struct engine_error *e);
	int (*warmup)(struct engine_ctx *ctx, struct engine_error *e);
	/*
	 * Begins a generation: checks the request and prepares its prompt,
	 * which is decoded by the steps that follow. The sequence keeps what it
	 * needs (its tokens, its sampler); rq is the caller's only during the
	 * call. At most params.parallel sequences are begun and not ended.
	 * 0 with *seq and *prompt_tokens, or -1 with e (nothing to end).
	 */
	int (*begin)(struct engine_ctx *ctx, const struct engine_request *rq, struct engine_seq **seq,
		     uint32_t *prompt_tokens, struct engine_error *e);
	/*
	 * Advances each of seqs[0..n), which have not ended, by one step, in one
	 * computation where the engine can batch: a prompt (or a part of it) is
	 * decoded, or one token is made. st[i] says what seqs[i] made and
	 * whether it has ended. The worker calls tick between the parts of a
	 * long step. 0, or -1 with e: every one of seqs has failed.
	 */
	int (*step)(struct engine_ctx *ctx, struct engine_seq *const *seqs, struct engine_step *st,
		    unsigned n, struct engine_error *e);
	/* Frees a sequence, ended or not (a cancel ends it early). */
	void (*end)(struct engine_ctx *ctx, struct engine_seq *seq);
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
	 * (the caller frees *vec), and the tokens the text was in *ntokens. NULL when
	 * the engine has no embeddings. */
	int (*embed)(struct engine_ctx *ctx, const char *text, float **vec, size_t *dim, uint32_t *ntokens,
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
 * Generation as the reference engines do it, one sequence after another in
 * a step: the input checked against the vocabulary, then steps from its last
 * token, each a piece, up to max_tokens or eos (UINT32_MAX: none), which is
 * a piece too. Their engines' begin, step and end call these.
 */
#define ENGINE_REF_PARALLEL_MAX 64
int engine_ref_begin(uint32_t vocab, const struct engine_request *rq, struct engine_seq **seq,
		     uint32_t *prompt_tokens, struct engine_error *e);
int engine_ref_step(struct engine_ctx *ctx, engine_step_fn step, uint32_t eos, struct engine_seq *const *seqs,
		    struct engine_step *st, unsigned n, struct engine_error *e);
void engine_ref_end(struct engine_seq *seq);
/* A warmup: a few steps from token 0, their output discarded. */
int engine_warmup(struct engine_ctx *ctx, engine_step_fn step, struct engine_error *e);

/* Fills e; returns -1 so that callers can `return engine_fail(...)`. */
int engine_fail(struct engine_error *e, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
