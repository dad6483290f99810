/*
 * libFuzzer harness: arbitrary bytes as a stream of frames, each decoded
 * message read with every typed reader, as modeld reads clients and workers.
 * Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../proto/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_unpacked u;
	size_t off = 0, used;
	const char *why;

	msgpack_unpacked_init(&u);
	while (frame_decode(data + off, size - off, 4096, &u, &used, &why) == FRAME_OK) {
		uint64_t v;
		bool b;
		const char *s;
		size_t n;
		char *dup = NULL;
		uint32_t *toks = NULL;
		const msgpack_object_array *a;

		msg_u64(&u.data, "id", &v);
		msg_bool(&u.data, "wait", &b);
		msg_str(&u.data, "op", &s, &n);
		if (msg_strdup(&u.data, "model", &dup) == MSG_OK)
			free(dup);
		if (msg_u32s(&u.data, "input", &toks, &n) == MSG_OK)
			free(toks);
		msg_array(&u.data, "events", &a);
		off += used;
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}
