/*
 * sandbox.h: what a worker gives up before it reads its model, and more once it is loaded.
 *
 * The worker may then only talk on its channel, use the memory it has,
 * start threads and wait: no files, no sockets, no exec. Every step is
 * fatal on failure; a sandbox that silently does nothing is worse than none.
 */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stdbool.h>
#include <sys/types.h>

#define SANDBOX_KEEP_IDS ((uid_t)-1)

/* What the filter allows, from the most to the least. */
enum sandbox_stage {
	SANDBOX_LOADING_DEVICE,	/* as SANDBOX_LOADING, and files that exist opened to be written too:
				 * a GPU driver opens its device files read-write as it sets memory up */
	SANDBOX_LOADING,	/* the model is read: files may be opened to be read, nothing more */
	SANDBOX_LOADED,		/* nothing is opened any more */
};

/*
 * Before anything from outside (an engine, the weights) is touched: drops
 * to uid/gid for good (all three ids, no supplementary groups), unless uid
 * is SANDBOX_KEEP_IDS, and then every capability, whoever the worker is
 * (the bounding set too where it may, the ambient set, and the permitted,
 * effective and inheritable ones). 0, or -1 with err filled.
 */
int sandbox_drop_privileges(uid_t uid, gid_t gid, char *err, size_t errlen);

/*
 * In this order: sets no_new_privs and rlimits, and installs the seccomp
 * allow-list of stage. A loading stage comes before the model file is read
 * (llama.cpp opens the model by its path, a driver its device files); once
 * loaded, it is entered again with SANDBOX_LOADED: a filter stacks on the
 * one before and can only take more away.
 * debug: a refused call is logged by name and fails with ENOSYS instead of
 * killing the worker (MODELD_SECCOMP_DEBUG=1 in the worker's environment).
 * Returns 0, or -1 with err filled.
 */
int sandbox_enter(enum sandbox_stage stage, int debug, char *err, size_t errlen);

#endif
