// chain_1x1_kxk: branches 2 and 3 (b2, b3) of the Inception block, the 1x1 reduction and the
// following KxK convolution in one kernel, stored into their channel slice of the block output:
//
//   r[q, c] = relu(b_red[c] + sum_i x[q, i] * w_red[i, c])                  (q a pixel, c < cr)
//   out[p * out_pixel_stride + j] = relu(b_kxk[j] + sum_{ky, kx, c} r~[p + (ky - K/2, kx - K/2), c]
//                                        * w_kxk[ky*K + kx, c, j]),          j < cout
//
// where r~ is r inside the image and exactly 0 outside it (the KxK conv zero-pads r, so the
// halo outside the image is 0, not relu(b_red)). r never reaches global memory. K is 3 or 5,
// the block's kernel sizes (instantiating more would only add compile time per architecture).
// (Version 1 of the CUDA backend; the Triton backend's version 2 splits the work differently:
// fused_inception/triton/block_1x1.py and block_kxk.py.) See chain_1x1_kxk_kernel for grid
// and tiling.
#include "cuda/compat.cuh"
#include "cuda/kernels.h"
#include "cuda/tile_math.cuh"

namespace fused_inception::FI_KERNEL_NS {

// Tile sizes and the dynamic shared-memory layout (byte offsets) of chain_1x1_kxk_kernel<T, K>.
template <typename T, int K>
struct ChainTile {
  static_assert(K == 3 || K == 5, "the block's kxk convolutions are 3x3 or 5x5");
  static constexpr bool kTensorCores = tile::kTensorCores<T>;
  static constexpr int kTile = 8;                                // output tile: 8 x 8 pixels
  static constexpr int kHalo = kTile + K - 1;                    // haloed tile edge
  static constexpr int kHaloPixels = kHalo * kHalo;              // 64, 100, 144
  static constexpr int kRows = tile::round_up(kHaloPixels, 16);  // 64, 112, 144
  static constexpr int kBN = 64;                                 // output channels per block
  static constexpr int kBK = 32;  // input channels per step of the 1x1
  // Reduced channels per chunk: all K*K taps of a chunk's w_kxk [K*K, CK, BN] sit in shared
  // memory at once (one barrier per chunk), which bounds CK (16-bit: 41 KiB for K = 3, 56 KiB
  // for K = 5; fp32 with half the CK: 36 and 50 KiB).
  static constexpr int kCK = (kTensorCores ? 2 : 1) * (K == 5 ? 8 : 16);
  // Pitches in elements. 16-bit: x tile [rows][BK], w_red tile [BK][CK], r [rows][CK] (CK a
  // multiple of 16, so every r row starts 32-byte aligned for the m8n32k16 loads), w_kxk
  // [K*K*CK][BN], float staging of the 1x1 [rows][CK] and of the output [64][BN]. fp32: the
  // x tile and r are k-major ([BK][rows], [CK][rows]) for the micro-GEMM.
  static constexpr int kLdX = kTensorCores ? kBK + 8 : kRows + 1;
  static constexpr int kLdWred = kTensorCores ? kCK + 8 : kCK;
  static constexpr int kLdR = kTensorCores ? kCK : kRows;
  static constexpr int kLdWkxk = kTensorCores ? kBN + 8 : kBN;
  static constexpr int kLdStage = kCK + 4;
  static constexpr int kLdOut = kBN + 4;

  static constexpr std::size_t kHaloOffsets = 0;  // int64 [rows]: x offset of the pixel or -1
  static constexpr std::size_t kX = tile::align128(8 * kRows);
  static constexpr std::size_t kXBytes = sizeof(T) * (kTensorCores ? kRows : kBK) * kLdX;
  static constexpr std::size_t kWred = tile::align128(kX + kXBytes);
  static constexpr std::size_t kXWBytes = kWred - kX + sizeof(T) * kBK * kLdWred;
  // The float staging tiles (16-bit only) reuse the x / w_red space.
  static constexpr std::size_t kStageBytes = kTensorCores ? sizeof(float) * kRows * kLdStage : 0;
  static constexpr std::size_t kOutBytes = kTensorCores ? sizeof(float) * 64 * kLdOut : 0;
  static constexpr std::size_t kUnionBytes =
      kXWBytes > kStageBytes ? (kXWBytes > kOutBytes ? kXWBytes : kOutBytes)
                             : (kStageBytes > kOutBytes ? kStageBytes : kOutBytes);
  static constexpr std::size_t kR = tile::align128(kX + kUnionBytes);
  static constexpr std::size_t kWkxk = tile::align128(kR + sizeof(T) * kRows * kCK);
  static constexpr std::size_t kSmemBytes = kWkxk + sizeof(T) * K * K * kCK * kLdWkxk;
};

// Grid: (N * ceil(H/8) * ceil(W/8), ceil(cout / BN)); 128 threads (4 warps). Block (bx, by)
// owns one 8 x 8 output tile of one image and output channels [by*BN, by*BN + BN). For each
// chunk of CK reduced channels:
//   1. the haloed reduced tile r = relu(x @ w_red + b_red) for the (8+K-1)^2 halo pixels
//      (rows padded to a multiple of 16), looping over cin in BK steps (x and w_red tiles in
//      shared memory, two barriers per step), written to shared memory as the activation type
//      with exactly 0 for halo pixels outside the image and for the padding rows;
//   2. the chunk's w_kxk for all K*K taps, loaded with the same barrier;
//   3. the KxK conv as an implicit GEMM: for each tap (ky, kx), output pixel (ty, tx) reads r
//      row (ty + ky) * (8 + K - 1) + tx + kx, accumulated over taps and chunks in registers.
// Finally bias + ReLU and the store of the 64 pixels x BN channels (bounds-checked).
//   fp32:   CUDA-core FMAs; the 1x1 as 16 x 8 threads of (rows/16) x (CK/8) register tiles,
//           the KxK as 16 x 8 threads of 4 pixels x 8 channels.
//   16-bit: WMMA with float accumulators; the 1x1 as m16n16k16 fragments spread over the
//           warps, staged through a float tile per fragment (a warp converts what it stored);
//           the KxK as m8n32k16: one output row's 8 pixels are 8 consecutive rows of r, so the
//           A operand loads straight from r at row (ty+ky)*(8+K-1) + kx with ldm = CK. Warp w
//           owns output rows 2w, 2w+1 and both 32-channel halves (2 x 2 fragments).
// Reads x (the halo pixels, once per chunk and channel block), w_red, b_red, w_kxk, b_kxk;
// writes out[p * out_pixel_stride + j] for its pixels and channels only.
// Why: r never leaves the chip, and the halo costs (8+K-1)^2/64 of the cheap 1x1 only, where
// recomputing the 1x1 per tap would cost K*K times.
template <typename T, int K>
__global__ void __launch_bounds__(tile::kThreads) chain_1x1_kxk_kernel(const ChainArgs args) {
  using Tile = ChainTile<T, K>;
  constexpr int kTile = Tile::kTile, kHalo = Tile::kHalo, kRows = Tile::kRows;
  constexpr int kBN = Tile::kBN, kBK = Tile::kBK, kCK = Tile::kCK;
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const auto [halo_offsets, x_tile, w_red_tile, r_tile, w_kxk_tile] =
      tile::carve<int64_t, T, T, T, T>(smem, Tile::kHaloOffsets, Tile::kX, Tile::kWred, Tile::kR,
                                       Tile::kWkxk);

  const T* x = static_cast<const T*>(args.x);
  const T* w_red = static_cast<const T*>(args.w_red);
  const T* w_kxk = static_cast<const T*>(args.w_kxk);
  T* out = static_cast<T*>(args.out);
  const int64_t tiles_w = (args.width + kTile - 1) / kTile;
  const int64_t tiles_per_image = (args.height + kTile - 1) / kTile * tiles_w;
  const int64_t image = blockIdx.x / tiles_per_image;
  const int64_t y0 = blockIdx.x % tiles_per_image / tiles_w * kTile;
  const int64_t x0 = blockIdx.x % tiles_w * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;

  // Halo row h is pixel (y0 + h / kHalo - K/2, x0 + h % kHalo - K/2): its offset in x (int64),
  // or -1 outside the image and for the padding rows.
  for (int h = threadIdx.x; h < kRows; h += tile::kThreads) {
    const int64_t y = y0 + h / kHalo - K / 2, xx = x0 + h % kHalo - K / 2;
    const bool inside =
        h < Tile::kHaloPixels && y >= 0 && y < args.height && xx >= 0 && xx < args.width;
    halo_offsets[h] =
        inside
            ? tile::pixel_offset(tile::pixel_index(image, y, xx, args.height, args.width), args.cin)
            : -1;
  }
  __syncthreads();

  // At least one step of the 1x1 loop even for cin = 0: its barriers order a chunk's writes of
  // r and w_kxk after the previous chunk's reads.
  const int64_t cin_steps = args.cin > 0 ? args.cin : 1;

  // 16-byte vector loads where rows are whole vectors and aligned (GoogLeNet's channel counts
  // are multiples of 8); element loads otherwise. Uniform over the block.
  const bool x_vec = args.cin % tile::kVec<T> == 0 && tile::aligned16(x);
  const bool w_red_vec = args.cr % tile::kVec<T> == 0 && tile::aligned16(w_red);
  const bool w_kxk_vec = args.cout % tile::kVec<T> == 0 && tile::aligned16(w_kxk);

  auto x_value = [&](int h, int64_t c) -> T {
    const int64_t offset = halo_offsets[h];
    return offset >= 0 && c < args.cin ? x[offset + c] : tile::from_float<T>(0.0f);
  };
  // r for halo row h, reduced channel c, from the 1x1's float sum. Exactly 0 outside the
  // image and for the padding channels c >= cr: their sum multiplies x by zero-filled weights,
  // which is NaN where x holds an inf, and must not reach the taps.
  auto reduced = [&](int h, int64_t c, float sum) -> T {
    const bool real = halo_offsets[h] >= 0 && c < args.cr;
    return tile::from_float<T>(real ? tile::relu(sum + args.b_red[c]) : 0.0f);
  };
  // w_kxk [K*K, cr, cout] viewed as a [K*K*CK, BN] tile of chunk r0: row t = tap*CK + c.
  auto load_w_kxk = [&](int64_t r0) {
    auto row = [&](int t) -> const T* {
      const int64_t tap = t / kCK, c = r0 + t % kCK;
      return c < args.cr ? w_kxk + (tap * args.cr + c) * args.cout + n0 : nullptr;
    };
    if (w_kxk_vec) {
      tile::copy_tile_vec16<K * K * kCK, kBN>(w_kxk_tile, Tile::kLdWkxk, row, args.cout - n0);
    } else {
      tile::fill_tile<K * K * kCK, kBN>(w_kxk_tile, Tile::kLdWkxk, [&](int t, int j) {
        const T* src = row(t);
        return src != nullptr && n0 + j < args.cout ? src[j] : tile::from_float<T>(0.0f);
      });
    }
  };
  auto out_pixel = [&](int ty, int tx) -> int64_t {
    const int64_t y = y0 + ty, xx = x0 + tx;
    return y < args.height && xx < args.width
               ? tile::pixel_index(image, y, xx, args.height, args.width)
               : -1;
  };

  if constexpr (Tile::kTensorCores) {
    namespace wmma = nvcuda::wmma;
    constexpr int kFragsN = kCK / 16;
    constexpr int kFrags = kRows / 16 * kFragsN;
    constexpr int kFragsPerWarp = (kFrags + tile::kWarps - 1) / tile::kWarps;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* stage = reinterpret_cast<float*>(x_tile);  // reuses the x / w_red space
    tile::AccFragment<8, 32, 16> acc[2][2];
    tile::zero_fragments(acc);
    for (int64_t r0 = 0; r0 < args.cr; r0 += kCK) {
      tile::AccFragment<16, 16, 16> r_acc[kFragsPerWarp][1][1];
      FI_UNROLL
      for (int f = 0; f < kFragsPerWarp; ++f) tile::zero_fragments(r_acc[f]);
      for (int64_t k0 = 0; k0 < cin_steps; k0 += kBK) {
        tile::load_pixel_rows<kRows, kBK>(x_tile, Tile::kLdX, halo_offsets, x, k0, args.cin, x_vec,
                                          x_value);
        tile::load_matrix_tile<kBK, kCK>(w_red_tile, Tile::kLdWred, w_red, args.cin, args.cr, k0,
                                         r0, w_red_vec);
        __syncthreads();
        FI_UNROLL
        for (int f = 0; f < kFragsPerWarp; ++f) {
          const int frag = warp + tile::kWarps * f, fm = frag / kFragsN, fn = frag % kFragsN;
          if (frag < kFrags) {
            const T* const a[1] = {x_tile + 16 * fm * Tile::kLdX};
            const T* const b[1] = {w_red_tile + 16 * fn};
            tile::wmma_gemm<16, 16, 16, kBK>(r_acc[f], a, Tile::kLdX, b, Tile::kLdWred);
          }
        }
        __syncthreads();
      }
      // Each warp stages its own fragments and converts them (a warp-level sync suffices).
      FI_UNROLL
      for (int f = 0; f < kFragsPerWarp; ++f) {
        const int frag = warp + tile::kWarps * f, fm = frag / kFragsN, fn = frag % kFragsN;
        if (frag < kFrags) {
          float* s = stage + 16 * fm * Tile::kLdStage + 16 * fn;
          wmma::store_matrix_sync(s, r_acc[f][0][0], Tile::kLdStage, wmma::mem_row_major);
          __syncwarp();
          for (int e = lane; e < 256; e += 32) {
            const int h = 16 * fm + e / 16, c = 16 * fn + e % 16;
            r_tile[h * Tile::kLdR + c] = reduced(h, r0 + c, s[(e / 16) * Tile::kLdStage + e % 16]);
          }
        }
      }
      load_w_kxk(r0);
      __syncthreads();
      for (int tap = 0; tap < K * K; ++tap) {
        const int ky = tap / K, kx = tap % K;
        const T* const a[2] = {r_tile + ((2 * warp + ky) * kHalo + kx) * Tile::kLdR,
                               r_tile + ((2 * warp + 1 + ky) * kHalo + kx) * Tile::kLdR};
        const T* w_tap = w_kxk_tile + tap * kCK * Tile::kLdWkxk;
        const T* const b[2] = {w_tap, w_tap + 32};
        tile::wmma_gemm<8, 32, 16, kCK>(acc, a, Tile::kLdR, b, Tile::kLdWkxk);
      }
      // No barrier here: the next chunk's x / w_red loads do not touch r or w_kxk, which are
      // rewritten only after that chunk's barriers.
    }
    // Output staging reuses the x / w_red space, last read before the last chunk's barrier.
    float* out_tile = stage;
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) {
        wmma::store_matrix_sync(out_tile + (2 * warp + i) * kTile * Tile::kLdOut + 32 * j,
                                acc[i][j], Tile::kLdOut, wmma::mem_row_major);
      }
    }
    __syncthreads();
    tile::store_bias_relu<kTile * kTile, kBN>(
        out_tile, Tile::kLdOut, args.b_kxk, n0, args.cout, out, args.out_pixel_stride,
        [&](int m) { return out_pixel(m / kTile, m % kTile); });
  } else {
    constexpr int kTM1 = kRows / 16, kTN1 = kCK / 8;  // the 1x1: 16 x 8 threads
    constexpr int kTM2 = 4, kTN2 = 8;                 // the KxK: 16 x 8 threads of 4 x 8
    static_assert(16 * kTM2 == kTile * kTile && 8 * kTN2 == kBN && 128 == tile::kThreads);
    const int rg = threadIdx.x % 16, cg = threadIdx.x / 16;
    // The KxK thread's pixels: (ty, tx) = (rg / 8 + 2i, rg % 8), i < 4.
    float acc[kTM2][kTN2] = {};
    for (int64_t r0 = 0; r0 < args.cr; r0 += kCK) {
      float r_acc[kTM1][kTN1] = {};
      for (int64_t k0 = 0; k0 < cin_steps; k0 += kBK) {
        tile::fill_tile_transposed<kRows, kBK>(x_tile, Tile::kLdX,
                                               [&](int h, int c) { return x_value(h, k0 + c); });
        tile::load_matrix_tile<kBK, kCK>(w_red_tile, Tile::kLdWred, w_red, args.cin, args.cr, k0,
                                         r0, w_red_vec);
        __syncthreads();
        tile::fma_micro_gemm<kTM1, kTN1, 16, kBK>(r_acc, x_tile + rg, Tile::kLdX,
                                                  w_red_tile + kTN1 * cg, Tile::kLdWred);
        __syncthreads();
      }
      FI_UNROLL
      for (int i = 0; i < kTM1; ++i) {
        FI_UNROLL
        for (int j = 0; j < kTN1; ++j) {
          const int h = rg + 16 * i, c = kTN1 * cg + j;
          r_tile[c * Tile::kLdR + h] = reduced(h, r0 + c, r_acc[i][j]);
        }
      }
      load_w_kxk(r0);
      __syncthreads();
      for (int tap = 0; tap < K * K; ++tap) {
        const int ky = tap / K, kx = tap % K;
        tile::fma_micro_gemm<kTM2, kTN2, 2 * kHalo, kCK>(
            acc, r_tile + (rg / 8 + ky) * kHalo + rg % 8 + kx, Tile::kLdR,
            w_kxk_tile + tap * kCK * Tile::kLdWkxk + kTN2 * cg, Tile::kLdWkxk);
      }
    }
    tile::store_micro_tile_bias_relu(acc, args.b_kxk, n0 + kTN2 * cg, args.cout, out,
                                     args.out_pixel_stride,
                                     [&](int i) { return out_pixel(rg / 8 + 2 * i, rg % 8); });
  }
}

namespace {

template <typename T, int K>
const char* launch_chain_1x1_kxk(const ChainArgs& args, void* stream) {
  using Tile = ChainTile<T, K>;
  if (args.batch == 0 || args.height == 0 || args.width == 0 || args.cout == 0) return nullptr;
  auto kernel = chain_1x1_kxk_kernel<T, K>;
  const int64_t tiles = args.batch * ((args.height + Tile::kTile - 1) / Tile::kTile) *
                        ((args.width + Tile::kTile - 1) / Tile::kTile);
  return tile::launch<Tile::kSmemBytes>(kernel, tiles, (args.cout + Tile::kBN - 1) / Tile::kBN,
                                        stream, args);
}

template <typename T>
const char* launch_chain_1x1_kxk(const ChainArgs& args, void* stream) {
  switch (args.k) {
    case 3:
      return launch_chain_1x1_kxk<T, 3>(args, stream);
    case 5:
      return launch_chain_1x1_kxk<T, 5>(args, stream);
    default:
      return "chain_1x1_kxk: unsupported kernel size k (expected 3 or 5)";
  }
}

}  // namespace

const char* chain_1x1_kxk(const ChainArgs& args, void* stream) {
  return tile::dispatch_dtype(args.dtype, [&](auto element) {
    return launch_chain_1x1_kxk<decltype(element)>(args, stream);
  });
}

// The dynamic shared memory each instantiation launches with, named as c++filt prints the
// kernel. fused_inception/report/cuda.py compiles this file against the shim to read it
// (ptxas only sees static shared memory).
inline void chain_1x1_kxk_shared_memory(void (*emit)(const char* kernel, std::size_t bytes)) {
  emit("chain_1x1_kxk_kernel<float, 3>", ChainTile<float, 3>::kSmemBytes);
  emit("chain_1x1_kxk_kernel<float, 5>", ChainTile<float, 5>::kSmemBytes);
  emit("chain_1x1_kxk_kernel<__half, 3>", ChainTile<__half, 3>::kSmemBytes);
  emit("chain_1x1_kxk_kernel<__half, 5>", ChainTile<__half, 5>::kSmemBytes);
  emit("chain_1x1_kxk_kernel<__nv_bfloat16, 3>", ChainTile<__nv_bfloat16, 3>::kSmemBytes);
  emit("chain_1x1_kxk_kernel<__nv_bfloat16, 5>", ChainTile<__nv_bfloat16, 5>::kSmemBytes);
}

}  // namespace fused_inception::FI_KERNEL_NS
