/*
 * state.h: the desired state that outlives modeld (state.c): the model each
 * slot should hold, kept in state_dir. A watcher (state_watch, registered
 * by main.c).
 */
#ifndef STATE_H
#define STATE_H

#include "slot.h"
#include "watch.h"

extern const struct watch state_watch;

/* Reads the desired state, if state_dir is set; a bad file is reported and ignored. After core_init. */
void state_load(void);
/* The model s starts with: the state file's, else its configured default_model (for core_start). */
const struct model *state_initial(const struct slot *s);
/* What s should hold now (NULL: nothing): the model it started with, then the one it last became ready with. */
const struct model *state_wanted(const struct slot *s);
void state_free(void);

#endif
