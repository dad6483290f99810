/*
 * safetensors.h: the header of a safetensors file, checked.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON, then the
 * tensor data. Every way a file can be malformed is reported with a message
 * that names what is wrong, and no tensor is accepted whose bytes are not
 * all inside the data section, or overlap another's.
 */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)
#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_ERR_LEN 256

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_OTHER };

struct st_tensor {
	char *name;
	enum st_dtype dtype;
	int ndims;
	uint64_t shape[SAFETENSORS_MAX_DIMS];
	uint64_t begin, end;	/* offsets in the data section */
};

struct st_meta {
	char *key, *value;
};

struct st_file {
	uint64_t file_size;
	uint64_t data_start;	/* absolute offset of the data section */
	struct st_tensor *tensors;
	size_t ntensors;
	struct st_meta *meta;
	size_t nmeta;
};

/* Reads and checks the header of the file open on fd. 0, or -1 with err filled. */
int safetensors_read(int fd, struct st_file *f, char err[SAFETENSORS_ERR_LEN]);
/* Checks a header held in memory (file_size: the whole file's). */
int safetensors_parse(const char *json, size_t len, uint64_t file_size, struct st_file *f,
		      char err[SAFETENSORS_ERR_LEN]);
const struct st_tensor *safetensors_find(const struct st_file *f, const char *name);
const char *safetensors_meta(const struct st_file *f, const char *key);
size_t safetensors_dtype_size(enum st_dtype d);
void safetensors_free(struct st_file *f);
/* Formats a message into err (SAFETENSORS_ERR_LEN bytes); returns -1. */
int safetensors_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
