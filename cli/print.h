/* print.h: modelctl's output, for people or (with --json) for scripts. */
#ifndef PRINT_H
#define PRINT_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <msgpack.h>

/* One object as compact JSON on one line. */
void print_json_line(FILE *f, const msgpack_object *o);
/* A value for a table cell: strings bare, nil as "-", the rest compact JSON. */
void print_value(FILE *f, const msgpack_object *o);
/* The value of key in m as print_value writes it, sizes (keys ending in "bytes") in human units. */
void print_field(FILE *f, const msgpack_object *m, const char *key);
/* Prints fmt, with each {key} replaced by print_value of that key of map m. */
void print_template(FILE *f, const char *fmt, const msgpack_object *m);
/* A progress bar on one terminal line (\r, no newline). */
void print_bar(FILE *f, const char *label, uint64_t done, uint64_t total);

/* A table for people: a header row, then rows of cells, printed with aligned columns. */
struct table {
	size_t ncols, ncells;
	char **cells;			/* row by row, the header first */
	char *text;			/* the cell being written */
	size_t len;
};
void table_init(struct table *t, const char *const *headers);
/* The next cell: the value of key in m, as print_field writes it. */
void table_cell(struct table *t, const msgpack_object *m, const char *key);
/* The next cell, as given. */
void table_text(struct table *t, const char *s);
/* The next cell, written to the stream this returns until table_end_cell (leading spaces dropped). */
FILE *table_begin_cell(struct table *t);
void table_end_cell(struct table *t, FILE *f);
/* Prints the table and frees it. */
void table_print(FILE *f, struct table *t);

#endif
