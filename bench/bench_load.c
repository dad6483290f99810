/*
 * bench_load: how fast weights reach the GPU, three ways, in one run on one
 * file (make bench-load):
 *   loader  the cuda engine's loader (threads, pinned ring, async copies)
 *   naive   read the whole file into malloc'd memory, one cuMemcpyHtoD
 *   limit   async copies of the same bytes from pinned memory: what PCIe gives
 * and the ratios. The file is read once first, so all three read the page
 * cache. Where no GPU is usable it says why and exits 0.
 *
 *   bench_load FILE [--threads N] [--buffers N] [--chunk BYTES]
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

#include "../worker/cudaapi.h"
#include "../worker/engine.h"

#define LIMIT_CHUNK (8u << 20)
#define LIMIT_BUFFERS 8

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

static double bench_loader(int fd, const struct engine_params *p, uint64_t size)
{
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

static double bench_naive(int fd, uint64_t size)
{
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

static double bench_limit(uint64_t size)
{
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

int main(int argc, char **argv)
{
	struct engine_params p = { .device = "cuda:0", .model = "bench" };
	char err[256];
	CUresult rc;

	if (argc < 2) {
		fprintf(stderr, "usage: bench_load FILE [--threads N] [--buffers N] [--chunk BYTES] | --hold BYTES\n");
		return 2;
	}
	if (cudaapi_load(err, sizeof err, &rc) < 0) {
		printf("bench-load: no GPU: %s\n", err);
		return 0;
	}
	if (strcmp(argv[1], "--hold") == 0 && argc == 3)
		return hold(strtoull(argv[2], NULL, 10));
	for (int i = 2; i + 1 < argc; i += 2) {
		unsigned long v = strtoul(argv[i + 1], NULL, 10);
		if (strcmp(argv[i], "--threads") == 0) p.threads = (unsigned)v;
		else if (strcmp(argv[i], "--buffers") == 0) p.buffers = (unsigned)v;
		else if (strcmp(argv[i], "--chunk") == 0) p.chunk = v;
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
	double loader = bench_loader(fd, &p, size);
	double naive = bench_naive(fd, size);
	double limit = bench_limit(size);
	printf("file        %.2f GiB (page cache)\n", (double)size / (1u << 30));
	printf("loader      %6.2f GB/s  (%u threads x %zu MiB x %u buffers)\n", loader,
	       p.threads ? p.threads : 16, (p.chunk ? p.chunk : 4u << 20) >> 20, p.buffers ? p.buffers : 2);
	printf("naive       %6.2f GB/s  (read all, then one copy)\n", naive);
	printf("limit       %6.2f GB/s  (async copies from pinned memory)\n", limit);
	printf("loader/limit %.2f   loader/naive %.2f\n", loader / limit, loader / naive);
	return 0;
}
