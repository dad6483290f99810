/*
 * jw.h: JSON written in order straight into a growing buffer, for the
 * replies of the request path: building a jansson tree and dumping it costs
 * about 7 us for one completion, more than the rest of what modeld does for
 * it over HTTP. The writer puts the commas and colons; strings go out as
 * valid UTF-8 (a byte that is not part of a valid character becomes U+FFFD),
 * escaped as JSON requires. Everything else (parsing, the views) is jansson's.
 */
#ifndef JW_H
#define JW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JW_MAX_DEPTH 16

struct jw {
	char *buf;
	size_t len, cap;
	unsigned depth;
	char closer[JW_MAX_DEPTH];	/* '}' or ']' for each open container */
	bool first;			/* nothing written yet in the innermost container */
	bool keyed;			/* a key was written: its value follows without a comma */
};

void jw_init(struct jw *w);
void jw_free(struct jw *w);
void jw_obj(struct jw *w);
void jw_arr(struct jw *w);
/* Closes the innermost object or array. */
void jw_end(struct jw *w);
/* A key of an object: plain ASCII, written as it is. */
void jw_key(struct jw *w, const char *key);
void jw_strn(struct jw *w, const char *s, size_t n);
/* s, or null for NULL. */
void jw_str(struct jw *w, const char *s);
void jw_u64(struct jw *w, uint64_t v);
void jw_null(struct jw *w);
void jw_kstr(struct jw *w, const char *key, const char *s);
void jw_ku64(struct jw *w, const char *key, uint64_t v);

#endif
