/* frame.c: frame decoding, fd passing and the blocking channel. */
#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "frame.h"

#define CHAN_READ_CHUNK 65536

/* The big-endian unsigned integer of w bytes at p. */
static uint64_t be(const unsigned char *p, unsigned w)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < w; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * msgpack-c allocates room for every element a map or array declares before
 * it reads them, so a few bytes declaring 2^31 elements cost gigabytes. This
 * walk checks, before decoding, that each container declares no more
 * elements than bytes remain (each element takes at least one), so that
 * decoding a frame costs memory in proportion to its length.
 */
static const char *counts_fit(const unsigned char *p, size_t n)
{
	static const char *const truncated = "frame ends inside its message";
	/* For 0xc4..0xdf: bytes of length field, and whether it counts elements. */
	static const unsigned char width[32] = {
		1, 2, 4, 1, 2, 4, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8,	/* c4 .. d3 */
		0, 0, 0, 0, 0, 1, 2, 4, 2, 4, 2, 4,		/* d4 .. df */
	};
	static const unsigned char fixext[5] = { 2, 3, 5, 9, 17 };	/* d4 .. d8, type byte included */
	uint64_t pending = 1, off = 0;

	while (pending > 0) {
		if (off >= n)
			return truncated;
		unsigned char t = p[off++];
		uint64_t items = 0, skip = 0;
		pending--;
		if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
			/* fixint, nil, bool: the byte is all */
		} else if (t >= 0x80 && t <= 0x8f) {
			items = 2u * (t & 0x0f);
		} else if (t >= 0x90 && t <= 0x9f) {
			items = t & 0x0f;
		} else if (t >= 0xa0 && t <= 0xbf) {
			skip = t & 0x1f;
		} else if (t >= 0xd4 && t <= 0xd8) {
			skip = fixext[t - 0xd4];
		} else if (t >= 0xc4) {
			unsigned w = width[t - 0xc4];
			if (n - off < w)
				return truncated;
			uint64_t v = be(p + off, w);
			off += w;
			if (t >= 0xca && t <= 0xd3)
				skip = 0;		/* the number itself was the field */
			else if (t >= 0xdc && t <= 0xdd)
				items = v;
			else if (t >= 0xde)
				items = 2 * v;
			else
				skip = v + (t >= 0xc7 && t <= 0xc9);	/* ext: a type byte */
		} else {
			return "frame does not decode as msgpack";	/* 0xc1: never used */
		}
		if (items > n - off || skip > n - off)
			return truncated;
		pending += items;
		off += skip;
	}
	return NULL;
}

int frame_decode(const void *buf, size_t len, size_t max_frame,
		 msgpack_unpacked *out, size_t *used, const char **why)
{
	const unsigned char *p = buf;
	size_t off = 0;

	if (len < FRAME_HEADER_LEN)
		return FRAME_MORE;
	uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n == 0) {
		*why = "empty frame";
		return FRAME_ERROR;
	}
	if (n > max_frame) {
		*why = "frame longer than max_frame";
		return FRAME_ERROR;
	}
	if (len - FRAME_HEADER_LEN < n)
		return FRAME_MORE;

	if ((*why = counts_fit(p + FRAME_HEADER_LEN, n)) != NULL)
		return FRAME_ERROR;
	msgpack_unpack_return rc = msgpack_unpack_next(out, (const char *)p + FRAME_HEADER_LEN, n, &off);
	if (rc == MSGPACK_UNPACK_CONTINUE) {
		*why = "frame ends inside its message";
		return FRAME_ERROR;
	}
	if (rc != MSGPACK_UNPACK_SUCCESS && rc != MSGPACK_UNPACK_EXTRA_BYTES) {
		*why = "frame does not decode as msgpack";
		return FRAME_ERROR;
	}
	if (off != n) {
		*why = "frame holds bytes after its message";
		return FRAME_ERROR;
	}
	if (out->data.type != MSGPACK_OBJECT_MAP) {
		*why = "frame does not hold a map";
		return FRAME_ERROR;
	}
	*used = FRAME_HEADER_LEN + n;
	return FRAME_OK;
}

int frame_send_fd(int sock, const void *frame, size_t len, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)frame, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf,
	};
	memset(&ctl, 0, sizeof ctl);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);

	ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	if (n < 0)
		return -1;
	/* The rest, if any, carries no descriptor. */
	for (size_t done = (size_t)n; done < len; ) {
		ssize_t m = send(sock, (const char *)frame + done, len - done, MSG_NOSIGNAL);
		if (m < 0 && errno == EINTR)
			continue;
		if (m <= 0)
			return -1;
		done += (size_t)m;
	}
	return 0;
}

void chan_init(struct chan *c, int fd, size_t max_frame)
{
	memset(c, 0, sizeof *c);
	c->fd = fd;
	c->max_frame = max_frame;
	msgpack_unpacked_init(&c->msg);
}

void chan_free(struct chan *c)
{
	for (int i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
	msgpack_unpacked_destroy(&c->msg);
	free(c->buf);
	c->buf = NULL;
	free(c->out);
	c->out = NULL;
}

/* Keeps descriptors that arrived with the bytes; closes any beyond our room. */
static void chan_keep_fds(struct chan *c, struct msghdr *mh)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
			if (c->nfds < CHAN_MAX_FDS)
				c->fds[c->nfds++] = fd;
			else
				close(fd);
		}
	}
}

/* Reads into the buffer, waiting or not. 1: bytes came, 0: EOF, -1: error, 2: nothing there (wait false). */
static int chan_fill(struct chan *c, bool wait)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(CHAN_MAX_FDS * sizeof(int))];
	} ctl;

	if (c->cap - c->len < CHAN_READ_CHUNK) {
		c->cap = c->len + CHAN_READ_CHUNK;
		c->buf = realloc(c->buf, c->cap);
		if (c->buf == NULL)
			abort();
	}
	struct iovec iov = { .iov_base = c->buf + c->len, .iov_len = c->cap - c->len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf,
	};
	ssize_t n;
	do {
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT));
	} while (n < 0 && errno == EINTR);
	if (n < 0 && !wait && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 2;
	if (n < 0) {
		c->error = strerror(errno);
		return -1;
	}
	chan_keep_fds(c, &mh);
	c->len += (size_t)n;
	return n > 0;
}

int chan_read(struct chan *c, int timeout_ms, const msgpack_object **msg)
{
	/* Drop the message handed out by the previous call. */
	if (c->used) {
		memmove(c->buf, c->buf + c->used, c->len - c->used);
		c->len -= c->used;
		c->used = 0;
	}
	c->error = NULL;
	for (;;) {
		size_t used;
		int rc = frame_decode(c->buf, c->len, c->max_frame, &c->msg, &used, &c->error);
		if (rc == FRAME_ERROR)
			return -1;
		if (rc == FRAME_OK) {
			c->used = used;
			*msg = &c->msg.data;
			return 1;
		}
		/* -1 and 0 ask the socket alone: a receive that waits, or one that does not */
		if (timeout_ms > 0) {
			struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
			int pr = poll(&pfd, 1, timeout_ms);
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr < 0) {
				c->error = strerror(errno);
				return -1;
			}
			if (pr == 0)
				return 0;
		}
		rc = chan_fill(c, timeout_ms < 0);
		if (rc == 2)
			return 0;
		if (rc <= 0) {
			if (rc == 0 && c->len > 0)
				c->error = "stream ends inside a frame";
			return -1;
		}
	}
}

int chan_take_fd(struct chan *c)
{
	if (c->nfds == 0)
		return -1;
	int fd = c->fds[0];
	memmove(c->fds, c->fds + 1, (size_t)(c->nfds - 1) * sizeof(int));
	c->nfds--;
	return fd;
}

/* Writes p[0..len) whole; blocking. */
static int send_all(struct chan *c, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Keeps a frame for chan_flush. */
static int chan_hold(struct chan *c, const char *p, size_t len)
{
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *b = realloc(c->out, cap);
		if (!b)
			return -1;
		c->out = b;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, p, len);
	c->out_len += len;
	return 0;
}

int chan_send(struct chan *c, struct msgw *w)
{
	size_t len;
	const char *p = msgw_frame(w, &len);

	if (c->hold)
		return chan_hold(c, p, len);
	return send_all(c, p, len);
}

void chan_hold_sends(struct chan *c)
{
	c->hold = true;
}

int chan_flush(struct chan *c)
{
	size_t len = c->out_len;

	c->hold = false;
	c->out_len = 0;
	return len ? send_all(c, c->out, len) : 0;
}
