/*
 * fakecuda.c: a stand-in for the NVIDIA driver (libcuda.so.1), so that the
 * cuda engine is tested on hosts without a GPU.
 *
 * Built as $(BUILD)/fakecuda/libcuda.so.1; a worker run with that folder in
 * LD_LIBRARY_PATH opens it instead of the driver. It keeps the parts of the
 * driver's contract that the engine can get wrong:
 *
 * - Device memory is host memory, counted against FAKECUDA_MEMORY bytes per
 *   device. With FAKECUDA_STATE naming a file, the count is shared by every
 *   process that uses the file, and a process's memory comes back when it
 *   exits, SIGKILL included, as with the driver: each process holds a robust
 *   mutex in the file, which the kernel marks when its holder dies. So a
 *   separate probe process sees what the workers hold.
 * - Streams run their work on threads of their own, in order, after the call
 *   that queued it has returned. A copy from pinned memory reads its source
 *   when it runs, so reusing a buffer before its copy's event fired gives
 *   wrong bytes on the device (FAKECUDA_COPY_DELAY_US holds each such copy
 *   back to make that likely); a copy from pageable memory takes the bytes at
 *   once, as the driver's staging does.
 * - Kernels are those of worker/kernels.cu written in C, run over the grid
 *   the launch asks for: a kernel given too few threads leaves work undone.
 * - Calls check what the driver checks: cuInit first, a current context on
 *   the calling thread, copies inside live allocations, a fatbin image,
 *   kernels by name and their launch shape.
 *
 * FAKECUDA_DEVICES (default 1) sets the device count; FAKECUDA_INIT_ERROR
 * (a name such as CUDA_ERROR_NO_DEVICE) makes cuInit fail with that error.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cuda.h>

#define FAKE_MAX_DEVICES 8
#define FAKE_MAX_PROCS 64		/* processes sharing one state file */
#define FAKE_DEFAULT_MEMORY (4ull << 30)
#define FAKE_FATBIN_MAGIC 0xBA55ED50u
#define FAKE_MAX_PARAMS 8
#define FAKE_MAX_BLOCK 1024

/* --- errors --- */

static const struct { CUresult rc; const char *name; } error_names[] = {
	{ CUDA_SUCCESS, "CUDA_SUCCESS" },
	{ CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE" },
	{ CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY" },
	{ CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED" },
	{ CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE" },
	{ CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE" },
	{ CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE" },
	{ CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT" },
	{ CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE" },
	{ CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND" },
	{ CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES" },
	{ CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN" },
};

CUresult cuGetErrorName(CUresult rc, const char **name)
{
	for (size_t i = 0; i < sizeof error_names / sizeof error_names[0]; i++)
		if (error_names[i].rc == rc) {
			*name = error_names[i].name;
			return CUDA_SUCCESS;
		}
	*name = NULL;
	return CUDA_ERROR_INVALID_VALUE;
}

static CUresult error_by_name(const char *name)
{
	for (size_t i = 0; i < sizeof error_names / sizeof error_names[0]; i++)
		if (strcmp(error_names[i].name, name) == 0)
			return error_names[i].rc;
	return CUDA_ERROR_UNKNOWN;
}

/* --- the memory ledger, shared between processes through FAKECUDA_STATE --- */

struct ledger_proc {
	pthread_mutex_t alive;		/* held by the process for its life */
	_Atomic uint64_t bytes[FAKE_MAX_DEVICES];
};

struct ledger {
	uint32_t ready;
	struct ledger_proc proc[FAKE_MAX_PROCS];
};

static struct ledger *ledger;
static int me;				/* this process's entry */
static int ndevices;
static uint64_t device_memory;
static unsigned copy_delay_us;
static bool initialized;

static void ledger_init_mutexes(struct ledger *l)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	for (int i = 0; i < FAKE_MAX_PROCS; i++)
		pthread_mutex_init(&l->proc[i].alive, &a);
	pthread_mutexattr_destroy(&a);
	l->ready = 1;
}

/* Takes the entry if nobody alive holds it: 0, or EBUSY. A dead holder's bytes are dropped. */
static int ledger_take(struct ledger_proc *p)
{
	int rc = pthread_mutex_trylock(&p->alive);
	if (rc == EOWNERDEAD) {
		pthread_mutex_consistent(&p->alive);
		rc = 0;
	}
	if (rc == 0)
		for (int d = 0; d < FAKE_MAX_DEVICES; d++)
			p->bytes[d] = 0;
	return rc;
}

/* Maps the state file (made on first use) and takes an entry for this process. */
static CUresult ledger_open(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	struct stat st;
	CUresult rc = CUDA_ERROR_UNKNOWN;

	if (fd < 0)
		return rc;
	if (flock(fd, LOCK_EX) == 0 && fstat(fd, &st) == 0 &&
	    ((size_t)st.st_size >= sizeof *ledger || ftruncate(fd, sizeof *ledger) == 0)) {
		void *m = mmap(NULL, sizeof *ledger, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m != MAP_FAILED) {
			ledger = m;
			if (!ledger->ready)
				ledger_init_mutexes(ledger);
			for (me = 0; me < FAKE_MAX_PROCS && ledger_take(&ledger->proc[me]); me++)
				;
			rc = me < FAKE_MAX_PROCS ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
	flock(fd, LOCK_UN);		/* the mapping would keep it otherwise */
	close(fd);
	return rc;
}

/* Device memory held by every live process. */
static uint64_t ledger_used(int dev)
{
	uint64_t used = ledger->proc[me].bytes[dev];

	for (int i = 0; i < FAKE_MAX_PROCS; i++) {
		if (i == me)
			continue;
		struct ledger_proc *p = &ledger->proc[i];
		if (ledger_take(p) == 0)
			pthread_mutex_unlock(&p->alive);
		else
			used += p->bytes[dev];
	}
	return used;
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
	const char *v = getenv(name);
	return v && *v ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

CUresult cuInit(unsigned flags)
{
	const char *fail = getenv("FAKECUDA_INIT_ERROR");
	const char *state = getenv("FAKECUDA_STATE");
	const char *mem = getenv("FAKECUDA_MEMORY");

	if (flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (fail && *fail)
		return error_by_name(fail);
	if (initialized)
		return CUDA_SUCCESS;
	ndevices = (int)env_unsigned("FAKECUDA_DEVICES", 1);
	if (ndevices == 0)
		return CUDA_ERROR_NO_DEVICE;
	if (ndevices > FAKE_MAX_DEVICES)
		ndevices = FAKE_MAX_DEVICES;
	device_memory = mem && *mem ? strtoull(mem, NULL, 10) : FAKE_DEFAULT_MEMORY;
	copy_delay_us = env_unsigned("FAKECUDA_COPY_DELAY_US", 0);
	if (state && *state) {
		CUresult rc = ledger_open(state);
		if (rc != CUDA_SUCCESS)
			return rc;
	} else {
		ledger = calloc(1, sizeof *ledger);
		if (!ledger)
			return CUDA_ERROR_OUT_OF_MEMORY;
	}
	initialized = true;
	return CUDA_SUCCESS;
}

/* --- devices and contexts --- */

struct CUctx_st {
	int dev;
	int refs;
};

static struct CUctx_st contexts[FAKE_MAX_DEVICES];
static __thread struct CUctx_st *current;

#define NEED_INIT() do { if (!initialized) return CUDA_ERROR_NOT_INITIALIZED; } while (0)
#define NEED_CONTEXT() do { NEED_INIT(); if (!current) return CUDA_ERROR_INVALID_CONTEXT; } while (0)

CUresult cuDeviceGetCount(int *count)
{
	NEED_INIT();
	*count = ndevices;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
	NEED_INIT();
	if (ordinal < 0 || ordinal >= ndevices)
		return CUDA_ERROR_INVALID_DEVICE;
	*dev = ordinal;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
	NEED_INIT();
	if (dev < 0 || dev >= ndevices || len <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(name, (size_t)len, "modeld fake GPU %d", dev);
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
	NEED_INIT();
	if (dev < 0 || dev >= ndevices)
		return CUDA_ERROR_INVALID_DEVICE;
	contexts[dev].dev = dev;
	contexts[dev].refs++;
	*ctx = &contexts[dev];
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
	NEED_INIT();
	if (dev < 0 || dev >= ndevices || contexts[dev].refs == 0)
		return CUDA_ERROR_INVALID_CONTEXT;
	contexts[dev].refs--;
	return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
	NEED_INIT();
	if (ctx && ctx->refs == 0)
		return CUDA_ERROR_INVALID_CONTEXT;
	current = ctx;
	return CUDA_SUCCESS;
}

CUresult cuMemGetInfo(size_t *free_b, size_t *total)
{
	NEED_CONTEXT();
	uint64_t used = ledger_used(current->dev);
	*total = device_memory;
	*free_b = used < device_memory ? device_memory - used : 0;
	return CUDA_SUCCESS;
}

/* --- allocations: device memory, and the pinned host ranges --- */

struct range {
	struct range *next;
	unsigned char *base;
	size_t size;
	int dev;
};

static struct range *device_ranges, *pinned_ranges;
static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;

static struct range *range_find(struct range *list, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (struct range *r = list; r; r = r->next)
		if (b >= r->base && n <= r->size && (size_t)(b - r->base) <= r->size - n)
			return r;
	return NULL;
}

static bool range_inside(struct range *list, const void *p, size_t n)
{
	pthread_mutex_lock(&ranges_lock);
	bool in = range_find(list, p, n) != NULL;
	pthread_mutex_unlock(&ranges_lock);
	return in;
}

static CUresult range_add(struct range **list, size_t size, int dev, void **out)
{
	struct range *r = malloc(sizeof *r);
	void *base = malloc(size ? size : 1);
	if (!r || !base) {
		free(r);
		free(base);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*r = (struct range){ .base = base, .size = size, .dev = dev };
	pthread_mutex_lock(&ranges_lock);
	r->next = *list;
	*list = r;
	pthread_mutex_unlock(&ranges_lock);
	*out = base;
	return CUDA_SUCCESS;
}

/* Unlinks and frees the range starting at p, giving its size and device. */
static CUresult range_remove(struct range **list, void *p, size_t *size, int *dev)
{
	CUresult rc = CUDA_ERROR_INVALID_VALUE;

	pthread_mutex_lock(&ranges_lock);
	for (struct range **at = list; *at; at = &(*at)->next)
		if ((*at)->base == p) {
			struct range *r = *at;
			*at = r->next;
			*size = r->size;
			*dev = r->dev;
			free(r->base);
			free(r);
			rc = CUDA_SUCCESS;
			break;
		}
	pthread_mutex_unlock(&ranges_lock);
	return rc;
}

CUresult cuMemAlloc(CUdeviceptr *ptr, size_t size)
{
	NEED_CONTEXT();
	int dev = current->dev;
	void *p;
	if (size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (ledger_used(dev) + size > device_memory)
		return CUDA_ERROR_OUT_OF_MEMORY;
	CUresult rc = range_add(&device_ranges, size, dev, &p);
	if (rc == CUDA_SUCCESS) {
		ledger->proc[me].bytes[dev] += size;
		*ptr = (CUdeviceptr)(uintptr_t)p;
	}
	return rc;
}

CUresult cuMemFree(CUdeviceptr ptr)
{
	size_t size;
	int dev;

	NEED_CONTEXT();
	CUresult rc = range_remove(&device_ranges, (void *)(uintptr_t)ptr, &size, &dev);
	if (rc == CUDA_SUCCESS)
		ledger->proc[me].bytes[dev] -= size;
	return rc;
}

CUresult cuMemHostAlloc(void **p, size_t size, unsigned flags)
{
	(void)flags;
	NEED_CONTEXT();
	return range_add(&pinned_ranges, size, current->dev, p);
}

CUresult cuMemFreeHost(void *p)
{
	size_t size;
	int dev;

	NEED_INIT();
	return range_remove(&pinned_ranges, p, &size, &dev);
}

/* --- kernels: worker/kernels.cu in C --- */

#define PARAM(p, i, type) (*(type *)(p)[i])

static float half_to_float(uint16_t h)
{
	_Float16 f;
	memcpy(&f, &h, sizeof f);
	return (float)f;
}

static float bits_to_float(uint32_t b)
{
	float f;
	memcpy(&f, &b, sizeof f);
	return f;
}

/* mlp_convert: a grid-stride loop, which covers every element for any grid. */
static void k_convert(void *const *p, uint64_t threads, unsigned block)
{
	float *dst = PARAM(p, 0, float *);
	const unsigned char *src = PARAM(p, 1, const unsigned char *);
	unsigned long long n = PARAM(p, 2, unsigned long long);
	int dtype = PARAM(p, 3, int);
	(void)threads, (void)block;

	for (unsigned long long i = 0; i < n; i++) {
		if (dtype == 0) {
			dst[i] = bits_to_float(src[4 * i] | src[4 * i + 1] << 8 | src[4 * i + 2] << 16 |
					       (uint32_t)src[4 * i + 3] << 24);
		} else {
			uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
			dst[i] = dtype == 1 ? half_to_float(h) : bits_to_float((uint32_t)h << 16);
		}
	}
}

/* mlp_hidden: one thread per hidden unit. */
static void k_hidden(void *const *p, uint64_t threads, unsigned block)
{
	float *h = PARAM(p, 0, float *);
	const float *embed = PARAM(p, 1, const float *), *w1 = PARAM(p, 2, const float *);
	const float *b1 = PARAM(p, 3, const float *);
	const unsigned *t = PARAM(p, 4, const unsigned *);
	unsigned dim = PARAM(p, 5, unsigned), hidden = PARAM(p, 6, unsigned);
	(void)block;

	for (uint64_t j = 0; j < threads && j < hidden; j++) {
		const float *x = embed + (uint64_t)*t * dim;
		float acc = b1[j];
		for (unsigned i = 0; i < dim; i++)
			acc += x[i] * w1[(uint64_t)i * hidden + j];
		h[j] = acc > 0.0f ? acc : 0.0f;
	}
}

/* mlp_logits: one thread per token. */
static void k_logits(void *const *p, uint64_t threads, unsigned block)
{
	float *logits = PARAM(p, 0, float *);
	const float *h = PARAM(p, 1, const float *), *w2 = PARAM(p, 2, const float *);
	const float *b2 = PARAM(p, 3, const float *);
	unsigned hidden = PARAM(p, 4, unsigned), vocab = PARAM(p, 5, unsigned);
	(void)block;

	for (uint64_t k = 0; k < threads && k < vocab; k++) {
		float acc = b2[k];
		for (unsigned j = 0; j < hidden; j++)
			acc += h[j] * w2[(uint64_t)j * vocab + k];
		logits[k] = acc;
	}
}

/* mlp_argmax: one block; each thread scans a stride, then a tree reduction. */
static void k_argmax(void *const *p, uint64_t threads, unsigned block)
{
	unsigned *t = PARAM(p, 0, unsigned *);
	const float *logits = PARAM(p, 1, const float *);
	unsigned vocab = PARAM(p, 2, unsigned);
	float best[FAKE_MAX_BLOCK];
	unsigned at[FAKE_MAX_BLOCK];
	(void)threads;

	for (unsigned me = 0; me < block; me++) {
		best[me] = -INFINITY;
		at[me] = UINT32_MAX;
		for (unsigned k = me; k < vocab; k += block)
			if (logits[k] > best[me] || at[me] == UINT32_MAX) {
				best[me] = logits[k];
				at[me] = k;
			}
	}
	for (unsigned step = block / 2; step > 0; step /= 2)
		for (unsigned me = 0; me < step; me++) {
			float ob = best[me + step];
			unsigned oa = at[me + step];
			if (oa != UINT32_MAX && (at[me] == UINT32_MAX || ob > best[me] || (ob == best[me] && oa < at[me]))) {
				best[me] = ob;
				at[me] = oa;
			}
		}
	*t = at[0];
}

/* mlp_checksum: a grid-stride sum of bytes, added into *sum. */
static void k_checksum(void *const *p, uint64_t threads, unsigned block)
{
	unsigned long long *sum = PARAM(p, 0, unsigned long long *);
	const unsigned char *b = PARAM(p, 1, const unsigned char *);
	unsigned long long n = PARAM(p, 2, unsigned long long), acc = 0;
	(void)threads, (void)block;

	for (unsigned long long i = 0; i < n; i++)
		acc += b[i];
	*sum += acc;
}

struct CUfunc_st {
	const char *name;
	unsigned nparams;
	size_t size[FAKE_MAX_PARAMS];
	void (*run)(void *const *params, uint64_t threads, unsigned block);
	unsigned max_grid;		/* 0: any */
	unsigned block;			/* 0: any; else the block it was written for */
};

static struct CUfunc_st kernels[] = {
	{ "mlp_convert", 4, { 8, 8, 8, 4 }, k_convert, 0, 0 },
	{ "mlp_hidden", 7, { 8, 8, 8, 8, 8, 4, 4 }, k_hidden, 0, 0 },
	{ "mlp_logits", 6, { 8, 8, 8, 8, 4, 4 }, k_logits, 0, 0 },
	{ "mlp_argmax", 3, { 8, 8, 4 }, k_argmax, 1, 256 },
	{ "mlp_checksum", 3, { 8, 8, 8 }, k_checksum, 0, 0 },
};

struct CUmod_st {
	int dev;
};

CUresult cuModuleLoadData(CUmodule *mod, const void *image)
{
	uint32_t magic;

	NEED_CONTEXT();
	if (!image)
		return CUDA_ERROR_INVALID_VALUE;
	memcpy(&magic, image, sizeof magic);
	if (magic != FAKE_FATBIN_MAGIC)
		return CUDA_ERROR_INVALID_IMAGE;
	*mod = malloc(sizeof **mod);
	if (!*mod)
		return CUDA_ERROR_OUT_OF_MEMORY;
	(*mod)->dev = current->dev;
	return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule mod)
{
	NEED_INIT();
	if (!mod)
		return CUDA_ERROR_INVALID_HANDLE;
	free(mod);
	return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name)
{
	NEED_CONTEXT();
	if (!mod)
		return CUDA_ERROR_INVALID_HANDLE;
	for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
		if (strcmp(kernels[i].name, name) == 0) {
			*fn = &kernels[i];
			return CUDA_SUCCESS;
		}
	return CUDA_ERROR_NOT_FOUND;
}

/* --- streams and events --- */

struct op {
	struct op *next;
	const struct CUfunc_st *fn;	/* a kernel, or NULL for a copy */
	unsigned char *dst;
	const unsigned char *src;
	size_t n;
	bool owned;			/* src is a copy taken when queued */
	uint64_t threads;
	unsigned block;
	_Alignas(8) unsigned char params[FAKE_MAX_PARAMS * 8];
	void *param[FAKE_MAX_PARAMS];
};

struct CUstream_st {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct op *head, *tail;
	uint64_t queued, done;
	bool stop;
};

struct CUevent_st {
	struct CUstream_st *stream;
	uint64_t seq;			/* done when the stream's done reaches it */
};

static void op_run(struct op *op)
{
	if (op->fn) {
		op->fn->run(op->param, op->threads, op->block);
		return;
	}
	if (!op->owned && copy_delay_us) {
		struct timespec ts = { copy_delay_us / 1000000, (long)(copy_delay_us % 1000000) * 1000 };
		nanosleep(&ts, NULL);
	}
	memcpy(op->dst, op->src, op->n);
	if (op->owned)
		free((void *)op->src);
}

static void *stream_main(void *arg)
{
	struct CUstream_st *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->head && !s->stop)
			pthread_cond_wait(&s->cond, &s->lock);
		struct op *op = s->head;
		if (!op)
			break;
		pthread_mutex_unlock(&s->lock);
		op_run(op);
		pthread_mutex_lock(&s->lock);
		s->head = op->next;
		if (!s->head)
			s->tail = NULL;
		s->done++;
		free(op);
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Queues op on s, or runs it now on the NULL stream. */
static CUresult stream_queue(struct CUstream_st *s, struct op *op)
{
	if (!s) {
		op_run(op);
		free(op);
		return CUDA_SUCCESS;
	}
	pthread_mutex_lock(&s->lock);
	if (s->tail)
		s->tail->next = op;
	else
		s->head = op;
	s->tail = op;
	s->queued++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return CUDA_SUCCESS;
}

static void stream_wait(struct CUstream_st *s, uint64_t seq)
{
	pthread_mutex_lock(&s->lock);
	while (s->done < seq)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

CUresult cuStreamCreate(CUstream *out, unsigned flags)
{
	(void)flags;
	NEED_CONTEXT();
	struct CUstream_st *s = calloc(1, sizeof *s);
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
		free(s);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*out = s;
	return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream s)
{
	NEED_INIT();
	if (s) {
		pthread_mutex_lock(&s->lock);
		uint64_t seq = s->queued;
		pthread_mutex_unlock(&s->lock);
		stream_wait(s, seq);
	}
	return CUDA_SUCCESS;
}

CUresult cuStreamDestroy(CUstream s)
{
	NEED_INIT();
	if (!s)
		return CUDA_ERROR_INVALID_HANDLE;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent *ev, unsigned flags)
{
	(void)flags;
	NEED_CONTEXT();
	*ev = calloc(1, sizeof **ev);
	return *ev ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuEventRecord(CUevent ev, CUstream s)
{
	NEED_INIT();
	if (!ev)
		return CUDA_ERROR_INVALID_HANDLE;
	ev->stream = s;
	if (s) {
		pthread_mutex_lock(&s->lock);
		ev->seq = s->queued;
		pthread_mutex_unlock(&s->lock);
	}
	return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(CUevent ev)
{
	NEED_INIT();
	if (!ev)
		return CUDA_ERROR_INVALID_HANDLE;
	if (ev->stream)
		stream_wait(ev->stream, ev->seq);
	return CUDA_SUCCESS;
}

CUresult cuEventDestroy(CUevent ev)
{
	NEED_INIT();
	free(ev);
	return CUDA_SUCCESS;
}

/* --- copies and launches --- */

static struct op *op_new(void)
{
	return calloc(1, sizeof(struct op));
}

static bool on_device(CUdeviceptr p, size_t n)
{
	return range_inside(device_ranges, (void *)(uintptr_t)p, n);
}

CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
	NEED_CONTEXT();
	if (!on_device(dst, n) || !src)
		return CUDA_ERROR_INVALID_VALUE;
	struct op *op = op_new();
	if (!op)
		return CUDA_ERROR_OUT_OF_MEMORY;
	op->dst = (unsigned char *)(uintptr_t)dst;
	op->n = n;
	op->src = src;
	if (!range_inside(pinned_ranges, src, n)) {
		unsigned char *staged = malloc(n ? n : 1);
		if (!staged) {
			free(op);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		memcpy(staged, src, n);
		op->src = staged;
		op->owned = true;
	}
	return stream_queue(s, op);
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n)
{
	NEED_CONTEXT();
	if (!on_device(dst, n) || !src)
		return CUDA_ERROR_INVALID_VALUE;
	memcpy((void *)(uintptr_t)dst, src, n);
	return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n)
{
	NEED_CONTEXT();
	if (!on_device(src, n) || !dst)
		return CUDA_ERROR_INVALID_VALUE;
	memcpy(dst, (const void *)(uintptr_t)src, n);
	return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
			unsigned bz, unsigned shared, CUstream s, void **params, void **extra)
{
	NEED_CONTEXT();
	if (!fn || !params || extra || shared)
		return CUDA_ERROR_INVALID_VALUE;
	if (!gx || !gy || !gz || !bx || !by || !bz || gy > 65535 || gz > 65535 ||
	    (uint64_t)bx * by * bz > FAKE_MAX_BLOCK)
		return CUDA_ERROR_INVALID_VALUE;
	if ((fn->max_grid && (uint64_t)gx * gy * gz > fn->max_grid) ||
	    (fn->block && (uint64_t)bx * by * bz != fn->block))
		return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
	struct op *op = op_new();
	if (!op)
		return CUDA_ERROR_OUT_OF_MEMORY;
	op->fn = fn;
	op->threads = (uint64_t)gx * gy * gz * bx * by * bz;
	op->block = bx * by * bz;
	for (unsigned i = 0; i < fn->nparams; i++) {
		op->param[i] = op->params + 8 * i;
		memcpy(op->param[i], params[i], fn->size[i]);
	}
	return stream_queue(s, op);
}
