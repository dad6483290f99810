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
 * /api/devices, /api/jobs: the socket ops' results, as JSON. POST
 * /v1/completions, /v1/chat/completions, /v1/embeddings, /api/load and
 * /api/unload: ask.c, whose bodies are read into the socket's request shape
 * (req_read), so their bounds and errors are the socket's. GET /v1/events
 * and /api/jobs/ID/events: sse.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include "ask.h"
#include "core.h"
#include "events.h"
#include "http.h"
#include "httpio.h"
#include "httpreq.h"
#include "metrics.h"
#include "server.h"
#include "sse.h"
#include "state.h"
#include "view.h"

struct token {
	char *value;
	bool admin;
};

static struct evhttp *http;
static struct evhttp_bound_socket *bound;
static struct token *tokens;
static size_t ntokens;
static char bound_host[HTTP_HOST_LEN];	/* the address listened on, as the config names it */
/* HTTP connections hold descriptors below this; those above are kept for the socket's clients, the workers and
 * the model files */
static int fd_ceiling = INT_MAX;

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
	httpio_json(req, HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

/*
 * Ready once every slot holds what it should now (state_wanted: the state
 * restored at start, else its default model, then what an administrator
 * made of it); the reasons otherwise.
 */
static void on_readyz(struct evhttp_request *req)
{
	json_t *waiting = json_array();

	for (size_t i = 0; i < core_nslots(); i++) {
		const struct slot *s = core_slot(i);
		const struct model *want = state_wanted(s);
		if (want && !(s->state == SS_READY && s->model == want))
			json_array_append_new(waiting, json_pack("{s:s, s:s, s:s}", "slot", s->conf->name,
								 "model", want->name, "state",
								 slot_state_name(s->state)));
	}
	if (json_array_size(waiting) == 0) {
		json_decref(waiting);
		httpio_json(req, HTTP_OK, json_pack("{s:s}", "status", "ready"));
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
	httpio_json(req, 503, json_pack("{s:s, s:o}", "status", "not ready", "waiting", waiting));
}

/* status, models, devices or jobs, as the socket answers them, in JSON. */
static void on_view(struct evhttp_request *req, const char *name)
{
	struct msgw w;
	json_t *j;

	if (strcmp(name, "jobs") == 0) {
		msgw_init(&w);
		msgw_map(&w);
		events_write_jobs(&w);
		msgw_end(&w);
	}
	if (strcmp(name, "jobs") != 0 && view_write(&w, name) < 0) {
		msgw_free(&w);
		httpio_error(req, 404, "invalid_request_error", "not_found", "no such path");
	} else if (!(j = httpio_frame_json(&w)))
		httpio_error(req, 500, "server_error", "internal", "a view did not decode");
	else
		httpio_json(req, HTTP_OK, j);
}

/* Every configured model, with the slots that have it ready. */
static void on_models(struct evhttp_request *req)
{
	json_t *data = json_array();

	const struct config *c = config_running();

	for (size_t i = 0; i < c->nmodels; i++) {
		const struct model *m = c->models[i];
		json_t *in = json_array();
		struct stat st;
		for (size_t k = 0; k < core_nslots(); k++)
			if (core_slot(k)->model == m && core_slot(k)->state == SS_READY)
				json_array_append_new(in, json_string(core_slot(k)->conf->name));
		json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:b, s:o}", "id", m->name,
						      "object", "model", "created",
						      (json_int_t)(stat(m->path, &st) == 0 ? st.st_mtime : 0),
						      "owned_by", "modeld", "loaded", json_array_size(in) > 0,
						      "loaded_in", in));
	}
	httpio_json(req, HTTP_OK, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static void on_completions(struct evhttp_request *er, bool admin)
{
	ask_completion(er, false, false, admin);
}

static void on_chat(struct evhttp_request *er, bool admin)
{
	ask_completion(er, true, false, admin);
}

static void on_embeddings(struct evhttp_request *er, bool admin)
{
	ask_completion(er, false, true, admin);
}

static void on_load(struct evhttp_request *er, bool admin)
{
	ask_admin(er, OP_LOAD, admin);
}

static void on_unload(struct evhttp_request *er, bool admin)
{
	ask_admin(er, OP_UNLOAD, admin);
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
	{ EVHTTP_REQ_GET, "/v1/events", sse_events, NULL, false },
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
		httpio_error(req, 403, "permission_error", "forbidden", why);
		return true;
	}
	if (origin && (!host || strncmp(origin, "http://", 7) || strcasecmp(origin + 7, host))) {
		snprintf(why, sizeof why, "cross-site requests are refused (Origin %.*s)", HTTP_HOST_LEN, origin);
		httpio_error(req, 403, "permission_error", "forbidden", why);
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
		httpio_error(req, 401, "invalid_request_error", "unauthorized", "a bearer token is required");
		return;
	}
	if (!path)
		path = "";
	if (cross_site(req))
		return;
	if (r && method != r->method)
		httpio_error(req, 405, "invalid_request_error", "method_not_allowed",
			   r->get ? "this path takes GET" : "this path takes POST");
	else if (r && r->get)
		r->get(req);
	else if (r)
		r->post(req, t && t->admin);	/* only an admin token administers, on loopback too */
	else if (strncmp(path, "/api/", 5) != 0)
		httpio_error(req, 404, "invalid_request_error", "not_found", "no such path");
	else if (method != EVHTTP_REQ_GET)
		httpio_error(req, 405, "invalid_request_error", "method_not_allowed", "this path takes GET");
	else if (strncmp(path, "/api/jobs/", 10) == 0)
		sse_job(req, path + 10);
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
	int probe = bound ? fcntl(evhttp_bound_socket_get_fd(bound), F_DUPFD_CLOEXEC, 0) : -1;

	if (bound && (probe < 0 || probe >= fd_ceiling)) {
		uint64_t t = clock_mono_ms();
		if (!logged_ms || t - logged_ms >= ACCEPT_LOG_MS) {
			logged_ms = t;
			log_warn("http: %d descriptors in use, the most HTTP may hold; not accepting for %d ms at a time",
				 fd_ceiling, ACCEPT_PAUSE_MS);
		}
		server_pause_accept(evhttp_bound_socket_get_listener(bound));
	}
	if (probe >= 0)
		close(probe);
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

int http_listen(struct event_base *base, int ceiling, char *err, size_t errlen)
{
	const struct config *c = config_running();
	char host[HTTP_HOST_LEN];
	unsigned port;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;

	fd_ceiling = ceiling;
	if (!c->http)
		return 0;
	if (read_http_conf(c, host, &port, &tokens, &ntokens, err, errlen) < 0)
		return -1;
	snprintf(bound_host, sizeof bound_host, "%s", host);
	http = evhttp_new(base);
	evhttp_set_max_headers_size(http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(http, HTTP_MAX_BODY);
	evhttp_set_timeout(http, HTTP_TIMEOUT_SECONDS);
	evhttp_set_gencb(http, on_request, NULL);
	evhttp_set_bevcb(http, new_connection, NULL);
	sse_init(base);
	if (!(bound = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port))) {
		snprintf(err, errlen, "http: cannot listen on %s: %s", c->http, strerror(errno));
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
	sse_stop();
	if (bound) {
		server_unguard_accept(evhttp_bound_socket_get_listener(bound));
		evhttp_del_accept_socket(http, bound);
	}
	bound = NULL;
}

void http_close(void)
{
	http_stop();
	if (http)
		evhttp_free(http);
	http = NULL;
	free_tokens(tokens, ntokens);
	tokens = NULL;
	ntokens = 0;
}

