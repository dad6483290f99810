/*
 * reload.h: SIGHUP and the reload op (reload.c): the configuration read
 * again as at start and applied to the running one.
 */
#ifndef RELOAD_H
#define RELOAD_H

#include <stddef.h>

#include "config.h"

/* Reads the configuration again and applies it; -1 with err (the running one stays). */
int reload_run(struct config_changes *counts, char *err, size_t errlen);
/* Frees the models reloads retired (at exit). */
void reload_free(void);
/* What the command line says over the configuration: its file, models_dir, http and log level (NULL: not said). */
struct reload_overrides {
	const char *config, *models, *http, *level;
};

/* Every reading of the configuration from now on applies o (kept, not copied: the command line's strings). */
void reload_init(const struct reload_overrides *o);
/* Reads the configuration as at start: the file, models_dir scanned, the command line's overrides. 0, or
 * -1 with err. */
int reload_read_config(struct config *c, char err[CONFIG_ERR_LEN]);

#endif
