/* safetensors.c: see safetensors.h. JSON is parsed by jansson. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "safetensors.h"

int safetensors_fail(char *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, SAFETENSORS_ERR_LEN, fmt, ap);
	va_end(ap);
	return -1;
}

size_t safetensors_dtype_size(enum st_dtype d)
{
	switch (d) {
	case ST_F32: return 4;
	case ST_F16: case ST_BF16: return 2;
	default: return 0;
	}
}

static enum st_dtype dtype_parse(const char *s)
{
	if (strcmp(s, "F32") == 0) return ST_F32;
	if (strcmp(s, "F16") == 0) return ST_F16;
	if (strcmp(s, "BF16") == 0) return ST_BF16;
	return ST_OTHER;
}

/* A JSON integer that is >= 0, as uint64; -1 when it is anything else. */
static int json_u64(const json_t *j, uint64_t *out)
{
	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(j);
	return 0;
}

static int parse_meta(const json_t *m, struct st_file *f, char *err)
{
	const char *k;
	json_t *v;

	if (!json_is_object(m))
		return safetensors_fail(err, "__metadata__ is not an object");
	f->meta = calloc(json_object_size(m) + 1, sizeof *f->meta);
	json_object_foreach((json_t *)m, k, v) {
		if (!json_is_string(v))
			return safetensors_fail(err, "metadata value of \"%s\" is not a string", k);
		f->meta[f->nmeta].key = strdup(k);
		f->meta[f->nmeta].value = strdup(json_string_value(v));
		f->nmeta++;
	}
	return 0;
}

static int parse_tensor(const char *name, const json_t *j, uint64_t data_len,
			struct st_tensor *t, char *err)
{
	const json_t *dt = json_object_get(j, "dtype");
	const json_t *shape = json_object_get(j, "shape");
	const json_t *offs = json_object_get(j, "data_offsets");

	t->name = strdup(name);
	if (!json_is_object(j))
		return safetensors_fail(err, "tensor %s: entry is not an object", name);
	if (!json_is_string(dt))
		return safetensors_fail(err, "tensor %s: dtype missing or not a string", name);
	t->dtype = dtype_parse(json_string_value(dt));
	if (!json_is_array(shape) || json_array_size(shape) > SAFETENSORS_MAX_DIMS)
		return safetensors_fail(err, "tensor %s: shape missing, not an array, or over %d dims",
			    name, SAFETENSORS_MAX_DIMS);
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    json_u64(json_array_get(offs, 0), &t->begin) ||
	    json_u64(json_array_get(offs, 1), &t->end))
		return safetensors_fail(err, "tensor %s: data_offsets is not [begin, end]", name);
	if (t->begin > t->end || t->end > data_len)
		return safetensors_fail(err, "tensor %s: offsets [%llu, %llu] outside the data (%llu bytes)",
			    name, (unsigned long long)t->begin, (unsigned long long)t->end,
			    (unsigned long long)data_len);

	uint64_t elems = 1;
	t->ndims = (int)json_array_size(shape);
	for (int i = 0; i < t->ndims; i++) {
		if (json_u64(json_array_get(shape, (size_t)i), &t->shape[i]))
			return safetensors_fail(err, "tensor %s: shape holds a non-integer", name);
		if (t->shape[i] && elems > UINT64_MAX / t->shape[i])
			return safetensors_fail(err, "tensor %s: shape overflows", name);
		elems *= t->shape[i];
	}
	size_t esize = safetensors_dtype_size(t->dtype);
	if (esize && (elems > UINT64_MAX / esize || elems * esize != t->end - t->begin))
		return safetensors_fail(err, "tensor %s: shape and dtype need %llu bytes, offsets give %llu",
			    name, (unsigned long long)(elems * esize),
			    (unsigned long long)(t->end - t->begin));
	return 0;
}

static int by_begin(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;
	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int check_overlaps(struct st_file *f, char *err)
{
	qsort(f->tensors, f->ntensors, sizeof *f->tensors, by_begin);
	for (size_t i = 1; i < f->ntensors; i++)
		if (f->tensors[i].begin < f->tensors[i - 1].end)
			return safetensors_fail(err, "tensors %s and %s overlap", f->tensors[i - 1].name,
				    f->tensors[i].name);
	return 0;
}

int safetensors_parse(const char *text, size_t len, uint64_t file_size, struct st_file *f,
		      char err[SAFETENSORS_ERR_LEN])
{
	json_error_t jerr;
	const char *name;
	json_t *v;
	int rc = -1;

	memset(f, 0, sizeof *f);
	f->file_size = file_size;
	f->data_start = 8 + (uint64_t)len;
	if (file_size < f->data_start)
		return safetensors_fail(err, "header is longer than the file");
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return safetensors_fail(err, "header is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
	if (!json_is_object(root)) {
		safetensors_fail(err, "header is not a JSON object");
		goto out;
	}
	f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
	json_object_foreach(root, name, v) {
		if (strcmp(name, "__metadata__") == 0) {
			if (parse_meta(v, f, err))
				goto out;
			continue;
		}
		if (parse_tensor(name, v, file_size - f->data_start, &f->tensors[f->ntensors++], err))
			goto out;
	}
	rc = check_overlaps(f, err);
out:
	json_decref(root);
	if (rc)
		safetensors_free(f);
	return rc;
}

/* pread the whole of len bytes at off, or fail. */
static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf = (char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int safetensors_read(int fd, struct st_file *f, char err[SAFETENSORS_ERR_LEN])
{
	struct stat st;
	unsigned char lenbuf[8];

	memset(f, 0, sizeof *f);
	if (fstat(fd, &st) < 0)
		return safetensors_fail(err, "cannot stat the weights file: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return safetensors_fail(err, "the weights file is not a regular file");
	if (st.st_size < 8)
		return safetensors_fail(err, "file is %lld bytes, shorter than the 8-byte header length",
			    (long long)st.st_size);
	if (pread_all(fd, lenbuf, 8, 0))
		return safetensors_fail(err, "cannot read the header length");
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | lenbuf[i];
	if (hlen > SAFETENSORS_MAX_HEADER)
		return safetensors_fail(err, "header length %llu is over the %u-byte limit (bad magic?)",
			    (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
	if (hlen > (uint64_t)st.st_size - 8)
		return safetensors_fail(err, "header length %llu is longer than the file (%lld bytes)",
			    (unsigned long long)hlen, (long long)st.st_size);
	if (hlen < 2)
		return safetensors_fail(err, "header of %llu bytes cannot hold a JSON object",
			    (unsigned long long)hlen);
	char *text = malloc(hlen);
	if (!text)
		return safetensors_fail(err, "no memory for a %llu-byte header", (unsigned long long)hlen);
	int rc = pread_all(fd, text, hlen, 8) ? safetensors_fail(err, "cannot read the header")
		: safetensors_parse(text, hlen, (uint64_t)st.st_size, f, err);
	free(text);
	return rc;
}

const struct st_tensor *safetensors_find(const struct st_file *f, const char *name)
{
	for (size_t i = 0; i < f->ntensors; i++)
		if (strcmp(f->tensors[i].name, name) == 0)
			return &f->tensors[i];
	return NULL;
}

const char *safetensors_meta(const struct st_file *f, const char *key)
{
	for (size_t i = 0; i < f->nmeta; i++)
		if (strcmp(f->meta[i].key, key) == 0)
			return f->meta[i].value;
	return NULL;
}

void safetensors_free(struct st_file *f)
{
	for (size_t i = 0; i < f->ntensors; i++)
		free(f->tensors[i].name);
	for (size_t i = 0; i < f->nmeta; i++) {
		free(f->meta[i].key);
		free(f->meta[i].value);
	}
	free(f->tensors);
	free(f->meta);
	memset(f, 0, sizeof *f);
}
