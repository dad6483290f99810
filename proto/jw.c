/* jw.c: see jw.h. */
#include <stdlib.h>
#include <string.h>

#include "jw.h"
#include "msg.h"

static void put(struct jw *w, const char *s, size_t n)
{
	if (w->len + n > w->cap) {
		w->cap = w->len + n > 2 * w->cap ? w->len + n + 256 : 2 * w->cap;
		if (!(w->buf = realloc(w->buf, w->cap)))
			abort();
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

/* The comma before an item that is not its container's first, unless it is a key's value. */
static void item(struct jw *w)
{
	if (!w->first && !w->keyed)
		put(w, ",", 1);
	w->first = false;
	w->keyed = false;
}

void jw_init(struct jw *w)
{
	memset(w, 0, sizeof *w);
	w->first = true;
}

void jw_free(struct jw *w)
{
	free(w->buf);
	jw_init(w);
}

static void open_container(struct jw *w, char opener, char closer)
{
	item(w);
	if (w->depth == JW_MAX_DEPTH)
		abort();	/* the shapes written are fixed and shallow */
	w->closer[w->depth++] = closer;
	put(w, &opener, 1);
	w->first = true;
}

void jw_obj(struct jw *w) { open_container(w, '{', '}'); }
void jw_arr(struct jw *w) { open_container(w, '[', ']'); }

void jw_end(struct jw *w)
{
	put(w, &w->closer[--w->depth], 1);
	w->first = false;
}

void jw_key(struct jw *w, const char *key)
{
	item(w);
	put(w, "\"", 1);
	put(w, key, strlen(key));
	put(w, "\":", 2);
	w->keyed = true;
}

/* Bytes that JSON does not take as they are: quote, backslash, and the control characters. */
static void escaped(struct jw *w, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

	switch (c) {
	case '"': put(w, "\\\"", 2); break;
	case '\\': put(w, "\\\\", 2); break;
	case '\n': put(w, "\\n", 2); break;
	case '\r': put(w, "\\r", 2); break;
	case '\t': put(w, "\\t", 2); break;
	default: put(w, u, sizeof u); break;
	}
}

void jw_strn(struct jw *w, const char *s, size_t n)
{
	static const char replacement[] = "\xef\xbf\xbd";
	size_t i = 0;

	item(w);
	put(w, "\"", 1);
	while (i < n) {
		size_t run = msg_utf8_run(s + i, n - i), plain = 0;
		for (size_t k = 0; k < run; k++) {
			unsigned char c = (unsigned char)s[i + k];
			if (c >= 0x20 && c != '"' && c != '\\')
				continue;
			put(w, s + i + plain, k - plain);
			escaped(w, c);
			plain = k + 1;
		}
		put(w, s + i + plain, run - plain);
		i += run;
		if (i < n) {
			put(w, replacement, sizeof replacement - 1);
			i++;
		}
	}
	put(w, "\"", 1);
}

void jw_str(struct jw *w, const char *s)
{
	if (s)
		jw_strn(w, s, strlen(s));
	else
		jw_null(w);
}

void jw_u64(struct jw *w, uint64_t v)
{
	char digits[20];
	size_t n = sizeof digits;

	do
		digits[--n] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	item(w);
	put(w, digits + n, sizeof digits - n);
}

void jw_null(struct jw *w)
{
	item(w);
	put(w, "null", 4);
}

void jw_kstr(struct jw *w, const char *key, const char *s) { jw_key(w, key); jw_str(w, s); }
void jw_ku64(struct jw *w, const char *key, uint64_t v) { jw_key(w, key); jw_u64(w, v); }
