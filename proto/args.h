/*
 * args.h: a request's arguments, whatever their wire format.
 *
 * A socket client's request is a msgpack map, an HTTP client's a JSON
 * object; both are read through these readers, so that one reader per
 * request shape (gen.c, supervisor/req.c) gives both faces the same bounds
 * and the same error messages. A struct arg points into the decoded
 * message it came from and lives no longer than it.
 */
#ifndef ARGS_H
#define ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <msgpack.h>

#include "msg.h"

/* One value of a message: its node, or none (absent, or nil/null). */
struct arg {
	bool json;
	const void *node;	/* a msgpack_object or a json_t; NULL: none */
};

enum arg_type { ARG_NONE, ARG_BOOL, ARG_UINT, ARG_NINT, ARG_REAL, ARG_STR, ARG_ARRAY, ARG_MAP, ARG_OTHER };

struct arg arg_msgpack(const msgpack_object *o);
struct arg arg_json(const json_t *j);
enum arg_type arg_type(struct arg a);
/* The value of key in map; none when map is not a map, or key is absent or nil. */
struct arg arg_get(struct arg map, const char *key);
/* An array's length (0 for anything else), and its item i. */
size_t arg_len(struct arg a);
struct arg arg_at(struct arg a, size_t i);
/* A string's bytes (not NUL-terminated); false for anything else. */
bool arg_bytes(struct arg a, const char **s, size_t *n);
/* A non-negative integer's value. */
uint64_t arg_uint(struct arg a);

/* The keyed readers: MSG_OK, MSG_MISSING (absent or nil) or MSG_BAD_TYPE, as msg.h's. */
int arg_u64(struct arg map, const char *key, uint64_t *out);
/* A number: a real, or an integer converted to double. */
int arg_f64(struct arg map, const char *key, double *out);
int arg_bool(struct arg map, const char *key, bool *out);
/* Copies into a NUL-terminated string (malloc'd); strings holding NUL are MSG_BAD_TYPE. */
int arg_strdup(struct arg map, const char *key, char **out);
/* An array of integers from 0 to UINT32_MAX, copied into *out (malloc'd). */
int arg_u32s(struct arg map, const char *key, uint32_t **out, size_t *n);

#endif
