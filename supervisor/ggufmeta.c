/*
 * ggufmeta.c: the few numbers of a GGUF file's metadata that modeld's memory
 * check needs (ggufmeta.h), read without trusting the file.
 *
 * A GGUF file begins: "GGUF", u32 version (2 or 3), u64 tensor count, u64
 * key-value count, then each key-value as a string key (u64 length, bytes),
 * a u32 type and a value; arrays are a u32 item type, a u64 count and the
 * items. Everything is little-endian. Values not needed are skipped, the
 * tokenizer's arrays of strings among them, without allocating for them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ggufmeta.h"

#define GGUFMETA_BUF 65536
#define GGUFMETA_MAX_KEY 256
#define GGUFMETA_MAX_KVS 1000000ull
#define GGUFMETA_MAX_STRING (64ull << 20)

enum gtype {
	GT_U8, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STRING, GT_ARRAY,
	GT_U64, GT_I64, GT_F64, GT__COUNT
};

static const unsigned scalar_size[GT__COUNT] = {
	[GT_U8] = 1, [GT_I8] = 1, [GT_U16] = 2, [GT_I16] = 2, [GT_U32] = 4, [GT_I32] = 4,
	[GT_F32] = 4, [GT_BOOL] = 1, [GT_U64] = 8, [GT_I64] = 8, [GT_F64] = 8,
};

/* A buffered reader over pread. */
struct rd {
	int fd;
	uint64_t off;			/* of buf[0] in the file */
	unsigned char buf[GGUFMETA_BUF];
	size_t len, pos;
	const char *err;
};

static int fill(struct rd *r, size_t need)
{
	if (r->len - r->pos >= need)
		return 0;
	memmove(r->buf, r->buf + r->pos, r->len - r->pos);
	r->off += r->pos;
	r->len -= r->pos;
	r->pos = 0;
	while (r->len < need) {
		ssize_t n = pread(r->fd, r->buf + r->len, sizeof r->buf - r->len, (off_t)(r->off + r->len));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r->err = n < 0 ? strerror(errno) : "the metadata ends early";
			return -1;
		}
		r->len += (size_t)n;
	}
	return 0;
}

static int get(struct rd *r, void *out, size_t n)
{
	if (fill(r, n))
		return -1;
	memcpy(out, r->buf + r->pos, n);
	r->pos += n;
	return 0;
}

/* A little-endian unsigned integer of n bytes (x86 and arm64 hosts are little-endian too). */
static int get_uint(struct rd *r, size_t n, uint64_t *v)
{
	unsigned char b[8];

	if (get(r, b, n))
		return -1;
	*v = 0;
	for (size_t i = n; i-- > 0;)
		*v = *v << 8 | b[i];
	return 0;
}

static int skip(struct rd *r, uint64_t n)
{
	while (n) {
		size_t step = n < sizeof r->buf ? (size_t)n : sizeof r->buf;
		if (fill(r, step))
			return -1;
		r->pos += step;
		n -= step;
	}
	return 0;
}

/* A string's length, checked; its bytes follow. */
static int get_strlen(struct rd *r, uint64_t *n)
{
	if (get_uint(r, 8, n))
		return -1;
	if (*n > GGUFMETA_MAX_STRING) {
		r->err = "a string is longer than any GGUF file holds";
		return -1;
	}
	return 0;
}

static int skip_value(struct rd *r, uint64_t type)
{
	uint64_t n, item, count;

	if (type < GT__COUNT && scalar_size[type])
		return skip(r, scalar_size[type]);
	if (type == GT_STRING)
		return get_strlen(r, &n) || skip(r, n);
	if (type != GT_ARRAY || get_uint(r, 4, &item) || get_uint(r, 8, &count)) {
		if (!r->err)
			r->err = "a value has an unknown type";
		return -1;
	}
	if (item == GT_ARRAY) {
		r->err = "arrays of arrays are not GGUF";
		return -1;
	}
	if (item < GT__COUNT && scalar_size[item])	/* a bound: the file ends first if it lies */
		return count > UINT64_MAX / scalar_size[item] ? (r->err = "an array is too long", -1) :
		       skip(r, count * scalar_size[item]);
	for (uint64_t i = 0; i < count; i++)
		if (skip_value(r, item))
			return -1;
	return 0;
}

/* The numbers wanted, by key suffix after "<arch>.". */
static const struct { const char *suffix; size_t field; } wanted[] = {
	{ ".block_count", offsetof(struct ggufmeta, layers) },
	{ ".embedding_length", offsetof(struct ggufmeta, embd) },
	{ ".attention.head_count", offsetof(struct ggufmeta, heads) },
	{ ".attention.head_count_kv", offsetof(struct ggufmeta, heads_kv) },
	{ ".context_length", offsetof(struct ggufmeta, ctx_train) },
	{ ".attention.key_length", offsetof(struct ggufmeta, key_length) },
	{ ".attention.value_length", offsetof(struct ggufmeta, value_length) },
};
#define NWANTED (sizeof wanted / sizeof wanted[0])

/* What a key-value offers: its value when it is an integer and its key ends as one wanted. */
struct seen {
	char prefix[NWANTED][GGUFMETA_MAX_KEY];	/* the key less the suffix */
	uint64_t value[NWANTED];
	bool found[NWANTED];
	char arch[GGUFMETA_MAX_KEY];
};

static int read_kv(struct rd *r, struct seen *s)
{
	char key[GGUFMETA_MAX_KEY];
	uint64_t klen, type, v;

	if (get_strlen(r, &klen))
		return -1;
	if (klen >= sizeof key) {
		r->err = "a key is too long";
		return -1;
	}
	if (get(r, key, (size_t)klen) || get_uint(r, 4, &type))
		return -1;
	key[klen] = '\0';
	if (type == GT_STRING && strcmp(key, "general.architecture") == 0) {
		if (get_strlen(r, &v))
			return -1;
		if (v >= sizeof s->arch) {
			r->err = "the architecture's name is too long";
			return -1;
		}
		s->arch[v] = '\0';
		return get(r, s->arch, (size_t)v);
	}
	if (type != GT_U32 && type != GT_U64 && type != GT_I32)
		return skip_value(r, type);
	if (get_uint(r, scalar_size[type], &v))
		return -1;
	if (type == GT_I32 && v > INT32_MAX)
		v = 0;
	for (size_t i = 0; i < NWANTED; i++) {
		size_t n = strlen(key), k = strlen(wanted[i].suffix);
		if (n > k && strcmp(key + n - k, wanted[i].suffix) == 0) {
			snprintf(s->prefix[i], sizeof s->prefix[i], "%.*s", (int)(n - k), key);
			s->value[i] = v;
			s->found[i] = true;
		}
	}
	return 0;
}

int ggufmeta_read(int fd, struct ggufmeta *m, char err[GGUFMETA_ERR_LEN])
{
	static struct rd r;	/* one at a time, on the event loop; 64 KiB stays off the stack */
	static struct seen s;
	uint64_t version, ntensors, nkv;
	char magic[4];

	memset(m, 0, sizeof *m);
	memset(&s, 0, sizeof s);
	r = (struct rd){ .fd = fd };
	if (get(&r, magic, 4) || memcmp(magic, "GGUF", 4) || get_uint(&r, 4, &version) ||
	    (version != 2 && version != 3) || get_uint(&r, 8, &ntensors) || get_uint(&r, 8, &nkv)) {
		snprintf(err, GGUFMETA_ERR_LEN, "not a GGUF file (version 2 or 3)");
		return -1;
	}
	if (nkv > GGUFMETA_MAX_KVS) {
		snprintf(err, GGUFMETA_ERR_LEN, "%llu key-values is more than GGUF files hold",
			 (unsigned long long)nkv);
		return -1;
	}
	for (uint64_t i = 0; i < nkv; i++)
		if (read_kv(&r, &s)) {
			snprintf(err, GGUFMETA_ERR_LEN, "key-value %llu: %s", (unsigned long long)i, r.err);
			return -1;
		}
	for (size_t i = 0; i < NWANTED; i++)
		if (s.found[i] && strcmp(s.prefix[i], s.arch) == 0)
			*(uint64_t *)((char *)m + wanted[i].field) = s.value[i];
	if (!s.arch[0] || !m->layers || !m->embd || !m->heads) {
		snprintf(err, GGUFMETA_ERR_LEN, "the metadata lacks the architecture, its layers, width or heads");
		return -1;
	}
	if (!m->heads_kv)
		m->heads_kv = m->heads;
	return 0;
}

/* a x b, or UINT64_MAX where that overflows: an estimate beyond any device, never one that wraps to little */
static uint64_t times(uint64_t a, uint64_t b)
{
	uint64_t r;
	return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

uint64_t ggufmeta_kv_bytes(const struct ggufmeta *m, uint64_t ctx)
{
	uint64_t k = m->key_length ? m->key_length : m->embd / m->heads;
	uint64_t v = m->value_length ? m->value_length : m->embd / m->heads;
	uint64_t kv = k + v < k ? UINT64_MAX : k + v;

	return times(times(times(times(ctx, m->layers), m->heads_kv), kv), GGUFMETA_KV_ELEMENT_BYTES);
}
