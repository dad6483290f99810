/* view.c: the views of the slots, models and devices (view.h). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../proto/clock.h"
#include "core.h"
#include "devices.h"
#include "view.h"

static void write_model_name(struct msgw *w, const char *key, const struct model *m)
{
	msgw_kstr(w, key, m ? m->name : NULL);
}

void view_slot_details(const struct slot *s, struct msgw *w)
{
	uint64_t t = s->env->now_ms(s->env->arg);

	msgw_kstr(w, "state", slot_state_name(s->state));
	write_model_name(w, "model", slot_shown_model(s));
	switch (s->state) {
	case SS_SWITCHING:
		write_model_name(w, "from", s->from);
		write_model_name(w, "to", s->next);
		break;
	case SS_UNLOADING:
		write_model_name(w, "next", s->next);
		break;
	case SS_LOADING:
		msgw_key(w, "progress");
		msgw_map(w);
		msgw_ku64(w, "bytes", s->bytes);
		msgw_ku64(w, "total", s->total);
		msgw_end(w);
		break;
	case SS_ERROR:
		msgw_kstr(w, "message", s->message);
		write_model_name(w, "last_model", s->model);
		break;
	case SS_RECONNECTING:
		msgw_ku64(w, "attempt", s->attempt);
		msgw_ku64(w, "retry_in_ms", s->retry_at_ms > t ? s->retry_at_ms - t : 0);
		msgw_kstr(w, "message", s->message);	/* how the worker died */
		break;
	case SS_UNAVAILABLE:
		msgw_kstr(w, "message", s->message);
		msgw_ku64(w, "attempt", s->attempt);		/* tries so far; the next comes in retry_in_ms */
		msgw_ku64(w, "retry_in_ms", s->retry_at_ms > t ? s->retry_at_ms - t : 0);
		break;
	case SS_READY:
		msgw_ku64(w, "load_ms", s->load_ms);
		msgw_ku64(w, "warmup_ms", s->warmup_ms);
		break;
	default:	/* empty, initializing, warming_up, service_restarting: the model alone */
		break;
	}
}

static void write_slot(struct msgw *w, const struct slot *s)
{
	msgw_map(w);
	msgw_kstr(w, "name", s->conf->name);
	msgw_kstr(w, "device", s->conf->device);
	view_slot_details(s, w);
	msgw_key(w, "pid");
	if (s->pid)
		msgw_u64(w, (uint64_t)s->pid);
	else
		msgw_nil(w);
	msgw_ku64(w, "since_ms", clock_wall_ms() - (clock_mono_ms() - s->since_ms));
	msgw_ku64(w, "queue", slot_queue_length(s));
	msgw_ku64(w, "active", s->nrunning);
	msgw_ku64(w, "mem_bytes", s->has_worker ? devices_slot_memory(core_index(s)) : 0);
	msgw_end(w);
}

void view_write_status(struct msgw *w, const struct slot *only)
{
	msgw_key(w, "slots");
	msgw_array(w);
	for (size_t i = 0; i < core_nslots(); i++)
		if (!only || only == core_slot(i))
			write_slot(w, core_slot(i));
	msgw_end(w);
}

static void write_model(struct msgw *w, const struct model *mod)
{
	struct stat st;

	msgw_map(w);
	msgw_kstr(w, "name", mod->name);
	msgw_kstr(w, "path", mod->path);
	msgw_key(w, "bytes");
	if (stat(mod->path, &st) == 0)
		msgw_u64(w, (uint64_t)st.st_size);
	else
		msgw_nil(w);
	msgw_kstr(w, "engine", mod->engine ? mod->engine : "auto");
	msgw_kstr(w, "slot", mod->slot);
	msgw_key(w, "loaded_in");
	msgw_array(w);
	for (size_t i = 0; i < core_nslots(); i++) {
		const struct slot *s = core_slot(i);
		if (s->model != mod || !s->has_worker)
			continue;
		msgw_map(w);
		msgw_kstr(w, "slot", s->conf->name);
		msgw_ku64(w, "pid", (uint64_t)s->pid);
		msgw_kstr(w, "device", s->conf->device);
		msgw_kstr(w, "state", slot_state_name(s->state));
		msgw_end(w);
	}
	msgw_end(w);
	msgw_end(w);
}

void view_write_models(struct msgw *w)
{
	const struct config *c = config_running();

	msgw_key(w, "models");
	msgw_array(w);
	for (size_t i = 0; i < c->nmodels; i++)
		write_model(w, c->models[i]);
	msgw_end(w);
}

static void write_device(void *arg, const char *name, const char *label, uint64_t total, uint64_t free_bytes)
{
	struct msgw *w = arg;

	msgw_map(w);
	msgw_kstr(w, "name", name);
	msgw_kstr(w, "kind", strncmp(name, "cuda", 4) == 0 ? "cuda" : "cpu");
	msgw_kstr(w, "label", label);
	msgw_ku64(w, "total_bytes", total);
	msgw_ku64(w, "free_bytes", free_bytes);
	msgw_end(w);
}

void view_write_devices(struct msgw *w)
{
	msgw_key(w, "devices");
	msgw_array(w);
	devices_each(write_device, w);
	msgw_end(w);
}

int view_write(struct msgw *w, const char *name)
{
	msgw_init(w);
	msgw_map(w);
	if (strcmp(name, "status") == 0)
		view_write_status(w, NULL);
	else if (strcmp(name, "models") == 0)
		view_write_models(w);
	else if (strcmp(name, "devices") == 0)
		view_write_devices(w);
	else
		return -1;
	msgw_end(w);
	return 0;
}

