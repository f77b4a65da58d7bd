// Misuse that hardware turns into errors or wrong results must come back from simt::launch as
// an error string: bad launch configurations (nothing runs), a thread skipping __syncthreads,
// misaligned WMMA pointers, bad ldm values and partial warps. Each case also runs its correct
// twin, which must succeed, so a check cannot pass vacuously.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

#include "simt/simt.h"

using namespace nvcuda;

namespace {

std::atomic<int> runs{0};
int failures = 0;

__global__ void count_runs() { runs.fetch_add(1); }

__global__ void uses_dynamic_shared(int* out) {
  const auto* smem = static_cast<const unsigned char*>(simt::dynamic_shared_memory());
  if (threadIdx.x == 0) out[0] = smem[100 * 1024 - 1];  // the last byte: 0xFF poison
  runs.fetch_add(1);
}

// Thread `skip` (if any) returns before the block's only __syncthreads.
__global__ void skips_sync(int skip, int* out) {
  __shared__ int value[64];
  if (static_cast<int>(threadIdx.x) == skip) return;
  value[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = value[(threadIdx.x + 1) % blockDim.x];
}

#if !SIMT_OS_THREADS
// In block 1, thread `skip` (if any) returns before its warp's __syncwarp: its 31 lanes wait in
// __syncwarp for it, the rest of the block at the end of the block. Hardware hangs; fiber mode
// reports the deadlock (OS-thread mode hangs too).
__global__ void skips_syncwarp(int skip, int* out) {
  if (blockIdx.x == 1 && static_cast<int>(threadIdx.x) == skip) return;
  __syncwarp();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}
#endif

// Each thread keeps 2 MiB of locals live across a __syncthreads: one byte per 4 KiB page written
// before it, all read after it (a page shared with another thread's stack, or past a guard
// page, fails or faults): a kernel that fits an OS thread's 8 MiB stack fits a fiber's.
__global__ void big_locals(int* out) {
  constexpr unsigned kPage = 4096, kBytes = 2u << 20;
  volatile unsigned char big[kBytes];
  for (unsigned i = 0; i < kBytes; i += kPage) {
    big[i] = static_cast<unsigned char>(threadIdx.x + i / kPage);
  }
  __syncthreads();
  int wrong = 0;
  for (unsigned i = 0; i < kBytes; i += kPage) {
    wrong += big[i] != static_cast<unsigned char>(threadIdx.x + i / kPage);
  }
  out[threadIdx.x] = wrong;
}

// One warp loads an A tile from `offset` elements into an aligned shared array with `ldm`,
// and stores a float accumulator with `ldm_out` at `out + out_offset`.
__global__ void wmma_access(int offset, unsigned ldm, float* out, int out_offset,
                            unsigned ldm_out) {
  __shared__ __align__(32) __half tile[16 * 32 + 64];
  for (unsigned i = threadIdx.x; i < sizeof(tile) / sizeof(tile[0]); i += blockDim.x)
    tile[i] = __float2half(1.0f);
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(a, tile + offset, ldm);
  wmma::load_matrix_sync(b, tile, 16);
  wmma::mma_sync(acc, a, b, acc);
  wmma::store_matrix_sync(out + out_offset, acc, ldm_out, wmma::mem_row_major);
}

void expect_error(const char* name, const char* error, const char* needle) {
  if (error == nullptr) {
    std::printf("FAIL %s: launch succeeded, expected an error containing \"%s\"\n", name, needle);
    ++failures;
  } else if (std::strstr(error, needle) == nullptr) {
    std::printf("FAIL %s: error \"%s\" does not contain \"%s\"\n", name, error, needle);
    ++failures;
  } else {
    std::printf("ok %s: %s\n", name, error);
  }
}

void expect_success(const char* name, const char* error) {
  if (error != nullptr) {
    std::printf("FAIL %s: unexpected error: %s\n", name, error);
    ++failures;
  } else {
    std::printf("ok %s\n", name);
  }
}

void expect_runs(const char* name, int expected) {
  if (runs.exchange(0) != expected) {
    std::printf("FAIL %s: kernel ran a different number of times than %d\n", name, expected);
    ++failures;
  }
}

}  // namespace

int main() {
  // Configurations CUDA rejects: nothing may run.
  expect_success("block of 1024 threads", simt::launch(dim3(1), dim3(1024), 0, count_runs));
  expect_runs("block of 1024 threads", 1024);
  expect_error("block of 2048 threads", simt::launch(dim3(1), dim3(2048), 0, count_runs),
               "2048 threads");
  expect_runs("block of 2048 threads", 0);
  expect_error("block.z of 65", simt::launch(dim3(1), dim3(1, 1, 65), 0, count_runs), "block");
  expect_error("empty grid", simt::launch(dim3(0), dim3(32), 0, count_runs), "zero dimension");
  expect_runs("bad configurations", 0);

  int out[64] = {};
  expect_error("100 KiB dynamic smem without opt-in",
               simt::launch(dim3(2), dim3(32), 100 * 1024, uses_dynamic_shared, out),
               "set_max_dynamic_shared");
  expect_runs("100 KiB dynamic smem without opt-in", 0);
  expect_success("set_max_dynamic_shared(100 KiB)",
                 simt::set_max_dynamic_shared(uses_dynamic_shared, 100 * 1024));
  expect_success("100 KiB dynamic smem after opt-in",
                 simt::launch(dim3(2), dim3(32), 100 * 1024, uses_dynamic_shared, out));
  expect_runs("100 KiB dynamic smem after opt-in", 64);
  if (out[0] != 0xFF) {
    std::printf("FAIL dynamic shared poison: last byte %d, expected 255\n", out[0]);
    ++failures;
  }
  expect_error("set_max_dynamic_shared above 166912",
               simt::set_max_dynamic_shared(uses_dynamic_shared, 166912 + 1), "166912");
  expect_error("dynamic smem above 166912",
               simt::launch(dim3(1), dim3(32), 166912 + 16, uses_dynamic_shared, out), "166912");

  int wrong_pages[32];
  std::fill(wrong_pages, wrong_pages + 32, -1);
  expect_success("2 MiB of locals per thread",
                 simt::launch(dim3(2), dim3(32), 0, big_locals, wrong_pages));
  for (int i = 0; i < 32; ++i) {
    if (wrong_pages[i] != 0) {
      std::printf("FAIL 2 MiB of locals per thread: thread %d found %d wrong pages\n", i,
                  wrong_pages[i]);
      ++failures;
      break;
    }
  }

  // __syncthreads reached by some threads of a block only.
  expect_success("all threads sync", simt::launch(dim3(3), dim3(64), 0, skips_sync, -1, out));
  expect_error("thread 5 skips __syncthreads",
               simt::launch(dim3(3), dim3(64), 0, skips_sync, 5, out), "__syncthreads mismatch");

#if !SIMT_OS_THREADS
  // A lane that skips a warp-wide call: a deadlock, reported, and the next launch runs.
  int synced[128] = {};
  expect_error("lane 3 skips __syncwarp",
               simt::launch(dim3(2), dim3(64), 0, skips_syncwarp, 3, synced),
               "deadlock in block (1,0,0): no thread can go on; 31 wait in __syncwarp");
  expect_success("all lanes __syncwarp",
                 simt::launch(dim3(2), dim3(64), 0, skips_syncwarp, -1, synced));
  for (int i = 0; i < 128; ++i) {
    if (synced[i] != 1) {
      std::printf("FAIL all lanes __syncwarp: thread %d of the grid did not finish\n", i);
      ++failures;
      break;
    }
  }
#endif

  // WMMA: aligned pointers and ldm multiples of 16 bytes pass; anything else is a fault.
  alignas(32) static float acc_out[16 * 40 + 64];
  expect_success("wmma aligned",
                 simt::launch(dim3(1), dim3(64), 0, wmma_access, 0, 32u, acc_out, 0, 20u));
  if (acc_out[0] != 16.0f) {
    std::printf("FAIL wmma aligned: D[0][0] = %g, expected 16\n", acc_out[0]);
    ++failures;
  }
  expect_error("wmma misaligned A pointer",
               simt::launch(dim3(1), dim3(32), 0, wmma_access, 8, 32u, acc_out, 0, 16u),
               "is not 256-bit (32-byte) aligned");
  expect_error("wmma bad ldm for A",
               simt::launch(dim3(1), dim3(32), 0, wmma_access, 0, 20u, acc_out, 0, 16u),
               "ldm 20 is not a multiple of 8 elements");
  expect_error("wmma misaligned D pointer",
               simt::launch(dim3(1), dim3(32), 0, wmma_access, 0, 32u, acc_out, 4, 16u),
               "store_matrix_sync: pointer");
  expect_error("wmma bad ldm for D",
               simt::launch(dim3(1), dim3(32), 0, wmma_access, 0, 32u, acc_out, 0, 18u),
               "ldm 18 is not a multiple of 4 elements");
  expect_error("wmma in a partial warp",
               simt::launch(dim3(1), dim3(48), 0, wmma_access, 0, 32u, acc_out, 0, 16u),
               "partial warp of 16 lanes");

  // The last error is the last failed call's, and reading it clears it.
  const char* last = simt::last_launch_error();
  expect_error("last_launch_error", last, "partial warp");
  expect_success("last_launch_error cleared", simt::last_launch_error());

  if (failures != 0) {
    std::printf("FAIL: %d checks failed\n", failures);
    return 1;
  }
  std::printf("OK: all misuse detected\n");
  return 0;
}
