/*
 * cpu.c: the cpu engine. Runs the reference model in F32 on the host.
 *
 * The model's tensors are read in file order, each straight into its F32
 * array (F32 tensors), or a chunk at a time through one small buffer and
 * converted into it (F16, BF16): memory holds the model once and a chunk,
 * whatever else the file has, and bytes outside the tensors are never read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "engine.h"
#include "mlp.h"

#define CPU_CHUNK (256u << 10)	/* a read's bytes; a converted chunk stays in the cache */
#define CPU_HUGE_PAGE (2u << 20)

struct engine_ctx {
	struct mlp_desc desc;
	struct st_file file;
	struct mlp_weights w;
	float *arrays[MLP__TENSORS];
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

/*
 * An array of bytes, in huge pages where it is large and the kernel gives
 * them on request: a model's first touch then faults once per 2 MiB, not
 * per 4 KiB, which is most of the cost of loading from the page cache.
 */
static void *weights_alloc(uint64_t bytes)
{
	void *p;

	if (bytes < CPU_HUGE_PAGE * 4)
		return malloc(bytes + 1);
	bytes = (bytes + CPU_HUGE_PAGE - 1) / CPU_HUGE_PAGE * CPU_HUGE_PAGE;
	if (posix_memalign(&p, CPU_HUGE_PAGE, bytes))
		return NULL;
	madvise(p, bytes, MADV_HUGEPAGE);	/* a hint: without it, small pages */
	return p;
}

static int cpu_alloc(struct engine_ctx *c, struct engine_error *e)
{
	for (int i = 0; i < MLP__TENSORS; i++) {
		const struct st_tensor *t = c->desc.t[i];
		uint64_t n = (t->end - t->begin) / safetensors_dtype_size(t->dtype);
		c->arrays[i] = weights_alloc(n * sizeof(float));
		if (!c->arrays[i])
			return engine_fail(e, "insufficient_memory", "cannot allocate %s (%llu bytes)",
					   t->name, (unsigned long long)(n * sizeof(float)));
		c->bytes += n * sizeof(float);
	}
	c->scratch = malloc(((size_t)c->desc.hidden + c->desc.vocab) * sizeof(float));
	if (!c->scratch)
		return engine_fail(e, "insufficient_memory", "cannot allocate scratch");
	return 0;
}

/* Reads len bytes at off into buf whole. 0, or -1 with e. */
static int read_at(int fd, void *buf, size_t len, uint64_t off, struct engine_error *e)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return engine_fail(e, "load_failed", "read failed at byte %llu: %s",
					   (unsigned long long)off, n ? strerror(errno) : "file shrank");
		buf = (char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* The tensors in the order their bytes lie in the file, so that reading goes forward. */
static void file_order(const struct engine_ctx *c, int order[MLP__TENSORS])
{
	for (int i = 0; i < MLP__TENSORS; i++) {
		int k = i;
		for (; k > 0 && c->desc.t[order[k - 1]]->begin > c->desc.t[i]->begin; k--)
			order[k] = order[k - 1];
		order[k] = i;
	}
}

/*
 * Tensor i into its array, CPU_CHUNK bytes per read: F32 read in place,
 * others through chunk and converted. Progress is the file offset reached.
 */
static int read_tensor(struct engine_ctx *c, int fd, int i, unsigned char *chunk, engine_progress_fn progress,
		       void *arg, struct engine_error *e)
{
	const struct st_tensor *t = c->desc.t[i];
	size_t esize = safetensors_dtype_size(t->dtype);
	uint64_t start = c->file.data_start + t->begin, len = t->end - t->begin;

	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < CPU_CHUNK ? (size_t)(len - done) : CPU_CHUNK;	/* whole elements */
		float *dst = c->arrays[i] + done / esize;
		if (t->dtype == ST_F32) {
			if (read_at(fd, dst, n, start + done, e))
				return -1;
		} else {
			if (read_at(fd, chunk, n, start + done, e))
				return -1;
			mlp_to_f32(dst, chunk, n / esize, t->dtype);
		}
		done += n;
		if (progress(arg, start + done, c->file.file_size))
			return engine_fail(e, "cancelled", "load aborted");
	}
	return 0;
}

static int cpu_read(struct engine_ctx *c, int fd, engine_progress_fn progress, void *arg, struct engine_error *e)
{
	unsigned char *chunk = malloc(CPU_CHUNK);
	int order[MLP__TENSORS], rc = 0;

	if (!chunk)
		return engine_fail(e, "insufficient_memory", "cannot allocate a read buffer");
	file_order(c, order);
	for (int k = 0; k < MLP__TENSORS && rc == 0; k++)
		rc = read_tensor(c, fd, order[k], chunk, progress, arg, e);
	free(chunk);
	if (rc == 0 && progress(arg, c->file.file_size, c->file.file_size))
		rc = engine_fail(e, "cancelled", "load aborted");
	return rc;
}

static int cpu_load(struct engine_ctx *c, int fd, engine_progress_fn progress, void *arg,
		    struct engine_error *e)
{
	char err[SAFETENSORS_ERR_LEN];

	if (safetensors_read(fd, &c->file, err) || mlp_describe(&c->file, &c->desc, err))
		return engine_fail(e, "load_failed", "%s", err);
	if (cpu_alloc(c, e) || cpu_read(c, fd, progress, arg, e))
		return -1;
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
	for (int i = 0; i < MLP__TENSORS; i++)
		free(c->arrays[i]);
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
