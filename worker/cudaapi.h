/*
 * cudaapi.h: the CUDA driver API, opened at run time.
 *
 * libcuda.so.1 comes with the NVIDIA driver, not with the toolkit we build
 * against, so it is dlopen'ed: the same binaries run on hosts without it.
 * cudaapi.f(...) calls driver function f; the names in CUDAAPI_FUNCS expand
 * (through cuda.h's macros) to the versioned symbols, which are looked up.
 */
#ifndef CUDAAPI_H
#define CUDAAPI_H

#include <stddef.h>

#include <cuda.h>

#define CUDAAPI_LIBRARY "libcuda.so.1"

#define CUDAAPI_FUNCS(X)                                                                \
	X(cuInit) X(cuGetErrorName) X(cuDeviceGet) X(cuDeviceGetName)                    \
	X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) X(cuCtxSetCurrent)      \
	X(cuMemGetInfo) X(cuMemAlloc) X(cuMemFree) X(cuMemHostAlloc)                    \
	X(cuMemFreeHost) X(cuMemcpyHtoDAsync) X(cuMemcpyHtoD) X(cuMemcpyDtoH)           \
	X(cuStreamCreate) X(cuStreamSynchronize) X(cuStreamDestroy) X(cuModuleLoadData)  \
	X(cuModuleUnload) X(cuModuleGetFunction) X(cuLaunchKernel) X(cuDeviceGetCount)   \
	X(cuEventCreate) X(cuEventRecord) X(cuEventSynchronize) X(cuEventDestroy)

struct cudaapi {
	void *lib;
#define X(f) __typeof__(f) *f;
	CUDAAPI_FUNCS(X)
#undef X
};

extern struct cudaapi cudaapi;

/*
 * Opens the library and runs cuInit, once per process. 0, or -1 with err
 * filled and *rc the cuInit error (CUDA_SUCCESS when the library itself is
 * missing or incomplete).
 */
int cudaapi_load(char *err, size_t len, CUresult *rc);
/* The name of a driver error ("CUDA_ERROR_NO_DEVICE"). */
const char *cudaapi_error(CUresult rc);

#endif
