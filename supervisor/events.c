/*
 * events.c: the events of the client protocol. Every event takes the next
 * seq, so a subscriber that sees a gap knows it missed some.
 */
#include "../proto/clock.h"
#include "modeld.h"

static void begin(struct msgw *w, enum event_kind kind)
{
	msgw_init(w);
	msgw_map(w);
	msgw_kstr(w, "event", proto_event_name(kind));
	msgw_ku64(w, "seq", ++md.event_seq);
	msgw_ku64(w, "ts_ms", clock_wall_ms());
}

static void publish(enum event_kind kind, struct msgw *w)
{
	msgw_end(w);
	server_broadcast(kind, w);
	msgw_free(w);
}

void events_state(const struct slot *s)
{
	struct msgw w;

	begin(&w, EVK_STATE);
	msgw_kstr(&w, "slot", s->conf->name);
	slot_write_details(s, &w);
	publish(EVK_STATE, &w);
}

void events_progress(struct slot *s)
{
	struct msgw w;

	begin(&w, EVK_PROGRESS);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "model", s->model ? s->model->name : NULL);
	msgw_ku64(&w, "job", s->load_job);
	msgw_ku64(&w, "bytes", s->bytes);
	msgw_ku64(&w, "total", s->total);
	publish(EVK_PROGRESS, &w);
}

void events_job(const struct slot *s, uint64_t job, const char *op, const struct model *m,
		const char *status, const char *message)
{
	struct msgw w;

	begin(&w, EVK_JOB);
	msgw_ku64(&w, "job", job);
	msgw_kstr(&w, "op", op);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "model", m ? m->name : NULL);
	msgw_kstr(&w, "status", status);
	msgw_kstr(&w, "message", message);
	publish(EVK_JOB, &w);
}

void events_advisory(const struct slot *s, const char *message)
{
	struct msgw w;

	begin(&w, EVK_ADVISORY);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "model", s->model ? s->model->name : NULL);
	msgw_kstr(&w, "message", message);
	publish(EVK_ADVISORY, &w);
}

void events_gpu(const char *device, const struct slot *s, const char *op, const char *status)
{
	struct msgw w;

	begin(&w, EVK_GPU);
	msgw_kstr(&w, "device", device);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "op", op);
	msgw_kstr(&w, "status", status);
	publish(EVK_GPU, &w);
}
