/*
 * The desired state that outlives modeld: the model each slot should hold,
 * in state_dir/modeld.state, so that a modeld restarted after a crash, a
 * reboot or an upgrade loads them again. A slot's entry is the model it
 * last became ready with, cleared when an unload or an idle eviction
 * empties it; a crash or a shutdown leaves it. The file is rewritten
 * whole (write, fsync, rename, fsync of the directory) at every change, so
 * a reader finds the old state or the new, never half of one. A file that
 * cannot be read is reported and ignored: the slots start as configured.
 * The file also keeps each slot's default_model when it was written: a
 * slot whose default_model has changed since starts with the new one (the
 * later decision wins).
 *
 *   {"version": 1, "slots": {"gpu0": "qwen2.5-0.5b", "cpu": null},
 *    "defaults": {"gpu0": "llama-3.2-1b", "cpu": null}}
 *
 * What each slot should hold now, which /readyz waits for, is kept here
 * too, with or without state_dir: the model it started with, then the
 * model it last became ready with, nothing once it was emptied.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../proto/log.h"
#include "core.h"
#include "state.h"

#define STATE_FILE "modeld.state"
#define STATE_VERSION 1

/* What the file said at start, per slot (by index), and what it says now. */
struct desired {
	bool from_file;			/* the file had an entry for this slot */
	const struct model *at_start;
	const struct model *now;
	const struct model *wanted;	/* what the slot should hold now */
};

static struct desired *desired;
static char path[PATH_MAX];

/* Whether the file kept rt's default_model as other than it is now (a file without defaults kept none). */
static bool default_changed(const json_t *root, const struct slot *s)
{
	const json_t *defaults = json_object_get(root, "defaults");
	const char *now = s->conf->default_model;

	if (!json_is_object(defaults))
		return false;
	const json_t *then = json_object_get(defaults, s->conf->name);
	if (json_is_string(then))
		return !now || strcmp(now, json_string_value(then)) != 0;
	return now != NULL;
}

/* The file's slots into desired; -1 with why if it is not a state file. */
static int read_entries(const json_t *root, const char **why)
{
	const json_t *slots = json_object_get(root, "slots"), *v;
	const char *name;

	if (!json_is_object(root) || json_integer_value(json_object_get(root, "version")) != STATE_VERSION ||
	    !json_is_object(slots)) {
		*why = "not a version 1 state file";
		return -1;
	}
	json_object_foreach((json_t *)slots, name, v) {
		const struct slot *s = core_find(name);
		if (!s) {
			log_warn("state %s: slot %s is no longer configured; its entry is dropped", path, name);
			continue;
		}
		if (default_changed(root, s)) {
			log_info("state %s: slot %s's default_model has changed since; the slot starts with it", path,
				 name);
			continue;
		}
		struct desired *d = &desired[core_index(s)];
		const struct model *m = json_is_string(v) ? config_model(config_running(), json_string_value(v)) : NULL;
		if (json_is_string(v) && !m) {
			log_warn("state %s: slot %s's model %s is no longer configured; the slot starts as configured",
				 path, name, json_string_value(v));
			continue;
		}
		d->from_file = true;
		d->at_start = d->now = m;
	}
	return 0;
}

void state_load(void)
{
	json_error_t je;
	json_t *root;
	const char *why = NULL;

	free(desired);
	if (!(desired = calloc(core_nslots() + 1, sizeof *desired)))
		abort();
	if (!config_running()->state_dir)
		return;
	snprintf(path, sizeof path, "%s/%s", config_running()->state_dir, STATE_FILE);
	if (!(root = json_load_file(path, JSON_REJECT_DUPLICATES, &je))) {
		if (access(path, F_OK) == 0)
			log_warn("state %s:%d: %s; ignored, the slots start as configured", path, je.line, je.text);
		return;
	}
	if (read_entries(root, &why) < 0)
		log_warn("state %s: %s; ignored, the slots start as configured", path, why);
	json_decref(root);
}

const struct model *state_initial(const struct slot *s)
{
	const char *name = s->conf->default_model;
	const struct model *configured = name ? config_model(config_running(), name) : NULL;
	struct desired *d = &desired[core_index(s)];

	d->wanted = d->from_file ? d->at_start : configured;
	if (d->from_file && d->at_start != configured)
		log_info("slot %s: %s, as before the restart", s->conf->name,
			 d->at_start ? d->at_start->name : "left empty");
	return d->wanted;
}

const struct model *state_wanted(const struct slot *s)
{
	return desired[core_index(s)].wanted;
}

/* Writes every slot's entry to a temporary file, then renames it over the state file. */
static int write_file(void)
{
	char tmp[PATH_MAX + 8];
	json_t *slots = json_object(), *defaults = json_object();
	int fd = -1, rc = -1;

	for (size_t i = 0; i < core_nslots(); i++) {
		const struct slot_conf *c = core_slot(i)->conf;
		json_object_set_new(slots, c->name, desired[i].now ? json_string(desired[i].now->name) : json_null());
		json_object_set_new(defaults, c->name, c->default_model ? json_string(c->default_model) : json_null());
	}
	json_t *root = json_pack("{s:i, s:o, s:o}", "version", STATE_VERSION, "slots", slots, "defaults", defaults);
	char *text = json_dumps(root, JSON_INDENT(1));
	json_decref(root);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if (text && (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) >= 0 &&
	    write(fd, text, strlen(text)) == (ssize_t)strlen(text) && fsync(fd) == 0 && close(fd) == 0) {
		fd = -1;
		rc = rename(tmp, path);
	}
	if (fd >= 0)
		close(fd);
	int dir = rc == 0 ? open(config_running()->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dir >= 0) {
		fsync(dir);	/* the rename itself outlives a power loss */
		close(dir);
	}
	free(text);
	return rc;
}

/* After any state change of s: a slot that became ready or empty is written down. */
static void on_state(const struct slot *s)
{
	struct desired *d = &desired[core_index(s)];
	const struct model *now = d->now;

	if (core_shutting_down())
		return;
	if (s->state == SS_READY)
		now = s->model;
	else if (s->state == SS_EMPTY)
		now = NULL;
	if (s->state == SS_READY || s->state == SS_EMPTY)
		d->wanted = now;
	if (!config_running()->state_dir || now == d->now)
		return;
	d->now = now;
	if (write_file() < 0)
		log_warn("state %s: cannot write it: %s; a restart will not know slot %s holds %s", path,
			 strerror(errno), s->conf->name, now ? now->name : "nothing");
}

void state_free(void)
{
	free(desired);
	desired = NULL;
}

const struct watch state_watch = { .state = on_state };
