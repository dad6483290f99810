/*
 * What the service manager sees of modeld: under an init script, a daemon
 * that detaches once it serves and a pidfile; under systemd, sd_notify's
 * READY, STATUS, RELOADING and STOPPING. Each is a no-op where it does not
 * apply (no -d, no --pidfile, no NOTIFY_SOCKET).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "../proto/clock.h"
#include "../proto/log.h"
#include "core.h"
#include "service.h"

/* The longest STATUS= line: systemctl shows one line, so a long one is cut. */
#define SERVICE_STATUS_LEN 256

static int ready_fd = -1;	/* the detached daemon's word to the parent waiting for it */
static char *pidfile;

/*
 * The parent of a detaching modeld: exits 0 once the daemon says it serves,
 * 1 when it ends first (its reason is in the log it was given).
 */
static void wait_for_daemon(int fd)
{
	char c;
	ssize_t n;

	while ((n = read(fd, &c, 1)) < 0 && errno == EINTR)
		;
	if (n == 1)
		_exit(0);
	fprintf(stderr, "modeld: did not start; the system log says why\n");
	_exit(1);
}

int service_detach(char *err, size_t errlen)
{
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
		snprintf(err, errlen, "cannot detach: %s", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		close(fds[1]);
		wait_for_daemon(fds[0]);
	}
	close(fds[0]);
	ready_fd = fds[1];
	if (setsid() < 0 || chdir("/") < 0) {
		snprintf(err, errlen, "cannot detach: %s", strerror(errno));
		return -1;
	}
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) {
		snprintf(err, errlen, "cannot detach: /dev/null: %s", strerror(errno));
		return -1;
	}
	if (null > 2)
		close(null);
	return 0;
}

/* Writes our pid to path through a temporary file, so that a reader never sees half of it. */
static int write_pidfile(const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;

	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if (!(f = fopen(tmp, "we")))
		return -1;
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

int service_ready(const char *pidfile_path)
{
	if (pidfile_path) {
		if (write_pidfile(pidfile_path) < 0) {
			log_error("pidfile %s: %s", pidfile_path, strerror(errno));
			return -1;
		}
		pidfile = strdup(pidfile_path);
	}
	sd_notify(0, "READY=1");
	service_status();
	if (ready_fd >= 0) {
		(void)!write(ready_fd, "", 1);
		close(ready_fd);
		ready_fd = -1;
	}
	return 0;
}

/* One line: every slot's state and model, as systemctl status shows it. */
void service_status(void)
{
	char line[SERVICE_STATUS_LEN];
	size_t n = 0;

	if (!getenv("NOTIFY_SOCKET"))
		return;
	n += (size_t)snprintf(line, sizeof line, "STATUS=");
	for (size_t i = 0; i < core_nslots() && n < sizeof line; i++) {
		const struct slot *s = core_slot(i);
		const struct model *m = slot_shown_model(s);
		n += (size_t)snprintf(line + n, sizeof line - n, "%s%s %s%s%s%s", i ? "; " : "", s->conf->name,
				      slot_state_name(s->state), m ? " (" : "", m ? m->name : "", m ? ")" : "");
	}
	sd_notify(0, line);
}

void service_reloading(bool reloading)
{
	if (reloading)
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)clock_mono_ms() * 1000);
	else
		sd_notify(0, "READY=1");
}

void service_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void service_end(void)
{
	if (pidfile) {
		unlink(pidfile);
		free(pidfile);
		pidfile = NULL;
	}
}

static void on_state(const struct slot *s)
{
	(void)s;
	service_status();
}

const struct watch service_watch = { .state = on_state };
