/*
 * httpreq.c: an HTTP request's JSON body as a request (httpreq.h).
 */
#include <stdio.h>
#include <string.h>

#include "../proto/frame.h"
#include "../proto/gen.h"
#include "../proto/proto.h"
#include "httpreq.h"

/* JSON to msgpack, as a client of the socket would have written it. */
static void json_to_msg(struct msgw *w, const json_t *j)
{
	const char *key;
	json_t *v;
	size_t i;

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		msgw_map(w);
		json_object_foreach((json_t *)j, key, v) {
			msgw_key(w, key);
			json_to_msg(w, v);
		}
		msgw_end(w);
		break;
	case JSON_ARRAY:
		msgw_array(w);
		json_array_foreach(j, i, v)
			json_to_msg(w, v);
		msgw_end(w);
		break;
	case JSON_STRING:
		msgw_strn(w, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		if (json_integer_value(j) >= 0)
			msgw_u64(w, (uint64_t)json_integer_value(j));
		else
			msgw_i64(w, json_integer_value(j));
		break;
	case JSON_REAL:
		msgw_f64(w, json_real_value(j));
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		msgw_bool(w, json_is_true(j));
		break;
	default:
		msgw_nil(w);
	}
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
	static const char *const ignored[] = { "model", "stream_options", "user" };
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

/*
 * How long r may wait in a queue (a load included): the body's wait_ms,
 * else default_ms. Takes wait_ms out of body. 0, or -1 with err.
 */
static int read_wait(json_t *body, uint64_t default_ms, struct req *r, char *err, size_t errlen)
{
	const json_t *w = json_object_get(body, "wait_ms");

	r->wait_ms = default_ms;
	if (w && !json_is_null(w)) {
		if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > INFER_MAX_WAIT_MS) {
			snprintf(err, errlen, "wait_ms must be an integer from 0 to %u", INFER_MAX_WAIT_MS);
			return -1;
		}
		r->wait_ms = (uint64_t)json_integer_value(w);
	}
	json_object_del(body, "wait_ms");
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

int httpreq_msg(const json_t *body, struct msgw *w, msgpack_unpacked *u, char *err, size_t errlen)
{
	size_t len, used;
	const char *why = NULL;

	msgw_init(w);
	json_to_msg(w, body);
	msgpack_unpacked_init(u);
	if (msgw_too_deep(w)) {
		snprintf(err, errlen, "the body is nested too deep (at most %d levels)", MSGW_MAX_DEPTH);
		return -1;
	}
	const void *frame = msgw_frame(w, &len);
	if (frame_decode(frame, len, HTTP_MAX_BODY, u, &used, &why) == FRAME_OK)
		return 0;
	snprintf(err, errlen, "%s", why);
	return -1;
}

/*
 * The request's own arguments into r, read as the socket reads them:
 * embed's input, or infer's body through gen.c. 0, or -1 with err.
 */
static int read_work(json_t *body, bool embeddings, struct req *r, char *err, size_t errlen)
{
	struct msgw w;
	msgpack_unpacked u;
	char why[GEN_ERR_LEN];	/* gen_read's own size; err may be shorter */
	int rc = httpreq_msg(body, &w, &u, err, errlen);

	if (rc == 0 && embeddings)
		rc = req_read_texts(msg_get(&u.data, "input"), r, "input", err, errlen);
	else if (rc == 0 && gen_read(&u.data, &r->gen, why) < 0) {
		snprintf(err, errlen, "%s", why);
		rc = -1;
	}
	msgpack_unpacked_destroy(&u);
	msgw_free(&w);
	return rc;
}

int httpreq_read(json_t *body, bool embeddings, uint64_t default_wait_ms, struct req *r,
		 struct httpreq_embed *emb, char *err, size_t errlen)
{
	*emb = (struct httpreq_embed){ 0 };
	if (read_wait(body, default_wait_ms, r, err, errlen) < 0)
		return -1;
	if ((embeddings ? as_embed_body(body, emb, err, errlen) : as_infer_body(body, err, errlen)) < 0)
		return -1;
	return read_work(body, embeddings, r, err, errlen);
}
