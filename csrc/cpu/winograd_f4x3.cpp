// The Winograd F(4x4, 3x3) transforms (declared in winograd_f2x3.h), for the eval block
// operator's wide 3x3 convolutions at batch sizes where their GEMMs have rows to spare
// (csrc/cpu/block_onednn.cpp, backends/cpu_winograd.py onednn_tile):
//
//   out = relu(A^T [ (G W G^T) . (B^T d B) ] A + B)
//
// per 4x4 output tile, d its 6x6 input window (zero outside the image), with the matrices of
// Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), points
// 0, 1, -1, 2, -2 and infinity:
//
//   B^T = [[4, 0,-5, 0, 1, 0],     G = [[ 1/4,     0,    0],    A^T = [[1, 1, 1, 1, 1, 0],
//          [0,-4,-4, 1, 1, 0],          [-1/6,  -1/6, -1/6],           [0, 1,-1, 2,-2, 0],
//          [0, 4,-4,-1, 1, 0],          [-1/6,   1/6, -1/6],           [0, 1, 1, 4, 4, 0],
//          [0,-2,-1, 2, 1, 0],          [1/24,  1/12,  1/6],           [0, 1,-1, 8,-8, 1]]
//          [0, 2,-1,-2, 1, 0],          [1/24, -1/12,  1/6],
//          [0, 4, 0,-5, 0, 1]]          [   0,     0,    1]]
//
// 36 products per 16 outputs (4x fewer multiply-adds than the direct convolution, against
// F(2x2, 3x3)'s 2.25x), as 36 GEMMs [T, C] x [C, Cout]. The price is accuracy and non-finite
// values: the transforms' coefficients up to 8 cost accuracy (GoogLeNet's 96 -> 128 alone in
// float32: 7e-6 of the output's scale, the direct convolution 2e-7; whole blocks about 1e-6,
// F(2x2, 3x3) 5e-7; the tests' bound is 1e-4), and a window
// row of B^T reads 4 of its 6 input rows, so a NaN or inf would reach outputs whose 3x3 window
// does not hold it. So the output transform reports whether any output before its ReLU was not
// finite (NaN or inf in r, or an overflow in the transforms or the GEMM: each input and product
// reaches some output with a non-zero coefficient, and inf - inf is NaN, never finite), and the
// caller then recomputes the branch by the direct convolution, which propagates them exactly as
// torch does. The weight transform G W G^T is done in float64, in Python, when packing.
//
// Loops run over the contiguous channels (vectorised; GCC's target_clones builds AVX2+FMA,
// AVX-512 and baseline versions, picked at load time); tiles in parallel. Offsets are int64.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/winograd_f2x3.h"

namespace fused_inception {
namespace winograd {
namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FI_MULTIVERSION4 __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define FI_MULTIVERSION4
#endif

constexpr int64_t kTilesPerTask = 4;

using detail::relu_bits;

// B^T applied to one column or row of six values.
struct Col6 {
  float v[6];
};
inline __attribute__((always_inline)) Col6 bt6(float d0, float d1, float d2, float d3, float d4,
                                               float d5) {
  const float a = d4 - 4.f * d2, b = d3 - 4.f * d1;  // rows 1 and 2: b + a, a - b
  const float c = d4 - d2, e = 2.f * (d3 - d1);      // rows 3 and 4: c + e, c - e
  return {{4.f * d0 - 5.f * d2 + d4, b + a, a - b, c + e, c - e, 4.f * d1 - 5.f * d3 + d5}};
}

// V[k][t][c] for k = 6 * i + j: (B^T d B)[i][j]; src[i][j] points at the channel vector of
// window pixel (i, j), or at zeros. With kRelu the window reads relu(d).
template <bool kRelu>
inline __attribute__((always_inline)) void input_tile4_impl(const float* const src[6][6], float* v,
                                                            int64_t pos_stride, int64_t channels) {
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float t[6][6];  // t = B^T d: column j of d through B^T
#pragma GCC unroll 6
    for (int j = 0; j < 6; ++j) {
      float d[6];
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) {
        d[i] = kRelu ? relu_bits(src[i][j][c]) : src[i][j][c];
      }
      const Col6 col = bt6(d[0], d[1], d[2], d[3], d[4], d[5]);
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) t[i][j] = col.v[i];
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {  // (B^T d) B: each row of t through B^T
      const Col6 row = bt6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]);
      float* dst = v + 6 * i * pos_stride + c;
#pragma GCC unroll 6
      for (int j = 0; j < 6; ++j) dst[j * pos_stride] = row.v[j];
    }
  }
}

FI_MULTIVERSION4
void input_tile4(const float* const src[6][6], float* v, int64_t pos_stride, int64_t channels) {
  input_tile4_impl<false>(src, v, pos_stride, channels);
}

FI_MULTIVERSION4
void input_tile4_relu(const float* const src[6][6], float* v, int64_t pos_stride,
                      int64_t channels) {
  input_tile4_impl<true>(src, v, pos_stride, channels);
}

// A^T applied to six values: four.
struct Col4 {
  float v[4];
};
inline __attribute__((always_inline)) Col4 at6(float m0, float m1, float m2, float m3, float m4,
                                               float m5) {
  const float p = m1 + m2, q = m1 - m2, r = m3 + m4, s = m3 - m4;
  return {{m0 + p + r, q + 2.f * s, p + 4.f * r, q + 8.f * s + m5}};
}
inline __attribute__((always_inline)) Col4 at6v(const float (&m)[6]) {
  return at6(m[0], m[1], m[2], m[3], m[4], m[5]);
}

// y = A^T m A + bias of one 4x4 output tile (detail::output_tile).
FI_MULTIVERSION4
uint32_t output_tile4(const float* m, int64_t pos_stride, const float* bias, float* const dst[4][4],
                      int64_t channels) {
  return detail::output_tile<6, true>(m, pos_stride, bias, dst, channels, at6v);
}

FI_MULTIVERSION4
uint32_t output_tile4_linear(const float* m, int64_t pos_stride, const float* bias,
                             float* const dst[4][4], int64_t channels) {
  return detail::output_tile<6, false>(m, pos_stride, bias, dst, channels, at6v);
}

// A applied to one column or row of four values (A = (A^T)^T, 6 x 4): six.
inline __attribute__((always_inline)) Col6 a4(float g0, float g1, float g2, float g3) {
  const float p = g0 + g2, q = g1 + g3, r = g0 + 4.f * g2, s = 2.f * g1 + 8.f * g3;
  return {{g0, p + q, p - q, r + s, r - s, g3}};
}

// Gy = A g A^T of one 4x4 tile of the output gradient (detail::grad_tile).
FI_MULTIVERSION4
void grad_tile4(const float* const src[4][4], float* gy, int64_t pos_stride, int64_t channels) {
  detail::grad_tile<6>(src, gy, pos_stride, channels, a4);
}

}  // namespace

void input_tiles4(const TileGrid& grid, const float* r, int64_t ld, int64_t channels, bool relu,
                  float* v) {
  detail::for_each_window<4>(grid, r, ld, channels, v, kTilesPerTask,
                             [&](const float* const src[6][6], float* dst) {
                               if (relu) {
                                 input_tile4_relu(src, dst, channels, channels);
                               } else {
                                 input_tile4(src, dst, channels, channels);
                               }
                             });
}

bool output_tiles4(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                   const float* bias, float* out, int64_t ld, int64_t channels, bool relu) {
  return detail::output_tiles_with<4>(grid, m, tile_stride, pos_stride, bias, out, ld, channels,
                                      relu ? output_tile4 : output_tile4_linear);
}

void input_tiles4_by_position(const TileGrid& grid, const float* r, int64_t ld, int64_t channels,
                              float* v) {
  detail::by_position(grid, channels, v,
                      [&](int64_t t, const float* zeros, float* dst, int64_t pos_stride) {
                        const float* window[6][6];
                        detail::window_rows<4>(grid, t, r, ld, zeros, window);
                        input_tile4(window, dst, pos_stride, channels);
                      });
}

void grad_tiles4_by_position(const TileGrid& grid, const float* g, int64_t ld, int64_t channels,
                             float* gy) {
  detail::by_position(grid, channels, gy,
                      [&](int64_t t, const float* zeros, float* dst, int64_t pos_stride) {
                        const float* src[4][4];
                        detail::output_rows<4>(grid, t, g, ld, zeros, src);
                        grad_tile4(src, dst, pos_stride, channels);
                      });
}

}  // namespace winograd
}  // namespace fused_inception
