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
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../proto/log.h"
#include "core.h"
#include "devices.h"
#include "http.h"
#include "metrics.h"
#include "reload.h"
#include "service.h"
#include "watch.h"

/* Whom workers run as when modeld is root and worker_user is not set: the first of these
 * that exists (the package makes the user modeld). */
#define WORKER_DEFAULT_USERS { "modeld", "nobody" }

static struct reload_overrides overrides;	/* the command line's, which every reading applies */
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
	struct config *live = config_running();

	const char *restart = "adding, removing or moving slots needs a restart";

	if (next->nslots != live->nslots) {
		snprintf(why, len, "%zu slots instead of %zu: %s", next->nslots, live->nslots, restart);
		return -1;
	}
	for (size_t i = 0; i < live->nslots; i++) {
		const struct slot_conf *run = &live->slots[i], *s = config_slot(next, run->name);
		if (!s) {
			snprintf(why, len, "slot %s is gone: %s", run->name, restart);
			return -1;
		}
		if (strcmp(s->device, run->device) != 0 || strcmp(config_slot_lock(s), config_slot_lock(run)) != 0) {
			snprintf(why, len, "slot %s moved to another device or lock: %s", run->name, restart);
			return -1;
		}
	}
	bool same = next->ndevices == live->ndevices;
	for (size_t i = 0; same && i < live->ndevices; i++)
		same = strcmp(next->devices[i].name, live->devices[i].name) == 0 &&
		       next->devices[i].exclusive == live->devices[i].exclusive;
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
	struct config *live = config_running();

	for (size_t i = 0; i < sizeof at_start / sizeof at_start[0]; i++)
		if (!at_start_same(i, live, next))
			log_warn("reload: %s changed; it takes effect at the next start", at_start[i].key);
	live->log_level = next->log_level;
	log_set_level((enum log_level)next->log_level);
	live->admin_group = next->admin_group;
	live->max_clients_per_uid = next->max_clients_per_uid;
	live->admin_reserve = next->admin_reserve;
	live->client_idle_timeout_ms = next->client_idle_timeout_ms;
	live->http_wait_timeout_ms = next->http_wait_timeout_ms;
	swap_str(&live->models_dir, &next->models_dir);
	swap_str(&live->state_dir, &next->state_dir);
	swap_str(&live->file, &next->file);
}

/* Each slot's settings from next, in place (its slot machine keeps pointing at them); next gets the old. */
static void take_slots(struct config *next)
{
	struct config *live = config_running();

	for (size_t i = 0; i < live->nslots; i++) {
		struct slot_conf *run = &live->slots[i], *s = (struct slot_conf *)config_slot(next, run->name);
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
static struct model **take_models(struct config *next, struct config_changes *n, size_t *ngone)
{
	struct config *live = config_running();

	struct model **old = live->models, **gone = calloc(live->nmodels + 1, sizeof *gone);
	size_t nold = live->nmodels;
	bool *stays = calloc(nold + 1, sizeof *stays);

	if (!gone || !stays)
		abort();
	for (size_t i = 0; i < next->nmodels; i++) {
		struct model *run = (struct model *)config_model(live, next->models[i]->name);
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
	live->models = next->models;
	live->nmodels = next->nmodels;
	next->models = NULL;
	next->nmodels = 0;
	metrics_models_changed(old, nold);
	config_index_models(live);
	free(old);
	free(stays);
	return gone;
}

/*
 * A retired model leaves every slot; one that was loaded and is still
 * configured (its definition changed) is loaded again where it was.
 */
static void retire(struct model *m, struct config_changes *n)
{
	struct config *live = config_running();

	const struct model *again = config_model(live, m->name);

	if (again)
		n->changed++;
	else
		n->removed++;
	core_retire(m, again);
	keep_retired(m);
}

int reload_run(struct config_changes *counts, char *err, size_t errlen)
{
	struct config *live = config_running();
	struct config next;
	char why[CONFIG_ERR_LEN];
	struct config_changes n = { 0 };
	size_t ngone;

	service_reloading(true);
	log_info("reload: reading %s", live->file ? live->file : "(default)");
	int rc = reload_read_config(&next, why);
	if (rc == 0) {
		config_default_slots(&next, devices_gpu_count());
		rc = slots_differ(&next, why, sizeof why);
	}
	if (rc < 0) {
		config_free(&next);
		snprintf(err, errlen, "%s; the running configuration stays", why);
		log_error("reload: %s", err);
		watch_advisory(NULL, err);
		service_reloading(false);
		return -1;
	}
	take_globals(&next);
	take_slots(&next);
	struct model **gone = take_models(&next, &n, &ngone);
	core_reconfigure();
	for (size_t i = 0; i < ngone; i++)
		retire(gone[i], &n);
	free(gone);
	config_free(&next);
	snprintf(why, sizeof why, "reloaded: %zu models; %zu added, %zu removed, %zu changed", live->nmodels,
		 n.added, n.removed, n.changed);
	log_info("%s", why);
	watch_advisory(NULL, why);
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

/*
 * Workers never keep root's privileges: as root without worker_user they
 * run as the first of WORKER_DEFAULT_USERS that exists, which holds
 * nothing and may do nothing; where none exists they keep uid 0 and drop
 * every capability (as every worker does).
 */
static void default_worker_user(struct config *c)
{
	static const char *const users[] = WORKER_DEFAULT_USERS;
	struct passwd *pw = NULL;

	if (geteuid() != 0 || c->worker_uid != CONFIG_NO_USER)
		return;
	for (size_t i = 0; !pw && i < sizeof users / sizeof users[0]; i++)
		pw = getpwnam(users[i]);
	if (!pw) {
		log_warn("no user %s or %s: workers run as root, with no capability (set worker_user)",
			 users[0], users[1]);
		return;
	}
	c->worker_uid = pw->pw_uid;
	c->worker_gid = pw->pw_gid;
}

void reload_init(const struct reload_overrides *o)
{
	overrides = *o;
}

int reload_read_config(struct config *c, char err[CONFIG_ERR_LEN])
{
	const struct reload_overrides *o = &overrides;

	config_init(c);
	if (o->config && config_read(c, o->config, err) < 0)
		return -1;
	if (o->models) {
		free(c->models_dir);
		c->models_dir = strdup(o->models);
	}
	if (o->http) {
		free(c->http);
		c->http = strdup(o->http);
	}
	if (o->level) {
		int level = log_level_parse(o->level);
		if (level < 0) {
			snprintf(err, CONFIG_ERR_LEN, "-l: \"%s\" is not error, warn, info or debug", o->level);
			return -1;
		}
		c->log_level = level;
	}
	if (config_finish(c, err) < 0 || http_check(c, err, CONFIG_ERR_LEN) < 0)
		return -1;
	default_worker_user(c);
	return 0;
}
