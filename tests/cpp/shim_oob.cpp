// Shared-memory reads one past the end, for AddressSanitizer to catch. The first argument picks
// the variant (at run time, so one build serves all three and the compiler cannot see the index):
//   0  every access in range (must pass);
//   1  one past a static __shared__ array;
//   2  one past the dynamic shared buffer (allocated with exactly its size).
#include <cstdio>
#include <cstdlib>

#include "simt/simt.h"

constexpr unsigned kThreads = 64;

__global__ void neighbour_sum(int variant, int* out) {
  __shared__ int fixed[kThreads];
  int* dynamic = static_cast<int*>(simt::dynamic_shared_memory());  // kThreads ints
  const unsigned t = threadIdx.x;
  fixed[t] = static_cast<int>(t);
  dynamic[t] = static_cast<int>(2 * t);
  __syncthreads();
  if (t == 0) {
    const int a = fixed[blockDim.x - 1 + (variant == 1 ? 1 : 0)];
    const int b = dynamic[blockDim.x - 1 + (variant == 2 ? 1 : 0)];
    out[blockIdx.x] = a + b;
  }
}

int main(int argc, char** argv) {
  const int variant = argc > 1 ? std::atoi(argv[1]) : 0;
  int out[2] = {-1, -1};
  const char* error =
      simt::launch(dim3(2), dim3(kThreads), kThreads * sizeof(int), neighbour_sum, variant, out);
  if (error != nullptr) {
    std::printf("FAIL: launch error: %s\n", error);
    return 1;
  }
  const int expected = 3 * static_cast<int>(kThreads - 1);
  if (out[0] != expected || out[1] != expected) {
    std::printf("FAIL: sums %d %d, expected %d\n", out[0], out[1], expected);
    return 1;
  }
  std::printf("OK: shared accesses of variant %d in range\n", variant);
  return 0;
}
