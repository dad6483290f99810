/*
 * cpu.c: the cpu engine. Runs the reference model in F32 on the host.
 *
 * The weights file is streamed in fixed-size chunks; each chunk's bytes that
 * belong to a tensor of the model are converted into that tensor's F32 array
 * as they pass, so memory holds the model once, whatever padding the file has.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "engine.h"
#include "mlp.h"

#define CPU_CHUNK (4u << 20)

struct engine_ctx {
	struct mlp_desc desc;
	struct st_file file;
	struct mlp_weights w;
	float *arrays[MLP__TENSORS];
	unsigned char *staging[MLP__TENSORS];	/* raw bytes while loading */
	float *scratch;
	uint64_t bytes;
};

static int cpu_open(struct engine_ctx **ctx, const struct engine_params *p, struct engine_error *e)
{
	if (strcmp(p->device, "cpu") != 0)
		return engine_fail(e, ENGINE_UNAVAILABLE, "the cpu engine cannot run on %s", p->device);
	*ctx = calloc(1, sizeof **ctx);
	if (!*ctx)
		return engine_fail(e, "load_failed", "out of memory");
	return 0;
}

/* Copies the part of chunk [off, off+len) that falls inside each tensor. */
static void cpu_scatter(struct engine_ctx *c, const unsigned char *chunk, uint64_t off, size_t len)
{
	for (int i = 0; i < MLP__TENSORS; i++) {
		const struct st_tensor *t = c->desc.t[i];
		uint64_t lo = c->file.data_start + t->begin, hi = c->file.data_start + t->end;
		uint64_t from = off > lo ? off : lo, to = off + len < hi ? off + len : hi;
		if (from < to)
			memcpy(c->staging[i] + (from - lo), chunk + (from - off), to - from);
	}
}

static int cpu_alloc(struct engine_ctx *c, struct engine_error *e)
{
	for (int i = 0; i < MLP__TENSORS; i++) {
		const struct st_tensor *t = c->desc.t[i];
		uint64_t n = (t->end - t->begin) / safetensors_dtype_size(t->dtype);
		c->staging[i] = malloc(t->end - t->begin + 1);
		c->arrays[i] = malloc(n * sizeof(float) + 1);
		if (!c->staging[i] || !c->arrays[i])
			return engine_fail(e, "insufficient_memory", "cannot allocate %s (%llu bytes)",
					   t->name, (unsigned long long)(n * sizeof(float)));
		c->bytes += n * sizeof(float);
	}
	c->scratch = malloc(((size_t)c->desc.hidden + c->desc.vocab) * sizeof(float));
	if (!c->scratch)
		return engine_fail(e, "insufficient_memory", "cannot allocate scratch");
	return 0;
}

static int cpu_stream(struct engine_ctx *c, int fd, engine_progress_fn progress, void *arg,
		      struct engine_error *e)
{
	unsigned char *chunk = malloc(CPU_CHUNK);
	uint64_t total = c->file.file_size, off = 0;
	int rc = 0;

	if (!chunk)
		return engine_fail(e, "insufficient_memory", "cannot allocate a read buffer");
	while (off < total && rc == 0) {
		size_t want = total - off < CPU_CHUNK ? (size_t)(total - off) : CPU_CHUNK;
		ssize_t n = pread(fd, chunk, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = engine_fail(e, "load_failed", "read failed at byte %llu: %s",
					 (unsigned long long)off, n ? strerror(errno) : "file shrank");
			break;
		}
		cpu_scatter(c, chunk, off, (size_t)n);
		off += (uint64_t)n;
		if (progress(arg, off, total))
			rc = engine_fail(e, "cancelled", "load aborted");
	}
	free(chunk);
	return rc;
}

static int cpu_load(struct engine_ctx *c, int fd, engine_progress_fn progress, void *arg,
		    struct engine_error *e)
{
	char err[SAFETENSORS_ERR_LEN];

	if (safetensors_read(fd, &c->file, err) || mlp_describe(&c->file, &c->desc, err))
		return engine_fail(e, "load_failed", "%s", err);
	if (cpu_alloc(c, e) || cpu_stream(c, fd, progress, arg, e))
		return -1;
	for (int i = 0; i < MLP__TENSORS; i++) {
		const struct st_tensor *t = c->desc.t[i];
		mlp_to_f32(c->arrays[i], c->staging[i],
			   (t->end - t->begin) / safetensors_dtype_size(t->dtype), t->dtype);
		free(c->staging[i]);
		c->staging[i] = NULL;
	}
	c->w = (struct mlp_weights){
		.vocab = c->desc.vocab, .dim = c->desc.dim, .hidden = c->desc.hidden,
		.tok_embed = c->arrays[MLP_TOK_EMBED], .w1 = c->arrays[MLP_W1],
		.b1 = c->arrays[MLP_B1], .w2 = c->arrays[MLP_W2], .b2 = c->arrays[MLP_B2],
	};
	return 0;
}

static int cpu_step(struct engine_ctx *c, uint32_t t, uint32_t *next, struct engine_error *e)
{
	(void)e;
	*next = mlp_step(&c->w, t, c->scratch);
	return 0;
}

static int cpu_begin(struct engine_ctx *c, const struct engine_request *rq, struct engine_seq **seq,
		     uint32_t *prompt_tokens, struct engine_error *e)
{
	return engine_ref_begin(c->desc.vocab, rq, seq, prompt_tokens, e);
}

static int cpu_step_all(struct engine_ctx *c, struct engine_seq *const *seqs, struct engine_step *st, unsigned n,
		       struct engine_error *e)
{
	return engine_ref_step(c, cpu_step, c->desc.eos, seqs, st, n, e);
}

static void cpu_end(struct engine_ctx *c, struct engine_seq *seq)
{
	(void)c;
	engine_ref_end(seq);
}

static int cpu_warmup(struct engine_ctx *c, struct engine_error *e)
{
	return engine_warmup(c, cpu_step, e);
}

static void cpu_memory(struct engine_ctx *c, struct engine_mem *m)
{
	struct sysinfo si;

	m->used = c->bytes;
	m->free = m->total = 0;
	if (sysinfo(&si) == 0) {
		m->total = (uint64_t)si.totalram * si.mem_unit;
		m->free = (uint64_t)(si.freeram + si.bufferram) * si.mem_unit;
	}
}

static void cpu_close(struct engine_ctx *c)
{
	for (int i = 0; i < MLP__TENSORS; i++) {
		free(c->arrays[i]);
		free(c->staging[i]);
	}
	free(c->scratch);
	safetensors_free(&c->file);
	free(c);
}

static uint32_t cpu_vocab(struct engine_ctx *c)
{
	return c->desc.vocab;
}

const struct engine engine_cpu = {
	.abi_version = ENGINE_ABI_VERSION,
	.name = "cpu",
	.parallel_default = 1,
	.parallel_max = ENGINE_REF_PARALLEL_MAX,
	.open = cpu_open,
	.load = cpu_load,
	.warmup = cpu_warmup,
	.begin = cpu_begin,
	.step = cpu_step_all,
	.end = cpu_end,
	.memory = cpu_memory,
	.vocab = cpu_vocab,
	.close = cpu_close,
};
