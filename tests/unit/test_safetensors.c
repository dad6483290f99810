/* The safetensors header checks and the reference model built on them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../worker/mlp.h"

#define META "\"__metadata__\":{\"modeld.arch\":\"mlp-lm\"}"
/* V = 2, D = 3, H = 4 in F32: 24 + 48 + 16 + 32 + 8 = 128 bytes of data. */
#define GOOD_TENSORS \
	"\"tok_embed\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}," \
	"\"w1\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[24,72]}," \
	"\"b1\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[72,88]}," \
	"\"w2\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[88,120]}," \
	"\"b2\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[120,128]}"

/* Parses header text as if the file had `data` bytes after it; runs mlp_describe on success. */
static int check(const char *json, uint64_t data, char *err)
{
	struct st_file f;
	struct mlp_desc d;
	size_t len = strlen(json);
	int rc = safetensors_parse(json, len, 8 + len + data, &f, err);
	if (rc == 0) {
		rc = mlp_describe(&f, &d, err);
		safetensors_free(&f);
	}
	return rc;
}

static void test_good_header(void **state)
{
	(void)state;
	char err[SAFETENSORS_ERR_LEN];
	struct st_file f;
	struct mlp_desc d;
	const char *json = "{" META "," GOOD_TENSORS "}";

	assert_int_equal(safetensors_parse(json, strlen(json), 8 + strlen(json) + 128, &f, err), 0);
	assert_int_equal(mlp_describe(&f, &d, err), 0);
	assert_int_equal(d.vocab, 2);
	assert_int_equal(d.dim, 3);
	assert_int_equal(d.hidden, 4);
	assert_int_equal(d.eos, MLP_NO_EOS);
	safetensors_free(&f);
}

static void test_malformed_headers_are_named(void **state)
{
	(void)state;
	static const struct { const char *json; uint64_t data; const char *says; } cases[] = {
		{ "{" META "," GOOD_TENSORS, 128, "not valid JSON" },
		{ "[1]", 128, "not a JSON object" },
		{ "{" META "," GOOD_TENSORS "}", 100, "outside the data" },
		{ "{" META ",\"tok_embed\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
		  "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 128, "overlap" },
		{ "{" META ",\"tok_embed\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,24]}}",
		  128, "need 32 bytes" },
		{ "{" META ",\"tok_embed\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}",
		  128, "tensor w1 is missing" },
		{ "{" GOOD_TENSORS "}", 128, "modeld.arch is missing" },
		{ "{\"__metadata__\":{\"modeld.arch\":\"mlp-lm\",\"modeld.eos\":\"9\"}," GOOD_TENSORS "}",
		  128, "modeld.eos" },
		{ "{" META ",\"tok_embed\":{\"dtype\":\"I8\",\"shape\":[2,3],\"data_offsets\":[0,6]}}",
		  128, "dtype must be" },
		{ "{" META ",\"tok_embed\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[24,0]}}",
		  128, "outside the data" },
		{ "{" META ",\"tok_embed\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", 128, "data_offsets" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char err[SAFETENSORS_ERR_LEN] = "";
		assert_int_equal(check(cases[i].json, cases[i].data, err), -1);
		if (!strstr(err, cases[i].says))
			fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err, cases[i].says);
	}
}

/* Writes a file: an 8-byte length (given), then body. */
static int temp_file(uint64_t hlen, const char *body)
{
	char path[] = "/tmp/test_st_XXXXXX";
	int fd = mkstemp(path);
	unsigned char le[8];

	unlink(path);
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(hlen >> (8 * i));
	assert_int_equal(write(fd, le, 8), 8);
	assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
	return fd;
}

static void test_header_length_checks(void **state)
{
	(void)state;
	char err[SAFETENSORS_ERR_LEN];
	struct st_file f;

	int fd = temp_file(1000, "{}");
	assert_int_equal(safetensors_read(fd, &f, err), -1);
	assert_non_null(strstr(err, "longer than the file"));
	close(fd);
	fd = temp_file(200ull * 1000 * 1000, "{}");
	assert_int_equal(safetensors_read(fd, &f, err), -1);
	assert_non_null(strstr(err, "over the"));
	close(fd);
	fd = temp_file(2, "{}");
	assert_int_equal(safetensors_read(fd, &f, err), 0);
	assert_int_equal(f.ntensors, 0);
	safetensors_free(&f);
	close(fd);
}

static void test_half_precision_converts(void **state)
{
	(void)state;
	const uint16_t f16[] = { 0x3c00, 0xc000, 0x0000, 0x3555, 0x0001 };
	const uint16_t bf16[] = { 0x3f80, 0xc000 };
	float out[5];

	mlp_to_f32(out, f16, 5, ST_F16);
	assert_true(out[0] == 1.0f);
	assert_true(out[1] == -2.0f);
	assert_true(out[2] == 0.0f);
	assert_true(out[3] > 0.333f && out[3] < 0.334f);
	assert_true(out[4] > 5.9e-8f && out[4] < 6.0e-8f);	/* smallest subnormal */
	mlp_to_f32(out, bf16, 2, ST_BF16);
	assert_true(out[0] == 1.0f);
	assert_true(out[1] == -2.0f);
}

/* Every F16 value, converted eight at a time where the CPU can, equals its value worked out by hand. */
static void test_every_half_converts_exactly(void **state)
{
	(void)state;
	uint16_t *h = malloc(65536 * sizeof *h);
	float *out = malloc(65536 * sizeof *out);

	for (uint32_t i = 0; i < 65536; i++)
		h[i] = (uint16_t)i;
	mlp_to_f32(out, h, 65536, ST_F16);
	for (uint32_t i = 0; i < 65536; i++) {
		int exp = (i >> 10) & 0x1f, man = i & 0x3ff;
		double v = exp == 0 ? ldexp(man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexp(1024 + man, exp - 25);
		if (i & 0x8000)
			v = -v;
		if (isnan(v))
			assert_true(isnan(out[i]));
		else if (out[i] != (float)v || !signbit(out[i]) != !signbit(v))
			fail_msg("half 0x%04x: %g, not %g", i, (double)out[i], v);
	}
	free(h);
	free(out);
}

/* With identity embeddings and outputs, a permutation in w1 maps t to p(t). */
static void test_step_follows_the_permutation(void **state)
{
	(void)state;
	enum { N = 7 };
	float e[N * N] = { 0 }, w1[N * N] = { 0 }, w2[N * N] = { 0 }, b1[N] = { 0 }, b2[N] = { 0 };
	float scratch[2 * N];
	for (int i = 0; i < N; i++) {
		e[i * N + i] = w2[i * N + i] = 1;
		w1[i * N + (i * 3 + 2) % N] = 1;
	}
	struct mlp_weights w = { N, N, N, e, w1, b1, w2, b2 };
	for (uint32_t t = 0; t < N; t++)
		assert_int_equal(mlp_step(&w, t, scratch), (t * 3 + 2) % N);
	/* ties go to the smallest index */
	memset(w1, 0, sizeof w1);
	assert_int_equal(mlp_step(&w, 5, scratch), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_header),
		cmocka_unit_test(test_malformed_headers_are_named),
		cmocka_unit_test(test_header_length_checks),
		cmocka_unit_test(test_half_precision_converts),
		cmocka_unit_test(test_every_half_converts_exactly),
		cmocka_unit_test(test_step_follows_the_permutation),
	};
	return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
