// block_1x1 (version 2, 16-bit): every 1x1 convolution of an Inception block that reads x, in
// one launch (the CUDA counterpart of fused_inception/triton/block_1x1.py):
//
//   [b1 | r2 | r3] = relu(x @ w_x + b_x)   columns [0, c1) -> out[:, 0:c1],
//                                          columns [c1, n_x) -> scratch r [M, n_x - c1];
//   b4 = relu(maxpool3x3(x) @ w_pool + b_pool) -> out[:, pool_off:pool_off + c_pool]
//
// (M = N*H*W pixel rows, 3x3/1 max-pool with -inf padding). fp32 accumulation on the tensor
// cores (mma.sync m16n8k16), bias + ReLU in fp32 (NaN propagates as in torch.relu).
//
// Grid: (ceil(M / BM), tiles_x + tiles_pool), 128 threads, BM x BN tiles of 64 or 128 each
// (block_1x1_plan: 128 x 128 for GoogLeNet's blocks at batch 8, so that B is re-read once per
// 128 pixel rows and x once per 128 columns). Block (bx, by) owns pixel rows
// [BM bx, BM bx + BM) and, for by < tiles_x, columns [BN by, BN by + BN) of the GEMM over x, else
// columns [BN (by - tiles_x), ...) of the pool projection. Separate CTAs for the pool, as in the
// Triton kernel, rather than pooling the GEMM CTAs' x tile: a GEMM CTA stages BM rows of x, but
// the pool needs those rows plus a halo of W + 1 rows on each side, which only the pool CTAs load.
// A pool CTA stages x rows [BM bx - W - 1, BM bx + BM + W + 1) once per channel step with
// cp.async (BM + 2W + 2 rows: 1.45x the tile's own rows at BM = 128 and W = 28, 1.23x at 14,
// 1.13x at 7, i.e. 186 x 64 B = 11.9 KB instead of 9 x 8 KB = 73.7 KB for the nine shifted
// tiles that version 1 and the Triton kernel load) and takes the max of the nine taps from
// shared memory. The only extra global traffic of the split is that extra halo per pool CTA.
//
// Warps: 2 x 2, each a BM/2 x BN/2 tile = BM/32 x BN/16 fragments of m16n8 with fp32
// accumulators (at most 64 x 64: 128 registers a thread). Fragments whose rows start past M or
// whose columns start past the branch's width are skipped (warp-uniform), and so are k16 halves
// past c_in: executed MACs exceed the useful ones only by rounding M to 16 rows and the channel
// counts to 8 (GoogLeNet's: none).
//
// Shared memory (16-bit elements; all row strides odd multiples of 16 bytes modulo 128, so the
// 8 rows of every ldmatrix / lds128 / sts128 phase fall in 8 distinct 16-byte bank groups:
// conflict-free, counted by the SIMT shim's bank model):
//   A [BM][32 + 8] per stage (80-byte rows: 16-byte chunk 5r + c mod 8 is distinct for 8
//     consecutive rows r), B [32][BN + 8] per stage (144 or 272-byte rows: chunk 9r or 17r);
//   pool CTAs: the haloed x rows [BM + 2W + 2][40] per stage, the pooled A tile [BM][40] twice
//     and B with one stage more (see pool_tile): 97.6 KB at 128 x 128, the largest.
// Pipelines: 3 stages of cp.async 16-byte copies with commit/wait_group, one __syncthreads per
// 32-channel step. Channel counts not multiple of 8, unaligned pointers or pixel strides, and
// (pool) images wider than 28 take element loads with zero fill instead of cp.async.
#include "cuda/compat.cuh"
#include "cuda/kernels.h"
#include "cuda/ptx.cuh"
#include "cuda/tile_math.cuh"

namespace fused_inception::FI_KERNEL_NS {

// Tile sizes and dynamic shared-memory layout (byte offsets) of block_1x1_kernel<T, BM, BN>
// (sizeof(T) == 2). The GEMM CTAs' and the pool CTAs' regions overlap (a CTA is one kind).
template <int BM, int BN>
struct Block1x1Tile {
  static constexpr int kBM = BM, kBN = BN, kBK = 32, kStages = 3;
  static constexpr int kWarpM = BM / 2;        // rows per warp (2 x 2 warps)
  static constexpr int kWarpN = BN / 2;        // columns per warp
  static constexpr int kFragsM = kWarpM / 16;  // m16n8 fragments per warp column
  static constexpr int kFragsN = kWarpN / 8;   // m16n8 fragments per warp row
  static constexpr int kLdA = kBK + 8;         // 80-byte rows
  static constexpr int kLdB = BN + 8;          // 144- or 272-byte rows
  // Widest image whose pool halo is staged in shared memory (GoogLeNet's widest is 28).
  static constexpr int kMaxHaloWidth = 28;
  static constexpr int kHaloRows = kBM + 2 * kMaxHaloWidth + 2;
  static constexpr std::size_t kABytes = 2 * kBM * kLdA;
  static constexpr std::size_t kBBytes = 2 * kBK * kLdB;
  static constexpr std::size_t kHaloBytes = 2 * kHaloRows * kLdA;
  // GEMM CTAs: A and B stages.
  static constexpr std::size_t kGemmA = 0;
  static constexpr std::size_t kGemmB = kGemmA + kStages * kABytes;
  static constexpr std::size_t kGemmBytes = kGemmB + kStages * kBBytes;
  // Pool CTAs: halo stages, two pooled A tiles, kStages + 1 B stages.
  static constexpr std::size_t kPoolHalo = 0;
  static constexpr std::size_t kPoolA = kPoolHalo + kStages * kHaloBytes;
  static constexpr std::size_t kPoolB = kPoolA + 2 * kABytes;
  static constexpr std::size_t kPoolBytes = kPoolB + (kStages + 1) * kBBytes;
  static constexpr std::size_t kSmemBytes = kGemmBytes > kPoolBytes ? kGemmBytes : kPoolBytes;
  static_assert(kABytes % 16 == 0 && kBBytes % 16 == 0 && kHaloBytes % 16 == 0);
  static_assert(tile::kThreads % kBM == 0 && (kBM * kBK / 8) % tile::kThreads == 0);
  static_assert(kFragsM >= 1 && kFragsN % 2 == 0);
};

// Host-chosen tiling of one launch (block_1x1_plan), passed to the kernel by value. The grid is
// (tiles_m, tiles_y): CTA (bx, by) owns M tile tile_m_begin + bx and column tile
// tile_y_begin + by, the GEMM over x for column tiles [0, tiles_x), the pool projection after.
// The whole launch starts both at 0; the tests launch a few tiles alone to count them.
struct Block1x1Plan {
  int bm, bn;            // pixel rows (64 or 128) and output columns (64 or 128) per tile
  int64_t tiles_m;       // M tiles launched (ceil(M / bm) for the whole of M)
  int64_t tile_m_begin;  // the first of them
  int64_t tiles_x;       // column tiles of the GEMM over x: ceil(n_x / bn)
  int64_t tiles_pool;    // column tiles of the pool projection: ceil(c_pool / bn)
  int64_t tiles_y;       // column tiles launched (tiles_x + tiles_pool for the whole launch)
  int64_t tile_y_begin;  // the first of them
};

// The tiling of a launch (the host-side tile chooser). Rows past M and columns past a branch's
// width are skipped fragment by fragment and zero-filled by cp.async without reading global
// memory, so a taller or wider tile costs idle warps in the tiles at the ends, never MACs or
// loads, and it loads fewer bytes: B once per M tile (1/BM of a byte per useful FLOP), x once
// per column tile (1/BN), the pool's halo once per M tile. Both are 128 unless 64 covers every
// row (M <= 64), or every column of both GEMMs (n_x, c_pool <= 64). At batch 8 GoogLeNet's nine
// blocks all run 128 x 128 and load 0.017 (4e) to 0.024 (3a) bytes per useful FLOP (counted on
// the shim by tests/test_cuda_block_1x1.py), where 128 x 64 tiles would load 0.025-0.029 and
// version 2's 64-row tiles 0.025 (4e) to 0.039 (3a). The 5% row-padding rule of
// fused_inception/triton/tiles.py, whose padded rows do cost MACs, would give 5a and 5b at
// batch 8 (392 rows) 64-row tiles and 0.026-0.027 bytes per FLOP.
inline Block1x1Plan block_1x1_plan(const Block1x1Args& args) {
  const int64_t pixels = args.batch * args.height * args.width;
  Block1x1Plan plan{};
  plan.bm = pixels <= 64 ? 64 : 128;
  plan.bn = args.n_x <= 64 && args.c_pool <= 64 ? 64 : 128;
  plan.tiles_m = (pixels + plan.bm - 1) / plan.bm;
  plan.tiles_x = (args.n_x + plan.bn - 1) / plan.bn;
  plan.tiles_pool = (args.c_pool + plan.bn - 1) / plan.bn;
  plan.tiles_y = plan.tiles_x + plan.tiles_pool;
  return plan;
}

namespace block_1x1_detail {

// A 16-byte chunk of eight 16-bit elements in registers.
struct Chunk {
  std::uint32_t word[4];
};

__device__ __forceinline__ Chunk lds_chunk(const void* address) {
  const uint4 v = fi::ptx::lds128(address);
  return {{v.x, v.y, v.z, v.w}};
}

// The 16 bits of a T, and back (register moves; no local-memory arrays).
__device__ __forceinline__ std::uint32_t bits(__half v) { return __half_as_ushort(v); }
__device__ __forceinline__ std::uint32_t bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
template <typename T>
__device__ __forceinline__ T from_bits(std::uint32_t b) {
  const auto low = static_cast<unsigned short>(b & 0xFFFFu);
  if constexpr (std::is_same_v<T, __half>) {
    return __ushort_as_half(low);
  } else {
    return __ushort_as_bfloat16(low);
  }
}

// max_nan of the two T in each 32-bit half of a and b (exact: the result is one of the inputs).
template <typename T>
__device__ __forceinline__ std::uint32_t max_pair(std::uint32_t a, std::uint32_t b) {
  std::uint32_t r = 0;
  FI_UNROLL
  for (int h = 0; h < 2; ++h) {
    const float m = tile::max_nan(tile::to_float(from_bits<T>(a >> (16 * h))),
                                  tile::to_float(from_bits<T>(b >> (16 * h))));
    r |= bits(tile::from_float<T>(m)) << (16 * h);
  }
  return r;
}

template <typename T>
__device__ __forceinline__ Chunk max_chunk(const Chunk& a, const Chunk& b) {
  Chunk r;
  FI_UNROLL
  for (int i = 0; i < 4; ++i) r.word[i] = max_pair<T>(a.word[i], b.word[i]);
  return r;
}

// Stores v0 (and v1 into dst[1] when `both`) as T; one 32-bit store when dst is 4-byte aligned.
template <typename T>
__device__ __forceinline__ void store_pair(T* dst, float v0, float v1, bool both) {
  const T e0 = tile::from_float<T>(v0), e1 = tile::from_float<T>(v1);
  if (both && reinterpret_cast<std::uintptr_t>(dst) % 4 == 0) {
    *reinterpret_cast<std::uint32_t*>(dst) = bits(e0) | bits(e1) << 16;
  } else {
    dst[0] = e0;
    if (both) dst[1] = e1;
  }
}

// One 32-channel step of a warp's BM/2 x BN/2 tile: acc += A[rows, 0:32] * B[0:32, cols] from
// shared memory (A [BM][kLdA] row-major, B [32][kLdB] k-major) via ldmatrix and mma.sync.
// rows_left / cols_left / k_left: the valid rows, columns and channels from the warp's first row,
// column and the step's first channel; fragments and k16 halves past them are skipped.
template <int BM, int BN>
using Accumulators = float[Block1x1Tile<BM, BN>::kFragsM][Block1x1Tile<BM, BN>::kFragsN][4];

template <typename T, int BM, int BN>
__device__ __forceinline__ void warp_mma_step(Accumulators<BM, BN>& acc, const T* a_tile,
                                              const T* b_tile, int64_t rows_left, int64_t cols_left,
                                              int64_t k_left) {
  using Tile = Block1x1Tile<BM, BN>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_row = Tile::kWarpM * (warp / 2), warp_col = Tile::kWarpN * (warp % 2);
  // ldmatrix x4 row addresses: lanes 8i..8i+7 give matrix i's rows; matrices (rows 0-7 | 8-15)
  // x (k 0-7 | 8-15) for A (a[0..3] of the mma), (k 0-7 | 8-15) x (n 0-7 | 8-15) for B^T.
  const int quad_row = lane % 8 + 8 * (lane / 8 % 2), quad_col = 8 * (lane / 16);
  FI_UNROLL
  for (int kk = 0; kk < Tile::kBK; kk += 16) {
    if (kk >= k_left) break;
    std::uint32_t a[Tile::kFragsM][4];
    FI_UNROLL
    for (int i = 0; i < Tile::kFragsM; ++i) {
      if (16 * i < rows_left) {
        fi::ptx::ldmatrix_x4(a[i],
                             a_tile + (warp_row + 16 * i + quad_row) * Tile::kLdA + kk + quad_col);
      }
    }
    FI_UNROLL
    for (int jj = 0; jj < Tile::kFragsN / 2; ++jj) {
      if (16 * jj >= cols_left) continue;
      std::uint32_t b[4];
      fi::ptx::ldmatrix_x4_trans(
          b, b_tile + (kk + quad_row) * Tile::kLdB + warp_col + 16 * jj + quad_col);
      const std::uint32_t b_lo[2] = {b[0], b[1]}, b_hi[2] = {b[2], b[3]};
      FI_UNROLL
      for (int i = 0; i < Tile::kFragsM; ++i) {
        if (16 * i >= rows_left) continue;
        fi::ptx::mma_m16n8k16_f32<T>(acc[i][2 * jj], a[i], b_lo, acc[i][2 * jj]);
        if (16 * jj + 8 < cols_left) {
          fi::ptx::mma_m16n8k16_f32<T>(acc[i][2 * jj + 1], a[i], b_hi, acc[i][2 * jj + 1]);
        }
      }
    }
  }
}

// Rows [row0, row0 + ROWS) x channels [k0, k0 + 32) of x (row q at x + q * x_stride; zero for
// q outside [0, M) or channels past c_in) into dst [ROWS][kLdA]: 16-byte cp.async copies when
// `vec` (c_in and the stride multiples of 8, x aligned), element loads otherwise. Four threads
// read one pixel's 64 contiguous bytes.
template <typename T, int BM, int BN>
__device__ __forceinline__ void load_x_rows(T* dst, int rows, const T* x, int64_t x_stride,
                                            int64_t row0, int64_t pixels, int64_t k0, int64_t c_in,
                                            bool vec) {
  using Tile = Block1x1Tile<BM, BN>;
  constexpr int kChunks = Tile::kBK / 8;
  if (vec) {
    for (int i = threadIdx.x; i < rows * kChunks; i += tile::kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      const int64_t q = row0 + r, k = k0 + 8 * c;
      const bool ok = q >= 0 && q < pixels && k < c_in;
      fi::ptx::cp_async_16(dst + r * Tile::kLdA + 8 * c, ok ? x + q * x_stride + k : x,
                           ok ? 16 : 0);
    }
  } else {
    for (int i = threadIdx.x; i < rows * Tile::kBK; i += tile::kThreads) {
      const int r = i / Tile::kBK, c = i % Tile::kBK;
      const int64_t q = row0 + r, k = k0 + c;
      dst[r * Tile::kLdA + c] =
          q >= 0 && q < pixels && k < c_in ? x[q * x_stride + k] : tile::from_float<T>(0.0f);
    }
  }
}

// Rows [k0, k0 + 32) x columns [n0, n0 + BN) of the row-major w [c_in, n_cols] into
// dst [32][kLdB], zero outside; cp.async when `vec` (n_cols a multiple of 8, w aligned).
template <typename T, int BM, int BN>
__device__ __forceinline__ void load_w_rows(T* dst, const T* w, int64_t k0, int64_t c_in,
                                            int64_t n0, int64_t n_cols, bool vec) {
  using Tile = Block1x1Tile<BM, BN>;
  constexpr int kChunks = BN / 8;
  if (vec) {
    for (int i = threadIdx.x; i < Tile::kBK * kChunks; i += tile::kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      const int64_t k = k0 + r, n = n0 + 8 * c;
      const bool ok = k < c_in && n < n_cols;
      fi::ptx::cp_async_16(dst + r * Tile::kLdB + 8 * c, ok ? w + k * n_cols + n : w, ok ? 16 : 0);
    }
  } else {
    for (int i = threadIdx.x; i < Tile::kBK * BN; i += tile::kThreads) {
      const int r = i / BN, c = i % BN;
      dst[r * Tile::kLdB + c] = tile::load_or_zero(w, k0 + r, c_in, n0 + c, n_cols);
    }
  }
}

// The warp's accumulators + bias, ReLU, stored as T: column n0 + j (j < n_cols - n0) of row
// m0 + i (< M) goes to dst(pixel, column) (a pointer); a fragment's pair of adjacent columns in
// one 32-bit store where `same(column)` says they share a destination (else one store each).
template <typename T, int BM, int BN, typename Dst, typename Same>
__device__ __forceinline__ void store_tile(const Accumulators<BM, BN>& acc, const float* bias,
                                           int64_t m0, int64_t pixels, int64_t n0, int64_t n_cols,
                                           Dst dst, Same same) {
  using Tile = Block1x1Tile<BM, BN>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row0 = m0 + Tile::kWarpM * (warp / 2) + lane / 4;
  const int64_t col0 = n0 + Tile::kWarpN * (warp % 2) + 2 * (lane % 4);
  FI_UNROLL
  for (int i = 0; i < Tile::kFragsM; ++i) {
    FI_UNROLL
    for (int j = 0; j < Tile::kFragsN; ++j) {
      const int64_t col = col0 + 8 * j;
      if (col >= n_cols) continue;
      const bool second = col + 1 < n_cols, both = second && same(col);
      const float bias0 = bias[col], bias1 = second ? bias[col + 1] : 0.0f;
      FI_UNROLL
      for (int h = 0; h < 2; ++h) {
        const int64_t p = row0 + 16 * i + 8 * h;
        if (p >= pixels) continue;
        const float v0 = tile::relu(acc[i][j][2 * h] + bias0);
        const float v1 = tile::relu(acc[i][j][2 * h + 1] + bias1);
        store_pair(dst(p, col), v0, v1, both);
        if (second && !both) store_pair(dst(p, col + 1), v1, 0.0f, false);
      }
    }
  }
}

// A GEMM CTA: columns [n0, n0 + BN) of relu(x @ w_x + b_x) for pixel rows [m0, m0 + BM).
// Multi-stage pipeline: step kt's copies were issued kStages - 1 steps earlier; the barrier
// after its wait makes them visible and also ends every warp's reads of the stage the next
// copies overwrite (that of step kt - 1).
template <typename T, int BM, int BN>
__device__ __forceinline__ void gemm_tile(const Block1x1Args& args, unsigned char* smem, int64_t m0,
                                          int64_t n0) {
  using Tile = Block1x1Tile<BM, BN>;
  const auto [a_stages, b_stages] = tile::carve<T, T>(smem, Tile::kGemmA, Tile::kGemmB);
  const T* x = static_cast<const T*>(args.x);
  const T* w = static_cast<const T*>(args.w_x);
  const int64_t pixels = args.batch * args.height * args.width;
  const bool x_vec = args.c_in % 8 == 0 && args.x_pixel_stride % 8 == 0 && tile::aligned16(x);
  const bool w_vec = args.n_x % 8 == 0 && tile::aligned16(w);
  const int64_t steps = (args.c_in + Tile::kBK - 1) / Tile::kBK;
  auto load_step = [&](int64_t kt) {
    if (kt < steps) {
      const int s = static_cast<int>(kt % Tile::kStages);
      load_x_rows<T, BM, BN>(a_stages + s * Tile::kBM * Tile::kLdA, Tile::kBM, x,
                             args.x_pixel_stride, m0, pixels, kt * Tile::kBK, args.c_in, x_vec);
      load_w_rows<T, BM, BN>(b_stages + s * Tile::kBK * Tile::kLdB, w, kt * Tile::kBK, args.c_in,
                             n0, args.n_x, w_vec);
    }
    fi::ptx::cp_async_commit();  // an empty group past the end keeps the wait count uniform
  };
  for (int s = 0; s < Tile::kStages - 1; ++s) load_step(s);

  const int warp = threadIdx.x / 32;
  const int64_t rows_left = pixels - m0 - Tile::kWarpM * (warp / 2);
  const int64_t cols_left = args.n_x - n0 - Tile::kWarpN * (warp % 2);
  Accumulators<BM, BN> acc = {};
  for (int64_t kt = 0; kt < steps; ++kt) {
    fi::ptx::cp_async_wait<Tile::kStages - 2>();
    __syncthreads();
    load_step(kt + Tile::kStages - 1);
    const int s = static_cast<int>(kt % Tile::kStages);
    warp_mma_step<T, BM, BN>(acc, a_stages + s * Tile::kBM * Tile::kLdA,
                             b_stages + s * Tile::kBK * Tile::kLdB, rows_left, cols_left,
                             args.c_in - kt * Tile::kBK);
  }
  fi::ptx::cp_async_wait<0>();

  T* out = static_cast<T*>(args.out);
  T* r = static_cast<T*>(args.r);
  const int64_t c1 = args.c1, c_red = args.n_x - args.c1;
  store_tile<T, BM, BN>(
      acc, args.b_x, m0, pixels, n0, args.n_x,
      [&](int64_t p, int64_t col) {
        return col < c1 ? out + tile::pixel_offset(p, args.out_pixel_stride) + col
                        : r + tile::pixel_offset(p, c_red) + (col - c1);
      },
      [&](int64_t col) { return col + 1 < c1 || col >= c1; });
}

// A pool CTA: columns [n0, n0 + BN) of relu(maxpool3x3(x) @ w_pool + b_pool) for pixel rows
// [m0, m0 + BM). Per 32-channel step: the haloed x rows arrive by cp.async (kStages deep),
// each thread pools its pixel row's chunks from shared memory into a pooled A tile, and the
// warps multiply the pooled tile of the previous step, so one barrier per step separates the
// pooled tile's writes (step kt, into buffer kt % 2) from its reads (step kt + 1), and the B
// stage of step kt stays in use one step longer (kStages + 1 B buffers).
template <typename T, int BM, int BN>
__device__ __forceinline__ void pool_tile(const Block1x1Args& args, unsigned char* smem, int64_t m0,
                                          int64_t n0) {
  using Tile = Block1x1Tile<BM, BN>;
  const auto [halo_stages, pooled, b_stages] =
      tile::carve<T, T, T>(smem, Tile::kPoolHalo, Tile::kPoolA, Tile::kPoolB);
  const T* x = static_cast<const T*>(args.x);
  const T* w = static_cast<const T*>(args.w_pool);
  const int64_t pixels = args.batch * args.height * args.width;
  const int64_t width = args.width, height = args.height;
  const bool x_vec = args.c_in % 8 == 0 && args.x_pixel_stride % 8 == 0 && tile::aligned16(x) &&
                     width <= Tile::kMaxHaloWidth;
  const bool w_vec = args.c_pool % 8 == 0 && tile::aligned16(w);
  const int halo_rows = Tile::kBM + 2 * static_cast<int>(width) + 2;
  const int64_t steps = (args.c_in + Tile::kBK - 1) / Tile::kBK;
  auto load_step = [&](int64_t kt) {
    if (kt < steps) {
      if (x_vec) {
        load_x_rows<T, BM, BN>(halo_stages + (kt % Tile::kStages) * Tile::kHaloRows * Tile::kLdA,
                               halo_rows, x, args.x_pixel_stride, m0 - width - 1, pixels,
                               kt * Tile::kBK, args.c_in, true);
      }
      load_w_rows<T, BM, BN>(b_stages + kt % (Tile::kStages + 1) * Tile::kBK * Tile::kLdB, w,
                             kt * Tile::kBK, args.c_in, n0, args.c_pool, w_vec);
    }
    fi::ptx::cp_async_commit();
  };
  for (int s = 0; s < Tile::kStages - 1; ++s) load_step(s);

  // This thread pools pixel row m of the tile (the same row every step): which of its 3x3
  // neighbours lie inside the image (bit 3 (dy + 1) + dx + 1).
  const int m = threadIdx.x % Tile::kBM;
  const int64_t p = m0 + m;
  unsigned inside = 1u << 4;
  if (p < pixels) {
    const int64_t y = p / width % height, xx = p % width;
    for (int dy = -1; dy <= 1; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        if (y + dy >= 0 && y + dy < height && xx + dx >= 0 && xx + dx < width)
          inside |= 1u << (3 * (dy + 1) + dx + 1);
      }
    }
  }
  // Max over the 3x3 window into pooled [BM][kLdA]: from the staged halo (tap (dy, dx) of row m
  // is halo row m + W + 1 + dy W + dx; every lane reads all nine, as lds128 is warp-wide, and
  // keeps those inside the image), or element by element from global memory.
  auto pool_step = [&](int64_t kt, T* dst) {
    if (x_vec) {
      const T* halo = halo_stages + (kt % Tile::kStages) * Tile::kHaloRows * Tile::kLdA;
      for (int i = threadIdx.x; i < Tile::kBM * Tile::kBK / 8; i += tile::kThreads) {
        const int c = i / Tile::kBM;  // row m, chunk c: a quarter warp is 8 consecutive rows
        const int centre = m + static_cast<int>(width) + 1;
        Chunk v = lds_chunk(halo + centre * Tile::kLdA + 8 * c);
        for (int t = 0; t < 9; ++t) {
          if (t == 4) continue;
          const int row = centre + (t / 3 - 1) * static_cast<int>(width) + t % 3 - 1;
          const Chunk tap = lds_chunk(halo + row * Tile::kLdA + 8 * c);
          if (inside >> t & 1u) v = max_chunk<T>(v, tap);
        }
        fi::ptx::sts128(dst + m * Tile::kLdA + 8 * c,
                        uint4{v.word[0], v.word[1], v.word[2], v.word[3]});
      }
    } else {
      for (int i = threadIdx.x; i < Tile::kBM * Tile::kBK; i += tile::kThreads) {
        const int r = i / Tile::kBK, c = i % Tile::kBK;
        const int64_t q = m0 + r, k = kt * Tile::kBK + c;
        float v = 0.0f;
        if (q < pixels && k < args.c_in) {
          const int64_t y = q / width % height, xx = q % width;
          v = -INFINITY;
          for (int dy = -1; dy <= 1; ++dy) {
            for (int dx = -1; dx <= 1; ++dx) {
              if (y + dy < 0 || y + dy >= height || xx + dx < 0 || xx + dx >= width) continue;
              const int64_t tap = q + dy * width + dx;
              v = tile::max_nan(v, tile::to_float(x[tap * args.x_pixel_stride + k]));
            }
          }
        }
        dst[r * Tile::kLdA + c] = tile::from_float<T>(v);
      }
    }
  };

  const int warp = threadIdx.x / 32;
  const int64_t rows_left = pixels - m0 - Tile::kWarpM * (warp / 2);
  const int64_t cols_left = args.c_pool - n0 - Tile::kWarpN * (warp % 2);
  Accumulators<BM, BN> acc = {};
  for (int64_t kt = 0; kt <= steps; ++kt) {
    fi::ptx::cp_async_wait<Tile::kStages - 2>();
    __syncthreads();
    load_step(kt + Tile::kStages - 1);
    if (kt < steps) pool_step(kt, pooled + kt % 2 * Tile::kBM * Tile::kLdA);
    if (kt >= 1) {
      const int64_t prev = kt - 1;
      warp_mma_step<T, BM, BN>(acc, pooled + prev % 2 * Tile::kBM * Tile::kLdA,
                               b_stages + prev % (Tile::kStages + 1) * Tile::kBK * Tile::kLdB,
                               rows_left, cols_left, args.c_in - prev * Tile::kBK);
    }
  }
  fi::ptx::cp_async_wait<0>();

  T* out = static_cast<T*>(args.out);
  store_tile<T, BM, BN>(
      acc, args.b_pool, m0, pixels, n0, args.c_pool,
      [&](int64_t q, int64_t col) {
        return out + tile::pixel_offset(q, args.out_pixel_stride) + args.pool_off + col;
      },
      [](int64_t) { return true; });
}

}  // namespace block_1x1_detail

// Grid (plan.tiles_m, plan.tiles_y), 128 threads: the column tile picks the kind of CTA (GEMM
// over x, or pool projection); see the top of the file and Block1x1Plan.
// Reads x, w_x, b_x, w_pool, b_pool; writes out[:, 0:c1], r, out[:, pool_off:pool_off + c_pool].
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(tile::kThreads)
    block_1x1_kernel(const Block1x1Args args, const Block1x1Plan plan) {
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const int64_t m0 = (plan.tile_m_begin + static_cast<int64_t>(blockIdx.x)) * BM;
  const int64_t by = plan.tile_y_begin + static_cast<int64_t>(blockIdx.y);
  if (by < plan.tiles_x) {
    block_1x1_detail::gemm_tile<T, BM, BN>(args, smem, m0, by * BN);
  } else {
    block_1x1_detail::pool_tile<T, BM, BN>(args, smem, m0, (by - plan.tiles_x) * BN);
  }
}

namespace {

template <typename T, int BM, int BN>
const char* launch_block_1x1(const Block1x1Args& args, const Block1x1Plan& plan, void* stream) {
  using Tile = Block1x1Tile<BM, BN>;
  if (plan.tiles_m > 2147483647 || plan.tiles_y > 65535) {
    return "grid size out of range: the output needs more than CUDA's 2^31 - 1 x 65535 blocks "
           "(split the batch or the channels)";
  }
  auto kernel = block_1x1_kernel<T, BM, BN>;
  if constexpr (Tile::kSmemBytes > 48 * 1024) {
    if (const char* error = fi_opt_in_dynamic_shared(kernel, Tile::kSmemBytes)) return error;
  }
  const dim3 grid(static_cast<unsigned>(plan.tiles_m), static_cast<unsigned>(plan.tiles_y));
  return fi_launch(kernel, grid, dim3(tile::kThreads), Tile::kSmemBytes, stream, args, plan);
}

}  // namespace

// Launches block_1x1 with an explicit plan (the tests force tilings and count single tiles).
const char* block_1x1_with_plan(const Block1x1Args& args, const Block1x1Plan& plan, void* stream) {
  return tile::dispatch_dtype(args.dtype, [&](auto element) -> const char* {
    using T = decltype(element);
    if constexpr (!tile::kTensorCores<T>) {
      return "block_1x1 takes float16 or bfloat16 (float32 runs on version 1's kernels)";
    } else if ((plan.bm != 64 && plan.bm != 128) || (plan.bn != 64 && plan.bn != 128)) {
      return "block_1x1: unsupported tile (expected 64 or 128 rows and columns)";
    } else if (plan.tiles_m == 0 || plan.tiles_y == 0) {
      return nullptr;
    } else if (plan.bm == 64) {
      return plan.bn == 64 ? launch_block_1x1<T, 64, 64>(args, plan, stream)
                           : launch_block_1x1<T, 64, 128>(args, plan, stream);
    } else {
      return plan.bn == 64 ? launch_block_1x1<T, 128, 64>(args, plan, stream)
                           : launch_block_1x1<T, 128, 128>(args, plan, stream);
    }
  });
}

const char* block_1x1(const Block1x1Args& args, void* stream) {
  return block_1x1_with_plan(args, block_1x1_plan(args), stream);
}

// The dynamic shared memory each instantiation launches with, named as c++filt prints the
// kernel (read by fused_inception/report/cuda.py; ptxas only sees static shared memory).
inline void block_1x1_shared_memory(void (*emit)(const char* kernel, std::size_t bytes)) {
  emit("block_1x1_kernel<__half, 64, 64>", Block1x1Tile<64, 64>::kSmemBytes);
  emit("block_1x1_kernel<__half, 64, 128>", Block1x1Tile<64, 128>::kSmemBytes);
  emit("block_1x1_kernel<__half, 128, 64>", Block1x1Tile<128, 64>::kSmemBytes);
  emit("block_1x1_kernel<__half, 128, 128>", Block1x1Tile<128, 128>::kSmemBytes);
  emit("block_1x1_kernel<__nv_bfloat16, 64, 64>", Block1x1Tile<64, 64>::kSmemBytes);
  emit("block_1x1_kernel<__nv_bfloat16, 64, 128>", Block1x1Tile<64, 128>::kSmemBytes);
  emit("block_1x1_kernel<__nv_bfloat16, 128, 64>", Block1x1Tile<128, 64>::kSmemBytes);
  emit("block_1x1_kernel<__nv_bfloat16, 128, 128>", Block1x1Tile<128, 128>::kSmemBytes);
}

}  // namespace fused_inception::FI_KERNEL_NS
