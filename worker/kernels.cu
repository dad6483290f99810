#include <cuda_fp16.h>
// kernels.cu: the reference model's step on the GPU (see docs/reference-model.md).
// Built by nvcc into a fatbin (PTX for compute_75, cubin for sm_90) that is
// embedded in modeld-worker and loaded with cuModuleLoadData.

enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

// n elements of dtype at src (any alignment) to float at dst.
extern "C" __global__ void mlp_convert(float *dst, const unsigned char *src, unsigned long long n, int dtype)
{
	for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
	     i += (unsigned long long)gridDim.x * blockDim.x) {
		if (dtype == DT_F32) {
			unsigned int b = src[4 * i] | src[4 * i + 1] << 8 | src[4 * i + 2] << 16 |
					 (unsigned int)src[4 * i + 3] << 24;
			dst[i] = __uint_as_float(b);
		} else {
			unsigned short h = src[2 * i] | src[2 * i + 1] << 8;
			dst[i] = dtype == DT_F16 ? __half2float(*(__half *)&h) : __uint_as_float((unsigned int)h << 16);
		}
	}
}

// h[j] = max(0, tok_embed[t] . w1[:, j] + b1[j]), one thread per j.
extern "C" __global__ void mlp_hidden(float *h, const float *embed, const float *w1, const float *b1,
				      const unsigned int *t, unsigned int dim, unsigned int hidden)
{
	unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= hidden)
		return;
	const float *x = embed + (unsigned long long)*t * dim;
	float acc = b1[j];
	for (unsigned int i = 0; i < dim; i++)
		acc += x[i] * w1[(unsigned long long)i * hidden + j];
	h[j] = acc > 0.0f ? acc : 0.0f;
}

// logits[k] = h . w2[:, k] + b2[k], one thread per k.
extern "C" __global__ void mlp_logits(float *logits, const float *h, const float *w2, const float *b2,
				      unsigned int hidden, unsigned int vocab)
{
	unsigned int k = blockIdx.x * blockDim.x + threadIdx.x;
	if (k >= vocab)
		return;
	float acc = b2[k];
	for (unsigned int j = 0; j < hidden; j++)
		acc += h[j] * w2[(unsigned long long)j * vocab + k];
	logits[k] = acc;
}

// *t = argmax(logits), the smallest index on ties; one block of 256 threads.
extern "C" __global__ void mlp_argmax(unsigned int *t, const float *logits, unsigned int vocab)
{
	__shared__ float best[256];
	__shared__ unsigned int at[256];
	unsigned int me = threadIdx.x;
	float b = -__int_as_float(0x7f800000);
	unsigned int a = 0xffffffffu;
	for (unsigned int k = me; k < vocab; k += blockDim.x)
		if (logits[k] > b || a == 0xffffffffu) {
			b = logits[k];
			a = k;
		}
	best[me] = b;
	at[me] = a;
	__syncthreads();
	for (unsigned int step = blockDim.x / 2; step > 0; step /= 2) {
		if (me < step) {
			float ob = best[me + step];
			unsigned int oa = at[me + step];
			if (oa != 0xffffffffu && (at[me] == 0xffffffffu || ob > best[me] || (ob == best[me] && oa < at[me]))) {
				best[me] = ob;
				at[me] = oa;
			}
		}
		__syncthreads();
	}
	if (me == 0)
		*t = at[0];
}

// Adds the n bytes at p, as 64-bit sums of bytes, into *sum (for load verification).
extern "C" __global__ void mlp_checksum(unsigned long long *sum, const unsigned char *p, unsigned long long n)
{
	unsigned long long acc = 0;
	for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
	     i += (unsigned long long)gridDim.x * blockDim.x)
		acc += p[i];
	atomicAdd(sum, acc);
}
