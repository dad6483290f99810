/*
 * child.h: worker processes, as the supervisor sees them (child.c). What a
 * worker says is checked (wmsg.c) and fed to its slot's machine as an event.
 */
#ifndef CHILD_H
#define CHILD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

#include "../proto/msg.h"
#include "config.h"

/* While loading, progress counts as life: the heartbeat timeout is stretched by this. */
#define HEARTBEAT_LOADING_FACTOR 3
/* Between the stop message and SIGTERM, at most. */
#define CHILD_STOP_GRACE_MS 2000
/* A worker's log line longer than this is passed on in pieces. */
#define CHILD_LOG_LINE_MAX 4096
/* A worker whose channel closed is killed if it has not exited this long after. */
#define CHILD_CLOSED_GRACE_MS 2000
/* The most a worker may leave unread before its channel breaks. */
#define CHILD_MAX_OUTPUT (8u << 20)

struct child;
struct slot_rt;

/* Workers' timers and channels run on base. -1 if /dev/null (their stdin and stdout) cannot be opened. */
int child_init(struct event_base *base);
void child_end(void);
/* The model's file and its size, opened without blocking; -1 with err unless it is a regular file. */
int child_open_model(const struct model *m, uint64_t *size, char *err, size_t errlen);
/*
 * The engine m runs on: the one configured, else by the file's magic (the
 * weights fd): GGUF is for the llama engine, anything else for the
 * reference engine of the slot's device.
 */
const char *child_engine_for(const struct model *m, const char *device, int weights);
/* A worker loading rt's model; NULL with err. */
struct child *child_spawn(struct slot_rt *rt, char *err, size_t errlen);
void child_stop(struct child *c, bool kill);
/* Kills a worker that failed; its exit is reported as "was killed: why". */
void child_kill(struct child *c, const char *why);
void child_send(struct child *c, struct msgw *w);
/* A request for the worker: written with the others handed to it in this turn of the loop. */
void child_send_soon(struct child *c, struct msgw *w);
pid_t child_pid(const struct child *c);
/* Reaps the workers that ended: each slot hears SEV_EXITED. */
void child_reap(void);
unsigned child_count(void);
void child_kill_all(void);

#endif
