/* The msgpack writer (counts filled in on close) and the typed readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../proto/msg.h"
#include "../../proto/proto.h"

/* Decodes the body of w's frame into u. */
static const msgpack_object *decode(struct msgw *w, msgpack_unpacked *u)
{
	size_t len, off = 0;
	const char *p = msgw_frame(w, &len);
	uint32_t n = (uint32_t)(unsigned char)p[0] << 24 | (uint32_t)(unsigned char)p[1] << 16 |
		     (uint32_t)(unsigned char)p[2] << 8 | (unsigned char)p[3];
	assert_int_equal(n, len - FRAME_HEADER_LEN);
	msgpack_unpacked_init(u);
	assert_int_equal(msgpack_unpack_next(u, p + 4, n, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, n);
	return &u->data;
}

static void test_strings_go_out_as_valid_utf8(void **state)
{
	(void)state;
	static const struct { const char *in, *out; } cases[] = {
		{ "plain", "plain" },
		{ "\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9" },				/* été */
		{ "cut \xc3", "cut \xef\xbf\xbd" },					/* a character cut short */
		{ "a\xff" "b\xe2\x82", "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd" },
		{ "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },				/* overlong / */
		{ "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },	/* a surrogate */
		{ "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80" },			/* U+1F600 */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct msgw w;
		msgpack_unpacked u;

		msgw_init(&w);
		msgw_str(&w, cases[i].in);
		const msgpack_object *o = decode(&w, &u);
		assert_int_equal(o->type, MSGPACK_OBJECT_STR);
		assert_int_equal(o->via.str.size, strlen(cases[i].out));
		assert_memory_equal(o->via.str.ptr, cases[i].out, strlen(cases[i].out));
		msgpack_unpacked_destroy(&u);
		msgw_free(&w);
	}
}

static void test_nested_containers_count_themselves(void **state)
{
	(void)state;
	struct msgw w;
	msgpack_unpacked u;
	uint32_t toks[] = { 1, 2, 70000 };

	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "id", 7);
	msgw_kbool(&w, "ok", true);
	msgw_key(&w, "inner");
	msgw_map(&w);
	msgw_kstr(&w, "s", "x");
	msgw_knil(&w, "n");
	msgw_end(&w);
	msgw_key(&w, "toks");
	msgw_u32s(&w, toks, 3);
	msgw_end(&w);
	const msgpack_object *o = decode(&w, &u);

	assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(o->via.map.size, 4);
	const msgpack_object *inner = msg_get(o, "inner");
	assert_non_null(inner);
	assert_int_equal(inner->via.map.size, 2);
	uint32_t *got;
	size_t n;
	assert_int_equal(msg_u32s(o, "toks", &got, &n), MSG_OK);
	assert_int_equal(n, 3);
	assert_int_equal(got[2], 70000);
	free(got);
	msgpack_unpacked_destroy(&u);
	msgw_free(&w);
}

static void test_readers_tell_missing_from_wrong_type(void **state)
{
	(void)state;
	struct msgw w;
	msgpack_unpacked u;
	uint64_t v;
	bool b;
	char *s = NULL;

	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "n", 5);
	msgw_kstr(&w, "str", "hello");
	msgw_knil(&w, "nil");
	msgw_key(&w, "neg");
	msgw_i64(&w, -3);
	msgw_key(&w, "bad");
	msgw_strn(&w, "a\0b", 3);
	msgw_key(&w, "big");
	msgw_array(&w);
	msgw_u64(&w, 1ull << 33);
	msgw_end(&w);
	msgw_end(&w);
	const msgpack_object *o = decode(&w, &u);

	assert_int_equal(msg_u64(o, "n", &v), MSG_OK);
	assert_int_equal(v, 5);
	assert_int_equal(msg_u64(o, "absent", &v), MSG_MISSING);
	assert_int_equal(msg_u64(o, "nil", &v), MSG_MISSING);
	assert_int_equal(msg_u64(o, "neg", &v), MSG_BAD_TYPE);
	assert_int_equal(msg_u64(o, "str", &v), MSG_BAD_TYPE);
	assert_int_equal(msg_bool(o, "n", &b), MSG_BAD_TYPE);
	assert_int_equal(msg_strdup(o, "str", &s), MSG_OK);
	assert_string_equal(s, "hello");
	free(s);
	assert_int_equal(msg_strdup(o, "bad", &s), MSG_BAD_TYPE);
	uint32_t *t = NULL;
	size_t n;
	assert_int_equal(msg_u32s(o, "big", &t, &n), MSG_BAD_TYPE);
	assert_null(t);
	msgpack_unpacked_destroy(&u);
	msgw_free(&w);
}

/* Input nested past the limit leaves the writer in an error state, balanced, never aborted. */
static void test_nesting_past_the_limit_is_an_error_not_an_abort(void **state)
{
	(void)state;
	struct msgw w;
	msgw_init(&w);
	msgw_map(&w);
	msgw_key(&w, "x");
	for (int i = 0; i < MSGW_MAX_DEPTH + 4; i++)
		msgw_array(&w);
	msgw_u64(&w, 1);
	for (int i = 0; i < MSGW_MAX_DEPTH + 4; i++)
		msgw_end(&w);
	msgw_end(&w);
	assert_true(msgw_too_deep(&w));
	msgw_free(&w);

	msgw_init(&w);		/* at the limit exactly is fine */
	for (int i = 0; i < MSGW_MAX_DEPTH; i++)
		msgw_array(&w);
	for (int i = 0; i < MSGW_MAX_DEPTH; i++)
		msgw_end(&w);
	assert_false(msgw_too_deep(&w));
	msgpack_unpacked u;
	decode(&w, &u);
	msgpack_unpacked_destroy(&u);
	msgw_free(&w);
}

static void test_names_round_trip(void **state)
{
	(void)state;
	for (int e = 0; e < E__COUNT; e++) {
		const char *name = proto_err_name((enum err)e);
		assert_int_equal(proto_err_parse(name, strlen(name)), e);
	}
	for (int op = 0; op < OP__COUNT; op++) {
		const char *name = proto_op_name((enum op)op);
		assert_int_equal(proto_op_parse(name, strlen(name)), op);
	}
	assert_int_equal(proto_op_parse("loa", 3), OP_UNKNOWN);
	assert_int_equal(proto_event_parse("gpu", 3), EVK_GPU);
	assert_int_equal(proto_event_parse("gpus", 4), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nested_containers_count_themselves),
		cmocka_unit_test(test_strings_go_out_as_valid_utf8),
		cmocka_unit_test(test_readers_tell_missing_from_wrong_type),
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_nesting_past_the_limit_is_an_error_not_an_abort),
	};
	return cmocka_run_group_tests_name("msg", tests, NULL, NULL);
}
