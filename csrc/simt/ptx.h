// sm_80 PTX instructions emulated on the CPU SIMT shim (included by simt/simt.h; kernels call
// them through csrc/cuda/ptx.cuh, which maps them to inline PTX under nvcc).
//
//   mma_m16n8k16<T>  mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32
//   ldmatrix<N, T>   ldmatrix.sync.aligned.m8n8.x{1,2,4}{,.trans}.shared.b16
//   cp_async_16      cp.async.cg.shared.global [dst], [src], 16, src_bytes
//   cp_async_commit / cp_async_wait(n) / cp_async_wait_all
//   lds32/sts32, lds128/sts128: 4- and 16-byte shared accesses, counted for bank conflicts
//
// Warp-collective operations (mma, ldmatrix, the counted shared accesses) meet in
// warp_collective: every lane publishes its operands, and the last lane to arrive executes the
// instruction for the whole warp while the others wait. A partial warp, lanes that meet in
// different operations, and a lane that waits at __syncthreads or the end of the block while
// the rest of its warp waits for it are faults (launch() returns the message).
//
// Fragment layouts are those of the PTX ISA (section "Matrix Fragments for mma.m16n8k16 with
// floating point type", and "Warp-level matrix load instruction: ldmatrix"), with
// group = lane / 4 and t = lane % 4, and a 32-bit register holding two 16-bit elements, the
// lower-indexed one in the low half.
//
// Bank model (CUDA C++ Programming Guide, "Shared Memory" of compute capability 5.x, which 8.x
// and 9.0 share): 32 banks of 4-byte words, word w in bank w % 32; within one request, threads
// that access the same word do not conflict (broadcast), and distinct words in the same bank
// are serialized. A warp's request is split into phases that the hardware serves separately:
// a 32-bit access is one phase of 32 lanes; a 128-bit access four phases of 8 lanes (quarter
// warps); an ldmatrix one phase per 8x8 matrix (its 8 row addresses of 16 bytes). The
// quarter-warp and per-matrix phases are not in the Programming Guide; they are the model behind
// Nsight Compute's shared-memory wavefront counts. A phase's degree is the largest number of
// distinct words addressed in one bank; it takes that many wavefronts (1 when conflict-free).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <type_traits>
#include <vector>

#include "simt/simt.h"

namespace simt::ptx {

namespace detail {

using ::simt::detail::Launch;
using ::simt::detail::WarpCollective;

inline std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// Runs a warp-collective operation named `name` (one name per operation and shape, so lanes in
// different operations never share operands). Each lane passes its operands; the last lane to
// arrive calls execute(lanes), lanes[l] pointing to lane l's operands, while the others sleep,
// so every lane's operands stay alive and every lane sees the results written into them (the
// mutex orders the accesses for ThreadSanitizer). Returns false after a fault.
// A lane that leaves without the operation completing (the launch stopped, or it found a lane
// waiting at the block barrier) withdraws its operands first, under the mutex: w.present then
// only ever holds lanes that wait here, whose operands are alive. (Leaving them published let a
// lane arriving late, which had read `stopped` as false just before, complete the warp and
// execute on a returned lane's dead stack frame: the rare SIGSEGV of the lane_at_syncthreads
// and lane_leaves tests.)
template <typename Operands, typename Execute>
bool warp_collective(const char* name, const Operands& mine, Execute execute) {
  Launch* l = ::simt::detail::current;
  if (l == nullptr) {
    report_fault(std::string(name) + " called outside a kernel");
    return false;
  }
  if (l->stopped.load(std::memory_order_relaxed)) return false;
  if (warp_lanes() != 32) {
    report_fault(std::string(name) + " called by a partial warp of " +
                 std::to_string(warp_lanes()) + " lanes (all 32 lanes of a warp must call it)");
    return false;
  }
  WarpCollective& w = *l->warp_collectives[warp_id()];
  const unsigned lane = lane_id();
  std::unique_lock<std::mutex> lock(w.mutex);
  // Read again under the mutex: the fault that stopped the launch may have come after the check
  // above, and lanes that saw it have left (withdrawn, see above).
  if (l->stopped.load()) return false;
  w.operands[lane] = &mine;
  w.names[lane] = name;
  w.present |= 1u << lane;
  if (w.present == 0xffffffffu) {
    bool same = true;
    for (unsigned i = 0; i < 32 && same; ++i) {
      if (std::strcmp(w.names[i], name) != 0) {
        report_fault(std::string(name) + ": lane " + std::to_string(i) + " of warp " +
                     std::to_string(warp_id()) + " called " + w.names[i] +
                     " at the same time (all 32 lanes must make the same call)");
        same = false;
      }
    }
    if (same) {
      std::array<const Operands*, 32> lanes;
      for (unsigned i = 0; i < 32; ++i) lanes[i] = static_cast<const Operands*>(w.operands[i]);
      execute(lanes);
    }
    w.completed_ok = same;
    w.present = 0;
    ++w.generation;
    w.wake.notify_all();
    return same;
  }
  const std::uint64_t generation = w.generation;
  const unsigned first = warp_id() * warpSize;
  unsigned absent_lane = 32;
  // seq_cst with arrive_at_block_barrier in simt.h: a lane that parks at the block barrier
  // either sees this count and wakes us, or we see its flag here.
  w.waiting.fetch_add(1);
  ::simt::detail::wait(
      w.wake, lock,
      [&] {
        if (w.generation != generation || l->stopped.load()) return true;
        for (unsigned i = 0; i < 32; ++i) {
          if ((w.present >> i & 1u) == 0 && l->at_block_barrier[first + i].load() == 0)
            return false;
        }
        for (absent_lane = 0; w.present >> absent_lane & 1u; ++absent_lane) {
        }
        return true;
      },
      name);
  w.waiting.fetch_sub(1);
  if (w.generation != generation) return w.completed_ok;
  // Not completed: withdraw before this frame (and `mine`) can go away.
  w.present &= ~(1u << lane);
  w.operands[lane] = nullptr;
  w.names[lane] = nullptr;
  if (absent_lane < 32) {
    report_fault(std::string(name) + ": lane " + std::to_string(absent_lane) + " of warp " +
                 std::to_string(warp_id()) +
                 " waits at __syncthreads or the end of the block instead (all 32 lanes of a "
                 "warp must call it)");
    lock.unlock();
    // Stops the launch; lanes of every warp that wait in a collective must see it.
    l->stopped.store(true);
    for (auto& warp : l->warp_collectives) {
      std::lock_guard<std::mutex> wake_lock(warp->mutex);
      warp->wake.notify_all();
    }
  }
  return false;
}

// Bank-conflict degree of one phase: the largest number of distinct 4-byte words that its
// accesses (`bytes` bytes from each address) touch in one of the 32 banks.
inline unsigned bank_degree(const std::uintptr_t* addresses, unsigned count, unsigned bytes) {
  std::array<std::vector<std::uintptr_t>, 32> words_in_bank;
  unsigned degree = 0;
  for (unsigned i = 0; i < count; ++i) {
    for (std::uintptr_t word = addresses[i] / 4; word < (addresses[i] + bytes) / 4; ++word) {
      auto& bank = words_in_bank[word % 32];
      if (std::find(bank.begin(), bank.end(), word) == bank.end()) bank.push_back(word);
      degree = std::max<unsigned>(degree, bank.size());
    }
  }
  return degree;
}

// Adds one warp-wide access, split into phases of `phase_lanes` addresses of `bytes` each.
inline void count_shared_access(SharedAccessStats& stats, const std::uintptr_t* addresses,
                                unsigned count, unsigned phase_lanes, unsigned bytes) {
  ++stats.instructions;
  for (unsigned first = 0; first < count; first += phase_lanes) {
    const unsigned degree = bank_degree(addresses + first, phase_lanes, bytes);
    ++stats.phases;
    stats.wavefronts += degree;
    stats.max_degree = std::max(stats.max_degree, degree);
  }
}

inline bool aligned(const void* p, unsigned bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

inline float to_float(std::uint16_t bits, __half) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
inline float to_float(std::uint16_t bits, __nv_bfloat16) {
  return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bits)));
}
inline std::uint16_t half_of(std::uint32_t reg, unsigned high) {
  return static_cast<std::uint16_t>(reg >> (16 * high));
}

struct MmaOperands {
  float* d;
  const std::uint32_t* a;
  const std::uint32_t* b;
  const float* c;
};

}  // namespace detail

// D = A * B + C for a 16x16 A (row-major), 16x8 B (column-major) and 16x8 fp32 C/D, with
// T (__half or __nv_bfloat16) inputs; d may be c. Lane fragments (PTX ISA, mma.m16n8k16):
//   a[r] halves h: A[group + 8 * (r % 2)][2 * t + h + 8 * (r / 2)]
//   b[r] halves h: B[2 * t + h + 8 * r][group]
//   c[i], d[i]:    C[group + 8 * (i / 2)][2 * t + i % 2]
// Products of two 16-bit inputs are exact in fp32; they are added to C in k order in fp32.
template <typename T>
void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2],
                  const float (&c)[4]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "mma.m16n8k16 takes f16 or bf16 inputs");
  constexpr const char* name =
      std::is_same_v<T, __half> ? "mma.sync.m16n8k16.f32.f16" : "mma.sync.m16n8k16.f32.bf16";
  const detail::MmaOperands mine{d, a, b, c};
  const bool ok = detail::warp_collective(name, mine, [](const auto& lanes) {
    float A[16][16], B[16][8], C[16][8];
    for (unsigned lane = 0; lane < 32; ++lane) {
      const unsigned group = lane / 4, t = lane % 4;
      for (unsigned h = 0; h < 2; ++h) {
        for (unsigned r = 0; r < 4; ++r) {
          A[group + 8 * (r % 2)][2 * t + h + 8 * (r / 2)] =
              detail::to_float(detail::half_of(lanes[lane]->a[r], h), T{});
        }
        for (unsigned r = 0; r < 2; ++r) {
          B[2 * t + h + 8 * r][group] =
              detail::to_float(detail::half_of(lanes[lane]->b[r], h), T{});
        }
      }
      for (unsigned i = 0; i < 4; ++i) C[group + 8 * (i / 2)][2 * t + i % 2] = lanes[lane]->c[i];
    }
    for (unsigned lane = 0; lane < 32; ++lane) {
      const unsigned group = lane / 4, t = lane % 4;
      for (unsigned i = 0; i < 4; ++i) {
        const unsigned m = group + 8 * (i / 2), n = 2 * t + i % 2;
        float sum = C[m][n];
        for (unsigned k = 0; k < 16; ++k) sum += A[m][k] * B[k][n];
        lanes[lane]->d[i] = sum;
      }
    }
    ::simt::detail::thread_stats.mma_macs += 16 * 8 * 16;
  });
  if (!ok) {
    for (float& x : d) x = std::nanf("");
  }
}

// ldmatrix of N (1, 2, 4) 8x8 matrices of 16-bit elements: matrix i's rows are at the addresses
// of lanes 8i..8i+7 (16 bytes each, 16-byte aligned; other lanes' addresses are not used).
// Lane l receives in r[i] row l / 4, elements 2 * (l % 4) and 2 * (l % 4) + 1 of matrix i, or
// with Trans those of its transpose (column l / 4, rows 2 * (l % 4) and 2 * (l % 4) + 1).
template <int N, bool Trans>
void ldmatrix(std::uint32_t (&r)[N], const void* row_address) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  static constexpr const char* names[2][3] = {
      {"ldmatrix.m8n8.x1", "ldmatrix.m8n8.x2", "ldmatrix.m8n8.x4"},
      {"ldmatrix.m8n8.x1.trans", "ldmatrix.m8n8.x2.trans", "ldmatrix.m8n8.x4.trans"}};
  const char* name = names[Trans][N == 1 ? 0 : N == 2 ? 1 : 2];
  struct Operands {
    std::uint32_t* r;
    const void* row;
  };
  for (std::uint32_t& x : r) x = 0xFFFFFFFFu;  // the result of a faulting call
  const Operands mine{r, row_address};
  detail::warp_collective(name, mine, [&](const auto& lanes) {
    std::uintptr_t rows[8 * N];
    bool misaligned = false;
    for (unsigned i = 0; i < 8 * N; ++i) {
      rows[i] = reinterpret_cast<std::uintptr_t>(lanes[i]->row);
      if (!detail::aligned(lanes[i]->row, 16)) {
        report_fault(std::string(name) + ": lane " + std::to_string(i) + "'s row address " +
                     detail::hex(lanes[i]->row) + " is not 16-byte aligned");
        misaligned = true;
      }
    }
    if (misaligned) return;
    auto element = [&](unsigned matrix, unsigned row, unsigned col) {
      std::uint16_t v;
      std::memcpy(&v, reinterpret_cast<const std::byte*>(rows[8 * matrix + row]) + 2 * col, 2);
      return static_cast<std::uint32_t>(v);
    };
    for (unsigned lane = 0; lane < 32; ++lane) {
      for (unsigned i = 0; i < N; ++i) {
        const unsigned a = lane / 4, b = 2 * (lane % 4);
        lanes[lane]->r[i] = Trans ? element(i, b, a) | element(i, b + 1, a) << 16
                                  : element(i, a, b) | element(i, a, b + 1) << 16;
      }
    }
    detail::count_shared_access(::simt::detail::thread_stats.ldmatrix, rows, 8 * N, 8, 16);
  });
}

namespace detail {

// A counted warp-wide shared access of Bytes (4 or 16) per lane: checks the addresses, adds the
// access to `stats` in phases of 32 (4 bytes) or 8 (16 bytes) lanes. Each lane then moves its
// own bytes (after the collective), as the hardware's per-thread accesses do.
template <unsigned Bytes>
bool count_warp_access(const char* name, const void* address, bool store) {
  bool ok = true;
  const bool met = warp_collective(name, address, [&](const auto& lanes) {
    std::uintptr_t addresses[32];
    for (unsigned i = 0; i < 32; ++i) {
      addresses[i] = reinterpret_cast<std::uintptr_t>(*lanes[i]);
      if (addresses[i] % Bytes != 0) {
        report_fault(std::string(name) + ": lane " + std::to_string(i) + "'s address " +
                     hex(*lanes[i]) + " is not " + std::to_string(Bytes) + "-byte aligned");
        ok = false;
      }
    }
    auto& stats = store ? ::simt::detail::thread_stats.shared_stores
                        : ::simt::detail::thread_stats.shared_loads;
    if (ok) count_shared_access(stats, addresses, 32, Bytes == 16 ? 8 : 32, Bytes);
  });
  return met && aligned(address, Bytes);
}

}  // namespace detail

// Shared-memory loads and stores of 4 or 16 bytes per lane, made by all 32 lanes of a warp.
inline std::uint32_t lds32(const void* address) {
  std::uint32_t v = 0xFFFFFFFFu;
  if (detail::count_warp_access<4>("lds32", address, false)) std::memcpy(&v, address, 4);
  return v;
}
inline void sts32(void* address, std::uint32_t value) {
  if (detail::count_warp_access<4>("sts32", address, true)) std::memcpy(address, &value, 4);
}
inline uint4 lds128(const void* address) {
  uint4 v{0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
  if (detail::count_warp_access<16>("lds128", address, false)) std::memcpy(&v, address, 16);
  return v;
}
inline void sts128(void* address, uint4 value) {
  if (detail::count_warp_access<16>("sts128", address, true)) std::memcpy(address, &value, 16);
}

namespace detail {

// The calling thread's cp.async copies (simt.h keeps them with the rest of a CUDA thread's
// state): issued but not committed, and committed groups in order (oldest first). The copies
// are performed when a wait completes their group, so the destination keeps its old contents
// until then, for this thread and for the sanitizers.
using ::simt::detail::AsyncCopy;
using ::simt::detail::committed;
using ::simt::detail::uncommitted;

inline void complete(const std::vector<AsyncCopy>& group) {
  for (const AsyncCopy& copy : group) {
    if (copy.src_bytes > 0) std::memcpy(copy.dst, copy.src, copy.src_bytes);
    std::memset(static_cast<std::byte*>(copy.dst) + copy.src_bytes, 0, 16 - copy.src_bytes);
    ::simt::detail::thread_stats.cp_async_copies += 1;
    ::simt::detail::thread_stats.cp_async_bytes += copy.src_bytes;
    const auto* src = static_cast<const std::byte*>(copy.src);
    if (const ::simt::detail::Launch* launch = ::simt::detail::current) {
      for (std::size_t i = 0; i < launch->regions.size(); ++i) {
        if (src >= launch->regions[i].begin && src < launch->regions[i].end) {
          ::simt::detail::thread_stats.region_bytes[i] += copy.src_bytes;
          break;
        }
      }
    }
  }
}

}  // namespace detail

// Issues a 16-byte copy global -> shared: src_bytes (0..16) bytes read from gmem_src, the rest
// of the 16 destination bytes zero. Both addresses must be 16-byte aligned.
inline void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
  std::string bad;
  if (!detail::aligned(smem_dst, 16)) {
    bad = "shared address " + detail::hex(smem_dst) + " is not 16-byte aligned";
  } else if (!detail::aligned(gmem_src, 16)) {
    bad = "global address " + detail::hex(gmem_src) + " is not 16-byte aligned";
  } else if (src_bytes < 0 || src_bytes > 16) {
    bad = "src_bytes " + std::to_string(src_bytes) + " is outside 0..16";
  }
  if (!bad.empty()) {
    report_fault("cp.async.cg.shared.global: " + bad);
    return;
  }
  detail::uncommitted.push_back({smem_dst, gmem_src, src_bytes});
}

// Closes the calling thread's group of copies issued since the last commit (maybe empty).
inline void cp_async_commit() {
  detail::committed.push_back(std::move(detail::uncommitted));
  detail::uncommitted.clear();
}

// Completes all but the `pending` most recent committed groups of the calling thread.
inline void cp_async_wait(unsigned pending) {
  while (detail::committed.size() > pending) {
    detail::complete(detail::committed.front());
    detail::committed.pop_front();
  }
}

// cp.async.wait_all: commits the open group, then completes every group.
inline void cp_async_wait_all() {
  cp_async_commit();
  cp_async_wait(0);
}

}  // namespace simt::ptx

inline void simt::detail::check_block_end() {
  std::size_t copies = ptx::detail::uncommitted.size();
  for (const auto& group : ptx::detail::committed) copies += group.size();
  if (copies != 0) {
    report_fault("cp.async group never waited: " + std::to_string(copies) +
                 " copies still pending at the end of the block (" +
                 std::to_string(ptx::detail::committed.size()) + " committed groups, " +
                 std::to_string(ptx::detail::uncommitted.size()) + " uncommitted copies)");
  }
  ptx::detail::uncommitted.clear();
  ptx::detail::committed.clear();
}
