/*
 * modeld.h: the supervisor's process-wide state and its parts.
 *
 * main.c    arguments, config, signals, the loop and shutdown
 * slots.c   the slots, and the slot_env that connects their machines to the rest
 * child.c   worker processes: spawn, stop, heartbeats, reaping, their messages
 * server.c  the control socket, clients, replies and event fan-out
 * ops.c     the client ops: one dispatch switch and a function per op
 * events.c  the events clients subscribe to
 * devlock.c the per-device lock for GPU-heavy work
 * probe.c   the GPU inventory at start, from a short-lived worker
 * http.c    the HTTP listener: OpenAI's API, JSON views, events, metrics
 * metrics.c the numbers GET /metrics shows
 */
#ifndef MODELD_H
#define MODELD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

#include "../proto/msg.h"
#include "config.h"
#include "probe.h"
#include "req.h"
#include "slot.h"

/* The smallest max_frame a client may ask for: room for any error reply. */
#define CLIENT_MIN_FRAME 1024u
/* A subscriber owing this much is behind: its state events are coalesced, its progress and job events left out. */
#define SUBSCRIBER_BEHIND (64u << 10)
/* A subscriber owing more events than this is dropped, told why. */
#define SUBSCRIBER_MAX_OWED (256u << 10)
/* The most a client may leave unread before it is dropped. */
#define CLIENT_MAX_OUTPUT (8u << 20)
/* While loading, progress counts as life: the heartbeat timeout is stretched by this. */
#define HEARTBEAT_LOADING_FACTOR 3
/* Between the stop message and SIGTERM, at most. */
#define CHILD_STOP_GRACE_MS 2000
/* A worker's log line longer than this is passed on in pieces. */
#define CHILD_LOG_LINE_MAX 4096
/* A worker whose channel closed is killed if it has not exited this long after. */
#define CHILD_CLOSED_GRACE_MS 2000
/* Progress events per load: at most one per this many ms. */
#define PROGRESS_EVENT_MS 100
/* How long an inference waits for its slot by default (the most is req.h's). */
#define INFER_DEFAULT_WAIT_MS 30000
/* HTTP: bounds on a request, and on an idle connection; the shortest bearer token. */
#define HTTP_MAX_HEADERS (16 << 10)
#define HTTP_TIMEOUT_SECONDS 60
#define HTTP_TOKEN_MIN 16
#define HTTP_TOKEN_MAX 255
#define HTTP_HOST_LEN 64
/* An event stream with nothing to say gets a comment this often, so that it is seen to live. */
#define HTTP_KEEPALIVE_SECONDS 15
/*
 * An event stream that owes its client this much is behind: it is given the
 * kept events this much at a time, the next once the client has read it, so
 * that a client that does not read costs little. A stream (of events or of
 * tokens) has its socket's send buffer set to HTTP_STREAM_SNDBUF, which
 * bounds what the kernel holds for a client that does not read.
 */
#define HTTP_STREAM_STEP (64u << 10)
#define HTTP_STREAM_SNDBUF (64u << 10)
/* A token stream whose client leaves this much unread is cancelled, with an error event. */
#define HTTP_STREAM_MAX_OWED (256u << 10)
/* Whom workers run as when modeld is root and worker_user is not set: the first of these
 * that exists (the package makes the user modeld). */
#define WORKER_DEFAULT_USERS { "modeld", "nobody" }
/* Descriptors kept from clients: stdio, the log, the listener, the event loop, a spawn's. */
#define FD_RESERVE 32
/* And per slot: its worker's channel. */
#define FD_PER_SLOT 1
/* Out of descriptors, accepting pauses this long; the condition is logged at most every ACCEPT_LOG_MS. */
#define ACCEPT_PAUSE_MS 250
#define ACCEPT_LOG_MS 10000
/* Shutdown waits for workers up to the longest stop_timeout plus this. */
#define SHUTDOWN_SLACK_MS 1000

struct child;
struct devlock;
struct event_ref;
struct gpu;

struct slot_rt {
	struct slot s;			/* first: the machine's view */
	struct event *deadline;
	struct child *child;
	uint64_t progress_sent_ms;
	bool progress_done_sent;	/* this load's last progress event (all its bytes) went out */
	uint64_t dev_free, dev_total;	/* from the worker's last heartbeat */
	uint64_t overhead;		/* memory the engine held beyond the file, last load */
	struct devlock *lock;		/* of its device, when that is exclusive */
	uint64_t state_seq;		/* seq of its last state event */
};

struct modeld {
	struct event_base *base;
	struct config conf;
	struct slot_rt *slots;
	size_t nslots;
	char *socket_path;
	char *worker_path;
	char *engine_dir;		/* where engines that are shared objects live */
	uint64_t next_job;
	uint64_t next_seq;
	uint64_t event_seq;
	bool shutting_down;
	uid_t uid;
	int devnull;			/* workers' stdin and stdout */
	/*
	 * HTTP connections hold descriptors below this; those above are kept for
	 * the socket's clients, the workers and the model files.
	 */
	int http_fd_ceiling;
	struct gpu *gpus;		/* found at start (probe.c) */
	enum probe_llama llama;		/* what the llama engine runs on, as the probe found */
	size_t ngpus;
};

extern struct modeld md;

/* slots.c */
void slots_init(void);
void slots_start(void);
void slots_shutdown(void);
void slots_free(void);
struct slot_rt *slots_find(const char *name);
struct slot_rt *slots_for_model(const struct model *m);

/* child.c */
/* The model's file and its size, opened without blocking; -1 with err unless it is a regular file. */
int child_open_model(const struct model *m, uint64_t *size, char *err, size_t errlen);
/*
 * The engine m runs on: the one configured, else by the file's magic (the
 * weights fd): GGUF is for the llama engine, anything else for the
 * reference engine of the slot's device.
 */
const char *child_engine_for(const struct model *m, const char *device, int weights);
struct child *child_spawn(struct slot_rt *rt, char *err, size_t errlen);
void child_stop(struct child *c, bool kill);
/* Kills a worker that failed; its exit is reported as "was killed: why". */
void child_kill(struct child *c, const char *why);
void child_send(struct child *c, struct msgw *w);
/* A request for the worker: written with the others handed to it in this turn of the loop. */
void child_send_soon(struct child *c, struct msgw *w);
pid_t child_pid(const struct child *c);
void child_reap(void);
unsigned child_count(void);
void child_kill_all(void);

/* main.c */
/* Reads the configuration as at start: the file, models_dir scanned, the command line's overrides. 0, or -1 with err. */
int modeld_read_config(struct config *c, char err[CONFIG_ERR_LEN]);

/* reload.c */
/* What a reload did to the models. */
struct reload_counts {
	size_t added, removed, changed;
};
/* Reads the configuration again and applies it; -1 with err (the running one stays). */
int reload_run(struct reload_counts *counts, char *err, size_t errlen);
/* Frees the models reloads retired (at exit). */
void reload_free(void);

/* state.c */
/* Reads the desired state, if state_dir is set; a bad file is reported and ignored. After slots_init. */
void state_load(void);
/* The model rt starts with: the state file's, else configured (its default_model). */
const struct model *state_initial(const struct slot_rt *rt, const struct model *configured);
/* What rt should hold now (NULL: nothing): the model it started with, then the one it last became ready with. */
const struct model *state_wanted(const struct slot_rt *rt);
/* After any state change of s: a slot that became ready or empty is written down. */
void state_changed(const struct slot *s);
void state_free(void);

/* service.c */
/* Forks: the parent waits and exits 0 once the daemon is ready, 1 if it ends first. 0, or -1 with err. */
int service_detach(char *err, size_t errlen);
/* modeld serves: the pidfile (if any) is written, systemd and a waiting parent told. -1 if the pidfile cannot be. */
int service_ready(const char *pidfile);
/* Tells systemd each slot's state (after any change). */
void service_status(void);
/* A reload starts (true) or ends. */
void service_reloading(bool reloading);
void service_stopping(void);
/* Removes the pidfile. */
void service_end(void);

/* server.c */
struct client;
int server_listen(const char *path, mode_t mode, char *err, size_t errlen);
void server_close(void);
/* An event to its subscribers; s: the slot it is about (state events of a subscriber behind are coalesced by it). */
void server_broadcast(int kind, const struct slot *s, struct msgw *w);
void server_reply_error(struct client *c, uint64_t id, enum err code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A success reply: begin it, add results, then send it (which frees it). */
void server_reply_begin(struct msgw *w, uint64_t id);
void server_reply_send(struct client *c, struct msgw *w);
void server_send(struct client *c, struct msgw *w);
/* A request of c's, its replies to c (req_discard it if it is answered before it reaches a slot). */
struct req *server_new_req(struct client *c, uint64_t id, enum op op);
/* c's request under id that has not had its final reply, or NULL. */
struct req *server_find_req(struct client *c, uint64_t id);
void server_subscribe(struct client *c, unsigned mask);
/* The largest frame body c accepts, as its hello said. */
void server_set_max_frame(struct client *c, size_t max);
bool server_is_admin(const struct client *c);
unsigned server_client_count(void);
struct evconnlistener;
/* Out of descriptors, l stops accepting for ACCEPT_PAUSE_MS at a time instead of spinning; unguard before freeing l. */
void server_guard_accept(struct evconnlistener *l);
void server_unguard_accept(struct evconnlistener *l);
/* A guarded l stops accepting for ACCEPT_PAUSE_MS. */
void server_pause_accept(struct evconnlistener *l);
/* Subscribers dropped for leaving events unread, since start. */
uint64_t server_dropped_count(void);

/* metrics.c */
struct evbuffer;
/* After the config and the slots: room for every slot and model. */
void metrics_init(void);
void metrics_free(void);
/* After a reload changed md.conf.models (old: the models before): the numbers of models that stayed go on. */
void metrics_models_changed(struct model *const *old, size_t nold);
/* A slot's state was published: a load that reached ready is timed. */
void metrics_state(const struct slot *s);
/* r ends with code. */
void metrics_request(const struct req *r, enum err code);
/* Every metric, in Prometheus' text format. */
void metrics_write(struct evbuffer *out);

/* http.c: the HTTP listener, when the config has one. */
/* Whether c's http settings would serve (address, tokens read): the check that -t, a start and a
 * reload share. 0, or -1 with err. */
int http_check(const struct config *c, char *err, size_t errlen);
/* Listens as md.conf says (nothing when it has no http). 0, or -1 with err. */
int http_listen(char *err, size_t errlen);
/*
 * As modeld stops: no more connections, and event streams end; requests
 * under way end as their slots end them (an error event, then [DONE]).
 */
void http_stop(void);
/* At exit: every connection goes. */
void http_close(void);
/* An event to the HTTP event streams that want it. */
void http_broadcast(const struct event_ref *e);

/* ops.c */
/* Why an op was refused: its code, and a message that names what is wrong. */
struct op_error {
	enum err code;
	char message[256];
};
void ops_error(struct op_error *err, enum err code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* load or unload (r->op) with the arguments in m, as the socket's ops read them, handed to its slot;
 * -1 with err when they are wrong (r is the caller's still). */
int ops_submit_admin(struct req *r, const msgpack_object *m, struct op_error *err);
void ops_dispatch(struct client *c, const msgpack_object *msg);
/* The results of r, a request that waited in slot s and ended well, after "slot". */
void ops_write_result(struct msgw *w, const struct slot *s, const struct req *r);
/* The result of status, models or devices (name), as a whole map in w (msgw_free it); -1 for another name. */
int ops_write_view(struct msgw *w, const char *name);
/* Calls fn for every device: the host's memory, the GPUs found at start, any other a slot names. */
void ops_each_device(void (*fn)(void *arg, const char *name, const char *label, uint64_t total,
				uint64_t free_bytes), void *arg);
/* Whether only administrators may call op. */
bool ops_is_admin(enum op op);
/* Aborts, naming it, if an op has no handler: at start, so that no request finds one missing. */
void ops_check(void);
void ops_write_slot(struct msgw *w, const struct slot_rt *rt);

/* events.c */
/* Events kept for HTTP clients that reconnect (Last-Event-ID); jobs kept for the jobs view. */
#define EVENTS_KEPT 1024
#define JOBS_KEPT 64

/* An event as published: its frame (msgpack, with its length header) and what it is about. */
struct event_ref {
	uint64_t seq;
	enum event_kind kind;
	const struct slot *slot;
	uint64_t job;		/* progress and job events: the job; 0 otherwise */
	bool job_over;		/* the job event that says the job is done or failed */
	const void *frame;
	size_t len;
};

/* A job and where it stands, as its last job event said. */
struct job_rec {
	uint64_t id;
	char op[8];
	const struct slot *slot;
	const struct model *model;
	char status[8];
	char message[SLOT_MESSAGE_LEN];
	bool over;				/* done or failed */
	uint64_t started_ms, updated_ms;	/* wall clock */
};

/* The event of that seq while it is kept (until EVENTS_KEPT more come), else NULL. */
const struct event_ref *events_kept(uint64_t seq);
uint64_t events_first_kept(void);
void events_free(void);
/* A job among the last JOBS_KEPT, or NULL. */
const struct job_rec *events_find_job(uint64_t id);
/* One job, as a whole map. */
void events_write_job(struct msgw *w, const struct job_rec *j);
/* "jobs": the kept jobs, newest first. */
void events_write_jobs(struct msgw *w);
void events_state(const struct slot *s);
/* The slot's state now, marked coalesced, under the seq of its last state event: for a subscriber whose state
 * events were held back while it was behind. w is ended, for sending. */
void events_state_again(const struct slot *s, struct msgw *w);
void events_progress(struct slot *s);
void events_advisory(const struct slot *s, const char *message);
void events_gpu(const char *device, const struct slot *s, const char *op, const char *status);
void events_job(const struct slot *s, uint64_t job, const char *op, const struct model *m,
		const char *status, const char *message);

#endif
