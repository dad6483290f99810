/* jw: what it writes is JSON that a parser (jansson) reads back as what was written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../proto/jw.h"

/* w's text, parsed; the test fails when it is not JSON. */
static json_t *parsed(struct jw *w)
{
	json_error_t e;
	json_t *j = json_loadb(w->buf, w->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

	if (!j)
		fail_msg("not JSON (%s): %.*s", e.text, (int)w->len, w->buf);
	return j;
}

static void test_nesting_and_separators(void **state)
{
	(void)state;
	struct jw w;

	jw_init(&w);
	jw_obj(&w);
	jw_kstr(&w, "id", "cmpl-1");
	jw_key(&w, "choices");
	jw_arr(&w);
	jw_obj(&w);
	jw_ku64(&w, "index", 0);
	jw_kstr(&w, "finish_reason", NULL);
	jw_end(&w);
	jw_u64(&w, 1234567890123);
	jw_arr(&w);
	jw_end(&w);
	jw_end(&w);
	jw_key(&w, "empty");
	jw_obj(&w);
	jw_end(&w);
	jw_end(&w);
	assert_int_equal(w.depth, 0);
	assert_memory_equal(w.buf, "{\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"finish_reason\":null},"
			    "1234567890123,[]],\"empty\":{}}", w.len);
	json_decref(parsed(&w));
	jw_free(&w);
}

/* Each string, written and read back, is what it was (invalid bytes as U+FFFD). */
static void test_strings_round_trip(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		size_t n;
		const char *out;
	} cases[] = {
		{ "plain", 5, "plain" },
		{ "", 0, "" },
		{ "quote \" backslash \\ slash /", 27, "quote \" backslash \\ slash /" },
		{ "\n\r\t\b\f\x01\x1f", 7, "\n\r\t\b\f\x01\x1f" },
		{ "nul\0in", 6, NULL },			/* compared by length below */
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
		{ "cut \xe2\x82", 6, "cut \xef\xbf\xbd\xef\xbf\xbd" },
		{ "\xff" "a\xc0\xaf", 4, "\xef\xbf\xbd" "a\xef\xbf\xbd\xef\xbf\xbd" },
		{ "surrogate \xed\xa0\x80", 13, "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct jw w;
		jw_init(&w);
		jw_strn(&w, cases[i].in, cases[i].n);
		json_t *j = parsed(&w);
		assert_true(json_is_string(j));
		if (cases[i].out) {
			assert_string_equal(json_string_value(j), cases[i].out);
		} else {
			assert_int_equal(json_string_length(j), cases[i].n);
			assert_memory_equal(json_string_value(j), cases[i].in, cases[i].n);
		}
		json_decref(j);
		jw_free(&w);
	}
}

static void test_numbers(void **state)
{
	(void)state;
	static const uint64_t values[] = { 0, 7, 10, 1234567890, UINT64_MAX };

	for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
		struct jw w;
		char want[32];
		jw_init(&w);
		jw_u64(&w, values[i]);
		snprintf(want, sizeof want, "%llu", (unsigned long long)values[i]);
		assert_int_equal(w.len, strlen(want));
		assert_memory_equal(w.buf, want, w.len);
		jw_free(&w);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nesting_and_separators),
		cmocka_unit_test(test_strings_round_trip),
		cmocka_unit_test(test_numbers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
