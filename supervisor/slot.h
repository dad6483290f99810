/*
 * slot.h: the state machine of one slot (docs/architecture.md).
 *
 * Everything that happens to a slot is an event fed to slot_event(); a table
 * of state x event (slot.c) picks a small action, made of the steps of
 * step.c. Only the machine changes a slot, with two exceptions its env
 * states: spawn sets the pid, and slot_set_fallback is how a reload names
 * another fallback model. What a worker reports comes in its event. The
 * machine does no I/O: spawning and stopping workers, timers, replies and
 * publishing go through struct slot_env, which the core (core.c) fills
 * with the real thing and the unit tests with recorders.
 */
#ifndef SLOT_H
#define SLOT_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "../proto/proto.h"
#include "config.h"
#include "req.h"

enum slot_state {
	SS_INITIALIZING,
	SS_EMPTY,
	SS_SWITCHING,
	SS_UNLOADING,
	SS_LOADING,
	SS_WARMING,
	SS_READY,
	SS_ERROR,
	SS_RECONNECTING,
	SS_UNAVAILABLE,
	SS_RESTARTING,
	SS__COUNT
};

enum slot_event {
	SEV_START,		/* modeld started */
	SEV_LOAD,		/* req (or NULL for an internal load), model */
	SEV_UNLOAD,		/* req */
	SEV_RESTART,		/* req */
	SEV_INFER,		/* req */
	SEV_CANCEL,		/* req: its client cancelled it or went away */
	SEV_SHUTDOWN,		/* modeld is stopping */
	SEV_PROGRESS,		/* worker: bytes of total loaded */
	SEV_LOADED,		/* worker: weights loaded; vocab, parallel, mem_bytes */
	SEV_WARMED,		/* worker: warmup done; warmup_ms */
	SEV_FAILED,		/* worker: load or warmup failed; code, message, unavailable */
	SEV_TOKENS,		/* worker: seq (the request's), out (tokens, text) */
	SEV_INFER_DONE,		/* worker: seq, out (the rest of the answer) */
	SEV_INFER_FAILED,	/* worker: seq, code, message */
	SEV_EXITED,		/* worker reaped; death, and message says how it ended */
	SEV_DEADLINE,		/* the slot's one timer fired */
	SEV_WAITED,		/* req: its wait_ms ran out */
	SEV_LOCKED,		/* the device lock the slot waited for is its own now */
	SEV_RETIRE,		/* model: a reload took it out of the configuration */
	SEV__COUNT
};

/* How a worker ended: by itself (a status), by a signal modeld did not send, killed by modeld for failing
 * (heartbeat, stall, timeout), or killed for breaking the worker protocol. */
enum worker_death { WD_EXIT, WD_SIGNAL, WD_KILLED, WD_PROTOCOL, WD__COUNT };

/* An event, with the fields its type says it carries (slot_event above); the rest are 0. */
struct slot_ev {
	enum slot_event type;
	struct req *req;
	const struct model *model;
	uint64_t seq;			/* the request a worker's message is about */
	uint64_t bytes, total;		/* progress */
	uint32_t vocab;			/* loaded: the model's token ids are below this */
	unsigned parallel;		/* loaded: the inferences the worker takes at once */
	uint64_t mem_bytes;		/* loaded: the memory the worker holds */
	uint64_t warmup_ms;		/* warmed */
	enum err code;
	bool unavailable;		/* failed: the device, not the model, is at fault */
	enum worker_death death;	/* exited: how */
	const char *message;
	const struct work_out *out;
};

enum slot_lock_wait { LOCK_NONE, LOCK_LOAD, LOCK_INFER };

struct slot;

/* A request at the worker, known by its seq until the worker's last word on it. */
struct slot_running {
	uint64_t seq;
	struct req *req;		/* NULL once it ended here (cancelled, unloaded) */
	bool alone;			/* not an inference: nothing else runs beside it */
};

struct slot_env {
	void *arg;
	uint64_t (*now_ms)(void *arg);
	/* Starts a worker loading s->model; sets s->pid. 0, or -1 with err. */
	int (*spawn)(struct slot *s, char *err, size_t errlen);
	/* Stops the worker: gracefully, or at once with kill. */
	void (*stop)(struct slot *s, bool kill);
	/* Kills the worker, which has failed: why is how its death is reported. */
	void (*kill)(struct slot *s, const char *why);
	void (*send_infer)(struct slot *s, struct req *r);
	void (*cancel_infer)(struct slot *s, uint64_t seq);
	/* Arms the slot's one timer ms from now; 0 disarms it. */
	void (*arm)(struct slot *s, uint64_t ms);
	/* Arms r's wait timer (SEV_WAITED after ms); 0 disarms it, and so does UINT64_MAX: waiting
	 * as long as its client does, r gets no timer. */
	void (*arm_req)(struct slot *s, struct req *r, uint64_t ms);
	/*
	 * The memory check before loading m, counting freed bytes that an
	 * unload would give back: 0 go on, 1 go on with an advisory (published
	 * by the env), -1 refuse (message in msg).
	 */
	int (*check_memory)(struct slot *s, const struct model *m, uint64_t freed, char *msg, size_t len);
	/* Whether m can run on s's device at all: 0, or -1 with why in msg. NULL: it can. */
	int (*can_run)(struct slot *s, const struct model *m, char *msg, size_t len);
	/*
	 * The device lock, for op ("load", "infer"): true when s holds it now,
	 * else s waits and SEV_LOCKED follows. Devices that are not exclusive
	 * always grant it.
	 */
	bool (*lock)(struct slot *s, const char *op);
	/* Gives the lock back, or stops waiting for it. */
	void (*unlock)(struct slot *s);
	/* Whether the slot's device lock is held, by any slot. */
	bool (*device_busy)(struct slot *s);
	/* Hands r to the slot's cpu_fallback slot; false when it has none. */
	bool (*forward)(struct slot *s, struct req *r);
	/* The one final reply of r (code E_NONE: success). r is freed after. */
	void (*finish)(struct slot *s, struct req *r, enum err code, const char *message);
	/* Streams part of r's answer (a chunk). */
	void (*chunk)(struct slot *s, struct req *r, const struct work_out *o);
	/* Publishes s's state: after a transition, or new details of the same state. */
	void (*publish)(const struct slot *s);
	void (*progress)(struct slot *s);
	/* A job moved on: status "queued", "running", "done" or "failed". */
	void (*job)(const struct slot *s, uint64_t job, const char *op, const struct model *m,
		    const char *status, const char *message);
	uint64_t (*new_job)(void *arg);
};

#define SLOT_MAX_DEATHS 64
#define SLOT_MAX_PENDING 8
#define SLOT_MESSAGE_LEN 256

struct slot {
	const struct slot_conf *conf;
	const struct slot_env *env;
	enum slot_state state;
	uint64_t since_ms;
	const struct model *model;	/* loaded, loading, or last that ran */
	const struct model *next;	/* the target once the old worker is gone */
	const struct model *from;	/* switching_model: what was loaded */
	const struct model *fallback;	/* loaded when a load fails */
	bool debouncing;		/* switching_model: the debounce window is open */
	bool evicting;			/* the unload under way is an idle eviction */
	uint64_t keep_until_ms;		/* no idle eviction before this */
	bool locked;			/* holds its device's lock */
	enum slot_lock_wait lock_wait;	/* waits for it, and why */
	bool has_worker;
	bool worker_killed;		/* killed for failing: it is given nothing more */
	int pid;
	char message[SLOT_MESSAGE_LEN];
	/* loading */
	uint64_t load_job, unload_job;
	uint64_t bytes, total;
	uint64_t load_started_ms, load_ms, warmup_ms;
	uint64_t mem_bytes;		/* what the loaded worker said it holds */
	uint32_t vocab;			/* the loaded model's token ids are below this */
	/* crash recovery */
	uint64_t deaths[SLOT_MAX_DEATHS];
	unsigned ndeaths;
	unsigned failed_loads;		/* deaths in a row before a load reached ready */
	unsigned attempt;
	uint64_t deaths_by[WD__COUNT];	/* unexpected exits since start, by how */
	uint64_t restarts;		/* workers started again after one */
	uint64_t backoff_ms;
	uint64_t retry_at_ms;
	/* requests */
	struct req_list load_waiters;
	struct req_list unload_waiters;
	struct req_list queue;		/* infer requests not yet at the worker */
	/* The requests the worker runs, in running[0..nrunning): up to parallel
	 * inferences, or one other request alone. */
	struct slot_running running[PROTO_PARALLEL_MAX];
	unsigned nrunning;
	unsigned parallel;		/* what the loaded worker takes at once */
	uint64_t progress_ms;		/* when the worker last sent it anything */
	bool shutting_down;
	/* events raised by an action, run after it */
	bool in_action;
	struct slot_ev pending[SLOT_MAX_PENDING];
	unsigned npending;
};

void slot_init(struct slot *s, const struct slot_conf *conf, const struct model *fallback,
	       const struct slot_env *env);
/* Feeds one event to the machine. */
void slot_event(struct slot *s, const struct slot_ev *ev);
/* The model a load that fails falls back to (NULL: none), as a reload names it. */
void slot_set_fallback(struct slot *s, const struct model *m);
const char *slot_state_name(enum slot_state st);
/* The model a slot's state names: none when empty or in error, the old one while switching. */
const struct model *slot_shown_model(const struct slot *s);
unsigned slot_queue_length(const struct slot *s);
const char *slot_death_name(enum worker_death d);
/* A model is "in" the slot when it is loaded, loading or the next target. */
bool slot_holds(const struct slot *s, const struct model *m);

#endif
