/*
 * http.c: modeld's HTTP listener (libevent's evhttp, on the same loop).
 *
 * Off unless the config's `http` names ADDRESS:PORT. A loopback address
 * serves anyone on the host, as the control socket's mode does; any other
 * needs `http_token_file`, and then every request a bearer token from it
 * (a token marked admin for what only administrators may do). Headers,
 * bodies and idle connections are bounded.
 *
 * GET /healthz: the loop is turning. GET /readyz: 200 once every slot with
 * a default_model has it ready, else 503 with the reasons. GET /v1/models:
 * every configured model, as OpenAI's API lists them, and where it is
 * loaded, as llama-swap and LM Studio show.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "../proto/log.h"
#include "modeld.h"

struct token {
	char *value;
	bool admin;
};

static struct evhttp *http;
static struct token *tokens;
static size_t ntokens;

/* Sends a JSON body (taken) with status; errors have OpenAI's shape. */
static void send_json(struct evhttp_request *req, int status, json_t *body)
{
	struct evbuffer *out = evbuffer_new();
	char *text = json_dumps(body, JSON_COMPACT);

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evbuffer_add_printf(out, "%s\n", text ? text : "{}");
	evhttp_send_reply(req, status, NULL, out);
	evbuffer_free(out);
	free(text);
	json_decref(body);
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

static void on_healthz(struct evhttp_request *req)
{
	send_json(req, HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

/* Ready once every slot with a default model has it ready; the reasons otherwise. */
static void on_readyz(struct evhttp_request *req)
{
	json_t *waiting = json_array();

	for (size_t i = 0; i < md.nslots; i++) {
		const struct slot *s = &md.slots[i].s;
		const char *want = s->conf->default_model;
		if (want && !(s->state == SS_READY && s->model && strcmp(s->model->name, want) == 0))
			json_array_append_new(waiting, json_pack("{s:s, s:s, s:s}", "slot", s->conf->name,
								 "model", want, "state",
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

/* Every configured model, with the slots that have it ready. */
static void on_models(struct evhttp_request *req)
{
	json_t *data = json_array();

	for (size_t i = 0; i < md.conf.nmodels; i++) {
		const struct model *m = &md.conf.models[i];
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

static void on_request(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

	if (ntokens && !bearer(req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
		send_error(req, 401, "invalid_request_error", "unauthorized", "a bearer token is required");
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		send_error(req, 405, "invalid_request_error", "method_not_allowed", "this path takes GET");
		return;
	}
	if (path && strcmp(path, "/healthz") == 0)
		on_healthz(req);
	else if (path && strcmp(path, "/readyz") == 0)
		on_readyz(req);
	else if (path && strcmp(path, "/v1/models") == 0)
		on_models(req);
	else
		send_error(req, 404, "invalid_request_error", "not_found", "no such path");
}

/* "TOKEN" or "TOKEN admin" a line; # comments. 0, or -1 with err at file:line. */
static int read_tokens(const char *file, char *err, size_t errlen)
{
	struct stat st;
	char line[512];
	int n = 0;
	FILE *f = fopen(file, "re");

	if (!f || fstat(fileno(f), &st) < 0) {
		snprintf(err, errlen, "http_token_file %s: %s", file, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	if (st.st_mode & S_IROTH)
		log_warn("http_token_file %s is readable by every user: chmod o-r it", file);
	while (fgets(line, sizeof line, f)) {
		char value[256], mark[16];
		int fields;
		n++;
		if (line[strspn(line, " \t\r\n")] == '\0' || line[strspn(line, " \t")] == '#')
			continue;
		fields = sscanf(line, "%255s %15s", value, mark);
		if (fields < 1 || (fields == 2 && strcmp(mark, "admin") != 0) || strlen(value) < HTTP_TOKEN_MIN) {
			snprintf(err, errlen, "%s:%d: a line is TOKEN (at least %d characters) or TOKEN admin", file,
				 n, HTTP_TOKEN_MIN);
			fclose(f);
			return -1;
		}
		tokens = realloc(tokens, (ntokens + 1) * sizeof *tokens);
		if (!tokens || !(tokens[ntokens].value = strdup(value)))
			abort();
		tokens[ntokens++].admin = fields == 2;
	}
	fclose(f);
	if (ntokens == 0) {
		snprintf(err, errlen, "http_token_file %s: no token in it", file);
		return -1;
	}
	return 0;
}

/* Splits ADDRESS:PORT ([V6]:PORT); whether the address is a loopback one. */
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

int http_listen(char *err, size_t errlen)
{
	char host[64];
	unsigned port;
	bool loopback;
	struct evhttp_bound_socket *bound;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;

	if (!md.conf.http)
		return 0;
	if (parse_address(md.conf.http, host, sizeof host, &port, &loopback) < 0) {
		snprintf(err, errlen, "http: \"%s\" is not ADDRESS:PORT (an IPv4 or [IPv6] address)",
			 md.conf.http);
		return -1;
	}
	if (!loopback && !md.conf.http_token_file) {
		snprintf(err, errlen, "http: %s is not a loopback address; serving it needs http_token_file",
			 host);
		return -1;
	}
	if (md.conf.http_token_file && read_tokens(md.conf.http_token_file, err, errlen) < 0)
		return -1;
	http = evhttp_new(md.base);
	evhttp_set_max_headers_size(http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(http, HTTP_MAX_BODY);
	evhttp_set_timeout(http, HTTP_TIMEOUT_SECONDS);
	evhttp_set_gencb(http, on_request, NULL);
	if (!(bound = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port))) {
		snprintf(err, errlen, "http: cannot listen on %s: %s", md.conf.http, strerror(errno));
		return -1;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
			     ((struct sockaddr_in *)&ss)->sin_port);
	log_info("http: listening on %s port %u%s", host, port, ntokens ? " (bearer tokens)" : "");
	return 0;
}

void http_close(void)
{
	if (http)
		evhttp_free(http);
	http = NULL;
	for (size_t i = 0; i < ntokens; i++)
		free(tokens[i].value);
	free(tokens);
	tokens = NULL;
	ntokens = 0;
}
