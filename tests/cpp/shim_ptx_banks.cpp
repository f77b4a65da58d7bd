// The shim's shared-memory counters and warp-collective faults (argv[1] picks the case):
//   banks:        one warp makes an ldmatrix.x4 over several tile layouts, and 32- and 128-bit
//                 stores and loads at several strides; for each, the program prints the byte
//                 offset every lane addressed ("layout ...") and what the counters recorded
//                 ("stats ..."). tests/test_shim_ptx.py derives the expected bank-conflict
//                 degrees from the offsets. Loaded data must match what was stored.
//   collective-K: misuse of warp-collective calls that must be a launch fault and must not hang
//                 (K = 1..6), and K = 0, the correct twin. In every case, a lane that returned
//                 from the collective must no longer be published in it (see check_withdrawn).
//   repeat-N:     cases 2 and 3 (a lane missing from the warp's mma) N times each, in one process:
//                 stress for the fault path, whose race used to crash one run in a few hundred.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "cuda/compat.cuh"
#include "cuda/ptx.cuh"
#include "ptx_check.h"

using ptx_check::fail;

namespace {

// Byte offset of lane L's ldmatrix.x4 row: lanes 0-15 give rows 0-15 of 16-byte chunk 0 of a
// 16-row tile, lanes 16-31 the same rows' chunk 1 (the A operand of an m16n8k16 mma). `pitch`
// is the row pitch in bytes; with `swizzle` chunk c of row r is stored at chunk
// c ^ ((r / 2) % 4), the XOR swizzle for 64-byte rows. pitch 0: each 8x8 matrix is stored as
// 128 contiguous bytes (lane L's row at 16 L).
unsigned ldmatrix_offset(unsigned lane, unsigned pitch, bool swizzle) {
  if (pitch == 0) return 16 * lane;
  const unsigned row = lane % 16, chunk = lane / 16;
  return row * pitch + 16 * (swizzle ? chunk ^ (row / 2 % 4) : chunk);
}

__global__ void ldmatrix_layout(unsigned pitch, bool swizzle, std::uint32_t* out) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const unsigned lane = threadIdx.x;
  std::uint32_t r[4];
  fi::ptx::ldmatrix_x4(r, smem + ldmatrix_offset(lane, pitch, swizzle));
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// Lane L stores and loads back Bytes bytes at L * stride (stride 0: every lane the same word).
template <unsigned Bytes>
__global__ void store_load(unsigned stride, std::uint32_t* out) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const unsigned lane = threadIdx.x;
  unsigned char* address = smem + lane * stride;
  if constexpr (Bytes == 4) {
    if (stride != 0 || lane == 0) *reinterpret_cast<std::uint32_t*>(address) = 0;
    __syncwarp();
    if (stride != 0) fi::ptx::sts32(address, 1000 + lane);
    __syncwarp();
    out[lane] = fi::ptx::lds32(address);
  } else {
    fi::ptx::sts128(address, uint4{lane, lane + 1, lane + 2, lane + 3});
    __syncwarp();
    const uint4 v = fi::ptx::lds128(address);
    out[lane] = v.x + v.y + v.z + v.w;
  }
}

void print_stats(const std::string& name, const simt::SharedAccessStats& s) {
  std::printf("stats %s %llu %llu %llu %u\n", name.c_str(),
              static_cast<unsigned long long>(s.instructions),
              static_cast<unsigned long long>(s.phases),
              static_cast<unsigned long long>(s.wavefronts), s.max_degree);
}

template <typename Offset>
void print_layout(const std::string& name, unsigned bytes, Offset offset) {
  std::printf("layout %s %u", name.c_str(), bytes);
  for (unsigned lane = 0; lane < 32; ++lane) std::printf(" %u", offset(lane));
  std::printf("\n");
}

constexpr std::size_t kShared = 8192;

// One warp stores and loads Bytes per lane at a stride (see store_load); the loads must return
// what was stored (stride 0: the word lane 0 wrote, as no lane stores through sts32).
template <unsigned Bytes>
void check_store_load(unsigned stride, std::uint32_t* out) {
  const std::string name =
      "shared" + std::to_string(8 * Bytes) + "_stride" + std::to_string(stride);
  auto kernel = store_load<Bytes>;
  ptx_check::expect_ok(name.c_str(),
                       FI_LAUNCH(kernel, dim3(1), dim3(32), kShared, nullptr, stride, out));
  const simt::LaunchStats stats = simt::last_launch_stats();
  for (unsigned lane = 0; lane < 32; ++lane) {
    const std::uint32_t expected = Bytes == 16 ? 4 * lane + 6 : stride == 0 ? 0 : 1000 + lane;
    if (out[lane] != expected) {
      fail("%s lane %u loaded %u, expected %u", name.c_str(), lane, out[lane], expected);
    }
  }
  print_layout(name, Bytes, [&](unsigned lane) { return lane * stride; });
  print_stats(name + "_store", stats.shared_stores);
  print_stats(name + "_load", stats.shared_loads);
}

void check_banks() {
  auto out = ptx_check::buffer<std::uint32_t>(128);
  struct Tile {
    const char* name;
    unsigned pitch;
    bool swizzle;
  };
  for (const Tile tile :
       {Tile{"ldmatrix_dense", 0, false}, Tile{"ldmatrix_pitch64", 64, false},
        Tile{"ldmatrix_pitch80", 80, false}, Tile{"ldmatrix_pitch64_xor", 64, true},
        Tile{"ldmatrix_pitch128", 128, false}}) {
    ptx_check::expect_ok(tile.name, FI_LAUNCH(ldmatrix_layout, dim3(1), dim3(32), kShared, nullptr,
                                              tile.pitch, tile.swizzle, out.get()));
    print_layout(tile.name, 16,
                 [&](unsigned lane) { return ldmatrix_offset(lane, tile.pitch, tile.swizzle); });
    print_stats(tile.name, simt::last_launch_stats().ldmatrix);
  }
  for (const unsigned stride : {4u, 8u, 0u, 128u}) check_store_load<4>(stride, out.get());
  for (const unsigned stride : {16u, 64u, 32u}) check_store_load<16>(stride, out.get());
}

// Lanes found still published in their warp's collective after they returned from it.
std::atomic<unsigned> still_published{0};

// After a warp collective returned, the calling lane's operands (in its returned frame) must be
// withdrawn: the lane that completes a warp's operation executes it on the operands of every
// published lane. Lanes that left a faulted mma used to stay published, so a lane of another
// warp arriving late could execute on their dead frames (a rare SIGSEGV of cases 2 and 3).
// White-box: reads the shim's rendezvous state under its mutex.
void check_withdrawn() {
  simt::detail::WarpCollective& w = *simt::detail::current->warp_collectives[simt::warp_id()];
  std::lock_guard<std::mutex> lock(w.mutex);
  if (w.present >> simt::lane_id() & 1u) ++still_published;
}

// Case 0 is correct: every lane of every warp calls the mma. The others misuse it.
__global__ void collective(int which, float* out) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const unsigned lane = threadIdx.x % 32;
  const std::uint32_t a[4] = {0x3C003C00u, 0, 0, 0};  // f16 ones
  const std::uint32_t b[2] = {0x3C003C00u, 0};
  const float c[4] = {0, 0, 0, 0};
  float d[4] = {0, 0, 0, 0};
  const bool culprit = threadIdx.x == 31;  // lane 31 of warp 0 (warp 1 is correct)
  if (which == 2 && culprit) return;       // leaves before the mma
  if (which == 4 && culprit) {
    std::uint32_t r[4];
    fi::ptx::ldmatrix_x4(r, smem + 16 * lane);
  } else if (which == 5) {
    std::uint32_t r[4];
    fi::ptx::ldmatrix_x4(r, smem + 16 * lane + (lane == 5 ? 8 : 0));
  } else if (which == 6) {
    fi::ptx::sts128(smem + 16 * lane + (lane == 3 ? 4 : 0), uint4{0, 0, 0, 0});
  } else if (!(which == 3 && culprit)) {
    fi::ptx::mma_m16n8k16_f32<__half>(d, a, b, c);
  }
  check_withdrawn();
  __syncthreads();  // lane 31 of case 3 waits here while its warp waits in the mma
  out[threadIdx.x] = d[0];
}

void check_collective(int which, bool print = true) {
  static const char* const expected[] = {
      nullptr,
      "mma.sync.m16n8k16.f32.f16 called by a partial warp of 16 lanes",
      "mma.sync.m16n8k16.f32.f16: lane 31 of warp 0 waits at __syncthreads or the end of the "
      "block instead",
      "mma.sync.m16n8k16.f32.f16: lane 31 of warp 0 waits at __syncthreads or the end of the "
      "block instead",
      "at the same time (all 32 lanes must make the same call)",
      "ldmatrix.m8n8.x4: lane 5's row address",
      "sts128: lane 3's address"};
  auto out = ptx_check::buffer<float>(64);
  const std::string name = "collective-" + std::to_string(which);
  const unsigned threads = which == 1 ? 48 : 64;
  still_published = 0;
  const char* error =
      FI_LAUNCH(collective, dim3(2), dim3(threads), 1024, nullptr, which, out.get());
  if (still_published != 0) {
    fail("%s: %u lanes still published in the collective after returning from it", name.c_str(),
         still_published.load());
  }
  if (which == 0) {
    ptx_check::expect_ok(name.c_str(), error);
    // Lane l holds D[l / 4][2 (l % 4)]: row l / 4 of A has ones in columns 0 and 1 only when
    // l / 4 == 0, and B's ones sit in rows 0 and 1 of column 0.
    for (unsigned t = 0; t < threads; ++t) {
      const float want = 8.0f;
      if (out[t] != want)
        fail("%s thread %u: d[0] = %g, expected %g", name.c_str(), t, out[t], want);
    }
    std::printf("stats collective-0 macs %llu\n",
                static_cast<unsigned long long>(simt::last_launch_stats().mma_macs));
  } else {
    ptx_check::expect_error(name.c_str(), error, expected[which], print);
  }
}

void repeat_collective(int times) {
  for (int i = 0; i < times && ptx_check::failures == 0; ++i) {
    check_collective(2, false);
    check_collective(3, false);
  }
  std::printf("repeated cases 2 and 3 %d times each\n", times);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "banks") {
    check_banks();
    return ptx_check::finish("OK: shared accesses counted");
  }
  if (mode.rfind("collective-", 0) == 0) {
    check_collective(std::stoi(mode.substr(11)));
    return ptx_check::finish("OK: collective case checked");
  }
  if (mode.rfind("repeat-", 0) == 0) {
    repeat_collective(std::stoi(mode.substr(7)));
    return ptx_check::finish("OK: collective faults repeated");
  }
  std::printf("usage: %s banks|collective-K|repeat-N\n", argv[0]);
  return 2;
}
