/* Framing: whole frames only, every malformed frame named; the blocking channel and fd passing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../proto/frame.h"
#include "../../proto/proto.h"

static int decode(const void *buf, size_t len, size_t *used, const char **why)
{
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	*why = NULL;
	int rc = frame_decode(buf, len, 1024, &u, used, why);
	msgpack_unpacked_destroy(&u);
	return rc;
}

static void test_partial_frames_ask_for_more(void **state)
{
	(void)state;
	/* {"a": 1} */
	const unsigned char f[] = { 0, 0, 0, 4, 0x81, 0xa1, 'a', 0x01 };
	size_t used;
	const char *why;

	for (size_t n = 0; n < sizeof f; n++)
		assert_int_equal(decode(f, n, &used, &why), FRAME_MORE);
	assert_int_equal(decode(f, sizeof f, &used, &why), FRAME_OK);
	assert_int_equal(used, sizeof f);
}

static void test_malformed_frames_are_named(void **state)
{
	(void)state;
	static const struct {
		unsigned char bytes[12];
		size_t len;
		const char *why;
	} cases[] = {
		{ { 0, 0, 0, 0 }, 4, "empty frame" },
		{ { 0, 0, 4, 1 }, 4, "frame longer than max_frame" },
		{ { 0, 0, 0, 1, 0x01 }, 5, "frame does not hold a map" },
		{ { 0, 0, 0, 2, 0x80, 0x80 }, 6, "frame holds bytes after its message" },
		{ { 0, 0, 0, 2, 0x81, 0xa1 }, 6, "frame ends inside its message" },
		{ { 0, 0, 0, 1, 0xc1 }, 5, "frame does not decode as msgpack" },
		/* an array declaring 2^32 - 1 elements in a 5-byte frame */
		{ { 0, 0, 0, 5, 0xdd, 0xff, 0xff, 0xff, 0xff }, 9, "frame ends inside its message" },
		{ { 0, 0, 0, 6, 0x81, 0xa1, 'k', 0xdf, 0x7f, 0xff }, 10, "frame ends inside its message" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t used;
		const char *why;
		assert_int_equal(decode(cases[i].bytes, cases[i].len, &used, &why), FRAME_ERROR);
		assert_string_equal(why, cases[i].why);
	}
}

static void test_channel_passes_frames_and_fds(void **state)
{
	(void)state;
	int sv[2], pipefd[2];
	struct chan a, b;
	struct msgw w;
	const msgpack_object *m;
	uint64_t v;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(pipe(pipefd), 0);
	chan_init(&a, sv[0], 1024);
	chan_init(&b, sv[1], 1024);
	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "t", 1);
	msgw_end(&w);
	size_t len;
	const void *frame = msgw_frame(&w, &len);
	assert_int_equal(frame_send_fd(sv[0], frame, len, pipefd[0]), 0);
	assert_int_equal(chan_send(&a, &w), 0);
	msgw_free(&w);

	assert_int_equal(chan_read(&b, 1000, &m), 1);
	assert_int_equal(msg_u64(m, "t", &v), MSG_OK);
	int fd = chan_take_fd(&b);
	assert_true(fd >= 0);
	assert_int_equal(write(pipefd[1], "x", 1), 1);
	char c;
	assert_int_equal(read(fd, &c, 1), 1);
	close(fd);
	assert_int_equal(chan_read(&b, 1000, &m), 1);
	assert_int_equal(chan_take_fd(&b), -1);
	assert_int_equal(chan_read(&b, 0, &m), 0);	/* nothing more: times out */
	close(sv[0]);
	assert_int_equal(chan_read(&b, 1000, &m), -1);	/* EOF */
	assert_null(b.error);
	chan_free(&a);
	chan_free(&b);
	close(sv[1]);
	close(pipefd[0]);
	close(pipefd[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_partial_frames_ask_for_more),
		cmocka_unit_test(test_malformed_frames_are_named),
		cmocka_unit_test(test_channel_passes_frames_and_fds),
	};
	return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
