/*
 * devices.h: the one table of devices. What the probe found at start (the
 * GPUs, what the llama engine runs on), the host's memory, and what each
 * slot's worker last reported of its memory and its device's.
 */
#ifndef DEVICES_H
#define DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "probe.h"

/* Runs the probe (probe.h) with the running configuration's worker and engines. */
void devices_probe(void);
/* Room for the running configuration's slots' reports; after the slots are known. */
void devices_init(void);
void devices_free(void);
size_t devices_gpu_count(void);
enum probe_llama devices_llama(void);
/* What slot's worker (by index) last said: the memory it holds, and its device's free and total bytes. */
void devices_report(size_t slot, uint64_t mem_bytes, uint64_t dev_free, uint64_t dev_total);
/* What slot's worker said it holds as it loaded (its device's memory as last reported stays). */
void devices_report_memory(size_t slot, uint64_t mem_bytes);
/* The memory slot's worker last said it holds. */
uint64_t devices_slot_memory(size_t slot);
/* Free memory of device: the host's for cpu, else what its workers last reported (0: unknown). */
uint64_t devices_free_bytes(const char *device);
/* Calls fn for every device: the host's memory, the GPUs found at start, any other a slot names. */
void devices_each(void (*fn)(void *arg, const char *name, const char *label, uint64_t total, uint64_t free_bytes),
		  void *arg);

#endif
