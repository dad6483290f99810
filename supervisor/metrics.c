/*
 * metrics.c: modeld's numbers in Prometheus' text format (GET /metrics).
 *
 * What only an observation can give (durations, requests and their
 * outcomes, tokens) is counted here as it happens: loads and warmups when a
 * slot reaches ready, requests when their one final reply goes. What the
 * rest of modeld holds anyway (states, queues, worker deaths, device
 * memory, clients) is read at the scrape. Names follow Prometheus'
 * conventions: the modeld_ prefix, base units, _total for counters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "../proto/clock.h"
#include "core.h"
#include "devices.h"
#include "metrics.h"
#include "server.h"

/* Seconds: loads and warmups take seconds to minutes; requests, ms to minutes. */
static const double load_bounds[] = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 };
static const double request_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 };
#define MAX_BOUNDS 16

struct histogram {
	const double *bounds;
	size_t nbounds;
	uint64_t counts[MAX_BOUNDS];	/* per bucket, not cumulative */
	uint64_t count;
	double sum;
};

/* Requests that ended, by op, model and outcome (an error name, or "ok"). */
struct outcome {
	enum op op;
	const struct model *model;	/* NULL: none (or one a reload retired) */
	enum err code;
	uint64_t count;
};

struct slot_metrics {
	enum slot_state last;	/* the state this module last saw */
	struct histogram load, warmup;
};

struct model_metrics {
	struct histogram ttft, latency;
	uint64_t tokens;
};

static struct slot_metrics *slots;
static struct model_metrics *models;
static struct outcome *outcomes;
static size_t noutcomes, outcomes_cap;

static void histogram_init(struct histogram *h, const double *bounds, size_t n)
{
	h->bounds = bounds;
	h->nbounds = n;
}

static void observe(struct histogram *h, double v)
{
	size_t i = 0;

	while (i < h->nbounds && v > h->bounds[i])
		i++;
	if (i < h->nbounds)
		h->counts[i]++;
	h->count++;
	h->sum += v;
}

static void model_metrics_init(struct model_metrics *m)
{
	memset(m, 0, sizeof *m);
	histogram_init(&m->ttft, request_bounds, sizeof request_bounds / sizeof request_bounds[0]);
	histogram_init(&m->latency, request_bounds, sizeof request_bounds / sizeof request_bounds[0]);
}

void metrics_init(void)
{
	slots = calloc(core_nslots() + 1, sizeof *slots);
	models = calloc(config_running()->nmodels + 1, sizeof *models);
	if (!slots || !models)
		abort();
	for (size_t i = 0; i < core_nslots(); i++) {
		histogram_init(&slots[i].load, load_bounds, sizeof load_bounds / sizeof load_bounds[0]);
		histogram_init(&slots[i].warmup, load_bounds, sizeof load_bounds / sizeof load_bounds[0]);
	}
	for (size_t i = 0; i < config_running()->nmodels; i++)
		model_metrics_init(&models[i]);
}

void metrics_models_changed(struct model *const *old, size_t nold)
{
	const struct config *c = config_running();
	struct model_metrics *now = calloc(c->nmodels + 1, sizeof *now);
	size_t kept = 0;

	if (!now)
		abort();
	for (size_t i = 0; i < c->nmodels; i++) {
		size_t j = 0;
		while (j < nold && old[j] != c->models[i])
			j++;
		if (j < nold)
			now[i] = models[j];	/* the same model: its numbers go on */
		else
			model_metrics_init(&now[i]);
	}
	free(models);
	models = now;
	for (size_t i = 0; i < noutcomes; i++)
		if (!outcomes[i].model || !outcomes[i].model->retired)
			outcomes[kept++] = outcomes[i];
	noutcomes = kept;
}

void metrics_free(void)
{
	free(slots);
	free(models);
	free(outcomes);
	slots = NULL;
	models = NULL;
	outcomes = NULL;
	noutcomes = outcomes_cap = 0;
}

/* A slot's state was published: a load that reached ready is timed. */
static void on_state(const struct slot *s)
{
	struct slot_metrics *m = &slots[core_index(s)];

	if (s->state == SS_READY && (m->last == SS_LOADING || m->last == SS_WARMING)) {
		observe(&m->load, (double)s->load_ms / 1000);
		if (m->last == SS_WARMING)
			observe(&m->warmup, (double)s->warmup_ms / 1000);
	}
	m->last = s->state;
}

static void count_outcome(enum op op, const struct model *model, enum err code)
{
	for (size_t i = 0; i < noutcomes; i++)
		if (outcomes[i].op == op && outcomes[i].model == model && outcomes[i].code == code) {
			outcomes[i].count++;
			return;
		}
	if (noutcomes == outcomes_cap) {
		outcomes_cap = outcomes_cap ? outcomes_cap * 2 : 32;
		outcomes = realloc(outcomes, outcomes_cap * sizeof *outcomes);
		if (!outcomes)
			abort();
	}
	outcomes[noutcomes++] = (struct outcome){ op, model, code, 1 };
}

/* r ends with code. */
static void on_request_done(const struct req *r, enum err code)
{
	const struct model *mod = r->model && !r->model->retired ? r->model : NULL;

	count_outcome(r->op, mod, code);
	if (!mod || r->op != OP_INFER)
		return;
	struct model_metrics *m = &models[mod->index];
	m->tokens += r->ntokens;
	if (code != E_NONE)
		return;
	observe(&m->latency, (double)(clock_mono_ms() - r->started_ms) / 1000);
	if (r->first_token_ms)
		observe(&m->ttft, (double)(r->first_token_ms - r->started_ms) / 1000);
}

/* --- the text format --- */

/* A label value, escaped as the format wants (backslash, quote, newline). */
static void put_label(struct evbuffer *out, const char *name, const char *value)
{
	evbuffer_add_printf(out, "%s=\"", name);
	for (const char *p = value ? value : ""; *p; p++)
		if (*p == '\\' || *p == '"')
			evbuffer_add_printf(out, "\\%c", *p);
		else if (*p == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, p, 1);
	evbuffer_add(out, "\"", 1);
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"[,label2="value2"]} */
static void sample_start(struct evbuffer *out, const char *name, const char *l1, const char *v1,
			 const char *l2, const char *v2)
{
	evbuffer_add_printf(out, "%s{", name);
	put_label(out, l1, v1);
	if (l2) {
		evbuffer_add(out, ",", 1);
		put_label(out, l2, v2);
	}
}

static void sample(struct evbuffer *out, const char *name, const char *l1, const char *v1, const char *l2,
		   const char *v2, double value)
{
	sample_start(out, name, l1, v1, l2, v2);
	evbuffer_add_printf(out, "} %.17g\n", value);
}

static void histogram_write(struct evbuffer *out, const char *name, const char *label, const char *value,
			    const struct histogram *h)
{
	char bucket[96], le[32];
	uint64_t cumulative = 0;

	snprintf(bucket, sizeof bucket, "%s_bucket", name);
	for (size_t i = 0; i < h->nbounds; i++) {
		cumulative += h->counts[i];
		snprintf(le, sizeof le, "%g", h->bounds[i]);
		sample(out, bucket, label, value, "le", le, (double)cumulative);
	}
	sample(out, bucket, label, value, "le", "+Inf", (double)h->count);
	evbuffer_add_printf(out, "%s_sum{", name);
	put_label(out, label, value);
	evbuffer_add_printf(out, "} %.17g\n%s_count{", h->sum, name);
	put_label(out, label, value);
	evbuffer_add_printf(out, "} %llu\n", (unsigned long long)h->count);
}

static void write_slots(struct evbuffer *out)
{
	family(out, "modeld_slot_state", "gauge", "1 for the state each slot is in, 0 for the others.");
	for (size_t i = 0; i < core_nslots(); i++)
		for (int st = 0; st < SS__COUNT; st++)
			sample(out, "modeld_slot_state", "slot", core_slot(i)->conf->name, "state",
			       slot_state_name((enum slot_state)st), core_slot(i)->state == (enum slot_state)st);
	family(out, "modeld_model_loaded", "gauge", "1 when the model is ready in the slot.");
	for (size_t i = 0; i < core_nslots(); i++) {
		const struct slot *s = core_slot(i);
		if (s->model)
			sample(out, "modeld_model_loaded", "slot", s->conf->name, "model", s->model->name,
			       s->state == SS_READY);
	}
	family(out, "modeld_queue_depth", "gauge", "Inference requests waiting for the slot's worker.");
	for (size_t i = 0; i < core_nslots(); i++)
		sample(out, "modeld_queue_depth", "slot", core_slot(i)->conf->name, NULL, NULL,
		       slot_queue_length(core_slot(i)));
	family(out, "modeld_requests_running", "gauge", "Requests the slot's worker runs, up to its model's parallel.");
	for (size_t i = 0; i < core_nslots(); i++)
		sample(out, "modeld_requests_running", "slot", core_slot(i)->conf->name, NULL, NULL,
		       core_slot(i)->nrunning);
	family(out, "modeld_load_duration_seconds", "histogram", "From a worker's start to weights loaded.");
	for (size_t i = 0; i < core_nslots(); i++)
		histogram_write(out, "modeld_load_duration_seconds", "slot", core_slot(i)->conf->name,
				&slots[i].load);
	family(out, "modeld_warmup_duration_seconds", "histogram", "A loaded model's warmup.");
	for (size_t i = 0; i < core_nslots(); i++)
		histogram_write(out, "modeld_warmup_duration_seconds", "slot", core_slot(i)->conf->name,
				&slots[i].warmup);
}

static void write_workers(struct evbuffer *out)
{
	family(out, "modeld_worker_deaths_total", "counter", "Workers that ended unasked, by cause.");
	for (size_t i = 0; i < core_nslots(); i++)
		for (int d = 0; d < WD__COUNT; d++)
			sample(out, "modeld_worker_deaths_total", "slot", core_slot(i)->conf->name, "cause",
			       slot_death_name((enum worker_death)d), (double)core_slot(i)->deaths_by[d]);
	family(out, "modeld_worker_restarts_total", "counter", "Workers started again after a death.");
	for (size_t i = 0; i < core_nslots(); i++)
		sample(out, "modeld_worker_restarts_total", "slot", core_slot(i)->conf->name, NULL, NULL,
		       (double)core_slot(i)->restarts);
}

static const char *model_label(const struct model *m)
{
	return m ? m->name : "";
}

static void write_requests(struct evbuffer *out)
{
	family(out, "modeld_requests_total", "counter",
	       "Requests for a model that ended, by op, model and outcome (ok, or the error).");
	for (size_t i = 0; i < noutcomes; i++) {
		const struct outcome *o = &outcomes[i];
		sample_start(out, "modeld_requests_total", "op", proto_op_name(o->op), "model", model_label(o->model));
		evbuffer_add(out, ",", 1);
		put_label(out, "outcome", o->code == E_NONE ? "ok" : proto_err_name(o->code));
		evbuffer_add_printf(out, "} %llu\n", (unsigned long long)o->count);
	}
	family(out, "modeld_generated_tokens_total", "counter", "Tokens generated, by model.");
	for (size_t i = 0; i < config_running()->nmodels; i++)
		sample(out, "modeld_generated_tokens_total", "model", model_label(config_running()->models[i]), NULL, NULL,
		       (double)models[i].tokens);
	family(out, "modeld_time_to_first_token_seconds", "histogram", "From an inference's arrival to its first token.");
	for (size_t i = 0; i < config_running()->nmodels; i++)
		histogram_write(out, "modeld_time_to_first_token_seconds", "model", model_label(config_running()->models[i]), &models[i].ttft);
	family(out, "modeld_request_duration_seconds", "histogram", "From an inference's arrival to its last reply.");
	for (size_t i = 0; i < config_running()->nmodels; i++)
		histogram_write(out, "modeld_request_duration_seconds", "model", model_label(config_running()->models[i]), &models[i].latency);
}

/* The device memory families, one at a time as the format wants. */
static const struct {
	const char *name, *help;
} memory_families[] = {
	{ "modeld_device_memory_total_bytes", "A device's memory." },
	{ "modeld_device_memory_free_bytes", "A device's free memory, as last reported." },
	{ "modeld_device_memory_used_bytes", "A device's memory in use." },
};

struct memory_writer {
	struct evbuffer *out;
	size_t family;	/* of memory_families */
};

static void device_memory(void *arg, const char *name, const char *label, uint64_t total, uint64_t free_bytes)
{
	(void)label;
	const struct memory_writer *mw = arg;
	const uint64_t values[] = { total, free_bytes, total > free_bytes ? total - free_bytes : 0 };

	sample(mw->out, memory_families[mw->family].name, "device", name, NULL, NULL, (double)values[mw->family]);
}

static void write_host(struct evbuffer *out)
{
	for (size_t k = 0; k < sizeof memory_families / sizeof memory_families[0]; k++) {
		struct memory_writer mw = { out, k };
		family(out, memory_families[k].name, "gauge", memory_families[k].help);
		devices_each(device_memory, &mw);
	}
	family(out, "modeld_clients", "gauge", "Clients connected to the control socket.");
	evbuffer_add_printf(out, "modeld_clients %u\n", server_client_count());
	family(out, "modeld_clients_dropped_total", "counter", "Clients dropped for leaving events unread.");
	evbuffer_add_printf(out, "modeld_clients_dropped_total %llu\n",
			    (unsigned long long)server_dropped_count());
}

void metrics_write(struct evbuffer *out)
{
	write_slots(out);
	write_workers(out);
	write_requests(out);
	write_host(out);
}

const struct watch metrics_watch = { .state = on_state, .request_done = on_request_done };
