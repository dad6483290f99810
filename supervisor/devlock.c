/* devlock.c: see devlock.h. Waiting, started and completed go to the watches (gpu). */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "devlock.h"
#include "watch.h"

struct devlock {
	char *device;			/* a copy: a reload frees the config strings it came from */
	struct slot *holder;
	const char *op;			/* of the holder */
	struct slot *line[CONFIG_MAX_SLOTS];	/* waiting, first first */
	const char *line_op[CONFIG_MAX_SLOTS];
	size_t nline;
};

static struct devlock *locks;
static size_t nlocks;

void devlock_init(void)
{
	const struct config *c = config_running();

	locks = calloc(c->nslots ? c->nslots : 1, sizeof *locks);
	if (!locks)
		abort();
	for (size_t i = 0; i < c->nslots; i++) {
		const char *name = config_slot_lock(&c->slots[i]);
		if (!config_device_exclusive(c, name) || devlock_of(name))
			continue;
		if (!(locks[nlocks].device = strdup(name)))
			abort();
		nlocks++;
	}
}

void devlock_free(void)
{
	for (size_t i = 0; i < nlocks; i++)
		free(locks[i].device);
	free(locks);
	locks = NULL;
	nlocks = 0;
}

struct devlock *devlock_of(const char *device)
{
	for (size_t i = 0; i < nlocks; i++)
		if (strcmp(locks[i].device, device) == 0)
			return &locks[i];
	return NULL;
}

static void grant(struct devlock *l, struct slot *s, const char *op)
{
	l->holder = s;
	l->op = op;
	watch_gpu(l->device, s, op, "started");
}

bool devlock_take(struct devlock *l, struct slot *s, const char *op)
{
	if (!l->holder) {
		grant(l, s, op);
		return true;
	}
	if (l->nline < CONFIG_MAX_SLOTS) {
		l->line[l->nline] = s;
		l->line_op[l->nline++] = op;
	}
	watch_gpu(l->device, s, op, "waiting");
	return false;
}

void devlock_drop(struct devlock *l, struct slot *s)
{
	for (size_t i = 0; i < l->nline; i++) {
		if (l->line[i] != s)
			continue;
		memmove(&l->line[i], &l->line[i + 1], (l->nline - i - 1) * sizeof l->line[0]);
		memmove(&l->line_op[i], &l->line_op[i + 1], (l->nline - i - 1) * sizeof l->line_op[0]);
		l->nline--;
		return;
	}
	if (l->holder != s)
		return;
	watch_gpu(l->device, s, l->op, "completed");
	l->holder = NULL;
	if (l->nline == 0)
		return;
	struct slot *next = l->line[0];
	const char *op = l->line_op[0];
	memmove(&l->line[0], &l->line[1], (l->nline - 1) * sizeof l->line[0]);
	memmove(&l->line_op[0], &l->line_op[1], (l->nline - 1) * sizeof l->line_op[0]);
	l->nline--;
	grant(l, next, op);
	struct slot_ev ev = { .type = SEV_LOCKED };
	slot_event(next, &ev);
}

bool devlock_busy(const struct devlock *l)
{
	return l->holder != NULL;
}
