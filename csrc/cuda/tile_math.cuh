// Tile math shared by the CUDA kernels (conv1x1_slice.cu, chain_1x1_kxk.cu):
//   - element conversions between the activation type (float, __half, __nv_bfloat16) and float;
//   - tile loads into shared memory with bounds checks and zero fill: element by element
//     through a callback, or in 16-byte vectors when rows are contiguous and aligned
//     (consecutive threads take consecutive columns, i.e. channels, so global reads coalesce);
//   - the fp32 CUDA-core micro-GEMM (each thread a TM x TN register tile);
//   - the WMMA tile GEMM (fp16/bf16 operands, float accumulators);
//   - the bias + ReLU epilogue that stores a float tile into the output channel slice.
// Everything lives in fused_inception::<cuda|emulated>::tile, so the nvcc build and the SIMT
// shim build can be linked into one library without clashing definitions.
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "cuda/compat.cuh"
#include "cuda/kernels.h"

// Loops over register tiles must be unrolled on the GPU (the accumulators stay in registers);
// g++ would warn about the CUDA pragma.
#if defined(__CUDACC__)
#define FI_UNROLL _Pragma("unroll")
#else
#define FI_UNROLL
#endif

namespace fused_inception::FI_KERNEL_NS::tile {

// Calls launch(T{}) with T the element type of `kind` (float, __half, __nv_bfloat16) and
// returns its result; a kind outside the enum gives an error message.
template <typename Launch>
inline const char* dispatch_dtype(ScalarKind kind, Launch&& launch) {
  switch (kind) {
    case ScalarKind::kFloat32:
      return launch(float{});
    case ScalarKind::kFloat16:
      return launch(__half{});
    case ScalarKind::kBFloat16:
      return launch(__nv_bfloat16{});
  }
  return "unsupported dtype (expected float32, float16 or bfloat16)";
}

// ReLU and max that propagate NaN as torch.relu and max_pool2d do (fmaxf would drop it).
__host__ __device__ __forceinline__ float relu(float v) { return v < 0.0f ? 0.0f : v; }
__host__ __device__ __forceinline__ float max_nan(float a, float b) {
  return (a > b || a != a) ? a : b;
}

// Threads per block of every kernel here: 4 warps.
inline constexpr int kThreads = 128;
inline constexpr int kWarps = kThreads / 32;

// Launches `kernel` on a blocks_x x blocks_y grid with kThreads threads per block and
// SMEM_BYTES of dynamic shared memory, opting in above 48 KiB as CUDA requires (once per kernel
// and device); nullptr, or this launch's error (fi_launch). Block counts come as int64 and are
// checked against CUDA's grid limits here: cast to unsigned first, a count past 2^32 would wrap
// into a smaller grid that leaves part of the output unwritten instead of failing.
template <std::size_t SMEM_BYTES, typename Kernel, typename Args>
inline const char* launch(Kernel kernel, int64_t blocks_x, int64_t blocks_y, void* stream,
                          const Args& args) {
  if (blocks_x < 1 || blocks_x > 2147483647 || blocks_y < 1 || blocks_y > 65535) {
    return "grid size out of range: the output needs more than CUDA's 2^31 - 1 x 65535 blocks "
           "(split the batch or the channels)";
  }
  if constexpr (SMEM_BYTES > 48 * 1024) {
    if (const char* error = fi_opt_in_dynamic_shared(kernel, SMEM_BYTES)) return error;
  }
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
  return fi_launch(kernel, grid, dim3(kThreads), SMEM_BYTES, stream, args);
}

// This block's dynamic shared memory cut into typed regions at a Tile's byte offsets:
// `const auto [a, b] = carve<T, float>(smem, Tile::kA, Tile::kB);` (P... the element types).
template <typename... P, typename... Offsets>
__host__ __device__ inline std::tuple<P*...> carve(unsigned char* smem, Offsets... offsets) {
  static_assert(sizeof...(P) == sizeof...(Offsets), "one byte offset per region");
  return {reinterpret_cast<P*>(smem + offsets)...};
}

__host__ __device__ constexpr int round_up(int value, int multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// Byte offsets of shared-memory regions: 128-byte aligned (WMMA needs 32).
__host__ __device__ constexpr std::size_t align128(std::size_t bytes) {
  return (bytes + 127) / 128 * 128;
}

// Offsets into NHWC tensors, int64 throughout: N*H*W*C passes 2^31 elements at large batches
// (5b's 832 channels at 7x7 from a batch of about 52,700; 3a's 192 at 28x28 from about 14,300),
// and so can pixel * pixel_stride of the block output. Every kernel index of x and out goes
// through these two; tests/cpp/offsets.cpp checks them past 2^31.
// Linear index of pixel (image, y, x) of an N x height x width grid.
__host__ __device__ constexpr int64_t pixel_index(int64_t image, int64_t y, int64_t x,
                                                  int64_t height, int64_t width) {
  return (image * height + y) * width + x;
}
// Element offset of a pixel's first channel in an NHWC tensor with pixel_stride elements per
// pixel (cin for x; c1 + c3 + c5 + cp for the block output).
__host__ __device__ constexpr int64_t pixel_offset(int64_t pixel, int64_t pixel_stride) {
  return pixel * pixel_stride;
}

template <typename T>
inline constexpr bool kTensorCores = !std::is_same_v<T, float>;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}

// m[row, col] of a row-major [rows, cols] matrix, or 0 outside it.
template <typename T>
__device__ __forceinline__ T load_or_zero(const T* m, int64_t row, int64_t rows, int64_t col,
                                          int64_t cols) {
  return row < rows && col < cols ? m[row * cols + col] : from_float<T>(0.0f);
}

// Elements per 16-byte vector.
template <typename T>
inline constexpr int kVec = 16 / static_cast<int>(sizeof(T));

// True when p is 16-byte aligned (vector loads allowed).
__device__ __forceinline__ bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// 16 bytes from src to dst (both 16-byte aligned), or zeros (src == nullptr).
template <typename T>
__device__ __forceinline__ void copy16(T* dst, const T* src) {
#if defined(__CUDACC__)
  *reinterpret_cast<uint4*>(dst) =
      src != nullptr ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
#else
  if (src != nullptr) {
    std::memcpy(static_cast<void*>(dst), src, 16);
  } else {
    std::memset(static_cast<void*>(dst), 0, 16);
  }
#endif
}

// Row-major tile in 16-byte vectors: dst[r * ld + c] = row(r)[c] for r < ROWS, c < COLS, where
// row(r) is the global address of the tile row's first element, or nullptr for a zero row, and
// columns c >= valid_cols are zero. Needs 16-byte aligned row(r) and dst rows (ld * sizeof(T)
// a multiple of 16) and valid_cols a multiple of kVec<T>, so a vector is wholly in or out.
template <int ROWS, int COLS, typename T, typename RowFn>
__device__ __forceinline__ void copy_tile_vec16(T* dst, int ld, RowFn row, int64_t valid_cols) {
  constexpr int kVecs = COLS / kVec<T>;
  static_assert(COLS % kVec<T> == 0, "tile columns must be whole 16-byte vectors");
  for (int i = threadIdx.x; i < ROWS * kVecs; i += kThreads) {
    const int r = i / kVecs, c = i % kVecs * kVec<T>;
    const T* src = row(r);
    copy16(dst + r * ld + c, src != nullptr && c < valid_cols ? src + c : nullptr);
  }
}

// dst[r * ld + c] = value(r, c) for r < ROWS, c < COLS (row-major tile).
template <int ROWS, int COLS, typename T, typename ValueFn>
__device__ __forceinline__ void fill_tile(T* dst, int ld, ValueFn value) {
  for (int i = threadIdx.x; i < ROWS * COLS; i += kThreads) {
    const int r = i / COLS, c = i % COLS;
    dst[r * ld + c] = value(r, c);
  }
}

// dst[c * ld + r] = value(r, c) (the transposed, k-major tile the fp32 micro-GEMM reads).
template <int ROWS, int COLS, typename T, typename ValueFn>
__device__ __forceinline__ void fill_tile_transposed(T* dst, int ld, ValueFn value) {
  for (int i = threadIdx.x; i < ROWS * COLS; i += kThreads) {
    const int r = i / COLS, c = i % COLS;
    dst[c * ld + r] = value(r, c);
  }
}

// A row-major tile of pixel rows x channels [k0, k0 + COLS) (the 16-bit paths' A operand): row
// r is the pixel at x + offsets[r] (offsets[r] < 0: no pixel, zeros). In 16-byte vectors
// straight from x when `vec`; else element by element as value(r, k0 + c), which is where a
// kernel computes more than a load (conv1x1's max-pool) and zero-fills past cin.
template <int ROWS, int COLS, typename T, typename ValueFn>
__device__ __forceinline__ void load_pixel_rows(T* dst, int ld, const int64_t* offsets, const T* x,
                                                int64_t k0, int64_t cin, bool vec, ValueFn value) {
  if (vec) {
    copy_tile_vec16<ROWS, COLS>(
        dst, ld, [&](int r) { return offsets[r] >= 0 ? x + offsets[r] + k0 : nullptr; }, cin - k0);
  } else {
    fill_tile<ROWS, COLS>(dst, ld, [&](int r, int c) { return value(r, k0 + c); });
  }
}

// Rows [row0, row0 + ROWS) x columns [col0, col0 + COLS) of a row-major [rows, cols] matrix m
// into dst (row pitch ld), zero outside m; in 16-byte vectors when `vec` (cols a multiple of
// kVec<T>, m 16-byte aligned, col0 a multiple of kVec<T>, ld * sizeof(T) a multiple of 16).
template <int ROWS, int COLS, typename T>
__device__ __forceinline__ void load_matrix_tile(T* dst, int ld, const T* m, int64_t rows,
                                                 int64_t cols, int64_t row0, int64_t col0,
                                                 bool vec) {
  if (vec) {
    copy_tile_vec16<ROWS, COLS>(
        dst, ld,
        [&](int r) -> const T* { return row0 + r < rows ? m + (row0 + r) * cols + col0 : nullptr; },
        cols - col0);
  } else {
    fill_tile<ROWS, COLS>(
        dst, ld, [&](int r, int c) { return load_or_zero(m, row0 + r, rows, col0 + c, cols); });
  }
}

// acc[i][j] += sum_k a[k * lda + i * ROW_STEP] * b[k * ldb + j], k < DEPTH: one thread's
// TM x TN register tile of a GEMM whose operands are both stored k-major in shared memory.
// ROW_STEP spaces the thread's rows (rows of neighbouring threads are adjacent: conflict-free).
template <int TM, int TN, int ROW_STEP, int DEPTH>
__device__ __forceinline__ void fma_micro_gemm(float (&acc)[TM][TN], const float* a, int lda,
                                               const float* b, int ldb) {
  for (int k = 0; k < DEPTH; ++k) {
    float av[TM], bv[TN];
    FI_UNROLL
    for (int i = 0; i < TM; ++i) av[i] = a[k * lda + i * ROW_STEP];
    FI_UNROLL
    for (int j = 0; j < TN; ++j) bv[j] = b[k * ldb + j];
    FI_UNROLL
    for (int i = 0; i < TM; ++i) {
      FI_UNROLL
      for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
    }
  }
}

template <int M, int N, int K>
using AccFragment = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, M, N, K, float>;

template <int M, int N, int K, int FM, int FN>
__device__ __forceinline__ void zero_fragments(AccFragment<M, N, K> (&acc)[FM][FN]) {
  FI_UNROLL
  for (int i = 0; i < FM; ++i) {
    FI_UNROLL
    for (int j = 0; j < FN; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
  }
}

// One warp: acc[i][j] += A_i (M x DEPTH at a[i], row-major, lda) * B_j (DEPTH x N at b[j],
// row-major, ldb) on the tensor cores, DEPTH in steps of K. Every lane calls it with the same
// arguments; the pointers must be 32-byte aligned and lda/ldb multiples of 8 elements.
template <int M, int N, int K, int DEPTH, int FM, int FN, typename T>
__device__ __forceinline__ void wmma_gemm(AccFragment<M, N, K> (&acc)[FM][FN],
                                          const T* const (&a)[FM], int lda, const T* const (&b)[FN],
                                          int ldb) {
  namespace wmma = nvcuda::wmma;
  FI_UNROLL
  for (int kk = 0; kk < DEPTH; kk += K) {
    wmma::fragment<wmma::matrix_a, M, N, K, T, wmma::row_major> fa[FM];
    wmma::fragment<wmma::matrix_b, M, N, K, T, wmma::row_major> fb[FN];
    FI_UNROLL
    for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(fa[i], a[i] + kk, lda);
    FI_UNROLL
    for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(fb[j], b[j] + kk * ldb, ldb);
    FI_UNROLL
    for (int i = 0; i < FM; ++i) {
      FI_UNROLL
      for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }
}

// out[pixel(m) * out_stride + n0 + j] = T(relu(tile[m * ldt + j] + bias[n0 + j])) for m < ROWS,
// j < COLS, skipping rows with pixel(m) < 0 and channels n0 + j >= cout. Consecutive threads
// store consecutive channels.
template <int ROWS, int COLS, typename T, typename PixelFn>
__device__ __forceinline__ void store_bias_relu(const float* tile, int ldt, const float* bias,
                                                int64_t n0, int64_t cout, T* out,
                                                int64_t out_stride, PixelFn pixel) {
  for (int i = threadIdx.x; i < ROWS * COLS; i += kThreads) {
    const int m = i / COLS, j = i % COLS;
    const int64_t p = pixel(m);
    if (p >= 0 && n0 + j < cout) {
      out[pixel_offset(p, out_stride) + n0 + j] =
          from_float<T>(relu(tile[m * ldt + j] + bias[n0 + j]));
    }
  }
}

// The same epilogue from a thread's fp32 register tile: row i is pixel(i), column j is channel
// col0 + j.
template <int TM, int TN, typename PixelFn>
__device__ __forceinline__ void store_micro_tile_bias_relu(const float (&acc)[TM][TN],
                                                           const float* bias, int64_t col0,
                                                           int64_t cout, float* out,
                                                           int64_t out_stride, PixelFn pixel) {
  FI_UNROLL
  for (int i = 0; i < TM; ++i) {
    const int64_t p = pixel(i);
    if (p < 0) continue;
    FI_UNROLL
    for (int j = 0; j < TN; ++j) {
      if (col0 + j < cout)
        out[pixel_offset(p, out_stride) + col0 + j] = relu(acc[i][j] + bias[col0 + j]);
    }
  }
}

}  // namespace fused_inception::FI_KERNEL_NS::tile
