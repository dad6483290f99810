/*
 * view.h: what the slots, the models and the devices look like to a
 * client: the status, models and devices views and a slot's details (as
 * its state events carry them), written as msgpack; HTTP shows them as
 * JSON.
 */
#ifndef VIEW_H
#define VIEW_H

#include "../proto/msg.h"
#include "slot.h"

/* The keys of a slot's status and state events: state, model and the state's details. */
void view_slot_details(const struct slot *s, struct msgw *w);
/* status's result: the slots (only that one, unless NULL). */
void view_write_status(struct msgw *w, const struct slot *only);
void view_write_models(struct msgw *w);
void view_write_devices(struct msgw *w);
/* The result of status, models or devices (name), as a whole map in w (msgw_free it); -1 for another name. */
int view_write(struct msgw *w, const char *name);

#endif
