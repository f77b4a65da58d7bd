// cp.async on the shim (argv[1] picks the case):
//   groups:   each thread of 2 blocks of 32 copies 5 chunks of 16 bytes in 4 groups plus one
//             uncommitted copy, reads its destinations before and after each wait, and records
//             what it saw: a copy is invisible until a wait completes its group
//             (wait_group N completes all but the N most recent committed groups; an
//             uncommitted copy stays pending through wait_group 0; wait_all commits and
//             completes it); src_bytes = lane % 17 zero-fills the rest (src_bytes 0 passes an
//             address past the end of the source, which must not be read); the byte and copy
//             counters must be exact. Run plain, under ASan and under TSan.
//   fault-K:  misuse that must be a launch fault (K = 1..6), and K = 0, the correct twin.
//   overrun:  a copy to past the end of dynamic shared memory: ASan must report it at the wait,
//             where the copy happens.
//   race:     thread 1 reads thread 0's destination after a __syncthreads that thread 0 reaches
//             before waiting for its copy: TSan must report the race with the wait's write.
#include <cstdint>
#include <string>

#include "cuda/compat.cuh"
#include "cuda/ptx.cuh"
#include "ptx_check.h"

using ptx_check::fail;

namespace {

constexpr int kThreads = 32, kBlocks = 2, kChunks = 5;
constexpr unsigned char kOld = 0xAB;  // the destinations' contents before the copies
constexpr int kSteps = 6;             // observations per thread

// The source: byte i of chunk (block, thread, chunk) is a function of all four.
unsigned char source_byte(unsigned block, unsigned thread, unsigned chunk, unsigned i) {
  return static_cast<unsigned char>(block * 97 + thread * 13 + chunk * 7 + i + 1);
}

// seen[step][chunk]: 1 if chunk held the copied data, 0 if its old contents, 2 if neither.
__global__ void groups(const unsigned char* src, const unsigned char* src_end,
                       unsigned char* seen) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const unsigned t = threadIdx.x;
  const unsigned slot = blockIdx.x * kThreads + t;
  unsigned char* dst = smem + t * kChunks * 16;
  const unsigned char* mine = src + slot * kChunks * 16;
  const int partial = static_cast<int>(t % 17);
  for (int i = 0; i < kChunks * 16; ++i) dst[i] = kOld;
  auto observe = [&](int step) {
    for (int c = 0; c < kChunks; ++c) {
      const int valid = c == 1 ? partial : 16;
      bool is_old = true, is_new = true;
      for (int i = 0; i < 16; ++i) {
        const unsigned char want = i < valid ? mine[c * 16 + i] : 0;
        is_old = is_old && dst[c * 16 + i] == kOld;
        is_new = is_new && dst[c * 16 + i] == want;
      }
      seen[(slot * kSteps + step) * kChunks + c] = is_new ? 1 : is_old ? 0 : 2;
    }
  };
  fi::ptx::cp_async_16(dst, mine, 16);
  fi::ptx::cp_async_commit();
  fi::ptx::cp_async_16(dst + 16, partial == 0 ? src_end : mine + 16, partial);
  fi::ptx::cp_async_commit();
  fi::ptx::cp_async_16(dst + 32, mine + 32, 16);
  fi::ptx::cp_async_commit();
  observe(0);  // nothing visible
  fi::ptx::cp_async_wait<2>();
  observe(1);  // chunk 0
  fi::ptx::cp_async_wait<1>();
  observe(2);  // chunks 0, 1
  fi::ptx::cp_async_16(dst + 48, mine + 48, 16);
  fi::ptx::cp_async_wait<0>();
  observe(3);  // chunks 0-2: chunk 3 is not committed
  fi::ptx::cp_async_commit();
  fi::ptx::cp_async_wait<0>();
  observe(4);  // chunks 0-3
  fi::ptx::cp_async_16(dst + 64, mine + 64, 16);
  fi::ptx::cp_async_wait_all();
  observe(5);  // all
  __syncthreads();
}

void check_groups() {
  auto src = ptx_check::buffer<unsigned char>(kBlocks * kThreads * kChunks * 16);
  auto seen = ptx_check::buffer<unsigned char>(kBlocks * kThreads * kSteps * kChunks);
  for (unsigned b = 0; b < kBlocks; ++b)
    for (unsigned t = 0; t < kThreads; ++t)
      for (unsigned c = 0; c < kChunks; ++c)
        for (unsigned i = 0; i < 16; ++i)
          src[((b * kThreads + t) * kChunks + c) * 16 + i] = source_byte(b, t, c, i);
  const unsigned char* src_end = src.get() + kBlocks * kThreads * kChunks * 16;
  // Each block's half of the source is a region (the copies of block b read only its half).
  const std::size_t half = kThreads * kChunks * 16;
  if (simt::count_regions({{src.get(), half}, {src.get() + half, half}}) != nullptr) {
    fail("count_regions refused two ranges");
  }
  ptx_check::expect_ok(
      "groups", FI_LAUNCH(groups, dim3(kBlocks), dim3(kThreads), kThreads * kChunks * 16, nullptr,
                          src.get(), src_end, seen.get()));
  const simt::LaunchStats stats = simt::last_launch_stats();
  // Chunks visible after each step, in order.
  const int visible[kSteps] = {0, 1, 2, 3, 4, 5};
  unsigned long long bytes = 0, block_bytes[kBlocks] = {0, 0};
  for (int slot = 0; slot < kBlocks * kThreads; ++slot) {
    bytes += 4 * 16 + slot % kThreads % 17;
    block_bytes[slot / kThreads] += 4 * 16 + slot % kThreads % 17;
    for (int step = 0; step < kSteps; ++step) {
      for (int c = 0; c < kChunks; ++c) {
        const int got = seen[(slot * kSteps + step) * kChunks + c];
        const int expected = c < visible[step] ? 1 : 0;
        if (got != expected) {
          fail("thread %d after step %d: chunk %d %s, expected %s", slot, step, c,
               got == 1   ? "holds the copy"
               : got == 0 ? "holds its old contents"
                          : "holds neither",
               expected ? "the copy" : "its old contents");
        }
      }
    }
  }
  std::printf("stats cp.async copies %llu bytes %llu\n",
              static_cast<unsigned long long>(stats.cp_async_copies),
              static_cast<unsigned long long>(stats.cp_async_bytes));
  if (stats.cp_async_bytes != bytes || stats.cp_async_copies != kBlocks * kThreads * kChunks) {
    fail("counters: %llu copies of %llu bytes, expected %d of %llu",
         static_cast<unsigned long long>(stats.cp_async_copies),
         static_cast<unsigned long long>(stats.cp_async_bytes), kBlocks * kThreads * kChunks,
         bytes);
  }
  for (int b = 0; b < kBlocks; ++b) {
    if (stats.region_bytes[b] != block_bytes[b]) {
      fail("region %d: %llu bytes, expected %llu", b,
           static_cast<unsigned long long>(stats.region_bytes[b]), block_bytes[b]);
    }
  }
  if (stats.blocks != kBlocks || stats.threads_per_block != kThreads ||
      stats.dynamic_shared_bytes != kThreads * kChunks * 16) {
    fail("launch configuration in the stats: %llu blocks of %llu threads, %llu shared bytes",
         static_cast<unsigned long long>(stats.blocks),
         static_cast<unsigned long long>(stats.threads_per_block),
         static_cast<unsigned long long>(stats.dynamic_shared_bytes));
  }
  // The regions belong to that launch only: the next one counts none.
  ptx_check::expect_ok("groups again",
                       FI_LAUNCH(groups, dim3(kBlocks), dim3(kThreads), kThreads * kChunks * 16,
                                 nullptr, src.get(), src_end, seen.get()));
  const simt::LaunchStats again = simt::last_launch_stats();
  if (again.cp_async_bytes != bytes || again.region_bytes[0] != 0 || again.region_bytes[1] != 0) {
    fail("a later launch without regions: %llu bytes, regions %llu and %llu",
         static_cast<unsigned long long>(again.cp_async_bytes),
         static_cast<unsigned long long>(again.region_bytes[0]),
         static_cast<unsigned long long>(again.region_bytes[1]));
  }
}

// One misuse per case (0: none); thread 0 only.
__global__ void misuse(int which, const unsigned char* src) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  if (threadIdx.x != 0) return;
  const bool misaligned_dst = which == 1, misaligned_src = which == 2;
  const int bytes = which == 3 ? 17 : which == 4 ? -1 : 16;
  fi::ptx::cp_async_16(smem + (misaligned_dst ? 8 : 0), src + (misaligned_src ? 4 : 0), bytes);
  if (which != 6) fi::ptx::cp_async_commit();
  if (which != 5 && which != 6) fi::ptx::cp_async_wait<0>();
}

void check_fault(int which) {
  static const char* const expected[] = {
      nullptr,
      "cp.async.cg.shared.global: shared address",
      "cp.async.cg.shared.global: global address",
      "cp.async.cg.shared.global: src_bytes 17 is outside 0..16",
      "cp.async.cg.shared.global: src_bytes -1 is outside 0..16",
      "cp.async group never waited: 1 copies still pending at the end of the block (1 committed "
      "groups, 0 uncommitted copies)",
      "cp.async group never waited: 1 copies still pending at the end of the block (0 committed "
      "groups, 1 uncommitted copies)"};
  auto src = ptx_check::buffer<unsigned char>(128);
  const std::string name = "fault-" + std::to_string(which);
  const char* error = FI_LAUNCH(misuse, dim3(1), dim3(32), 64, nullptr, which, src.get());
  if (which == 0) {
    ptx_check::expect_ok(name.c_str(), error);
  } else {
    ptx_check::expect_error(name.c_str(), error, expected[which]);
  }
}

// A copy of 16 bytes to the last 16 bytes of dynamic shared memory (in range) or past its end.
__global__ void overrun(const unsigned char* src, unsigned dst_offset) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  fi::ptx::cp_async_16(smem + dst_offset, src, 16);
  fi::ptx::cp_async_wait_all();
}

// Thread 0 copies into shared memory; thread 1 reads it after a barrier. With wait_first the
// copy completes before the barrier (correct); otherwise thread 0 waits after it, while thread 1
// reads.
__global__ void handoff(const unsigned char* src, unsigned char* out, bool wait_first) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  if (threadIdx.x == 0) {
    fi::ptx::cp_async_16(smem, src, 16);
    fi::ptx::cp_async_commit();
    if (wait_first) fi::ptx::cp_async_wait<0>();
  }
  __syncthreads();
  if (threadIdx.x == 0 && !wait_first) fi::ptx::cp_async_wait<0>();
  if (threadIdx.x == 1) out[0] = smem[3];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  auto src = ptx_check::buffer<unsigned char>(128);
  auto out = ptx_check::buffer<unsigned char>(128);
  for (int i = 0; i < 128; ++i) src[i] = static_cast<unsigned char>(i + 1);
  if (mode == "groups") {
    check_groups();
    return ptx_check::finish("OK: cp.async groups, visibility, zero-fill and counters");
  }
  if (mode.rfind("fault-", 0) == 0) {
    check_fault(std::stoi(mode.substr(6)));
    return ptx_check::finish("OK: cp.async fault case checked");
  }
  if (mode == "overrun" || mode == "in-range") {
    ptx_check::expect_ok(mode.c_str(), FI_LAUNCH(overrun, dim3(1), dim3(1), 64, nullptr, src.get(),
                                                 mode == "overrun" ? 64u : 48u));
    return ptx_check::finish("OK: cp.async copy completed");
  }
  if (mode == "race" || mode == "handoff") {
    ptx_check::expect_ok(mode.c_str(), FI_LAUNCH(handoff, dim3(1), dim3(2), 64, nullptr, src.get(),
                                                 out.get(), mode == "handoff"));
    if (mode == "handoff" && out[0] != src[3])
      fail("thread 1 read %d, expected %d", out[0], src[3]);
    return ptx_check::finish("OK: cp.async copy completed");
  }
  std::printf("usage: %s groups|fault-K|overrun|in-range|race|handoff\n", argv[0]);
  return 2;
}
