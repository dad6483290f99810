/* devices.c: the table of devices (devices.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "config.h"
#include "devices.h"

struct report {
	uint64_t mem_bytes;
	uint64_t dev_free, dev_total;	/* dev_total 0: none yet */
};

static struct gpu *gpus;
static size_t ngpus;
static enum probe_llama llama;
static struct report *reports;		/* by slot index */

void devices_probe(void)
{
	const struct config *c = config_running();

	free(gpus);
	probe_gpus(c->worker_path, c->engine_path, &gpus, &ngpus, &llama);
}

void devices_init(void)
{
	free(reports);
	if (!(reports = calloc(config_running()->nslots + 1, sizeof *reports)))
		abort();
}

void devices_free(void)
{
	free(gpus);
	free(reports);
	gpus = NULL;
	reports = NULL;
	ngpus = 0;
}

size_t devices_gpu_count(void)
{
	return ngpus;
}

enum probe_llama devices_llama(void)
{
	return llama;
}

void devices_report(size_t slot, uint64_t mem_bytes, uint64_t dev_free, uint64_t dev_total)
{
	reports[slot] = (struct report){ mem_bytes, dev_free, dev_total };
}

void devices_report_memory(size_t slot, uint64_t mem_bytes)
{
	reports[slot].mem_bytes = mem_bytes;
}

uint64_t devices_slot_memory(size_t slot)
{
	return reports[slot].mem_bytes;
}

static void host_memory(uint64_t *total, uint64_t *free_bytes)
{
	struct sysinfo si;

	if (sysinfo(&si) < 0) {
		*total = *free_bytes = 0;
		return;
	}
	*total = (uint64_t)si.totalram * si.mem_unit;
	*free_bytes = (uint64_t)(si.freeram + si.bufferram) * si.mem_unit;
}

/* The last report of a worker on device (the first slot's that has one); NULL: none. */
static const struct report *reported(const char *device)
{
	const struct config *c = config_running();

	for (size_t i = 0; i < c->nslots; i++)
		if (strcmp(c->slots[i].device, device) == 0 && reports[i].dev_total)
			return &reports[i];
	return NULL;
}

uint64_t devices_free_bytes(const char *device)
{
	uint64_t total, free_bytes;
	const struct report *r;

	if (strcmp(device, "cpu") == 0) {
		host_memory(&total, &free_bytes);
		return free_bytes;
	}
	return (r = reported(device)) != NULL ? r->dev_free : 0;
}

static bool is_probed(const char *dev)
{
	for (size_t i = 0; i < ngpus; i++)
		if (strcmp(gpus[i].name, dev) == 0)
			return true;
	return false;
}

void devices_each(void (*fn)(void *arg, const char *name, const char *label, uint64_t total, uint64_t free_bytes),
		  void *arg)
{
	const struct config *c = config_running();
	uint64_t total, free_bytes;
	const struct report *r;

	host_memory(&total, &free_bytes);
	fn(arg, "cpu", "host memory", total, free_bytes);
	for (size_t i = 0; i < ngpus; i++) {
		r = reported(gpus[i].name);
		fn(arg, gpus[i].name, gpus[i].label, r ? r->dev_total : gpus[i].total, r ? r->dev_free : gpus[i].free);
	}
	for (size_t i = 0; i < c->nslots; i++) {
		const char *dev = c->slots[i].device;
		bool seen = strcmp(dev, "cpu") == 0 || is_probed(dev);
		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(c->slots[j].device, dev) == 0;
		if (!seen)	/* configured, but not found at start */
			fn(arg, dev, NULL, reports[i].dev_total, reports[i].dev_free);
	}
}
