/*
 * events.c: the events of the client protocol. Every event takes the next
 * seq, so a subscriber that sees a gap knows it missed some. The last
 * EVENTS_KEPT events are kept, so that an HTTP client that reconnects can
 * be given what it missed; the last JOBS_KEPT jobs are kept, with where
 * each stands, for the jobs view.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/clock.h"
#include "modeld.h"

/* An event as sent, with what its fan-out filters on. */
struct kept {
	struct event_ref ref;
	void *frame;
};

static struct kept kept[EVENTS_KEPT];
static struct job_rec jobs[JOBS_KEPT];

static void keep(const struct event_ref *ref)
{
	struct kept *k = &kept[ref->seq % EVENTS_KEPT];

	k->ref = *ref;
	if (!(k->frame = realloc(k->frame, ref->len)))
		abort();
	memcpy(k->frame, ref->frame, ref->len);
	k->ref.frame = k->frame;
}

const struct event_ref *events_kept(uint64_t seq)
{
	return seq >= events_first_kept() && seq <= md.event_seq && seq ? &kept[seq % EVENTS_KEPT].ref : NULL;
}

uint64_t events_first_kept(void)
{
	return md.event_seq > EVENTS_KEPT ? md.event_seq - EVENTS_KEPT + 1 : 1;
}

void events_free(void)
{
	for (size_t i = 0; i < EVENTS_KEPT; i++) {
		free(kept[i].frame);
		kept[i].frame = NULL;
	}
}

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

/* To the socket's subscribers and the HTTP streams, and kept; job_over: the job event of a job's end. */
static void publish(enum event_kind kind, const struct slot *s, uint64_t job, bool job_over, struct msgw *w)
{
	struct event_ref ref = { .seq = md.event_seq, .kind = kind, .slot = s, .job = job, .job_over = job_over };

	msgw_end(w);
	ref.frame = msgw_frame(w, &ref.len);
	keep(&ref);
	server_broadcast(kind, s, w);
	http_broadcast(&ref);
	msgw_free(w);
}

void events_state(const struct slot *s)
{
	struct msgw w;

	begin(&w, EVK_STATE);
	((struct slot_rt *)s)->state_seq = md.event_seq;	/* a slot is the first member of its slot_rt */
	msgw_kstr(&w, "slot", s->conf->name);
	slot_write_details(s, &w);
	publish(EVK_STATE, s, 0, false, &w);
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
	publish(EVK_PROGRESS, s, s->load_job, false, &w);
}

/* The job's record: its own, or the oldest's when it is new. */
static const struct job_rec *note_job(const struct slot *s, uint64_t job, const char *op, const struct model *m,
				      const char *status, const char *message)
{
	struct job_rec *j = &jobs[job % JOBS_KEPT];

	if (j->id != job) {
		*j = (struct job_rec){ .id = job, .slot = s, .model = m, .started_ms = clock_wall_ms() };
		snprintf(j->op, sizeof j->op, "%s", op);
	}
	snprintf(j->status, sizeof j->status, "%s", status);
	snprintf(j->message, sizeof j->message, "%s", message ? message : "");
	j->over = strcmp(status, "done") == 0 || strcmp(status, "failed") == 0;
	j->updated_ms = clock_wall_ms();
	return j;
}

const struct job_rec *events_find_job(uint64_t id)
{
	const struct job_rec *j = &jobs[id % JOBS_KEPT];
	return id && j->id == id ? j : NULL;
}

void events_write_job(struct msgw *w, const struct job_rec *j)
{
	msgw_map(w);
	msgw_ku64(w, "job", j->id);
	msgw_kstr(w, "op", j->op);
	msgw_kstr(w, "slot", j->slot->conf->name);
	msgw_kstr(w, "model", j->model ? j->model->name : NULL);
	msgw_kstr(w, "status", j->status);
	if (j->message[0])
		msgw_kstr(w, "message", j->message);
	if (strcmp(j->status, "running") == 0 && j->slot->load_job == j->id) {
		msgw_ku64(w, "bytes", j->slot->bytes);
		msgw_ku64(w, "total", j->slot->total);
	}
	msgw_ku64(w, "started_ms", j->started_ms);
	msgw_ku64(w, "updated_ms", j->updated_ms);
	msgw_end(w);
}

void events_write_jobs(struct msgw *w)
{
	msgw_key(w, "jobs");
	msgw_array(w);
	for (uint64_t id = md.next_job; id > 0 && id + JOBS_KEPT > md.next_job; id--) {
		const struct job_rec *j = events_find_job(id);
		if (j)
			events_write_job(w, j);
	}
	msgw_end(w);
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
	const struct job_rec *j = note_job(s, job, op, m, status, message);
	publish(EVK_JOB, s, job, j->over, &w);
}

void events_advisory(const struct slot *s, const char *message)
{
	struct msgw w;

	begin(&w, EVK_ADVISORY);
	msgw_kstr(&w, "slot", s ? s->conf->name : NULL);
	msgw_kstr(&w, "model", s && s->model ? s->model->name : NULL);
	msgw_kstr(&w, "message", message);
	publish(EVK_ADVISORY, s, 0, false, &w);
}

void events_gpu(const char *device, const struct slot *s, const char *op, const char *status)
{
	struct msgw w;

	begin(&w, EVK_GPU);
	msgw_kstr(&w, "device", device);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "op", op);
	msgw_kstr(&w, "status", status);
	publish(EVK_GPU, s, 0, false, &w);
}
