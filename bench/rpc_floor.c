/*
 * rpc_floor: the request path at its least, to hold modeld's against
 * (make bench-rpc). A relay takes clients' frames on a Unix socket and
 * answers them in modeld's shapes; each infer crosses a socketpair to a
 * backend process that runs the reference model's step with the cpu
 * engine. Every hop decodes and encodes msgpack with modeld's own code
 * (frame.c, gen.c, msg.c), so what differs from modeld is the plumbing
 * alone: one epoll loop, reads into one buffer per peer without asking how
 * much there is, writes at once when nothing is queued, requests handed to
 * the backend as they come (it queues them). status is answered by the
 * relay itself: the echo floor.
 *
 * usage: rpc_floor SOCKET MODEL.safetensors
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../proto/frame.h"
#include "../proto/gen.h"
#include "../proto/msg.h"
#include "../proto/proto.h"
#include "../worker/engine.h"

#define MAX_FRAME (1u << 20)
#define MAX_CLIENTS 4096
#define READ_CHUNK 65536

/* A byte buffer: what was read and not yet decoded, or what is owed to a peer. */
struct buf {
	char *data;
	size_t len, cap;
};

struct conn {
	int fd;
	struct buf in, out;
	bool waiting;		/* for the socket to take more of out */
	msgpack_unpacked msg;
};

static void die(const char *what)
{
	fprintf(stderr, "rpc_floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		if (!(b->data = realloc(b->data, b->cap)))
			abort();
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void buf_drop(struct buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* Reads what is there into c->in; 0 at EOF or on an error. */
static ssize_t fill(struct conn *c)
{
	if (c->in.cap - c->in.len < READ_CHUNK) {
		c->in.cap = c->in.len + READ_CHUNK * 2;
		if (!(c->in.data = realloc(c->in.data, c->in.cap)))
			abort();
	}
	ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
	if (n > 0)
		c->in.len += (size_t)n;
	return n < 0 && errno == EAGAIN ? -1 : n;
}

/* The next whole frame of c->in, decoded into c->msg; NULL when there is none yet. */
static const msgpack_object *next_frame(struct conn *c, size_t *used)
{
	const char *why = NULL;
	int rc = frame_decode(c->in.data, c->in.len, MAX_FRAME, &c->msg, used, &why);

	if (rc == FRAME_ERROR) {
		fprintf(stderr, "rpc_floor: bad frame: %s\n", why);
		exit(1);
	}
	return rc == FRAME_OK ? &c->msg.data : NULL;
}

/* --- the backend: one model, one request at a time, blocking --- */

struct job {
	uint32_t tokens[4096];
	uint32_t n;
	bool eos;
	uint32_t prompt_tokens;
};

/* One generation to its end, a step at a time. */
static void generate(struct engine_ctx *ctx, const struct engine_request *rq, struct job *j)
{
	struct engine_error e = { 0 };
	struct engine_step st = { 0 };
	struct engine_seq *seq;

	if (engine_cpu.begin(ctx, rq, &seq, &j->prompt_tokens, &e) < 0)
		die(e.message);
	while (!st.done) {
		if (engine_cpu.step(ctx, &seq, &st, 1, &e) < 0)
			die(e.message);
		if (st.has_piece && j->n < sizeof j->tokens / sizeof j->tokens[0])
			j->tokens[j->n++] = st.piece.token;
	}
	j->eos = st.eos;
	engine_cpu.end(ctx, seq);
}

static int no_progress(void *arg, uint64_t bytes, uint64_t total)
{
	(void)arg; (void)bytes; (void)total;
	return 0;
}

static void write_all(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write");
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

/* WM_INFER in, WM_DONE out (tokens, finish, prompt_tokens), as modeld's worker. */
static void backend_serve(struct engine_ctx *ctx, const msgpack_object *m, int fd)
{
	struct engine_request rq = { 0 };
	struct job job = { .n = 0 };
	char err[GEN_ERR_LEN];
	uint64_t req = 0;
	struct gen g;
	struct msgw w;
	size_t len;

	msg_u64(m, "req", &req);
	if (gen_read(arg_msgpack(m), &g, err))
		die(err);
	rq.input = g.input;
	rq.ninput = g.ninput;
	rq.max_tokens = g.max_tokens;
	rq.sampling = (struct engine_sampling){ g.temperature, g.top_k, g.top_p, g.min_p, g.repeat_penalty, g.seed };
	generate(ctx, &rq, &job);
	msgw_wmsg(&w, WM_DONE);
	msgw_ku64(&w, "req", req);
	msgw_key(&w, "tokens");
	msgw_u32s(&w, job.tokens, job.n);
	msgw_kstr(&w, "finish", job.eos ? "stop" : "length");
	msgw_ku64(&w, "prompt_tokens", job.prompt_tokens);
	msgw_ku64(&w, "first_ms", 0);
	msgw_end(&w);
	const void *frame = msgw_frame(&w, &len);
	write_all(fd, frame, len);
	msgw_free(&w);
	gen_free(&g);
}

static void backend(int fd, const char *model)
{
	struct engine_params params = { .device = "cpu", .model = model };
	struct engine_error e = { 0 };
	struct engine_ctx *ctx;
	struct conn c = { .fd = fd };
	int mfd = open(model, O_RDONLY | O_CLOEXEC);
	size_t used;

	if (mfd < 0)
		die(model);
	if (engine_cpu.open(&ctx, &params, &e) < 0 || engine_cpu.load(ctx, mfd, no_progress, NULL, &e) < 0)
		die(e.message);
	close(mfd);
	msgpack_unpacked_init(&c.msg);
	for (;;) {
		ssize_t n = fill(&c);
		if (n == 0)
			exit(0);
		if (n < 0)
			die("read");
		const msgpack_object *m;
		while ((m = next_frame(&c, &used)) != NULL) {
			backend_serve(ctx, m, fd);
			buf_drop(&c.in, used);
		}
	}
}

/* --- the relay --- */

static struct conn *conns[MAX_CLIENTS];
static struct conn back;
static int epfd;
static uint64_t next_req;

/* Which client and id each request at the backend belongs to, by req (they come back in order). */
struct pending {
	int fd;
	uint64_t id;
};
static struct pending *pending;
static size_t npending, pending_head, pending_cap;

static void want_out(struct conn *c, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.fd = c->fd };

	if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl");
}

/* The peers given something to write since the last flush_all (by fd; the backend's too). */
static int dirty[MAX_CLIENTS + 1];
static size_t ndirty;

/* Queues w's frame for c; flush_all() writes what a batch of reads queued, at once. */
static void send_msg(struct conn *c, struct msgw *w)
{
	size_t len;
	const char *frame = msgw_frame(w, &len);

	if (c->out.len == 0 && ndirty < sizeof dirty / sizeof dirty[0])
		dirty[ndirty++] = c->fd;
	buf_add(&c->out, frame, len);
	msgw_free(w);
}

/*
 * Writes what is queued for c now, in one call, and asks to be told when
 * it can take the rest (if any); a client gone is ended by its EOF.
 */
static void flush(struct conn *c)
{
	bool waiting = c->out.len > 0 && c->waiting;
	ssize_t n = c->out.len && !waiting ? write(c->fd, c->out.data, c->out.len) : 0;

	if (n > 0)
		buf_drop(&c->out, (size_t)n);
	else if (n < 0 && errno != EAGAIN)
		c->out.len = 0;
	if ((c->out.len > 0) != c->waiting) {
		c->waiting = c->out.len > 0;
		want_out(c, c->waiting);
	}
}

/* The peer can take more: what is left goes. */
static void flush_out(struct conn *c)
{
	c->waiting = false;
	want_out(c, false);
	flush(c);
}

/* status answered here, shaped as modeld's with one slot: the echo floor. */
static void reply_status(struct conn *c, uint64_t id)
{
	struct msgw w;

	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "id", id);
	msgw_kbool(&w, "ok", true);
	msgw_key(&w, "slots");
	msgw_array(&w);
	msgw_map(&w);
	msgw_kstr(&w, "name", "cpu");
	msgw_kstr(&w, "device", "cpu");
	msgw_kstr(&w, "state", "ready");
	msgw_kstr(&w, "model", "a");
	msgw_ku64(&w, "pid", 1);
	msgw_ku64(&w, "since_ms", 0);
	msgw_ku64(&w, "queue", 0);
	msgw_ku64(&w, "active", 0);
	msgw_ku64(&w, "mem_bytes", 0);
	msgw_ku64(&w, "load_ms", 0);
	msgw_ku64(&w, "warmup_ms", 0);
	msgw_end(&w);
	msgw_end(&w);
	msgw_end(&w);
	send_msg(c, &w);
}

static void remember(int fd, uint64_t id)
{
	if (npending == pending_cap) {
		struct pending *p = calloc(pending_cap ? pending_cap * 2 : 64, sizeof *p);
		if (!p)
			abort();
		for (size_t i = 0; i < npending; i++)
			p[i] = pending[(pending_head + i) % pending_cap];
		free(pending);
		pending = p;
		pending_head = 0;
		pending_cap = pending_cap ? pending_cap * 2 : 64;
	}
	pending[(pending_head + npending++) % pending_cap] = (struct pending){ fd, id };
}

/* A client's infer: read as modeld reads it, written to the backend as modeld writes it. */
static void forward_infer(struct conn *c, uint64_t id, const msgpack_object *m)
{
	char err[GEN_ERR_LEN];
	struct gen g;
	struct msgw w;

	if (gen_read(arg_msgpack(m), &g, err))
		die(err);
	msgw_wmsg(&w, WM_INFER);
	gen_write(&w, &g);
	msgw_ku64(&w, "req", ++next_req);
	msgw_end(&w);
	send_msg(&back, &w);
	remember(c->fd, id);
	gen_free(&g);
}

static void client_message(struct conn *c, const msgpack_object *m)
{
	uint64_t id = 0;
	const char *op;
	size_t oplen;

	msg_u64(m, "id", &id);
	if (msg_str(m, "op", &op, &oplen) != MSG_OK)
		die("a frame without op");
	if (oplen == 6 && memcmp(op, "status", 6) == 0)
		reply_status(c, id);
	else
		forward_infer(c, id, m);
}

/* WM_DONE from the backend: the client's reply, as modeld's. */
static void backend_message(const msgpack_object *m)
{
	struct pending p = pending[pending_head];
	const msgpack_object *tokens = msg_get(m, "tokens");
	const char *finish;
	size_t flen;
	uint64_t prompt = 0;
	struct msgw w;

	pending_head = (pending_head + 1) % pending_cap;
	npending--;
	msg_str(m, "finish", &finish, &flen);
	msg_u64(m, "prompt_tokens", &prompt);
	if (!conns[p.fd])
		return;		/* its client left */
	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "id", p.id);
	msgw_kbool(&w, "ok", true);
	msgw_kstr(&w, "model", "a");
	msgw_key(&w, "tokens");
	msgw_array(&w);
	for (uint32_t i = 0; tokens && tokens->type == MSGPACK_OBJECT_ARRAY && i < tokens->via.array.size; i++)
		msgw_u64(&w, tokens->via.array.ptr[i].via.u64);
	msgw_end(&w);
	msgw_key(&w, "finish_reason");
	msgw_strn(&w, finish, flen);
	msgw_ku64(&w, "prompt_tokens", prompt);
	msgw_end(&w);
	send_msg(conns[p.fd], &w);
}

static void watch(int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

static void drop(struct conn *c)
{
	close(c->fd);
	conns[c->fd] = NULL;
	free(c->in.data);
	free(c->out.data);
	msgpack_unpacked_destroy(&c->msg);
	free(c);
}

/* Reads c and handles every whole frame; false when c is gone. */
static bool readable(struct conn *c, void (*handle)(struct conn *c, const msgpack_object *m))
{
	ssize_t n = fill(c);
	const msgpack_object *m;
	size_t used;

	if (n == 0)
		return false;
	while ((m = next_frame(c, &used)) != NULL) {
		handle(c, m);
		buf_drop(&c->in, used);
	}
	return true;
}

/* After a batch of reads: everything queued goes out, one write per peer. */
static void flush_all(void)
{
	for (size_t i = 0; i < ndirty; i++) {
		struct conn *c = dirty[i] == back.fd ? &back : conns[dirty[i]];
		if (c)		/* else gone since */
			flush(c);
	}
	ndirty = 0;
}

static void from_backend(struct conn *c, const msgpack_object *m)
{
	(void)c;
	backend_message(m);
}

static void relay(int lfd)
{
	struct epoll_event evs[64];

	epfd = epoll_create1(EPOLL_CLOEXEC);
	watch(lfd);
	watch(back.fd);
	msgpack_unpacked_init(&back.msg);
	for (;;) {
		int n = epoll_wait(epfd, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (cfd < 0 || cfd >= MAX_CLIENTS) {
					if (cfd >= 0)
						close(cfd);
					continue;
				}
				struct conn *c = calloc(1, sizeof *c);
				if (!c)
					abort();
				c->fd = cfd;
				msgpack_unpacked_init(&c->msg);
				conns[cfd] = c;
				watch(cfd);
			} else if (fd == back.fd) {
				if (evs[i].events & EPOLLOUT)
					flush_out(&back);
				if ((evs[i].events & EPOLLIN) && !readable(&back, from_backend))
					exit(0);
			} else if (conns[fd]) {
				if (evs[i].events & EPOLLOUT)
					flush_out(conns[fd]);
				if ((evs[i].events & (EPOLLIN | EPOLLHUP)) && !readable(conns[fd], client_message))
					drop(conns[fd]);
			}
		}
		flush_all();
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sv[2];

	if (argc != 3 || strlen(argv[1]) >= sizeof sa.sun_path) {
		fprintf(stderr, "usage: rpc_floor SOCKET MODEL.safetensors\n");
		return 2;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[0]);
		backend(sv[1], argv[2]);
	}
	close(sv[1]);
	back.fd = sv[0];
	fcntl(back.fd, F_SETFL, O_NONBLOCK);
	strcpy(sa.sun_path, argv[1]);
	unlink(argv[1]);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1024) < 0)
		die(argv[1]);
	relay(lfd);
}
