/*
 * engines.c: finding an engine by name: the built-in ones, then shared
 * objects in the engine directory (modeld-engine-NAME.so), opened before
 * the sandbox and kept for the life of the worker.
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "engines.h"

static const struct engine *const builtin[] = {
	&engine_cpu,
#ifdef MODELD_HAVE_CUDA
	&engine_cuda,
#endif
};

/* Engine names are what config.c accepts: lower-case letters, digits, '-' and '_'. */
static bool name_ok(const char *name)
{
	if (!*name || strlen(name) > ENGINES_NAME_MAX)
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	return true;
}

/*
 * Why an engine is missing: the build leaves the reason it could not build
 * one in modeld-engine-NAME.missing; else what dlopen said.
 */
static void missing(const char *name, const char *dir, struct engine_error *e)
{
	char path[PATH_MAX], why[200] = "";
	const char *dl = dlerror();

	snprintf(path, sizeof path, "%s/modeld-engine-%s.missing", dir, name);
	FILE *f = fopen(path, "re");
	if (f) {
		if (fgets(why, sizeof why, f))
			why[strcspn(why, "\n")] = '\0';
		fclose(f);
	}
	engine_fail(e, "load_failed", "no engine called %s: %s", name, why[0] ? why : dl);
}

static const struct engine *engines_open(const char *name, const char *dir, struct engine_error *e)
{
	char path[PATH_MAX];

	snprintf(path, sizeof path, "%s/modeld-engine-%s.so", dir, name);
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		missing(name, dir, e);
		return NULL;
	}
	engine_entry_fn entry = (engine_entry_fn)dlsym(lib, ENGINE_SYMBOL);
	const struct engine *eng = entry ? entry() : NULL;
	if (!eng) {
		engine_fail(e, "load_failed", "%s exports no %s()", path, ENGINE_SYMBOL);
	} else if (eng->abi_version != ENGINE_ABI_VERSION) {
		engine_fail(e, "load_failed", "%s is built for engine ABI %u; this worker speaks %u", path,
			    eng->abi_version, ENGINE_ABI_VERSION);
		eng = NULL;
	}
	if (!eng)
		dlclose(lib);
	return eng;	/* an engine's library stays open until the worker exits */
}

const struct engine *engines_find(const char *name, const char *dir, struct engine_error *e)
{
	for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
		if (strcmp(builtin[i]->name, name) == 0)
			return builtin[i];
	if (!name_ok(name)) {
		engine_fail(e, "load_failed", "\"%s\" is not an engine name", name);
		return NULL;
	}
	return engines_open(name, dir, e);
}
