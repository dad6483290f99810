/*
 * rpc_load: load for modeld's control socket, or rpc_floor's. CLIENTS
 * connections each send COUNT requests, one after another; or, with
 * DEPTH, one connection keeps DEPTH requests outstanding (pipelined).
 * Requests are encoded once; replies are read as frames and checked for
 * ok, not decoded, so the figures are the server's. Prints
 * "p50_us p99_us ops_per_s" over every request.
 *
 * usage: rpc_load SOCKET infer|status CLIENTS COUNT [DEPTH]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../proto/frame.h"
#include "../proto/msg.h"
#include "../proto/proto.h"

#define MAX_DEPTH 256

struct client {
	pthread_t thread;
	int fd;
	size_t count, depth;
	double *lat_us;			/* one per request */
	char *frames[MAX_DEPTH];	/* the request with id i + 1 */
	size_t frame_len[MAX_DEPTH];
	char buf[1 << 16];
	size_t have;
};

static const char *sock_path, *op;

static void die(const char *what)
{
	fprintf(stderr, "rpc_load: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void encode(struct client *c, size_t i)
{
	static const uint32_t input[] = { 1, 2 };
	struct msgw w;
	size_t len;

	msgw_init(&w);
	msgw_map(&w);
	msgw_ku64(&w, "id", i + 1);
	msgw_kstr(&w, "op", op);
	if (strcmp(op, "infer") == 0) {
		msgw_kstr(&w, "model", "a");
		msgw_key(&w, "input");
		msgw_u32s(&w, input, 2);
		msgw_ku64(&w, "max_tokens", 1);
	}
	msgw_end(&w);
	const void *frame = msgw_frame(&w, &len);
	if (!(c->frames[i] = malloc(len)))
		abort();
	memcpy(c->frames[i], frame, len);
	c->frame_len[i] = len;
	msgw_free(&w);
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			die("write");
		p += w;
		n -= (size_t)w;
	}
}

/* Waits for the next reply and checks that it says ok. */
static void next_reply(struct client *c)
{
	for (;;) {
		if (c->have >= FRAME_HEADER_LEN) {
			const unsigned char *p = (const unsigned char *)c->buf;
			size_t n = FRAME_HEADER_LEN + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
			if (n > sizeof c->buf) {
				fprintf(stderr, "rpc_load: a reply of %zu bytes\n", n);
				exit(1);
			}
			if (c->have >= n) {
				if (!memmem(c->buf, n, "\xa2ok\xc3", 4)) {
					fprintf(stderr, "rpc_load: a reply that is not ok\n");
					exit(1);
				}
				memmove(c->buf, c->buf + n, c->have - n);
				c->have -= n;
				return;
			}
		}
		ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
		if (r <= 0)
			die("read");
		c->have += (size_t)r;
	}
}

static void *run(void *arg)
{
	struct client *c = arg;
	double sent[MAX_DEPTH];
	size_t next = 0;

	for (; next < c->depth && next < c->count; next++) {
		sent[next % c->depth] = now_us();
		send_all(c->fd, c->frames[next % c->depth], c->frame_len[next % c->depth]);
	}
	for (size_t done = 0; done < c->count; done++) {
		next_reply(c);		/* replies come in order: one request at a time per client, or FIFO */
		c->lat_us[done] = now_us() - sent[done % c->depth];
		if (next < c->count) {
			sent[next % c->depth] = now_us();
			send_all(c->fd, c->frames[next % c->depth], c->frame_len[next % c->depth]);
			next++;
		}
	}
	return NULL;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (argc < 5 || argc > 6 || strlen(argv[1]) >= sizeof sa.sun_path) {
		fprintf(stderr, "usage: rpc_load SOCKET infer|status CLIENTS COUNT [DEPTH]\n");
		return 2;
	}
	sock_path = argv[1];
	op = argv[2];
	size_t nclients = strtoul(argv[3], NULL, 10), count = strtoul(argv[4], NULL, 10);
	size_t depth = argc == 6 ? strtoul(argv[5], NULL, 10) : 1;
	if (nclients == 0 || count == 0 || depth == 0 || depth > MAX_DEPTH) {
		fprintf(stderr, "rpc_load: CLIENTS, COUNT and DEPTH (at most %d) must be positive\n", MAX_DEPTH);
		return 2;
	}
	strcpy(sa.sun_path, sock_path);
	struct client *cs = calloc(nclients, sizeof *cs);
	double *all = calloc(nclients * count, sizeof *all);
	if (!cs || !all)
		abort();
	for (size_t i = 0; i < nclients; i++) {
		struct client *c = &cs[i];
		c->count = count;
		c->depth = depth;
		c->lat_us = all + i * count;
		for (size_t k = 0; k < depth; k++)
			encode(c, k);
		if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
		    connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
			die(sock_path);
	}
	double start = now_us();
	for (size_t i = 0; i < nclients; i++)
		if (pthread_create(&cs[i].thread, NULL, run, &cs[i]) != 0)
			die("pthread_create");
	for (size_t i = 0; i < nclients; i++)
		pthread_join(cs[i].thread, NULL);
	double wall = now_us() - start;
	size_t total = nclients * count;
	qsort(all, total, sizeof *all, by_value);
	printf("%.1f %.1f %.0f\n", all[total / 2], all[total * 99 / 100], (double)total / (wall / 1e6));
	return 0;
}
