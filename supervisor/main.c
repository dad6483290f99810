/*
 * modeld: the supervisor. Owns the state of every slot, runs one worker
 * process per loaded model, and serves the control socket.
 *
 * Role: may fork and signal its workers, open weights files and the
 * control socket; never touches a device itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "../proto/peer.h"
#include "child.h"
#include "core.h"
#include "devices.h"
#include "events.h"
#include "http.h"
#include "metrics.h"
#include "ops.h"
#include "paths.h"
#include "reload.h"
#include "server.h"
#include "service.h"
#include "sse.h"
#include "state.h"
#include "version.h"
#include "watch.h"

/* Descriptors kept from clients: stdio, the log, the listener, the event loop, a spawn's. */
#define FD_RESERVE 32
/* And per slot: its worker's channel. */
#define FD_PER_SLOT 1
/* Shutdown waits for workers up to the longest stop_timeout plus this. */
#define SHUTDOWN_SLACK_MS 1000

static struct event_base *base;
static struct event *shutdown_deadline;

static void usage(FILE *f)
{
	fprintf(f, "usage: modeld [-c FILE] [-s SOCKET] [--models DIR] [--worker PATH] [-l LEVEL] [--syslog] [-d] [-p FILE] [-t]\n"
		   "       modeld --version\n"
		   "  -c, --config FILE   read FILE (INI); default: the embedded configuration\n"
		   "  -t, --test-config   check the configuration, say whether it is good, and exit\n"
		   "  -s, --socket PATH   control socket (overrides the config's socket)\n"
		   "      --http ADDR:PORT  the HTTP listener (overrides the config's http)\n"
		   "  -m, --models DIR    models directory (default ./models)\n"
		   "  -w, --worker PATH   the modeld-worker binary (default: next to modeld)\n"
		   "  -l, --log-level L   error, warn, info or debug\n"
		   "      --syslog        log to syslog instead of stderr\n"
		   "  -d, --daemon        detach once serving (exits 1 if startup fails); logs to syslog\n"
		   "  -p, --pidfile FILE  write modeld's pid to FILE once serving; removed at exit\n");
}

/* modeld-worker beside modeld (a build tree), else where make install puts it. */
static char *default_worker(void)
{
	char self[PATH_MAX], *path;
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (asprintf(&path, "%.*s/modeld-worker", (int)(slash - self), self) < 0)
			abort();
		if (access(path, X_OK) == 0)
			return path;
		free(path);
	}
	return strdup(MODELD_LIBDIR "/modeld-worker");
}

/* The directory path is in ("." for a bare name): engines live beside the worker by default. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");

	if (!dir)
		abort();
	return dir;
}

static void maybe_exit(void)
{
	if (core_shutting_down() && child_count() == 0)
		event_base_loopexit(base, NULL);
}

static void on_sigchld(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	child_reap();
	maybe_exit();
}

static void on_shutdown_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	log_warn("workers still running at the shutdown deadline; killing them");
	child_kill_all();
}

/*
 * SIGTERM, SIGINT: unload every slot, leave once all workers are reaped.
 * Meanwhile the socket refuses new clients with shutting_down.
 */
static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	(void)what; (void)arg;
	uint64_t longest = 0;

	if (core_shutting_down())
		return;
	log_info("signal %d: shutting down", (int)sig);
	service_stopping();
	http_stop();
	core_shutdown();
	for (size_t i = 0; i < core_nslots(); i++)
		if (core_slot(i)->conf->stop_timeout_ms > longest)
			longest = core_slot(i)->conf->stop_timeout_ms;
	longest += SHUTDOWN_SLACK_MS;
	struct timeval tv = clock_timeval(longest);
	shutdown_deadline = evtimer_new(base, on_shutdown_deadline, NULL);
	event_add(shutdown_deadline, &tv);
	maybe_exit();
}

/* SIGHUP: the configuration is read again; reload_run logs what came of it. */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
	(void)sig; (void)what; (void)arg;
	struct config_changes n;
	char err[CONFIG_ERR_LEN + 64];

	if (!core_shutting_down())
		reload_run(&n, err, sizeof err);
}

struct options {
	const char *config, *socket, *models, *worker, *level, *http, *pidfile;
	int use_syslog;
	bool daemon;
	bool test_config;
};

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "models", required_argument, NULL, 'm' },
		{ "worker", required_argument, NULL, 'w' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "syslog", no_argument, NULL, 'S' },
		{ "test-config", no_argument, NULL, 't' },
		{ "http", required_argument, NULL, 'H' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:s:m:w:l:tdp:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': o->config = optarg; break;
		case 's': o->socket = optarg; break;
		case 'm': o->models = optarg; break;
		case 'w': o->worker = optarg; break;
		case 'l': o->level = optarg; break;
		case 'S': o->use_syslog = 1; break;
		case 't': o->test_config = true; break;
		case 'H': o->http = optarg; break;
		case 'd': o->daemon = true; o->use_syslog = 1; break;
		case 'p': o->pidfile = optarg; break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("modeld %s\n", MODELD_VERSION); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static struct options opts;

/* Builds the running configuration from the defaults, the file and the command line, and finds its paths. */
static int configure(const struct options *o)
{
	struct config *c = config_running();
	char err[CONFIG_ERR_LEN];

	const struct reload_overrides ov = { o->config, o->models, o->http, o->level };

	reload_init(&ov);
	if (reload_read_config(c, err) < 0)
		goto fail;
	if (o->test_config) {
		printf("modeld: %s: the configuration is good\n", o->config ? o->config : "(default)");
		exit(0);
	}
	c->socket_path = o->socket ? strdup(o->socket) : c->socket ? strdup(c->socket) : proto_default_socket();
	c->worker_path = o->worker ? strdup(o->worker) : c->worker ? strdup(c->worker) : default_worker();
	if (access(c->worker_path, X_OK) < 0) {
		snprintf(err, sizeof err, "worker %s: %s", c->worker_path, strerror(errno));
		goto fail;
	}
	c->engine_path = c->engine_dir ? strdup(c->engine_dir) : dir_of(c->worker_path);
	return 0;
fail:
	fprintf(stderr, "modeld: %s\n", err);
	return -1;
}

/*
 * Every descriptor the hard limit allows, and no more clients than they
 * leave room for once the reserve and the slots' workers are counted.
 */
/* The HTTP listener's ceiling on descriptors. */
static int fit_fd_limit(void)
{
	struct config *c = config_running();
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return INT_MAX;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the descriptor limit to %llu: %s", (unsigned long long)want,
				 strerror(errno));
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	uint64_t reserve = FD_RESERVE + (uint64_t)c->nslots * FD_PER_SLOT;
	uint64_t room = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 1;
	if (c->max_clients > room) {
		log_warn("max_clients %u is more than %llu descriptors allow; using %llu", c->max_clients,
			 (unsigned long long)rl.rlim_cur, (unsigned long long)room);
		c->max_clients = (unsigned)room;
	}
	/* HTTP has what the socket's clients leave, and at least half the room */
	uint64_t sockets = c->max_clients < room / 2 ? c->max_clients : room / 2;
	return room - sockets < INT_MAX ? (int)(room - sockets) : INT_MAX;
}

static void add_signal(int sig, event_callback_fn cb, struct event **slot)
{
	*slot = evsignal_new(base, sig, cb, NULL);
	event_add(*slot, NULL);
}

/* The watches in the order they hear of a change, and the sinks of events. */
static void wire(void)
{
	watch_add(&metrics_watch);
	watch_add(&events_watch);
	watch_add(&service_watch);
	watch_add(&state_watch);
	events_add_sink(server_event);
	events_add_sink(sse_event);
}

int main(int argc, char **argv)
{
	struct options *o = &opts;
	struct config *c = config_running();
	struct event *sigs[4];
	char err[512];

	if (parse_args(argc, argv, o) < 0)
		return 2;
	if (configure(o) < 0)
		return 1;
	log_init("modeld", (enum log_level)c->log_level, o->use_syslog);
	if (o->daemon && service_detach(err, sizeof err) < 0) {
		log_error("%s", err);
		return 1;
	}
	/* after detaching, so that a daemon's probe says what it found in the log, not on the terminal */
	devices_probe();
	config_default_slots(c, devices_gpu_count());	/* read before the GPUs were known */
	signal(SIGPIPE, SIG_IGN);
	int http_fd_ceiling = fit_fd_limit();
	/* what workers leave behind comes back to modeld, to be killed (child.c) */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		log_warn("cannot become the workers' subreaper: %s", strerror(errno));
	struct event_config *cfg = event_config_new();
	if (cfg)
		event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = cfg ? event_base_new_with_config(cfg) : NULL;
	if (cfg)
		event_config_free(cfg);
	if (!base || event_base_priority_init(base, PEER_PRIORITIES) < 0) {
		log_error("cannot create the event loop");
		return 1;
	}
	if (child_init(base) < 0) {
		log_error("/dev/null: %s", strerror(errno));
		return 1;
	}
	add_signal(SIGCHLD, on_sigchld, &sigs[0]);
	add_signal(SIGTERM, on_terminate, &sigs[1]);
	add_signal(SIGINT, on_terminate, &sigs[2]);
	add_signal(SIGHUP, on_sighup, &sigs[3]);
	ops_init(reload_run);
	if (server_listen(base, c->socket_path, c->socket_mode, ops_dispatch, err, sizeof err) < 0 ||
	    http_listen(base, http_fd_ceiling, err, sizeof err) < 0) {
		log_error("%s", err);
		return 1;
	}
	log_info("listening on %s; %zu slot(s), %zu model(s); worker %s", c->socket_path, c->nslots, c->nmodels,
		 c->worker_path);
	core_init(base);
	events_init();
	metrics_init();
	wire();
	state_load();
	if (service_ready(o->pidfile) < 0)
		return 1;
	core_start(state_initial);
	event_base_dispatch(base);

	log_info("stopped");
	service_end();
	server_close();
	/* one more turn, without waiting: what was written to clients as it stopped goes to those that read */
	event_base_loop(base, EVLOOP_NONBLOCK);
	http_close();
	core_free();
	metrics_free();
	state_free();
	reload_free();
	events_free();
	watch_clear();
	devices_free();
	child_end();
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		event_free(sigs[i]);
	if (shutdown_deadline)
		event_free(shutdown_deadline);
	event_base_free(base);
	config_free(c);
	return 0;
}
