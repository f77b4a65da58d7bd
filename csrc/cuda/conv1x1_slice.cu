// conv1x1_slice: branch 1 (b1) and branch 4 (b4) of the Inception block, stored into their
// channel slice of the block output:
//
//   out[p * out_pixel_stride + j] = relu(bias[j] + sum_c A[p, c] * w[c, j]),
//   p < N*H*W (pixels in NHWC order), j < cout,
//
// with A = x (b1), or with POOL the 3x3 stride-1 max-pool of x (padding counts as -inf: an
// all-negative neighbourhood stays negative), computed while the A tile is loaded into shared
// memory (nothing pooled is stored). See conv1x1_slice_kernel for grid and tiling. (Version 1
// of the CUDA backend; the Triton backend's version 2 is fused_inception/triton/block_1x1.py.)
#include "cuda/compat.cuh"
#include "cuda/kernels.h"
#include "cuda/tile_math.cuh"

namespace fused_inception::FI_KERNEL_NS {

// Tile sizes and the dynamic shared-memory layout (byte offsets) of conv1x1_slice_kernel<T, *>.
template <typename T>
struct Conv1x1Tile {
  static constexpr bool kTensorCores = tile::kTensorCores<T>;
  static constexpr int kBM = 64;  // pixels
  static constexpr int kBN = 64;  // output channels
  static constexpr int kBK = 64;  // input channels per step (few barriers: cin up to 832)
  // 16-bit: A [BM][BK] and B [BK][BN] row-major, rows padded by 8 elements (16 bytes: keeps
  // WMMA's 32-byte alignment of every 16th row, spreads the banks); the float C tile of the
  // epilogue [BM][BN + 4] reuses their space. fp32: A k-major [BK][BM + 1] (the micro-GEMM
  // reads a thread's pixels along a row), B [BK][BN].
  static constexpr int kLdA = kTensorCores ? kBK + 8 : kBM + 1;
  static constexpr int kLdB = kTensorCores ? kBN + 8 : kBN;
  static constexpr int kLdC = kBN + 4;
  static constexpr std::size_t kRowOffsets = 0;                        // int64 [BM]: p*cin or -1
  static constexpr std::size_t kRowYX = kRowOffsets + 8 * kBM;         // int [BM][2]: (y, x)
  static constexpr std::size_t kA = tile::align128(kRowYX + 8 * kBM);  // T [..][kLdA]
  static constexpr std::size_t kABytes = sizeof(T) * (kTensorCores ? kBM : kBK) * kLdA;
  static constexpr std::size_t kB = tile::align128(kA + kABytes);  // T [BK][kLdB]
  static constexpr std::size_t kABBytes = kB - kA + sizeof(T) * kBK * kLdB;
  static constexpr std::size_t kCBytes = kTensorCores ? sizeof(float) * kBM * kLdC : 0;
  static constexpr std::size_t kSmemBytes = kA + (kABBytes > kCBytes ? kABBytes : kCBytes);
};

// Grid: (ceil(N*H*W / BM), ceil(cout / BN)); 128 threads (4 warps). Block (bx, by) owns pixels
// [bx*BM, bx*BM + BM) x output channels [by*BN, by*BN + BN) and loops over cin in BK steps:
// load the A tile (x, or its max-pool) and the B tile (w) into shared memory with zero fill
// past the edges, one barrier, multiply, one barrier.
//   fp32:   each thread a 4 x 8 register tile (pixels tid%16 + 16i, channels 8*(tid/16) + j),
//           fp32 FMAs; it stores its tile straight from registers.
//   16-bit: each warp a 32 x 32 quarter as 2 x 2 WMMA m16n16k16 fragments (float accumulators);
//           the accumulators go through a float tile in shared memory to the epilogue.
// Reads x (BM pixels x cin, nine times with POOL, mostly cache hits), w [cin, cout] (the BN
// columns), bias; writes out[p * out_pixel_stride + j] for its pixels and channels only.
// Why: a 1x1 conv in NHWC is a GEMM, so the epilogue stores straight into the concatenated
// output; fusing the stride-1 pool into the A load saves writing and re-reading the pooled x.
template <typename T, bool POOL>
__global__ void __launch_bounds__(tile::kThreads)
    conv1x1_slice_kernel(const Conv1x1SliceArgs args) {
  using Tile = Conv1x1Tile<T>;
  constexpr int kBM = Tile::kBM, kBN = Tile::kBN, kBK = Tile::kBK;
  FI_DYNAMIC_SHARED(unsigned char, smem);
  const auto [row_offsets, row_yx, a_tile, b_tile] =
      tile::carve<int64_t, int, T, T>(smem, Tile::kRowOffsets, Tile::kRowYX, Tile::kA, Tile::kB);

  const T* x = static_cast<const T*>(args.x);
  const T* w = static_cast<const T*>(args.w);
  T* out = static_cast<T*>(args.out);
  const int64_t pixels = args.batch * args.height * args.width;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;

  // Per pixel row of the tile: its offset in x (int64: p * cin can pass 2^31) and (y, x).
  for (int m = threadIdx.x; m < kBM; m += tile::kThreads) {
    const int64_t p = m0 + m;
    row_offsets[m] = p < pixels ? tile::pixel_offset(p, args.cin) : -1;
    row_yx[2 * m] = static_cast<int>(p / args.width % args.height);
    row_yx[2 * m + 1] = static_cast<int>(p % args.width);
  }
  __syncthreads();

  // A[m0 + m, c]: x, or the max over the pixel's 3x3 neighbourhood inside the image (the
  // centre always is, so padding never wins); 0 past the last pixel or channel.
  auto a_value = [&](int m, int64_t c) -> T {
    const int64_t offset = row_offsets[m];
    if (offset < 0 || c >= args.cin) return tile::from_float<T>(0.0f);
    if constexpr (!POOL) {
      return x[offset + c];
    } else {
      const int y = row_yx[2 * m], xx = row_yx[2 * m + 1];
      float v = -INFINITY;
      for (int dy = -1; dy <= 1; ++dy) {
        if (y + dy < 0 || y + dy >= args.height) continue;
        for (int dx = -1; dx <= 1; ++dx) {
          if (xx + dx < 0 || xx + dx >= args.width) continue;
          v = tile::max_nan(v, tile::to_float(x[offset + (dy * args.width + dx) * args.cin + c]));
        }
      }
      return tile::from_float<T>(v);  // exact: v is one of the inputs
    }
  };
  // 16-byte vector loads where rows are whole vectors and aligned (GoogLeNet's channel counts
  // are multiples of 8); element loads otherwise. Uniform over the block.
  const bool x_vec = !POOL && args.cin % tile::kVec<T> == 0 && tile::aligned16(x);
  const bool w_vec = args.cout % tile::kVec<T> == 0 && tile::aligned16(w);

  if constexpr (Tile::kTensorCores) {
    const int warp = threadIdx.x / 32;
    const int warp_m = warp / 2, warp_n = warp % 2;
    tile::AccFragment<16, 16, 16> acc[2][2];
    tile::zero_fragments(acc);
    for (int64_t k0 = 0; k0 < args.cin; k0 += kBK) {
      tile::load_pixel_rows<kBM, kBK>(a_tile, Tile::kLdA, row_offsets, x, k0, args.cin, x_vec,
                                      a_value);
      tile::load_matrix_tile<kBK, kBN>(b_tile, Tile::kLdB, w, args.cin, args.cout, k0, n0, w_vec);
      __syncthreads();
      const T* const a[2] = {a_tile + (32 * warp_m) * Tile::kLdA,
                             a_tile + (32 * warp_m + 16) * Tile::kLdA};
      const T* const b[2] = {b_tile + 32 * warp_n, b_tile + 32 * warp_n + 16};
      tile::wmma_gemm<16, 16, 16, kBK>(acc, a, Tile::kLdA, b, Tile::kLdB);
      __syncthreads();
    }
    // The C tile reuses the A/B space: the last step's barrier ended their reads.
    float* c_tile = reinterpret_cast<float*>(smem + Tile::kA);
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) {
        nvcuda::wmma::store_matrix_sync(
            c_tile + (32 * warp_m + 16 * i) * Tile::kLdC + 32 * warp_n + 16 * j, acc[i][j],
            Tile::kLdC, nvcuda::wmma::mem_row_major);
      }
    }
    __syncthreads();
    tile::store_bias_relu<kBM, kBN>(c_tile, Tile::kLdC, args.bias, n0, args.cout, out,
                                    args.out_pixel_stride,
                                    [&](int m) { return m0 + m < pixels ? m0 + m : int64_t{-1}; });
  } else {
    constexpr int kTM = 4, kTN = 8;  // 16 x 8 threads of 4 x 8 = 64 x 64
    static_assert(16 * kTM == kBM && 8 * kTN == kBN && 128 == tile::kThreads);
    const int rg = threadIdx.x % 16, cg = threadIdx.x / 16;
    float acc[kTM][kTN] = {};
    for (int64_t k0 = 0; k0 < args.cin; k0 += kBK) {
      tile::fill_tile_transposed<kBM, kBK>(a_tile, Tile::kLdA,
                                           [&](int m, int c) { return a_value(m, k0 + c); });
      tile::load_matrix_tile<kBK, kBN>(b_tile, Tile::kLdB, w, args.cin, args.cout, k0, n0, w_vec);
      __syncthreads();
      tile::fma_micro_gemm<kTM, kTN, 16, kBK>(acc, a_tile + rg, Tile::kLdA, b_tile + kTN * cg,
                                              Tile::kLdB);
      __syncthreads();
    }
    tile::store_micro_tile_bias_relu(acc, args.bias, n0 + kTN * cg, args.cout, out,
                                     args.out_pixel_stride, [&](int i) {
                                       const int64_t p = m0 + rg + 16 * i;
                                       return p < pixels ? p : int64_t{-1};
                                     });
  }
}

namespace {

template <typename T, bool POOL>
const char* launch_conv1x1_slice(const Conv1x1SliceArgs& args, void* stream) {
  using Tile = Conv1x1Tile<T>;
  const int64_t pixels = args.batch * args.height * args.width;
  if (pixels == 0 || args.cout == 0) return nullptr;
  auto kernel = conv1x1_slice_kernel<T, POOL>;
  return tile::launch<Tile::kSmemBytes>(kernel, (pixels + Tile::kBM - 1) / Tile::kBM,
                                        (args.cout + Tile::kBN - 1) / Tile::kBN, stream, args);
}

template <typename T>
const char* launch_conv1x1_slice(const Conv1x1SliceArgs& args, void* stream) {
  return args.pool ? launch_conv1x1_slice<T, true>(args, stream)
                   : launch_conv1x1_slice<T, false>(args, stream);
}

}  // namespace

const char* conv1x1_slice(const Conv1x1SliceArgs& args, void* stream) {
  return tile::dispatch_dtype(args.dtype, [&](auto element) {
    return launch_conv1x1_slice<decltype(element)>(args, stream);
  });
}

// The dynamic shared memory each instantiation launches with, named as c++filt prints the
// kernel. fused_inception/report/cuda.py compiles this file against the shim to read it
// (ptxas only sees static shared memory).
inline void conv1x1_slice_shared_memory(void (*emit)(const char* kernel, std::size_t bytes)) {
  emit("conv1x1_slice_kernel<float, false>", Conv1x1Tile<float>::kSmemBytes);
  emit("conv1x1_slice_kernel<float, true>", Conv1x1Tile<float>::kSmemBytes);
  emit("conv1x1_slice_kernel<__half, false>", Conv1x1Tile<__half>::kSmemBytes);
  emit("conv1x1_slice_kernel<__half, true>", Conv1x1Tile<__half>::kSmemBytes);
  emit("conv1x1_slice_kernel<__nv_bfloat16, false>", Conv1x1Tile<__nv_bfloat16>::kSmemBytes);
  emit("conv1x1_slice_kernel<__nv_bfloat16, true>", Conv1x1Tile<__nv_bfloat16>::kSmemBytes);
}

}  // namespace fused_inception::FI_KERNEL_NS
