/*
 * httpreq.c: an HTTP request's JSON body as a request (httpreq.h).
 */
#include <stdio.h>
#include <string.h>

#include "../proto/msg.h"
#include "../proto/proto.h"
#include "httpreq.h"

/* How deep j nests (a scalar: 0), counting no further than limit + 1. */
static int depth(const json_t *j, int limit)
{
	const char *key;
	json_t *v;
	size_t i;
	int most = 0;

	if (limit < 0 || (!json_is_object(j) && !json_is_array(j)))
		return 0;
	if (json_is_object(j)) {
		json_object_foreach((json_t *)j, key, v)
			if (depth(v, limit - 1) > most)
				most = depth(v, limit - 1);
	} else {
		json_array_foreach(j, i, v)
			if (depth(v, limit - 1) > most)
				most = depth(v, limit - 1);
	}
	return most + 1;
}

json_t *httpreq_parse(const char *text, size_t n, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(text, n, 0, &je);

	if (!j || !json_is_object(j)) {
		snprintf(err, errlen, "the body is not a JSON object: %s", j ? "" : je.text);
		json_decref(j);
		return NULL;
	}
	return j;
}

/* OpenAI's fields that would change the answer and that modeld does not serve, each with the
 * values that change nothing: such a field with another value is refused, naming it. */
static bool unserved_is_neutral(const char *key, const json_t *v)
{
	if (!v || json_is_null(v))
		return true;
	if (!strcmp(key, "n") || !strcmp(key, "best_of"))
		return json_is_integer(v) && json_integer_value(v) == 1;
	if (!strcmp(key, "presence_penalty") || !strcmp(key, "frequency_penalty"))
		return json_is_number(v) && json_number_value(v) == 0;
	if (!strcmp(key, "logprobs") || !strcmp(key, "echo"))
		return json_is_false(v);
	if (!strcmp(key, "top_logprobs"))
		return json_is_integer(v) && json_integer_value(v) == 0;
	if (!strcmp(key, "logit_bias"))
		return json_is_object(v) && json_object_size(v) == 0;
	if (!strcmp(key, "tools") || !strcmp(key, "functions"))
		return json_is_array(v) && json_array_size(v) == 0;
	if (!strcmp(key, "tool_choice") || !strcmp(key, "function_call"))
		return json_is_string(v) && (!strcmp(json_string_value(v), "none") ||
					      !strcmp(json_string_value(v), "auto"));
	if (!strcmp(key, "response_format"))
		return json_is_object(v) && json_is_string(json_object_get(v, "type")) &&
		       !strcmp(json_string_value(json_object_get(v, "type")), "text");
	if (!strcmp(key, "suffix"))
		return json_is_string(v) && json_string_length(v) == 0;
	return true;
}

/*
 * OpenAI's names for what infer takes differently, and the fields modeld
 * does not take, out of body; the rest is infer's. 0, or -1 with err naming
 * a field that would change the answer and is not served.
 */
static int as_infer_body(json_t *body, char *err, size_t errlen)
{
	static const char *const unserved[] = { "n", "best_of", "logprobs", "top_logprobs", "logit_bias",
						"presence_penalty", "frequency_penalty", "response_format", "tools",
						"tool_choice", "functions", "function_call", "echo", "suffix" };
	static const char *const ignored[] = { "stream_options", "user" };
	json_t *m = json_object_get(body, "prompt");

	for (size_t i = 0; i < sizeof unserved / sizeof unserved[0]; i++) {
		if (!unserved_is_neutral(unserved[i], json_object_get(body, unserved[i]))) {
			snprintf(err, errlen, "%s is not supported: leave it out (or give the value that changes nothing)",
				 unserved[i]);
			return -1;
		}
		json_object_del(body, unserved[i]);
	}
	if (json_is_array(m) && json_array_size(m) > 0 && json_is_integer(json_array_get(m, 0))) {
		json_object_set(body, "input", m);	/* token ids, as OpenAI's API allows */
		json_object_del(body, "prompt");
	}
	if ((m = json_object_get(body, "max_completion_tokens")) && !json_object_get(body, "max_tokens"))
		json_object_set(body, "max_tokens", m);
	json_object_del(body, "max_completion_tokens");
	for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
		json_object_del(body, ignored[i]);
	return 0;
}

/* OpenAI's embeddings fields beside input: encoding_format and dimensions, into emb. 0, or -1 with err. */
static int as_embed_body(const json_t *body, struct httpreq_embed *emb, char *err, size_t errlen)
{
	const json_t *f = json_object_get(body, "encoding_format");
	const json_t *d = json_object_get(body, "dimensions");

	if (f && !json_is_null(f)) {
		const char *v = json_string_value(f);
		if (!v || (strcmp(v, "float") && strcmp(v, "base64"))) {
			snprintf(err, errlen, "encoding_format must be \"float\" or \"base64\"");
			return -1;
		}
		emb->base64 = !strcmp(v, "base64");
	}
	if (d && !json_is_null(d)) {
		if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > EMBED_MAX_DIM) {
			snprintf(err, errlen, "dimensions must be an integer from 1 to %u", EMBED_MAX_DIM);
			return -1;
		}
		emb->dimensions = (uint32_t)json_integer_value(d);
	}
	return 0;
}

int httpreq_read(json_t *body, bool embeddings, uint64_t default_wait_ms, struct req *r,
		 struct httpreq_embed *emb, char *err, size_t errlen)
{
	const struct req_read_opts opts = { default_wait_ms, "input" };
	struct req_error why;

	*emb = (struct httpreq_embed){ 0 };
	r->op = embeddings ? OP_EMBED : OP_INFER;
	if (depth(body, MSGW_MAX_DEPTH) > MSGW_MAX_DEPTH) {
		snprintf(err, errlen, "the body is nested too deep (at most %d levels)", MSGW_MAX_DEPTH);
		return -1;
	}
	if ((embeddings ? as_embed_body(body, emb, err, errlen) : as_infer_body(body, err, errlen)) < 0)
		return -1;
	json_object_del(body, "model");		/* the endpoint has read it: its errors are OpenAI's */
	if (req_read(r, arg_json(body), &opts, &why) == 0)
		return 0;
	snprintf(err, errlen, "%s", why.message);
	return -1;
}
