// The kernel-facing macros of csrc/cuda/compat.cuh on the shim: FI_LAUNCH, FI_DYNAMIC_SHARED,
// FI_SET_MAX_DYNAMIC_SHARED and fi_last_launch_error. Checks that blocks run in order (x
// fastest, then y, then z), that threadIdx/blockIdx/blockDim/gridDim are right for 3-D grids
// and blocks, that dynamic shared memory is 128-byte aligned and 0xFF-poisoned before every
// block, that __syncwarp orders a warp's lanes (partial last warp included), that warp
// shuffles, votes, atomicAdd and min/max give CUDA's results, and that the last error is cleared
// once read. Two host threads launching at once are serialized.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "cuda/compat.cuh"

namespace fused_inception::FI_KERNEL_NS {

struct Seen {
  unsigned thread[3], block[3], block_dim[3], grid_dim[3];
  unsigned errors;  // bit 0: smem misaligned, 1: smem not poisoned, 2: smem read wrong,
                    // 3: warp neighbour wrong
};

// One entry of `seen` per thread; thread 0 of each block appends the block's linear index to
// `order` (blocks run one after another, so no two threads touch order_count at once).
__global__ void record(Seen* seen, unsigned* order, unsigned* order_count) {
  FI_DYNAMIC_SHARED(float, buf);  // one float per thread
  __shared__ unsigned lane_value[1024];
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const unsigned b = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
  Seen& s = seen[b * threads + t];
  s = Seen{{threadIdx.x, threadIdx.y, threadIdx.z},
           {blockIdx.x, blockIdx.y, blockIdx.z},
           {blockDim.x, blockDim.y, blockDim.z},
           {gridDim.x, gridDim.y, gridDim.z},
           0};
  if (reinterpret_cast<std::uintptr_t>(buf) % 128 != 0) s.errors |= 1;
  std::uint32_t bits;
  std::memcpy(&bits, &buf[t], sizeof bits);
  if (bits != 0xFFFFFFFFu) s.errors |= 2;
  __syncthreads();  // everyone checked the poison before anyone writes
  buf[t] = static_cast<float>(b * 1000 + t);
  lane_value[t] = b * 1000 + t;
  __syncwarp();
  const unsigned warp_first = t / 32 * 32;
  const unsigned warp_size = threads - warp_first < 32 ? threads - warp_first : 32;
  const unsigned neighbour = warp_first + (t - warp_first + 1) % warp_size;
  if (lane_value[neighbour] != b * 1000 + neighbour) s.errors |= 8;
  __syncthreads();
  if (buf[(t + 1) % threads] != static_cast<float>(b * 1000 + (t + 1) % threads)) s.errors |= 4;
  if (t == 0) order[(*order_count)++] = b;
}

// Warp built-ins: each warp of 32 lanes reduces, scans and votes over its lanes' values, and
// every thread adds its value to *total with atomicAdd. results[t] gets a bit per failed check.
__global__ void warp_ops(const int* values, unsigned* results, int* total) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
  const int v = values[t];
  int warp_sum = 0, prefix = 0;
  for (unsigned i = 0; i < 32; ++i) {
    warp_sum += values[t - lane + i];
    if (i <= lane) prefix += values[t - lane + i];
  }
  unsigned failed = 0;
  int sum = v;
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (sum != warp_sum) failed |= 1;
  int down = v;
  for (unsigned offset = 16; offset > 0; offset /= 2)
    down += __shfl_down_sync(0xffffffffu, down, offset);
  if (lane == 0 && down != warp_sum) failed |= 2;
  int scan = v;
  for (unsigned offset = 1; offset < 32; offset *= 2) {
    const int up = __shfl_up_sync(0xffffffffu, scan, offset);
    if (lane >= offset) scan += up;
  }
  if (scan != prefix) failed |= 4;
  if (__shfl_sync(0xffffffffu, v, 3) != values[t - lane + 3]) failed |= 8;
  if (__ballot_sync(0xffffffffu, lane % 2) != 0xAAAAAAAAu) failed |= 16;
  if (__any_sync(0xffffffffu, lane == 7) != 1 || __all_sync(0xffffffffu, lane < 31) != 0)
    failed |= 32;
  if (max(min(v, 5), -5) != (v > 5 ? 5 : v < -5 ? -5 : v) || max(1.0f, -2.0f) != 1.0f) failed |= 64;
  atomicAdd(total, v);
  results[t] = failed;
}

const char* run_warp_ops(const int* values, unsigned* results, int* total, int blocks,
                         void* stream) {
  FI_LAUNCH(warp_ops, dim3(blocks), dim3(64), 0, stream, values, results, total);
  return fi_last_launch_error();
}

const char* run_record(dim3 grid, dim3 block, std::size_t smem, Seen* seen, unsigned* order,
                       unsigned* order_count, void* stream) {
  FI_SET_MAX_DYNAMIC_SHARED(record, 64 * 1024);
  FI_LAUNCH(record, grid, block, smem, stream, seen, order, order_count);
  return fi_last_launch_error();
}

// The same kernel through fi_opt_in_dynamic_shared and fi_launch (how csrc/cuda launches).
const char* run_record_checked(dim3 grid, dim3 block, std::size_t smem, Seen* seen, unsigned* order,
                               unsigned* order_count, void* stream) {
  if (const char* error = fi_opt_in_dynamic_shared(record, 64 * 1024)) return error;
  return fi_launch(record, grid, block, smem, stream, seen, order, order_count);
}

}  // namespace fused_inception::FI_KERNEL_NS

namespace fi = fused_inception::emulated;

// fi_launch returns its own launch's error and leaves an earlier one alone; the opt-in is set
// once per kernel and checked against the device's limit.
static int check_launch_hygiene() {
  int failures = 0;
  std::vector<fi::Seen> seen(64);
  std::vector<unsigned> order(4);
  unsigned count = 0;
  // An earlier launch's error, left unread (as another library's could be).
  static_cast<void>(simt::launch(dim3(1), dim3(2048), 64, fi::record, nullptr, nullptr, &count));
  const unsigned calls_before = simt::detail::set_max_dynamic_shared_calls.load();
  for (int i = 0; i < 3; ++i) {
    count = 0;
    const char* error = fi::run_record_checked(dim3(1), dim3(64), 64 * 1024, seen.data(),
                                               order.data(), &count, nullptr);
    if (error != nullptr || count != 1) {
      std::printf("FAIL: checked launch %d blamed: %s\n", i, error ? error : "(count)");
      ++failures;
    }
  }
  const unsigned calls = simt::detail::set_max_dynamic_shared_calls.load() - calls_before;
  if (calls != 1) {
    std::printf("FAIL: the opt-in was set %u times for 3 launches of one kernel\n", calls);
    ++failures;
  }
  const char* left = fi_last_launch_error();
  if (left == nullptr || std::strstr(left, "2048 threads") == nullptr) {
    std::printf("FAIL: the earlier launch's error was consumed by fi_launch\n");
    ++failures;
  }
  // A failing fi_launch reports its own error and leaves none behind.
  const char* bad =
      fi::run_record_checked(dim3(1), dim3(2048), 0, seen.data(), order.data(), &count, nullptr);
  if (bad == nullptr || std::strstr(bad, "2048 threads") == nullptr ||
      fi_last_launch_error() != nullptr) {
    std::printf("FAIL: a bad fi_launch gave %s or left its error\n", bad ? bad : "no error");
    ++failures;
  }
  const char* too_big = fi_opt_in_dynamic_shared(fi::record, 200000);
  if (too_big == nullptr || std::strstr(too_big, "needs 200000 bytes") == nullptr ||
      std::strstr(too_big, "allows 166912") == nullptr) {
    std::printf("FAIL: opt-in above the limit gave %s\n", too_big ? too_big : "no error");
    ++failures;
  }
  return failures;
}  // FI_KERNEL_NS must be `emulated` here

int main() {
  int failures = 0;
  const dim3 grid(3, 2, 2), block(5, 3, 3);  // 45 threads: a full warp and a partial one
  const unsigned blocks = 12, threads = 45;
  for (const std::size_t smem : {std::size_t{threads * sizeof(float)}, std::size_t{64 * 1024}}) {
    std::vector<fi::Seen> seen(blocks * threads);
    std::vector<unsigned> order(blocks, ~0u);
    unsigned order_count = 0;
    const char* error =
        fi::run_record(grid, block, smem, seen.data(), order.data(), &order_count, nullptr);
    if (error != nullptr) {
      std::printf("FAIL: launch with %zu bytes of dynamic smem: %s\n", smem, error);
      return 1;
    }
    for (unsigned b = 0; b < blocks; ++b) {
      if (order[b] != b) {
        std::printf("FAIL: block %u ran as number %u\n", order[b], b);
        ++failures;
      }
      const unsigned bi[3] = {b % 3, b / 3 % 2, b / 6};
      for (unsigned t = 0; t < threads; ++t) {
        const fi::Seen& s = seen[b * threads + t];
        const unsigned ti[3] = {t % 5, t / 5 % 3, t / 15};
        const unsigned bd[3] = {5, 3, 3}, gd[3] = {3, 2, 2};
        const bool ok = std::memcmp(s.thread, ti, sizeof ti) == 0 &&
                        std::memcmp(s.block, bi, sizeof bi) == 0 &&
                        std::memcmp(s.block_dim, bd, sizeof bd) == 0 &&
                        std::memcmp(s.grid_dim, gd, sizeof gd) == 0 && s.errors == 0;
        if (!ok && failures++ < 5) {
          std::printf(
              "FAIL: block %u thread %u saw threadIdx (%u,%u,%u) blockIdx (%u,%u,%u) blockDim "
              "(%u,%u,%u) gridDim (%u,%u,%u) errors %#x\n",
              b, t, s.thread[0], s.thread[1], s.thread[2], s.block[0], s.block[1], s.block[2],
              s.block_dim[0], s.block_dim[1], s.block_dim[2], s.grid_dim[0], s.grid_dim[1],
              s.grid_dim[2], s.errors);
        }
      }
    }
  }
  {
    // Two host threads launching at once: launches are serialized, so the kernel's static
    // __shared__ array is never used by both at a time (ThreadSanitizer would name the race).
    std::vector<fi::Seen> seen[2] = {std::vector<fi::Seen>(blocks * threads),
                                     std::vector<fi::Seen>(blocks * threads)};
    std::vector<unsigned> order[2] = {std::vector<unsigned>(blocks), std::vector<unsigned>(blocks)};
    unsigned count[2] = {0, 0};
    const char* error[2] = {nullptr, nullptr};
    auto launch = [&](int i) {
      error[i] = fi::run_record(grid, block, threads * sizeof(float), seen[i].data(),
                                order[i].data(), &count[i], nullptr);
    };
    std::thread other(launch, 1);
    launch(0);
    other.join();
    for (int i = 0; i < 2; ++i) {
      unsigned errors = 0;
      for (const fi::Seen& s : seen[i]) errors |= s.errors;
      if (error[i] != nullptr || count[i] != blocks || errors != 0) {
        std::printf("FAIL: concurrent launch %d: error %s, %u blocks, error bits %#x\n", i,
                    error[i] ? error[i] : "none", count[i], errors);
        ++failures;
      }
    }
  }
  {
    constexpr int kBlocks = 2, kThreads = kBlocks * 64;
    std::vector<int> values(kThreads);
    int expected_total = 0;
    for (int i = 0; i < kThreads; ++i) expected_total += values[i] = (i * 37) % 23 - 11;
    std::vector<unsigned> results(kThreads, ~0u);
    int total = 0;
    const char* error = fi::run_warp_ops(values.data(), results.data(), &total, kBlocks, nullptr);
    if (error != nullptr) {
      std::printf("FAIL: warp_ops: %s\n", error);
      return 1;
    }
    for (int i = 0; i < kThreads; ++i) {
      if (results[i] != 0 && failures++ < 5)
        std::printf("FAIL: warp_ops thread %d: failed checks %#x\n", i, results[i]);
    }
    if (total != expected_total) {
      std::printf("FAIL: atomicAdd total %d, expected %d\n", total, expected_total);
      ++failures;
    }
  }
  if (fi_last_launch_error() != nullptr) {
    std::printf("FAIL: error left over from successful launches\n");
    ++failures;
  }
  // A bad launch through the macros: the error is reported once, then cleared.
  unsigned count = 0;
  const char* error = fi::run_record(dim3(1), dim3(2048), 0, nullptr, nullptr, &count, nullptr);
  if (error == nullptr || std::strstr(error, "2048 threads") == nullptr || count != 0) {
    std::printf("FAIL: 2048-thread launch gave %s\n", error ? error : "no error");
    ++failures;
  }
  if (fi_last_launch_error() != nullptr) {
    std::printf("FAIL: last error not cleared by reading it\n");
    ++failures;
  }
  failures += check_launch_hygiene();
  if (failures != 0) return 1;
  std::printf(
      "OK: launch hygiene, compat macros, block order, indices, dynamic shared memory, __syncwarp, "
      "warp "
      "built-ins\n");
  return 0;
}
