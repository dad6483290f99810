/*
 * libFuzzer harness: arbitrary bytes as the msgpack body of an infer
 * request, framed and decoded as modeld decodes a client's frame, then read
 * by the generation request reader that modeld and its workers share
 * (proto/gen.c). Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/frame.h"
#include "../../proto/gen.h"
#include "../../proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *frame = malloc(size + FRAME_HEADER_LEN);
	msgpack_unpacked u;
	size_t used;
	const char *why;
	char err[GEN_ERR_LEN];
	struct gen g;

	if (!frame)
		return 0;
	frame[0] = (unsigned char)(size >> 24);
	frame[1] = (unsigned char)(size >> 16);
	frame[2] = (unsigned char)(size >> 8);
	frame[3] = (unsigned char)size;
	memcpy(frame + FRAME_HEADER_LEN, data, size);
	msgpack_unpacked_init(&u);
	if (frame_decode(frame, size + FRAME_HEADER_LEN, FRAME_MAX_DEFAULT, &u, &used, &why) == FRAME_OK) {
		gen_read(arg_msgpack(&u.data), &g, err);
		gen_free(&g);		/* read or not: its contract */
	}
	msgpack_unpacked_destroy(&u);
	free(frame);
	return 0;
}
