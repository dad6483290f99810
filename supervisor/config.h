/*
 * config.h: modeld's configuration, from an INI file (inih) or built in.
 *
 *   [modeld]      socket, socket_mode, socket_group, admin_group, models_dir,
 *                 worker, engine_dir, worker_user, log_level, max_frame,
 *                 max_clients, max_clients_per_uid, admin_reserve, client_idle_timeout
 *   [slot NAME]   device, default_model, stop_timeout, restart_backoff_min,
 *                 restart_backoff_max, restart_limit, restart_window,
 *                 heartbeat_interval, heartbeat_timeout, max_queue, autoload,
 *                 switch_debounce, drain_timeout, idle_timeout, fallback_model,
 *                 memory_check, cpu_fallback, lock, loader_threads,
 *                 loader_buffers, loader_chunk
 *   [device NAME] exclusive (default yes for cuda:N, no otherwise); NAME is a
 *                 device or a lock that slots name with `lock = NAME`
 *   [model NAME]  path, slot, engine, warmup, load_timeout, idle_timeout,
 *                 parallel, and for language models ctx, gpu_layers, threads,
 *                 batch, chat_template, embedding
 *
 * Times are in seconds, fractions allowed. Any unknown section or key, or a
 * bad value, is an error reported as "file:line: what is wrong".
 */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_ERR_LEN 512
#define CONFIG_MAX_SLOTS 64
#define CONFIG_MAX_MODELS 4096
#define CONFIG_NAME_MAX 64
#define CONFIG_NO_GROUP ((gid_t)-1)
#define CONFIG_NO_USER ((uid_t)-1)

#define CONFIG_ENGINE_MAX 32
#define CONFIG_GPU_LAYERS_ALL UINT_MAX	/* gpu_layers unset: all on a GPU, none on the cpu */
enum memory_check { MEMCHECK_WARN, MEMCHECK_REFUSE, MEMCHECK_OFF };
/* Whose inferences may load the model they name: nobody's, anyone's, administrators' only. */
enum autoload { AUTOLOAD_NO, AUTOLOAD_YES, AUTOLOAD_ADMIN };

struct slot_conf {
	char *name;
	char *device;			/* "cpu" or "cuda:N" */
	char *default_model;
	int default_model_line;
	uint64_t stop_timeout_ms;
	uint64_t restart_backoff_min_ms;
	uint64_t restart_backoff_max_ms;
	unsigned restart_limit;
	uint64_t restart_window_ms;
	uint64_t heartbeat_interval_ms;
	uint64_t heartbeat_timeout_ms;
	unsigned max_queue;
	enum autoload autoload;
	uint64_t switch_debounce_ms;
	uint64_t drain_timeout_ms;
	uint64_t idle_timeout_ms;	/* 0: never evict */
	uint64_t stall_timeout_ms;	/* a request at the worker with no token this long: killed; 0: never */
	char *fallback_model;
	int fallback_model_line;
	enum memory_check memory_check;
	char *cpu_fallback;		/* slot for gpu=try requests when the device is busy */
	int cpu_fallback_line;
	char *lock;			/* the device lock it takes; NULL: its device's */
	int lock_line;
	unsigned loader_threads;	/* cuda engine loader; 0: the engine's defaults */
	unsigned loader_buffers;
	size_t loader_chunk;
	int loader_line;		/* the last loader_ key's */
	int backoff_line;		/* the last restart_backoff_ key's */
};

struct device_conf {
	char *name;			/* a device, or a lock shared by the slots naming it */
	bool exclusive;			/* one GPU-heavy operation at a time */
};

struct model {
	char *name;
	char *path;
	int line;			/* of its section; 0 when found in models_dir */
	char *slot;			/* preferred slot, or NULL */
	int slot_line;
	char *engine;			/* NULL: auto, by the file's magic and the slot's device */
	unsigned warmup;
	uint64_t load_timeout_ms;
	uint64_t idle_timeout_ms;	/* 0: the slot's applies */
	/* language models (the llama engine); 0 or NULL: the engine's default */
	unsigned ctx;
	unsigned gpu_layers;		/* CONFIG_GPU_LAYERS_ALL when unset */
	unsigned threads;
	unsigned batch;
	unsigned parallel;		/* inferences at once in its worker; 0: the engine's default */
	unsigned max_tokens;		/* for a request that gives none; 0: up to the context's end */
	char *chat_template;
	bool embedding;			/* serves embed */
	/* its file when the configuration was read: a reload that finds another (moved over it, or
	 * written anew) takes the model as changed; all 0 where it could not be read */
	uint64_t file_dev, file_ino, file_size;
	int64_t file_mtime_ns;
	size_t index;			/* in the configuration's models */
	bool retired;			/* a reload took it out of the configuration */
};

struct config {
	char *file;			/* NULL for the embedded default */
	char *socket;			/* NULL: the protocol's default path */
	mode_t socket_mode;
	gid_t socket_group;		/* CONFIG_NO_GROUP: leave it */
	gid_t admin_group;		/* members may call admin ops; CONFIG_NO_GROUP: none */
	uid_t worker_uid;		/* workers drop to this user; CONFIG_NO_USER: they keep modeld's */
	gid_t worker_gid;
	char *models_dir;
	char *worker;			/* NULL: modeld-worker next to modeld */
	char *engine_dir;		/* NULL: the worker's directory */
	char *http;			/* ADDRESS:PORT of the HTTP listener; NULL: none */
	char *http_token_file;		/* bearer tokens, one a line ("TOKEN" or "TOKEN admin") */
	char *state_dir;		/* where the desired state is kept across restarts; NULL: nowhere */
	int log_level;
	size_t max_frame;
	unsigned max_clients;
	unsigned max_clients_per_uid;	/* so that one user cannot take every place */
	unsigned admin_reserve;		/* places of max_clients that only administrators may take */
	uint64_t http_wait_timeout_ms;		/* an HTTP request without wait_ms waits this long; 0: as long as its client */
	uint64_t client_idle_timeout_ms;	/* a client with nothing outstanding and no subscription is closed after this; 0: never */
	struct slot_conf *slots;
	size_t nslots;
	struct model **models;		/* each its own allocation: a reload keeps the ones that stay */
	size_t nmodels;
	struct device_conf *devices;	/* only those with a [device] section */
	size_t ndevices;
	/* where modeld found what it runs with, at start (main.c): the running configuration's only */
	char *socket_path;		/* the control socket */
	char *worker_path;		/* the modeld-worker binary */
	char *engine_path;		/* the directory of engines that are shared objects */
};

/* What a reload did to the models. */
struct config_changes {
	size_t added, removed, changed;
};

/* The configuration modeld runs with: read at start, changed in place by a reload. */
struct config *config_running(void);

/* The embedded defaults, before any file. */
void config_init(struct config *c);
/* Reads file into c. 0, or -1 with err = "file:line: what". */
int config_read(struct config *c, const char *file, char err[CONFIG_ERR_LEN]);
/* Completes c: adds the models of models_dir, resolves names. 0, or -1 with err. */
int config_finish(struct config *c, char err[CONFIG_ERR_LEN]);
/* With no slot configured: one per GPU found (gpu0 on cuda:0, ...), else one cpu slot. */
void config_default_slots(struct config *c, size_t ngpus);
void config_free(struct config *c);
void config_model_free(struct model *m);
/* Numbers the models by their place in c (model.index). */
void config_index_models(struct config *c);

const struct slot_conf *config_slot(const struct config *c, const char *name);
const struct model *config_model(const struct config *c, const char *name);
/* Whether the lock called name (a device, or a [device] group) is exclusive. */
bool config_device_exclusive(const struct config *c, const char *name);
/* The name of the device lock a slot takes. */
const char *config_slot_lock(const struct slot_conf *s);

#endif
