/*
 * bench_load: how fast weights reach the GPU, three ways, in one run on one
 * file (make bench-load):
 *   loader  the cuda engine's loader (threads, pinned ring, async copies)
 *   naive   read the whole file into malloc'd memory, one cuMemcpyHtoD
 *   limit   async copies of the same bytes from pinned memory: what PCIe gives
 * and the ratios. The file is read once first, so all three read the page
 * cache; each figure is the median of --runs runs (default 3). Where no GPU
 * is usable it says why and exits 0.
 *
 *   bench_load FILE [--threads N] [--buffers N] [--chunk BYTES] [--runs N]
 *   bench_load FILE --sweep    the loader over thread counts, chunk sizes and
 *                              buffers (pinned ring within LOADER_PINNED_MAX),
 *                              each beside the limit measured in the same run
 *   bench_load --hold BYTES    allocate BYTES on cuda:0, print "ready", wait
 *                              for stdin to close (for bench/switch.py)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../proto/proto.h"
#include "../worker/cudaapi.h"
#include "../worker/engine.h"
#include "stats.h"

#define LIMIT_CHUNK (8u << 20)
#define LIMIT_BUFFERS 8
#define MAX_RUNS 15

static const unsigned sweep_threads[] = { 2, 4, 8, 16, 32 };
static const unsigned sweep_chunk_mib[] = { 1, 2, 4, 8, 16 };
static const unsigned sweep_buffers[] = { 2, 4 };
#define COUNT(a) (sizeof (a) / sizeof (a)[0])

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int quiet_progress(void *arg, uint64_t bytes, uint64_t total)
{
	(void)arg; (void)bytes; (void)total;
	return 0;
}

#define CHECK(call) do {                                                            \
		CUresult rc_ = (call);                                              \
		if (rc_ != CUDA_SUCCESS) {                                          \
			fprintf(stderr, "%s: %s\n", #call, cudaapi_error(rc_));     \
			exit(1);                                                    \
		}                                                                   \
	} while (0)

static void warm_cache(int fd, uint64_t size)
{
	char *buf = malloc(LIMIT_CHUNK);
	for (uint64_t off = 0; off < size;) {
		ssize_t n = pread(fd, buf, LIMIT_CHUNK, (off_t)off);
		if (n <= 0)
			break;
		off += (uint64_t)n;
	}
	free(buf);
}

/* One measurement's inputs: the file (in page cache), its size, the loader's settings. */
struct run {
	int fd;
	uint64_t size;
	const struct engine_params *p;
};

static double bench_loader(const struct run *r)
{
	int fd = r->fd;
	const struct engine_params *p = r->p;
	uint64_t size = r->size;
	struct engine_ctx *ctx;
	struct engine_error e = { 0 };

	if (engine_cuda.open(&ctx, p, &e)) {
		fprintf(stderr, "loader: %s\n", e.message);
		exit(1);
	}
	double t0 = now_s();
	if (engine_cuda.load(ctx, fd, quiet_progress, NULL, &e)) {
		fprintf(stderr, "loader: %s\n", e.message);
		exit(1);
	}
	double s = now_s() - t0;
	engine_cuda.close(ctx);
	return (double)size / s / 1e9;
}

static double bench_naive(const struct run *r)
{
	int fd = r->fd;
	uint64_t size = r->size;
	CUdeviceptr d;
	double t0 = now_s();
	char *buf = malloc(size);
	for (uint64_t off = 0; off < size;) {
		ssize_t n = pread(fd, buf + off, size - off, (off_t)off);
		if (n <= 0)
			break;
		off += (uint64_t)n;
	}
	CHECK(cudaapi.cuMemAlloc(&d, size));
	CHECK(cudaapi.cuMemcpyHtoD(d, buf, size));
	double s = now_s() - t0;
	cudaapi.cuMemFree(d);
	free(buf);
	return (double)size / s / 1e9;
}

static double bench_limit(const struct run *r)
{
	uint64_t size = r->size;
	void *pinned;
	CUdeviceptr d;
	CUstream stream;

	CHECK(cudaapi.cuMemHostAlloc(&pinned, (size_t)LIMIT_CHUNK * LIMIT_BUFFERS, 0));
	CHECK(cudaapi.cuMemAlloc(&d, size));
	CHECK(cudaapi.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
	double t0 = now_s();
	for (uint64_t off = 0, i = 0; off < size; off += LIMIT_CHUNK, i++) {
		size_t n = size - off < LIMIT_CHUNK ? (size_t)(size - off) : LIMIT_CHUNK;
		CHECK(cudaapi.cuMemcpyHtoDAsync(d + off, (char *)pinned + (i % LIMIT_BUFFERS) * LIMIT_CHUNK, n, stream));
	}
	CHECK(cudaapi.cuStreamSynchronize(stream));
	double s = now_s() - t0;
	cudaapi.cuStreamDestroy(stream);
	cudaapi.cuMemFree(d);
	cudaapi.cuMemFreeHost(pinned);
	return (double)size / s / 1e9;
}

/* A stand-in worker for bench/switch.py: CUDA up, memory held, until stdin closes. */
static int hold(uint64_t bytes)
{
	CUdevice dev;
	CUcontext ctx;
	CUdeviceptr d;
	char c;

	CHECK(cudaapi.cuDeviceGet(&dev, 0));
	CHECK(cudaapi.cuDevicePrimaryCtxRetain(&ctx, dev));
	CHECK(cudaapi.cuCtxSetCurrent(ctx));
	CHECK(cudaapi.cuMemAlloc(&d, bytes));
	printf("ready\n");
	fflush(stdout);
	while (read(STDIN_FILENO, &c, 1) > 0)
		;
	return 0;
}

/* The median GB/s of runs measurements. */
static double median_of(double (*bench)(const struct run *), const struct run *r, int runs)
{
	double v[MAX_RUNS];
	for (int i = 0; i < runs; i++)
		v[i] = bench(r);
	return stats_median(v, runs);
}

/* Every setting whose ring fits, with the limit before and after (noise shows as their gap). */
static void sweep(int fd, uint64_t size, int runs)
{
	struct engine_params p = { .device = "cuda:0", .model = "bench" };
	struct run r = { fd, size, &p };
	double before = median_of(bench_limit, &r, runs);

	printf("file        %.2f GiB (page cache), median of %d runs\n", (double)size / (1u << 30), runs);
	printf("limit       %6.2f GB/s before the sweep\n", before);
	printf("threads  chunk  buffers  pinned     GB/s  of limit\n");
	for (size_t b = 0; b < COUNT(sweep_buffers); b++)
		for (size_t t = 0; t < COUNT(sweep_threads); t++)
			for (size_t c = 0; c < COUNT(sweep_chunk_mib); c++) {
				uint64_t pinned = (uint64_t)sweep_threads[t] * sweep_buffers[b] * sweep_chunk_mib[c] << 20;
				if (pinned > LOADER_PINNED_MAX)
					continue;
				p.loader_threads = sweep_threads[t];
				p.loader_buffers = sweep_buffers[b];
				p.loader_chunk = (size_t)sweep_chunk_mib[c] << 20;
				double g = median_of(bench_loader, &r, runs);
				printf("%7u %4u MiB %8u %4llu MiB %8.2f %9.2f\n", p.loader_threads, sweep_chunk_mib[c],
				       p.loader_buffers, (unsigned long long)(pinned >> 20), g, g / before);
			}
	printf("limit       %6.2f GB/s after the sweep\n", median_of(bench_limit, &r, runs));
}

int main(int argc, char **argv)
{
	struct engine_params p = { .device = "cuda:0", .model = "bench" };
	char err[256];
	CUresult rc;
	int runs = 3;
	int sweeping = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: bench_load FILE [--threads N] [--buffers N] [--chunk BYTES] [--runs N] "
			"[--sweep] | --hold BYTES\n");
		return 2;
	}
	if (cudaapi_load(err, sizeof err, &rc) < 0) {
		printf("bench-load: no GPU: %s\n", err);
		return 0;
	}
	if (strcmp(argv[1], "--hold") == 0 && argc == 3)
		return hold(strtoull(argv[2], NULL, 10));
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--sweep") == 0) {
			sweeping = 1;
			continue;
		}
		if (i + 1 == argc) {
			fprintf(stderr, "bench_load: %s needs a value\n", argv[i]);
			return 2;
		}
		unsigned long v = strtoul(argv[++i], NULL, 10);
		if (strcmp(argv[i - 1], "--threads") == 0) p.loader_threads = (unsigned)v;
		else if (strcmp(argv[i - 1], "--buffers") == 0) p.loader_buffers = (unsigned)v;
		else if (strcmp(argv[i - 1], "--chunk") == 0) p.loader_chunk = v;
		else if (strcmp(argv[i - 1], "--runs") == 0 && v >= 1 && v <= MAX_RUNS) runs = (int)v;
		else {
			fprintf(stderr, "bench_load: bad option %s %s\n", argv[i - 1], argv[i]);
			return 2;
		}
	}
	/* One context for the run: the loader's open and close retain and release it too. */
	CUdevice dev;
	CUcontext ctx;
	CHECK(cudaapi.cuDeviceGet(&dev, 0));
	CHECK(cudaapi.cuDevicePrimaryCtxRetain(&ctx, dev));
	CHECK(cudaapi.cuCtxSetCurrent(ctx));
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	uint64_t size = (uint64_t)st.st_size;
	warm_cache(fd, size);
	if (sweeping) {
		sweep(fd, size, runs);
		return 0;
	}
	struct run r = { fd, size, &p };
	double loader = median_of(bench_loader, &r, runs);
	double naive = median_of(bench_naive, &r, runs);
	double limit = median_of(bench_limit, &r, runs);
	printf("file        %.2f GiB (page cache), median of %d runs\n", (double)size / (1u << 30), runs);
	printf("loader      %6.2f GB/s  (%u threads x %u MiB x %u buffers)\n", loader,
	       p.loader_threads ? p.loader_threads : LOADER_THREADS_DEFAULT,
	       (unsigned)((p.loader_chunk ? p.loader_chunk : LOADER_CHUNK_DEFAULT) >> 20),
	       p.loader_buffers ? p.loader_buffers : LOADER_BUFFERS_DEFAULT);
	printf("naive       %6.2f GB/s  (read all, then one copy)\n", naive);
	printf("limit       %6.2f GB/s  (async copies from pinned memory)\n", limit);
	printf("loader/limit %.2f   loader/naive %.2f\n", loader / limit, loader / naive);
	return 0;
}
