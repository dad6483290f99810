/* msg.c: the msgpack writer and typed readers of msg.h. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "msg.h"

/*
 * Containers are written with their 32-bit forms (0xdf map, 0xdd array),
 * whose counts can be patched in place on close. Every decoder accepts the
 * wider forms, and the few extra bytes buy callers freedom from counting.
 */
static void count_item(struct msgw *w)
{
	if (w->depth > 0)
		w->open[w->depth - 1].items++;
}

void msgw_init(struct msgw *w)
{
	static const char header[FRAME_HEADER_LEN];

	msgpack_sbuffer_init(&w->sb);
	msgpack_packer_init(&w->pk, &w->sb, msgpack_sbuffer_write);
	msgpack_sbuffer_write(&w->sb, header, sizeof header);
	w->depth = 0;
	w->past_limit = 0;
	w->too_deep = false;
}

void msgw_free(struct msgw *w)
{
	msgpack_sbuffer_destroy(&w->sb);
}

static void open_container(struct msgw *w, unsigned char tag, bool is_map)
{
	static const char zero[4];

	if (w->depth == MSGW_MAX_DEPTH) {
		w->past_limit++;
		w->too_deep = true;
		return;
	}
	count_item(w);
	msgpack_sbuffer_write(&w->sb, (const char *)&tag, 1);
	w->open[w->depth].offset = w->sb.size;
	w->open[w->depth].items = 0;
	w->open[w->depth].is_map = is_map;
	msgpack_sbuffer_write(&w->sb, zero, sizeof zero);
	w->depth++;
}

void msgw_map(struct msgw *w) { open_container(w, 0xdf, true); }
void msgw_array(struct msgw *w) { open_container(w, 0xdd, false); }

void msgw_end(struct msgw *w)
{
	if (w->past_limit > 0) {
		w->past_limit--;
		return;
	}
	if (w->depth == 0)
		abort();
	w->depth--;
	uint32_t n = w->open[w->depth].items;
	if (w->open[w->depth].is_map)
		n /= 2;
	unsigned char *p = (unsigned char *)w->sb.data + w->open[w->depth].offset;
	p[0] = n >> 24; p[1] = n >> 16; p[2] = n >> 8; p[3] = n;
}

void msgw_nil(struct msgw *w) { count_item(w); msgpack_pack_nil(&w->pk); }

void msgw_bool(struct msgw *w, bool v)
{
	count_item(w);
	if (v)
		msgpack_pack_true(&w->pk);
	else
		msgpack_pack_false(&w->pk);
}

void msgw_u64(struct msgw *w, uint64_t v) { count_item(w); msgpack_pack_uint64(&w->pk, v); }
void msgw_i64(struct msgw *w, int64_t v) { count_item(w); msgpack_pack_int64(&w->pk, v); }
void msgw_f64(struct msgw *w, double v) { count_item(w); msgpack_pack_double(&w->pk, v); }

void msgw_f32s(struct msgw *w, const float *v, size_t n)
{
	msgw_array(w);
	for (size_t i = 0; i < n; i++) {
		count_item(w);
		msgpack_pack_float(&w->pk, v[i]);
	}
	msgw_end(w);
}

/* The length of the valid UTF-8 character (RFC 3629) that s starts with, or 0. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
	size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3 :
		     s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;

	if (len == 0 || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	/* overlong forms, surrogates and code points past U+10FFFF */
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return len;
}

size_t msg_utf8_run(const char *s, size_t n)
{
	size_t i = 0, len;

	while (i < n && (len = utf8_char_len((const unsigned char *)s + i, n - i)) > 0)
		i += len;
	return i;
}

/*
 * Strings go out as valid UTF-8, whatever they came from (a client's op
 * name cut short, the text of arbitrary token ids): each byte that is not
 * part of a valid character is written as U+FFFD.
 */
void msgw_strn(struct msgw *w, const char *s, size_t n)
{
	static const char replacement[] = "\xef\xbf\xbd";
	size_t run = msg_utf8_run(s, n), bad = 0;

	count_item(w);
	for (size_t i = run; i < n; i++, bad++)
		i += msg_utf8_run(s + i + 1, n - i - 1);
	msgpack_pack_str(&w->pk, n + bad * (sizeof replacement - 2));
	for (size_t i = 0; i < n; i++) {
		run = msg_utf8_run(s + i, n - i);
		msgpack_pack_str_body(&w->pk, s + i, run);
		i += run;
		if (i < n)
			msgpack_pack_str_body(&w->pk, replacement, sizeof replacement - 1);
	}
}

void msgw_str(struct msgw *w, const char *s)
{
	if (s)
		msgw_strn(w, s, strlen(s));
	else
		msgw_nil(w);
}

void msgw_u32s(struct msgw *w, const uint32_t *v, size_t n)
{
	msgw_array(w);
	for (size_t i = 0; i < n; i++)
		msgw_u64(w, v[i]);
	msgw_end(w);
}

void msgw_key(struct msgw *w, const char *key) { msgw_str(w, key); }
void msgw_kstr(struct msgw *w, const char *k, const char *s) { msgw_key(w, k); msgw_str(w, s); }
void msgw_ku64(struct msgw *w, const char *k, uint64_t v) { msgw_key(w, k); msgw_u64(w, v); }
void msgw_kbool(struct msgw *w, const char *k, bool v) { msgw_key(w, k); msgw_bool(w, v); }
void msgw_knil(struct msgw *w, const char *k) { msgw_key(w, k); msgw_nil(w); }

void msgw_wmsg(struct msgw *w, int type)
{
	msgw_init(w);
	msgw_map(w);
	msgw_ku64(w, "t", (uint64_t)type);
}

bool msgw_too_deep(const struct msgw *w)
{
	return w->too_deep;
}

const void *msgw_frame(struct msgw *w, size_t *len)
{
	if (w->depth != 0 || w->too_deep)
		abort();	/* a programming error: the writers of fixed shapes stay shallow */
	uint32_t n = (uint32_t)(w->sb.size - FRAME_HEADER_LEN);
	unsigned char *p = (unsigned char *)w->sb.data;
	p[0] = n >> 24; p[1] = n >> 16; p[2] = n >> 8; p[3] = n;
	*len = w->sb.size;
	return w->sb.data;
}

const msgpack_object *msg_get(const msgpack_object *map, const char *key)
{
	size_t klen = strlen(key);

	if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == klen &&
		    memcmp(kv->key.via.str.ptr, key, klen) == 0)
			return &kv->val;
	}
	return NULL;
}

/* The value of key, or NULL when it is absent or nil. */
static const msgpack_object *present(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = msg_get(map, key);
	return (o && o->type != MSGPACK_OBJECT_NIL) ? o : NULL;
}

int msg_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
	const msgpack_object *o = present(map, key);
	if (!o)
		return MSG_MISSING;
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return MSG_BAD_TYPE;
	*out = o->via.u64;
	return MSG_OK;
}

int msg_f64(const msgpack_object *map, const char *key, double *out)
{
	const msgpack_object *o = present(map, key);
	if (!o)
		return MSG_MISSING;
	switch (o->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; break;
	default: return MSG_BAD_TYPE;
	}
	return MSG_OK;
}

int msg_bool(const msgpack_object *map, const char *key, bool *out)
{
	const msgpack_object *o = present(map, key);
	if (!o)
		return MSG_MISSING;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return MSG_BAD_TYPE;
	*out = o->via.boolean;
	return MSG_OK;
}

int msg_str(const msgpack_object *map, const char *key, const char **s, size_t *len)
{
	const msgpack_object *o = present(map, key);
	if (!o)
		return MSG_MISSING;
	if (o->type != MSGPACK_OBJECT_STR)
		return MSG_BAD_TYPE;
	*s = o->via.str.ptr;
	*len = o->via.str.size;
	return MSG_OK;
}

int msg_strdup(const msgpack_object *map, const char *key, char **out)
{
	const char *s;
	size_t n;
	int rc = msg_str(map, key, &s, &n);

	if (rc != MSG_OK)
		return rc;
	if (memchr(s, '\0', n))
		return MSG_BAD_TYPE;
	*out = strndup(s, n);
	if (*out == NULL)
		abort();
	return MSG_OK;
}

int msg_array(const msgpack_object *map, const char *key, const msgpack_object_array **out)
{
	const msgpack_object *o = present(map, key);
	if (!o)
		return MSG_MISSING;
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return MSG_BAD_TYPE;
	*out = &o->via.array;
	return MSG_OK;
}

int msg_u32s(const msgpack_object *map, const char *key, uint32_t **out, size_t *n)
{
	const msgpack_object_array *a;
	int rc = msg_array(map, key, &a);

	if (rc != MSG_OK)
		return rc;
	for (uint32_t i = 0; i < a->size; i++)
		if (a->ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    a->ptr[i].via.u64 > UINT32_MAX)
			return MSG_BAD_TYPE;
	*out = calloc(a->size ? a->size : 1, sizeof **out);
	if (*out == NULL)
		abort();
	for (uint32_t i = 0; i < a->size; i++)
		(*out)[i] = (uint32_t)a->ptr[i].via.u64;
	*n = a->size;
	return MSG_OK;
}
