/*
 * config.c: see config.h. Keys are described by tables (name, parser,
 * offset into the section's struct), so adding a key is one line.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ini.h>

#include "../proto/log.h"
#include "../proto/proto.h"
#include "config.h"

#define CONFIG_MAX_SECONDS 1e7
/* The files models_dir serves: reference models, and GGUF language models. */
static const char *const model_suffixes[] = { ".safetensors", ".gguf" };

enum key_type {
	K_STR, K_SECONDS, K_UINT, K_SIZE, K_MODE, K_LOGLEVEL, K_DEVICE, K_ENGINE, K_NAME, K_BOOL,
	K_MEMCHECK, K_GROUP, K_USER, K_AUTOLOAD,
};

struct key {
	const char *name;
	enum key_type type;
	size_t offset;
	unsigned long long min, max;	/* for K_UINT and K_SIZE; min for K_SECONDS, in ms */
	size_t line_offset;		/* where to note the line, if the key names something */
};

#define NO_LINE SIZE_MAX

static const struct key modeld_keys[] = {
	{ "socket", K_STR, offsetof(struct config, socket), 0, 0, NO_LINE },
	{ "socket_mode", K_MODE, offsetof(struct config, socket_mode), 0, 0777, NO_LINE },
	{ "socket_group", K_GROUP, offsetof(struct config, socket_group), 0, 0, NO_LINE },
	{ "admin_group", K_GROUP, offsetof(struct config, admin_group), 0, 0, NO_LINE },
	{ "worker_user", K_USER, offsetof(struct config, worker_uid), 0, 0, NO_LINE },
	{ "models_dir", K_STR, offsetof(struct config, models_dir), 0, 0, NO_LINE },
	{ "worker", K_STR, offsetof(struct config, worker), 0, 0, NO_LINE },
	{ "engine_dir", K_STR, offsetof(struct config, engine_dir), 0, 0, NO_LINE },
	{ "http", K_STR, offsetof(struct config, http), 0, 0, NO_LINE },
	{ "http_token_file", K_STR, offsetof(struct config, http_token_file), 0, 0, NO_LINE },
	{ "state_dir", K_STR, offsetof(struct config, state_dir), 0, 0, NO_LINE },
	{ "log_level", K_LOGLEVEL, offsetof(struct config, log_level), 0, 0, NO_LINE },
	{ "max_frame", K_SIZE, offsetof(struct config, max_frame), 64, 64u << 20, NO_LINE },
	{ "max_clients", K_UINT, offsetof(struct config, max_clients), 1, 65536, NO_LINE },
	{ "max_clients_per_uid", K_UINT, offsetof(struct config, max_clients_per_uid), 1, 65536, NO_LINE },
	{ "admin_reserve", K_UINT, offsetof(struct config, admin_reserve), 0, 65536, NO_LINE },
	{ "client_idle_timeout", K_SECONDS, offsetof(struct config, client_idle_timeout_ms), 0, 0, NO_LINE },
	{ "http_wait_timeout", K_SECONDS, offsetof(struct config, http_wait_timeout_ms), 0, 0, NO_LINE },
};

#define S(f) offsetof(struct slot_conf, f)
static const struct key slot_keys[] = {
	{ "device", K_DEVICE, S(device), 0, 0, NO_LINE },
	{ "default_model", K_NAME, S(default_model), 0, 0, S(default_model_line) },
	{ "stop_timeout", K_SECONDS, S(stop_timeout_ms), 0, 0, NO_LINE },
	{ "restart_backoff_min", K_SECONDS, S(restart_backoff_min_ms), 0, 0, S(backoff_line) },
	{ "restart_backoff_max", K_SECONDS, S(restart_backoff_max_ms), 0, 0, S(backoff_line) },
	{ "restart_limit", K_UINT, S(restart_limit), 1, 1000, NO_LINE },
	{ "restart_window", K_SECONDS, S(restart_window_ms), 0, 0, NO_LINE },
	{ "heartbeat_interval", K_SECONDS, S(heartbeat_interval_ms), 1, 0, NO_LINE },
	{ "heartbeat_timeout", K_SECONDS, S(heartbeat_timeout_ms), 0, 0, NO_LINE },
	{ "max_queue", K_UINT, S(max_queue), 1, 1000000, NO_LINE },
	{ "autoload", K_AUTOLOAD, S(autoload), 0, 0, NO_LINE },
	{ "switch_debounce", K_SECONDS, S(switch_debounce_ms), 0, 0, NO_LINE },
	{ "drain_timeout", K_SECONDS, S(drain_timeout_ms), 0, 0, NO_LINE },
	{ "idle_timeout", K_SECONDS, S(idle_timeout_ms), 0, 0, NO_LINE },
	{ "stall_timeout", K_SECONDS, S(stall_timeout_ms), 0, 0, NO_LINE },
	{ "fallback_model", K_NAME, S(fallback_model), 0, 0, S(fallback_model_line) },
	{ "memory_check", K_MEMCHECK, S(memory_check), 0, 0, NO_LINE },
	{ "cpu_fallback", K_NAME, S(cpu_fallback), 0, 0, S(cpu_fallback_line) },
	{ "lock", K_NAME, S(lock), 0, 0, S(lock_line) },
	{ "loader_threads", K_UINT, S(loader_threads), 1, 64, S(loader_line) },
	{ "loader_buffers", K_UINT, S(loader_buffers), 1, 8, S(loader_line) },
	{ "loader_chunk", K_SIZE, S(loader_chunk), 65536, LOADER_PINNED_MAX, S(loader_line) },
};
#undef S

#define M(f) offsetof(struct model, f)
static const struct key model_keys[] = {
	{ "path", K_STR, M(path), 0, 0, NO_LINE },
	{ "slot", K_NAME, M(slot), 0, 0, M(slot_line) },
	{ "engine", K_ENGINE, M(engine), 0, 0, NO_LINE },
	{ "warmup", K_UINT, M(warmup), 0, 1000, NO_LINE },
	{ "load_timeout", K_SECONDS, M(load_timeout_ms), 0, 0, NO_LINE },
	{ "idle_timeout", K_SECONDS, M(idle_timeout_ms), 0, 0, NO_LINE },
	{ "ctx", K_UINT, M(ctx), 16, 1u << 20, NO_LINE },
	{ "gpu_layers", K_UINT, M(gpu_layers), 0, 100000, NO_LINE },
	{ "threads", K_UINT, M(threads), 1, 1024, NO_LINE },
	{ "batch", K_UINT, M(batch), 1, 65536, NO_LINE },
	{ "parallel", K_UINT, M(parallel), 1, PROTO_PARALLEL_MAX, NO_LINE },
	{ "chat_template", K_STR, M(chat_template), 0, 0, NO_LINE },
	{ "embedding", K_BOOL, M(embedding), 0, 0, NO_LINE },
	{ "max_tokens", K_UINT, M(max_tokens), 1, INFER_MAX_TOKENS, NO_LINE },
};
#undef M

/* A section's keys are counted in a 64-bit mask, to find one set twice. */
_Static_assert(sizeof modeld_keys / sizeof modeld_keys[0] <= 64, "too many [modeld] keys");
_Static_assert(sizeof slot_keys / sizeof slot_keys[0] <= 64, "too many [slot] keys");
_Static_assert(sizeof model_keys / sizeof model_keys[0] <= 64, "too many [model] keys");

static const struct key device_keys[] = {
	{ "exclusive", K_BOOL, offsetof(struct device_conf, exclusive), 0, 0, NO_LINE },
};

/* The parser's state: which section we are in, and the line being read. */
struct parse {
	struct config *c;
	const char *file;
	char dir[PATH_MAX];		/* of the file, for relative model paths */
	int line;
	char section[160];
	void *target;			/* the struct of the current section */
	const struct key *keys;
	size_t nkeys;
	uint64_t seen;			/* the keys of the current section set so far, by index */
	char err[CONFIG_ERR_LEN];	/* the first error */
};

static int perr(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(struct parse *p, const char *fmt, ...)
{
	char what[CONFIG_ERR_LEN - 128], shown[CONFIG_ERR_LEN - 128];
	va_list ap;
	size_t n = 0;

	if (p->err[0])
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	/* values are echoed: control characters must not reach a terminal or a log raw */
	for (const unsigned char *c = (const unsigned char *)what; *c && n + 5 < sizeof shown; c++)
		n += (size_t)snprintf(shown + n, sizeof shown - n, *c < 0x20 || *c == 0x7f ? "\\x%02x" : "%c", *c);
	snprintf(p->err, sizeof p->err, "%s:%d: %s", p->file, p->line, shown);
	return 0;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d)
		abort();
	return d;
}


static bool valid_name(const char *s)
{
	if (!*s || strlen(s) > CONFIG_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
			return false;
	return true;
}

static bool valid_device(const char *s)
{
	char *end;

	if (strcmp(s, "cpu") == 0)
		return true;
	if (strncmp(s, "cuda:", 5) != 0 || !isdigit((unsigned char)s[5]))
		return false;
	errno = 0;
	unsigned long n = strtoul(s + 5, &end, 10);
	return !errno && *end == '\0' && n < 64;
}

/* Decimal seconds, such as 30 or 0.25: not hex, exponents, inf or nan, which strtod would take. */
static int parse_seconds(const char *v, uint64_t min_ms, uint64_t *ms)
{
	char *end;
	size_t digits = strspn(v, "0123456789");

	if (digits == 0 || (v[digits] && (v[digits] != '.' || strspn(v + digits + 1, "0123456789") !=
					  strlen(v + digits + 1))))
		return -1;
	errno = 0;
	double d = strtod(v, &end);
	if (errno || *end || d > CONFIG_MAX_SECONDS || (uint64_t)llround(d * 1000) < min_ms)
		return -1;
	*ms = (uint64_t)llround(d * 1000);
	return 0;
}

static int parse_ull(const char *v, int base, unsigned long long *out)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*v))
		return -1;
	*out = strtoull(v, &end, base);
	return errno || *end ? -1 : 0;
}

/* 1 for yes, 0 for no, -1 for neither. */
static int parse_bool(const char *v)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"))
		return 1;
	if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off"))
		return 0;
	return -1;
}

/* Stores value into the field k describes. 1 ok, 0 error (reported). */
static int set_key(struct parse *p, const struct key *k, const char *v)
{
	void *f = (char *)p->target + k->offset;
	unsigned long long n;
	int level, yes;

	switch (k->type) {
	case K_NAME:
		if (!valid_name(v))
			return perr(p, "%s: \"%s\" is not a valid name", k->name, v);
		/* fall through */
	case K_STR:
		if (!*v)
			return perr(p, "%s: empty value", k->name);
		free(*(char **)f);
		*(char **)f = xstrdup(v);
		break;
	case K_DEVICE:
		if (!valid_device(v))
			return perr(p, "device: \"%s\" is not cpu or cuda:N", v);
		free(*(char **)f);
		*(char **)f = xstrdup(v);
		break;
	case K_SECONDS:
		if (parse_seconds(v, k->min, f))
			return perr(p, "%s: \"%s\" is not a decimal number of seconds (%g to %g)", k->name,
				    v, (double)k->min / 1000, CONFIG_MAX_SECONDS);
		break;
	case K_UINT:
	case K_SIZE:
		if (parse_ull(v, 10, &n) || n < k->min || n > k->max)
			return perr(p, "%s: \"%s\" is not an integer from %llu to %llu", k->name, v,
				    k->min, k->max);
		if (k->type == K_UINT)
			*(unsigned *)f = (unsigned)n;
		else
			*(size_t *)f = (size_t)n;
		break;
	case K_MODE:
		if (parse_ull(v, 8, &n) || n > k->max)
			return perr(p, "%s: \"%s\" is not an octal file mode", k->name, v);
		*(mode_t *)f = (mode_t)n;
		break;
	case K_LOGLEVEL:
		level = log_level_parse(v);
		if (level < 0)
			return perr(p, "log_level: \"%s\" is not error, warn, info or debug", v);
		*(int *)f = level;
		break;
	case K_BOOL:
		if ((yes = parse_bool(v)) < 0)
			return perr(p, "%s: \"%s\" is not yes or no", k->name, v);
		*(bool *)f = yes;
		break;
	case K_AUTOLOAD:
		if ((yes = parse_bool(v)) < 0 && strcmp(v, "admin") != 0)
			return perr(p, "autoload: \"%s\" is not yes, no or admin", v);
		*(enum autoload *)f = yes < 0 ? AUTOLOAD_ADMIN : yes ? AUTOLOAD_YES : AUTOLOAD_NO;
		break;
	case K_MEMCHECK:
		if (strcmp(v, "warn") && strcmp(v, "refuse") && strcmp(v, "off"))
			return perr(p, "memory_check: \"%s\" is not warn, refuse or off", v);
		*(enum memory_check *)f = v[0] == 'w' ? MEMCHECK_WARN : v[0] == 'r' ? MEMCHECK_REFUSE : MEMCHECK_OFF;
		break;
	case K_GROUP: {
		struct group *g = getgrnam(v);
		if (!g)
			return perr(p, "%s: no group called \"%s\"", k->name, v);
		*(gid_t *)f = g->gr_gid;
		break;
	}
	case K_USER: {
		struct passwd *pw = getpwnam(v);
		if (!pw)
			return perr(p, "%s: no user called \"%s\"", k->name, v);
		p->c->worker_uid = pw->pw_uid;
		p->c->worker_gid = pw->pw_gid;
		break;
	}
	case K_ENGINE:
		if (strlen(v) > CONFIG_ENGINE_MAX || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(v) || !*v)
			return perr(p, "engine: \"%s\" is not auto or an engine name (lower-case letters, "
				    "digits, - and _)", v);
		free(*(char **)f);
		*(char **)f = strcmp(v, "auto") == 0 ? NULL : xstrdup(v);
		break;
	}
	if (k->line_offset != NO_LINE)
		*(int *)((char *)p->target + k->line_offset) = p->line;
	return 1;
}

static void slot_defaults(struct slot_conf *s, const char *name)
{
	memset(s, 0, sizeof *s);
	s->name = xstrdup(name);
	s->device = xstrdup("cpu");
	s->stop_timeout_ms = 10000;
	s->restart_backoff_min_ms = 100;
	s->restart_backoff_max_ms = 30000;
	s->restart_limit = 5;
	s->restart_window_ms = 60000;
	s->heartbeat_interval_ms = 1000;
	s->heartbeat_timeout_ms = 5000;
	s->max_queue = 256;
	s->drain_timeout_ms = 30000;
	s->stall_timeout_ms = 300000;
	s->memory_check = MEMCHECK_WARN;
}

static void model_defaults(struct model *m, const char *name)
{
	memset(m, 0, sizeof *m);
	m->name = xstrdup(name);
	m->gpu_layers = CONFIG_GPU_LAYERS_ALL;
	m->warmup = 1;
	m->load_timeout_ms = 300000;
}

static struct slot_conf *add_slot(struct config *c, const char *name)
{
	c->slots = realloc(c->slots, (c->nslots + 1) * sizeof *c->slots);
	if (!c->slots)
		abort();
	slot_defaults(&c->slots[c->nslots], name);
	return &c->slots[c->nslots++];
}

static struct model *add_model(struct config *c, const char *name)
{
	c->models = realloc(c->models, (c->nmodels + 1) * sizeof *c->models);
	if (!c->models || !(c->models[c->nmodels] = malloc(sizeof **c->models)))
		abort();
	model_defaults(c->models[c->nmodels], name);
	return c->models[c->nmodels++];
}

static bool config_has_device(const struct config *c, const char *name);

/* A new [section]: find its key table and the struct it fills. 1 ok, 0 error. */
static int enter_section(struct parse *p, const char *section)
{
	const char *name = strchr(section, ' ');

	snprintf(p->section, sizeof p->section, "%s", section);
	p->seen = 0;
	if (strcmp(section, "modeld") == 0) {
		p->target = p->c;
		p->keys = modeld_keys;
		p->nkeys = sizeof modeld_keys / sizeof modeld_keys[0];
		return 1;
	}
	if (!name || (!valid_name(name + 1) && !valid_device(name + 1)))
		return perr(p, "[%s]: sections are [modeld], [slot NAME], [model NAME] and [device NAME]", section);
	name++;
	if (strncmp(section, "slot ", 5) == 0) {
		if (config_slot(p->c, name) || p->c->nslots == CONFIG_MAX_SLOTS)
			return perr(p, "[slot %s]: defined twice, or too many slots", name);
		p->target = add_slot(p->c, name);
		p->keys = slot_keys;
		p->nkeys = sizeof slot_keys / sizeof slot_keys[0];
		return 1;
	}
	if (strncmp(section, "device ", 7) == 0) {
		if (!valid_device(name) && !valid_name(name))
			return perr(p, "[%s]: not a device or a lock name", section);
		if (config_has_device(p->c, name))
			return perr(p, "[device %s]: defined twice", name);
		p->c->devices = realloc(p->c->devices, (p->c->ndevices + 1) * sizeof *p->c->devices);
		if (!p->c->devices)
			abort();
		struct device_conf *d = &p->c->devices[p->c->ndevices++];
		d->name = xstrdup(name);
		d->exclusive = strncmp(name, "cuda", 4) == 0;
		p->target = d;
		p->keys = device_keys;
		p->nkeys = sizeof device_keys / sizeof device_keys[0];
		return 1;
	}
	if (strncmp(section, "model ", 6) == 0) {
		if (config_model(p->c, name) || p->c->nmodels == CONFIG_MAX_MODELS)
			return perr(p, "[model %s]: defined twice, or too many models", name);
		struct model *m = add_model(p->c, name);
		m->line = p->line;	/* where to point if it ends up without a path */
		p->target = m;
		p->keys = model_keys;
		p->nkeys = sizeof model_keys / sizeof model_keys[0];
		return 1;
	}
	return perr(p, "[%s]: sections are [modeld], [slot NAME], [model NAME] and [device NAME]", section);
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;

	if (p->err[0])
		return 0;
	if (!section[0])
		return perr(p, "\"%s\" is outside any section", name);
	if (strcmp(section, p->section) != 0 && !enter_section(p, section))
		return 0;
	for (size_t i = 0; i < p->nkeys; i++) {
		if (strcmp(p->keys[i].name, name) != 0)
			continue;
		if (p->seen & (1ull << i))
			return perr(p, "[%s]: %s is set twice", section, name);
		p->seen |= 1ull << i;
		return set_key(p, &p->keys[i], value);
	}
	return perr(p, "[%s]: unknown key \"%s\"", section, name);
}

/*
 * Reads one line for inih, counting lines so that errors can name theirs.
 * inih reports a section only with its first key; a header is announced
 * here too, so that a section with no keys ([slot spare]) still counts.
 */
struct line_reader {
	struct parse *p;
	FILE *f;
};

static char *reader(char *str, int num, void *arg)
{
	struct line_reader *lr = arg;
	char *r = fgets(str, num, lr->f), *close;
	size_t len;

	if (!r)
		return NULL;
	lr->p->line++;
	len = strlen(r);
	if (len == (size_t)num - 1 && r[len - 1] != '\n' && !feof(lr->f)) {
		/* inih would take the rest as a line of its own */
		perr(lr->p, "the line is longer than %d bytes", num - 2);
		return NULL;
	}
	while (isspace((unsigned char)*r))
		r++;
	if (*r == '[' && (close = strchr(r, ']')) != NULL) {
		char section[sizeof lr->p->section];
		snprintf(section, sizeof section, "%.*s", (int)(close - r - 1), r + 1);
		if (!lr->p->err[0])
			enter_section(lr->p, section);
	}
	return str;
}

int config_read(struct config *c, const char *file, char err[CONFIG_ERR_LEN])
{
	struct parse p = { .c = c, .file = file };

	FILE *f = fopen(file, "r");
	if (!f) {
		snprintf(err, CONFIG_ERR_LEN, "%s: %s", file, strerror(errno));
		return -1;
	}
	free(c->file);
	c->file = xstrdup(file);
	struct line_reader lr = { &p, f };
	int rc = ini_parse_stream(reader, &lr, on_entry, &p);
	fclose(f);
	if (p.err[0]) {
		snprintf(err, CONFIG_ERR_LEN, "%s", p.err);
		return -1;
	}
	if (rc != 0) {
		snprintf(err, CONFIG_ERR_LEN, "%s:%d: not a section header or key = value", file, rc);
		return -1;
	}
	return 0;
}

static struct config running;

struct config *config_running(void)
{
	return &running;
}

void config_init(struct config *c)
{
	memset(c, 0, sizeof *c);
	c->socket_mode = 0660;
	c->socket_group = c->admin_group = CONFIG_NO_GROUP;
	c->worker_uid = CONFIG_NO_USER;
	c->models_dir = xstrdup("./models");
	c->log_level = LOG_LVL_INFO;
	c->max_frame = FRAME_MAX_DEFAULT;
	c->max_clients = 1024;
	c->max_clients_per_uid = 256;
	c->admin_reserve = 16;
	c->client_idle_timeout_ms = 600000;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && strcmp(s + n - m, suffix) == 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp((*(struct model *const *)a)->name, (*(struct model *const *)b)->name);
}

/* The length of name's stem when it ends in a suffix models_dir serves, else 0. */
static size_t model_stem(const char *name)
{
	for (size_t i = 0; i < sizeof model_suffixes / sizeof model_suffixes[0]; i++)
		if (has_suffix(name, model_suffixes[i]))
			return strlen(name) - strlen(model_suffixes[i]);
	return 0;
}

/* Adds every model file of models_dir not already configured, by file stem. */
static void scan_models(struct config *c)
{
	DIR *d = opendir(c->models_dir);
	struct dirent *e;
	size_t first = c->nmodels;

	if (!d) {
		log_warn("models_dir %s: %s", c->models_dir, strerror(errno));
		return;
	}
	while ((e = readdir(d)) != NULL) {
		char stem[CONFIG_NAME_MAX + 1];
		size_t n = model_stem(e->d_name);
		if (n == 0 || n > CONFIG_NAME_MAX)
			continue;
		memcpy(stem, e->d_name, n);
		stem[n] = '\0';
		if (!valid_name(stem) || config_model(c, stem) || c->nmodels == CONFIG_MAX_MODELS)
			continue;
		char *path;
		struct stat st;
		if (asprintf(&path, "%s/%s", c->models_dir, e->d_name) < 0)
			abort();
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
			/* a FIFO or a device would block the load that opens it */
			log_warn("%s: not a regular file; not served", path);
			free(path);
			continue;
		}
		add_model(c, stem)->path = path;
	}
	closedir(d);
	if (c->nmodels > first)
		qsort(c->models + first, c->nmodels - first, sizeof *c->models, by_name);
}

/* Relative model paths in a file are relative to the file's directory. */
static void resolve_path(const struct config *c, struct model *m)
{
	const char *slash = c->file ? strrchr(c->file, '/') : NULL;
	char *full;

	if (!slash || m->path[0] == '/')
		return;
	if (asprintf(&full, "%.*s/%s", (int)(slash - c->file), c->file, m->path) < 0)
		abort();
	free(m->path);
	m->path = full;
}

/* Notes which file m's path names now, and its size and time. */
static void note_file(struct model *m)
{
	struct stat st;

	if (stat(m->path, &st) < 0)
		return;
	m->file_dev = (uint64_t)st.st_dev;
	m->file_ino = (uint64_t)st.st_ino;
	m->file_size = (uint64_t)st.st_size;
	m->file_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* The pinned ring a slot's cuda worker will make, defaults counted in. */
static uint64_t loader_pinned(const struct slot_conf *s)
{
	return (uint64_t)(s->loader_threads ? s->loader_threads : LOADER_THREADS_DEFAULT) *
	       (s->loader_buffers ? s->loader_buffers : LOADER_BUFFERS_DEFAULT) *
	       (s->loader_chunk ? s->loader_chunk : LOADER_CHUNK_DEFAULT);
}

int config_finish(struct config *c, char err[CONFIG_ERR_LEN])
{
	const char *file = c->file ? c->file : "(default)";

	for (size_t i = 0; i < c->nmodels; i++) {
		struct model *m = c->models[i];
		if (!m->path) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: [model %s] has no path", file, m->line, m->name);
			return -1;
		}
		resolve_path(c, m);
		if (m->slot && !config_slot(c, m->slot)) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: slot: no [slot %s]", file, m->slot_line, m->slot);
			return -1;
		}
	}
	scan_models(c);
	for (size_t i = 0; i < c->nmodels; i++)
		note_file(c->models[i]);
	config_index_models(c);
	for (size_t i = 0; i < c->nslots; i++) {
		const struct slot_conf *s = &c->slots[i];
		if (s->default_model && !config_model(c, s->default_model)) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: default_model: no model %s", file,
				 s->default_model_line, s->default_model);
			return -1;
		}
		if (s->lock && !config_has_device(c, s->lock)) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: lock: no [device %s]", file, s->lock_line, s->lock);
			return -1;
		}
		if (s->cpu_fallback && (!config_slot(c, s->cpu_fallback) || !strcmp(s->cpu_fallback, s->name))) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: cpu_fallback: no other slot %s", file,
				 s->cpu_fallback_line, s->cpu_fallback);
			return -1;
		}
		if (s->fallback_model && !config_model(c, s->fallback_model)) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: fallback_model: no model %s", file,
				 s->fallback_model_line, s->fallback_model);
			return -1;
		}
		uint64_t pinned = loader_pinned(s);
		if (pinned > LOADER_PINNED_MAX) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: loader_threads x loader_buffers x loader_chunk "
				 "is %llu MiB of pinned memory, over the %u MiB allowed", file, s->loader_line,
				 (unsigned long long)(pinned >> 20), LOADER_PINNED_MAX >> 20);
			return -1;
		}
		if (s->restart_backoff_min_ms > s->restart_backoff_max_ms) {
			snprintf(err, CONFIG_ERR_LEN, "%s:%d: [slot %s]: restart_backoff_min is over "
				 "restart_backoff_max", file, s->backoff_line, s->name);
			return -1;
		}
	}
	return 0;
}

void config_index_models(struct config *c)
{
	for (size_t i = 0; i < c->nmodels; i++)
		c->models[i]->index = i;
}

void config_default_slots(struct config *c, size_t ngpus)
{
	char name[32], device[32];

	if (c->nslots > 0)
		return;
	for (size_t i = 0; i < ngpus; i++) {
		snprintf(name, sizeof name, "gpu%zu", i);
		snprintf(device, sizeof device, "cuda:%zu", i);
		struct slot_conf *s = add_slot(c, name);
		free(s->device);
		s->device = xstrdup(device);
	}
	if (ngpus == 0)
		add_slot(c, "cpu");
}

void config_model_free(struct model *m)
{
	free(m->name);
	free(m->path);
	free(m->slot);
	free(m->engine);
	free(m->chat_template);
	free(m);
}

void config_free(struct config *c)
{
	free(c->socket_path);
	free(c->worker_path);
	free(c->engine_path);
	for (size_t i = 0; i < c->nslots; i++) {
		free(c->slots[i].name);
		free(c->slots[i].device);
		free(c->slots[i].default_model);
		free(c->slots[i].fallback_model);
		free(c->slots[i].cpu_fallback);
		free(c->slots[i].lock);
	}
	for (size_t i = 0; i < c->nmodels; i++)
		config_model_free(c->models[i]);
	for (size_t i = 0; i < c->ndevices; i++)
		free(c->devices[i].name);
	free(c->devices);
	free(c->slots);
	free(c->models);
	free(c->file);
	free(c->socket);
	free(c->models_dir);
	free(c->worker);
	free(c->engine_dir);
	free(c->http);
	free(c->http_token_file);
	free(c->state_dir);
	memset(c, 0, sizeof *c);
}

const struct slot_conf *config_slot(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nslots; i++)
		if (strcmp(c->slots[i].name, name) == 0)
			return &c->slots[i];
	return NULL;
}

static const struct device_conf *find_device(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->ndevices; i++)
		if (strcmp(c->devices[i].name, name) == 0)
			return &c->devices[i];
	return NULL;
}

static bool config_has_device(const struct config *c, const char *name)
{
	return find_device(c, name) != NULL;
}

bool config_device_exclusive(const struct config *c, const char *name)
{
	const struct device_conf *d = find_device(c, name);
	return d ? d->exclusive : strncmp(name, "cuda", 4) == 0;
}

const char *config_slot_lock(const struct slot_conf *s)
{
	return s->lock ? s->lock : s->device;
}

const struct model *config_model(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nmodels; i++)
		if (strcmp(c->models[i]->name, name) == 0)
			return c->models[i];
	return NULL;
}
