/*
 * libFuzzer harness: arbitrary bytes as a safetensors header (the JSON after
 * the length), checked and described as the reference model.
 * Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>

#include "../../worker/mlp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[SAFETENSORS_ERR_LEN];
	struct st_file f;
	struct mlp_desc d;

	/* As if the file held 4 KiB of tensor data after the header. */
	if (safetensors_parse((const char *)data, size, 8 + size + 4096, &f, err) == 0) {
		mlp_describe(&f, &d, err);
		safetensors_free(&f);
	}
	return 0;
}
