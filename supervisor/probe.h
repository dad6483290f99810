/*
 * probe.h: the GPU inventory at start, from a short-lived worker.
 *
 * modeld never initialises CUDA itself: `modeld-worker --probe` does, prints
 * a line per GPU, and whether its llama engine runs on one, and exits. No
 * GPU (no driver, no device, no cuda engine in
 * the build) is an empty inventory, not an error.
 */
#ifndef PROBE_H
#define PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROBE_TIMEOUT_MS 10000

struct gpu {
	char name[16];		/* "cuda:N" */
	char label[128];	/* the device's name */
	uint64_t total, free;	/* bytes, at the probe */
};

/*
 * Runs worker --probe; *gpus (malloc'd) and *n get what it found, and
 * *llama_gpu whether the llama engine in engine_dir runs on a GPU.
 */
void probe_gpus(const char *worker, const char *engine_dir, struct gpu **gpus, size_t *n, bool *llama_gpu);

#endif
