/*
 * service.h: what the service manager sees of modeld (service.c): under an
 * init script a detached daemon and a pidfile, under systemd sd_notify. A
 * watcher (service_watch, registered by main.c) for the slots' states.
 */
#ifndef SERVICE_H
#define SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "watch.h"

extern const struct watch service_watch;

/* Forks: the parent waits and exits 0 once the daemon is ready, 1 if it ends first. 0, or -1 with err. */
int service_detach(char *err, size_t errlen);
/* modeld serves: the pidfile (if any) is written, systemd and a waiting parent told. -1 if the pidfile cannot be. */
int service_ready(const char *pidfile);
/* Tells systemd each slot's state. */
void service_status(void);
/* A reload starts (true) or ends. */
void service_reloading(bool reloading);
void service_stopping(void);
/* Removes the pidfile. */
void service_end(void);

#endif
