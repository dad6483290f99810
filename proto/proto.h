/*
 * proto.h: names shared by modeld, modeld-worker and modelctl.
 *
 * Two protocols live here. The client protocol (docs/protocol.md) names ops
 * and error codes as strings on the wire; the enums below only index tables.
 * The worker channel is private to modeld and its workers: message types are
 * integers, numbered in blocks by direction, versioned by WPROTO_VERSION.
 */
#ifndef PROTO_H
#define PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_SERVER_NAME "modeld"

/* Frames: a 4-byte big-endian length, then that many bytes of one map. */
#define FRAME_HEADER_LEN 4
#define FRAME_MAX_DEFAULT (1024u * 1024u)
/* Inferences one worker may run at once (a model's parallel). */
#define PROTO_PARALLEL_MAX 64

/* The most tokens one infer may ask for, and the most it may give. */
#define INFER_MAX_TOKENS 65536u
#define INFER_MAX_INPUT 65536u
/*
 * The most text one request may have tokenized: a prompt, its messages
 * together, a tokenize's text, each text of an embed. Room for
 * INFER_MAX_INPUT tokens of ordinary text; llama.cpp's time to split out
 * special tokens grows with the square of their number, so this also bounds
 * how long one tokenization may keep a worker.
 */
#define INFER_MAX_TEXT_BYTES (256u * 1024u)
/*
 * Language models (the llama engine): the longest context used when none is
 * configured, whatever the model was trained for; llama.cpp rounds a context
 * up to a multiple of LM_CTX_PAD; and the memory check's margin for compute
 * buffers, LM_COMPUTE_MARGIN plus 1/LM_COMPUTE_MARGIN_DIV of the weights.
 * LM_PARALLEL_DEFAULT generations run at once when the model does not say,
 * each with a context of its own.
 */
#define LM_CTX_DEFAULT_MAX 4096u
#define LM_PARALLEL_DEFAULT 4u
#define LM_CTX_PAD 256u
#define LM_COMPUTE_MARGIN (64u << 20)
#define LM_COMPUTE_MARGIN_DIV 16u

/* The most texts one embed may carry, and the longest vector a worker may answer. */
#define EMBED_MAX_TEXTS 256u
#define EMBED_MAX_DIM 65536u

/*
 * The cuda engine's loader: reader threads, pinned buffers per thread and
 * bytes per read and copy (WM_LOAD's threads, buffers and chunk; 0 asks for
 * the default), and the most pinned memory the ring of all three may take:
 * pinned memory is slow to make and makes a worker's exit slow.
 */
#define LOADER_THREADS_DEFAULT 16u
#define LOADER_BUFFERS_DEFAULT 2u
#define LOADER_CHUNK_DEFAULT (4u << 20)
#define LOADER_PINNED_MAX (128u << 20)

enum op {
	OP_HELLO,
	OP_STATUS,
	OP_MODELS,
	OP_DEVICES,
	OP_LOAD,
	OP_UNLOAD,
	OP_RESTART,
	OP_INFER,
	OP_CANCEL,
	OP_SUBSCRIBE,
	OP_UNSUBSCRIBE,
	OP_RELOAD,
	OP_TOKENIZE,
	OP_DETOKENIZE,
	OP_EMBED,
	OP_JOBS,
	OP__COUNT,
	OP_UNKNOWN = -1,
};

enum err {
	E_NONE,
	E_BAD_FRAME,
	E_BAD_REQUEST,
	E_UNKNOWN_OP,
	E_UNSUPPORTED_PROTO,
	E_UNKNOWN_MODEL,
	E_UNKNOWN_SLOT,
	E_NOT_LOADED,
	E_NOT_READY,
	E_BUSY,
	E_TIMEOUT,
	E_CANCELLED,
	E_SUPERSEDED,
	E_LOAD_FAILED,
	E_INSUFFICIENT_MEMORY,
	E_WORKER_CRASHED,
	E_UNAUTHORIZED,
	E_TOO_LARGE,
	E_SHUTTING_DOWN,
	E_SERVICE_UNAVAILABLE,
	E_BAD_CONFIG,
	E_INTERNAL,
	E__COUNT,
};

/* Client-visible event kinds; a subscription is a bit mask of these. */
enum event_kind {
	EVK_STATE,
	EVK_PROGRESS,
	EVK_JOB,
	EVK_GPU,
	EVK_ADVISORY,
	EVK__COUNT,
};

const char *proto_op_name(enum op op);
enum op proto_op_parse(const char *s, size_t len);
const char *proto_err_name(enum err e);
enum err proto_err_parse(const char *s, size_t len);
const char *proto_event_name(enum event_kind k);
int proto_event_parse(const char *s, size_t len);
/*
 * The control socket when none is named: $MODELD_SOCKET, else
 * $XDG_RUNTIME_DIR/modeld.sock, else /run/modeld/modeld.sock for root, else
 * ./modeld.sock. The caller frees the string.
 */
char *proto_default_socket(void);
/* The socket a client connects to: the default, or when that does not exist
 * and $MODELD_SOCKET is unset, the system daemon's. The caller frees it. */
char *proto_client_socket(void);
#define PROTO_SYSTEM_SOCKET "/run/modeld/modeld.sock"

/* A whole string of decimal digits (no sign, no space) worth at most max. 0, or -1. */
int proto_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* Worker channel. */
#define WPROTO_VERSION 4
#define WORKER_CHANNEL_FD 3

enum wmsg {
	/* supervisor -> worker */
	WM_LOAD = 100,		/* proto, model, engine, engine_dir, device, warmup; optional:
				 * loader_threads, loader_buffers, loader_chunk, ctx,
				 * gpu_layers, threads, batch, parallel, chat_template,
				 * embedding, uid, gid; the weights fd rides along */
	WM_PING,		/* seq */
	WM_INFER,		/* req and the fields of gen.h; up to the worker's parallel at once */
	WM_CANCEL,		/* req */
	WM_STOP,		/* (none): finish and exit */
	WM_TOKENIZE,		/* req, text, add_special, parse_special; these three only
				 * when nothing else runs at the worker */
	WM_DETOKENIZE,		/* req, tokens */
	WM_EMBED,		/* req, texts */

	/* worker -> supervisor */
	WM_PROGRESS = 200,	/* bytes, total */
	WM_LOADED,		/* proto, mem_bytes, vocab, parallel */
	WM_WARMED,		/* warmup_ms */
	WM_FAILED,		/* code, message: load or warmup failed */
	WM_PONG,		/* seq, mem_bytes, dev_free, dev_total */
	WM_TOKENS,		/* req, tokens, text (engines with text) */
	WM_DONE,		/* req; infer: tokens and text not yet sent, finish,
				 * prompt_tokens, first_ms; tokenize: tokens; detokenize: text;
				 * embed: embeddings */
	WM_INFER_FAILED,	/* req, code, message */
};

const char *proto_wmsg_name(int type);

#endif
