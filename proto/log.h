/* log.h: leveled logging to stderr, or to syslog when asked. */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(const char *ident, enum log_level level, int use_syslog);
void log_set_level(enum log_level level);
/* Parses "error", "warn", "info", "debug"; -1 for anything else. */
int log_level_parse(const char *s);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Passes on a line process pid logged ("... ident[pid] level: text"), to
 * stderr or to syslog at its level, as "worker PID: LINE": the prefix is
 * ours, so that no line of another process passes for one of ours, and
 * its control bytes are escaped (\xNN), so that it stays one line.
 */
void log_relay(int pid, const char *line, size_t len);

/* A byte count for people: 1536 -> "1.5 KiB". */
void log_bytes(char *buf, size_t len, uint64_t n);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
