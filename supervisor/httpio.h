/*
 * httpio.h: what the HTTP files (http.c, ask.c, sse.c) share to answer an
 * exchange: JSON replies and errors in OpenAI's shape, the status for each
 * of modeld's errors, a request's JSON body, and a stream's socket.
 */
#ifndef HTTPIO_H
#define HTTPIO_H

#include <stddef.h>

#include <event2/http.h>
#include <jansson.h>

#include "../proto/jw.h"
#include "../proto/msg.h"
#include "../proto/proto.h"

/* Sends a JSON body (taken) with status. */
void httpio_json(struct evhttp_request *req, int status, json_t *body);
/* Sends the JSON of w (freed) with status. */
void httpio_jw(struct evhttp_request *req, int status, struct jw *w);
/* An error in OpenAI's shape: {"error": {message, type, code}}. */
void httpio_error(struct evhttp_request *req, int status, const char *type, const char *code, const char *message);
/* A whole msgpack map written into w (freed here) as JSON; NULL if it does not decode. */
json_t *httpio_frame_json(struct msgw *w);
/* Bytes written to the client of er and not yet taken. */
size_t httpio_owed(struct evhttp_request *er);
/* A stream's socket holds at most HTTP_STREAM_SNDBUF for a client that does not read. */
void httpio_bound_send_buffer(struct evhttp_request *er);
/* The status OpenAI's clients expect for code, and its error type. */
int httpio_status_of(enum err code, const char **type);
/* The JSON body of req (an object, the caller's); NULL with an error reply sent. */
json_t *httpio_read_body(struct evhttp_request *req);

#endif
