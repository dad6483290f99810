/*
 * modelctl: the admin CLI of modeld. One request per run (watch: a stream),
 * over the control socket, in the client protocol of docs/protocol.md.
 *
 * Exit status: 0 success, 1 an error reply or no connection (code and
 * message on stderr), 2 a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../proto/frame.h"
#include "../proto/proto.h"
#include "print.h"
#include "version.h"

#define EXIT_USAGE 2

struct ctl {
	char *socket;		/* connected to on the first request, once the arguments are checked */
	bool connected;
	struct chan chan;
	uint64_t next_id;
	bool json;
	bool tty;		/* stderr is a terminal: progress bars */
	const char *slot_filter;	/* load: show this slot's progress only */
	bool bar_drawn;
};

static const char usage_text[] =
	"usage: modelctl [-s SOCKET] [--json] COMMAND [ARGS]\n"
	"       modelctl --help | --version\n"
	"  status [SLOT]                 slots and their states\n"
	"  models                        configured models, and where they are loaded\n"
	"  devices                       devices with total and free memory\n"
	"  jobs                          the last loads and unloads, and where each stands\n"
	"  load MODEL [--slot S] [--no-wait]\n"
	"  unload SLOT|MODEL [--force] [--no-wait]\n"
	"  restart SLOT\n"
	"  reload                        read the configuration again, rescan the models directory\n"
	"  infer MODEL|--model M|--slot S [--max-tokens N] [--stream] [--wait-ms N]\n"
	"        [--temperature T] [--seed N] [--stop TEXT] (--prompt TEXT | TOKEN...)\n"
	"  tokenize MODEL TEXT           the token ids of TEXT (with the model's BOS)\n"
	"  watch [--events state,progress,job,gpu,advisory]\n";

/* A usage error: what is wrong, and where to look; returns the exit status 2. */
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("modelctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'modelctl --help'.\n", stderr);
	return EXIT_USAGE;
}

/* An argument a command does not take. */
static int unexpected(const char *command, const char *arg)
{
	return bad_usage("%s: unexpected argument \"%s\"", command, arg);
}

static int connect_to(struct ctl *c, const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(path) >= sizeof sun.sun_path) {
		fprintf(stderr, "modelctl: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		fprintf(stderr, "modelctl: cannot connect to %s: %s (is modeld running?)\n", path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	chan_init(&c->chan, fd, 64u << 20);
	return 0;
}

/* Starts a request map: {id, op, ...}; the caller adds arguments and closes it. */
static uint64_t begin(struct ctl *c, struct msgw *w, const char *op)
{
	uint64_t id = ++c->next_id;
	msgw_init(w);
	msgw_map(w);
	msgw_ku64(w, "id", id);
	msgw_kstr(w, "op", op);
	return id;
}

static void clear_bar(struct ctl *c)
{
	if (c->bar_drawn) {
		fputc('\n', stderr);
		c->bar_drawn = false;
	}
}

/* Events and chunks that arrive while a request runs. */
static void on_side(struct ctl *c, const msgpack_object *m)
{
	const msgpack_object *chunk = msg_get(m, "chunk");
	uint64_t bytes = 0, total = 0;
	const char *slot;
	size_t n;

	if (chunk) {
		const msgpack_object *t = msg_get(chunk, "tokens"), *text = msg_get(chunk, "text");
		if (c->json) {
			print_json_line(stdout, m);
		} else if (text && text->type == MSGPACK_OBJECT_STR) {
			fwrite(text->via.str.ptr, 1, text->via.str.size, stdout);
			fflush(stdout);
		} else if (t && t->type == MSGPACK_OBJECT_ARRAY) {
			for (uint32_t i = 0; i < t->via.array.size; i++)
				printf("%" PRIu64 " ", t->via.array.ptr[i].via.u64);
			fflush(stdout);
		}
		return;
	}
	if (msg_u64(m, "bytes", &bytes) || msg_u64(m, "total", &total) || msg_str(m, "slot", &slot, &n))
		return;
	if (c->slot_filter && (strlen(c->slot_filter) != n || memcmp(c->slot_filter, slot, n)))
		return;
	if (c->json) {
		print_json_line(stderr, m);
	} else if (c->tty) {
		print_bar(stderr, "loading", bytes, total);
		c->bar_drawn = true;
	} else {
		fprintf(stderr, "progress %" PRIu64 "/%" PRIu64 "\n", bytes, total);
	}
}

/* Prints an error reply; returns the exit status 1. */
static int print_error(const msgpack_object *reply)
{
	const msgpack_object *e = msg_get(reply, "error");
	const char *code = "?", *text = "";
	size_t ncode = 1, ntext = 0;

	msg_str(e, "code", &code, &ncode);
	msg_str(e, "message", &text, &ntext);
	fprintf(stderr, "modelctl: %.*s: %.*s\n", (int)ncode, code, (int)ntext, text);
	return 1;
}

/*
 * Sends w and reads until the final reply to id, passing other frames to
 * on_side. Returns the reply (valid until the next read) or NULL when the
 * connection failed (reported).
 */
static const msgpack_object *call(struct ctl *c, struct msgw *w, uint64_t id)
{
	const msgpack_object *m;
	uint64_t rid;

	msgw_end(w);
	if (!c->connected && connect_to(c, c->socket) < 0) {
		msgw_free(w);
		return NULL;
	}
	c->connected = true;
	/* a send to a server that refused the connection fails: its reason may still be there to read */
	int send_error = chan_send(&c->chan, w) < 0 ? errno : 0;
	msgw_free(w);
	while (chan_read(&c->chan, -1, &m) == 1) {
		/* id 0: about the connection itself (refused, a bad frame, closed for idling) */
		if (msg_u64(m, "id", &rid) == MSG_OK && (rid == id || rid == 0) && msg_get(m, "ok")) {
			clear_bar(c);
			return m;
		}
		on_side(c, m);
	}
	clear_bar(c);
	if (send_error)
		fprintf(stderr, "modelctl: send: %s\n", strerror(send_error));
	else
		fprintf(stderr, "modelctl: connection closed: %s\n", c->chan.error ? c->chan.error : "by modeld");
	return NULL;
}

/* A call whose reply is printed whole with --json; returns the reply on success. */
static const msgpack_object *call_ok(struct ctl *c, struct msgw *w, uint64_t id, int *status)
{
	const msgpack_object *r = call(c, w, id);
	bool ok = false;

	*status = 1;
	if (!r)
		return NULL;
	msg_bool(r, "ok", &ok);
	if (!ok) {
		print_error(r);
		return NULL;
	}
	*status = 0;
	if (c->json) {
		print_json_line(stdout, r);
		return NULL;	/* printed */
	}
	return r;
}

/* The keys of m not named in skip, as " key=value" (sizes in human units). */
static void print_rest(FILE *f, const msgpack_object *m, const char *const *skip)
{
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object_kv *kv = &m->via.map.ptr[i];
		char key[64];
		bool skipped = false;
		snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
		for (int k = 0; skip[k] && !skipped; k++)
			skipped = strcmp(skip[k], key) == 0;
		if (skipped || kv->val.type == MSGPACK_OBJECT_NIL)
			continue;
		fprintf(f, " %s=", key);
		print_field(f, m, key);
	}
}

/* A DETAILS cell: print_rest's text. */
static void rest_cell(struct table *t, const msgpack_object *m, const char *const *skip)
{
	FILE *f = table_begin_cell(t);

	print_rest(f, m, skip);
	table_end_cell(t, f);
}

/* A column: the key it shows and its header. */
struct column {
	const char *key, *header;
};

/* Prints list (an array of maps) as a table of cols, and with details, the other keys. */
static void print_table(const msgpack_object *list, const struct column *cols, bool details)
{
	const char *headers[8], *skip[8];
	struct table t;
	size_t n = 0;

	for (; cols[n].key; n++) {
		headers[n] = cols[n].header;
		skip[n] = cols[n].key;
	}
	if (details)
		headers[n] = "DETAILS";
	headers[n + details] = NULL;
	skip[n] = "since_ms";
	skip[n + 1] = NULL;
	table_init(&t, headers);
	for (uint32_t i = 0; i < list->via.array.size; i++) {
		const msgpack_object *row = &list->via.array.ptr[i];
		for (size_t k = 0; k < n; k++)
			table_cell(&t, row, cols[k].key);
		if (details)
			rest_cell(&t, row, skip);
	}
	table_print(stdout, &t);
}

static int cmd_status(struct ctl *c, int argc, char **argv)
{
	static const struct column cols[] = {
		{ "name", "SLOT" }, { "device", "DEVICE" }, { "state", "STATE" }, { "model", "MODEL" },
		{ "pid", "PID" }, { NULL, NULL },
	};
	struct msgw w;
	int status;

	if (argc > 2)
		return unexpected("status", argv[2]);
	uint64_t id = begin(c, &w, "status");
	if (argc == 2)
		msgw_kstr(&w, "slot", argv[1]);
	const msgpack_object *r = call_ok(c, &w, id, &status), *slots;
	if (!r || !(slots = msg_get(r, "slots")) || slots->type != MSGPACK_OBJECT_ARRAY)
		return status;
	print_table(slots, cols, true);
	return 0;
}

static int cmd_list(struct ctl *c, int argc, char **argv, const char *op, const struct column *cols)
{
	struct msgw w;
	int status;

	if (argc != 1)
		return unexpected(op, argv[1]);
	uint64_t id = begin(c, &w, op);
	const msgpack_object *r = call_ok(c, &w, id, &status), *list;
	if (!r || !(list = msg_get(r, op)) || list->type != MSGPACK_OBJECT_ARRAY)
		return status;
	print_table(list, cols, false);
	return 0;
}

static int cmd_models(struct ctl *c, int argc, char **argv)
{
	static const struct column cols[] = {
		{ "name", "MODEL" }, { "bytes", "SIZE" }, { "engine", "ENGINE" }, { "slot", "SLOT" },
		{ "loaded_in", "LOADED IN" }, { NULL, NULL },
	};
	return cmd_list(c, argc, argv, "models", cols);
}

static int cmd_devices(struct ctl *c, int argc, char **argv)
{
	static const struct column cols[] = {
		{ "name", "DEVICE" }, { "kind", "KIND" }, { "label", "LABEL" }, { "total_bytes", "TOTAL" },
		{ "free_bytes", "FREE" }, { NULL, NULL },
	};
	return cmd_list(c, argc, argv, "devices", cols);
}

static int cmd_jobs(struct ctl *c, int argc, char **argv)
{
	static const struct column cols[] = {
		{ "job", "JOB" }, { "op", "OP" }, { "slot", "SLOT" }, { "model", "MODEL" }, { "status", "STATUS" },
		{ "message", "MESSAGE" }, { NULL, NULL },
	};
	return cmd_list(c, argc, argv, "jobs", cols);
}

static int subscribe(struct ctl *c, const char *events)
{
	struct msgw w;
	int status;
	bool json = c->json;

	uint64_t id = begin(c, &w, "subscribe");
	if (events) {
		char *copy = strdup(events), *save = NULL;
		msgw_key(&w, "events");
		msgw_array(&w);
		for (char *e = strtok_r(copy, ",", &save); e; e = strtok_r(NULL, ",", &save))
			msgw_str(&w, e);
		msgw_end(&w);
		free(copy);
	}
	c->json = false;	/* the subscribe reply is not the command's output */
	call_ok(c, &w, id, &status);
	c->json = json;
	return status;
}

static int cmd_load(struct ctl *c, int argc, char **argv)
{
	const char *model = NULL, *slot = NULL;
	bool wait = true;
	struct msgw w;
	int status;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--slot") == 0 && i + 1 < argc)
			slot = argv[++i];
		else if (strcmp(argv[i], "--no-wait") == 0)
			wait = false;
		else if (!model && argv[i][0] != '-')
			model = argv[i];
		else
			return unexpected("load", argv[i]);
	}
	if (!model)
		return bad_usage("load: which MODEL?");
	if (wait && (status = subscribe(c, "progress")) != 0)
		return status;
	c->slot_filter = slot;
	uint64_t id = begin(c, &w, "load");
	msgw_kstr(&w, "model", model);
	if (slot)
		msgw_kstr(&w, "slot", slot);
	msgw_kbool(&w, "wait", wait);
	const msgpack_object *r = call_ok(c, &w, id, &status);
	if (!r)
		return status;
	print_template(stdout, wait ? "loaded {model} in slot {slot} (load {load_ms} ms, warmup {warmup_ms} ms)\n"
				    : "job {job}\n", r);
	return 0;
}

/* Sends unload for name as a slot, or as a model when no slot is called that. */
static int cmd_unload(struct ctl *c, int argc, char **argv)
{
	const char *name = NULL;
	bool wait = true, force = false;
	int status = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--force") == 0)
			force = true;
		else if (strcmp(argv[i], "--no-wait") == 0)
			wait = false;
		else if (!name && argv[i][0] != '-')
			name = argv[i];
		else
			return unexpected("unload", argv[i]);
	}
	if (!name)
		return bad_usage("unload: which SLOT or MODEL?");
	for (int as_model = 0; as_model < 2; as_model++) {
		struct msgw w;
		uint64_t id = begin(c, &w, "unload");
		msgw_kstr(&w, as_model ? "model" : "slot", name);
		msgw_kbool(&w, "wait", wait);
		msgw_kbool(&w, "force", force);
		const msgpack_object *r = call(c, &w, id);
		bool ok = false;
		const char *code = "";
		size_t n = 0;
		if (!r)
			return 1;
		msg_bool(r, "ok", &ok);
		msg_str(msg_get(r, "error"), "code", &code, &n);
		if (!ok && !as_model && n == strlen("unknown_slot") && memcmp(code, "unknown_slot", n) == 0)
			continue;
		if (!ok)
			return print_error(r);
		if (c->json)
			print_json_line(stdout, r);
		else
			print_template(stdout, "slot {slot}: {state}\n", r);
		status = 0;
		break;
	}
	return status;
}

static int cmd_restart(struct ctl *c, int argc, char **argv)
{
	struct msgw w;
	int status;

	if (argc != 2)
		return argc < 2 ? bad_usage("restart: which SLOT?") : unexpected("restart", argv[2]);
	uint64_t id = begin(c, &w, "restart");
	msgw_kstr(&w, "slot", argv[1]);
	const msgpack_object *r = call_ok(c, &w, id, &status);
	if (r)
		print_template(stdout, "slot {slot}: {state}\n", r);
	return status;
}

static int cmd_reload(struct ctl *c, int argc, char **argv)
{
	struct msgw w;
	int status;

	if (argc != 1)
		return unexpected("reload", argv[1]);
	uint64_t id = begin(c, &w, "reload");
	const msgpack_object *r = call_ok(c, &w, id, &status);
	if (r)
		print_template(stdout, "reloaded: {models} models; {added} added, {removed} removed, {changed} changed\n", r);
	return status;
}

static int not_a_number(const char *option, const char *value)
{
	return bad_usage("%s: \"%s\" is not a number from 0 to %u", option, value, UINT32_MAX);
}

static int parse_u32(const char *s, uint64_t *out)
{
	return proto_parse_u64(s, UINT32_MAX, out);
}

/* A reply's text, else its tokens, on one line. */
static void print_output(const msgpack_object *r)
{
	const msgpack_object *t = msg_get(r, "text");

	if (t && t->type == MSGPACK_OBJECT_STR)
		fwrite(t->via.str.ptr, 1, t->via.str.size, stdout);
	else if ((t = msg_get(r, "tokens")) != NULL && t->type == MSGPACK_OBJECT_ARRAY)
		for (uint32_t i = 0; i < t->via.array.size; i++)
			printf("%s%" PRIu64, i ? " " : "", t->via.array.ptr[i].via.u64);
	printf("\n");
}

static int cmd_infer(struct ctl *c, int argc, char **argv)
{
	const char *model = NULL, *slot = NULL, *prompt = NULL, *stop = NULL, *temperature = NULL;
	uint64_t max_tokens = 16, wait_ms = 0, seed = 0, tokens[256];
	bool stream = false, has_wait = false, has_seed = false;
	int ntokens = 0, status;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--slot") == 0 && i + 1 < argc)
			slot = argv[++i];
		else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
			model = argv[++i];
		else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc)
			prompt = argv[++i];
		else if (strcmp(argv[i], "--stop") == 0 && i + 1 < argc)
			stop = argv[++i];
		else if (strcmp(argv[i], "--temperature") == 0 && i + 1 < argc)
			temperature = argv[++i];
		else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
			if (parse_u32(argv[++i], &max_tokens))
				return not_a_number(argv[i - 1], argv[i]);
		} else if (strcmp(argv[i], "--wait-ms") == 0 && i + 1 < argc) {
			if (parse_u32(argv[++i], &wait_ms))
				return not_a_number(argv[i - 1], argv[i]);
			has_wait = true;
		} else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
			if (parse_u32(argv[++i], &seed))
				return not_a_number(argv[i - 1], argv[i]);
			has_seed = true;
		} else if (strcmp(argv[i], "--stream") == 0) {
			stream = true;
		} else if (!model && !slot && argv[i][0] != '-' && parse_u32(argv[i], &tokens[0])) {
			model = argv[i];
		} else if (ntokens < 256 && parse_u32(argv[i], &tokens[ntokens]) == 0) {
			ntokens++;
		} else {
			return ntokens == 256 ? bad_usage("infer: at most 256 TOKENs") : unexpected("infer", argv[i]);
		}
	}
	char *end = NULL;
	double temp = temperature ? strtod(temperature, &end) : 0;
	if (!model && !slot)
		return bad_usage("infer: which MODEL (or --slot)?");
	if ((ntokens == 0) == !prompt)
		return bad_usage(prompt ? "infer: --prompt TEXT or TOKENs, not both" : "infer: --prompt TEXT or TOKENs?");
	if (temperature && (end == temperature || *end))
		return bad_usage("--temperature: \"%s\" is not a number", temperature);
	struct msgw w;
	uint64_t id = begin(c, &w, "infer");
	if (model)
		msgw_kstr(&w, "model", model);
	if (slot)
		msgw_kstr(&w, "slot", slot);
	if (prompt) {
		msgw_kstr(&w, "prompt", prompt);
	} else {
		msgw_key(&w, "input");
		msgw_array(&w);
		for (int i = 0; i < ntokens; i++)
			msgw_u64(&w, tokens[i]);
		msgw_end(&w);
	}
	if (stop)
		msgw_kstr(&w, "stop", stop);
	if (temperature) {
		msgw_key(&w, "temperature");
		msgw_f64(&w, temp);
	}
	if (has_seed)
		msgw_ku64(&w, "seed", seed);
	msgw_ku64(&w, "max_tokens", max_tokens);
	msgw_kbool(&w, "stream", stream);
	if (has_wait)
		msgw_ku64(&w, "wait_ms", wait_ms);
	const msgpack_object *r = call_ok(c, &w, id, &status);
	if (!r)
		return status;
	if (stream)
		printf("\n");
	else
		print_output(r);
	return 0;
}

static int cmd_tokenize(struct ctl *c, int argc, char **argv)
{
	struct msgw w;
	int status;

	if (argc != 3)
		return argc < 3 ? bad_usage("tokenize: give MODEL and TEXT") : unexpected("tokenize", argv[3]);
	uint64_t id = begin(c, &w, "tokenize");
	msgw_kstr(&w, "model", argv[1]);
	msgw_kstr(&w, "text", argv[2]);
	msgw_kbool(&w, "add_special", true);
	const msgpack_object *r = call_ok(c, &w, id, &status);
	if (r)
		print_output(r);
	return status;
}

static void print_event(const msgpack_object *m)
{
	static const char *const skip[] = { "event", "seq", "ts_ms", NULL };
	uint64_t seq = 0;

	msg_u64(m, "seq", &seq);
	printf("%" PRIu64 " ", seq);
	print_value(stdout, msg_get(m, "event"));
	print_rest(stdout, m, skip);
	printf("\n");
	fflush(stdout);
}

static int cmd_watch(struct ctl *c, int argc, char **argv)
{
	const char *events = NULL;
	const msgpack_object *m;
	int status;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
			events = argv[++i];
		else
			return unexpected("watch", argv[i]);
	}
	if ((status = subscribe(c, events)) != 0)
		return status;
	while (chan_read(&c->chan, -1, &m) == 1) {
		if (c->json)
			print_json_line(stdout, m);
		else
			print_event(m);
	}
	fprintf(stderr, "modelctl: connection closed\n");
	return 1;
}

static const struct command {
	const char *name;
	int (*run)(struct ctl *c, int argc, char **argv);
} commands[] = {
	{ "status", cmd_status },
	{ "models", cmd_models },
	{ "devices", cmd_devices },
	{ "jobs", cmd_jobs },
	{ "load", cmd_load },
	{ "unload", cmd_unload },
	{ "restart", cmd_restart },
	{ "reload", cmd_reload },
	{ "infer", cmd_infer },
	{ "tokenize", cmd_tokenize },
	{ "watch", cmd_watch },
};

int main(int argc, char **argv)
{
	struct ctl c = { 0 };
	char *path = NULL;
	int i = 1;

	/* --json may come anywhere; -s only before the command. */
	int kept = 1;
	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0)
			c.json = true;
		else
			argv[kept++] = argv[k];
	}
	argc = kept;
	while (i < argc && argv[i][0] == '-') {
		if ((strcmp(argv[i], "-s") == 0 || strcmp(argv[i], "--socket") == 0) && i + 1 < argc) {
			path = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("modelctl %s\n", MODELD_VERSION);
			return 0;
		} else {
			return bad_usage("unknown option \"%s\"", argv[i]);
		}
	}
	if (i == argc)
		return bad_usage("which COMMAND?");
	for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
		if (strcmp(argv[i], commands[k].name) != 0)
			continue;
		c.socket = path ? strdup(path) : proto_client_socket();
		c.tty = isatty(STDERR_FILENO);
		int rc = commands[k].run(&c, argc - i, argv + i);
		if (c.connected) {
			close(c.chan.fd);
			chan_free(&c.chan);
		}
		free(c.socket);
		return rc;
	}
	return bad_usage("no command called \"%s\"", argv[i]);
}
