/* The GGUF metadata reader behind the memory check: what it takes from a file, and what it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../supervisor/ggufmeta.h"

/* A GGUF header being written. */
struct buf {
	unsigned char b[4096];
	size_t n;
};

static void put(struct buf *b, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		b->b[b->n++] = (unsigned char)(v >> (8 * i));
}

static void put_str(struct buf *b, const char *s)
{
	put(b, strlen(s), 8);
	memcpy(b->b + b->n, s, strlen(s));
	b->n += strlen(s);
}

static void put_u32_kv(struct buf *b, const char *key, uint32_t v)
{
	put_str(b, key);
	put(b, 4, 4);		/* u32 */
	put(b, v, 4);
}

/* A llama model's header, the architecture last (writers may put it anywhere), with an
 * array of strings and a float to skip on the way. */
static void good(struct buf *b)
{
	b->n = 0;
	memcpy(b->b, "GGUF", 4);
	b->n = 4;
	put(b, 3, 4);
	put(b, 0, 8);			/* tensors */
	put(b, 8, 8);			/* key-values */
	put_str(b, "tokenizer.ggml.tokens");
	put(b, 9, 4);			/* array */
	put(b, 8, 4);			/* of strings */
	put(b, 2, 8);
	put_str(b, "<s>");
	put_str(b, "</s>");
	put_str(b, "llama.attention.layer_norm_rms_epsilon");
	put(b, 6, 4);			/* f32 */
	put(b, 0x3727c5ac, 4);
	put_u32_kv(b, "llama.block_count", 22);
	put_u32_kv(b, "llama.embedding_length", 2048);
	put_u32_kv(b, "llama.attention.head_count", 32);
	put_u32_kv(b, "llama.attention.head_count_kv", 4);
	put_u32_kv(b, "llama.context_length", 2048);
	put_str(b, "general.architecture");
	put(b, 8, 4);			/* string */
	put_str(b, "llama");
}

static int read_buf(const struct buf *b, struct ggufmeta *m, char *err)
{
	int fd = memfd_create("gguf", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b->b, b->n), (ssize_t)b->n);
	int rc = ggufmeta_read(fd, m, err);
	close(fd);
	return rc;
}

static void test_reads_a_llama_header(void **state)
{
	(void)state;
	struct buf b;
	struct ggufmeta m;
	char err[GGUFMETA_ERR_LEN];

	good(&b);
	assert_int_equal(read_buf(&b, &m, err), 0);
	assert_int_equal(m.layers, 22);
	assert_int_equal(m.embd, 2048);
	assert_int_equal(m.heads, 32);
	assert_int_equal(m.heads_kv, 4);
	assert_int_equal(m.ctx_train, 2048);
	/* TinyLlama at 2048 tokens: 2048 x 22 layers x 4 heads x (64 + 64) x 2 bytes = 44 MiB */
	assert_int_equal(ggufmeta_kv_bytes(&m, 2048), 2048ull * 22 * 4 * 128 * 2);
}

static void test_an_estimate_too_large_to_count_is_the_largest(void **state)
{
	(void)state;
	struct ggufmeta m = { .layers = 0xffffffffu, .embd = 0xffffffffu, .heads = 1, .heads_kv = 0xffffffffu };

	/* 2^32 x 2^32 x 2^32 x ...: it would wrap to a small number and pass a memory check */
	assert_true(ggufmeta_kv_bytes(&m, 8192) == UINT64_MAX);
	m.key_length = m.value_length = UINT64_MAX;
	m.layers = m.heads_kv = 1;
	assert_true(ggufmeta_kv_bytes(&m, 1) == UINT64_MAX);
}

static void put_u64_kv(struct buf *b, const char *key, uint64_t v)
{
	put_str(b, key);
	put(b, 10, 4);		/* u64 */
	put(b, v, 8);
}

/* A llama header whose numbers are its own: u64 layers and key length, one head, width 1. */
static void crafted(struct buf *b, uint64_t layers, uint64_t key_length)
{
	memcpy(b->b, "GGUF", 4);
	b->n = 4;
	put(b, 3, 4);
	put(b, 0, 8);			/* tensors */
	put(b, 6, 8);			/* key-values */
	put_str(b, "general.architecture");
	put(b, 8, 4);			/* string */
	put_str(b, "llama");
	put_u64_kv(b, "llama.block_count", layers);
	put_u32_kv(b, "llama.embedding_length", 1);
	put_u32_kv(b, "llama.attention.head_count", 1);
	put_u64_kv(b, "llama.attention.key_length", key_length);
	put_u32_kv(b, "llama.attention.value_length", 1);
}

static void test_a_crafted_header_cannot_wrap_its_estimate_to_little(void **state)
{
	(void)state;
	struct buf b;
	struct ggufmeta m;
	char err[GGUFMETA_ERR_LEN];

	/* 4096 tokens x 4 generations x 2^49 layers x (1 + 1) x 2 bytes = 2^66: it would wrap to 0 */
	crafted(&b, 1ull << 49, 1);
	assert_int_equal(read_buf(&b, &m, err), 0);
	assert_int_equal(m.layers, 1ull << 49);
	assert_true(ggufmeta_kv_bytes(&m, 4096 * 4) == UINT64_MAX);
	/* one layer, but keys of 2^64 - 1 and values of 1: their sum would wrap to 0 */
	crafted(&b, 1, UINT64_MAX);
	assert_int_equal(read_buf(&b, &m, err), 0);
	assert_true(ggufmeta_kv_bytes(&m, 4096 * 4) == UINT64_MAX);
}

static void test_every_truncation_is_an_error(void **state)
{
	(void)state;
	struct buf b, cut;
	struct ggufmeta m;
	char err[GGUFMETA_ERR_LEN];

	good(&b);
	for (size_t n = 0; n < b.n; n++) {
		memcpy(cut.b, b.b, n);
		cut.n = n;
		assert_int_equal(read_buf(&cut, &m, err), -1);
		assert_true(err[0] != '\0');
	}
}

static void test_lies_about_sizes_are_errors(void **state)
{
	(void)state;
	struct buf b;
	struct ggufmeta m;
	char err[GGUFMETA_ERR_LEN];

	good(&b);
	memcpy(b.b + 4 + 4 + 8 + 8, "\xff\xff\xff\xff\xff\xff\xff\x7f", 8);	/* the first key's length */
	assert_int_equal(read_buf(&b, &m, err), -1);
	assert_non_null(strstr(err, "key-value 0"));
	good(&b);
	memcpy(b.b + 4 + 4 + 8 + 8 + 8 + 21 + 4, "\x04\x00\x00\x00", 4);	/* u32 items ... */
	memcpy(b.b + 4 + 4 + 8 + 8 + 8 + 21 + 8, "\xff\xff\xff\xff\xff\xff\xff\x3f", 8); /* ... 2^62 of them */
	assert_int_equal(read_buf(&b, &m, err), -1);
	assert_non_null(strstr(err, "ends early"));
	good(&b);
	memcpy(b.b, "GGML", 4);
	assert_int_equal(read_buf(&b, &m, err), -1);
	assert_non_null(strstr(err, "not a GGUF file"));
}

static void test_a_header_without_its_numbers(void **state)
{
	(void)state;
	struct buf b;
	struct ggufmeta m;
	char err[GGUFMETA_ERR_LEN];

	good(&b);
	b.n -= 8 + 5;			/* the architecture's value */
	put_str(&b, "qwen2");		/* the numbers were llama's */
	assert_int_equal(read_buf(&b, &m, err), -1);
	assert_non_null(strstr(err, "lacks"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reads_a_llama_header),
		cmocka_unit_test(test_every_truncation_is_an_error),
		cmocka_unit_test(test_an_estimate_too_large_to_count_is_the_largest),
		cmocka_unit_test(test_a_crafted_header_cannot_wrap_its_estimate_to_little),
		cmocka_unit_test(test_lies_about_sizes_are_errors),
		cmocka_unit_test(test_a_header_without_its_numbers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
