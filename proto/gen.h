/*
 * gen.h: a generation request as infer carries it, read once with its
 * bounds checked, and written on to the worker.
 *
 * modeld reads a client's infer with gen_read (a wrong field is a
 * bad_request naming it) and sends the same fields to the worker with
 * gen_write; the worker reads them back with gen_read. The engine decides
 * what it can serve (text needs a tokenizer, messages a chat template).
 */
#ifndef GEN_H
#define GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "args.h"
#include "msg.h"

#define GEN_MAX_MESSAGES 1024
#define GEN_MAX_STOPS 16
#define GEN_MAX_STOP_LEN 256
#define GEN_ERR_LEN 160
#define GEN_SEED_RANDOM UINT64_MAX

struct gen_message {
	char *role;
	char *content;
};

struct gen {
	/* the prompt: exactly one of these */
	uint32_t *input;		/* token ids */
	uint32_t ninput;
	char *prompt;			/* text, tokenized by the engine */
	struct gen_message *messages;	/* rendered with the model's chat template */
	uint32_t nmessages;
	uint32_t max_tokens;
	bool max_tokens_default;	/* none was given: INFER_MAX_TOKENS, which the model's configured
					 * default replaces; the engine ends at the context's end */
	bool stream;
	/* sampling; the defaults leave each step off except temperature */
	double temperature;		/* 0: greedy */
	uint32_t top_k;			/* 0: off */
	double top_p;			/* 1: off */
	double min_p;			/* 0: off */
	double repeat_penalty;		/* 1: off */
	uint64_t seed;			/* GEN_SEED_RANDOM when none is given */
	char **stop;			/* generation ends before any of these strings */
	uint32_t nstop;
};

/* Reads g from map (msgpack or JSON). 0, or -1 with err naming the field
 * that is wrong. g is then partly filled: gen_free it either way. */
int gen_read(struct arg map, struct gen *g, char err[GEN_ERR_LEN]);
/* Writes g's keys into the open map w. */
void gen_write(struct msgw *w, const struct gen *g);
void gen_free(struct gen *g);

#endif
