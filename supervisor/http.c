/*
 * http.c: modeld's HTTP listener (libevent's evhttp, on the same loop).
 *
 * Off unless the config's `http` names ADDRESS:PORT. A loopback address
 * serves inference to anyone on the host, as the control socket's mode
 * does; any other needs `http_token_file`, and then every request a bearer
 * token from it. Administration takes a token marked admin, on loopback
 * too. Requests a browser's page could make on its own (another Origin,
 * another Host name, a body that is not JSON) are refused. Headers,
 * bodies and idle connections are bounded.
 *
 * GET /healthz: the loop is turning. GET /readyz: 200 once every slot with
 * a default_model has it ready, else 503 with the reasons. GET /v1/models:
 * every configured model, as OpenAI's API lists them, and where it is
 * loaded, as llama-swap and LM Studio show. GET /api/status, /api/models,
 * /api/devices: the socket ops' results, as JSON. POST /v1/completions and
 * /v1/chat/completions: OpenAI's, streamed as server-sent events or not;
 * the JSON body is turned into the msgpack of infer and read by the same
 * reader (gen.c), so its bounds and errors are the socket's. POST
 * /v1/embeddings: OpenAI's, for models set embedding = yes. A request is
 * one of modeld's (req.c) whose sink is its HTTP exchange; a client that
 * goes away cancels it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "../proto/clock.h"
#include "../proto/frame.h"
#include "../proto/json.h"
#include "../proto/jw.h"
#include "../proto/log.h"
#include "httpreq.h"
#include "modeld.h"

struct token {
	char *value;
	bool admin;
};

static struct evhttp *http;
static struct evhttp_bound_socket *bound;
static struct token *tokens;
static size_t ntokens;
static char bound_host[HTTP_HOST_LEN];	/* the address listened on, as the config names it */

/* Sends n bytes of JSON text (and a newline) with status. */
static void send_text(struct evhttp_request *req, int status, const char *text, size_t n)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evbuffer_add(out, text, n);
	evbuffer_add(out, "\n", 1);
	evhttp_send_reply(req, status, NULL, NULL);
}

/* Sends a JSON body (taken) with status; errors have OpenAI's shape. */
static void send_json(struct evhttp_request *req, int status, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);

	send_text(req, status, text ? text : "{}", text ? strlen(text) : 2);
	free(text);
	json_decref(body);
}

/* Sends the JSON of w (freed) with status. */
static void send_jw(struct evhttp_request *req, int status, struct jw *w)
{
	send_text(req, status, w->buf, w->len);
	jw_free(w);
}

static void send_error(struct evhttp_request *req, int status, const char *type, const char *code,
		       const char *message)
{
	send_json(req, status, json_pack("{s:{s:s, s:s, s:s}}", "error", "message", message, "type", type,
					 "code", code));
}

/* The token the request carries, if it is one of the file's; NULL otherwise. */
static const struct token *bearer(struct evhttp_request *req)
{
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");

	if (!auth || strncmp(auth, "Bearer ", 7) != 0)
		return NULL;
	for (size_t i = 0; i < ntokens; i++)
		if (strcmp(auth + 7, tokens[i].value) == 0)
			return &tokens[i];
	return NULL;
}

/* Prometheus' text format, version 0.0.4. */
static void on_metrics(struct evhttp_request *req)
{
	struct evbuffer *out = evbuffer_new();

	metrics_write(out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, NULL, out);
	evbuffer_free(out);
}

static void on_healthz(struct evhttp_request *req)
{
	send_json(req, HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

/*
 * Ready once every slot holds what it should now (state_wanted: the state
 * restored at start, else its default model, then what an administrator
 * made of it); the reasons otherwise.
 */
static void on_readyz(struct evhttp_request *req)
{
	json_t *waiting = json_array();

	for (size_t i = 0; i < md.nslots; i++) {
		const struct slot *s = &md.slots[i].s;
		const struct model *want = state_wanted(&md.slots[i]);
		if (want && !(s->state == SS_READY && s->model == want))
			json_array_append_new(waiting, json_pack("{s:s, s:s, s:s}", "slot", s->conf->name,
								 "model", want->name, "state",
								 slot_state_name(s->state)));
	}
	if (json_array_size(waiting) == 0) {
		json_decref(waiting);
		send_json(req, HTTP_OK, json_pack("{s:s}", "status", "ready"));
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
	send_json(req, 503, json_pack("{s:s, s:o}", "status", "not ready", "waiting", waiting));
}

/* A whole msgpack map written into w (freed here) as JSON; NULL if it does not decode. */
static json_t *frame_json(struct msgw *w)
{
	msgpack_unpacked u;
	size_t len, used;
	const char *why;
	const void *frame = msgw_frame(w, &len);
	json_t *j = NULL;

	msgpack_unpacked_init(&u);
	if (frame_decode(frame, len, len, &u, &used, &why) == FRAME_OK)
		j = msg_to_json(&u.data);
	msgpack_unpacked_destroy(&u);
	msgw_free(w);
	return j;
}

/* status, models, devices or jobs, as the socket answers them, in JSON. */
static void on_view(struct evhttp_request *req, const char *name)
{
	struct msgw w;
	json_t *j;

	if (ops_write_view(&w, name) < 0) {
		msgw_free(&w);
		send_error(req, 404, "invalid_request_error", "not_found", "no such path");
	} else if (!(j = frame_json(&w)))
		send_error(req, 500, "server_error", "internal", "a view did not decode");
	else
		send_json(req, HTTP_OK, j);
}

/* Every configured model, with the slots that have it ready. */
static void on_models(struct evhttp_request *req)
{
	json_t *data = json_array();

	for (size_t i = 0; i < md.conf.nmodels; i++) {
		const struct model *m = md.conf.models[i];
		json_t *in = json_array();
		struct stat st;
		for (size_t k = 0; k < md.nslots; k++)
			if (md.slots[k].s.model == m && md.slots[k].s.state == SS_READY)
				json_array_append_new(in, json_string(md.slots[k].s.conf->name));
		json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:b, s:o}", "id", m->name,
						      "object", "model", "created",
						      (json_int_t)(stat(m->path, &st) == 0 ? st.st_mtime : 0),
						      "owned_by", "modeld", "loaded", json_array_size(in) > 0,
						      "loaded_in", in));
	}
	send_json(req, HTTP_OK, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

/* --- completions --- */

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

/* Bytes written to the client of er and not yet taken. */
static size_t conn_owed(struct evhttp_request *er)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(er);
	return evbuffer_get_length(bufferevent_get_output(evhttp_connection_get_bufferevent(conn)));
}

/* A stream's socket holds at most HTTP_STREAM_SNDBUF for a client that does not read. */
static void bound_send_buffer(struct evhttp_request *er)
{
	int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evhttp_request_get_connection(er)));
	int size = HTTP_STREAM_SNDBUF;

	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static void start_stream(struct ask *a)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(a->er);

	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_send_reply_start(a->er, HTTP_OK, "OK");
	bound_send_buffer(a->er);
	a->started = true;
}

/* The status OpenAI's clients expect for each of modeld's errors. */
static int status_of(enum err code, const char **type)
{
	*type = "invalid_request_error";
	switch (code) {
	case E_BAD_REQUEST: return 400;
	case E_UNKNOWN_MODEL: case E_NOT_LOADED: case E_UNKNOWN_SLOT: return 404;
	case E_UNAUTHORIZED: return 403;
	case E_BUSY: *type = "rate_limit_error"; return 429;
	case E_NOT_READY: case E_TIMEOUT: case E_SERVICE_UNAVAILABLE: case E_SHUTTING_DOWN:
		*type = "server_error";
		return 503;
	default: *type = "server_error"; return 500;
	}
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
	return frame_json(&w);
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
		int status = status_of(code, &type);
		if (status == 503)
			evhttp_add_header(evhttp_request_get_output_headers(er), "Retry-After", "1");
		send_error(er, status, type, proto_err_name(code), message ? message : proto_err_name(code));
	} else if (a->native) {
		send_json(last_reply(a), HTTP_OK, result_json(s, r));
	} else if (a->embeddings && a->dimensions && a->dimensions != r->dim) {
		char why[128];
		snprintf(why, sizeof why, "dimensions: model %s gives embeddings of %u dimensions, not %u",
			 r->model ? r->model->name : "", r->dim, a->dimensions);
		send_error(last_reply(a), 400, "invalid_request_error", "bad_request", why);
	} else if (a->embeddings) {
		send_json(last_reply(a), HTTP_OK, embeddings(a, r));
	} else {
		struct jw w;
		write_completion(&w, a, r, &(struct part){ .choice = true, .usage = true, .text = r->text, .n = r->ntext,
							   .tokens = r->tokens, .ntokens = r->ntokens,
							   .reason = finish_reason(r) });
		send_jw(last_reply(a), HTTP_OK, &w);
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
	if (conn_owed(a->er) > HTTP_STREAM_MAX_OWED) {
		a->overrun = conn_owed(a->er);
		log_warn("http: a stream left %zu bytes unread; its request is cancelled", a->overrun);
		slot_event(r->slot, &(struct slot_ev){ .type = SEV_CANCEL, .req = r });
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

/*
 * The client went away: its inference is cancelled, and nothing more is
 * sent. evhttp has let go of the exchange, which ending it frees.
 */
/* The client of r went away: its exchange ends, and r is cancelled (a load or unload goes on, as on the socket). */
static void ask_abandoned(struct req *r)
{
	struct slot *s = r->slot;
	struct ask *a = r->asker;
	bool started = a->started;
	struct evhttp_request *er = last_reply(a);

	if (started)
		evhttp_send_reply_end(er);
	else
		evhttp_send_reply(er, 499, "Client Closed Request", NULL);
	req_orphan(r);
	if (s && !ops_is_admin(r->op))
		slot_event(s, &(struct slot_ev){ .type = SEV_CANCEL, .req = r });
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

/* Whether the media type of a Content-Type header is application/json (parameters aside). */
static bool is_json_type(const char *type)
{
	size_t n = strlen("application/json");

	return type && !strncasecmp(type, "application/json", n) && strchr("; \t", type[n]);
}

/* The JSON body of req (an object); NULL with an error reply sent. */
static json_t *read_body(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	json_t *j;
	char msg[256];

	if (!is_json_type(evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"))) {
		send_error(req, 415, "invalid_request_error", "bad_request", "Content-Type must be application/json");
		return NULL;
	}
	if (!(j = httpreq_parse((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n, msg, sizeof msg)))
		send_error(req, 400, "invalid_request_error", "bad_request", msg);
	return j;
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

/* r, work made for the exchange a, goes to its model's slot; a client that goes away from now on cancels it. */
static void ask_submit(struct ask *a, struct req *r)
{
	struct slot_rt *rt = slots_for_model(r->model);
	struct evhttp_connection *conn = evhttp_request_get_connection(a->er);

	evhttp_connection_set_closecb(conn, ask_closed, r);
	a->hangup = event_new(md.base, bufferevent_getfd(evhttp_connection_get_bufferevent(conn)), EV_READ,
			      ask_hangup_cb, r);
	if (!a->hangup)
		abort();
	event_add(a->hangup, NULL);
	r->slot = &rt->s;
	slot_event(&rt->s, &(struct slot_ev){ .type = SEV_INFER, .req = r, .model = r->model });
}

/* POST /api/load and /api/unload: the socket's ops, for administrators; the reply comes when they end. */
static void on_admin(struct evhttp_request *er, enum op op, bool admin)
{
	struct op_error err = { E_BAD_REQUEST, "" };
	struct msgw w;
	msgpack_unpacked u;
	json_t *body;
	const char *type;

	if (!admin) {
		send_error(er, 403, "permission_error", "unauthorized",
			   "administration over HTTP needs an admin token (\"TOKEN admin\" in http_token_file)");
		return;
	}
	if (!(body = read_body(er)))
		return;
	struct ask *a = ask_new(er);
	a->native = true;
	struct req *r = req_new(&ask_sink, 0, op, ++md.next_seq, clock_mono_ms());
	r->asker = a;
	r->admin = true;
	int rc = httpreq_msg(body, &w, &u, err.message, sizeof err.message);
	json_decref(body);
	if (rc == 0)
		evhttp_connection_set_closecb(evhttp_request_get_connection(er), ask_closed, r);
	if (rc < 0 || ops_submit_admin(r, &u.data, &err) < 0) {
		evhttp_connection_set_closecb(evhttp_request_get_connection(er), NULL, NULL);
		a->er = NULL;
		int status = status_of(err.code, &type);
		send_error(er, status, type, proto_err_name(err.code), err.message);
		req_discard(r);
	}
	msgpack_unpacked_destroy(&u);
	msgw_free(&w);
}

static void on_completion(struct evhttp_request *er, bool chat, bool embeddings, bool admin)
{
	json_t *body = read_body(er);
	const char *name;
	char err[GEN_ERR_LEN] = "";

	if (!body)
		return;
	name = json_string_value(json_object_get(body, "model"));
	const struct model *mod = name ? config_model(&md.conf, name) : NULL;
	if (!mod) {
		send_error(er, 404, "invalid_request_error", "model_not_found",
			   name ? "no model of that name" : "model is required (a string)");
		json_decref(body);
		return;
	}
	struct ask *a = ask_new(er);
	a->chat = chat;
	a->embeddings = embeddings;
	a->stream = json_is_true(json_object_get(body, "stream"));
	a->include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
	struct req *r = req_new(&ask_sink, 0, embeddings ? OP_EMBED : OP_INFER, ++md.next_seq, clock_mono_ms());
	r->asker = a;
	struct httpreq_embed emb;
	/* a queued request waits as long as its client does (whose leaving takes it out), unless the config says */
	int rc = httpreq_read(body, embeddings, md.conf.http_wait_timeout_ms ? md.conf.http_wait_timeout_ms :
			      REQ_WAIT_FOREVER, r, &emb, err, sizeof err);
	json_decref(body);
	a->base64 = emb.base64;
	a->dimensions = emb.dimensions;
	if (rc < 0) {
		a->er = NULL;		/* answered here, and evhttp's from now on */
		send_error(er, 400, "invalid_request_error", "bad_request", err);
		req_discard(r);		/* and a with it */
		return;
	}
	snprintf(a->id, sizeof a->id, "%s-%llu", chat ? "chatcmpl" : "cmpl", (unsigned long long)r->seq);
	r->model = mod;
	r->admin = admin;	/* autoload = admin: on loopback without tokens, or with an admin token */
	ask_submit(a, r);
}

/* --- event streams --- */

/*
 * A client reading events as server-sent events: all of some kinds (of one
 * slot), or one job's. What it may owe is bounded: a stream that starts
 * from a Last-Event-ID, or that left HTTP_STREAM_STEP unread, is behind:
 * it is given the kept events from `next` on, HTTP_STREAM_STEP at a time
 * as it reads them, until it has caught up with the live ones.
 */
struct watcher {
	LIST_ENTRY(watcher) link;
	struct evhttp_request *er;
	unsigned kinds;			/* a bit per event kind */
	const struct slot *slot;	/* only this slot's events; NULL: every slot's */
	uint64_t job;			/* only this job's, ending with it; 0: not a job's stream */
	uint64_t next;			/* behind: the seq of the next event it is to be given */
	bool behind;
};

static LIST_HEAD(, watcher) watchers = LIST_HEAD_INITIALIZER(watchers);
static struct event *keepalive;

/* An event as one server-sent event, its id the event's seq; NULL if it does not decode. */
static char *event_text(const struct event_ref *e)
{
	msgpack_unpacked u;
	size_t used;
	const char *why;
	char *data = NULL, *text = NULL;

	msgpack_unpacked_init(&u);
	if (frame_decode(e->frame, e->len, e->len, &u, &used, &why) == FRAME_OK) {
		json_t *j = msg_to_json(&u.data);
		data = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	if (data && asprintf(&text, "id: %llu\ndata: %s\n\n", (unsigned long long)e->seq, data) < 0)
		text = NULL;
	free(data);
	msgpack_unpacked_destroy(&u);
	return text;
}

static bool watcher_wants(const struct watcher *wt, const struct event_ref *e)
{
	if (wt->job)
		return e->job == wt->job;
	return (wt->kinds & (1u << e->kind)) && (!wt->slot || wt->slot == e->slot);
}

static void watcher_caught_up(struct evhttp_connection *conn, void *arg);

/* Writes text to the stream; with more_when_read, goes on catching up once the client has read it all. */
static void watcher_write(struct watcher *wt, const char *text, bool more_when_read)
{
	struct evbuffer *out = evbuffer_new();

	evbuffer_add(out, text, strlen(text));
	if (more_when_read)
		evhttp_send_reply_chunk_with_cb(wt->er, out, watcher_caught_up, wt);
	else
		evhttp_send_reply_chunk(wt->er, out);
	evbuffer_free(out);
}

/* The stream ends: the job did, or modeld stops. */
static void watcher_end(struct watcher *wt)
{
	evhttp_connection_set_closecb(evhttp_request_get_connection(wt->er), NULL, NULL);
	evhttp_send_reply_end(wt->er);
	LIST_REMOVE(wt, link);
	free(wt);
}

/* The client went away; evhttp has let go of the exchange, which ending it frees. */
static void watcher_closed(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	struct watcher *wt = arg;

	evhttp_send_reply_end(wt->er);
	LIST_REMOVE(wt, link);
	free(wt);
}

/* Tells a stream that the events after seq after up to first_kept - 1 are gone. */
static void watcher_missed(struct watcher *wt, uint64_t after, uint64_t first_kept)
{
	char gap[160];

	snprintf(gap, sizeof gap, "data: {\"event\":\"missed\",\"after\":%llu,\"first_kept\":%llu}\n\n",
		 (unsigned long long)after, (unsigned long long)first_kept);
	watcher_write(wt, gap, false);
}

/*
 * Gives a stream that is behind the kept events from wt->next on, until the
 * client owes HTTP_STREAM_STEP (the rest once it has read that) or it has
 * caught up. A job's stream may end in it: false then (wt is freed).
 */
static bool watcher_catch_up(struct watcher *wt)
{
	while (wt->next <= md.event_seq) {
		if (wt->next < events_first_kept()) {
			watcher_missed(wt, wt->next - 1, events_first_kept());
			wt->next = events_first_kept();
		}
		const struct event_ref *e = events_kept(wt->next++);
		char *text = watcher_wants(wt, e) ? event_text(e) : NULL;
		if (!text)
			continue;
		bool step_done = conn_owed(wt->er) >= HTTP_STREAM_STEP;
		watcher_write(wt, text, step_done);
		free(text);
		if (wt->job && e->job_over) {
			watcher_end(wt);
			return false;
		}
		if (step_done)
			return true;
	}
	wt->behind = false;
	return true;
}

/* The client of a stream that is behind has read what it was given. */
static void watcher_caught_up(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	struct watcher *wt = arg;

	if (wt->behind)
		watcher_catch_up(wt);
}

void http_broadcast(const struct event_ref *e)
{
	struct watcher *wt = LIST_FIRST(&watchers), *next;
	char *text = NULL;

	for (; wt; wt = next) {
		next = LIST_NEXT(wt, link);
		if (wt->behind || !watcher_wants(wt, e))
			continue;	/* one behind is given e from the kept events */
		if (!text && !(text = event_text(e)))
			return;
		bool fell_behind = conn_owed(wt->er) > HTTP_STREAM_STEP;
		if (fell_behind) {
			wt->behind = true;
			wt->next = e->seq + 1;
		}
		watcher_write(wt, text, fell_behind);
		if (wt->job && e->job_over)
			watcher_end(wt);
	}
	free(text);
}

static void keep_alive(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	struct watcher *wt;

	/* a comment: proxies and the idle timeout see a live stream (one behind is being written to) */
	LIST_FOREACH(wt, &watchers, link)
		if (!wt->behind)
			watcher_write(wt, ":\n\n", false);
}

/*
 * Starts the stream of er as wt: the live events, after the kept ones since
 * seq after when replay; false when it ended at once (ended and freed).
 */
static bool watcher_start(struct watcher *wt, struct evhttp_request *er, uint64_t after, bool replay)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(er);

	wt->er = er;
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_send_reply_start(er, HTTP_OK, "OK");
	bound_send_buffer(er);
	LIST_INSERT_HEAD(&watchers, wt, link);
	evhttp_connection_set_closecb(evhttp_request_get_connection(er), watcher_closed, wt);
	watcher_write(wt, ":\n\n", false);
	if (!replay)
		return true;
	if (after > md.event_seq) {	/* a seq of an earlier modeld */
		watcher_missed(wt, after, events_first_kept());
		return true;
	}
	wt->behind = true;
	wt->next = after + 1;
	return watcher_catch_up(wt);
}

/* The Last-Event-ID a reconnecting client sends (or ?last_event_id=) into *id; *have false if none
 * (or empty). -1 when it is not a decimal event number. */
static int last_event_id(struct evhttp_request *er, struct evkeyvalq *query, uint64_t *id, bool *have)
{
	const char *v = evhttp_find_header(evhttp_request_get_input_headers(er), "Last-Event-ID");

	if (!v)
		v = evhttp_find_header(query, "last_event_id");
	*id = 0;
	*have = v && *v;
	return *have ? proto_parse_u64(v, UINT64_MAX, id) : 0;
}

/* A comma-separated list of event kinds as a mask; 0 if one is not a kind. */
static unsigned parse_kinds(const char *list)
{
	unsigned mask = 0;

	for (const char *p = list; *p; p += *p == ',') {
		size_t n = strcspn(p, ",");
		int k = proto_event_parse(p, n);
		if (k < 0)
			return 0;
		mask |= 1u << k;
		p += n;
	}
	return mask;
}

/* GET /v1/events[?events=state,progress][&slot=NAME]: events as they happen, from Last-Event-ID on. */
static void on_events(struct evhttp_request *er)
{
	struct evkeyvalq query;
	const char *kinds, *slot;
	struct watcher *wt = calloc(1, sizeof *wt);
	bool have;

	if (!wt)
		abort();
	evhttp_parse_query_str(evhttp_uri_get_query(evhttp_request_get_evhttp_uri(er)) ?
			       evhttp_uri_get_query(evhttp_request_get_evhttp_uri(er)) : "", &query);
	wt->kinds = (1u << EVK__COUNT) - 1;
	if ((kinds = evhttp_find_header(&query, "events")) != NULL)
		wt->kinds = parse_kinds(kinds);
	struct slot_rt *rt = (slot = evhttp_find_header(&query, "slot")) != NULL ? slots_find(slot) : NULL;
	wt->slot = rt ? &rt->s : NULL;
	uint64_t after;
	if (last_event_id(er, &query, &after, &have) < 0) {
		send_error(er, 400, "invalid_request_error", "bad_request",
			   "Last-Event-ID (or last_event_id) must be an event's seq, a decimal number");
		free(wt);
	} else if (!wt->kinds || (slot && !wt->slot)) {
		send_error(er, wt->kinds ? 404 : 400, "invalid_request_error", wt->kinds ? "unknown_slot" : "bad_request",
			   wt->kinds ? "no slot of that name" : "events is a comma-separated list of event kinds");
		free(wt);
	} else
		watcher_start(wt, er, after, have);
	evhttp_clear_headers(&query);
}

/* GET /api/jobs/ID (the job) or /api/jobs/ID/events (its events so far and to its end). */
static void on_job(struct evhttp_request *er, const char *rest)
{
	char *end;
	unsigned long long id = strtoull(rest, &end, 10);
	const struct job_rec *j = end != rest ? events_find_job(id) : NULL;
	struct msgw w;

	if (!j || (*end && strcmp(end, "/events") != 0)) {
		send_error(er, 404, "invalid_request_error", "not_found", "no such job (the last 64 are kept)");
		return;
	}
	if (!*end) {
		msgw_init(&w);
		events_write_job(&w, j);
		send_json(er, HTTP_OK, frame_json(&w));
		return;
	}
	struct watcher *wt = calloc(1, sizeof *wt);
	if (!wt)
		abort();
	wt->job = id;
	if (watcher_start(wt, er, events_first_kept() - 1, true) && j->over) {
		/* its events are no longer kept: where it ended, as its last job event said */
		msgw_init(&w);
		events_write_job(&w, j);
		json_t *last = frame_json(&w);
		char *data = json_dumps(last, JSON_COMPACT);
		watcher_write(wt, "data: ", false);
		watcher_write(wt, data ? data : "{}", false);
		watcher_write(wt, "\n\n", false);
		free(data);
		json_decref(last);
		watcher_end(wt);
	}
}

static void on_completions(struct evhttp_request *er, bool admin)
{
	on_completion(er, false, false, admin);
}

static void on_chat(struct evhttp_request *er, bool admin)
{
	on_completion(er, true, false, admin);
}

static void on_embeddings(struct evhttp_request *er, bool admin)
{
	on_completion(er, false, true, admin);
}

static void on_load(struct evhttp_request *er, bool admin)
{
	on_admin(er, OP_LOAD, admin);
}

static void on_unload(struct evhttp_request *er, bool admin)
{
	on_admin(er, OP_UNLOAD, admin);
}

/*
 * Every path, with its method; GET /api/NAME for the other views,
 * /api/jobs/ID[/events] for a job. Open paths need no token: probes and
 * scrapers carry none, and they change nothing.
 */
static const struct route {
	enum evhttp_cmd_type method;
	const char *path;
	void (*get)(struct evhttp_request *er);
	void (*post)(struct evhttp_request *er, bool admin);
	bool open;
} routes[] = {
	{ EVHTTP_REQ_GET, "/healthz", on_healthz, NULL, true },
	{ EVHTTP_REQ_GET, "/readyz", on_readyz, NULL, true },
	{ EVHTTP_REQ_GET, "/metrics", on_metrics, NULL, true },
	{ EVHTTP_REQ_GET, "/v1/models", on_models, NULL, false },
	{ EVHTTP_REQ_GET, "/v1/events", on_events, NULL, false },
	{ EVHTTP_REQ_POST, "/v1/completions", NULL, on_completions, false },
	{ EVHTTP_REQ_POST, "/v1/chat/completions", NULL, on_chat, false },
	{ EVHTTP_REQ_POST, "/v1/embeddings", NULL, on_embeddings, false },
	{ EVHTTP_REQ_POST, "/api/load", NULL, on_load, false },
	{ EVHTTP_REQ_POST, "/api/unload", NULL, on_unload, false },
};

static const struct route *route_of(const char *path)
{
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if (strcmp(path, routes[i].path) == 0)
			return &routes[i];
	return NULL;
}

/* Whether the Host header's name (its port left out) is this server's address or a loopback name. */
static bool host_is_ours(const char *host)
{
	char name[HTTP_HOST_LEN];
	struct in_addr a4;
	size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");

	if (n >= sizeof name)
		return false;
	memcpy(name, host, n);
	name[n] = '\0';
	if (!strcasecmp(name, "localhost") || !strcmp(name, "[::1]") ||
	    (inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127))
		return true;
	return name[0] == '[' ? n >= 2 && strlen(bound_host) == n - 2 && !strncmp(name + 1, bound_host, n - 2) :
				!strcmp(name, bound_host);
}

/*
 * What a web page in a browser on this host could send on its own: a
 * request from another origin (an Origin that is not this server's), one
 * for another name (DNS rebinding: only checked where no token is needed,
 * as tokens are what a page cannot have). Refused with the reply sent:
 * true. A POST that is not JSON, which a page may send without asking
 * (a "simple" request), is refused where bodies are read.
 */
static bool cross_site(struct evhttp_request *req)
{
	const struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *host = evhttp_find_header(h, "Host"), *origin = evhttp_find_header(h, "Origin");
	char why[HTTP_HOST_LEN * 2 + 64];

	if (!ntokens && host && !host_is_ours(host)) {
		snprintf(why, sizeof why, "Host %.*s is not this server's address or a loopback name", HTTP_HOST_LEN, host);
		send_error(req, 403, "permission_error", "forbidden", why);
		return true;
	}
	if (origin && (!host || strncmp(origin, "http://", 7) || strcasecmp(origin + 7, host))) {
		snprintf(why, sizeof why, "cross-site requests are refused (Origin %.*s)", HTTP_HOST_LEN, origin);
		send_error(req, 403, "permission_error", "forbidden", why);
		return true;
	}
	return false;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	const struct token *t = bearer(req);
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct route *r = route_of(path ? path : "");

	if (ntokens && !t && !(r && r->open)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
		send_error(req, 401, "invalid_request_error", "unauthorized", "a bearer token is required");
		return;
	}
	if (!path)
		path = "";
	if (cross_site(req))
		return;
	if (r && method != r->method)
		send_error(req, 405, "invalid_request_error", "method_not_allowed",
			   r->get ? "this path takes GET" : "this path takes POST");
	else if (r && r->get)
		r->get(req);
	else if (r)
		r->post(req, t && t->admin);	/* only an admin token administers, on loopback too */
	else if (strncmp(path, "/api/", 5) != 0)
		send_error(req, 404, "invalid_request_error", "not_found", "no such path");
	else if (method != EVHTTP_REQ_GET)
		send_error(req, 405, "invalid_request_error", "method_not_allowed", "this path takes GET");
	else if (strncmp(path, "/api/jobs/", 10) == 0)
		on_job(req, path + 10);
	else
		on_view(req, path + 5);
}

static void free_tokens(struct token *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(t[i].value);
	free(t);
}

/* One line of a token file into *t: "TOKEN" or "TOKEN admin", split on blanks. 1 a token, 0 none
 * (blank or # comment), -1 a bad line. */
static int token_line(char *line, struct token *t)
{
	char *save, *value = strtok_r(line, " \t\r\n", &save);
	char *mark = value ? strtok_r(NULL, " \t\r\n", &save) : NULL;

	if (!value || value[0] == '#')
		return 0;
	if ((mark && strcmp(mark, "admin") != 0) || strtok_r(NULL, " \t\r\n", &save) ||
	    strlen(value) < HTTP_TOKEN_MIN || strlen(value) > HTTP_TOKEN_MAX)
		return -1;
	if (!(t->value = strdup(value)))
		abort();
	t->admin = mark != NULL;
	return 1;
}

/*
 * The tokens of file into *out (*n of them; free_tokens frees them): a
 * line is "TOKEN" or "TOKEN admin"; # comments. 0, or -1 with err at
 * file:line.
 */
static int read_tokens(const char *file, struct token **out, size_t *n, char *err, size_t errlen)
{
	struct stat st;
	char line[HTTP_TOKEN_MAX + 64];
	int lineno = 0, rc = 0;
	FILE *f = fopen(file, "re");

	*out = NULL;
	*n = 0;
	if (!f || fstat(fileno(f), &st) < 0) {
		snprintf(err, errlen, "http_token_file %s: %s", file, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	if (st.st_mode & S_IROTH)
		log_warn("http_token_file %s is readable by every user: chmod o-r it", file);
	while (fgets(line, sizeof line, f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {	/* longer than any good line */
			rc = -1;
			break;
		}
		if (!(*out = realloc(*out, (*n + 1) * sizeof **out)))
			abort();
		if ((rc = token_line(line, &(*out)[*n])) < 0)
			break;
		*n += (size_t)rc;
	}
	fclose(f);
	if (rc < 0 || *n == 0) {
		if (rc < 0)
			snprintf(err, errlen, "%s:%d: a line is TOKEN (%d to %d characters) or TOKEN admin", file,
				 lineno, HTTP_TOKEN_MIN, HTTP_TOKEN_MAX);
		else
			snprintf(err, errlen, "http_token_file %s: no token in it", file);
		free_tokens(*out, *n);
		*out = NULL;
		*n = 0;
		return -1;
	}
	return 0;
}

static int parse_address(const char *spec, char *host, size_t hostlen, unsigned *port, bool *loopback)
{
	const char *colon = strrchr(spec, ':');
	char *end;
	struct in_addr a4;
	struct in6_addr a6;

	if (!colon || colon == spec)
		return -1;
	if (spec[0] == '[' && colon[-1] == ']')
		snprintf(host, hostlen, "%.*s", (int)(colon - spec - 2), spec + 1);
	else
		snprintf(host, hostlen, "%.*s", (int)(colon - spec), spec);
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || p > 65535)
		return -1;
	*port = (unsigned)p;
	if (inet_pton(AF_INET, host, &a4) == 1)
		*loopback = (ntohl(a4.s_addr) >> 24) == 127;
	else if (inet_pton(AF_INET6, host, &a6) == 1)
		*loopback = IN6_IS_ADDR_LOOPBACK(&a6);
	else
		return -1;
	return 0;
}

/*
 * What c's http and http_token_file say, checked: the address to bind and
 * its port, and the tokens (*t, *n; free_tokens frees them). 0, or -1 with
 * err. Off (c->http NULL) is 0 with *n 0.
 */
static int read_http_conf(const struct config *c, char host[HTTP_HOST_LEN], unsigned *port, struct token **t,
			  size_t *n, char *err, size_t errlen)
{
	bool loopback;

	*t = NULL;
	*n = 0;
	if (!c->http)
		return 0;
	if (parse_address(c->http, host, HTTP_HOST_LEN, port, &loopback) < 0) {
		snprintf(err, errlen, "http: \"%s\" is not ADDRESS:PORT (an IPv4 or [IPv6] address)", c->http);
		return -1;
	}
	if (!loopback && !c->http_token_file) {
		snprintf(err, errlen, "http: %s is not a loopback address; serving it needs http_token_file", host);
		return -1;
	}
	return c->http_token_file ? read_tokens(c->http_token_file, t, n, err, errlen) : 0;
}

int http_check(const struct config *c, char *err, size_t errlen)
{
	char host[HTTP_HOST_LEN];
	unsigned port;
	struct token *t;
	size_t n;
	int rc = read_http_conf(c, host, &port, &t, &n, err, errlen);

	free_tokens(t, n);
	return rc;
}

/*
 * Each new connection's bufferevent. Descriptors are handed out lowest
 * first, so the lowest free one says whether those below the HTTP ceiling
 * are all taken: then accepting pauses, and the connections wait in the
 * backlog, so that the socket's clients, the workers and the model files
 * always have descriptors.
 */
static struct bufferevent *new_connection(struct event_base *base, void *arg)
{
	(void)arg;
	static uint64_t logged_ms;
	int probe = fcntl(md.devnull, F_DUPFD_CLOEXEC, 0);

	if (probe < 0 || probe >= md.http_fd_ceiling) {
		uint64_t t = clock_mono_ms();
		if (!logged_ms || t - logged_ms >= ACCEPT_LOG_MS) {
			logged_ms = t;
			log_warn("http: %d descriptors in use, the most HTTP may hold; not accepting for %d ms at a time",
				 md.http_fd_ceiling, ACCEPT_PAUSE_MS);
		}
		if (bound)
			server_pause_accept(evhttp_bound_socket_get_listener(bound));
	}
	if (probe >= 0)
		close(probe);
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

int http_listen(char *err, size_t errlen)
{
	char host[HTTP_HOST_LEN];
	unsigned port;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;

	if (!md.conf.http)
		return 0;
	if (read_http_conf(&md.conf, host, &port, &tokens, &ntokens, err, errlen) < 0)
		return -1;
	snprintf(bound_host, sizeof bound_host, "%s", host);
	http = evhttp_new(md.base);
	evhttp_set_max_headers_size(http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(http, HTTP_MAX_BODY);
	evhttp_set_timeout(http, HTTP_TIMEOUT_SECONDS);
	evhttp_set_gencb(http, on_request, NULL);
	evhttp_set_bevcb(http, new_connection, NULL);
	keepalive = event_new(md.base, -1, EV_PERSIST, keep_alive, NULL);
	struct timeval every = { HTTP_KEEPALIVE_SECONDS, 0 };
	event_add(keepalive, &every);
	if (!(bound = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port))) {
		snprintf(err, errlen, "http: cannot listen on %s: %s", md.conf.http, strerror(errno));
		return -1;
	}
	server_guard_accept(evhttp_bound_socket_get_listener(bound));
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
			     ((struct sockaddr_in *)&ss)->sin_port);
	log_info("http: listening on %s port %u%s", host, port, ntokens ? " (bearer tokens)" : "");
	return 0;
}

void http_stop(void)
{
	while (!LIST_EMPTY(&watchers))
		watcher_end(LIST_FIRST(&watchers));
	if (bound) {
		server_unguard_accept(evhttp_bound_socket_get_listener(bound));
		evhttp_del_accept_socket(http, bound);
	}
	bound = NULL;
}

void http_close(void)
{
	http_stop();
	if (keepalive)
		event_free(keepalive);
	keepalive = NULL;
	if (http)
		evhttp_free(http);
	http = NULL;
	free_tokens(tokens, ntokens);
	tokens = NULL;
	ntokens = 0;
}
