// transpose_copy (transpose.h): a transposing float32 copy, in tiles of 64 x 64 values (16 KB of
// the destination, which stays in L1 while the tile's 8 x 8 blocks fill it), the tiles of all
// matrices spread over the operators' threads.

#include "cpu/transpose.h"

#include <algorithm>
#include <cstdint>

#include "cpu/parallel.h"
#include "cpu/vector_isa.h"

namespace fused_inception {
namespace {

constexpr int64_t kTile = 64;

// One matrix's rows [r0, r1) x cols [c0, c1), value by value (the portable loop, and the
// remainders of the vector one). The ReLU is written as v < 0 ? 0 : v so that NaN stays NaN.
void transpose_scalar(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t r0,
                      int64_t r1, int64_t c0, int64_t c1, bool relu) {
  for (int64_t i = r0; i < r1; ++i) {
    const float* s = src + i * src_ld;
    for (int64_t j = c0; j < c1; ++j) {
      const float v = s[j];
      dst[j * dst_ld + i] = relu && v < 0.f ? 0.f : v;
    }
  }
}

#ifdef FI_X86_VECTOR
#define FUSED_INCEPTION_VECTOR_TRANSPOSE 1
#include <immintrin.h>

#define FI_TARGET_AVX2 __attribute__((target("avx2")))

// The 8 x 8 block at src (rows src_ld apart) into dst (rows dst_ld apart), transposed: rows are
// interleaved in pairs (unpack), pairs of pairs (shuffle), then the 128-bit halves exchanged
// (permute2f128), which leaves column k of the block in register k. The ReLU is max(0, v): x86's
// max returns its second operand when either is NaN, so NaN passes through.
template <bool kRelu>
FI_TARGET_AVX2 inline void block8x8_avx2(const float* src, int64_t src_ld, float* dst,
                                         int64_t dst_ld) {
  __m256 r[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * src_ld);
  __m256 t[8], s[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);      // row k, k+1 interleaved: cols 0,1 | 4,5
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);  // cols 2,3 | 6,7
  }
  for (int k = 0; k < 8; k += 4) {
    s[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);          // col 0 | 4 of rows k..k+3
    s[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);      // col 1 | 5
    s[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);  // col 2 | 6
    s[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);  // col 3 | 7
  }
  const __m256 zero = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    __m256 lo = _mm256_permute2f128_ps(s[k], s[k + 4], 0x20);  // column k
    __m256 hi = _mm256_permute2f128_ps(s[k], s[k + 4], 0x31);  // column k + 4
    if constexpr (kRelu) {
      lo = _mm256_max_ps(zero, lo);
      hi = _mm256_max_ps(zero, hi);
    }
    _mm256_storeu_ps(dst + k * dst_ld, lo);
    _mm256_storeu_ps(dst + (k + 4) * dst_ld, hi);
  }
}

template <bool kRelu>
FI_TARGET_AVX2 void tile_avx2(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                              int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const int64_t r8 = r0 + (r1 - r0) / 8 * 8, c8 = c0 + (c1 - c0) / 8 * 8;
  for (int64_t i = r0; i < r8; i += 8) {
    for (int64_t j = c0; j < c8; j += 8) {
      block8x8_avx2<kRelu>(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
    }
  }
  transpose_scalar(src, src_ld, dst, dst_ld, r0, r8, c8, c1, kRelu);  // right edge
  transpose_scalar(src, src_ld, dst, dst_ld, r8, r1, c0, c1, kRelu);  // bottom edge
}
#endif  // vector loops

}  // namespace

void transpose_copy(const float* src, int64_t src_batch, int64_t src_ld, float* dst,
                    int64_t dst_batch, int64_t dst_ld, int64_t batch, int64_t rows, int64_t cols,
                    bool relu) {
  if (batch <= 0 || rows <= 0 || cols <= 0) return;
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  const int64_t tiles = batch * row_tiles * col_tiles;
  // Copies below ~64K values run on the calling thread (a parallel region costs more).
  const int64_t grain = std::max<int64_t>(1, 65536 / (kTile * kTile));
  parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (row_tiles * col_tiles), rc = t % (row_tiles * col_tiles);
      const int64_t r0 = rc / col_tiles * kTile, c0 = rc % col_tiles * kTile;
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      const float* s = src + b * src_batch;
      float* d = dst + b * dst_batch;
#ifdef FUSED_INCEPTION_VECTOR_TRANSPOSE
      if (vector_isa() != VectorIsa::kNone) {
        if (relu) {
          tile_avx2<true>(s, src_ld, d, dst_ld, r0, r1, c0, c1);
        } else {
          tile_avx2<false>(s, src_ld, d, dst_ld, r0, r1, c0, c1);
        }
        continue;
      }
#endif
      transpose_scalar(s, src_ld, d, dst_ld, r0, r1, c0, c1, relu);
    }
  });
}

}  // namespace fused_inception
