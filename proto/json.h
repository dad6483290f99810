/* json.h: a decoded msgpack object as JSON, for modelctl --json and modeld's HTTP views. */
#ifndef JSON_H
#define JSON_H

#include <jansson.h>
#include <msgpack.h>

/* Maps with string keys (others are left out), arrays, scalars; bin and ext become null. */
json_t *msg_to_json(const msgpack_object *o);

#endif
