/* proto.c: the name tables of proto.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto.h"

static const char *const op_names[OP__COUNT] = {
	[OP_HELLO] = "hello",		[OP_STATUS] = "status",
	[OP_MODELS] = "models",		[OP_DEVICES] = "devices",
	[OP_LOAD] = "load",		[OP_UNLOAD] = "unload",
	[OP_RESTART] = "restart",	[OP_INFER] = "infer",
	[OP_CANCEL] = "cancel",		[OP_SUBSCRIBE] = "subscribe",
	[OP_UNSUBSCRIBE] = "unsubscribe", [OP_RELOAD] = "reload",
	[OP_TOKENIZE] = "tokenize",	[OP_DETOKENIZE] = "detokenize",
	[OP_EMBED] = "embed",
	[OP_JOBS] = "jobs",
};

static const char *const err_names[E__COUNT] = {
	[E_NONE] = "ok",
	[E_BAD_FRAME] = "bad_frame",
	[E_BAD_REQUEST] = "bad_request",
	[E_UNKNOWN_OP] = "unknown_op",
	[E_UNSUPPORTED_PROTO] = "unsupported_proto",
	[E_UNKNOWN_MODEL] = "unknown_model",
	[E_UNKNOWN_SLOT] = "unknown_slot",
	[E_NOT_LOADED] = "not_loaded",
	[E_NOT_READY] = "not_ready",
	[E_BUSY] = "busy",
	[E_TIMEOUT] = "timeout",
	[E_CANCELLED] = "cancelled",
	[E_SUPERSEDED] = "superseded",
	[E_LOAD_FAILED] = "load_failed",
	[E_INSUFFICIENT_MEMORY] = "insufficient_memory",
	[E_WORKER_CRASHED] = "worker_crashed",
	[E_UNAUTHORIZED] = "unauthorized",
	[E_TOO_LARGE] = "too_large",
	[E_SHUTTING_DOWN] = "shutting_down",
	[E_SERVICE_UNAVAILABLE] = "service_unavailable",
	[E_BAD_CONFIG] = "bad_config",
	[E_INTERNAL] = "internal",
};

static const char *const event_names[EVK__COUNT] = {
	[EVK_STATE] = "state",
	[EVK_PROGRESS] = "progress",
	[EVK_JOB] = "job",
	[EVK_GPU] = "gpu",
	[EVK_ADVISORY] = "advisory",
};

/* Index of the entry of names[] equal to the n bytes at s, or -1. */
static int lookup(const char *const *names, int count, const char *s, size_t n)
{
	for (int i = 0; i < count; i++)
		if (names[i] && strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
			return i;
	return -1;
}

const char *proto_op_name(enum op op)
{
	return (op >= 0 && op < OP__COUNT) ? op_names[op] : "unknown";
}

enum op proto_op_parse(const char *s, size_t len)
{
	return (enum op)lookup(op_names, OP__COUNT, s, len);
}

const char *proto_err_name(enum err e)
{
	return (e >= 0 && e < E__COUNT) ? err_names[e] : "internal";
}

/* Unknown names map to E_INTERNAL: a worker may only send codes we know. */
enum err proto_err_parse(const char *s, size_t len)
{
	int i = lookup(err_names, E__COUNT, s, len);
	return i < 0 ? E_INTERNAL : (enum err)i;
}

const char *proto_event_name(enum event_kind k)
{
	return (k >= 0 && k < EVK__COUNT) ? event_names[k] : "unknown";
}

int proto_event_parse(const char *s, size_t len)
{
	return lookup(event_names, EVK__COUNT, s, len);
}

char *proto_default_socket(void)
{
	const char *env = getenv("MODELD_SOCKET"), *xdg = getenv("XDG_RUNTIME_DIR");
	char *path;
	int n;

	if (env && *env)
		n = asprintf(&path, "%s", env);
	else if (xdg && *xdg)
		n = asprintf(&path, "%s/modeld.sock", xdg);
	else
		n = asprintf(&path, "%s", geteuid() == 0 ? PROTO_SYSTEM_SOCKET : "./modeld.sock");
	if (n < 0)
		abort();
	return path;
}

char *proto_client_socket(void)
{
	char *path = proto_default_socket();
	struct stat st;

	/* a user's client finds the system's daemon when there is none of its own */
	if (!getenv("MODELD_SOCKET") && stat(path, &st) < 0 && stat(PROTO_SYSTEM_SOCKET, &st) == 0) {
		free(path);
		path = strdup(PROTO_SYSTEM_SOCKET);
		if (!path)
			abort();
	}
	return path;
}

#define CASE(x) case x: return #x
const char *proto_wmsg_name(int type)
{
	switch (type) {
	CASE(WM_LOAD); CASE(WM_PING); CASE(WM_INFER); CASE(WM_CANCEL); CASE(WM_STOP);
	CASE(WM_TOKENIZE); CASE(WM_DETOKENIZE); CASE(WM_EMBED);
	CASE(WM_PROGRESS); CASE(WM_LOADED); CASE(WM_WARMED); CASE(WM_FAILED);
	CASE(WM_PONG); CASE(WM_TOKENS); CASE(WM_DONE); CASE(WM_INFER_FAILED);
	}
	return "WM_UNKNOWN";
}
#undef CASE

int proto_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}
