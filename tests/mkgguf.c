/*
 * mkgguf: writes a llama-architecture GGUF model with random weights and a
 * real tokenizer, for tests and benchmarks (no model with real weights can
 * be had here; random weights give gibberish text, but real tokens, shapes
 * and speed).
 *
 *   mkgguf VOCAB.gguf OUT.gguf [--shape tiny|small|smollm|tinyllama] [--type f32|f16|q8_0|q4_0]
 *          [--seed N] [--ctx N] [--chat-template NAME|none] [--name NAME]
 *
 * The tokenizer (every tokenizer.ggml.* key) is copied from VOCAB, one of
 * llama.cpp's vocab-only files. Weights are uniform random, norms 1; the
 * tensors point into one random pool, so memory stays near the largest
 * tensor whatever the model's size. Quantized types are made from an F32
 * file with llama_model_quantize.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml.h>
#include <gguf.h>
#include <llama.h>

struct shape {
	const char *name;
	uint32_t embd, layers, heads, heads_kv, ff;
};

static const struct shape shapes[] = {
	{ "tiny", 64, 2, 4, 4, 256 },
	{ "small", 256, 4, 4, 4, 1024 },		/* slow enough that a long prompt takes seconds */
	{ "smollm", 576, 30, 9, 3, 1536 },		/* SmolLM2-135M */
	{ "tinyllama", 2048, 22, 32, 4, 5632 },	/* TinyLlama-1.1B */
};

struct opts {
	const char *vocab, *out, *type, *chat_template, *name;
	const struct shape *shape;
	uint64_t seed;
	uint32_t ctx;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "mkgguf: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A tensor of rows x cols (ggml order: cols first) pointing into pool at a place of its own. */
static void add(struct gguf_context *g, struct ggml_context *ctx, const char *name, int64_t cols,
		int64_t rows, float *pool, size_t pool_len, float *ones, size_t *at)
{
	struct ggml_tensor *t = rows ? ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, rows) :
				       ggml_new_tensor_1d(ctx, GGML_TYPE_F32, cols);
	size_t n = (size_t)ggml_nelements(t);

	ggml_set_name(t, name);
	if (rows == 0) {
		t->data = ones;
	} else {
		*at = (*at + 7919) % (pool_len - n + 1);
		t->data = pool + *at;
	}
	gguf_add_tensor(g, t);
}

static void set_hparams(struct gguf_context *g, const struct opts *o)
{
	const struct shape *s = o->shape;

	gguf_set_val_str(g, "general.architecture", "llama");
	gguf_set_val_str(g, "general.name", o->name);
	gguf_set_val_u32(g, "general.file_type", 0);	/* all F32 */
	gguf_set_val_u32(g, "llama.context_length", o->ctx);
	gguf_set_val_u32(g, "llama.embedding_length", s->embd);
	gguf_set_val_u32(g, "llama.block_count", s->layers);
	gguf_set_val_u32(g, "llama.feed_forward_length", s->ff);
	gguf_set_val_u32(g, "llama.attention.head_count", s->heads);
	gguf_set_val_u32(g, "llama.attention.head_count_kv", s->heads_kv);
	gguf_set_val_u32(g, "llama.rope.dimension_count", s->embd / s->heads);
	gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
	gguf_set_val_f32(g, "llama.rope.freq_base", 10000.0f);
	if (strcmp(o->chat_template, "none") == 0)
		gguf_remove_key(g, "tokenizer.chat_template");
	else
		gguf_set_val_str(g, "tokenizer.chat_template", o->chat_template);
}

/* The tokenizer's keys from the vocab file. */
static void copy_tokenizer(struct gguf_context *g, const char *vocab)
{
	struct gguf_init_params ip = { .no_alloc = true, .ctx = NULL };
	struct gguf_context *v = gguf_init_from_file(vocab, ip);

	if (!v)
		die("cannot read %s", vocab);
	gguf_set_kv(g, v);
	gguf_free(v);
}

static void write_f32(const struct opts *o, const char *path)
{
	const struct shape *s = o->shape;
	struct gguf_context *g = gguf_init_empty();
	copy_tokenizer(g, o->vocab);
	set_hparams(g, o);
	int64_t vocab = (int64_t)gguf_get_arr_n(g, gguf_find_key(g, "tokenizer.ggml.tokens"));
	int64_t kv = (int64_t)s->embd / s->heads * s->heads_kv;
	size_t pool_len = (size_t)(vocab > s->ff ? vocab : s->ff) * s->embd + 65536;
	float *pool = malloc(pool_len * sizeof *pool), *ones = malloc(s->embd * sizeof *ones);
	uint64_t state = o->seed * 2654435761u + 88172645463325252ull;
	float scale = 1.0f / sqrtf((float)s->embd);

	if (!pool || !ones)
		die("out of memory");
	for (size_t i = 0; i < pool_len; i++)
		pool[i] = ((float)(rng(&state) >> 11) / (float)(1ull << 53) * 2.0f - 1.0f) * scale * 4.0f;
	for (uint32_t i = 0; i < s->embd; i++)
		ones[i] = 1.0f;
	struct ggml_init_params gp = { .mem_size = (size_t)(s->layers * 9 + 8) * ggml_tensor_overhead(),
				       .no_alloc = true };
	struct ggml_context *ctx = ggml_init(gp);
	size_t at = 0;
	char name[64];
	add(g, ctx, "token_embd.weight", s->embd, vocab, pool, pool_len, ones, &at);
	add(g, ctx, "output_norm.weight", s->embd, 0, pool, pool_len, ones, &at);
	add(g, ctx, "output.weight", s->embd, vocab, pool, pool_len, ones, &at);
	for (uint32_t l = 0; l < s->layers; l++) {
#define BLK(part, cols, rows) (snprintf(name, sizeof name, "blk.%u." part ".weight", l), \
			       add(g, ctx, name, cols, rows, pool, pool_len, ones, &at))
		BLK("attn_norm", s->embd, 0);
		BLK("attn_q", s->embd, s->embd);
		BLK("attn_k", s->embd, kv);
		BLK("attn_v", s->embd, kv);
		BLK("attn_output", s->embd, s->embd);
		BLK("ffn_norm", s->embd, 0);
		BLK("ffn_gate", s->embd, s->ff);
		BLK("ffn_down", s->ff, s->embd);
		BLK("ffn_up", s->embd, s->ff);
#undef BLK
	}
	if (!gguf_write_to_file(g, path, false))
		die("cannot write %s", path);
	ggml_free(ctx);
	gguf_free(g);
	free(pool);
	free(ones);
}

static enum llama_ftype ftype(const char *type)
{
	if (strcmp(type, "f16") == 0)
		return LLAMA_FTYPE_MOSTLY_F16;
	if (strcmp(type, "q8_0") == 0)
		return LLAMA_FTYPE_MOSTLY_Q8_0;
	if (strcmp(type, "q4_0") == 0)
		return LLAMA_FTYPE_MOSTLY_Q4_0;
	die("--type %s: f32, f16, q8_0 or q4_0", type);
}

static void quiet(enum ggml_log_level level, const char *text, void *arg)
{
	(void)arg;
	if (level == GGML_LOG_LEVEL_ERROR)
		fputs(text, stderr);
}

static void parse(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .type = "f32", .chat_template = "chatml", .name = "random", .shape = &shapes[0],
			    .seed = 1, .ctx = 2048 };
	if (argc < 3)
		die("usage: mkgguf VOCAB.gguf OUT.gguf [--shape tiny|small|smollm|tinyllama] [--type f32|f16|q8_0|"
		    "q4_0] [--seed N] [--ctx N] [--chat-template NAME|none] [--name NAME]");
	o->vocab = argv[1];
	o->out = argv[2];
	for (int i = 3; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (strcmp(k, "--shape") == 0) {
			o->shape = NULL;
			for (size_t j = 0; j < sizeof shapes / sizeof shapes[0]; j++)
				if (strcmp(shapes[j].name, v) == 0)
					o->shape = &shapes[j];
			if (!o->shape)
				die("--shape %s: tiny, small, smollm or tinyllama", v);
		} else if (strcmp(k, "--type") == 0) {
			o->type = v;
		} else if (strcmp(k, "--seed") == 0) {
			o->seed = strtoull(v, NULL, 10);
		} else if (strcmp(k, "--ctx") == 0) {
			o->ctx = (uint32_t)strtoul(v, NULL, 10);
		} else if (strcmp(k, "--chat-template") == 0) {
			o->chat_template = v;
		} else if (strcmp(k, "--name") == 0) {
			o->name = v;
		} else {
			die("unknown option %s", k);
		}
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	char tmp[4096];

	parse(argc, argv, &o);
	llama_log_set(quiet, NULL);
	if (strcmp(o.type, "f32") == 0) {
		write_f32(&o, o.out);
		return 0;
	}
	struct llama_model_quantize_params qp = llama_model_quantize_default_params();
	qp.ftype = ftype(o.type);
	snprintf(tmp, sizeof tmp, "%s.f32.tmp", o.out);
	write_f32(&o, tmp);
	uint32_t rc = llama_model_quantize(tmp, o.out, &qp);
	remove(tmp);
	if (rc)
		die("quantizing to %s failed", o.type);
	return 0;
}
