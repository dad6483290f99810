/* frame.c: frame decoding, fd passing and the blocking channel. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "frame.h"

#define CHAN_READ_CHUNK 65536

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

/* Reads what is there into the buffer. 1: bytes came, 0: EOF, -1: error. */
static int chan_fill(struct chan *c)
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
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
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
		rc = chan_fill(c);
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

int chan_send(struct chan *c, struct msgw *w)
{
	size_t len;
	const char *p = msgw_frame(w, &len);

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
