/*
 * ggufmeta.h: what a GGUF model's memory check needs from its metadata:
 * layers, width and attention heads, for the size of its KV cache.
 */
#ifndef GGUFMETA_H
#define GGUFMETA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUFMETA_ERR_LEN 160
/* llama.cpp's KV cache holds F16 keys and values. */
#define GGUFMETA_KV_ELEMENT_BYTES 2

struct ggufmeta {
	uint64_t layers, embd, heads, heads_kv;
	uint64_t ctx_train;			/* 0 when the file does not say */
	uint64_t key_length, value_length;	/* per head; 0: embd / heads */
};

/* Reads the metadata at the start of fd. 0, or -1 with err saying what is wrong. */
int ggufmeta_read(int fd, struct ggufmeta *m, char err[GGUFMETA_ERR_LEN]);
/* The KV cache of ctx tokens: keys and values of every layer; UINT64_MAX where that does not fit. */
uint64_t ggufmeta_kv_bytes(const struct ggufmeta *m, uint64_t ctx);

#endif
