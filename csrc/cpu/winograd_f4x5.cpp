// The Winograd F(4x4, 5x5) transforms, for the training operators' 5x5 convolutions (csrc/cpu/
// winograd_training.cpp): per 4x4 output tile with d its 8x8 input window (two pixels of zero
// padding),
//
//   y = A^T [ (G W G^T) . (B^T d B) ] A,
//
// from the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", CVPR 2016; the B^T of their F(6x6, 3x3), which depends on the
// points only):
//
//   B^T = [[1,    0, -21/4,     0,  21/4,     0, -1, 0],   A^T = [[1, 1,  1, 1,  1,   1,    1, 0],
//          [0,    1,     1, -17/4, -17/4,     1,  1, 0],          [0, 1, -1, 2, -2, 1/2, -1/2, 0],
//          [0,   -1,     1,  17/4, -17/4,    -1,  1, 0],          [0, 1,  1, 4,  4, 1/4,  1/4, 0],
//          [0,  1/2,   1/4,  -5/2,  -5/4,     2,  1, 0],          [0, 1, -1, 8, -8, 1/8, -1/8, 1]]
//          [0, -1/2,   1/4,   5/2,  -5/4,    -2,  1, 0],
//          [0,    2,     4,  -5/2,    -5,   1/2,  1, 0],
//          [0,   -2,     4,   5/2,    -5,  -1/2,  1, 0],
//          [0,   -1,     0,  21/4,     0, -21/4,  0, 1]]
//
// and G's rows c_p (1, p, p^2, p^3, p^4) (c_p = 1, -2/9, -2/9, 1/90, 1/90, 32/45, 32/45; the
// last row (0, 0, 0, 0, 1)), which winograd_training.cpp builds. 64 products per 16 outputs
// against the direct convolution's 400: 6.25x fewer multiply-adds. Accuracy in float32 (one
// tile, 64 channels of unit normals, against float64): median 3.9e-6 of the tile's largest
// output, F(4x4, 3x3)'s 2.1e-6; the transforms' coefficients are exact in float32 and G's are
// rounded once. Loops run over the contiguous channels as winograd_f4x3.cpp's; the rows of the
// points p and -p in pairs (even and odd parts), about half the operations of the matrices'.

#include <algorithm>
#include <cstdint>

#include "cpu/winograd_f2x3.h"

namespace fused_inception {
namespace winograd {
namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FI_MULTIVERSION45 __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define FI_MULTIVERSION45
#endif

struct Eight {
  float v[8];
};
struct Four {
  float v[4];
};

// B^T applied to one column or row of eight values: the rows in pairs (1, 2), (3, 4), (5, 6)
// are even + odd and even - odd of the points p and -p.
inline __attribute__((always_inline)) Eight bt8(float d0, float d1, float d2, float d3, float d4,
                                                float d5, float d6, float d7) {
  const float e1 = d2 + d6 - 4.25f * d4, o1 = d1 + d5 - 4.25f * d3;
  const float e2 = 0.25f * d2 + d6 - 1.25f * d4, o2 = 0.5f * d1 + 2.f * d5 - 2.5f * d3;
  const float e3 = 4.f * d2 + d6 - 5.f * d4, o3 = 2.f * d1 + 0.5f * d5 - 2.5f * d3;
  return {{(d0 - d6) + 5.25f * (d4 - d2), e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3,
           (d7 - d1) + 5.25f * (d3 - d5)}};
}

// A^T applied to eight values: four.
inline __attribute__((always_inline)) Four at8(float m0, float m1, float m2, float m3, float m4,
                                               float m5, float m6, float m7) {
  const float s1 = m1 + m2, d1 = m1 - m2, s2 = m3 + m4, d2 = m3 - m4, s3 = m5 + m6, d3 = m5 - m6;
  return {{m0 + s1 + s2 + s3, d1 + 2.f * d2 + 0.5f * d3, s1 + 4.f * s2 + 0.25f * s3,
           d1 + 8.f * d2 + 0.125f * d3 + m7}};
}

// A (= (A^T)^T, 8 x 4) applied to four values: eight.
inline __attribute__((always_inline)) Eight a4x8(float g0, float g1, float g2, float g3) {
  const float e1 = g0 + g2, o1 = g1 + g3;
  const float e2 = g0 + 4.f * g2, o2 = 2.f * g1 + 8.f * g3;
  const float e3 = g0 + 0.25f * g2, o3 = 0.5f * g1 + 0.125f * g3;
  return {{g0, e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3, g3}};
}

// V[k][c] for k = 8 * i + j: (B^T d B)[i][j]; src[i][j] points at the channel vector of window
// pixel (i, j), or at zeros. Position k is written at v + k * pos_stride.
FI_MULTIVERSION45
void input_tile8(const float* const src[8][8], float* v, int64_t pos_stride, int64_t channels) {
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float t[8][8];  // t = B^T d: column j of d through B^T
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const Eight col = bt8(src[0][j][c], src[1][j][c], src[2][j][c], src[3][j][c], src[4][j][c],
                            src[5][j][c], src[6][j][c], src[7][j][c]);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) t[i][j] = col.v[i];
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {  // (B^T d) B: each row of t through B^T
      const Eight row = bt8(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], t[i][6], t[i][7]);
      float* dst = v + 8 * i * pos_stride + c;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) dst[j * pos_stride] = row.v[j];
    }
  }
}

inline __attribute__((always_inline)) Four at8v(const float (&m)[8]) {
  return at8(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]);
}

// y = A^T m A + bias of one 4x4 output tile (detail::output_tile).
FI_MULTIVERSION45
uint32_t output_tile8(const float* m, int64_t pos_stride, const float* bias, float* const dst[4][4],
                      int64_t channels) {
  return detail::output_tile<8, true>(m, pos_stride, bias, dst, channels, at8v);
}

FI_MULTIVERSION45
uint32_t output_tile8_linear(const float* m, int64_t pos_stride, const float* bias,
                             float* const dst[4][4], int64_t channels) {
  return detail::output_tile<8, false>(m, pos_stride, bias, dst, channels, at8v);
}

// Gy = A g A^T of one 4x4 tile of the output gradient (detail::grad_tile).
FI_MULTIVERSION45
void grad_tile8(const float* const src[4][4], float* gy, int64_t pos_stride, int64_t channels) {
  detail::grad_tile<8>(src, gy, pos_stride, channels, a4x8);
}

}  // namespace

void input_tiles8_by_position(const TileGrid& grid, const float* r, int64_t ld, int64_t channels,
                              float* v) {
  detail::by_position(grid, channels, v,
                      [&](int64_t t, const float* zeros, float* dst, int64_t pos_stride) {
                        const float* window[8][8];
                        detail::window_rows<4, 2>(grid, t, r, ld, zeros, window);
                        input_tile8(window, dst, pos_stride, channels);
                      });
}

void grad_tiles8_by_position(const TileGrid& grid, const float* g, int64_t ld, int64_t channels,
                             float* gy) {
  detail::by_position(grid, channels, gy,
                      [&](int64_t t, const float* zeros, float* dst, int64_t pos_stride) {
                        const float* src[4][4];
                        detail::output_rows<4>(grid, t, g, ld, zeros, src);
                        grad_tile8(src, dst, pos_stride, channels);
                      });
}

bool output_tiles8(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                   const float* bias, float* out, int64_t ld, int64_t channels, bool relu) {
  return detail::output_tiles_with<4>(grid, m, tile_stride, pos_stride, bias, out, ld, channels,
                                      relu ? output_tile8 : output_tile8_linear);
}

}  // namespace winograd
}  // namespace fused_inception
