/* text.c: see text.h. */
#include <stdlib.h>
#include <string.h>

#include "text.h"

static const char replacement[] = "\xef\xbf\xbd";	/* U+FFFD */

void text_init(struct text *t, char *const *stop, uint32_t nstop)
{
	memset(t, 0, sizeof *t);
	t->stop = stop;
	t->nstop = nstop;
}

void text_free(struct text *t)
{
	free(t->buf);
	memset(t, 0, sizeof *t);
}

static void append(struct text *t, const void *s, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2 + 64;
		t->buf = realloc(t->buf, t->cap);
		if (!t->buf)
			abort();
	}
	memcpy(t->buf + t->len, s, n);
	t->len += n;
}

/* The continuation bytes a lead byte needs, or -1 when it cannot start a character. */
static int lead_needs(unsigned char b)
{
	return b < 0x80 ? 0 : b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 :
	       b >= 0xf0 && b <= 0xf4 ? 3 : -1;
}

/* Whether b may follow the bytes of part (which hold a lead and maybe more):
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool continues(const unsigned char *part, size_t npart, unsigned char b)
{
	if ((b & 0xc0) != 0x80)
		return false;
	if (npart != 1)
		return true;
	switch (part[0]) {
	case 0xe0: return b >= 0xa0;
	case 0xed: return b <= 0x9f;
	case 0xf0: return b >= 0x90;
	case 0xf4: return b <= 0x8f;
	default: return true;
	}
}

static void add_byte(struct text *t, unsigned char b)
{
	if (t->npart && !continues(t->part, t->npart, b)) {
		append(t, replacement, 3);	/* the unfinished character can never be finished */
		t->npart = 0;
	}
	if (t->npart) {
		t->part[t->npart++] = b;
		if (--t->need == 0) {
			append(t, t->part, t->npart);
			t->npart = 0;
		}
		return;
	}
	int need = lead_needs(b);
	if (need < 0) {
		append(t, replacement, 3);
	} else if (need == 0) {
		append(t, &b, 1);
	} else {
		t->part[0] = b;
		t->npart = 1;
		t->need = (size_t)need;
	}
}

/* Ends buf before the earliest stop string that lies (partly) after from. */
static bool find_stop(struct text *t, size_t from)
{
	size_t at = t->len;

	for (uint32_t i = 0; i < t->nstop; i++) {
		size_t n = strlen(t->stop[i]);
		size_t start = from >= n ? from - n + 1 : 0;
		if (t->len < start + n)
			continue;
		const char *hit = memmem(t->buf + start, t->len - start, t->stop[i], n);
		if (hit && (size_t)(hit - t->buf) < at)
			at = (size_t)(hit - t->buf);
	}
	if (at == t->len)
		return false;
	t->len = at;
	t->npart = 0;
	t->stopped = true;
	return true;
}

bool text_add(struct text *t, const char *s, size_t n)
{
	size_t before = t->len;

	if (t->stopped)
		return true;
	for (size_t i = 0; i < n; i++)
		add_byte(t, (unsigned char)s[i]);
	return find_stop(t, before);
}

/* How many bytes at the end of buf (after sent) could begin a stop string. */
static size_t stop_prefix(const struct text *t)
{
	size_t held = 0, avail = t->len - t->sent;

	for (uint32_t i = 0; i < t->nstop; i++) {
		size_t n = strlen(t->stop[i]);
		for (size_t k = (n - 1 < avail ? n - 1 : avail); k > held; k--)
			if (memcmp(t->buf + t->len - k, t->stop[i], k) == 0) {
				held = k;
				break;
			}
	}
	return held;
}

size_t text_take(struct text *t, bool final, const char **out)
{
	if (final && t->npart) {
		append(t, replacement, 3);
		t->npart = 0;
	}
	size_t end = final || t->stopped ? t->len : t->len - stop_prefix(t);
	size_t n = end - t->sent;
	*out = t->buf + t->sent;
	t->sent = end;
	return n;
}
