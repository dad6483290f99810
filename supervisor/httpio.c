/* httpio.c: what the HTTP files share to answer an exchange (httpio.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "../proto/frame.h"
#include "../proto/json.h"
#include "httpio.h"
#include "httpreq.h"
#include "sse.h"

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
void httpio_json(struct evhttp_request *req, int status, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);

	send_text(req, status, text ? text : "{}", text ? strlen(text) : 2);
	free(text);
	json_decref(body);
}

/* Sends the JSON of w (freed) with status. */
void httpio_jw(struct evhttp_request *req, int status, struct jw *w)
{
	send_text(req, status, w->buf, w->len);
	jw_free(w);
}

void httpio_error(struct evhttp_request *req, int status, const char *type, const char *code,
		       const char *message)
{
	httpio_json(req, status, json_pack("{s:{s:s, s:s, s:s}}", "error", "message", message, "type", type,
					 "code", code));
}

/* A whole msgpack map written into w (freed here) as JSON; NULL if it does not decode. */
json_t *httpio_frame_json(struct msgw *w)
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

/* Bytes written to the client of er and not yet taken. */
size_t httpio_owed(struct evhttp_request *er)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(er);
	return evbuffer_get_length(bufferevent_get_output(evhttp_connection_get_bufferevent(conn)));
}

/* A stream's socket holds at most HTTP_STREAM_SNDBUF for a client that does not read. */
void httpio_bound_send_buffer(struct evhttp_request *er)
{
	int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evhttp_request_get_connection(er)));
	int size = HTTP_STREAM_SNDBUF;

	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* The status OpenAI's clients expect for each of modeld's errors. */
int httpio_status_of(enum err code, const char **type)
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

/* Whether the media type of a Content-Type header is application/json (parameters aside). */
static bool is_json_type(const char *type)
{
	size_t n = strlen("application/json");

	return type && !strncasecmp(type, "application/json", n) && strchr("; \t", type[n]);
}

/* The JSON body of req (an object); NULL with an error reply sent. */
json_t *httpio_read_body(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	json_t *j;
	char msg[256];

	if (!is_json_type(evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"))) {
		httpio_error(req, 415, "invalid_request_error", "bad_request", "Content-Type must be application/json");
		return NULL;
	}
	if (!(j = httpreq_parse((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n, msg, sizeof msg)))
		httpio_error(req, 400, "invalid_request_error", "bad_request", msg);
	return j;
}

