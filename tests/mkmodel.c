/*
 * mkmodel: writes a reference-model file whose output is known.
 *
 *   mkmodel OUT --n N [--a A] [--c C] [--dtype f32|f16|bf16] [--eos E] [--pad BYTES]
 *           [--random-pad SEED]
 *
 * V = D = H = N, tok_embed and w2 the identity, w1 the permutation
 * p(t) = (t * A + C) mod N, biases 0: each step maps t to p(t). A must be
 * coprime to N. --pad adds a tensor of that many bytes, for load tests: a
 * hole in the file, or with --random-pad, pseudo-random bytes that a loader
 * cannot get right by accident.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

struct opts {
	const char *out;
	unsigned long n, a, c, eos, pad, seed;
	int has_eos;
	const char *dtype;
};

static unsigned long gcd(unsigned long x, unsigned long y)
{
	while (y) {
		unsigned long t = x % y;
		x = y;
		y = t;
	}
	return x;
}

static size_t esize(const char *dtype)
{
	return strcmp(dtype, "F32") == 0 ? 4 : 2;
}

/* Writes v (0 or 1) in dtype. F16 1.0 = 0x3c00, BF16 1.0 = 0x3f80. */
static void put(unsigned char *p, const char *dtype, int one)
{
	if (strcmp(dtype, "F32") == 0) {
		float f = one ? 1.0f : 0.0f;
		memcpy(p, &f, 4);
	} else {
		uint16_t h = one ? (strcmp(dtype, "F16") == 0 ? 0x3c00 : 0x3f80) : 0;
		memcpy(p, &h, 2);
	}
}

static json_t *tensor(const char *dtype, unsigned long d0, unsigned long d1, uint64_t *off, uint64_t bytes)
{
	json_t *t = json_object();
	json_object_set_new(t, "dtype", json_string(dtype));
	json_t *shape = json_array();
	json_array_append_new(shape, json_integer((json_int_t)d0));
	if (d1)
		json_array_append_new(shape, json_integer((json_int_t)d1));
	json_object_set_new(t, "shape", shape);
	json_t *offs = json_array();
	json_array_append_new(offs, json_integer((json_int_t)*off));
	json_array_append_new(offs, json_integer((json_int_t)(*off + bytes)));
	json_object_set_new(t, "data_offsets", offs);
	*off += bytes;
	return t;
}

/* n bytes of xorshift64 output from seed. */
static int write_random(FILE *f, uint64_t n, uint64_t x)
{
	uint64_t buf[8192];

	while (n > 0) {
		for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = x;
		}
		size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
		if (fwrite(buf, 1, k, f) != k)
			return -1;
		n -= k;
	}
	return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .a = 1, .dtype = "F32" };
	if (argc < 2)
		return -1;
	o->out = argv[1];
	for (int i = 2; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (strcmp(k, "--dtype") == 0) {
			o->dtype = strcmp(v, "f16") == 0 ? "F16" : strcmp(v, "bf16") == 0 ? "BF16" : "F32";
			continue;
		}
		unsigned long x = strtoul(v, NULL, 10);
		if (strcmp(k, "--n") == 0) o->n = x;
		else if (strcmp(k, "--a") == 0) o->a = x;
		else if (strcmp(k, "--c") == 0) o->c = x;
		else if (strcmp(k, "--eos") == 0) { o->eos = x; o->has_eos = 1; }
		else if (strcmp(k, "--pad") == 0) o->pad = x;
		else if (strcmp(k, "--random-pad") == 0) o->seed = x ? x : 1;
		else return -1;
	}
	if (argc % 2 != 0 || o->n == 0 || gcd(o->a, o->n) != 1)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;

	if (parse(argc, argv, &o) < 0) {
		fprintf(stderr, "usage: mkmodel OUT --n N [--a A] [--c C] [--dtype f32|f16|bf16] "
				"[--eos E] [--pad BYTES]   (A coprime to N)\n");
		return 2;
	}
	size_t es = esize(o.dtype), n = o.n;
	uint64_t off = 0, mat = (uint64_t)n * n * es, vec = (uint64_t)n * es;
	json_t *h = json_object(), *meta = json_object();
	json_object_set_new(meta, "modeld.arch", json_string("mlp-lm"));
	if (o.has_eos) {
		char eos[32];
		snprintf(eos, sizeof eos, "%lu", o.eos);
		json_object_set_new(meta, "modeld.eos", json_string(eos));
	}
	json_object_set_new(h, "__metadata__", meta);
	json_object_set_new(h, "tok_embed", tensor(o.dtype, n, n, &off, mat));
	json_object_set_new(h, "w1", tensor(o.dtype, n, n, &off, mat));
	json_object_set_new(h, "b1", tensor(o.dtype, n, 0, &off, vec));
	json_object_set_new(h, "w2", tensor(o.dtype, n, n, &off, mat));
	json_object_set_new(h, "b2", tensor(o.dtype, n, 0, &off, vec));
	if (o.pad)
		json_object_set_new(h, "pad", tensor("U8", o.pad, 0, &off, o.pad));
	char *text = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(h);

	FILE *f = fopen(o.out, "wb");
	if (!f) {
		fprintf(stderr, "mkmodel: %s: %s\n", o.out, strerror(errno));
		return 1;
	}
	uint64_t hlen = strlen(text);
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(hlen >> (8 * i));
	fwrite(le, 1, 8, f);
	fwrite(text, 1, hlen, f);
	free(text);

	unsigned char *row = calloc(n, es);
	for (int t = 0; t < 4; t++) {	/* tok_embed, w1, (b1 between), w2 */
		if (t == 2) {		/* b1: zeros */
			memset(row, 0, n * es);
			fwrite(row, es, n, f);
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			size_t one = t == 1 ? (i * o.a + o.c) % n : i;
			memset(row, 0, n * es);
			put(row + one * es, o.dtype, 1);
			fwrite(row, es, n, f);
		}
	}
	memset(row, 0, n * es);
	fwrite(row, es, n, f);	/* b2 */
	free(row);
	if (o.seed && write_random(f, o.pad, o.seed) != 0) {
		fprintf(stderr, "mkmodel: %s: write failed\n", o.out);
		return 1;
	}
	/* Otherwise the padding is a hole: large fixtures cost no disk. */
	if (fflush(f) != 0 || (!o.seed && ftruncate(fileno(f), ftell(f) + (off_t)o.pad) != 0)) {
		fprintf(stderr, "mkmodel: %s: cannot extend: %s\n", o.out, strerror(errno));
		return 1;
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "mkmodel: %s: write failed\n", o.out);
		return 1;
	}
	return 0;
}
