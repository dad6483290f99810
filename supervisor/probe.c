/* probe.c: see probe.h. Runs before the event loop; bounded by PROBE_TIMEOUT_MS. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "probe.h"

#define PROBE_OUTPUT_MAX 65536

/* Reads all the child writes to fd, until EOF or the deadline. */
static size_t read_until(int fd, char *buf, size_t cap, uint64_t deadline)
{
	size_t len = 0;

	while (len < cap - 1) {
		uint64_t t = clock_mono_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (t >= deadline || poll(&p, 1, (int)(deadline - t)) <= 0)
			break;
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return len;
}

static void parse(char *text, struct gpu **gpus, size_t *n, enum probe_llama *llama)
{
	char *save = NULL;

	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct gpu g = { 0 };
		char name[16], label[128] = "";
		if (strcmp(line, "engine\tllama\tcpu") == 0)
			*llama = PROBE_LLAMA_CPU;
		if (strcmp(line, "engine\tllama\tgpu") == 0)
			*llama = PROBE_LLAMA_GPU;
		if (sscanf(line, "%15[^\t]\t%" SCNu64 "\t%" SCNu64 "\t%127[^\n]", name, &g.total, &g.free,
			   label) < 3 || strncmp(name, "cuda:", 5) != 0)
			continue;
		snprintf(g.name, sizeof g.name, "%s", name);
		snprintf(g.label, sizeof g.label, "%s", label);
		*gpus = realloc(*gpus, (*n + 1) * sizeof **gpus);
		if (!*gpus)
			abort();
		(*gpus)[(*n)++] = g;
	}
}

void probe_gpus(const char *worker, const char *engine_dir, struct gpu **gpus, size_t *n, enum probe_llama *llama)
{
	int fds[2];
	char *out = malloc(PROBE_OUTPUT_MAX);

	*gpus = NULL;
	*n = 0;
	*llama = PROBE_LLAMA_NONE;
	if (!out || pipe2(fds, O_CLOEXEC) < 0) {
		free(out);
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		execl(worker, "modeld-worker", "--probe", engine_dir, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	if (pid > 0) {
		read_until(fds[0], out, PROBE_OUTPUT_MAX, clock_mono_ms() + PROBE_TIMEOUT_MS);
		kill(pid, SIGKILL);	/* done or hung: either way it goes */
		waitpid(pid, NULL, 0);
		parse(out, gpus, n, llama);
	}
	close(fds[0]);
	free(out);
	for (size_t i = 0; i < *n; i++)
		log_info("%s: %s, %" PRIu64 " MiB (%" PRIu64 " MiB free)", (*gpus)[i].name, (*gpus)[i].label,
			 (*gpus)[i].total >> 20, (*gpus)[i].free >> 20);
	if (*n == 0)
		log_info("no GPU found");
}
