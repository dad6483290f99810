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

#include <stddef.h>
#include <stdint.h>

#define PROBE_TIMEOUT_MS 10000

struct gpu {
	char name[16];		/* "cuda:N" */
	char label[128];	/* the device's name */
	uint64_t total, free;	/* bytes, at the probe */
};

/*
 * What the llama engine in engine_dir runs on: nothing where it is not
 * there (not built, or it does not open: a load says why), the CPU only,
 * or GPUs too (built with CUDA).
 */
enum probe_llama { PROBE_LLAMA_NONE, PROBE_LLAMA_CPU, PROBE_LLAMA_GPU };

/* Runs worker --probe; *gpus (malloc'd) and *n get what it found, *llama what its llama engine runs on. */
void probe_gpus(const char *worker, const char *engine_dir, struct gpu **gpus, size_t *n, enum probe_llama *llama);

#endif
