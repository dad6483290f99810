/*
 * reload.c: SIGHUP and the reload op. The configuration is read again as
 * at start and the models directory rescanned; one that does not check out
 * leaves the running configuration as it was, and the log, the reply and
 * an advisory event say why (file:line). What lands:
 *
 * - Models: new ones appear. One that is gone, or whose definition or file
 *   (another file moved over its path, or one written anew) changed,
 *   is retired: requests for it end (unknown_model) and a slot holding it
 *   unloads; a changed one is then loaded again, from its new definition,
 *   where it was loaded. Models that did not change are the same objects,
 *   so their slots, requests and numbers go on untouched. A retired model
 *   is kept until exit, as requests and jobs may still point at it.
 * - Slots keep their workers and models. Their settings change in place;
 *   a slot's name, device and lock, and the [device] sections, may not
 *   change: adding, removing or moving a slot needs a restart, and such a
 *   reload is refused.
 * - [modeld]: what the running loop reads (log level, client limits and
 *   timeouts, admin group, models and state directories) applies at once;
 *   what was set up at start (sockets, worker, users) is kept, with a
 *   warning that it takes a restart.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/log.h"
#include "modeld.h"

static struct model **retired;
static size_t nretired;

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Whether a worker would load b as it loaded a (where in the file they are aside), from the same file. */
static bool same_model(const struct model *a, const struct model *b)
{
	return same_str(a->path, b->path) && a->file_dev == b->file_dev && a->file_ino == b->file_ino &&
	       a->file_size == b->file_size && a->file_mtime_ns == b->file_mtime_ns &&
	       same_str(a->slot, b->slot) && same_str(a->engine, b->engine) &&
	       a->warmup == b->warmup && a->load_timeout_ms == b->load_timeout_ms &&
	       a->idle_timeout_ms == b->idle_timeout_ms && a->ctx == b->ctx && a->gpu_layers == b->gpu_layers &&
	       a->threads == b->threads && a->batch == b->batch && a->parallel == b->parallel &&
	       same_str(a->chat_template, b->chat_template) && a->embedding == b->embedding;
}

/* Why next's slots and devices cannot take the running ones' places; 0 when they can. */
static int slots_differ(const struct config *next, char *why, size_t len)
{
	const char *restart = "adding, removing or moving slots needs a restart";

	if (next->nslots != md.conf.nslots) {
		snprintf(why, len, "%zu slots instead of %zu: %s", next->nslots, md.conf.nslots, restart);
		return -1;
	}
	for (size_t i = 0; i < md.conf.nslots; i++) {
		const struct slot_conf *run = &md.conf.slots[i], *s = config_slot(next, run->name);
		if (!s) {
			snprintf(why, len, "slot %s is gone: %s", run->name, restart);
			return -1;
		}
		if (strcmp(s->device, run->device) != 0 || strcmp(config_slot_lock(s), config_slot_lock(run)) != 0) {
			snprintf(why, len, "slot %s moved to another device or lock: %s", run->name, restart);
			return -1;
		}
	}
	bool same = next->ndevices == md.conf.ndevices;
	for (size_t i = 0; same && i < md.conf.ndevices; i++)
		same = strcmp(next->devices[i].name, md.conf.devices[i].name) == 0 &&
		       next->devices[i].exclusive == md.conf.devices[i].exclusive;
	if (!same) {
		snprintf(why, len, "the [device] sections changed: that needs a restart");
		return -1;
	}
	return 0;
}

/* The [modeld] keys that were acted on at start, and so take a restart: a string, or a number of size bytes. */
static const struct {
	const char *key;
	size_t offset;
	size_t size;	/* 0: a string */
} at_start[] = {
	{ "socket", offsetof(struct config, socket), 0 },
	{ "worker", offsetof(struct config, worker), 0 },
	{ "engine_dir", offsetof(struct config, engine_dir), 0 },
	{ "http", offsetof(struct config, http), 0 },
	{ "http_token_file", offsetof(struct config, http_token_file), 0 },
	{ "socket_mode", offsetof(struct config, socket_mode), sizeof(mode_t) },
	{ "socket_group", offsetof(struct config, socket_group), sizeof(gid_t) },
	{ "worker_user", offsetof(struct config, worker_uid), sizeof(uid_t) },
	{ "max_frame", offsetof(struct config, max_frame), sizeof(size_t) },
	{ "max_clients", offsetof(struct config, max_clients), sizeof(unsigned) },
};

static bool at_start_same(size_t i, const struct config *a, const struct config *b)
{
	const char *pa = (const char *)a + at_start[i].offset, *pb = (const char *)b + at_start[i].offset;

	if (at_start[i].size == 0)
		return same_str(*(char *const *)pa, *(char *const *)pb);
	return memcmp(pa, pb, at_start[i].size) == 0;
}

static void swap_str(char **a, char **b)
{
	char *t = *a;
	*a = *b;
	*b = t;
}

/* The [modeld] settings the running loop reads, from next; the rest stays, said so. */
static void take_globals(struct config *next)
{
	for (size_t i = 0; i < sizeof at_start / sizeof at_start[0]; i++)
		if (!at_start_same(i, &md.conf, next))
			log_warn("reload: %s changed; it takes effect at the next start", at_start[i].key);
	md.conf.log_level = next->log_level;
	log_set_level((enum log_level)next->log_level);
	md.conf.admin_group = next->admin_group;
	md.conf.max_clients_per_uid = next->max_clients_per_uid;
	md.conf.admin_reserve = next->admin_reserve;
	md.conf.client_idle_timeout_ms = next->client_idle_timeout_ms;
	md.conf.http_wait_timeout_ms = next->http_wait_timeout_ms;
	swap_str(&md.conf.models_dir, &next->models_dir);
	swap_str(&md.conf.state_dir, &next->state_dir);
	swap_str(&md.conf.file, &next->file);
}

/* Each slot's settings from next, in place (its slot machine keeps pointing at them); next gets the old. */
static void take_slots(struct config *next)
{
	for (size_t i = 0; i < md.conf.nslots; i++) {
		struct slot_conf *run = &md.conf.slots[i], *s = (struct slot_conf *)config_slot(next, run->name);
		struct slot_conf old = *run;
		*run = *s;
		*s = old;
	}
}

static void keep_retired(struct model *m)
{
	retired = realloc(retired, (nretired + 1) * sizeof *retired);
	if (!retired)
		abort();
	retired[nretired++] = m;
}

/*
 * next's models become the running ones: a model that did not change is
 * the running object, the new copy freed; the running models left out are
 * marked retired and returned (ngone of them).
 */
static struct model **take_models(struct config *next, struct reload_counts *n, size_t *ngone)
{
	struct model **old = md.conf.models, **gone = calloc(md.conf.nmodels + 1, sizeof *gone);
	size_t nold = md.conf.nmodels;
	bool *stays = calloc(nold + 1, sizeof *stays);

	if (!gone || !stays)
		abort();
	for (size_t i = 0; i < next->nmodels; i++) {
		struct model *run = (struct model *)config_model(&md.conf, next->models[i]->name);
		if (run && same_model(run, next->models[i])) {
			run->max_tokens = next->models[i]->max_tokens;	/* read per request: no reload */
			config_model_free(next->models[i]);
			next->models[i] = run;
			stays[run->index] = true;
		} else if (!run) {
			n->added++;
		}
	}
	*ngone = 0;
	for (size_t i = 0; i < nold; i++)
		if (!stays[i]) {
			old[i]->retired = true;	/* before anything counts a request for it */
			gone[(*ngone)++] = old[i];
		}
	md.conf.models = next->models;
	md.conf.nmodels = next->nmodels;
	next->models = NULL;
	next->nmodels = 0;
	metrics_models_changed(old, nold);
	config_index_models(&md.conf);
	free(old);
	free(stays);
	return gone;
}

/*
 * A retired model leaves every slot; one that was loaded and is still
 * configured (its definition changed) is loaded again where it was.
 */
static void retire(struct model *m, struct reload_counts *n)
{
	const struct model *again = config_model(&md.conf, m->name);

	if (again)
		n->changed++;
	else
		n->removed++;
	for (size_t i = 0; i < md.nslots; i++) {
		struct slot *s = &md.slots[i].s;
		bool held = slot_holds(s, m);
		slot_event(s, &(struct slot_ev){ .type = SEV_RETIRE, .model = m });
		if (held && again)
			slot_event(s, &(struct slot_ev){ .type = SEV_LOAD, .model = again });
	}
	keep_retired(m);
}

int reload_run(struct reload_counts *counts, char *err, size_t errlen)
{
	struct config next;
	char why[CONFIG_ERR_LEN];
	struct reload_counts n = { 0 };
	size_t ngone;

	service_reloading(true);
	log_info("reload: reading %s", md.conf.file ? md.conf.file : "(default)");
	int rc = modeld_read_config(&next, why);
	if (rc == 0) {
		config_default_slots(&next, md.ngpus);
		rc = slots_differ(&next, why, sizeof why);
	}
	if (rc < 0) {
		config_free(&next);
		snprintf(err, errlen, "%s; the running configuration stays", why);
		log_error("reload: %s", err);
		events_advisory(NULL, err);
		service_reloading(false);
		return -1;
	}
	take_globals(&next);
	take_slots(&next);
	struct model **gone = take_models(&next, &n, &ngone);
	for (size_t i = 0; i < md.nslots; i++) {
		const struct slot_conf *c = md.slots[i].s.conf;
		md.slots[i].s.fallback = c->fallback_model ? config_model(&md.conf, c->fallback_model) : NULL;
	}
	for (size_t i = 0; i < ngone; i++)
		retire(gone[i], &n);
	free(gone);
	config_free(&next);
	snprintf(why, sizeof why, "reloaded: %zu models; %zu added, %zu removed, %zu changed", md.conf.nmodels,
		 n.added, n.removed, n.changed);
	log_info("%s", why);
	events_advisory(NULL, why);
	service_reloading(false);
	service_status();
	*counts = n;
	return 0;
}

void reload_free(void)
{
	for (size_t i = 0; i < nretired; i++)
		config_model_free(retired[i]);
	free(retired);
	retired = NULL;
	nretired = 0;
}
