/*
 * ops.c: the client ops of docs/protocol.md.
 *
 * ops_dispatch() checks the envelope (id, op, who may call it) and switches
 * to one function per op. Each op reads its arguments with the typed
 * readers; a missing or wrong-typed argument gets bad_request naming it.
 * Ops that wait (load, unload, restart, infer) become a struct req handed to
 * a slot, whose machine gives the final reply.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "modeld.h"
#include "probe.h"
#include "version.h"


/*
 * Checks a reader's result for key. False when a reply was sent: the
 * argument is of the wrong type, or required and missing.
 */
static bool arg_ok(struct client *c, uint64_t id, int rc, const char *key, bool required,
		   const char *what)
{
	if (rc == MSG_BAD_TYPE) {
		server_reply_error(c, id, E_BAD_REQUEST, "%s must be %s", key, what);
		return false;
	}
	if (rc == MSG_MISSING && required) {
		server_reply_error(c, id, E_BAD_REQUEST, "%s is required (%s)", key, what);
		return false;
	}
	return true;
}

static bool arg_u64(struct client *c, uint64_t id, const msgpack_object *m, const char *key,
		    bool required, uint64_t *out)
{
	return arg_ok(c, id, msg_u64(m, key, out), key, required, "an unsigned integer");
}

static bool arg_bool(struct client *c, uint64_t id, const msgpack_object *m, const char *key,
		     bool *out)
{
	return arg_ok(c, id, msg_bool(m, key, out), key, false, "a boolean");
}

/* An optional string argument; *out stays NULL when it is absent. */
static bool arg_str(struct client *c, uint64_t id, const msgpack_object *m, const char *key,
		    bool required, char **out)
{
	*out = NULL;
	return arg_ok(c, id, msg_strdup(m, key, out), key, required, "a string without NUL bytes");
}

static struct slot_rt *find_slot(struct client *c, uint64_t id, const char *name)
{
	struct slot_rt *rt = slots_find(name);
	if (!rt)
		server_reply_error(c, id, E_UNKNOWN_SLOT, "no slot called %s", name);
	return rt;
}

/* Hands r to the slot's machine as an event of type t. */
static void submit(struct slot_rt *rt, struct req *r, enum slot_event t)
{
	struct slot_ev ev = { .type = t, .req = r, .model = r->model };
	r->slot = &rt->s;
	slot_event(&rt->s, &ev);
}

/* What this server does beyond protocol 1 as first written; hello lists them. */
static const char *const capabilities[] = {
	"text", "chat", "tokenize", "embed", "cancel_partial", "max_frame", "autoload_admin",
};

/* Whether proto is a version, or a non-empty array of versions. */
static bool is_proto(const msgpack_object *proto)
{
	if (proto && proto->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return true;
	if (!proto || proto->type != MSGPACK_OBJECT_ARRAY || proto->via.array.size == 0)
		return false;
	for (uint32_t i = 0; i < proto->via.array.size; i++)
		if (proto->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return false;
	return true;
}

/* Whether the client speaks this server's protocol (proto as is_proto takes it). */
static bool speaks_ours(const msgpack_object *proto)
{
	if (proto->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return proto->via.u64 == PROTO_VERSION;
	for (uint32_t i = 0; i < proto->via.array.size; i++)
		if (proto->via.array.ptr[i].via.u64 == PROTO_VERSION)
			return true;
	return false;
}

static void op_hello(struct client *c, uint64_t id, const msgpack_object *m)
{
	const msgpack_object *proto = msg_get(m, "proto");
	uint64_t max = 0;
	char *client = NULL;
	struct msgw w;

	if (!arg_u64(c, id, m, "max_frame", false, &max) || !arg_str(c, id, m, "client", false, &client))
		return;
	free(client);		/* checked, not kept */
	if (!is_proto(proto)) {
		server_reply_error(c, id, E_BAD_REQUEST, "proto is required: a version, or an array of the "
				   "versions the client speaks (unsigned integers)");
		return;
	}
	if (max && max < CLIENT_MIN_FRAME) {
		server_reply_error(c, id, E_BAD_REQUEST, "max_frame must be at least %u", CLIENT_MIN_FRAME);
		return;
	}
	if (!speaks_ours(proto)) {
		if (proto->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			server_reply_error(c, id, E_UNSUPPORTED_PROTO, "this server speaks protocol %d, not %llu",
					   PROTO_VERSION, (unsigned long long)proto->via.u64);
		else
			server_reply_error(c, id, E_UNSUPPORTED_PROTO, "this server speaks protocol %d, none of "
					   "those given", PROTO_VERSION);
		return;
	}
	if (max)
		server_set_max_frame(c, (size_t)max);
	server_reply_begin(&w, id);
	msgw_ku64(&w, "proto", PROTO_VERSION);
	msgw_kstr(&w, "server", PROTO_SERVER_NAME);
	msgw_kstr(&w, "version", MODELD_VERSION);
	msgw_ku64(&w, "max_frame", md.conf.max_frame);	/* the largest frame this server accepts */
	msgw_key(&w, "capabilities");
	msgw_array(&w);
	for (size_t i = 0; i < sizeof capabilities / sizeof capabilities[0]; i++)
		msgw_str(&w, capabilities[i]);
	msgw_end(&w);
	server_reply_send(c, &w);
}

void ops_write_slot(struct msgw *w, const struct slot_rt *rt)
{
	const struct slot *s = &rt->s;

	msgw_map(w);
	msgw_kstr(w, "name", s->conf->name);
	msgw_kstr(w, "device", s->conf->device);
	slot_write_details(s, w);
	msgw_key(w, "pid");
	if (s->pid)
		msgw_u64(w, (uint64_t)s->pid);
	else
		msgw_nil(w);
	msgw_ku64(w, "since_ms", clock_wall_ms() - (clock_mono_ms() - s->since_ms));
	msgw_ku64(w, "queue", slot_queue_length(s));
	msgw_ku64(w, "active", s->nrunning);
	msgw_ku64(w, "mem_bytes", s->has_worker ? s->mem_bytes : 0);
	msgw_end(w);
}

/* status's result: the slots (only that one, unless NULL). */
static void write_slots(struct msgw *w, const struct slot_rt *only)
{
	msgw_key(w, "slots");
	msgw_array(w);
	for (size_t i = 0; i < md.nslots; i++)
		if (!only || only == &md.slots[i])
			ops_write_slot(w, &md.slots[i]);
	msgw_end(w);
}

static void op_status(struct client *c, uint64_t id, const msgpack_object *m)
{
	struct slot_rt *only = NULL;
	char *name;
	struct msgw w;

	if (!arg_str(c, id, m, "slot", false, &name))
		return;
	if (name && !(only = find_slot(c, id, name))) {
		free(name);
		return;
	}
	free(name);
	server_reply_begin(&w, id);
	write_slots(&w, only);
	server_reply_send(c, &w);
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
	for (size_t i = 0; i < md.nslots; i++) {
		const struct slot *s = &md.slots[i].s;
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

static void write_models(struct msgw *w)
{
	msgw_key(w, "models");
	msgw_array(w);
	for (size_t i = 0; i < md.conf.nmodels; i++)
		write_model(w, md.conf.models[i]);
	msgw_end(w);
}

/* A reply whose results write() adds. */
static void reply_with(struct client *c, uint64_t id, void (*write)(struct msgw *w))
{
	struct msgw w;

	server_reply_begin(&w, id);
	write(&w);
	server_reply_send(c, &w);
}

static void op_models(struct client *c, uint64_t id, const msgpack_object *m)
{
	(void)m;
	reply_with(c, id, write_models);
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

/* A GPU's memory as the workers on it last reported, else as the probe found it. */
static void gpu_memory(const char *dev, uint64_t *total, uint64_t *free_bytes)
{
	for (size_t i = 0; i < md.nslots; i++)
		if (strcmp(md.slots[i].s.conf->device, dev) == 0 && md.slots[i].dev_total) {
			*total = md.slots[i].dev_total;
			*free_bytes = md.slots[i].dev_free;
			return;
		}
}

static bool is_probed(const char *dev)
{
	for (size_t i = 0; i < md.ngpus; i++)
		if (strcmp(md.gpus[i].name, dev) == 0)
			return true;
	return false;
}

void ops_each_device(void (*fn)(void *arg, const char *name, const char *label, uint64_t total,
				uint64_t free_bytes), void *arg)
{
	struct sysinfo si;

	sysinfo(&si);
	fn(arg, "cpu", "host memory", (uint64_t)si.totalram * si.mem_unit,
	   (uint64_t)(si.freeram + si.bufferram) * si.mem_unit);
	for (size_t i = 0; i < md.ngpus; i++) {
		uint64_t total = md.gpus[i].total, free_bytes = md.gpus[i].free;
		gpu_memory(md.gpus[i].name, &total, &free_bytes);
		fn(arg, md.gpus[i].name, md.gpus[i].label, total, free_bytes);
	}
	for (size_t i = 0; i < md.nslots; i++) {
		const char *dev = md.slots[i].s.conf->device;
		bool seen = strcmp(dev, "cpu") == 0 || is_probed(dev);
		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(md.slots[j].s.conf->device, dev) == 0;
		if (!seen)	/* configured, but not found at start */
			fn(arg, dev, NULL, md.slots[i].dev_total, md.slots[i].dev_free);
	}
}

static void write_devices(struct msgw *w)
{
	msgw_key(w, "devices");
	msgw_array(w);
	ops_each_device(write_device, w);
	msgw_end(w);
}

static void op_devices(struct client *c, uint64_t id, const msgpack_object *m)
{
	(void)m;
	reply_with(c, id, write_devices);
}

static void op_jobs(struct client *c, uint64_t id, const msgpack_object *m)
{
	(void)m;
	reply_with(c, id, events_write_jobs);
}

int ops_write_view(struct msgw *w, const char *name)
{
	msgw_init(w);
	msgw_map(w);
	if (strcmp(name, "status") == 0)
		write_slots(w, NULL);
	else if (strcmp(name, "models") == 0)
		write_models(w);
	else if (strcmp(name, "devices") == 0)
		write_devices(w);
	else if (strcmp(name, "jobs") == 0)
		events_write_jobs(w);
	else
		return -1;
	msgw_end(w);
	return 0;
}

/*
 * The slot a request is for: its `slot` argument, else the slot that has
 * its `model` (see slots_for_model). *mod is the model named, or NULL.
 * NULL with the error's code and message in err.
 */
static struct slot_rt *find_target(const msgpack_object *m, bool model_required, const struct model **mod,
				   struct op_error *err)
{
	char *model = NULL, *slot = NULL;
	struct slot_rt *rt = NULL;
	int rc;

	*mod = NULL;
	if ((rc = msg_strdup(m, "model", &model)) == MSG_BAD_TYPE || (rc == MSG_MISSING && model_required))
		ops_error(err, E_BAD_REQUEST, rc == MSG_BAD_TYPE ? "model must be a string without NUL bytes" :
			  "model is required (a string)");
	else if (msg_strdup(m, "slot", &slot) == MSG_BAD_TYPE)
		ops_error(err, E_BAD_REQUEST, "slot must be a string without NUL bytes");
	else if (model && !(*mod = config_model(&md.conf, model)))
		ops_error(err, E_UNKNOWN_MODEL, "no model called %s", model);
	else if (slot && !(rt = slots_find(slot)))
		ops_error(err, E_UNKNOWN_SLOT, "no slot called %s", slot);
	else if (!slot && *mod)
		rt = slots_for_model(*mod);
	else if (!slot)
		ops_error(err, E_BAD_REQUEST, "slot or model is required");
	free(model);
	free(slot);
	return rt;
}

/* find_target for a socket client: NULL when the error was sent. */
static struct slot_rt *target(struct client *c, uint64_t id, const msgpack_object *m,
			      bool model_required, const struct model **mod)
{
	struct op_error err;
	struct slot_rt *rt = find_target(m, model_required, mod, &err);

	if (!rt)
		server_reply_error(c, id, err.code, "%s", err.message);
	return rt;
}

void ops_error(struct op_error *err, enum err code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
}

static bool read_flag(const msgpack_object *m, const char *key, bool *out, struct op_error *err)
{
	if (msg_bool(m, key, out) != MSG_BAD_TYPE)
		return true;
	ops_error(err, E_BAD_REQUEST, "%s must be a boolean", key);
	return false;
}

int ops_submit_admin(struct req *r, const msgpack_object *m, struct op_error *err)
{
	const struct model *mod;
	struct slot_rt *rt;

	r->wait = true;
	if (!read_flag(m, "wait", &r->wait, err) || !read_flag(m, "force", &r->force, err) ||
	    !(rt = find_target(m, r->op == OP_LOAD, &mod, err)))
		return -1;
	if (r->op == OP_UNLOAD && mod && !slot_holds(&rt->s, mod)) {
		ops_error(err, E_NOT_LOADED, "model %s is not loaded in slot %s", mod->name, rt->s.conf->name);
		return -1;
	}
	r->model = r->op == OP_LOAD ? mod : NULL;
	submit(rt, r, r->op == OP_LOAD ? SEV_LOAD : SEV_UNLOAD);
	return 0;
}

/* load and unload: ops_submit_admin's, from the socket. */
static void op_admin(struct client *c, uint64_t id, const msgpack_object *m, enum op op)
{
	struct op_error err;
	struct req *r = server_new_req(c, id, op);

	if (ops_submit_admin(r, m, &err) < 0) {
		server_reply_error(c, id, err.code, "%s", err.message);
		req_discard(r);
	}
}

static void op_load(struct client *c, uint64_t id, const msgpack_object *m)
{
	op_admin(c, id, m, OP_LOAD);
}

static void op_unload(struct client *c, uint64_t id, const msgpack_object *m)
{
	op_admin(c, id, m, OP_UNLOAD);
}

static void op_restart(struct client *c, uint64_t id, const msgpack_object *m)
{
	char *slot = NULL;
	struct slot_rt *rt;

	if (arg_str(c, id, m, "slot", true, &slot) && (rt = find_slot(c, id, slot)) != NULL)
		submit(rt, server_new_req(c, id, OP_RESTART), SEV_RESTART);
	free(slot);
}

/* gpu: "wait" (the default) or "try". */
static bool infer_gpu(struct client *c, uint64_t id, const msgpack_object *m, struct req *r)
{
	const char *v;
	size_t n;
	int rc = msg_str(m, "gpu", &v, &n);

	if (rc == MSG_MISSING)
		return true;
	if (rc == MSG_OK && n == 3 && memcmp(v, "try", 3) == 0)
		r->gpu_try = true;
	else if (rc != MSG_OK || n != 4 || memcmp(v, "wait", 4) != 0) {
		server_reply_error(c, id, E_BAD_REQUEST, "gpu must be \"wait\" or \"try\"");
		return false;
	}
	return true;
}

/* How long a request may wait for its model, and keep it loaded after: within the protocol's limits. */
static bool wait_args(struct client *c, uint64_t id, const msgpack_object *m, struct req *r)
{
	r->wait_ms = INFER_DEFAULT_WAIT_MS;
	if (!arg_u64(c, id, m, "wait_ms", false, &r->wait_ms) ||
	    !arg_u64(c, id, m, "keep_alive_ms", false, &r->keep_alive_ms) || !infer_gpu(c, id, m, r))
		return false;
	if (r->wait_ms > INFER_MAX_WAIT_MS || r->keep_alive_ms > INFER_MAX_WAIT_MS) {
		server_reply_error(c, id, E_BAD_REQUEST, "wait_ms and keep_alive_ms must be at most %u",
				   INFER_MAX_WAIT_MS);
		return false;
	}
	return true;
}

/*
 * infer, tokenize, detokenize and embed: work for a loaded model, queued in
 * its slot like an inference. read_args reads the op's own arguments into r
 * (false once it has replied).
 */
static void submit_work(struct client *c, uint64_t id, const msgpack_object *m, enum op op,
			bool (*read_args)(struct client *, uint64_t, const msgpack_object *, struct req *))
{
	const struct model *mod;
	struct slot_rt *rt;
	struct req *r = server_new_req(c, id, op);

	if (!read_args(c, id, m, r) || !wait_args(c, id, m, r) || !(rt = target(c, id, m, false, &mod))) {
		req_discard(r);		/* its error reply is sent */
		return;
	}
	r->model = mod;
	submit(rt, r, SEV_INFER);
}

static bool infer_args(struct client *c, uint64_t id, const msgpack_object *m, struct req *r)
{
	char err[GEN_ERR_LEN];

	if (gen_read(m, &r->gen, err) == 0)
		return true;
	server_reply_error(c, id, E_BAD_REQUEST, "%s", err);
	return false;
}

static bool tokenize_args(struct client *c, uint64_t id, const msgpack_object *m, struct req *r)
{
	r->parse_special = true;
	if (!arg_str(c, id, m, "text", true, &r->gen.prompt) || !arg_bool(c, id, m, "add_special", &r->add_special) ||
	    !arg_bool(c, id, m, "parse_special", &r->parse_special))
		return false;
	if (strlen(r->gen.prompt) > INFER_MAX_TEXT_BYTES) {
		server_reply_error(c, id, E_BAD_REQUEST, "text is %zu bytes; at most %u", strlen(r->gen.prompt),
				   INFER_MAX_TEXT_BYTES);
		return false;
	}
	return true;
}

static bool detokenize_args(struct client *c, uint64_t id, const msgpack_object *m, struct req *r)
{
	size_t n = 0;

	if (!arg_ok(c, id, msg_u32s(m, "tokens", &r->gen.input, &n), "tokens", true, "an array of token ids"))
		return false;
	if (n > INFER_MAX_INPUT) {
		server_reply_error(c, id, E_BAD_REQUEST, "tokens must hold at most %u ids", INFER_MAX_INPUT);
		return false;
	}
	r->gen.ninput = (uint32_t)n;
	return true;
}

static bool embed_args(struct client *c, uint64_t id, const msgpack_object *m, struct req *r)
{
	char err[96];

	if (req_read_texts(msg_get(m, "texts"), r, "texts", err, sizeof err) == 0)
		return true;
	server_reply_error(c, id, E_BAD_REQUEST, "%s", err);
	return false;
}

static void op_cancel(struct client *c, uint64_t id, const msgpack_object *m)
{
	uint64_t target = 0;
	struct msgw w;

	if (!arg_u64(c, id, m, "target", true, &target))
		return;
	struct req *r = server_find_req(c, target);
	bool found = r && r->slot;
	if (found) {
		struct slot_ev ev = { .type = SEV_CANCEL, .req = r };
		slot_event(r->slot, &ev);
	}
	server_reply_begin(&w, id);
	msgw_kbool(&w, "cancelled", found);
	server_reply_send(c, &w);
}

static void op_subscribe(struct client *c, uint64_t id, const msgpack_object *m)
{
	const msgpack_object_array *a = NULL;
	unsigned mask = (1u << EVK__COUNT) - 1;
	struct msgw w;

	if (!arg_ok(c, id, msg_array(m, "events", &a), "events", false, "an array of event names"))
		return;
	if (a) {
		mask = 0;
		for (uint32_t i = 0; i < a->size; i++) {
			const msgpack_object *o = &a->ptr[i];
			int k = o->type == MSGPACK_OBJECT_STR ?
				proto_event_parse(o->via.str.ptr, o->via.str.size) : -1;
			if (k < 0) {
				server_reply_error(c, id, E_BAD_REQUEST, "events[%u] is not an event name", i);
				return;
			}
			mask |= 1u << k;
		}
	}
	server_subscribe(c, mask);
	server_reply_begin(&w, id);
	server_reply_send(c, &w);
}

static void op_unsubscribe(struct client *c, uint64_t id, const msgpack_object *m)
{
	(void)m;
	struct msgw w;

	server_subscribe(c, 0);
	server_reply_begin(&w, id);
	server_reply_send(c, &w);
}

/* --- what each op answers once its request ends well --- */

static void write_load(struct msgw *w, const struct slot *s, const struct req *r)
{
	msgw_kstr(w, "model", r->model->name);
	if (r->wait) {
		msgw_ku64(w, "load_ms", s->load_ms);
		msgw_ku64(w, "warmup_ms", s->warmup_ms);
	}
	if (r->job)	/* none for a model that was ready already */
		msgw_ku64(w, "job", r->job);
}

/* unload, restart: the state the slot is in; an unload that did work has its job */
static void write_state(struct msgw *w, const struct slot *s, const struct req *r)
{
	msgw_kstr(w, "state", slot_state_name(s->state));
	if (r->job)
		msgw_ku64(w, "job", r->job);
}

/* infer's answer: tokens, text (engines with text), how it ended, usage and timing. */
static void write_infer(struct msgw *w, const struct slot *s, const struct req *r)
{
	uint64_t now = clock_mono_ms();

	msgw_kstr(w, "model", s->model ? s->model->name : NULL);
	msgw_key(w, "tokens");
	msgw_u32s(w, r->tokens, r->ntokens);
	if (r->text) {
		msgw_key(w, "text");
		msgw_strn(w, r->text, r->ntext);
	}
	msgw_kstr(w, "finish_reason", r->finish[0] ? r->finish : NULL);
	msgw_key(w, "usage");
	msgw_map(w);
	msgw_ku64(w, "prompt_tokens", r->prompt_tokens);
	msgw_ku64(w, "completion_tokens", r->ntokens);
	msgw_end(w);
	msgw_ku64(w, "ttft_ms", (r->first_token_ms ? r->first_token_ms : now) - r->started_ms);
	msgw_ku64(w, "ms", now - r->started_ms);
}

static void write_tokens(struct msgw *w, const struct slot *s, const struct req *r)
{
	(void)s;
	msgw_key(w, "tokens");
	msgw_u32s(w, r->tokens, r->ntokens);
}

static void write_text(struct msgw *w, const struct slot *s, const struct req *r)
{
	(void)s;
	msgw_key(w, "text");
	msgw_strn(w, r->text ? r->text : "", r->ntext);
}

static void write_embeddings(struct msgw *w, const struct slot *s, const struct req *r)
{
	msgw_kstr(w, "model", s->model ? s->model->name : NULL);
	msgw_key(w, "embeddings");
	msgw_array(w);
	for (uint32_t i = 0; i < r->count; i++)
		msgw_f32s(w, r->embeddings + (size_t)i * r->dim, r->dim);
	msgw_end(w);
	msgw_key(w, "usage");
	msgw_map(w);
	msgw_ku64(w, "prompt_tokens", r->prompt_tokens);
	msgw_end(w);
}

static void op_infer(struct client *c, uint64_t id, const msgpack_object *m)
{
	submit_work(c, id, m, OP_INFER, infer_args);
}

static void op_tokenize(struct client *c, uint64_t id, const msgpack_object *m)
{
	submit_work(c, id, m, OP_TOKENIZE, tokenize_args);
}

static void op_detokenize(struct client *c, uint64_t id, const msgpack_object *m)
{
	submit_work(c, id, m, OP_DETOKENIZE, detokenize_args);
}

static void op_embed(struct client *c, uint64_t id, const msgpack_object *m)
{
	submit_work(c, id, m, OP_EMBED, embed_args);
}

static void op_reload(struct client *c, uint64_t id, const msgpack_object *m)
{
	(void)m;
	struct reload_counts n;
	char err[CONFIG_ERR_LEN + 64];
	struct msgw w;

	if (reload_run(&n, err, sizeof err) < 0) {
		server_reply_error(c, id, E_BAD_CONFIG, "%s", err);
		return;
	}
	server_reply_begin(&w, id);
	msgw_ku64(&w, "models", md.conf.nmodels);
	msgw_ku64(&w, "added", n.added);
	msgw_ku64(&w, "removed", n.removed);
	msgw_ku64(&w, "changed", n.changed);
	server_reply_send(c, &w);
}

/*
 * Every op: its handler, whether only administrators may call it, whether
 * it is work for a model (refused once modeld shuts down, as admin ops
 * are), and for an op whose request waits in a slot, what its reply holds
 * when it ends well (beside the slot). ops_check, at start, makes sure no
 * op lacks a handler.
 */
static const struct op_entry {
	void (*run)(struct client *c, uint64_t id, const msgpack_object *m);
	bool admin;
	bool work;
	void (*write)(struct msgw *w, const struct slot *s, const struct req *r);
} op_table[OP__COUNT] = {
	[OP_HELLO] = { op_hello, false, false, NULL },
	[OP_STATUS] = { op_status, false, false, NULL },
	[OP_MODELS] = { op_models, false, false, NULL },
	[OP_DEVICES] = { op_devices, false, false, NULL },
	[OP_LOAD] = { op_load, true, false, write_load },
	[OP_UNLOAD] = { op_unload, true, false, write_state },
	[OP_RESTART] = { op_restart, true, false, write_state },
	[OP_INFER] = { op_infer, false, true, write_infer },
	[OP_TOKENIZE] = { op_tokenize, false, true, write_tokens },
	[OP_DETOKENIZE] = { op_detokenize, false, true, write_text },
	[OP_EMBED] = { op_embed, false, true, write_embeddings },
	[OP_CANCEL] = { op_cancel, false, false, NULL },
	[OP_SUBSCRIBE] = { op_subscribe, false, false, NULL },
	[OP_UNSUBSCRIBE] = { op_unsubscribe, false, false, NULL },
	[OP_RELOAD] = { op_reload, true, false, NULL },
	[OP_JOBS] = { op_jobs, false, false, NULL },
};

void ops_write_result(struct msgw *w, const struct slot *s, const struct req *r)
{
	msgw_kstr(w, "slot", s->conf->name);
	op_table[r->op].write(w, s, r);
}

bool ops_is_admin(enum op op)
{
	return op >= 0 && op < OP__COUNT && op_table[op].admin;
}

void ops_check(void)
{
	for (int op = 0; op < OP__COUNT; op++)
		if (!op_table[op].run) {
			log_error("op %s has no handler", proto_op_name((enum op)op));
			abort();
		}
}

void ops_dispatch(struct client *c, const msgpack_object *m)
{
	uint64_t id = 0;
	const char *name;
	size_t len;

	if (msg_u64(m, "id", &id) != MSG_OK || id == 0) {
		server_reply_error(c, 0, E_BAD_REQUEST, "id must be an unsigned integer >= 1");
		return;
	}
	if (server_find_req(c, id)) {
		/* its replies could not be told from the first one's */
		server_reply_error(c, id, E_BAD_REQUEST, "id %llu is still in use by a request not yet answered",
				   (unsigned long long)id);
		return;
	}
	if (msg_str(m, "op", &name, &len) != MSG_OK) {
		server_reply_error(c, id, E_BAD_REQUEST, "op is required (a string)");
		return;
	}
	enum op op = proto_op_parse(name, len);
	if (op == OP_UNKNOWN) {
		server_reply_error(c, id, E_UNKNOWN_OP, "no op called %.*s", (int)(len > 64 ? 64 : len), name);
		return;
	}
	const struct op_entry *e = &op_table[op];
	if (e->admin && !server_is_admin(c)) {
		server_reply_error(c, id, E_UNAUTHORIZED, "%s is for administrators", proto_op_name(op));
		return;
	}
	if (md.shutting_down && (e->admin || e->work)) {
		server_reply_error(c, id, E_SHUTTING_DOWN, "modeld is shutting down");
		return;
	}
	e->run(c, id, m);
}
