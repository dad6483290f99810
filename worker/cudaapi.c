/* cudaapi.c: see cudaapi.h. */
#include <dlfcn.h>
#include <stdio.h>

#include "cudaapi.h"

#define STR_(x) #x
#define STR(x) STR_(x)

struct cudaapi cudaapi;

int cudaapi_load(char *err, size_t len, CUresult *rc)
{
	*rc = CUDA_SUCCESS;
	if (cudaapi.lib)
		return 0;
	void *lib = dlopen(CUDAAPI_LIBRARY, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(err, len, "the NVIDIA driver is not usable: %s", dlerror());
		return -1;
	}
#define X(f)                                                                      \
	cudaapi.f = (__typeof__(f) *)dlsym(lib, STR(f));                          \
	if (!cudaapi.f) {                                                         \
		snprintf(err, len, "%s lacks %s", CUDAAPI_LIBRARY, STR(f));       \
		dlclose(lib);                                                     \
		return -1;                                                        \
	}
	CUDAAPI_FUNCS(X)
#undef X
	*rc = cudaapi.cuInit(0);
	if (*rc != CUDA_SUCCESS) {
		snprintf(err, len, "cuInit: %s", cudaapi_error(*rc));
		return -1;
	}
	cudaapi.lib = lib;
	return 0;
}

const char *cudaapi_error(CUresult rc)
{
	const char *name = NULL;
	if (!cudaapi.cuGetErrorName || cudaapi.cuGetErrorName(rc, &name) != CUDA_SUCCESS || !name)
		return "unknown error";
	return name;
}
