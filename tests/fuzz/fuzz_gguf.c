/*
 * libFuzzer harness: arbitrary bytes as the start of a GGUF file, read by the
 * memory check's metadata reader. Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../supervisor/ggufmeta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	char err[GGUFMETA_ERR_LEN];
	struct ggufmeta m;

	if (fd < 0)
		fd = memfd_create("gguf", MFD_CLOEXEC);
	if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
		return 0;
	if (ggufmeta_read(fd, &m, err) == 0)
		ggufmeta_kv_bytes(&m, 4096);
	return 0;
}
