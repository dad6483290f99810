/*
 * events.c: the events of the client protocol (events.h). Every event takes
 * the next seq, so a subscriber that sees a gap knows it missed some. The
 * last EVENTS_KEPT events are kept, so that an HTTP client that reconnects
 * can be given what it missed; the last JOBS_KEPT jobs are kept, with where
 * each stands, for the jobs view.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/clock.h"
#include "core.h"
#include "events.h"
#include "view.h"

/* An event as sent, with what its fan-out filters on. */
struct kept {
	struct event_ref ref;
	void *frame;
};

static struct kept kept[EVENTS_KEPT];
static struct job_rec jobs[JOBS_KEPT];
static uint64_t last_seq;
static uint64_t last_job;		/* the newest job recorded */
static uint64_t *state_seq;		/* by slot: the seq of its last state event */
static events_sink sinks[EVENTS_MAX_SINKS];
static size_t nsinks;

void events_init(void)
{
	free(state_seq);
	if (!(state_seq = calloc(core_nslots() + 1, sizeof *state_seq)))
		abort();
}

void events_add_sink(events_sink sink)
{
	if (nsinks == EVENTS_MAX_SINKS)
		abort();	/* a programming error: more faces than EVENTS_MAX_SINKS */
	sinks[nsinks++] = sink;
}

uint64_t events_last_seq(void)
{
	return last_seq;
}

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
	return seq >= events_first_kept() && seq <= last_seq && seq ? &kept[seq % EVENTS_KEPT].ref : NULL;
}

uint64_t events_first_kept(void)
{
	return last_seq > EVENTS_KEPT ? last_seq - EVENTS_KEPT + 1 : 1;
}

void events_free(void)
{
	free(state_seq);
	state_seq = NULL;
	nsinks = 0;
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
	begin_seq(w, kind, ++last_seq);
}

/* Kept, and to every sink; job_over: the job event of a job's end. */
static void publish(enum event_kind kind, const struct slot *s, uint64_t job, bool job_over, struct msgw *w)
{
	struct event_ref ref = { .seq = last_seq, .kind = kind, .slot = s, .job = job, .job_over = job_over };

	msgw_end(w);
	ref.frame = msgw_frame(w, &ref.len);
	keep(&ref);
	for (size_t i = 0; i < nsinks; i++)
		sinks[i](&ref, w);
	msgw_free(w);
}

static void on_state(const struct slot *s)
{
	struct msgw w;

	begin(&w, EVK_STATE);
	state_seq[core_index(s)] = last_seq;
	msgw_kstr(&w, "slot", s->conf->name);
	view_slot_details(s, &w);
	publish(EVK_STATE, s, 0, false, &w);
}

void events_state_again(const struct slot *s, struct msgw *w)
{
	begin_seq(w, EVK_STATE, state_seq[core_index(s)]);
	msgw_kstr(w, "slot", s->conf->name);
	view_slot_details(s, w);
	msgw_kbool(w, "coalesced", true);
	msgw_end(w);
}

static void on_progress(const struct slot *s)
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
		if (job > last_job)
			last_job = job;
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
	for (uint64_t id = last_job; id > 0 && id + JOBS_KEPT > last_job; id--) {
		const struct job_rec *j = events_find_job(id);
		if (j)
			events_write_job(w, j);
	}
	msgw_end(w);
}

static void on_job(const struct slot *s, uint64_t job, const char *op, const struct model *m,
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

static void on_advisory(const struct slot *s, const char *message)
{
	struct msgw w;

	begin(&w, EVK_ADVISORY);
	msgw_kstr(&w, "slot", s ? s->conf->name : NULL);
	msgw_kstr(&w, "model", s && s->model ? s->model->name : NULL);
	msgw_kstr(&w, "message", message);
	publish(EVK_ADVISORY, s, 0, false, &w);
}

static void on_gpu(const char *device, const struct slot *s, const char *op, const char *status)
{
	struct msgw w;

	begin(&w, EVK_GPU);
	msgw_kstr(&w, "device", device);
	msgw_kstr(&w, "slot", s->conf->name);
	msgw_kstr(&w, "op", op);
	msgw_kstr(&w, "status", status);
	publish(EVK_GPU, s, 0, false, &w);
}

const struct watch events_watch = {
	.state = on_state,
	.progress = on_progress,
	.job = on_job,
	.advisory = on_advisory,
	.gpu = on_gpu,
};
