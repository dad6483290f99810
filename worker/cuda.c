/*
 * cuda.c: the cuda engine. Runs the reference model on an NVIDIA GPU
 * through the CUDA driver API.
 *
 * libcuda.so.1 is opened at run time, so the same worker runs on hosts
 * without the driver: there the engine reports ENGINE_UNAVAILABLE, and the
 * slot goes to service_unavailable. Kernels come from kernels.cu, built by
 * nvcc into a fatbin embedded in the worker (kernels_fatbin[]); a build
 * without nvcc has none and says so.
 *
 * The loader (cuda_load) reads the weights fd with several threads, each
 * with its own stream and a few pinned chunk buffers, and copies every chunk
 * asynchronously while the next is read. The whole data section goes to one
 * device buffer; a kernel then converts each tensor to an aligned F32 array.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda.h>

#include "../proto/proto.h"
#include "cudaapi.h"
#include "engine.h"
#include "mlp.h"

#define CUDA_MAX_THREADS 64
#define CUDA_MAX_BUFFERS 8
#define CUDA_MEMORY_POLL_MS 250
#define CUDA_MEMORY_WAIT_MS 5000
#define CUDA_BLOCK 256

extern const unsigned char kernels_fatbin[];
extern const unsigned long kernels_fatbin_len;

enum { K_CONVERT, K_HIDDEN, K_LOGITS, K_ARGMAX, K_CHECKSUM, K__COUNT };
static const char *const kernel_names[K__COUNT] = {
	"mlp_convert", "mlp_hidden", "mlp_logits", "mlp_argmax", "mlp_checksum",
};

struct engine_ctx {
	CUdevice dev;
	CUcontext ctx;
	CUmodule module;
	CUfunction fn[K__COUNT];
	CUstream stream;
	unsigned threads, buffers;
	size_t chunk;
	void *pinned;			/* threads x buffers x chunk, made once */
	struct st_file file;
	struct mlp_desc desc;
	CUdeviceptr raw;		/* the data section, as in the file */
	CUdeviceptr tensor[MLP__TENSORS];	/* F32 */
	CUdeviceptr h, logits, tok;
	uint32_t tok_held;		/* the token at tok; UINT32_MAX: none yet */
	uint64_t bytes;			/* device memory held */
};

/* "cuInit: CUDA_ERROR_NO_DEVICE" into e; returns -1. */
static int cuda_fail(struct engine_error *e, const char *code, const char *what, CUresult rc)
{
	return engine_fail(e, code, "%s: %s (%d)", what, cudaapi_error(rc), (int)rc);
}

#define CU(call, code, e) do {                                        \
		CUresult rc_ = (call);                                  \
		if (rc_ != CUDA_SUCCESS)                                \
			return cuda_fail((e), (code), #call, rc_);      \
	} while (0)

/* The driver, opened and initialised once per process. */
static int cuda_api_load(struct engine_error *e)
{
	char err[200];
	CUresult rc;

	if (cudaapi_load(err, sizeof err, &rc) == 0)
		return 0;
	if (rc != CUDA_SUCCESS)
		return cuda_fail(e, ENGINE_UNAVAILABLE, "cuInit", rc);
	return engine_fail(e, ENGINE_UNAVAILABLE, "%s", err);
}

static int cuda_module(struct engine_ctx *c, struct engine_error *e)
{
	if (kernels_fatbin_len == 0)
		return engine_fail(e, ENGINE_UNAVAILABLE, "this build has no CUDA kernels (nvcc was not found)");
	CU(cudaapi.cuModuleLoadData(&c->module, kernels_fatbin), ENGINE_UNAVAILABLE, e);
	for (int k = 0; k < K__COUNT; k++)
		CU(cudaapi.cuModuleGetFunction(&c->fn[k], c->module, kernel_names[k]), "load_failed", e);
	return 0;
}

static int parse_ordinal(const char *device, int *n)
{
	char *end;
	if (strncmp(device, "cuda:", 5) != 0)
		return -1;
	long v = strtol(device + 5, &end, 10);
	if (*end || v < 0 || v > 1024)
		return -1;
	*n = (int)v;
	return 0;
}

/* Context, stream, module and the pinned ring: everything made before the sandbox. */
static int cuda_open(struct engine_ctx **out, const struct engine_params *p, struct engine_error *e)
{
	int ordinal;

	if (parse_ordinal(p->device, &ordinal))
		return engine_fail(e, ENGINE_UNAVAILABLE, "the cuda engine cannot run on %s", p->device);
	if (cuda_api_load(e))
		return -1;
	struct engine_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return engine_fail(e, "load_failed", "out of memory");
	*out = c;
	c->threads = p->loader_threads ? p->loader_threads : LOADER_THREADS_DEFAULT;
	c->buffers = p->loader_buffers ? p->loader_buffers : LOADER_BUFFERS_DEFAULT;
	c->chunk = p->loader_chunk ? p->loader_chunk : LOADER_CHUNK_DEFAULT;
	if (c->threads > CUDA_MAX_THREADS || c->buffers > CUDA_MAX_BUFFERS ||
	    (uint64_t)c->threads * c->buffers * c->chunk > LOADER_PINNED_MAX)
		return engine_fail(e, "load_failed", "loader settings: at most %d threads, %d buffers each "
				   "and %u MiB pinned in all", CUDA_MAX_THREADS, CUDA_MAX_BUFFERS,
				   LOADER_PINNED_MAX >> 20);
	CU(cudaapi.cuDeviceGet(&c->dev, ordinal), ENGINE_UNAVAILABLE, e);
	CU(cudaapi.cuDevicePrimaryCtxRetain(&c->ctx, c->dev), ENGINE_UNAVAILABLE, e);
	CU(cudaapi.cuCtxSetCurrent(c->ctx), ENGINE_UNAVAILABLE, e);
	CU(cudaapi.cuStreamCreate(&c->stream, CU_STREAM_NON_BLOCKING), "load_failed", e);
	if (cuda_module(c, e))
		return -1;
	CU(cudaapi.cuMemHostAlloc(&c->pinned, (size_t)c->threads * c->buffers * c->chunk, 0), "load_failed", e);
	return 0;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits (polling) for the device to have need bytes free: the last worker's may still be going. */
static int cuda_wait_for_memory(uint64_t need, struct engine_error *e)
{
	uint64_t start = mono_ms();
	size_t free_b = 0, total = 0;

	for (;;) {
		CU(cudaapi.cuMemGetInfo(&free_b, &total), "load_failed", e);
		if (free_b >= need)
			return 0;
		if (mono_ms() - start >= CUDA_MEMORY_WAIT_MS)
			return engine_fail(e, "insufficient_memory",
					   "needs %llu bytes, the device has %llu free of %llu (waited %d ms)",
					   (unsigned long long)need, (unsigned long long)free_b,
					   (unsigned long long)total, CUDA_MEMORY_WAIT_MS);
		struct timespec ts = { 0, CUDA_MEMORY_POLL_MS * 1000000L };
		nanosleep(&ts, NULL);
	}
}

static int launch(struct engine_ctx *c, int k, unsigned grid, unsigned block, void **args, struct engine_error *e)
{
	CU(cudaapi.cuLaunchKernel(c->fn[k], grid, 1, 1, block, 1, 1, 0, c->stream, args, NULL), "load_failed", e);
	return 0;
}

/* --- the loader --- */

struct loader {
	struct engine_ctx *c;
	int fd;
	uint64_t start, len;		/* the file range that goes to c->raw */
	uint64_t nchunks;
	atomic_uint_fast64_t next;	/* the next chunk to take */
	atomic_uint_fast64_t done;	/* bytes copied */
	atomic_int failed;
	atomic_int stop;
	bool verify;			/* sum the bytes read, to check the device's copy */
	atomic_uint_fast64_t sum;
	char error[200];
	pthread_mutex_t lock;
};

static void loader_error(struct loader *l, const char *fmt, const char *detail)
{
	pthread_mutex_lock(&l->lock);
	if (!atomic_exchange(&l->failed, 1))
		snprintf(l->error, sizeof l->error, fmt, detail);
	pthread_mutex_unlock(&l->lock);
}

static int pread_full(int fd, unsigned char *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

struct loader_thread {
	struct loader *l;
	unsigned index;
};

/*
 * One reader: takes chunks in turn, reads each into the next of its pinned
 * buffers once the copy that last used that buffer is done (its event), and
 * queues the copy: while one buffer's copy runs, the next is being read.
 */
static void *loader_main(void *arg)
{
	struct loader_thread *t = arg;
	struct loader *l = t->l;
	struct engine_ctx *c = l->c;
	unsigned char *ring = (unsigned char *)c->pinned + (size_t)t->index * c->buffers * c->chunk;
	CUevent copied[CUDA_MAX_BUFFERS];
	bool pending[CUDA_MAX_BUFFERS] = { false };
	CUstream stream;
	unsigned slot = 0, nevents = 0;

	if (cudaapi.cuCtxSetCurrent(c->ctx) != CUDA_SUCCESS ||
	    cudaapi.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
		loader_error(l, "loader thread: %s", "no stream");
		return NULL;
	}
	for (; nevents < c->buffers; nevents++)
		if (cudaapi.cuEventCreate(&copied[nevents], CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
			loader_error(l, "loader thread: %s", "no event");
			goto out;
		}
	for (;;) {
		uint64_t i = atomic_fetch_add(&l->next, 1);
		if (i >= l->nchunks || atomic_load(&l->failed) || atomic_load(&l->stop))
			break;
		uint64_t off = i * c->chunk;
		size_t n = l->len - off < c->chunk ? (size_t)(l->len - off) : c->chunk;
		unsigned char *buf = ring + (size_t)slot * c->chunk;
		if (pending[slot] && cudaapi.cuEventSynchronize(copied[slot]) != CUDA_SUCCESS) {
			loader_error(l, "copy failed%s", "");
			break;
		}
		if (pread_full(l->fd, buf, n, l->start + off)) {
			loader_error(l, "read failed: %s", strerror(errno));
			break;
		}
		if (l->verify) {
			uint64_t acc = 0;
			for (size_t k = 0; k < n; k++)
				acc += buf[k];
			atomic_fetch_add(&l->sum, acc);
		}
		if (cudaapi.cuMemcpyHtoDAsync(c->raw + off, buf, n, stream) != CUDA_SUCCESS ||
		    cudaapi.cuEventRecord(copied[slot], stream) != CUDA_SUCCESS) {
			loader_error(l, "copy to the device failed%s", "");
			break;
		}
		pending[slot] = true;
		slot = (slot + 1) % c->buffers;
		atomic_fetch_add(&l->done, n);
	}
out:
	if (cudaapi.cuStreamSynchronize(stream) != CUDA_SUCCESS)
		loader_error(l, "copy failed%s", "");
	for (unsigned k = 0; k < nevents; k++)
		cudaapi.cuEventDestroy(copied[k]);
	cudaapi.cuStreamDestroy(stream);
	return NULL;
}

/* Runs the readers; the calling thread reports progress until they are done. */
static int loader_run(struct loader *l, engine_progress_fn progress, void *arg, struct engine_error *e)
{
	pthread_t tid[CUDA_MAX_THREADS];
	struct loader_thread t[CUDA_MAX_THREADS];
	unsigned started = 0;
	uint64_t base = l->start;	/* the header counts as read */

	for (unsigned i = 0; i < l->c->threads; i++) {
		t[i] = (struct loader_thread){ l, i };
		if (pthread_create(&tid[i], NULL, loader_main, &t[i]) != 0)
			break;
		started++;
	}
	if (started == 0)
		return engine_fail(e, "load_failed", "cannot start loader threads");
	uint64_t total = l->start + l->len;
	while (atomic_load(&l->done) < l->len && !atomic_load(&l->failed)) {
		if (progress(arg, base + atomic_load(&l->done), total))
			atomic_store(&l->stop, 1);
		if (atomic_load(&l->stop))
			break;
		struct timespec ts = { 0, 20 * 1000000L };
		nanosleep(&ts, NULL);
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	if (atomic_load(&l->stop))
		return engine_fail(e, "cancelled", "load aborted");
	if (atomic_load(&l->failed))
		return engine_fail(e, "load_failed", "%s", l->error);
	progress(arg, total, total);
	return 0;
}

/*
 * With MODELD_VERIFY_LOAD set: the bytes on the device must add up to what
 * the loader read. A debugging and test aid; it costs a pass over the data.
 */
static int cuda_verify(struct engine_ctx *c, const struct loader *l, struct engine_error *e)
{
	CUdeviceptr dsum;
	unsigned long long sum = 0, n = l->len;

	CU(cudaapi.cuMemAlloc(&dsum, sizeof sum), "load_failed", e);
	CU(cudaapi.cuMemcpyHtoDAsync(dsum, &sum, sizeof sum, c->stream), "load_failed", e);
	void *args[] = { &dsum, &c->raw, &n };
	int rc = launch(c, K_CHECKSUM, 1024, CUDA_BLOCK, args, e);
	if (rc == 0 && cudaapi.cuStreamSynchronize(c->stream) == CUDA_SUCCESS &&
	    cudaapi.cuMemcpyDtoH(&sum, dsum, sizeof sum) == CUDA_SUCCESS && sum != atomic_load(&l->sum))
		rc = engine_fail(e, "load_failed", "checksum mismatch: the device holds %llu, the file %llu",
				 sum, (unsigned long long)atomic_load(&l->sum));
	cudaapi.cuMemFree(dsum);
	return rc;
}

/* Each tensor of the model, from the raw bytes to an F32 array of its own. */
static int cuda_convert(struct engine_ctx *c, struct engine_error *e)
{
	for (int i = 0; i < MLP__TENSORS; i++) {
		const struct st_tensor *t = c->desc.t[i];
		unsigned long long n = (t->end - t->begin) / safetensors_dtype_size(t->dtype);
		int dtype = t->dtype == ST_F32 ? 0 : t->dtype == ST_F16 ? 1 : 2;
		CUdeviceptr src = c->raw + t->begin;
		CU(cudaapi.cuMemAlloc(&c->tensor[i], n * sizeof(float) + 4), "insufficient_memory", e);
		c->bytes += n * sizeof(float) + 4;
		void *args[] = { &c->tensor[i], &src, &n, &dtype };
		unsigned grid = n / CUDA_BLOCK + 1 > 65535 ? 65535 : (unsigned)(n / CUDA_BLOCK + 1);
		if (launch(c, K_CONVERT, grid, CUDA_BLOCK, args, e))
			return -1;
	}
	CU(cudaapi.cuStreamSynchronize(c->stream), "load_failed", e);
	return 0;
}

static int cuda_load(struct engine_ctx *c, int fd, engine_progress_fn progress, void *arg,
		     struct engine_error *e)
{
	char err[SAFETENSORS_ERR_LEN];
	struct loader l = { .c = c, .fd = fd };

	if (safetensors_read(fd, &c->file, err) || mlp_describe(&c->file, &c->desc, err))
		return engine_fail(e, "load_failed", "%s", err);
	l.start = c->file.data_start;
	l.len = c->file.file_size - c->file.data_start;
	l.nchunks = (l.len + c->chunk - 1) / c->chunk;
	uint64_t f32 = 4 * ((uint64_t)c->desc.vocab * c->desc.dim + (uint64_t)c->desc.dim * c->desc.hidden +
			    (uint64_t)c->desc.hidden * c->desc.vocab + c->desc.hidden + c->desc.vocab);
	if (cuda_wait_for_memory(l.len + f32, e))
		return -1;
	CU(cudaapi.cuMemAlloc(&c->raw, l.len ? l.len : 1), "insufficient_memory", e);
	c->bytes += l.len;
	l.verify = getenv("MODELD_VERIFY_LOAD") != NULL;
	pthread_mutex_init(&l.lock, NULL);
	int rc = loader_run(&l, progress, arg, e);
	pthread_mutex_destroy(&l.lock);
	if (rc || (l.verify && cuda_verify(c, &l, e)) || cuda_convert(c, e))
		return -1;
	CU(cudaapi.cuMemAlloc(&c->h, (size_t)c->desc.hidden * 4), "insufficient_memory", e);
	CU(cudaapi.cuMemAlloc(&c->logits, (size_t)c->desc.vocab * 4), "insufficient_memory", e);
	CU(cudaapi.cuMemAlloc(&c->tok, 4), "insufficient_memory", e);
	c->tok_held = UINT32_MAX;
	c->bytes += ((uint64_t)c->desc.hidden + c->desc.vocab + 1) * 4;
	return 0;
}

/*
 * One step on the device: t up (unless it is the token the last step left
 * there, as it is while generating), three kernels, the next token back.
 */
static int cuda_step(struct engine_ctx *c, uint32_t t, uint32_t *next, struct engine_error *e)
{
	unsigned dim = c->desc.dim, hidden = c->desc.hidden, vocab = c->desc.vocab;
	void *hid[] = { &c->h, &c->tensor[MLP_TOK_EMBED], &c->tensor[MLP_W1], &c->tensor[MLP_B1], &c->tok,
			&dim, &hidden };
	void *log[] = { &c->logits, &c->h, &c->tensor[MLP_W2], &c->tensor[MLP_B2], &hidden, &vocab };
	void *arg[] = { &c->tok, &c->logits, &vocab };

	if (t != c->tok_held)
		CU(cudaapi.cuMemcpyHtoDAsync(c->tok, &t, 4, c->stream), "internal", e);
	c->tok_held = UINT32_MAX;	/* until the step is known to have finished */
	if (launch(c, K_HIDDEN, (hidden + CUDA_BLOCK - 1) / CUDA_BLOCK, CUDA_BLOCK, hid, e) ||
	    launch(c, K_LOGITS, (vocab + CUDA_BLOCK - 1) / CUDA_BLOCK, CUDA_BLOCK, log, e) ||
	    launch(c, K_ARGMAX, 1, CUDA_BLOCK, arg, e))
		return -1;
	CU(cudaapi.cuStreamSynchronize(c->stream), "internal", e);
	CU(cudaapi.cuMemcpyDtoH(next, c->tok, 4), "internal", e);
	c->tok_held = *next;
	return 0;
}

static int cuda_begin(struct engine_ctx *c, const struct engine_request *rq, struct engine_seq **seq,
		     uint32_t *prompt_tokens, struct engine_error *e)
{
	return engine_ref_begin(c->desc.vocab, rq, seq, prompt_tokens, e);
}

static int cuda_step_all(struct engine_ctx *c, struct engine_seq *const *seqs, struct engine_step *st, unsigned n,
		       struct engine_error *e)
{
	return engine_ref_step(c, cuda_step, c->desc.eos, seqs, st, n, e);
}

static void cuda_end(struct engine_ctx *c, struct engine_seq *seq)
{
	(void)c;
	engine_ref_end(seq);
}

static int cuda_warmup(struct engine_ctx *c, struct engine_error *e)
{
	return engine_warmup(c, cuda_step, e);
}

static void cuda_memory(struct engine_ctx *c, struct engine_mem *m)
{
	size_t free_b = 0, total = 0;

	m->used = c->bytes;
	if (cudaapi.cuMemGetInfo && cudaapi.cuMemGetInfo(&free_b, &total) == CUDA_SUCCESS) {
		m->free = free_b;
		m->total = total;
	}
}

static void cuda_close(struct engine_ctx *c)
{
	if (c->ctx) {
		cudaapi.cuCtxSetCurrent(c->ctx);
		for (int i = 0; i < MLP__TENSORS; i++)
			if (c->tensor[i])
				cudaapi.cuMemFree(c->tensor[i]);
		CUdeviceptr bufs[] = { c->raw, c->h, c->logits, c->tok };
		for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
			if (bufs[i])
				cudaapi.cuMemFree(bufs[i]);
		if (c->pinned)
			cudaapi.cuMemFreeHost(c->pinned);
		if (c->module)
			cudaapi.cuModuleUnload(c->module);
		if (c->stream)
			cudaapi.cuStreamDestroy(c->stream);
		cudaapi.cuDevicePrimaryCtxRelease(c->dev);
	}
	safetensors_free(&c->file);
	free(c);
}

/* Device names and memory, for the probe: one line per device to f. 0, or -1 with e. */
int cuda_probe(FILE *f, struct engine_error *e)
{
	int count = 0;

	if (cuda_api_load(e))
		return -1;
	CU(cudaapi.cuDeviceGetCount(&count), ENGINE_UNAVAILABLE, e);
	for (int i = 0; i < count; i++) {
		CUdevice dev;
		CUcontext ctx;
		char name[256] = "";
		size_t free_b = 0, total = 0;
		CU(cudaapi.cuDeviceGet(&dev, i), ENGINE_UNAVAILABLE, e);
		CU(cudaapi.cuDeviceGetName(name, sizeof name, dev), ENGINE_UNAVAILABLE, e);
		CU(cudaapi.cuDevicePrimaryCtxRetain(&ctx, dev), ENGINE_UNAVAILABLE, e);
		CU(cudaapi.cuCtxSetCurrent(ctx), ENGINE_UNAVAILABLE, e);
		CU(cudaapi.cuMemGetInfo(&free_b, &total), ENGINE_UNAVAILABLE, e);
		cudaapi.cuDevicePrimaryCtxRelease(dev);
		fprintf(f, "cuda:%d\t%llu\t%llu\t%s\n", i, (unsigned long long)total,
			(unsigned long long)free_b, name);
	}
	return 0;
}

static uint32_t cuda_vocab(struct engine_ctx *c)
{
	return c->desc.vocab;
}

const struct engine engine_cuda = {
	.abi_version = ENGINE_ABI_VERSION,
	.name = "cuda",
	.flags = ENGINE_GPU,
	.parallel_default = 1,
	.parallel_max = ENGINE_REF_PARALLEL_MAX,
	.open = cuda_open,
	.load = cuda_load,
	.warmup = cuda_warmup,
	.begin = cuda_begin,
	.step = cuda_step_all,
	.end = cuda_end,
	.memory = cuda_memory,
	.vocab = cuda_vocab,
	.close = cuda_close,
};
