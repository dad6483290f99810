/*
 * sandbox.h: what a worker gives up once its model is loaded.
 *
 * The worker may then only talk on its channel, use the memory it has,
 * start threads and wait: no files, no sockets, no exec. Every step is
 * fatal on failure; a sandbox that silently does nothing is worse than none.
 */
#ifndef SANDBOX_H
#define SANDBOX_H

/*
 * Sets no_new_privs and rlimits and installs the seccomp allow-list.
 * debug: a refused call is logged by name and fails with ENOSYS instead of
 * killing the worker (MODELD_SECCOMP_DEBUG=1 in the worker's environment).
 * Returns 0, or -1 with err filled.
 */
int sandbox_enter(int debug, char *err, size_t errlen);

#endif
