/* mlp.c: see mlp.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "mlp.h"

const char *const mlp_tensor_names[MLP__TENSORS] = {
	[MLP_TOK_EMBED] = "tok_embed", [MLP_W1] = "w1", [MLP_B1] = "b1",
	[MLP_W2] = "w2", [MLP_B2] = "b2",
};

/* Checks that t has exactly the dims given (0 ends the list). */
static int check_shape(const struct st_tensor *t, uint64_t a, uint64_t b, char *err)
{
	int want = b ? 2 : 1;
	if (t->ndims != want || t->shape[0] != a || (b && t->shape[1] != b)) {
		if (b)
			return safetensors_fail(err, "tensor %s: shape must be [%llu, %llu]", t->name,
				    (unsigned long long)a, (unsigned long long)b);
		return safetensors_fail(err, "tensor %s: shape must be [%llu]", t->name, (unsigned long long)a);
	}
	return 0;
}

static int parse_eos(const struct st_file *f, uint32_t vocab, uint32_t *eos, char *err)
{
	const char *s = safetensors_meta(f, "modeld.eos");
	char *end;

	*eos = MLP_NO_EOS;
	if (!s)
		return 0;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || *s == '-' || v >= vocab)
		return safetensors_fail(err, "metadata modeld.eos \"%s\" is not a token id below %u", s, vocab);
	*eos = (uint32_t)v;
	return 0;
}

int mlp_describe(const struct st_file *f, struct mlp_desc *d, char err[SAFETENSORS_ERR_LEN])
{
	const char *arch = safetensors_meta(f, "modeld.arch");

	memset(d, 0, sizeof *d);
	if (!arch || strcmp(arch, MLP_ARCH) != 0)
		return safetensors_fail(err, "metadata modeld.arch is %s%s%s, not \"" MLP_ARCH "\"",
			    arch ? "\"" : "", arch ? arch : "missing", arch ? "\"" : "");
	for (int i = 0; i < MLP__TENSORS; i++) {
		d->t[i] = safetensors_find(f, mlp_tensor_names[i]);
		if (!d->t[i])
			return safetensors_fail(err, "tensor %s is missing", mlp_tensor_names[i]);
		if (safetensors_dtype_size(d->t[i]->dtype) == 0)
			return safetensors_fail(err, "tensor %s: dtype must be F32, F16 or BF16",
				    mlp_tensor_names[i]);
	}
	const struct st_tensor *e = d->t[MLP_TOK_EMBED], *w1 = d->t[MLP_W1];
	if (e->ndims != 2 || w1->ndims != 2)
		return safetensors_fail(err, "tensors tok_embed and w1 must have two dims");
	if (e->shape[0] == 0 || e->shape[1] == 0 || w1->shape[1] == 0 ||
	    e->shape[0] > UINT32_MAX || e->shape[1] > UINT32_MAX || w1->shape[1] > UINT32_MAX)
		return safetensors_fail(err, "dims must be between 1 and %u", UINT32_MAX);
	d->vocab = (uint32_t)e->shape[0];
	d->dim = (uint32_t)e->shape[1];
	d->hidden = (uint32_t)w1->shape[1];
	if (check_shape(w1, d->dim, d->hidden, err) ||
	    check_shape(d->t[MLP_B1], d->hidden, 0, err) ||
	    check_shape(d->t[MLP_W2], d->hidden, d->vocab, err) ||
	    check_shape(d->t[MLP_B2], d->vocab, 0, err))
		return -1;
	return parse_eos(f, d->vocab, &d->eos, err);
}

static float half_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;

	if (exp == 0 && man == 0) {
		bits = sign;
	} else if (exp == 0) {		/* subnormal: normalise */
		exp = 127 - 15 + 1;
		while (!(man & 0x400)) {
			man <<= 1;
			exp--;
		}
		bits = sign | exp << 23 | (man & 0x3ff) << 13;
	} else if (exp == 0x1f) {
		bits = sign | 0x7f800000 | man << 13;
	} else {
		bits = sign | (exp + 127 - 15) << 23 | man << 13;
	}
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

#if defined(__x86_64__)
/* F16 to F32 eight at a time with the F16C instructions, where the CPU has them. */
__attribute__((target("avx,f16c")))
static uint64_t f16_to_f32_f16c(float *dst, const unsigned char *src, uint64_t n)
{
	uint64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
	return i;
}

/* Whether the CPU has F16C (and AVX, whose registers the OS saves). */
static bool has_f16c(void)
{
	unsigned a, b, c, d;
	uint32_t lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C) || !(c & bit_AVX) || !(c & bit_OSXSAVE))
		return false;
	__asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6;	/* SSE and AVX state */
}
#endif

/* F16 to F32: what the CPU converts itself, the rest (or all) in C. */
static void f16_to_f32(float *dst, const unsigned char *src, uint64_t n)
{
	uint64_t i = 0;
	uint16_t h;

#if defined(__x86_64__)
	if (has_f16c())		/* a cpuid per call: calls convert large chunks */
		i = f16_to_f32_f16c(dst, src, n);
#endif
	for (; i < n; i++) {
		memcpy(&h, src + 2 * i, 2);
		dst[i] = half_to_f32(h);
	}
}

void mlp_to_f32(float *dst, const void *src, uint64_t n, enum st_dtype d)
{
	const unsigned char *p = src;
	uint16_t h;
	uint32_t bits;

	switch (d) {
	case ST_F32:
		memcpy(dst, src, n * 4);
		break;
	case ST_F16:
		f16_to_f32(dst, p, n);
		break;
	default:	/* ST_BF16: the top half of an F32 */
		for (uint64_t i = 0; i < n; i++) {
			memcpy(&h, p + 2 * i, 2);
			bits = (uint32_t)h << 16;
			memcpy(&dst[i], &bits, 4);
		}
		break;
	}
}

uint32_t mlp_step(const struct mlp_weights *w, uint32_t t, float *scratch)
{
	float *h = scratch, *logits = scratch + w->hidden;
	const float *x = w->tok_embed + (size_t)t * w->dim;

	for (uint32_t j = 0; j < w->hidden; j++)
		h[j] = w->b1[j];
	for (uint32_t i = 0; i < w->dim; i++) {
		if (x[i] == 0.0f)
			continue;
		const float *row = w->w1 + (size_t)i * w->hidden;
		for (uint32_t j = 0; j < w->hidden; j++)
			h[j] += x[i] * row[j];
	}
	for (uint32_t k = 0; k < w->vocab; k++)
		logits[k] = w->b2[k];
	for (uint32_t j = 0; j < w->hidden; j++) {
		float hj = h[j] > 0.0f ? h[j] : 0.0f;
		if (hj == 0.0f)
			continue;
		const float *row = w->w2 + (size_t)j * w->vocab;
		for (uint32_t k = 0; k < w->vocab; k++)
			logits[k] += hj * row[k];
	}
	uint32_t best = 0;
	for (uint32_t k = 1; k < w->vocab; k++)
		if (logits[k] > logits[best])
			best = k;
	return best;
}
