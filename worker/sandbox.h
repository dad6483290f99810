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

/*
 * Drops to uid/gid for good (all three ids, no supplementary groups, and so
 * no capabilities), before anything from outside is parsed. 0, or -1 with
 * err filled.
 */
int sandbox_drop_ids(uid_t uid, gid_t gid, char *err, size_t errlen);

/*
 * In this order: sets no_new_privs and rlimits, and installs the seccomp
 * allow-list. loading: before the model file is read, files may still be
 * opened, though not made or truncated (llama.cpp opens the model by its
 * path, a driver its device files); once loaded, it is entered again
 * without, and the worker opens nothing more.
 * debug: a refused call is logged by name and fails with ENOSYS instead of
 * killing the worker (MODELD_SECCOMP_DEBUG=1 in the worker's environment).
 * Returns 0, or -1 with err filled.
 */
int sandbox_enter(bool loading, int debug, char *err, size_t errlen);

#endif
