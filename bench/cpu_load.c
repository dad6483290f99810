/*
 * cpu_load: the cpu engine's loader beside its floor, a pread of the whole
 * file into one buffer of the file's size (make bench-cpu-load). Each run is
 * a child process of its own, so that its peak RSS is its own; the two take
 * turns, the file is read once first (both read the page cache), and the
 * medians of --runs runs (default 5) are printed with the ratios: speed as
 * the floor's time over the loader's, peak RSS over the model's F32 arrays.
 *
 *   cpu_load FILE [--runs N]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../worker/engine.h"
#include "stats.h"

#define MAX_RUNS 31
#define READ_CHUNK (8u << 20)

struct sample {
	double secs;
	long rss_kib;		/* peak */
	unsigned long long model_bytes;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "cpu_load: %s\n", what);
	exit(1);
}

static int quiet_progress(void *arg, uint64_t bytes, uint64_t total)
{
	(void)arg; (void)bytes; (void)total;
	return 0;
}

/* Reads the whole file into one buffer of its size. */
static void floor_run(int fd, uint64_t size, struct sample *out)
{
	char *buf = malloc(size);

	if (!buf)
		die("out of memory");
	for (uint64_t off = 0; off < size;) {
		ssize_t n = pread(fd, buf + off, size - off, (off_t)off);
		if (n <= 0)
			die("read failed");
		off += (uint64_t)n;
	}
	out->model_bytes = 0;
	free(buf);
}

static void loader_run(int fd, uint64_t size, struct sample *out)
{
	struct engine_params p = { .device = "cpu", .model = "bench" };
	struct engine_error e = { 0 };
	struct engine_ctx *ctx;
	struct engine_mem mem = { 0 };

	(void)size;
	if (engine_cpu.open(&ctx, &p, &e) || engine_cpu.load(ctx, fd, quiet_progress, NULL, &e))
		die(e.message);
	engine_cpu.memory(ctx, &mem);
	out->model_bytes = mem.used;
	engine_cpu.close(ctx);
}

/* One run of fn in a child: its time and peak RSS. */
static struct sample sample(void (*fn)(int, uint64_t, struct sample *), int fd, uint64_t size)
{
	struct sample s = { 0 };
	int pfd[2];

	if (pipe(pfd) < 0)
		die("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		struct rusage ru;
		double t0 = now_s();
		fn(fd, size, &s);
		s.secs = now_s() - t0;
		getrusage(RUSAGE_SELF, &ru);
		s.rss_kib = ru.ru_maxrss;
		_exit(write(pfd[1], &s, sizeof s) == (ssize_t)sizeof s ? 0 : 1);
	}
	close(pfd[1]);
	int status;
	if (pid < 0 || read(pfd[0], &s, sizeof s) != (ssize_t)sizeof s || waitpid(pid, &status, 0) < 0 ||
	    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("a run failed");
	close(pfd[0]);
	return s;
}

int main(int argc, char **argv)
{
	int runs = 5;

	if (argc == 4 && strcmp(argv[2], "--runs") == 0)
		runs = atoi(argv[3]);
	if ((argc != 2 && argc != 4) || runs < 1 || runs > MAX_RUNS) {
		fprintf(stderr, "usage: cpu_load FILE [--runs N (1 to %d)]\n", MAX_RUNS);
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		die(argv[1]);
	uint64_t size = (uint64_t)st.st_size;
	struct sample warm = sample(floor_run, fd, size);	/* into the page cache */
	(void)warm;
	double t_load[MAX_RUNS], t_floor[MAX_RUNS], rss_load[MAX_RUNS], rss_floor[MAX_RUNS];
	unsigned long long model = 0;
	for (int i = 0; i < runs; i++) {
		struct sample a, b;
		if (i % 2) {	/* turns, the order flipping */
			b = sample(floor_run, fd, size);
			a = sample(loader_run, fd, size);
		} else {
			a = sample(loader_run, fd, size);
			b = sample(floor_run, fd, size);
		}
		t_load[i] = a.secs, rss_load[i] = (double)a.rss_kib * 1024, model = a.model_bytes;
		t_floor[i] = b.secs, rss_floor[i] = (double)b.rss_kib * 1024;
	}
	double tl = stats_median(t_load, runs), tf = stats_median(t_floor, runs);
	double rl = stats_median(rss_load, runs), rf = stats_median(rss_floor, runs);
	printf("file %.2f GiB, model %.2f GiB as F32, page cache, medians of %d runs\n",
	       (double)size / (1u << 30), (double)model / (1u << 30), runs);
	printf("%-22s %8s %9s %12s\n", "", "s", "GB/s", "peak RSS GiB");
	printf("%-22s %8.3f %9.2f %12.2f\n", "cpu engine loader", tl, (double)size / tl / 1e9, rl / (1u << 30));
	printf("%-22s %8.3f %9.2f %12.2f\n", "pread, one buffer", tf, (double)size / tf / 1e9, rf / (1u << 30));
	printf("speed: loader %.3fx the pread (goal >= 0.9x); peak RSS %.3fx the model (goal <= 1.05x)\n",
	       tf / tl, rl / (double)model);
	return 0;
}
