/* An HTTP request's JSON body read into a request (supervisor/httpreq.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../supervisor/httpreq.h"

/* body (JSON text) read as an endpoint reads it into r; httpreq_read's result. */
static int read_body(const char *text, bool embeddings, struct req *r, struct httpreq_embed *emb, char *err,
		     size_t errlen)
{
	char why[256];
	json_t *body = httpreq_parse(text, strlen(text), why, sizeof why);

	assert_non_null(body);
	memset(r, 0, sizeof *r);
	int rc = httpreq_read(body, embeddings, REQ_WAIT_FOREVER, r, emb, err, errlen);
	json_decref(body);
	return rc;
}

static void test_a_chat_body_is_read_as_infer_reads_it(void **state)
{
	(void)state;
	struct req r;
	struct httpreq_embed emb;
	char err[GEN_ERR_LEN] = "";

	assert_int_equal(read_body("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
				   "\"max_completion_tokens\":5,\"stop\":[\".\"],\"n\":1,\"user\":\"u\"}",
				   false, &r, &emb, err, sizeof err), 0);
	assert_int_equal(r.gen.nmessages, 1);
	assert_string_equal(r.gen.messages[0].content, "Hi");
	assert_int_equal(r.gen.max_tokens, 5);
	assert_int_equal(r.gen.nstop, 1);
	assert_true(r.wait_ms == REQ_WAIT_FOREVER);
	req_clear(&r);
}

static void test_an_embeddings_body_gives_texts_and_format(void **state)
{
	(void)state;
	struct req r;
	struct httpreq_embed emb;
	char err[GEN_ERR_LEN] = "";

	assert_int_equal(read_body("{\"model\":\"e\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\","
				   "\"dimensions\":8,\"wait_ms\":5}", true, &r, &emb, err, sizeof err), 0);
	assert_int_equal(r.ntexts, 2);
	assert_string_equal(r.texts[1], "b");
	assert_true(emb.base64);
	assert_int_equal(emb.dimensions, 8);
	assert_int_equal(r.wait_ms, 5);
	req_clear(&r);
}

static void test_a_field_that_changes_the_answer_is_refused_by_name(void **state)
{
	(void)state;
	struct req r;
	struct httpreq_embed emb;
	char err[GEN_ERR_LEN] = "";

	assert_int_equal(read_body("{\"prompt\":\"x\",\"logprobs\":true}", false, &r, &emb, err, sizeof err), -1);
	assert_non_null(strstr(err, "logprobs"));
	req_clear(&r);
}

static void test_a_body_nested_too_deep_is_refused(void **state)
{
	(void)state;
	char text[4 * MSGW_MAX_DEPTH + 64];
	size_t n = 0;
	struct req r;
	struct httpreq_embed emb;
	char err[GEN_ERR_LEN] = "";

	n += (size_t)sprintf(text, "{\"prompt\":\"x\",\"deep\":");
	for (int i = 0; i < MSGW_MAX_DEPTH + 1; i++)
		text[n++] = '[';
	for (int i = 0; i < MSGW_MAX_DEPTH + 1; i++)
		text[n++] = ']';
	strcpy(text + n, "}");
	assert_int_equal(read_body(text, false, &r, &emb, err, sizeof err), -1);
	assert_non_null(strstr(err, "nested too deep"));
	req_clear(&r);
}

/* gen.c writes its errors at its own length; a caller's shorter err is not written past. */
static void test_a_short_error_buffer_is_not_overrun(void **state)
{
	(void)state;
	struct {
		char err[16];
		char after[GEN_ERR_LEN];
	} b;
	struct req r;
	struct httpreq_embed emb;
	char untouched[sizeof b.after];

	memset(&b, 'z', sizeof b);
	memset(untouched, 'z', sizeof untouched);
	assert_int_equal(read_body("{\"prompt\":\"x\",\"temperature\":\"hot\"}", false, &r, &emb, b.err, sizeof b.err),
			 -1);
	assert_int_equal(strlen(b.err), sizeof b.err - 1);
	assert_memory_equal(b.after, untouched, sizeof untouched);
	req_clear(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_chat_body_is_read_as_infer_reads_it),
		cmocka_unit_test(test_an_embeddings_body_gives_texts_and_format),
		cmocka_unit_test(test_a_field_that_changes_the_answer_is_refused_by_name),
		cmocka_unit_test(test_a_body_nested_too_deep_is_refused),
		cmocka_unit_test(test_a_short_error_buffer_is_not_overrun),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
