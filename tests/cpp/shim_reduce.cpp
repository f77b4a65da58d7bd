// Block-wide tree reduction through __shared__ and __syncthreads, written as the csrc/cuda/*.cu
// files are (compat.cuh first, FI_LAUNCH from a launcher taking `void* stream`), so this file
// also compiles with nvcc (-x cu: the CUDA branch of compat.cuh; main exists only on the shim).
// -DSIMT_SKIP_SYNC=1 removes the __syncthreads inside the tree: a data race that
// ThreadSanitizer must name. Exits non-zero when a sum is wrong or the launch fails.
#include "cuda/compat.cuh"

#ifndef SIMT_SKIP_SYNC
#define SIMT_SKIP_SYNC 0
#endif

namespace fused_inception::FI_KERNEL_NS {

constexpr unsigned kThreads = 256;

// One sum per block of a 2-D grid: out[by * gridDim.x + bx] = sum of its kThreads inputs.
__global__ void __launch_bounds__(kThreads) block_sum(const int* in, long long* out) {
  __shared__ __align__(32) long long partial[kThreads];
  const unsigned t = threadIdx.x;
  const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
  partial[t] = in[block * blockDim.x + t];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
#if !SIMT_SKIP_SYNC
    __syncthreads();
#endif
  }
  if (t == 0) out[block] = partial[0];
#if SIMT_SKIP_SYNC
  __syncthreads();  // keeps every thread's __syncthreads count equal, so only the race remains
#endif
}

const char* run_block_sum(dim3 grid, const int* in, long long* out, void* stream) {
  FI_LAUNCH(block_sum, grid, dim3(kThreads), 0, stream, in, out);
  return fi_last_launch_error();
}

}  // namespace fused_inception::FI_KERNEL_NS

#if !defined(__CUDACC__)
#include <cstdio>
#include <vector>

int main() {
  using fused_inception::emulated::kThreads;
  const dim3 grid(3, 2);
  const unsigned blocks = grid.x * grid.y;
  std::vector<int> in(blocks * kThreads);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>((i * 7919) % 1000) - 400;
  std::vector<long long> out(blocks, -1);
  const char* error =
      fused_inception::emulated::run_block_sum(grid, in.data(), out.data(), nullptr);
  if (error != nullptr) {
    std::printf("FAIL: launch error: %s\n", error);
    return 1;
  }
  int failures = 0;
  for (unsigned b = 0; b < blocks; ++b) {
    long long expected = 0;
    for (unsigned t = 0; t < kThreads; ++t) expected += in[b * kThreads + t];
    if (out[b] != expected) {
      std::printf("FAIL: block %u: sum %lld, expected %lld\n", b, out[b], expected);
      ++failures;
    }
  }
  if (failures != 0) return 1;
  std::printf("OK: %u block sums exact\n", blocks);
  return 0;
}
#endif
