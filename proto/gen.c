/* gen.c: see gen.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "proto.h"

#define GEN_DEFAULT_TEMPERATURE 0.8
#define GEN_MAX_TEMPERATURE 100.0
#define GEN_MAX_REPEAT_PENALTY 100.0

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, GEN_ERR_LEN, fmt, ap);
	va_end(ap);
	return -1;
}

/* A string that must be valid as a C string: no NUL inside. */
static int str_item(struct arg a, char **out)
{
	const char *s;
	size_t n;

	if (!arg_bytes(a, &s, &n) || memchr(s, '\0', n))
		return -1;
	if (!(*out = strndup(s, n)))
		abort();
	return 0;
}

static int read_messages(struct arg map, struct gen *g, char *err)
{
	struct arg a = arg_get(map, "messages");
	size_t n = arg_len(a);

	if (arg_type(a) == ARG_NONE)
		return 0;
	if (arg_type(a) != ARG_ARRAY || n == 0 || n > GEN_MAX_MESSAGES) {
		return fail(err, "messages must be an array of 1 to %d {role, content} maps", GEN_MAX_MESSAGES);
	}
	g->messages = calloc(n, sizeof *g->messages);
	if (!g->messages)
		abort();
	g->nmessages = (uint32_t)n;		/* gen_free frees what was read */
	for (uint32_t i = 0; i < n; i++) {
		struct arg m = arg_at(a, i);
		if (arg_type(m) != ARG_MAP || arg_strdup(m, "role", &g->messages[i].role) ||
		    arg_strdup(m, "content", &g->messages[i].content)) {
			return fail(err, "messages[%u] must be a map with string role and content", i);
		}
	}
	return 0;
}

static int read_stop(struct arg map, struct gen *g, char *err)
{
	struct arg o = arg_get(map, "stop");
	bool list = arg_type(o) == ARG_ARRAY;
	size_t n = list ? arg_len(o) : 1;

	if (arg_type(o) == ARG_NONE)
		return 0;
	if (n > GEN_MAX_STOPS)
		return fail(err, "stop may hold at most %d strings", GEN_MAX_STOPS);
	g->stop = calloc(n ? n : 1, sizeof *g->stop);
	if (!g->stop)
		abort();
	g->nstop = (uint32_t)n;
	for (uint32_t i = 0; i < n; i++)
		if (str_item(list ? arg_at(o, i) : o, &g->stop[i]) || g->stop[i][0] == '\0' ||
		    strlen(g->stop[i]) > GEN_MAX_STOP_LEN)
			return fail(err, "stop must be a string or an array of strings, each of 1 to %d bytes",
				    GEN_MAX_STOP_LEN);
	return 0;
}

/* An optional number within [lo, hi]. */
static int read_real(struct arg map, const char *key, double lo, double hi, double *out,
		     char *err)
{
	double v = *out;
	int rc = arg_f64(map, key, &v);

	if (rc == MSG_MISSING)
		return 0;
	if (rc != MSG_OK || !(v >= lo && v <= hi)) {
		return fail(err, "%s must be a number from %g to %g", key, lo, hi);
	}
	*out = v;
	return 0;
}

static int read_uint(struct arg map, const char *key, uint64_t hi, uint64_t *out, char *err)
{
	int rc = arg_u64(map, key, out);

	if (rc == MSG_BAD_TYPE || (rc == MSG_OK && *out > hi)) {
		return fail(err, "%s must be an unsigned integer at most %llu", key, (unsigned long long)hi);
	}
	return 0;
}

static int read_prompt(struct arg map, struct gen *g, char *err)
{
	size_t n = 0;
	int rc = arg_u32s(map, "input", &g->input, &n);

	if (rc == MSG_BAD_TYPE)
		return fail(err, "input must be an array of token ids");
	if (rc == MSG_OK && (n == 0 || n > INFER_MAX_INPUT))
		return fail(err, "input must hold 1 to %u tokens", INFER_MAX_INPUT);
	g->ninput = (uint32_t)n;
	rc = arg_strdup(map, "prompt", &g->prompt);
	if (rc == MSG_BAD_TYPE)
		return fail(err, "prompt must be a string without NUL bytes");
	if (read_messages(map, g, err))
		return -1;
	if ((g->input != NULL) + (g->prompt != NULL) + (g->messages != NULL) != 1)
		return fail(err, "exactly one of input, prompt and messages is required");
	size_t bytes = g->prompt ? strlen(g->prompt) : 0;
	for (uint32_t i = 0; i < g->nmessages; i++)
		bytes += strlen(g->messages[i].content);
	if (bytes > INFER_MAX_TEXT_BYTES)
		return fail(err, "%s is %zu bytes; at most %u", g->prompt ? "prompt" : "messages (their content together)",
			    bytes, INFER_MAX_TEXT_BYTES);
	return 0;
}

int gen_read(struct arg map, struct gen *g, char err[GEN_ERR_LEN])
{
	uint64_t max_tokens = INFER_MAX_TOKENS, top_k = 0;

	memset(g, 0, sizeof *g);
	g->temperature = GEN_DEFAULT_TEMPERATURE;
	g->seed = GEN_SEED_RANDOM;
	g->top_p = 1.0;
	g->repeat_penalty = 1.0;
	if (read_prompt(map, g, err) || read_uint(map, "max_tokens", INFER_MAX_TOKENS, &max_tokens, err) ||
	    read_uint(map, "top_k", UINT32_MAX, &top_k, err) || read_uint(map, "seed", UINT32_MAX, &g->seed, err) ||
	    read_real(map, "temperature", 0, GEN_MAX_TEMPERATURE, &g->temperature, err) ||
	    read_real(map, "top_p", 0, 1, &g->top_p, err) || read_real(map, "min_p", 0, 1, &g->min_p, err) ||
	    read_real(map, "repeat_penalty", 0, GEN_MAX_REPEAT_PENALTY, &g->repeat_penalty, err) ||
	    read_stop(map, g, err))
		return -1;
	if (arg_bool(map, "stream", &g->stream) == MSG_BAD_TYPE)
		return fail(err, "stream must be a boolean");
	g->max_tokens = (uint32_t)max_tokens;
	g->max_tokens_default = arg_type(arg_get(map, "max_tokens")) == ARG_NONE;
	g->top_k = (uint32_t)top_k;
	return 0;
}

void gen_write(struct msgw *w, const struct gen *g)
{
	if (g->input) {
		msgw_key(w, "input");
		msgw_u32s(w, g->input, g->ninput);
	}
	if (g->prompt)
		msgw_kstr(w, "prompt", g->prompt);
	if (g->messages) {
		msgw_key(w, "messages");
		msgw_array(w);
		for (uint32_t i = 0; i < g->nmessages; i++) {
			msgw_map(w);
			msgw_kstr(w, "role", g->messages[i].role);
			msgw_kstr(w, "content", g->messages[i].content);
			msgw_end(w);
		}
		msgw_end(w);
	}
	msgw_ku64(w, "max_tokens", g->max_tokens);
	msgw_kbool(w, "stream", g->stream);
	msgw_key(w, "temperature");
	msgw_f64(w, g->temperature);
	msgw_ku64(w, "top_k", g->top_k);
	msgw_key(w, "top_p");
	msgw_f64(w, g->top_p);
	msgw_key(w, "min_p");
	msgw_f64(w, g->min_p);
	msgw_key(w, "repeat_penalty");
	msgw_f64(w, g->repeat_penalty);
	if (g->seed != GEN_SEED_RANDOM)
		msgw_ku64(w, "seed", g->seed);
	if (g->nstop) {
		msgw_key(w, "stop");
		msgw_array(w);
		for (uint32_t i = 0; i < g->nstop; i++)
			msgw_str(w, g->stop[i]);
		msgw_end(w);
	}
}

void gen_free(struct gen *g)
{
	for (uint32_t i = 0; i < g->nmessages; i++) {
		free(g->messages[i].role);
		free(g->messages[i].content);
	}
	for (uint32_t i = 0; i < g->nstop; i++)
		free(g->stop[i]);
	free(g->messages);
	free(g->stop);
	free(g->input);
	free(g->prompt);
	memset(g, 0, sizeof *g);
}
