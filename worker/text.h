/*
 * text.h: the text of a generation, as it may be sent.
 *
 * Pieces arrive as bytes that need not be whole characters (a token may
 * hold half of one) nor valid UTF-8 at all (random or broken models emit
 * stray bytes). text_add keeps the text valid: a character split across
 * pieces waits until it is whole, and bytes that can never be part of one
 * become U+FFFD. It also ends the text before the first stop string.
 * text_take releases what may be sent now: whole characters that cannot be
 * the start of a stop string still to come.
 */
#ifndef TEXT_H
#define TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct text {
	char *buf;			/* valid UTF-8, not NUL-terminated */
	size_t len, cap;
	size_t sent;			/* bytes of buf released by text_take */
	unsigned char part[4];		/* an unfinished character */
	size_t npart, need;
	char *const *stop;
	uint32_t nstop;
	bool stopped;			/* a stop string was found; buf ends before it */
};

void text_init(struct text *t, char *const *stop, uint32_t nstop);
/* Adds n bytes. True when a stop string is now complete (generation should end). */
bool text_add(struct text *t, const char *s, size_t n);
/* What may be released now (all of it, an unfinished character as U+FFFD, when final):
 * *out and the count returned. */
size_t text_take(struct text *t, bool final, const char **out);
void text_free(struct text *t);

#endif
