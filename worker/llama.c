/*
 * llama.c: the llama engine (modeld-engine-llama.so): GGUF language models
 * through llama.cpp's C API, text in and text out.
 *
 * The model is opened as /proc/self/fd/N, the descriptor modeld passed, and
 * read by llama.cpp in the worker's loading sandbox (files open only to be
 * read); its context (KV cache, compute buffers) is made in load too, so
 * that everything that opens files or probes the host happens before the
 * loaded sandbox, which opens nothing. llama.cpp's own log goes to the
 * worker's log at warning level and above; its first error line is the
 * reason a load fails.
 *
 * Generations run together as llama.cpp's server runs its slots: one context
 * with `parallel` sequences, each with its own stream of KV cells (ctx of
 * them, so ctx is what one request may use) and its own sampler. A step is
 * one llama_decode of a batch holding the last token of every sequence that
 * generates and then as much of the waiting prompts as the batch has room
 * for; a sequence that begins joins at the next step, and its cells are
 * freed when it ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <ggml-backend.h>
#include <llama.h>

#include "../proto/proto.h"
#include "engine.h"

#define LLAMA_BATCH_DEFAULT 512
#define LLAMA_PIECE_MAX 256
#define LLAMA_REPEAT_LAST_N 64
#define LLAMA_ERR_MAX 200	/* of llama.cpp's first error line, carried in a failed load's message; the rest is cut */
#define LLAMA_DECODE_ABORTED 2	/* llama_decode's answer when the abort callback said stop */
/* Texts at least this long are tokenized on a thread while the worker's thread ticks, every LM_TICK_WAIT_US. */
#define LM_TOKENIZE_INLINE_BYTES 16384
#define LM_TICK_WAIT_US 1000

struct engine_ctx {
	struct engine_params p;		/* its strings are the caller's, gone after load: */
	char *name;			/* the model's, for messages */
	char *chat_template;		/* the configured one, or NULL */
	bool gpu;
	ggml_backend_dev_t devices[2];	/* the slot's GPU, NULL-terminated; none on cpu */
	uint32_t threads;
	struct llama_model *model;
	struct llama_context *lctx;
	const struct llama_vocab *vocab;
	uint32_t n_ctx, n_batch;	/* n_ctx: one sequence's */
	struct llama_batch batch;	/* a step's, n_batch tokens */
	bool batch_made;
	uint64_t seq_ids;		/* bit i: sequence id i is taken */
	uint64_t file_bytes;
	engine_progress_fn progress;
	void *progress_arg;
	bool aborted;			/* the progress callback asked to stop */
	int statm;			/* /proc/self/statm, opened before the sandbox */
	char first_error[LLAMA_ERR_MAX];	/* llama.cpp's first error line since it was cleared: the reason */
};

/* One generation: its sequence in the context, its prompt, its sampler and where it is. */
struct engine_seq {
	llama_seq_id id;
	llama_token *tokens;		/* the prompt */
	int32_t ntokens;
	int32_t fed;			/* prompt tokens decoded */
	llama_token next;		/* the token made last, decoded by the next step */
	bool has_next;
	uint32_t made, max_tokens;
	int32_t logits_at;		/* its row of this step's logits, or -1 */
	struct llama_sampler *sampler;
	char piece[LLAMA_PIECE_MAX];
};

/*
 * llama.cpp logs in pieces. The first error line of a step is its reason:
 * what follows it says only that the step failed ("failed to load model").
 */
static void llama_log(enum ggml_log_level level, const char *text, void *arg)
{
	struct engine_ctx *c = arg;
	size_t n = strcspn(text, "\n");

	if (level == GGML_LOG_LEVEL_ERROR) {
		if (!c->first_error[0])
			snprintf(c->first_error, sizeof c->first_error, "%.*s", (int)n, text);
		c->p.log(0, "llama.cpp: %.*s", (int)n, text);
	} else if (level == GGML_LOG_LEVEL_WARN && n) {
		c->p.log(1, "llama.cpp: %.*s", (int)n, text);
	}
}

static uint32_t host_cores(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return (uint32_t)CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (uint32_t)n : 1;
}

/* The n-th GPU ggml knows, or NULL. */
static ggml_backend_dev_t gpu_device(unsigned n)
{
	for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
		ggml_backend_dev_t d = ggml_backend_dev_get(i);
		if (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_GPU && n-- == 0)
			return d;
	}
	return NULL;
}

static int llama_open(struct engine_ctx **ctx, const struct engine_params *p, struct engine_error *e)
{
	bool gpu = strncmp(p->device, "cuda:", 5) == 0;

	if (!gpu && strcmp(p->device, "cpu") != 0)
		return engine_fail(e, ENGINE_UNAVAILABLE, "the llama engine cannot run on %s", p->device);
	struct engine_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return engine_fail(e, "load_failed", "out of memory");
	c->p = *p;
	c->statm = -1;
	c->gpu = gpu;
	c->threads = p->threads ? p->threads : host_cores();
	*ctx = c;
	c->name = strdup(p->model);
	if (!c->name || (p->chat_template && !(c->chat_template = strdup(p->chat_template))))
		return engine_fail(e, "load_failed", "out of memory");
	c->p.device = c->p.model = c->p.chat_template = NULL;
	llama_log_set(llama_log, c);
	llama_backend_init();
	if (gpu && !gpu_device(0))
		return engine_fail(e, "load_failed", "this llama engine was built without ggml's CUDA "
				   "backend (make LLAMA_CUDA=1), and does not fall back to the CPU");
	if (gpu && !(c->devices[0] = gpu_device((unsigned)atoi(p->device + 5))))
		return engine_fail(e, ENGINE_UNAVAILABLE, "ggml finds no GPU %s", p->device + 5);
	return 0;
}

static bool on_load_progress(float progress, void *arg)
{
	struct engine_ctx *c = arg;
	uint64_t bytes = (uint64_t)(progress * (double)c->file_bytes);

	if (c->progress(c->progress_arg, bytes > c->file_bytes ? c->file_bytes : bytes, c->file_bytes))
		c->aborted = true;
	return !c->aborted;
}

/* The pooling for embeddings: the model's, else the mean. */
static enum llama_pooling_type model_pooling(const struct llama_model *m)
{
	char arch[64], key[96], val[32];

	if (llama_model_meta_val_str(m, "general.architecture", arch, sizeof arch) < 0)
		return LLAMA_POOLING_TYPE_MEAN;
	snprintf(key, sizeof key, "%s.pooling_type", arch);
	if (llama_model_meta_val_str(m, key, val, sizeof val) < 0)
		return LLAMA_POOLING_TYPE_MEAN;
	int v = atoi(val);
	return v > LLAMA_POOLING_TYPE_NONE && v <= LLAMA_POOLING_TYPE_RANK ? (enum llama_pooling_type)v :
	       LLAMA_POOLING_TYPE_MEAN;
}

static bool on_compute(void *arg)
{
	struct engine_ctx *c = arg;

	return c->p.tick(c->p.tick_arg) != 0;
}

static int make_context(struct engine_ctx *c, struct engine_error *e)
{
	struct llama_context_params cp = llama_context_default_params();
	uint32_t trained = (uint32_t)llama_model_n_ctx_train(c->model);

	cp.n_ctx = c->p.ctx ? c->p.ctx : trained < LM_CTX_DEFAULT_MAX ? trained : LM_CTX_DEFAULT_MAX;
	cp.n_batch = cp.n_ubatch = c->p.batch ? c->p.batch : LLAMA_BATCH_DEFAULT;
	if (c->p.embedding && cp.n_batch < cp.n_ctx)	/* a text is embedded in one batch */
		cp.n_batch = cp.n_ubatch = cp.n_ctx;
	cp.n_seq_max = c->p.embedding ? 1 : c->p.parallel;
	if (cp.n_batch < cp.n_seq_max)	/* a step holds a token of each */
		cp.n_batch = cp.n_ubatch = cp.n_seq_max;
	cp.n_ctx *= cp.n_seq_max;	/* ctx cells for each sequence: */
	cp.kv_unified = false;		/* in streams of their own, as the server without a shared prompt */
	cp.n_threads = cp.n_threads_batch = (int32_t)c->threads;
	cp.offload_kqv = cp.op_offload = c->gpu;	/* a cpu slot leaves every GPU alone */
	cp.no_perf = true;
	cp.abort_callback = on_compute;	/* between the graph's nodes, on the calling thread */
	cp.abort_callback_data = c;
	cp.embeddings = c->p.embedding;
	if (c->p.embedding)
		cp.pooling_type = model_pooling(c->model);
	c->first_error[0] = '\0';
	c->lctx = llama_init_from_model(c->model, cp);
	if (!c->lctx)
		return engine_fail(e, "insufficient_memory", "cannot make a context of %u tokens: %s", cp.n_ctx,
				   c->first_error[0] ? c->first_error : "llama.cpp gave no reason");
	c->n_ctx = llama_n_ctx_seq(c->lctx);
	c->n_batch = llama_n_batch(c->lctx);	/* llama.cpp keeps it within the context */
	c->batch = llama_batch_init((int32_t)c->n_batch, 0, 1);
	c->batch_made = true;
	c->p.log(2, "%s: context %u tokens x %u sequences, batch %u, %u threads%s", c->name, c->n_ctx,
		 cp.n_seq_max, c->n_batch, c->threads, c->p.embedding ? ", embeddings" : "");
	return 0;
}

static int llama_load(struct engine_ctx *c, int fd, engine_progress_fn progress, void *arg,
		      struct engine_error *e)
{
	struct llama_model_params mp = llama_model_default_params();
	char path[64];
	struct stat st;

	if (fstat(fd, &st) < 0)
		return engine_fail(e, "load_failed", "fstat: %s", strerror(errno));
	c->file_bytes = (uint64_t)st.st_size;
	c->progress = progress;
	c->progress_arg = arg;
	mp.n_gpu_layers = c->gpu ? c->p.gpu_layers : 0;	/* negative: all of them */
	mp.devices = c->devices;			/* the slot's GPU only; none on cpu */
	mp.split_mode = LLAMA_SPLIT_MODE_NONE;
	mp.main_gpu = 0;
	mp.progress_callback = on_load_progress;
	mp.progress_callback_user_data = c;
	/* read, not mapped: a file written over in place (cp) must not take the weights, or the worker
	 * (SIGBUS where it got shorter), with it */
	mp.load_mode = LLAMA_LOAD_MODE_NONE;
	mp.lazy_mode = LLAMA_LAZY_MODE_OFF;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	c->first_error[0] = '\0';
	c->model = llama_model_load_from_file(path, mp);
	if (!c->model) {
		if (c->aborted)
			return engine_fail(e, "cancelled", "load aborted");
		return engine_fail(e, "load_failed", "llama.cpp could not load the model: %s",
				   c->first_error[0] ? c->first_error : "it gave no reason");
	}
	c->vocab = llama_model_get_vocab(c->model);
	if (make_context(c, e))
		return -1;
	progress(arg, c->file_bytes, c->file_bytes);
	c->statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	return 0;
}

/* Decodes a batch; 0, or -1 with e (cancelled when a tick said so). */
static int decode(struct engine_ctx *c, struct llama_batch b, struct engine_error *e)
{
	int rc = llama_decode(c->lctx, b);

	if (rc == LLAMA_DECODE_ABORTED)
		return engine_fail(e, "cancelled", "cancelled");
	if (rc)
		return engine_fail(e, "internal", "llama_decode failed (%d)", rc);
	return 0;
}

/* Clears the KV cache and decodes n tokens in batches, as sequence 0: a warmup's or an embedding's,
 * while no generation runs. */
static int decode_prompt(struct engine_ctx *c, llama_token *t, int32_t n, struct engine_error *e)
{
	llama_memory_clear(llama_get_memory(c->lctx), false);	/* the cells, not the buffers: they are overwritten */
	for (int32_t i = 0; i < n; i += (int32_t)c->n_batch)
		if (decode(c, llama_batch_get_one(t + i, n - i < (int32_t)c->n_batch ? n - i : (int32_t)c->n_batch), e))
			return -1;
	return 0;
}

static int llama_warmup(struct engine_ctx *c, struct engine_error *e)
{
	llama_token t = llama_vocab_bos(c->vocab);

	if (t == LLAMA_TOKEN_NULL)
		t = 0;
	return decode_prompt(c, &t, 1, e);
}

/* One llama_tokenize call, to be run on a thread of its own. */
struct tokenizing {
	const struct llama_vocab *vocab;
	const char *text;
	int32_t len, cap, n;
	llama_token *out;
	bool add_special, parse_special;
	atomic_bool done;
};

static void *tokenizing_run(void *arg)
{
	struct tokenizing *t = arg;

	t->n = llama_tokenize(t->vocab, t->text, t->len, t->out, t->cap, t->add_special, t->parse_special);
	atomic_store(&t->done, true);
	return NULL;
}

/*
 * Runs t; a long text on a thread of its own while this one ticks every
 * LM_TICK_WAIT_US, so that the worker answers heartbeats: llama.cpp splits
 * out special tokens in time that grows with the square of their number
 * (140 KB of them: 3 s), and the call cannot be cut short.
 */
static void tokenize_ticking(struct engine_ctx *c, struct tokenizing *t)
{
	static const struct timespec wait = { 0, LM_TICK_WAIT_US * 1000 };
	pthread_t thread;

	if (t->len < LM_TOKENIZE_INLINE_BYTES || pthread_create(&thread, NULL, tokenizing_run, t) != 0) {
		tokenizing_run(t);
		return;
	}
	while (!atomic_load(&t->done)) {
		c->p.tick(c->p.tick_arg);	/* a cancel is seen once the text is tokenized */
		nanosleep(&wait, NULL);
	}
	pthread_join(thread, NULL);
}

/* text as tokens, into a malloc'd array. */
static int tokenize(struct engine_ctx *c, const char *text, bool add_special, bool parse_special,
		    llama_token **out, int32_t *n, struct engine_error *e)
{
	size_t len = strlen(text);

	if (len > INT32_MAX / 2)
		return engine_fail(e, "bad_request", "the text is too long");
	int32_t cap = (int32_t)len + 2;
	*out = malloc((size_t)cap * sizeof **out);
	if (!*out)
		return engine_fail(e, "insufficient_memory", "out of memory");
	struct tokenizing t = { .vocab = c->vocab, .text = text, .len = (int32_t)len, .cap = cap, .out = *out,
				.add_special = add_special, .parse_special = parse_special };
	tokenize_ticking(c, &t);
	*n = t.n;
	if (*n < 0) {
		free(*out);
		*out = NULL;
		return engine_fail(e, "bad_request", "the text cannot be tokenized");
	}
	return 0;
}

static const char *const roles[] = { "system", "user", "assistant", "tool" };

/* messages through the chat template, into a malloc'd string. */
static int render_chat(struct engine_ctx *c, const struct engine_request *rq, char **out,
		       struct engine_error *e)
{
	const char *tmpl = c->chat_template ? c->chat_template : llama_model_chat_template(c->model, NULL);
	size_t total = 0;

	if (!tmpl)
		return engine_fail(e, "bad_request", "model %s has no chat template: send prompt, or set "
				   "chat_template", c->name);
	for (uint32_t i = 0; i < rq->nmessages; i++) {
		bool known = false;
		for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++)
			known |= strcmp(rq->messages[i].role, roles[r]) == 0;
		if (!known)
			return engine_fail(e, "bad_request", "messages[%u]: unknown role \"%.32s\" (system, "
					   "user, assistant or tool)", i, rq->messages[i].role);
		total += strlen(rq->messages[i].content) + 64;
	}
	struct llama_chat_message *m = calloc(rq->nmessages, sizeof *m);
	if (!m)
		return engine_fail(e, "insufficient_memory", "out of memory");
	for (uint32_t i = 0; i < rq->nmessages; i++)
		m[i] = (struct llama_chat_message){ rq->messages[i].role, rq->messages[i].content };
	int32_t cap = total * 2 + 256 > INT32_MAX ? INT32_MAX : (int32_t)(total * 2 + 256), n;
	*out = NULL;
	do {
		free(*out);
		*out = malloc((size_t)cap + 1);
		n = *out ? llama_chat_apply_template(tmpl, m, rq->nmessages, true, *out, cap) : -1;
	} while (*out && n > cap && (cap = n));
	free(m);
	if (n < 0) {
		free(*out);
		return engine_fail(e, "bad_request", "the chat template of model %s is not one llama.cpp "
				   "knows; set chat_template", c->name);
	}
	(*out)[n] = '\0';
	return 0;
}

/* The prompt's tokens: as given, as text, or as chat messages rendered. */
static int prompt_tokens(struct engine_ctx *c, const struct engine_request *rq, struct engine_seq *g,
			 struct engine_error *e)
{
	int32_t n_vocab = llama_vocab_n_tokens(c->vocab);

	if (rq->input) {
		g->tokens = malloc(rq->ninput * sizeof *g->tokens);
		if (!g->tokens)
			return engine_fail(e, "insufficient_memory", "out of memory");
		for (uint32_t i = 0; i < rq->ninput; i++) {
			if (rq->input[i] >= (uint32_t)n_vocab)
				return engine_fail(e, "bad_request", "input token %u is not below the "
						   "vocabulary size %d", rq->input[i], n_vocab);
			g->tokens[i] = (llama_token)rq->input[i];
		}
		g->ntokens = (int32_t)rq->ninput;
		return 0;
	}
	if (rq->prompt)	/* as llama.cpp's server tokenizes a completion prompt */
		return tokenize(c, rq->prompt, true, true, &g->tokens, &g->ntokens, e);
	char *chat = NULL;
	if (render_chat(c, rq, &chat, e))
		return -1;
	/* A template that writes the BOS itself must not get a second one. */
	const char *bos = llama_vocab_get_text(c->vocab, llama_vocab_bos(c->vocab));
	bool has_bos = bos && *bos && strncmp(chat, bos, strlen(bos)) == 0;
	int rc = tokenize(c, chat, !has_bos, true, &g->tokens, &g->ntokens, e);
	free(chat);
	return rc;
}

/* A sampler chain for s; NULL for plain greedy decoding, which sample() does itself. */
static struct llama_sampler *make_sampler(const struct engine_ctx *c, const struct engine_sampling *s)
{
	if (s->temperature <= 0 && s->repeat_penalty == 1.0)
		return NULL;
	struct llama_sampler *chain = llama_sampler_chain_init(llama_sampler_chain_default_params());

	if (s->repeat_penalty != 1.0)
		llama_sampler_chain_add(chain, llama_sampler_init_penalties(llama_vocab_n_tokens(c->vocab),
			LLAMA_REPEAT_LAST_N, (float)s->repeat_penalty, 0.0f, 0.0f));
	if (s->temperature <= 0) {
		llama_sampler_chain_add(chain, llama_sampler_init_greedy());
		return chain;
	}
	if (s->top_k)
		llama_sampler_chain_add(chain, llama_sampler_init_top_k((int32_t)s->top_k));
	if (s->top_p < 1.0)
		llama_sampler_chain_add(chain, llama_sampler_init_top_p((float)s->top_p, 1));
	if (s->min_p > 0)
		llama_sampler_chain_add(chain, llama_sampler_init_min_p((float)s->min_p, 1));
	llama_sampler_chain_add(chain, llama_sampler_init_temp((float)s->temperature));
	llama_sampler_chain_add(chain, llama_sampler_init_dist(s->seed == ENGINE_SEED_RANDOM ?
		LLAMA_DEFAULT_SEED : (uint32_t)s->seed));
	return chain;
}

static void llama_end(struct engine_ctx *c, struct engine_seq *q)
{
	if (q->id >= 0) {
		llama_memory_seq_rm(llama_get_memory(c->lctx), q->id, -1, -1);
		c->seq_ids &= ~(1ull << q->id);
	}
	if (q->sampler)
		llama_sampler_free(q->sampler);
	free(q->tokens);
	free(q);
}

static int llama_begin(struct engine_ctx *c, const struct engine_request *rq, struct engine_seq **seq,
		       uint32_t *prompt_tokens_out, struct engine_error *e)
{
	if (c->p.embedding)
		return engine_fail(e, "bad_request", "model %s is set up for embeddings", c->name);
	struct engine_seq *q = calloc(1, sizeof *q);
	if (!q)
		return engine_fail(e, "insufficient_memory", "out of memory");
	q->id = -1;
	if (prompt_tokens(c, rq, q, e))
		goto failed;
	if (q->ntokens == 0 || (uint32_t)q->ntokens >= c->n_ctx) {
		engine_fail(e, "bad_request", "the prompt is %d tokens; model %s takes 1 to %u", q->ntokens,
			    c->name, c->n_ctx - 1);
		goto failed;
	}
	for (q->id = 0; c->seq_ids & (1ull << q->id); q->id++)
		;	/* the worker begins no more than parallel of them */
	c->seq_ids |= 1ull << q->id;
	llama_memory_seq_rm(llama_get_memory(c->lctx), q->id, -1, -1);	/* a warmup's or an embedding's cells */
	q->max_tokens = rq->max_tokens;
	q->sampler = make_sampler(c, &rq->sampling);
	*prompt_tokens_out = (uint32_t)q->ntokens;
	*seq = q;
	return 0;
failed:
	llama_end(c, q);
	return -1;
}

static void batch_add(struct llama_batch *b, llama_token t, llama_pos pos, llama_seq_id id, bool logits)
{
	int32_t i = b->n_tokens++;

	b->token[i] = t;
	b->pos[i] = pos;
	b->n_seq_id[i] = 1;
	b->seq_id[i][0] = id;
	b->logits[i] = logits;
}

/* The step's batch: each generating sequence's last token, then prompts as far as room allows. */
static void fill_batch(struct engine_ctx *c, struct engine_seq *const *seqs, unsigned n)
{
	struct llama_batch *b = &c->batch;

	b->n_tokens = 0;
	for (unsigned i = 0; i < n; i++) {
		struct engine_seq *q = seqs[i];
		q->logits_at = -1;
		if (q->has_next) {
			q->logits_at = b->n_tokens;
			batch_add(b, q->next, q->fed + (llama_pos)q->made - 1, q->id, true);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		struct engine_seq *q = seqs[i];
		while (q->max_tokens && q->fed < q->ntokens && b->n_tokens < (int32_t)c->n_batch) {
			bool last = q->fed == q->ntokens - 1;
			if (last)
				q->logits_at = b->n_tokens;
			batch_add(b, q->tokens[q->fed], q->fed, q->id, last);
			q->fed++;
		}
	}
}

/*
 * Greedy decoding without a sampler chain: the first of the highest logits,
 * as llama.cpp's greedy sampler picks, without copying the vocabulary's
 * logits into candidates first (with several sequences that copy is a step's
 * noticeable part on a small model).
 */
static llama_token argmax(struct engine_ctx *c, int32_t row)
{
	const float *logits = llama_get_logits_ith(c->lctx, row);
	int32_t n = llama_vocab_n_tokens(c->vocab), best = 0;

	for (int32_t i = 1; i < n; i++)
		if (logits[i] > logits[best])
			best = i;
	return best;
}

/* What a sequence's logits of this step give: its next token, or its end. */
static void sample(struct engine_ctx *c, struct engine_seq *q, struct engine_step *st)
{
	llama_token t = q->sampler ? llama_sampler_sample(q->sampler, c->lctx, q->logits_at) : argmax(c, q->logits_at);

	q->has_next = false;
	if (llama_vocab_is_eog(c->vocab, t)) {
		st->done = st->eos = true;
		return;
	}
	int32_t len = llama_token_to_piece(c->vocab, t, q->piece, sizeof q->piece, 0, false);
	st->has_piece = true;
	st->piece = (struct engine_piece){ .token = (uint32_t)t, .text = q->piece, .len = len > 0 ? (size_t)len : 0 };
	q->made++;
	q->next = t;
	q->has_next = true;
	/* the token just made needs a cell of its own for the next */
	st->done = q->made == q->max_tokens || (uint32_t)(q->ntokens + (int32_t)q->made) >= c->n_ctx;
}

static int llama_step(struct engine_ctx *c, struct engine_seq *const *seqs, struct engine_step *st, unsigned n,
		      struct engine_error *e)
{
	fill_batch(c, seqs, n);
	if (c->batch.n_tokens && decode(c, c->batch, e))
		return -1;
	for (unsigned i = 0; i < n; i++) {
		st[i] = (struct engine_step){ .done = seqs[i]->max_tokens == 0 };
		if (seqs[i]->logits_at >= 0)
			sample(c, seqs[i], &st[i]);
	}
	return 0;
}

static int llama_tokenize_op(struct engine_ctx *c, const char *text, bool add_special, bool parse_special,
			     uint32_t **tokens, size_t *n, struct engine_error *e)
{
	llama_token *t;
	int32_t k;

	if (tokenize(c, text, add_special, parse_special, &t, &k, e))
		return -1;
	*tokens = (uint32_t *)t;	/* non-negative ids, same size */
	*n = (size_t)k;
	return 0;
}

static int llama_detokenize_op(struct engine_ctx *c, const uint32_t *tokens, size_t n, char **text,
			       size_t *len, struct engine_error *e)
{
	int32_t n_vocab = llama_vocab_n_tokens(c->vocab);

	if (n > INT32_MAX / LLAMA_PIECE_MAX)
		return engine_fail(e, "bad_request", "too many tokens");
	for (size_t i = 0; i < n; i++)
		if (tokens[i] >= (uint32_t)n_vocab)
			return engine_fail(e, "bad_request", "token %u is not below the vocabulary size %d",
					   tokens[i], n_vocab);
	int32_t cap = (int32_t)(n * LLAMA_PIECE_MAX) + 1;
	*text = malloc((size_t)cap);
	if (!*text)
		return engine_fail(e, "insufficient_memory", "out of memory");
	int32_t k = llama_detokenize(c->vocab, (const llama_token *)tokens, (int32_t)n, *text, cap, false, true);
	*len = k > 0 ? (size_t)k : 0;
	return 0;
}

static int llama_embed(struct engine_ctx *c, const char *text, float **vec, size_t *dim, uint32_t *ntokens,
		       struct engine_error *e)
{
	llama_token *t = NULL;
	int32_t n = 0;

	if (!c->p.embedding)
		return engine_fail(e, "bad_request", "model %s is not set up for embeddings (embedding = yes)",
				   c->name);
	if (tokenize(c, text, true, true, &t, &n, e))
		return -1;
	int rc = -1;
	*ntokens = (uint32_t)n;
	if (n == 0 || (uint32_t)n > c->n_batch) {
		engine_fail(e, "bad_request", "the text is %d tokens; model %s embeds 1 to %u", n, c->name,
			    c->n_batch);
	} else if (decode_prompt(c, t, n, e) == 0) {
		const float *v = llama_get_embeddings_seq(c->lctx, 0);
		*dim = (size_t)llama_model_n_embd_out(c->model);
		*vec = v ? malloc(*dim * sizeof **vec) : NULL;
		if (!*vec) {
			engine_fail(e, "internal", "llama.cpp gave no embedding");
		} else {
			double norm = 0;
			for (size_t i = 0; i < *dim; i++)
				norm += (double)v[i] * v[i];
			norm = norm > 0 ? sqrt(norm) : 1;
			for (size_t i = 0; i < *dim; i++)
				(*vec)[i] = (float)(v[i] / norm);
			rc = 0;
		}
	}
	free(t);
	return rc;
}

/* On the CPU, what the process holds (the weights it read included); on a GPU, model and context. */
static void llama_memory(struct engine_ctx *c, struct engine_mem *m)
{
	char buf[128];
	unsigned long long size, resident;
	ssize_t n = c->statm >= 0 ? pread(c->statm, buf, sizeof buf - 1, 0) : -1;
	struct sysinfo si;

	m->used = 0;
	if (c->gpu) {
		m->used = c->model && c->lctx ? llama_model_size(c->model) + llama_state_get_size(c->lctx) : 0;
		size_t free_b = 0, total = 0;
		ggml_backend_dev_memory(c->devices[0], &free_b, &total);
		m->free = free_b;
		m->total = total;
		return;
	}
	if (n > 0) {
		buf[n] = '\0';
		if (sscanf(buf, "%llu %llu", &size, &resident) == 2)
			m->used = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
	}
	m->free = m->total = 0;
	if (sysinfo(&si) == 0) {
		m->total = (uint64_t)si.totalram * si.mem_unit;
		m->free = (uint64_t)(si.freeram + si.bufferram) * si.mem_unit;
	}
}

static void llama_close(struct engine_ctx *c)
{
	if (c->batch_made)
		llama_batch_free(c->batch);
	if (c->lctx)
		llama_free(c->lctx);
	if (c->model)
		llama_model_free(c->model);
	if (c->statm >= 0)
		close(c->statm);
	free(c->chat_template);
	free(c->name);
	free(c);
}

static uint32_t llama_vocab_size(struct engine_ctx *c)
{
	return (uint32_t)llama_vocab_n_tokens(c->vocab);
}

static const struct engine engine_llama = {
	.abi_version = ENGINE_ABI_VERSION,
	.name = "llama",
#ifdef MODELD_LLAMA_CUDA
	.flags = ENGINE_TEXT | ENGINE_GPU,
#else
	.flags = ENGINE_TEXT,
#endif
	.open = llama_open,
	.load = llama_load,
	.warmup = llama_warmup,
	.parallel_default = LM_PARALLEL_DEFAULT,
	.parallel_max = PROTO_PARALLEL_MAX,
	.begin = llama_begin,
	.step = llama_step,
	.end = llama_end,
	.memory = llama_memory,
	.vocab = llama_vocab_size,
	.close = llama_close,
	.tokenize = llama_tokenize_op,
	.detokenize = llama_detokenize_op,
	.embed = llama_embed,
};

/* The one symbol the engine exports (objects of engines are built with hidden visibility). */
__attribute__((visibility("default"))) const struct engine *modeld_engine(void);
const struct engine *modeld_engine(void)
{
	return &engine_llama;
}
