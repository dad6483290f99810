/*
 * llama-direct: a model run through libllama in one process, as modeld's
 * llama engine runs it (same tokenization, context, batch and threads), for
 * tests to compare against and benchmarks to measure beside.
 *
 *   llama-direct MODEL --prompt TEXT [--n N] [--threads N]   greedy token ids, one line
 *   llama-direct MODEL --embed TEXT [--threads N]            the normalized embedding, one line
 *   llama-direct MODEL --prompt TEXT --n N --bench           load_ms, ttft_ms and tok_s, a line each
 */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llama.h>

#define CTX_DEFAULT_MAX 4096
#define BATCH_DEFAULT 512

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void quiet(enum ggml_log_level level, const char *text, void *arg)
{
	(void)arg;
	if (level == GGML_LOG_LEVEL_ERROR)
		fputs(text, stderr);
}

static int fail(const char *what)
{
	fprintf(stderr, "llama-direct: %s\n", what);
	return 1;
}

static llama_token *tokenize(const struct llama_vocab *v, const char *text, int32_t *n)
{
	int32_t cap = (int32_t)strlen(text) + 2;
	llama_token *t = malloc((size_t)cap * sizeof *t);
	*n = t ? llama_tokenize(v, text, (int32_t)strlen(text), t, cap, true, true) : -1;
	return t;
}

static int decode_all(struct llama_context *ctx, llama_token *t, int32_t n, int32_t batch)
{
	for (int32_t i = 0; i < n; i += batch)
		if (llama_decode(ctx, llama_batch_get_one(t + i, n - i < batch ? n - i : batch)))
			return -1;
	return 0;
}

static int embed(struct llama_model *m, struct llama_context *ctx, const char *text)
{
	int32_t n;
	llama_token *t = tokenize(llama_model_get_vocab(m), text, &n);

	if (n <= 0 || decode_all(ctx, t, n, n))
		return fail("cannot embed");
	const float *v = llama_get_embeddings_seq(ctx, 0);
	int32_t dim = llama_model_n_embd_out(m);
	double norm = 0;
	for (int32_t i = 0; i < dim; i++)
		norm += (double)v[i] * v[i];
	norm = norm > 0 ? sqrt(norm) : 1;
	for (int32_t i = 0; i < dim; i++)
		printf("%s%.7g", i ? " " : "", (float)(v[i] / norm));
	printf("\n");
	free(t);
	return 0;
}

static int generate(struct llama_model *m, struct llama_context *ctx, const char *prompt, int max,
		    int bench, double load_ms)
{
	const struct llama_vocab *v = llama_model_get_vocab(m);
	struct llama_sampler *s = llama_sampler_chain_init(llama_sampler_chain_default_params());
	int32_t n;
	llama_token *t = tokenize(v, prompt, &n);
	char piece[256];
	int out = 0;

	llama_sampler_chain_add(s, llama_sampler_init_greedy());
	double t0 = now_ms(), first = 0;
	if (n <= 0 || decode_all(ctx, t, n, BATCH_DEFAULT))
		return fail("cannot decode the prompt");
	for (; out < max && (uint32_t)(n + out) < llama_n_ctx(ctx); out++) {
		llama_token tok = llama_sampler_sample(s, ctx, -1);
		if (!first)
			first = now_ms();
		if (llama_vocab_is_eog(v, tok))
			break;
		llama_token_to_piece(v, tok, piece, sizeof piece, 0, false);
		if (!bench)
			printf("%s%d", out ? " " : "", tok);
		if (llama_decode(ctx, llama_batch_get_one(&tok, 1)))
			return fail("cannot decode");
	}
	double end = now_ms();
	if (bench)
		printf("load_ms %.3f\nttft_ms %.3f\ntok_s %.3f\ntokens %d\n", load_ms, first - t0,
		       out > 1 ? (out - 1) / ((end - first) / 1e3) : 0.0, out);
	else
		printf("\n");
	llama_sampler_free(s);
	free(t);
	return 0;
}

int main(int argc, char **argv)
{
	const char *prompt = NULL, *text = NULL;
	int max = 16, threads = 0, bench = 0;
	cpu_set_t set;

	if (argc < 3)
		return fail("usage: llama-direct MODEL (--prompt TEXT [--n N] [--bench] | --embed TEXT) [--threads N]");
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--bench") == 0)
			bench = 1;
		else if (i + 1 >= argc)
			return fail("an option lacks its value");
		else if (strcmp(argv[i], "--prompt") == 0)
			prompt = argv[++i];
		else if (strcmp(argv[i], "--embed") == 0)
			text = argv[++i];
		else if (strcmp(argv[i], "--n") == 0)
			max = atoi(argv[++i]);
		else if (strcmp(argv[i], "--threads") == 0)
			threads = atoi(argv[++i]);
		else
			return fail("unknown option");
	}
	if (!threads)
		threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
	llama_log_set(quiet, NULL);
	llama_backend_init();
	double t0 = now_ms();
	struct llama_model_params mp = llama_model_default_params();
	mp.n_gpu_layers = 0;
	struct llama_model *m = llama_model_load_from_file(argv[1], mp);
	if (!m)
		return fail("cannot load the model");
	struct llama_context_params cp = llama_context_default_params();
	int32_t trained = llama_model_n_ctx_train(m);
	cp.n_ctx = trained < CTX_DEFAULT_MAX ? (uint32_t)trained : CTX_DEFAULT_MAX;
	cp.n_batch = cp.n_ubatch = text ? cp.n_ctx : BATCH_DEFAULT;
	cp.n_threads = cp.n_threads_batch = threads;
	cp.no_perf = true;
	cp.embeddings = text != NULL;
	if (text)
		cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;
	struct llama_context *ctx = llama_init_from_model(m, cp);
	if (!ctx)
		return fail("cannot make a context");
	double load_ms = now_ms() - t0;
	int rc = text ? embed(m, ctx, text) : generate(m, ctx, prompt ? prompt : "", max, bench, load_ms);
	llama_free(ctx);
	llama_model_free(m);
	return rc;
}
