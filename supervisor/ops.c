/*
 * ops.c: the socket protocol of docs/protocol.md (ops.h).
 *
 * ops_dispatch() checks the envelope (id, op, who may call it) and switches
 * to one function per op. Ops that wait for a slot (load, unload, restart,
 * and the work for a model) are read by req_read into a request, the same
 * shape HTTP reads its bodies into, and handed to the core; the final reply
 * comes through the socket's sink here, which writes each op's results.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "core.h"
#include "events.h"
#include "ops.h"
#include "server.h"
#include "version.h"
#include "view.h"

static ops_reload_fn reload;


/*
 * Checks a keyed reader's result for key. False when a reply was sent: the
 * argument is of the wrong type.
 */
static bool arg_ok(struct client *c, uint64_t id, int rc, const char *key, const char *what)
{
	if (rc != MSG_BAD_TYPE)
		return true;
	server_reply_error(c, id, E_BAD_REQUEST, "%s must be %s", key, what);
	return false;
}

/* --- the socket client as the sink of its requests (req.h) --- */

static void client_finish(struct req *r, const struct slot *s, enum err code, const char *message)
{
	struct msgw w;

	if (code != E_NONE) {
		server_reply_error(r->asker, r->id, code, "%s", message ? message : proto_err_name(code));
		return;
	}
	server_reply_begin(&w, r->id);
	ops_write_result(&w, s, r);
	server_reply_send(r->asker, &w);
}

static void client_chunk(struct req *r, const struct work_out *o)
{
	struct msgw w;

	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "id", r->id);
	msgw_key(&w, "chunk");
	msgw_map(&w);
	msgw_key(&w, "tokens");
	msgw_u32s(&w, o->tokens, o->ntokens);
	if (o->text) {
		msgw_key(&w, "text");
		msgw_strn(&w, o->text, o->ntext);
	}
	msgw_end(&w);
	msgw_end(&w);
	server_send(r->asker, &w);
	msgw_free(&w);
}

static void client_forget(struct req *r)
{
	server_untrack(r->asker, r);
	r->asker = NULL;
}

static const struct req_sink client_sink = { client_finish, client_chunk, client_forget };

/* A request of c's under id, tracked until its reply. */
static struct req *new_req(struct client *c, uint64_t id, enum op op)
{
	struct req *r = req_new(&client_sink, c, id, op, clock_mono_ms());

	r->admin = server_is_admin(c);
	server_track(c, r);
	return r;
}

/* load, unload, restart, and work for a model: read as every face reads it, handed to the core. */
static void op_submit(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	static const struct req_read_opts socket_opts = { INFER_DEFAULT_WAIT_MS, "texts" };
	struct req_error err;
	struct req *r = new_req(c, id, op);

	if (req_read(r, arg_msgpack(m), &socket_opts, &err) < 0 || core_submit(r, &err) < 0) {
		server_reply_error(c, id, err.code, "%s", err.message);
		req_discard(r);
	}
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

static void op_hello(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op;
	const msgpack_object *proto = msg_get(m, "proto");
	uint64_t max = 0;
	char *client = NULL;
	struct msgw w;

	if (!arg_ok(c, id, msg_u64(m, "max_frame", &max), "max_frame", "an unsigned integer") ||
	    !arg_ok(c, id, msg_strdup(m, "client", &client), "client", "a string without NUL bytes"))
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
	msgw_ku64(&w, "max_frame", config_running()->max_frame);	/* the largest frame this server accepts */
	msgw_key(&w, "capabilities");
	msgw_array(&w);
	for (size_t i = 0; i < sizeof capabilities / sizeof capabilities[0]; i++)
		msgw_str(&w, capabilities[i]);
	msgw_end(&w);
	server_reply_send(c, &w);
}

static void op_status(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	const struct slot *only = NULL;
	char *name = NULL;
	struct msgw w;

	(void)op;
	if (!arg_ok(c, id, msg_strdup(m, "slot", &name), "slot", "a string without NUL bytes"))
		return;
	if (name && !(only = core_find(name))) {
		server_reply_error(c, id, E_UNKNOWN_SLOT, "no slot called %s", name);
		free(name);
		return;
	}
	free(name);
	server_reply_begin(&w, id);
	view_write_status(&w, only);
	server_reply_send(c, &w);
}

/* A reply whose results write() adds. */
static void reply_with(struct client *c, uint64_t id, void (*write)(struct msgw *w))
{
	struct msgw w;

	server_reply_begin(&w, id);
	write(&w);
	server_reply_send(c, &w);
}

static void op_models(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op; (void)m;
	reply_with(c, id, view_write_models);
}

static void op_devices(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op; (void)m;
	reply_with(c, id, view_write_devices);
}

static void op_jobs(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op; (void)m;
	reply_with(c, id, events_write_jobs);
}

static void op_cancel(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	uint64_t target = 0;
	int rc = msg_u64(m, "target", &target);
	struct msgw w;

	(void)op;
	if (rc != MSG_OK) {
		server_reply_error(c, id, E_BAD_REQUEST, rc == MSG_MISSING ? "target is required (an unsigned integer)" :
				   "target must be an unsigned integer");
		return;
	}
	struct req *r = server_find_req(c, target);
	bool found = r && r->slot;
	if (found)
		core_cancel(r, false);
	server_reply_begin(&w, id);
	msgw_kbool(&w, "cancelled", found);
	server_reply_send(c, &w);
}

static void op_subscribe(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op;
	const msgpack_object_array *a = NULL;
	unsigned mask = (1u << EVK__COUNT) - 1;
	struct msgw w;

	if (!arg_ok(c, id, msg_array(m, "events", &a), "events", "an array of event names"))
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

static void op_unsubscribe(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op;
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

static void op_reload(struct client *c, uint64_t id, enum op op, const msgpack_object *m)
{
	(void)op; (void)m;
	struct config_changes n;
	char err[CONFIG_ERR_LEN + 64];
	struct msgw w;

	if (reload(&n, err, sizeof err) < 0) {
		server_reply_error(c, id, E_BAD_CONFIG, "%s", err);
		return;
	}
	server_reply_begin(&w, id);
	msgw_ku64(&w, "models", config_running()->nmodels);
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
	void (*run)(struct client *c, uint64_t id, enum op op, const msgpack_object *m);
	bool admin;
	bool work;
	void (*write)(struct msgw *w, const struct slot *s, const struct req *r);
} op_table[OP__COUNT] = {
	[OP_HELLO] = { op_hello, false, false, NULL },
	[OP_STATUS] = { op_status, false, false, NULL },
	[OP_MODELS] = { op_models, false, false, NULL },
	[OP_DEVICES] = { op_devices, false, false, NULL },
	[OP_LOAD] = { op_submit, true, false, write_load },
	[OP_UNLOAD] = { op_submit, true, false, write_state },
	[OP_RESTART] = { op_submit, true, false, write_state },
	[OP_INFER] = { op_submit, false, true, write_infer },
	[OP_TOKENIZE] = { op_submit, false, true, write_tokens },
	[OP_DETOKENIZE] = { op_submit, false, true, write_text },
	[OP_EMBED] = { op_submit, false, true, write_embeddings },
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

void ops_init(ops_reload_fn fn)
{
	reload = fn;
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
	if (core_shutting_down() && (e->admin || e->work)) {
		server_reply_error(c, id, E_SHUTTING_DOWN, "modeld is shutting down");
		return;
	}
	e->run(c, id, op, m);
}
