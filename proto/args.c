/* args.c: see args.h. */
#include <stdlib.h>
#include <string.h>

#include "args.h"

struct arg arg_msgpack(const msgpack_object *o)
{
	return (struct arg){ false, o && o->type != MSGPACK_OBJECT_NIL ? o : NULL };
}

struct arg arg_json(const json_t *j)
{
	return (struct arg){ true, j && !json_is_null(j) ? j : NULL };
}

static enum arg_type type_of_msgpack(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_BOOLEAN: return ARG_BOOL;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return ARG_UINT;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return ARG_NINT;
	case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return ARG_REAL;
	case MSGPACK_OBJECT_STR: return ARG_STR;
	case MSGPACK_OBJECT_ARRAY: return ARG_ARRAY;
	case MSGPACK_OBJECT_MAP: return ARG_MAP;
	default: return ARG_OTHER;
	}
}

static enum arg_type type_of_json(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_TRUE: case JSON_FALSE: return ARG_BOOL;
	case JSON_INTEGER: return json_integer_value(j) >= 0 ? ARG_UINT : ARG_NINT;
	case JSON_REAL: return ARG_REAL;
	case JSON_STRING: return ARG_STR;
	case JSON_ARRAY: return ARG_ARRAY;
	case JSON_OBJECT: return ARG_MAP;
	default: return ARG_OTHER;
	}
}

enum arg_type arg_type(struct arg a)
{
	if (!a.node)
		return ARG_NONE;
	return a.json ? type_of_json(a.node) : type_of_msgpack(a.node);
}

struct arg arg_get(struct arg map, const char *key)
{
	if (arg_type(map) != ARG_MAP)
		return (struct arg){ map.json, NULL };
	if (map.json)
		return arg_json(json_object_get(map.node, key));
	return arg_msgpack(msg_get(map.node, key));
}

size_t arg_len(struct arg a)
{
	if (arg_type(a) != ARG_ARRAY)
		return 0;
	return a.json ? json_array_size(a.node) : ((const msgpack_object *)a.node)->via.array.size;
}

struct arg arg_at(struct arg a, size_t i)
{
	if (i >= arg_len(a))
		return (struct arg){ a.json, NULL };
	if (a.json)
		return arg_json(json_array_get(a.node, i));
	return arg_msgpack(&((const msgpack_object *)a.node)->via.array.ptr[i]);
}

bool arg_bytes(struct arg a, const char **s, size_t *n)
{
	if (arg_type(a) != ARG_STR)
		return false;
	if (a.json) {
		*s = json_string_value(a.node);
		*n = json_string_length(a.node);
	} else {
		*s = ((const msgpack_object *)a.node)->via.str.ptr;
		*n = ((const msgpack_object *)a.node)->via.str.size;
	}
	return true;
}

uint64_t arg_uint(struct arg a)
{
	if (arg_type(a) != ARG_UINT)
		return 0;
	return a.json ? (uint64_t)json_integer_value(a.node) : ((const msgpack_object *)a.node)->via.u64;
}

int arg_u64(struct arg map, const char *key, uint64_t *out)
{
	struct arg a = arg_get(map, key);

	if (!a.node)
		return MSG_MISSING;
	if (arg_type(a) != ARG_UINT)
		return MSG_BAD_TYPE;
	*out = arg_uint(a);
	return MSG_OK;
}

int arg_f64(struct arg map, const char *key, double *out)
{
	struct arg a = arg_get(map, key);

	switch (arg_type(a)) {
	case ARG_NONE: return MSG_MISSING;
	case ARG_UINT: case ARG_NINT: case ARG_REAL: break;
	default: return MSG_BAD_TYPE;
	}
	if (a.json)
		*out = json_number_value(a.node);
	else if (arg_type(a) == ARG_REAL)
		*out = ((const msgpack_object *)a.node)->via.f64;
	else if (arg_type(a) == ARG_UINT)
		*out = (double)((const msgpack_object *)a.node)->via.u64;
	else
		*out = (double)((const msgpack_object *)a.node)->via.i64;
	return MSG_OK;
}

int arg_bool(struct arg map, const char *key, bool *out)
{
	struct arg a = arg_get(map, key);

	if (!a.node)
		return MSG_MISSING;
	if (arg_type(a) != ARG_BOOL)
		return MSG_BAD_TYPE;
	*out = a.json ? json_is_true((const json_t *)a.node) : ((const msgpack_object *)a.node)->via.boolean;
	return MSG_OK;
}

int arg_strdup(struct arg map, const char *key, char **out)
{
	struct arg a = arg_get(map, key);
	const char *s;
	size_t n;

	if (!a.node)
		return MSG_MISSING;
	if (!arg_bytes(a, &s, &n) || memchr(s, '\0', n))
		return MSG_BAD_TYPE;
	if (!(*out = strndup(s, n)))
		abort();
	return MSG_OK;
}

int arg_u32s(struct arg map, const char *key, uint32_t **out, size_t *n)
{
	struct arg a = arg_get(map, key);
	size_t len = arg_len(a);

	if (!a.node)
		return MSG_MISSING;
	if (arg_type(a) != ARG_ARRAY)
		return MSG_BAD_TYPE;
	for (size_t i = 0; i < len; i++)
		if (arg_type(arg_at(a, i)) != ARG_UINT || arg_uint(arg_at(a, i)) > UINT32_MAX)
			return MSG_BAD_TYPE;
	if (!(*out = calloc(len ? len : 1, sizeof **out)))
		abort();
	for (size_t i = 0; i < len; i++)
		(*out)[i] = (uint32_t)arg_uint(arg_at(a, i));
	*n = len;
	return MSG_OK;
}
