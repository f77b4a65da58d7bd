// transpose_copy (transpose.h): a transposing float32 copy. With AVX-512, 16 x 16 blocks in
// tasks of one range of a matrix's rows or columns, one task per thread and matrix (the
// pixels' dimension, which the block operator's loops before and after the copy split the same
// way, so that each thread mostly reads what it wrote, from its own L2); otherwise in tiles of
// 64 x 64 values (16 KB of the destination, which stays in L1 while the tile's 8 x 8 blocks
// fill it), the tiles of all matrices spread over the operators' threads.
//
// The AVX-512 loop since 2026-12-06, measured on a 2-core Emerald Rapids Xeon. One thread, a
// standalone copy of the loops, hot, several runs: 4c's x at batch 1 (512 x 196) 40-53 us
// against 57-68 us with the 8 x 8 tiles, 196 x 256 16-20 against 18-24, a 28x28 branch at
// batch 8 (784 x 480) 273-327 against 488-780 (64 x 64 tiles of 16 x 16 blocks: 643-709). The
// benchmark's prepared blocks on NCHW input, switched per call and interleaved in one process:
// batch 1 0.96-1.00x the time (4c 0.964x, 3a 0.967x, 4d 0.967x), batch 8 0.95-1.00x (4c
// 0.948x); channels_last input, which takes no copies, 0.99-1.01x.

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

// The 16 x 16 block at src (rows src_ld apart) into dst (rows dst_ld apart), transposed in
// AVX-512 registers: rows interleaved in pairs (unpack) and pairs of pairs (shuffle), which
// leaves in register 4g + q column q + 4L of rows 4g..4g+3 in 128-bit lane L; then the lanes of
// the four groups gathered (two rounds of shuffle_f32x4), column k of the block in register k.
// The ReLU as in block8x8_avx2. Each operation in its zero-masked form with every lane kept
// (FI_ALL; the same instruction): GCC 12's unmasked forms warn about their undefined
// pass-through operand.
#define FI_ALL(op, ...) _mm512_maskz_##op(static_cast<__mmask16>(0xFFFF), __VA_ARGS__)
template <bool kRelu>
__attribute__((target("avx512f"))) inline void block16x16_avx512(const float* src, int64_t src_ld,
                                                                 float* dst, int64_t dst_ld) {
  __m512 r[16], t[16];
  for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(src + k * src_ld);
  for (int k = 0; k < 16; k += 2) {
    t[k] = FI_ALL(unpacklo_ps, r[k], r[k + 1]);
    t[k + 1] = FI_ALL(unpackhi_ps, r[k], r[k + 1]);
  }
  for (int k = 0; k < 16; k += 4) {
    r[k] = FI_ALL(shuffle_ps, t[k], t[k + 2], 0x44);
    r[k + 1] = FI_ALL(shuffle_ps, t[k], t[k + 2], 0xEE);
    r[k + 2] = FI_ALL(shuffle_ps, t[k + 1], t[k + 3], 0x44);
    r[k + 3] = FI_ALL(shuffle_ps, t[k + 1], t[k + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    // lanes 0 and 2, then 1 and 3, of groups 0 and 1 (ab) and of groups 2 and 3 (cd)
    const __m512 ab02 = FI_ALL(shuffle_f32x4, r[q], r[4 + q], 0x88);
    const __m512 ab13 = FI_ALL(shuffle_f32x4, r[q], r[4 + q], 0xDD);
    const __m512 cd02 = FI_ALL(shuffle_f32x4, r[8 + q], r[12 + q], 0x88);
    const __m512 cd13 = FI_ALL(shuffle_f32x4, r[8 + q], r[12 + q], 0xDD);
    t[q] = FI_ALL(shuffle_f32x4, ab02, cd02, 0x88);       // lane 0 of each group: column q
    t[q + 8] = FI_ALL(shuffle_f32x4, ab02, cd02, 0xDD);   // lane 2: column q + 8
    t[q + 4] = FI_ALL(shuffle_f32x4, ab13, cd13, 0x88);   // lane 1: column q + 4
    t[q + 12] = FI_ALL(shuffle_f32x4, ab13, cd13, 0xDD);  // lane 3: column q + 12
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int k = 0; k < 16; ++k) {
    const __m512 v = kRelu ? FI_ALL(max_ps, zero, t[k]) : t[k];
    _mm512_storeu_ps(dst + k * dst_ld, v);
  }
}
#undef FI_ALL

// Rows [r0, r1) x cols [c0, c1) by 16 x 16 blocks, row block by row block, each from left to
// right; the edges by tile_avx2.
template <bool kRelu>
__attribute__((target("avx512f"))) void region_avx512(const float* src, int64_t src_ld, float* dst,
                                                      int64_t dst_ld, int64_t r0, int64_t r1,
                                                      int64_t c0, int64_t c1) {
  const int64_t r16 = r0 + (r1 - r0) / 16 * 16, c16 = c0 + (c1 - c0) / 16 * 16;
  for (int64_t i = r0; i < r16; i += 16) {
    for (int64_t j = c0; j < c16; j += 16) {
      block16x16_avx512<kRelu>(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
    }
  }
  if (c16 < c1) tile_avx2<kRelu>(src, src_ld, dst, dst_ld, r0, r16, c16, c1);
  if (r16 < r1) tile_avx2<kRelu>(src, src_ld, dst, dst_ld, r16, r1, c0, c1);
}
#endif  // vector loops

}  // namespace

void transpose_copy(const float* src, int64_t src_batch, int64_t src_ld, float* dst,
                    int64_t dst_batch, int64_t dst_ld, int64_t batch, int64_t rows, int64_t cols,
                    bool relu, bool split_cols) {
  if (batch <= 0 || rows <= 0 || cols <= 0) return;
#ifdef FUSED_INCEPTION_VECTOR_TRANSPOSE
  // AVX-512: each thread one range of columns (split_cols) or of rows, 16 x 16 blocks row block
  // by row block, each from left to right.
  if (vector_isa() == VectorIsa::kAvx512) {
    const int64_t along = split_cols ? cols : rows, other = split_cols ? rows : cols;
    const int64_t blocks = (along + 15) / 16;
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t per = (blocks + threads - 1) / threads, parts = (blocks + per - 1) / per;
    const int64_t grain = std::max<int64_t>(1, 65536 / (16 * per * other));
    const auto region = relu ? &region_avx512<true> : &region_avx512<false>;
    parallel_for(0, batch * parts, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / parts, lo = t % parts * per * 16;
        const int64_t hi = std::min(along, lo + per * 16);
        const int64_t r0 = split_cols ? 0 : lo, r1 = split_cols ? rows : hi;
        const int64_t c0 = split_cols ? lo : 0, c1 = split_cols ? hi : cols;
        const float* s = src + b * src_batch;
        float* d = dst + b * dst_batch;
        region(s, src_ld, d, dst_ld, r0, r1, c0, c1);
      }
    });
    return;
  }
#endif
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
        (relu ? &tile_avx2<true> : &tile_avx2<false>)(s, src_ld, d, dst_ld, r0, r1, c0, c1);
        continue;
      }
#endif
      transpose_scalar(s, src_ld, d, dst_ld, r0, r1, c0, c1, relu);
    }
  });
}

}  // namespace fused_inception
