/* watch.c: the registered watches, and the calls that tell each of them (watch.h). */
#include <stdlib.h>

#include "watch.h"

static const struct watch *watches[WATCH_MAX];
static size_t nwatches;

void watch_add(const struct watch *w)
{
	if (nwatches == WATCH_MAX)
		abort();	/* a programming error: WATCH_MAX is the number main.c registers, or more */
	watches[nwatches++] = w;
}

void watch_clear(void)
{
	nwatches = 0;
}

void watch_state(const struct slot *s)
{
	for (size_t i = 0; i < nwatches; i++)
		if (watches[i]->state)
			watches[i]->state(s);
}

void watch_progress(const struct slot *s)
{
	for (size_t i = 0; i < nwatches; i++)
		if (watches[i]->progress)
			watches[i]->progress(s);
}

void watch_job(const struct slot *s, uint64_t job, const char *op, const struct model *m, const char *status,
	       const char *message)
{
	for (size_t i = 0; i < nwatches; i++)
		if (watches[i]->job)
			watches[i]->job(s, job, op, m, status, message);
}

void watch_advisory(const struct slot *s, const char *message)
{
	for (size_t i = 0; i < nwatches; i++)
		if (watches[i]->advisory)
			watches[i]->advisory(s, message);
}

void watch_gpu(const char *device, const struct slot *s, const char *op, const char *status)
{
	for (size_t i = 0; i < nwatches; i++)
		if (watches[i]->gpu)
			watches[i]->gpu(device, s, op, status);
}

void watch_request_done(const struct req *r, enum err code)
{
	for (size_t i = 0; i < nwatches; i++)
		if (watches[i]->request_done)
			watches[i]->request_done(r, code);
}
