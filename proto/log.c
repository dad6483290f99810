/* log.c: one line per message, "ident[pid] level: text", to stderr or syslog. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The longest relayed line, escaped; the rest of a longer one is cut. */
#define LOG_RELAY_MAX 1200

static const char *log_ident = "modeld";
static enum log_level log_level = LOG_LVL_INFO;
static int log_syslog;

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const int syslog_prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

void log_init(const char *ident, enum log_level level, int use_syslog)
{
	log_ident = ident;
	log_level = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

int log_level_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog(syslog_prio[level], "%s", text);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof when, "%H:%M:%S", &tm);
	/* One write per line, so that lines of the supervisor and its workers do not mix. */
	char line[1200];
	int n = snprintf(line, sizeof line, "%s.%03ld %s[%d] %s: %s\n", when,
			 ts.tv_nsec / 1000000, log_ident, (int)getpid(), level_names[level], text);
	if (n > (int)sizeof line)
		n = sizeof line;
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

/* line[0..len) with control bytes as \xNN, into out (cut short to fit, always terminated). */
static void escape_line(char *out, size_t cap, const char *line, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		unsigned char b = (unsigned char)line[i];
		if (b < 0x20 || b == 0x7f)
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b);
		else
			out[o++] = (char)b;
	}
	out[o] = '\0';
}

void log_relay(int pid, const char *line, size_t len)
{
	char text[LOG_RELAY_MAX], out[LOG_RELAY_MAX + 32];
	const char *from = memmem(line, len, "] ", 2);
	int prio = LOG_INFO;

	escape_line(text, sizeof text, line, len);
	if (!log_syslog) {
		int n = snprintf(out, sizeof out, "worker %d: %s\n", pid, text);
		if (write(STDERR_FILENO, out, (size_t)(n < (int)sizeof out ? n : (int)sizeof out - 1)) < 0)
			log_syslog = 0;		/* nowhere to say it */
		return;
	}
	from = from ? from + 2 : line;
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
		size_t n = strlen(level_names[i]);
		if ((size_t)(line + len - from) > n && memcmp(from, level_names[i], n) == 0 && from[n] == ':')
			prio = syslog_prio[i];
	}
	/* the timestamp is syslog's; the relayed line keeps the sender's ident and pid */
	const char *who = memchr(text, ' ', strlen(text));
	syslog(prio, "worker %d: %s", pid, who ? who + 1 : text);
}

void log_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

