// Stand-in kernels for tests/test_report_cuda.py: what fused_inception/report/cuda.py must
// tell apart. Not part of the package.
#include "cuda/compat.cuh"

namespace probe {

// fp32 on CUDA cores, static shared memory: no tensor cores, no local memory.
template <class T>
__global__ void __launch_bounds__(128) scale_kernel(const T* in, T* out, int n) {
  __shared__ float tile[128];
  const int i = blockIdx.x * 128 + threadIdx.x;
  tile[threadIdx.x] = i < n ? static_cast<float>(in[i]) : 0.0f;
  __syncthreads();
  if (i < n) out[i] = static_cast<T>(2.0f * tile[127 - threadIdx.x]);
}

// One 16x16x16 WMMA product: HMMA in the SASS.
template <class T>
__global__ void wmma_kernel(const T* a, const T* b, float* c) {
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, T, nvcuda::wmma::row_major> fa;
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, T, nvcuda::wmma::row_major> fb;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> fc;
  nvcuda::wmma::fill_fragment(fc, 0.0f);
  nvcuda::wmma::load_matrix_sync(fa, a, 16);
  nvcuda::wmma::load_matrix_sync(fb, b, 16);
  nvcuda::wmma::mma_sync(fc, fa, fb, fc);
  nvcuda::wmma::store_matrix_sync(c, fc, 16, nvcuda::wmma::mem_row_major);
}

// A per-thread array indexed at run time lives in local memory (a stack frame).
__global__ void local_memory_kernel(const int* idx, float* out) {
  float scratch[256];
  for (int i = 0; i < 256; ++i) scratch[i] = static_cast<float>(i * threadIdx.x);
  out[threadIdx.x] = scratch[idx[threadIdx.x] & 255];
}

template __global__ void scale_kernel<float>(const float*, float*, int);
template __global__ void wmma_kernel<__half>(const __half*, const __half*, float*);
template __global__ void wmma_kernel<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                    float*);

}  // namespace probe
