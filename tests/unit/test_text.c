/* The text a generation sends: whole UTF-8 characters, ended before a stop string, none of which leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../worker/text.h"

/* Adds each piece, taking what may be sent after each; returns all that was sent. */
static const char *run(struct text *t, const char *const *pieces, size_t n, bool *stopped)
{
	static char out[256];
	size_t len = 0;
	const char *s;

	*stopped = false;
	for (size_t i = 0; i < n && !*stopped; i++) {
		*stopped = text_add(t, pieces[i], strlen(pieces[i]));
		size_t k = text_take(t, false, &s);
		memcpy(out + len, s, k);
		len += k;
	}
	size_t k = text_take(t, true, &s);
	memcpy(out + len, s, k);
	out[len + k] = '\0';
	return out;
}

static void test_a_character_split_across_pieces_waits(void **state)
{
	(void)state;
	struct text t;
	const char *s;

	text_init(&t, NULL, 0);
	text_add(&t, "a\xe2\x82", 3);		/* "a" and two bytes of the euro sign */
	assert_int_equal(text_take(&t, false, &s), 1);
	assert_memory_equal(s, "a", 1);
	text_add(&t, "\xac!", 2);
	assert_int_equal(text_take(&t, false, &s), 4);
	assert_memory_equal(s, "\xe2\x82\xac!", 4);
	text_free(&t);
}

static void test_bytes_that_never_make_a_character_become_fffd(void **state)
{
	(void)state;
	static const char *const pieces[] = { "x\x80", "\xe2\x82" "y", "\xf5", "\xed\xa0\x80", "\xe2" };
	struct text t;
	bool stopped;

	text_init(&t, NULL, 0);
	/* a stray continuation byte; a lead cut short; a byte never valid; a surrogate; a lead at the end */
	assert_string_equal(run(&t, pieces, 5, &stopped),
			    "x\xef\xbf\xbd\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	assert_false(stopped);
	text_free(&t);
}

static void test_a_stop_string_across_pieces_ends_the_text(void **state)
{
	(void)state;
	static char stop0[] = "END", stop1[] = "\xe2\x82\xac\xe2\x82\xac";
	char *const stops[] = { stop0, stop1 };
	static const char *const pieces[] = { "one E", "N", "two", "END three" };
	struct text t;
	bool stopped;

	text_init(&t, stops, 2);
	/* "E", then "EN" could start "END": held back, then released when "two" follows */
	assert_string_equal(run(&t, pieces, 4, &stopped), "one ENtwo");
	assert_true(stopped);
	text_free(&t);
	static const char *const euro[] = { "pay \xe2\x82\xac", "\xe2\x82", "\xac then" };
	text_init(&t, stops, 2);
	assert_string_equal(run(&t, euro, 3, &stopped), "pay ");
	assert_true(stopped);
	text_free(&t);
}

static void test_held_back_text_goes_out_at_the_end(void **state)
{
	(void)state;
	static char stop[] = "STOP";
	char *const stops[] = { stop };
	static const char *const pieces[] = { "a ST" };
	struct text t;
	const char *s;

	text_init(&t, stops, 1);
	text_add(&t, pieces[0], 4);
	assert_int_equal(text_take(&t, false, &s), 2);	/* "ST" may yet be "STOP" */
	assert_int_equal(text_take(&t, true, &s), 2);	/* the generation ended: it was not */
	assert_memory_equal(s, "ST", 2);
	text_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_character_split_across_pieces_waits),
		cmocka_unit_test(test_bytes_that_never_make_a_character_become_fffd),
		cmocka_unit_test(test_a_stop_string_across_pieces_ends_the_text),
		cmocka_unit_test(test_held_back_text_goes_out_at_the_end),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
