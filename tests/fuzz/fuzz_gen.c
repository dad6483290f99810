/*
 * libFuzzer harness: arbitrary bytes as the msgpack body of an infer
 * request, read by the generation request reader that modeld and its
 * workers share (proto/gen.c). Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>

#include <msgpack.h>

#include "../../proto/gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_unpacked u;
	size_t off = 0;
	char err[GEN_ERR_LEN];
	struct gen g;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)data, size, &off) == MSGPACK_UNPACK_SUCCESS &&
	    u.data.type == MSGPACK_OBJECT_MAP) {
		gen_read(&u.data, &g, err);
		gen_free(&g);		/* read or not: its contract */
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}
