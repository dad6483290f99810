/* print.c: see print.h. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/json.h"
#include "../proto/log.h"
#include "../proto/msg.h"
#include "print.h"

#define BAR_WIDTH 30

void print_json_line(FILE *f, const msgpack_object *o)
{
	json_t *j = msg_to_json(o);
	json_dumpf(j, f, JSON_COMPACT | JSON_PRESERVE_ORDER);
	fputc('\n', f);
	fflush(f);
	json_decref(j);
}

void print_value(FILE *f, const msgpack_object *o)
{
	if (o == NULL || o->type == MSGPACK_OBJECT_NIL) {
		fputs("-", f);
	} else if (o->type == MSGPACK_OBJECT_STR) {
		fwrite(o->via.str.ptr, 1, o->via.str.size, f);
	} else {
		json_t *j = msg_to_json(o);
		json_dumpf(j, f, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
		json_decref(j);
	}
}

void print_template(FILE *f, const char *fmt, const msgpack_object *m)
{
	char key[64];

	for (const char *p = fmt; *p; p++) {
		const char *close = *p == '{' ? strchr(p, '}') : NULL;
		if (!close || close - p - 1 >= (long)sizeof key) {
			fputc(*p, f);
			continue;
		}
		snprintf(key, sizeof key, "%.*s", (int)(close - p - 1), p + 1);
		print_value(f, msg_get(m, key));
		p = close;
	}
}

void print_bar(FILE *f, const char *label, uint64_t done, uint64_t total)
{
	char have[32], all[32], bar[BAR_WIDTH + 1];
	int fill = total ? (int)((double)done / (double)total * BAR_WIDTH) : 0;

	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '.', (size_t)(BAR_WIDTH - fill));
	bar[BAR_WIDTH] = '\0';
	log_bytes(have, sizeof have, done);
	log_bytes(all, sizeof all, total);
	fprintf(f, "\r%s [%s] %s / %s ", label, bar, have, all);
	fflush(f);
}

void table_init(struct table *t, const char *const *headers)
{
	*t = (struct table){ 0 };
	while (headers[t->ncols])
		table_text(t, headers[t->ncols++]);
}

void table_text(struct table *t, const char *s)
{
	t->cells = realloc(t->cells, (t->ncells + 1) * sizeof *t->cells);
	if (!t->cells || !(t->cells[t->ncells++] = strdup(s)))
		abort();
}

static bool ends_with(const char *s, const char *end)
{
	size_t n = strlen(s), m = strlen(end);
	return n >= m && strcmp(s + n - m, end) == 0;
}

void print_field(FILE *f, const msgpack_object *m, const char *key)
{
	const msgpack_object *v = msg_get(m, key);

	if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ends_with(key, "bytes")) {
		char human[32];
		log_bytes(human, sizeof human, v->via.u64);
		fputs(human, f);
	} else {
		print_value(f, v);
	}
}

FILE *table_begin_cell(struct table *t)
{
	t->text = NULL;
	t->len = 0;
	FILE *f = open_memstream(&t->text, &t->len);
	if (!f)
		abort();
	return f;
}

void table_end_cell(struct table *t, FILE *f)
{
	fclose(f);
	table_text(t, t->text + strspn(t->text, " "));
	free(t->text);
}

void table_cell(struct table *t, const msgpack_object *m, const char *key)
{
	FILE *f = table_begin_cell(t);

	print_field(f, m, key);
	table_end_cell(t, f);
}

void table_print(FILE *f, struct table *t)
{
	size_t *width = calloc(t->ncols, sizeof *width);

	if (!width)
		abort();
	for (size_t i = 0; i < t->ncells; i++)
		if (strlen(t->cells[i]) > width[i % t->ncols])
			width[i % t->ncols] = strlen(t->cells[i]);
	for (size_t i = 0; i < t->ncells; i++) {
		size_t col = i % t->ncols;
		bool last = col == t->ncols - 1;
		fprintf(f, "%-*s%s", last ? 0 : (int)width[col], t->cells[i], last ? "\n" : "  ");
		free(t->cells[i]);
	}
	free(t->cells);
	free(width);
}
