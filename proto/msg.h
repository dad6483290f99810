/*
 * msg.h: building and reading msgpack maps.
 *
 * The writer builds a whole frame (length header included) in one buffer.
 * Maps and arrays are opened and closed; their element counts are filled in
 * on close, so callers never count keys by hand.
 *
 * The readers look a key up in a decoded map and check its type, so that
 * dispatch code never walks a raw msgpack object.
 */
#ifndef MSG_H
#define MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define MSGW_MAX_DEPTH 16

struct msgw {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int depth;
	int past_limit;		/* containers open beyond MSGW_MAX_DEPTH, not written */
	bool too_deep;		/* one was: the frame is not whole (msgw_too_deep) */
	struct {
		size_t offset;	/* of the container's 4-byte count */
		uint32_t items;	/* values written inside it so far */
		bool is_map;
	} open[MSGW_MAX_DEPTH];
};

void msgw_init(struct msgw *w);
void msgw_free(struct msgw *w);
void msgw_map(struct msgw *w);
void msgw_array(struct msgw *w);
void msgw_end(struct msgw *w);

void msgw_nil(struct msgw *w);
void msgw_bool(struct msgw *w, bool v);
void msgw_u64(struct msgw *w, uint64_t v);
void msgw_i64(struct msgw *w, int64_t v);
void msgw_f64(struct msgw *w, double v);
void msgw_f32s(struct msgw *w, const float *v, size_t n);
void msgw_str(struct msgw *w, const char *s);	/* NULL writes nil */
void msgw_strn(struct msgw *w, const char *s, size_t n);
/* How many bytes of s, from its start, are whole valid UTF-8 characters. */
size_t msg_utf8_run(const char *s, size_t n);
void msgw_u32s(struct msgw *w, const uint32_t *v, size_t n);

/* Begins a worker-channel message: msgw_init, a map, and its type "t". */
void msgw_wmsg(struct msgw *w, int type);

/* key + value shorthands, for use inside a map */
void msgw_key(struct msgw *w, const char *key);
void msgw_kstr(struct msgw *w, const char *key, const char *s);
void msgw_ku64(struct msgw *w, const char *key, uint64_t v);
void msgw_kbool(struct msgw *w, const char *key, bool v);
void msgw_knil(struct msgw *w, const char *key);

/*
 * Whether a container was opened more than MSGW_MAX_DEPTH deep. Such a
 * writer keeps balancing opens and ends but holds no frame: a writer that
 * copies a client's nesting (JSON turned into msgpack) checks this and
 * refuses the input instead of calling msgw_frame.
 */
bool msgw_too_deep(const struct msgw *w);
/* The finished frame, header included. All containers must be closed, none too deep. */
const void *msgw_frame(struct msgw *w, size_t *len);

/* Readers. MSG_MISSING also covers a nil value: optional arguments may be nil. */
enum msg_rc { MSG_OK = 0, MSG_MISSING = 1, MSG_BAD_TYPE = 2 };

const msgpack_object *msg_get(const msgpack_object *map, const char *key);
int msg_u64(const msgpack_object *map, const char *key, uint64_t *out);
/* A number: a float, or an integer converted to double. */
int msg_f64(const msgpack_object *map, const char *key, double *out);
int msg_bool(const msgpack_object *map, const char *key, bool *out);
int msg_str(const msgpack_object *map, const char *key, const char **s, size_t *len);
/* Copies into a NUL-terminated string; strings holding NUL are MSG_BAD_TYPE. */
int msg_strdup(const msgpack_object *map, const char *key, char **out);
int msg_array(const msgpack_object *map, const char *key, const msgpack_object_array **out);
/* An array of unsigned integers each <= UINT32_MAX, copied into *out (malloc'd). */
int msg_u32s(const msgpack_object *map, const char *key, uint32_t **out, size_t *n);

#endif
