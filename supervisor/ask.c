/*
 * ask.c: HTTP exchanges that wait for a request of modeld's (ask.h):
 * OpenAI's completions, chat completions and embeddings, and modeld's own
 * load and unload. The body is read into the same request as the socket's
 * (httpreq.c, req_read), handed to the core, and answered in OpenAI's
 * shapes (or, for load and unload, the socket's result as JSON) by this
 * request's sink, whole or streamed as server-sent events. A client that
 * goes away cancels its request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "../proto/clock.h"
#include "../proto/jw.h"
#include "../proto/log.h"
#include "ask.h"
#include "core.h"
#include "httpio.h"
#include "httpreq.h"
#include "ops.h"

/* An HTTP exchange that waits for its inference. */
struct ask {
	struct evhttp_request *er;	/* NULL once its last reply is sent or the client went away */
	struct event *hangup;		/* the client's socket, watched for its end until the last reply */
	bool native;			/* load or unload: modeld's own answer, as JSON */
	bool embeddings, chat, stream, include_usage, started;
	bool said_role;			/* a chat stream's first delta says who speaks */
	bool said_token;		/* a model without a tokenizer: a token id was written as text */
	size_t overrun;			/* a stream cancelled for this many bytes left unread; 0: none */
	bool base64;			/* embeddings as base64 of little-endian float32, as OpenAI's */
	uint32_t dimensions;		/* embeddings: the length asked for; 0: the model's */
	char id[32];
	uint64_t created;
};

static const char *finish_reason(const struct req *r)
{
	return r->finish[0] ? r->finish : "stop";
}

/* OpenAI's envelope of a completion, open at its choices. */
static void envelope_open(struct jw *w, const struct ask *a, const struct req *r)
{
	jw_obj(w);
	jw_kstr(w, "id", a->id);
	jw_kstr(w, "object", a->chat ? (a->stream ? "chat.completion.chunk" : "chat.completion") : "text_completion");
	jw_ku64(w, "created", a->created);
	jw_kstr(w, "model", r->model ? r->model->name : "");
	jw_key(w, "choices");
	jw_arr(w);
}

/* What a piece of a completion carries: a choice (text or tokens, reason), the usage, or both. */
struct part {
	bool choice, usage;
	const char *text;		/* NULL: the model has no text; its tokens stand for it */
	size_t n;
	const uint32_t *tokens;
	uint32_t ntokens;
	const char *reason;
};

/*
 * The text of a model without a tokenizer: its token ids in decimal,
 * separated by spaces across a stream's pieces too (malloc'd, *n bytes).
 */
static char *ids_text(struct ask *a, const struct part *p, size_t *n)
{
	char *text = malloc((size_t)p->ntokens * sizeof " 4294967295" + 1);

	if (!text)
		abort();
	*n = 0;
	for (uint32_t i = 0; i < p->ntokens; i++) {
		*n += (size_t)sprintf(text + *n, &" %u"[!a->said_token], p->tokens[i]);
		a->said_token = true;
	}
	return text;
}

/* One choice: the whole text, or (streamed) a piece of it; reason NULL until the end. */
static void write_choice(struct jw *w, struct ask *a, const struct part *p)
{
	size_t n = p->n;
	char *ids = p->text ? NULL : ids_text(a, p, &n);
	const char *text = p->text ? p->text : ids;

	jw_obj(w);
	jw_ku64(w, "index", 0);
	jw_kstr(w, "finish_reason", p->reason);
	if (!a->chat) {
		jw_key(w, "text");
		jw_strn(w, text, n);
	} else {
		jw_key(w, a->stream ? "delta" : "message");
		jw_obj(w);
		if (!a->stream || !a->said_role)
			jw_kstr(w, "role", "assistant");
		a->said_role = a->stream;
		jw_key(w, "content");
		jw_strn(w, text, n);
		jw_end(w);
	}
	if (ids) {
		jw_key(w, "tokens");
		jw_arr(w);
		for (uint32_t i = 0; i < p->ntokens; i++)
			jw_u64(w, p->tokens[i]);
		jw_end(w);
	}
	free(ids);
	jw_end(w);
}

/* A completion, whole or one event of a stream, into w (made here). */
static void write_completion(struct jw *w, struct ask *a, const struct req *r, const struct part *p)
{
	jw_init(w);
	envelope_open(w, a, r);
	if (p->choice)
		write_choice(w, a, p);
	jw_end(w);
	if (p->usage) {
		jw_key(w, "usage");
		jw_obj(w);
		jw_ku64(w, "prompt_tokens", r->prompt_tokens);
		jw_ku64(w, "completion_tokens", r->ntokens);
		jw_ku64(w, "total_tokens", (uint64_t)r->prompt_tokens + r->ntokens);
		jw_end(w);
	}
	jw_end(w);
}

/* n floats as base64 of their little-endian float32 bytes, as OpenAI's encoding_format base64. */
static json_t *base64_floats(const float *v, size_t n)
{
	static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t nbytes = n * 4, len = 0;
	unsigned char *bytes = malloc(nbytes + 1);
	char *text = malloc((nbytes + 2) / 3 * 4 + 1);

	if (!bytes || !text)
		abort();
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &v[i], sizeof u);
		for (int b = 0; b < 4; b++)
			bytes[i * 4 + b] = (unsigned char)(u >> (8 * b));
	}
	for (size_t i = 0; i < nbytes; i += 3) {
		uint32_t x = (uint32_t)bytes[i] << 16 | (i + 1 < nbytes ? (uint32_t)bytes[i + 1] << 8 : 0) |
			     (i + 2 < nbytes ? bytes[i + 2] : 0);
		text[len++] = digits[x >> 18];
		text[len++] = digits[(x >> 12) & 63];
		text[len++] = i + 1 < nbytes ? digits[(x >> 6) & 63] : '=';
		text[len++] = i + 2 < nbytes ? digits[x & 63] : '=';
	}
	json_t *j = json_stringn(text, len);
	free(bytes);
	free(text);
	return j;
}

/* embed's answer, as OpenAI's: a list of vectors, each with its index, as floats or base64. */
static json_t *embeddings(const struct ask *a, const struct req *r)
{
	json_t *data = json_array();

	for (uint32_t i = 0; i < r->count; i++) {
		const float *vec = r->embeddings + (size_t)i * r->dim;
		json_t *v = a->base64 ? base64_floats(vec, r->dim) : json_array();
		for (uint32_t j = 0; !a->base64 && j < r->dim; j++)
			json_array_append_new(v, json_real(vec[j]));
		json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index", (json_int_t)i,
						      "embedding", v));
	}
	return json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data", data, "model",
			 r->model ? r->model->name : "", "usage", "prompt_tokens", (json_int_t)r->prompt_tokens,
			 "total_tokens", (json_int_t)r->prompt_tokens);
}

/* One server-sent event. */
static void send_data(struct ask *a, const char *data, size_t n)
{
	struct evbuffer *out = evbuffer_new();

	evbuffer_add(out, "data: ", 6);
	evbuffer_add(out, data, n);
	evbuffer_add(out, "\n\n", 2);
	evhttp_send_reply_chunk(a->er, out);
	evbuffer_free(out);
}

/* One server-sent event of the JSON of w (freed). */
static void send_event(struct ask *a, struct jw *w)
{
	send_data(a, w->buf, w->len);
	jw_free(w);
}

static void start_stream(struct ask *a)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(a->er);

	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_send_reply_start(a->er, HTTP_OK, "OK");
	httpio_bound_send_buffer(a->er);
	a->started = true;
}

/*
 * The exchange, for its last reply: evhttp frees it once that is written,
 * so the close callback goes and the ask lets go of it first.
 */
static struct evhttp_request *last_reply(struct ask *a)
{
	struct evhttp_request *er = a->er;
	struct evhttp_connection *conn = evhttp_request_get_connection(er);

	if (conn)	/* none when its close callback runs */
		evhttp_connection_set_closecb(conn, NULL, NULL);
	if (a->hangup)
		event_free(a->hangup);
	a->hangup = NULL;
	a->er = NULL;
	return er;
}

static void ask_free(struct ask *a)
{
	if (a->er)
		last_reply(a);
	free(a);
}

/* A stream's last events: how it ended (and the usage, if asked), or the error; then [DONE]. */
static void end_stream(struct ask *a, const struct req *r, enum err code, const char *message)
{
	struct jw w;

	if (!a->started)
		start_stream(a);
	if (code == E_NONE) {
		write_completion(&w, a, r, &(struct part){ .choice = true, .text = "", .reason = finish_reason(r) });
		send_event(a, &w);
		if (a->include_usage) {
			write_completion(&w, a, r, &(struct part){ .usage = true });
			send_event(a, &w);
		}
	} else {
		jw_init(&w);
		jw_obj(&w);
		jw_key(&w, "error");
		jw_obj(&w);
		jw_kstr(&w, "code", proto_err_name(code));
		jw_kstr(&w, "message", message ? message : "");
		jw_end(&w);
		jw_end(&w);
		send_event(a, &w);
	}
	send_data(a, "[DONE]", 6);
	evhttp_send_reply_end(last_reply(a));
}

/* What the socket would have answered, as JSON. */
static json_t *result_json(const struct slot *s, const struct req *r)
{
	struct msgw w;

	msgw_init(&w);
	msgw_map(&w);
	ops_write_result(&w, s, r);
	msgw_end(&w);
	return httpio_frame_json(&w);
}

static void ask_finish(struct req *r, const struct slot *s, enum err code, const char *message)
{
	struct ask *a = r->asker;
	const char *type;

	if (a->overrun) {
		char why[96];
		snprintf(why, sizeof why, "the client left %zu bytes of its stream unread", a->overrun);
		end_stream(a, r, E_BUSY, why);
		return;
	}
	if (a->stream && (code == E_NONE || a->started)) {
		end_stream(a, r, code, message);
		return;
	}
	if (code != E_NONE) {
		struct evhttp_request *er = last_reply(a);
		int status = httpio_status_of(code, &type);
		if (status == 503)
			evhttp_add_header(evhttp_request_get_output_headers(er), "Retry-After", "1");
		httpio_error(er, status, type, proto_err_name(code), message ? message : proto_err_name(code));
	} else if (a->native) {
		httpio_json(last_reply(a), HTTP_OK, result_json(s, r));
	} else if (a->embeddings && a->dimensions && a->dimensions != r->dim) {
		char why[128];
		snprintf(why, sizeof why, "dimensions: model %s gives embeddings of %u dimensions, not %u",
			 r->model ? r->model->name : "", r->dim, a->dimensions);
		httpio_error(last_reply(a), 400, "invalid_request_error", "bad_request", why);
	} else if (a->embeddings) {
		httpio_json(last_reply(a), HTTP_OK, embeddings(a, r));
	} else {
		struct jw w;
		write_completion(&w, a, r, &(struct part){ .choice = true, .usage = true, .text = r->text, .n = r->ntext,
							   .tokens = r->tokens, .ntokens = r->ntokens,
							   .reason = finish_reason(r) });
		httpio_jw(last_reply(a), HTTP_OK, &w);
	}
}


/*
 * A piece of a stream. A client that leaves HTTP_STREAM_MAX_OWED unread has
 * its request cancelled: what it owes stays bounded, and its stream ends
 * with an error event once it reads that far.
 */
static void ask_chunk(struct req *r, const struct work_out *o)
{
	struct ask *a = r->asker;
	struct jw w;

	if (a->overrun)
		return;
	if (!a->started)
		start_stream(a);
	if (httpio_owed(a->er) > HTTP_STREAM_MAX_OWED) {
		a->overrun = httpio_owed(a->er);
		log_warn("http: a stream left %zu bytes unread; its request is cancelled", a->overrun);
		core_cancel(r, false);
		return;
	}
	write_completion(&w, a, r, &(struct part){ .choice = true, .text = o->text, .n = o->ntext, .tokens = o->tokens,
						   .ntokens = o->ntokens });
	send_event(a, &w);
}

static void ask_forget(struct req *r)
{
	ask_free(r->asker);
	r->asker = NULL;
}

static const struct req_sink ask_sink = { ask_finish, ask_chunk, ask_forget };

/* The client of r went away: its exchange ends, and r is cancelled (a load or unload goes on, as on the socket). */
static void ask_abandoned(struct req *r)
{
	struct ask *a = r->asker;
	bool started = a->started;
	struct evhttp_request *er = last_reply(a);

	if (started)
		evhttp_send_reply_end(er);
	else
		evhttp_send_reply(er, 499, "Client Closed Request", NULL);
	core_cancel(r, true);
}

static void ask_closed(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	ask_abandoned(arg);
}

/*
 * The client's socket became readable while its answer is made: evhttp
 * reads nothing then, so an end of stream here is the only word that the
 * client left. Bytes instead (a pipelined request) end the watch.
 */
static void ask_hangup_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct req *r = arg;
	struct ask *a = r->asker;
	char byte;
	ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		ask_abandoned(r);
	else if (n < 0)		/* woken for nothing */
		event_add(a->hangup, NULL);
}

static struct ask *ask_new(struct evhttp_request *er)
{
	struct ask *a = calloc(1, sizeof *a);

	if (!a)
		abort();
	a->er = er;
	a->created = clock_wall_ms() / 1000;
	return a;
}

/* Answers a, whose request was refused, with err. */
static void refuse(struct ask *a, const struct req_error *err)
{
	const char *type;
	int status = httpio_status_of(err->code, &type);

	httpio_error(last_reply(a), status, type, proto_err_name(err->code), err->message);
}

/*
 * r, made for the exchange a, goes to the core; a client that goes away
 * from now on cancels it. Refused, a is answered and r freed.
 */
static void ask_submit(struct ask *a, struct req *r)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(a->er);
	struct req_error err;

	evhttp_connection_set_closecb(conn, ask_closed, r);
	a->hangup = event_new(evhttp_connection_get_base(conn), bufferevent_getfd(evhttp_connection_get_bufferevent(conn)),
			      EV_READ, ask_hangup_cb, r);
	if (!a->hangup)
		abort();
	event_add(a->hangup, NULL);
	if (core_submit(r, &err) < 0) {
		refuse(a, &err);
		req_discard(r);
	}
}

void ask_admin(struct evhttp_request *er, enum op op, bool admin)
{
	static const struct req_read_opts http_opts = { INFER_DEFAULT_WAIT_MS, "input" };
	struct req_error err;
	json_t *body;

	if (!admin) {
		httpio_error(er, 403, "permission_error", "unauthorized",
			   "administration over HTTP needs an admin token (\"TOKEN admin\" in http_token_file)");
		return;
	}
	if (!(body = httpio_read_body(er)))
		return;
	struct ask *a = ask_new(er);
	a->native = true;
	struct req *r = req_new(&ask_sink, a, 0, op, clock_mono_ms());
	r->admin = true;
	int rc = req_read(r, arg_json(body), &http_opts, &err);
	json_decref(body);
	if (rc < 0) {
		refuse(a, &err);
		req_discard(r);
		return;
	}
	ask_submit(a, r);
}

void ask_completion(struct evhttp_request *er, bool chat, bool embeddings, bool admin)
{
	json_t *body = httpio_read_body(er);
	const char *name;
	char err[GEN_ERR_LEN] = "";

	if (!body)
		return;
	name = json_string_value(json_object_get(body, "model"));
	const struct model *mod = name ? config_model(config_running(), name) : NULL;
	if (!mod) {
		httpio_error(er, 404, "invalid_request_error", "model_not_found",
			   name ? "no model of that name" : "model is required (a string)");
		json_decref(body);
		return;
	}
	struct ask *a = ask_new(er);
	a->chat = chat;
	a->embeddings = embeddings;
	a->stream = json_is_true(json_object_get(body, "stream"));
	a->include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
	struct req *r = req_new(&ask_sink, a, 0, embeddings ? OP_EMBED : OP_INFER, clock_mono_ms());
	struct httpreq_embed emb;
	uint64_t wait = config_running()->http_wait_timeout_ms;
	/* a queued request waits as long as its client does (whose leaving takes it out), unless the config says */
	int rc = httpreq_read(body, embeddings, wait ? wait : REQ_WAIT_FOREVER, r, &emb, err, sizeof err);
	json_decref(body);
	a->base64 = emb.base64;
	a->dimensions = emb.dimensions;
	if (rc < 0) {
		httpio_error(last_reply(a), 400, "invalid_request_error", "bad_request", err);
		req_discard(r);		/* and a with it */
		return;
	}
	snprintf(a->id, sizeof a->id, "%s-%llu", chat ? "chatcmpl" : "cmpl", (unsigned long long)r->seq);
	r->model = mod;
	r->admin = admin;	/* autoload = admin: on loopback without tokens, or with an admin token */
	ask_submit(a, r);
}

