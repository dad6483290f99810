/*
 * metrics.h: modeld's numbers in Prometheus' text format (metrics.c), for
 * GET /metrics. A watcher too (metrics_watch, registered by main.c): loads
 * that reach ready, and requests as they end.
 */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>

#include <event2/buffer.h>

#include "config.h"
#include "watch.h"

extern const struct watch metrics_watch;

/* After core_init: room for every slot and model. */
void metrics_init(void);
void metrics_free(void);
/* After a reload changed the running models (old: the models before): the numbers of models that stayed go on. */
void metrics_models_changed(struct model *const *old, size_t nold);
/* Every metric, in Prometheus' text format. */
void metrics_write(struct evbuffer *out);

#endif
