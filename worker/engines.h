/* engines.h: finding an engine by name (engines.c). */
#ifndef ENGINES_H
#define ENGINES_H

#include "engine.h"

#define ENGINES_NAME_MAX 32

/*
 * The engine called name: a built-in one, else modeld-engine-NAME.so in dir,
 * opened now. NULL with e when there is none or it is not of this ABI.
 */
const struct engine *engines_find(const char *name, const char *dir, struct engine_error *e);

#endif
