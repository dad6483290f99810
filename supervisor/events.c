/*
 * events.c: the events of the client protocol. Every event takes the next
 * seq, so a subscriber that sees a gap knows it missed some.
 */
#include "../proto/clock.h"
#include "modeld.h"

static void begin_seq(struct msgw *w, enum event_kind kind, uint64_t seq)
{
	msgw_init(w);
	msgw_map(w);
	msgw_kstr(w, "event", proto_event_name(kind));
	msgw_ku64(w, "seq", seq);
	msgw_ku64(w, "ts_ms", clock_wall_ms());
}

static void begin(struct msgw *w, enum event_kind kind)
{
	begin_seq(w, kind, ++md.event_seq);
}

static void publish(enum event_kind kind, const struct slot *s, struct msgw *w)
{
	msgw_end(w);
	server_broadcast(kind, s, w);
	msgw_free(w);
}

void events_state(const struct slot *s)
{
	struct msgw w;

	begin(&w, EVK_STATE);
	((struct slot_rt *)s)->state_seq = md.event_seq;	/* a slot is the first member of its slot_rt */
	msgw_kstr(&w, "slot", s->conf->name);
	slot_write_details(s, &w);
	publish(EVK_STATE, s, &w);
}

void events_state_again(const struct slot *s, struct msgw *w)
{
	begin_seq(w, EVK_STATE, ((const struct slot_rt *)s)->state_seq);
	msgw_kstr(w, "slot", s->conf->name);
	slot_write_details(s, w);
	msgw_kbool(w, "coalesced", true);
	msgw_end(w);
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
	publish(EVK_PROGRESS, s, &w);
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
	publish(EVK_JOB, s, &w);
}

void events_advisory(const struct slot *s, const char *message)
{
	struct msgw w;

	begin(&w, EVK_ADVISORY);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "model", s->model ? s->model->name : NULL);
	msgw_kstr(&w, "message", message);
	publish(EVK_ADVISORY, s, &w);
}

void events_gpu(const char *device, const struct slot *s, const char *op, const char *status)
{
	struct msgw w;

	begin(&w, EVK_GPU);
	msgw_kstr(&w, "device", device);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "op", op);
	msgw_kstr(&w, "status", status);
	publish(EVK_GPU, s, &w);
}
