/*
 * mlp.h: the reference model (docs/reference-model.md), engine-neutral.
 *
 * mlp_describe() checks that a safetensors header holds the model, and says
 * where each tensor is; an engine then gets the bytes to its memory its own
 * way. The step function here is the CPU engine's and the tests' oracle.
 */
#ifndef MLP_H
#define MLP_H

#include <stdint.h>

#include "safetensors.h"

#define MLP_ARCH "mlp-lm"
#define MLP_NO_EOS UINT32_MAX

enum mlp_tensor { MLP_TOK_EMBED, MLP_W1, MLP_B1, MLP_W2, MLP_B2, MLP__TENSORS };

struct mlp_desc {
	uint32_t vocab, dim, hidden;	/* V, D, H */
	uint32_t eos;			/* MLP_NO_EOS when the file sets none */
	const struct st_tensor *t[MLP__TENSORS];
};

extern const char *const mlp_tensor_names[MLP__TENSORS];

/* 0, or -1 with err naming what does not fit the reference model. */
int mlp_describe(const struct st_file *f, struct mlp_desc *d, char err[SAFETENSORS_ERR_LEN]);

/* Converts n elements of dtype d at src to float. */
void mlp_to_f32(float *dst, const void *src, uint64_t n, enum st_dtype d);

/* The weights as F32 arrays, row-major, shapes as in the file. */
struct mlp_weights {
	uint32_t vocab, dim, hidden;
	const float *tok_embed, *w1, *b1, *w2, *b2;
};

/*
 * One step: the next token after t. scratch holds hidden + vocab floats.
 */
uint32_t mlp_step(const struct mlp_weights *w, uint32_t t, float *scratch);

#endif
