// The shim's mma.m16n8k16 and ldmatrix against CuTe's fragment layouts (the table printed by
// cute_fragments.cpp, whose path is argv[2]):
//   mma:      random f16 / bf16 tiles, packed into each lane's registers and unpacked from its
//             D registers with CuTe's layouts; D = A * B + C must match a float64 product of
//             the same inputs within fp32 accumulation error; with A = 0 (d aliasing c) D must
//             equal C bit for bit; the MAC counter must be exact.
//   ldmatrix: x1/x2/x4, plain and .trans, rows scattered over shared memory in a permuted order;
//             every lane's registers must hold the elements CuTe names (the lanes whose
//             addresses the instruction does not use pass misaligned ones, which must be
//             ignored).
// A wrong mapping in the emulation or in the table makes the values differ.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/compat.cuh"
#include "cuda/ptx.cuh"
#include "ptx_check.h"

using ptx_check::fail;

namespace {

constexpr int kWarps = 2, kBlocks = 2, kTiles = kWarps * kBlocks;

// CuTe's table: key (kind, lane, reg, half) -> (row, col) for mma, (address lane, element) for
// ldmatrix; kind is "f16 A", "bf16 C", "ldmatrix 4 1", ...
using Table = std::map<std::tuple<std::string, int, int, int>, std::pair<int, int>>;

Table read_table(const char* path) {
  Table table;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string what, a, b;
    int lane, reg, half = 0, row, col;
    words >> what >> a >> b;
    if (what == "mma" && b == "C") {
      words >> lane >> reg >> row >> col;
    } else {
      words >> lane >> reg >> half >> row >> col;
    }
    table[{(what == "mma" ? "" : what + " ") + a + " " + b, lane, reg, half}] = {row, col};
  }
  return table;
}

std::pair<int, int> lookup(const Table& table, const std::string& kind, int lane, int reg,
                           int half) {
  const auto it = table.find({kind, lane, reg, half});
  if (it == table.end()) {
    fail("table has no entry %s lane %d reg %d half %d", kind.c_str(), lane, reg, half);
    return {0, 0};
  }
  return it->second;
}

template <typename T>
std::uint16_t bits(T v) {
  std::uint16_t b;
  std::memcpy(&b, &v, 2);
  return b;
}

// Per tile and lane: 4 A registers, 2 B registers, 4 C floats in; D and E (= 0 * B + C, computed
// in place) out.
template <typename T>
__global__ void mma_tiles(const std::uint32_t* a, const std::uint32_t* b, const float* c, float* d,
                          float* e) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned slot = (blockIdx.x * kWarps + threadIdx.x / 32) * 32 + lane;
  std::uint32_t a_frag[4], b_frag[2];
  const std::uint32_t zero_a[4] = {0, 0, 0, 0};
  float c_frag[4], d_frag[4];
  for (int i = 0; i < 4; ++i) a_frag[i] = a[slot * 4 + i];
  for (int i = 0; i < 2; ++i) b_frag[i] = b[slot * 2 + i];
  for (int i = 0; i < 4; ++i) c_frag[i] = c[slot * 4 + i];
  fi::ptx::mma_m16n8k16_f32<T>(d_frag, a_frag, b_frag, c_frag);
  fi::ptx::mma_m16n8k16_f32<T>(c_frag, zero_a, b_frag, c_frag);
  for (int i = 0; i < 4; ++i) {
    d[slot * 4 + i] = d_frag[i];
    e[slot * 4 + i] = c_frag[i];
  }
}

template <typename T>
void check_mma(const Table& table, const char* type) {
  const std::string kind = type;
  unsigned seed = 2024u + static_cast<unsigned>(kind.size());
  auto uniform = [&seed] {
    seed = seed * 1664525u + 1013904223u;
    return static_cast<float>(seed >> 8) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
  };
  std::vector<double> A(kTiles * 16 * 16), B(kTiles * 16 * 8), C(kTiles * 16 * 8);
  auto a = ptx_check::buffer<std::uint32_t>(kTiles * 32 * 4);
  auto b = ptx_check::buffer<std::uint32_t>(kTiles * 32 * 2);
  auto c = ptx_check::buffer<float>(kTiles * 32 * 4);
  auto d = ptx_check::buffer<float>(kTiles * 32 * 4);
  auto e = ptx_check::buffer<float>(kTiles * 32 * 4);
  std::vector<std::uint16_t> a_bits(A.size()), b_bits(B.size());
  for (std::size_t i = 0; i < A.size(); ++i) {
    const T v(uniform());
    A[i] = static_cast<float>(v);
    a_bits[i] = bits(v);
  }
  for (std::size_t i = 0; i < B.size(); ++i) {
    const T v(uniform());
    B[i] = static_cast<float>(v);
    b_bits[i] = bits(v);
  }
  for (std::size_t i = 0; i < C.size(); ++i) C[i] = uniform();
  for (int tile = 0; tile < kTiles; ++tile) {
    for (int lane = 0; lane < 32; ++lane) {
      const int slot = tile * 32 + lane;
      for (int reg = 0; reg < 4; ++reg) {
        a[slot * 4 + reg] = 0;
        for (int half = 0; half < 2; ++half) {
          const auto [m, k] = lookup(table, kind + " A", lane, reg, half);
          a[slot * 4 + reg] |= std::uint32_t{a_bits[tile * 256 + m * 16 + k]} << (16 * half);
        }
      }
      for (int reg = 0; reg < 2; ++reg) {
        b[slot * 2 + reg] = 0;
        for (int half = 0; half < 2; ++half) {
          const auto [k, n] = lookup(table, kind + " B", lane, reg, half);
          b[slot * 2 + reg] |= std::uint32_t{b_bits[tile * 128 + k * 8 + n]} << (16 * half);
        }
      }
      for (int i = 0; i < 4; ++i) {
        const auto [m, n] = lookup(table, kind + " C", lane, i, 0);
        c[slot * 4 + i] = static_cast<float>(C[tile * 128 + m * 8 + n]);
      }
    }
  }
  auto kernel = mma_tiles<T>;
  ptx_check::expect_ok(type, FI_LAUNCH(kernel, dim3(kBlocks), dim3(kWarps * 32), 0, nullptr,
                                       a.get(), b.get(), c.get(), d.get(), e.get()));
  std::printf("stats mma %s macs %llu\n", type,
              static_cast<unsigned long long>(simt::last_launch_stats().mma_macs));
  int covered = 0;
  for (int tile = 0; tile < kTiles; ++tile) {
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) {
        const auto [m, n] = lookup(table, kind + " C", lane, i, 0);
        double ref = C[tile * 128 + m * 8 + n], magnitude = std::fabs(ref);
        for (int k = 0; k < 16; ++k) {
          const double p = A[tile * 256 + m * 16 + k] * B[tile * 128 + k * 8 + n];
          ref += p;
          magnitude += std::fabs(p);
        }
        const int slot = tile * 32 + lane;
        const double got = d[slot * 4 + i];
        // 16 fp32 additions: each rounds by at most 2^-24 of the running magnitude.
        if (!(std::fabs(got - ref) <= 16 * 0x1p-24 * magnitude)) {
          fail("mma %s tile %d lane %d d[%d] = D[%d][%d]: got %.9g, expected %.9g", type, tile,
               lane, i, m, n, got, ref);
        }
        if (std::memcmp(&e[slot * 4 + i], &c[slot * 4 + i], 4) != 0) {
          fail("mma %s tile %d lane %d: 0 * B + C gave %.9g, C is %.9g", type, tile, lane,
               e[slot * 4 + i], c[slot * 4 + i]);
        }
        ++covered;
      }
    }
  }
  if (covered == kTiles * 128) std::printf("ok mma %s: %d D elements\n", type, covered);
}

constexpr unsigned kRowPitch = 48;  // bytes between physical rows: 16 of data, 32 of padding

// Lane l passes the row its address lane (l) owns, stored at physical row (7 l + 3) % 32; the
// lanes beyond 8 * N pass a misaligned address, which ldmatrix must not use.
template <int N, bool Trans>
__global__ void ldmatrix_lanes(std::uint32_t* out) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const unsigned lane = threadIdx.x;
  unsigned char* row = smem + (7 * lane + 3) % 32 * kRowPitch;
  for (unsigned e = 0; e < 8; ++e) {
    const std::uint16_t code = static_cast<std::uint16_t>(lane << 8 | e);
    std::memcpy(row + 2 * e, &code, 2);
  }
  __syncthreads();
  std::uint32_t r[N];
  fi::ptx::ldmatrix<N, Trans>(r, lane < 8 * N ? row : row + 2);
  for (int i = 0; i < N; ++i) out[lane * N + i] = r[i];
}

template <int N, bool Trans>
void check_ldmatrix(const Table& table) {
  const std::string kind = "ldmatrix " + std::to_string(N) + " " + std::to_string(int{Trans});
  auto out = ptx_check::buffer<std::uint32_t>(32 * N);
  auto kernel = ldmatrix_lanes<N, Trans>;
  ptx_check::expect_ok(kind.c_str(),
                       FI_LAUNCH(kernel, dim3(1), dim3(32), 32 * kRowPitch, nullptr, out.get()));
  int covered = 0;
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < N; ++reg) {
      for (int half = 0; half < 2; ++half) {
        const auto [address_lane, element] = lookup(table, kind, lane, reg, half);
        const unsigned got = out[lane * N + reg] >> (16 * half) & 0xFFFFu;
        const unsigned expected = static_cast<unsigned>(address_lane << 8 | element);
        if (got != expected) {
          fail(
              "%s lane %d reg %d half %d: got row of lane %u element %u, expected lane %d "
              "element %d",
              kind.c_str(), lane, reg, half, got >> 8, got & 0xFFu, address_lane, element);
        } else {
          ++covered;
        }
      }
    }
  }
  if (covered == 64 * N) std::printf("ok %s: %d elements\n", kind.c_str(), covered);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::printf("usage: %s mma|ldmatrix TABLE\n", argv[0]);
    return 2;
  }
  const Table table = read_table(argv[2]);
  const std::string mode = argv[1];
  if (mode == "mma") {
    check_mma<__half>(table, "f16");
    check_mma<__nv_bfloat16>(table, "bf16");
    return ptx_check::finish("OK: mma.m16n8k16 matches CuTe's layouts and a float64 product");
  }
  check_ldmatrix<1, false>(table);
  check_ldmatrix<2, false>(table);
  check_ldmatrix<4, false>(table);
  check_ldmatrix<1, true>(table);
  check_ldmatrix<2, true>(table);
  check_ldmatrix<4, true>(table);
  return ptx_check::finish("OK: ldmatrix matches CuTe's layouts");
}
