/* The config file: keys, values, and errors that name file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../proto/log.h"
#include "../../supervisor/config.h"

static char path[64];

static void write_config(const char *text)
{
	strcpy(path, "/tmp/test_config_XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* Reads and finishes text as a config; returns the error text, or "" on success. */
static const char *load(struct config *c, const char *text)
{
	static char err[CONFIG_ERR_LEN];

	write_config(text);
	config_init(c);
	free(c->models_dir);
	c->models_dir = strdup("/nonexistent");
	err[0] = '\0';
	if (config_read(c, path, err) == 0 && config_finish(c, err) == 0)
		config_default_slots(c, 0);
	unlink(path);
	return err;
}

static void test_full_config(void **state)
{
	(void)state;
	struct config c;
	const char *err = load(&c,
		"[modeld]\nsocket = /tmp/x.sock\nsocket_mode = 0600\nlog_level = debug\n"
		"max_frame = 65536\n\n"
		"[slot chat]\ndevice = cuda:1\ndefault_model = m\nstop_timeout = 2.5\n"
		"restart_limit = 3\n\n"
		"; a comment\n[slot spare]\nlock = grp\nautoload = yes\n[device grp]\nexclusive = yes\n\n"
		"[model m]\npath = /models/m.safetensors\nslot = chat\nwarmup = 2\nload_timeout = 0.5\n");
	assert_string_equal(err, "");
	assert_string_equal(c.socket, "/tmp/x.sock");
	assert_int_equal(c.socket_mode, 0600);
	assert_int_equal(c.log_level, LOG_LVL_DEBUG);
	assert_int_equal(c.nslots, 2);
	assert_string_equal(c.slots[0].device, "cuda:1");
	assert_int_equal(c.slots[0].stop_timeout_ms, 2500);
	assert_int_equal(c.slots[0].restart_limit, 3);
	assert_string_equal(c.slots[1].name, "spare");
	assert_string_equal(c.slots[1].device, "cpu");
	const struct model *m = config_model(&c, "m");
	assert_non_null(m);
	assert_int_equal(m->warmup, 2);
	assert_int_equal(m->load_timeout_ms, 500);
	assert_true(config_device_exclusive(&c, "cuda:1"));
	assert_false(config_device_exclusive(&c, "cpu"));
	assert_true(config_device_exclusive(&c, "grp"));
	assert_string_equal(config_slot_lock(&c.slots[1]), "grp");
	config_free(&c);
}

#define LONG_COMMENT "a comment longer than the line buffer of inih, whose tail was once taken " \
	"for a line of its own, and so for a setting: max_clients = 1 ................................" \
	"..........................................................................................."

static void test_errors_name_file_and_line(void **state)
{
	(void)state;
	static const struct { const char *text; int line; const char *says; } cases[] = {
		{ "[modeld]\nsocket = a\nbogus = 1\n", 3, "unknown key \"bogus\"" },
		{ "[slot a]\nstop_timeout = soon\n", 2, "not a decimal number of seconds" },
		{ "[slot a]\nstop_timeout = 0x10\n", 2, "not a decimal number of seconds" },
		{ "[slot a]\nstop_timeout = 1e3\n", 2, "not a decimal number of seconds" },
		{ "[slot a]\n\nheartbeat_interval = 0\n", 3, "heartbeat_interval: \"0\" is not a decimal number of seconds (0.001" },
		{ "[slot a]\nrestart_backoff_min = 60\n", 2, "restart_backoff_min is over restart_backoff_max" },
		{ "[slot a]\nrestart_limit = 2\nrestart_limit = 3\n", 3, "restart_limit is set twice" },
		{ "[modeld]\n; " LONG_COMMENT "\nmax_clients = 1\n", 2, "the line is longer than" },
		{ "[slot a]\ndevice = \x1b[2J\n", 2, "device: \"\\x1b[2J\" is not cpu" },
		{ "[slot a]\nrestart_limit = 0\n", 2, "not an integer from 1" },
		{ "[slot a]\ndevice = gpu0\n", 2, "not cpu or cuda:N" },
		{ "\n[thing x]\nk = v\n", 2, "sections are" },
		{ "[model m]\nengine = ../tpu\n", 2, "not auto or an engine name" },
		{ "[model m]\npath = m.gguf\nctx = 8\n", 3, "ctx: \"8\" is not an integer from 16" },
		{ "[model m]\npath = m.gguf\nembedding = maybe\n", 3, "embedding: \"maybe\" is not yes or no" },
		{ "[model m]\npath = m.gguf\nthreads = 0\n", 3, "threads: \"0\" is not an integer from 1" },
		{ "[slot a]\n\n\ndefault_model = nope\n", 4, "no model nope" },
		{ "[slot a]\n[model m]\npath = x\nslot = b\n", 4, "no [slot b]" },
		{ "[slot a]\n[model m]\nwarmup = 1\n", 2, "has no path" },
		{ "[slot a]\n[slot a]\n", 2, "defined twice" },
		{ "[modeld]\nthis is not a pair\n", 2, "not a section header" },
		{ "[modeld]\nsocket_mode = 0999\n", 2, "octal" },
		{ "[slot a]\nautoload = maybe\n", 2, "not yes, no or admin" },
		{ "[slot a]\nmemory_check = sometimes\n", 2, "not warn, refuse or off" },
		{ "[slot a]\n\nlock = grp\n", 3, "no [device grp]" },
		{ "[slot a]\ncpu_fallback = a\n", 2, "no other slot a" },
		{ "[slot a]\nfallback_model = nope\n", 2, "no model nope" },
		{ "[device cuda:0]\n[device cuda:0]\n", 2, "defined twice" },
		{ "[modeld]\nadmin_group = no-such-group-here\n", 2, "no group called" },
		{ "[slot a]\nloader_threads = 32\n", 2, "256 MiB of pinned memory, over the 128" },
		{ "[slot a]\nloader_threads = 8\nloader_chunk = 16777216\n", 3, "256 MiB" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct config c;
		char want[160];
		const char *err = load(&c, cases[i].text);
		snprintf(want, sizeof want, "%s:%d: ", path, cases[i].line);
		if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, cases[i].says))
			fail_msg("case %zu: \"%s\" is not \"%s...%s\"", i, err, want, cases[i].says);
		config_free(&c);
	}
}

static void test_no_slots_gives_the_default(void **state)
{
	(void)state;
	struct config c;
	assert_string_equal(load(&c, "[modeld]\nlog_level = warn\n"), "");
	assert_int_equal(c.nslots, 1);
	assert_string_equal(c.slots[0].device, "cpu");
	assert_int_equal(c.slots[0].restart_backoff_min_ms, 100);
	assert_int_equal(c.slots[0].heartbeat_timeout_ms, 5000);
	config_free(&c);
	config_init(&c);
	config_default_slots(&c, 2);
	assert_int_equal(c.nslots, 2);
	assert_string_equal(c.slots[1].name, "gpu1");
	assert_string_equal(c.slots[1].device, "cuda:1");
	config_free(&c);
}

int main(void)
{
	log_init("test_config", LOG_LVL_ERROR, 0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config),
		cmocka_unit_test(test_errors_name_file_and_line),
		cmocka_unit_test(test_no_slots_gives_the_default),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
