/*
 * libFuzzer harness: arbitrary bytes as a configuration file, read and
 * checked as modeld reads its own. Build and run: make fuzz (FUZZ_SECONDS=N).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../proto/log.h"
#include "../../supervisor/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	char err[CONFIG_ERR_LEN];
	struct config c;

	if (fd < 0) {
		log_init("fuzz_config", LOG_LVL_ERROR, 0);
		fd = memfd_create("config", MFD_CLOEXEC);
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
		return 0;
	config_init(&c);
	free(c.models_dir);
	c.models_dir = strdup("/nonexistent");	/* no directory to scan: the file alone */
	if (config_read(&c, path, err) == 0 && config_finish(&c, err) == 0)
		config_default_slots(&c, 1);
	config_free(&c);
	return 0;
}
