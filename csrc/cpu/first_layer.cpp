// conv_bias_relu_nhwc's first layers on AVX-512 CPUs (gemm_panels.h, first_layer_avx512): a
// KxK convolution on a few channels read from the zero-padded NHWC copy the operator makes
// (ConvInput::merged: each kernel row is one tap of K * C contiguous floats), e.g. GoogLeNet's
// conv1 (3 -> 64 channels, 7x7, stride 2).
//
// Why a kernel of its own: gemm_panels' AVX-512 tile (12 pixels x 2 panels) takes one A pointer
// per pixel and tap, which for a first layer are 12 pointers live in the inner loop: the compiler
// spills them, and the tile ran GoogLeNet's conv1 at 56-70% of the FMA peak. Here a tile is P <= 6
// pixels of one output row and up to four panels (64 output channels): a pixel's A is the
// tile's first pixel plus a fixed step (stride * C floats), so the inner loop holds two pointers;
// per step of the reduction: up to four loads of the panels, P broadcasts and up to 24 FMAs into
// 24 of the 32 vector registers. One FMA chain per output in (tap, channel) order, from zero, then
// the bias (or scale * sum + bias) and ReLU with NaN kept: the same bits as gemm_panels' tiles.
// README "Backends" has the measurement.

#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "cpu/gemm_panels.h"
#include "cpu/parallel.h"
#include "cpu/vector_isa.h"

#ifdef FI_X86_VECTOR
#include <immintrin.h>
#endif

namespace fused_inception {

#ifdef FI_X86_VECTOR
namespace {

constexpr int kMaxPixels = 6;  // pixels per tile
constexpr int kMaxPanels = 4;  // panels per tile (a group)

// One tile's operands. A: tap row t, pixel r, element k at a + t * a_row + r * a_step + k.
// B: panel q's row (t * kc + k) at b + q * b_panel + (t * kc + k) * ldb. Output pixel r, panel q
// at out + r * ldc + q * 16; `cols` of the group's columns are written (the rest are padding).
struct Tile {
  const float* a;
  int64_t a_step, a_row;
  int taps;
  int64_t kc;
  const float* b;
  int64_t ldb, b_panel;
  const float* scale;  // nullptr: none
  const float* bias;
  float* out;
  int64_t ldc, cols;
  bool stream;
};

template <int P, int NV>
__attribute__((target("avx512f"))) void tile_first_layer(const Tile& s) {
  __m512 acc[P][NV];
  for (int r = 0; r < P; ++r) {
    for (int q = 0; q < NV; ++q) acc[r][q] = _mm512_setzero_ps();
  }
  const int64_t a_step = s.a_step, ldb = s.ldb, b_panel = s.b_panel, kc = s.kc;
  for (int t = 0; t < s.taps; ++t) {
    const float* a = s.a + t * s.a_row;
    const float* b = s.b + t * kc * ldb;
    for (int64_t k = 0; k < kc; ++k, b += ldb) {
      __m512 w[NV];
      for (int q = 0; q < NV; ++q) w[q] = _mm512_loadu_ps(b + q * b_panel);
      for (int r = 0; r < P; ++r) {
        const __m512 v = _mm512_set1_ps(a[r * a_step + k]);
        for (int q = 0; q < NV; ++q) acc[r][q] = _mm512_fmadd_ps(v, w[q], acc[r][q]);
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int q = 0; q < NV; ++q) {
    const int64_t valid = std::min<int64_t>(kPanel, s.cols - q * kPanel);
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512 bias_q = _mm512_maskz_loadu_ps(mask, s.bias + q * kPanel);
    const __m512 scale_q =
        s.scale != nullptr ? _mm512_maskz_loadu_ps(mask, s.scale + q * kPanel) : zero;
    for (int r = 0; r < P; ++r) {
      __m512 y = s.scale != nullptr ? _mm512_fmadd_ps(acc[r][q], scale_q, bias_q)
                                    : _mm512_add_ps(acc[r][q], bias_q);
      // max(0, y), NaN kept (x86's max returns its second operand when either is NaN)
      y = _mm512_maskz_max_ps(static_cast<__mmask16>(0xFFFF), zero, y);
      float* dst = s.out + r * s.ldc + q * kPanel;
      if (valid < kPanel) {
        _mm512_mask_storeu_ps(dst, mask, y);
      } else if (s.stream && reinterpret_cast<uintptr_t>(dst) % 64 == 0) {
        _mm512_stream_ps(dst, y);
      } else {
        _mm512_storeu_ps(dst, y);
      }
    }
  }
}

using TileFn = void (*)(const Tile&);

template <int NV, int... P>
constexpr std::array<TileFn, sizeof...(P)> tiles_of(std::integer_sequence<int, P...>) {
  return {&tile_first_layer<P + 1, NV>...};
}

// kTiles[NV - 1][P - 1]
const std::array<std::array<TileFn, kMaxPixels>, kMaxPanels> kTiles = {
    tiles_of<1>(std::make_integer_sequence<int, kMaxPixels>{}),
    tiles_of<2>(std::make_integer_sequence<int, kMaxPixels>{}),
    tiles_of<3>(std::make_integer_sequence<int, kMaxPixels>{}),
    tiles_of<4>(std::make_integer_sequence<int, kMaxPixels>{})};

}  // namespace
#endif

bool first_layer_avx512(const GemmJob& job) {
#ifdef FI_X86_VECTOR
  if (vector_isa() != VectorIsa::kAvx512) return false;
  const ConvInput& x = job.x;
  TORCH_CHECK(x.merged && x.pad == 0 && x.ld == x.c && x.kernel >= 1 && x.stride >= 1 &&
                  job.ranges.size() == 1 && job.ranges[0].begin == 0 &&
                  job.ranges[0].end == job.n_out,
              "first_layer_avx512: expects the zero-padded NHWC copy of a first layer and one "
              "output range");
  const int64_t n_out = job.n_out, ldc = job.ranges[0].ldc, panel_stride = job.b_panel_stride();
  const float *panels = job.panels, *bias = job.bias, *scale = job.scale;
  float* out = job.ranges[0].dst;
  const int64_t oh = x.out_h(), ow = x.out_w(), kc = x.kernel * x.c;
  const int64_t n_panels = (n_out + kPanel - 1) / kPanel;
  const int64_t groups = (n_panels + kMaxPanels - 1) / kMaxPanels;
  // Tiles of near-equal size across an output row: 112 pixels as 4 x 5 + 15 x 6, not 18 x 6 + 4.
  const int64_t tiles = (ow + kMaxPixels - 1) / kMaxPixels;
  if (x.n * oh * ow == 0 || n_out == 0) return true;
  parallel_for(0, x.n * oh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / oh, oy = row % oh;
      const float* a_row = x.data + ((image * x.h + oy * x.stride) * x.w) * x.c;
      float* out_row = out + row * ow * ldc;
      for (int64_t g = 0; g < groups; ++g) {  // a group's panels stay in L1 across the row
        const int64_t p0 = g * kMaxPanels, nv = std::min<int64_t>(kMaxPanels, n_panels - p0);
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t x0 = t * ow / tiles, count = (t + 1) * ow / tiles - x0;
          const Tile s{a_row + x0 * x.stride * x.c,
                       x.stride * x.c,
                       x.w * x.c,
                       x.kernel,
                       kc,
                       panels + p0 * panel_stride,
                       job.b_row_stride(),
                       panel_stride,
                       scale != nullptr ? scale + p0 * kPanel : nullptr,
                       bias + p0 * kPanel,
                       out_row + x0 * ldc + p0 * kPanel,
                       ldc,
                       std::min<int64_t>(nv * kPanel, n_out - p0 * kPanel),
                       job.stream};
          kTiles[nv - 1][count - 1](s);
        }
      }
    }
    _mm_sfence();  // this thread's non-temporal stores, if any, before the loop ends
  });
  return true;
#else
  (void)job;
  return false;
#endif
}

}  // namespace fused_inception
