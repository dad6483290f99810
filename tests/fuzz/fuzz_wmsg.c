/*
 * libFuzzer harness: arbitrary bytes as a stream of frames from a worker,
 * decoded as modeld decodes its workers' channel and read by the worker
 * message reader (supervisor/wmsg.c). Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>

#include "../../proto/frame.h"
#include "../../supervisor/wmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_unpacked u;
	size_t off = 0, used;
	const char *why;
	char breach[128];
	struct wmsg_in w;

	msgpack_unpacked_init(&u);
	while (off < size && frame_decode(data + off, size - off, FRAME_MAX_DEFAULT, &u, &used, &why) == FRAME_OK) {
		wmsg_read(&u.data, &w, breach, sizeof breach);
		wmsg_free(&w);
		off += used;
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}
