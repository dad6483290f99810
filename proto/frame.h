/*
 * frame.h: the one framing of both protocols, and a blocking channel.
 *
 * A frame is a 4-byte big-endian length N (1..max) and N bytes holding
 * exactly one msgpack map. frame_decode() is the only code that turns bytes
 * into messages; peer.c (libevent, in modeld) and the chan below (blocking,
 * in the worker and modelctl) both call it.
 */
#ifndef FRAME_H
#define FRAME_H

#include <stdbool.h>
#include <stddef.h>

#include <msgpack.h>

#include "msg.h"

enum frame_rc { FRAME_ERROR = -1, FRAME_MORE = 0, FRAME_OK = 1 };

/*
 * Decodes the frame at the start of buf[0..len). FRAME_OK: *out holds the
 * map and *used the frame's length. FRAME_MORE: the frame is not complete.
 * FRAME_ERROR: *why says what is wrong; the stream cannot be resynchronised.
 */
int frame_decode(const void *buf, size_t len, size_t max_frame,
		 msgpack_unpacked *out, size_t *used, const char **why);

/* Sends one whole frame with fd attached (SCM_RIGHTS); blocking. 0 or -1. */
int frame_send_fd(int sock, const void *frame, size_t len, int fd);

#define CHAN_MAX_FDS 4

struct chan {
	int fd;
	size_t max_frame;
	unsigned char *buf;
	size_t len, cap, used;	/* used: bytes of the message handed out last */
	int fds[CHAN_MAX_FDS];	/* received with SCM_RIGHTS, not yet taken */
	int nfds;
	msgpack_unpacked msg;
	const char *error;	/* why the last chan_read returned -1; NULL at EOF */
	bool hold;		/* sends are kept until chan_flush */
	char *out;		/* the frames kept */
	size_t out_len, out_cap;
};

void chan_init(struct chan *c, int fd, size_t max_frame);
void chan_free(struct chan *c);
/*
 * Waits up to timeout_ms (-1: forever, 0: not at all, which costs one
 * receive that does not wait) for one frame. 1: *msg is valid until
 * the next call. 0: timed out. -1: end of stream or a bad frame (c->error).
 */
int chan_read(struct chan *c, int timeout_ms, const msgpack_object **msg);
/* Whether bytes past the message handed out last are buffered, which a
 * chan_read(c, 0) may return without a system call. */
static inline bool chan_buffered(const struct chan *c)
{
	return c->len > c->used;
}
/* The oldest fd received and not yet taken, or -1. The caller owns it. */
int chan_take_fd(struct chan *c);
/* Writes the frame of w whole; blocking. 0 or -1 (errno set). After
 * chan_hold_sends, it is kept instead, and chan_flush writes what was kept
 * in one go (several answers of one step, say) and sends at once again. */
int chan_send(struct chan *c, struct msgw *w);
void chan_hold_sends(struct chan *c);
int chan_flush(struct chan *c);

#endif
