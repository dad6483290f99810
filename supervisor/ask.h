/*
 * ask.h: HTTP exchanges that wait for a request (ask.c): OpenAI's
 * completions and embeddings, and modeld's load and unload.
 */
#ifndef ASK_H
#define ASK_H

#include <stdbool.h>

#include <event2/http.h>

#include "../proto/proto.h"

/* A token stream whose client leaves this much unread is cancelled, with an error event. */
#define HTTP_STREAM_MAX_OWED (256u << 10)

/* POST /v1/completions (chat false), /v1/chat/completions, /v1/embeddings; admin: the client may autoload. */
void ask_completion(struct evhttp_request *er, bool chat, bool embeddings, bool admin);
/* POST /api/load and /api/unload (op): the socket's ops, for administrators; the reply comes when they end. */
void ask_admin(struct evhttp_request *er, enum op op, bool admin);

#endif
