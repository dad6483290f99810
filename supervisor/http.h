/*
 * http.h: the HTTP listener (http.c), when the configuration has one:
 * OpenAI's API (ask.c), JSON views, events (sse.c), metrics.
 */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>

#include <event2/event.h>

#include "config.h"

/* HTTP: bounds on a request, and on an idle connection; the shortest bearer token. */
#define HTTP_MAX_HEADERS (16 << 10)
#define HTTP_TIMEOUT_SECONDS 60
#define HTTP_TOKEN_MIN 16
#define HTTP_TOKEN_MAX 255
#define HTTP_HOST_LEN 64

/* Whether c's http settings would serve (address, tokens read): the check that -t, a start and a
 * reload share. 0, or -1 with err. */
int http_check(const struct config *c, char *err, size_t errlen);
/*
 * Listens on base as the running configuration says (nothing when it has
 * no http); connections hold descriptors below fd_ceiling. 0, or -1 with err.
 */
int http_listen(struct event_base *base, int fd_ceiling, char *err, size_t errlen);
/*
 * As modeld stops: no more connections, and event streams end; requests
 * under way end as their slots end them (an error event, then [DONE]).
 */
void http_stop(void);
/* At exit: every connection goes. */
void http_close(void);

#endif
