// The Winograd F(2x2, 3x3) transforms of csrc/cpu/winograd_f2x3.cpp on raw rows, for the
// operators there and for the eval block operator (csrc/cpu/block_onednn.cpp), which runs the
// 16 GEMMs between them as one grouped oneDNN 1x1 convolution; the F(4x4, 3x3) ones of
// csrc/cpu/winograd_f4x3.cpp (36 GEMMs), which that operator takes where they pay; and the
// training operators' F(4x4, 3x3) and F(4x4, 5x5) ones (csrc/cpu/winograd_training.cpp), with
// the loops the sizes share as templates in `detail`.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

#include "cpu/parallel.h"

namespace fused_inception {
namespace winograd {

// The tile x tile-output tiles (tile 2 for F(2x2, 3x3), 4 for F(4x4, 3x3)) of an n x h x w
// image batch, numbered t = (img * tiles_y + ty) * tiles_x
// + tx, and the flat range [begin, begin + count) of them that one call transforms. The range
// lets the caller bound the workspace (V and M hold 16 * C values per tile) by chunking in
// tiles rather than whole images: one 1024x1024 image is 262144 tiles.
struct TileGrid {
  int64_t batch, height, width, tiles_y, tiles_x;
  int64_t begin, count;
  int64_t tile = 2;
};

// The grid of n x h x w in tile x tile tiles (2 or 4) and the range [tile_begin, tile_begin +
// tile_count) (None: to the last tile), every product and sum overflow-checked (ValueError
// naming `op` otherwise).
TileGrid make_grid(const char* op, int64_t batch, int64_t height, int64_t width, int64_t tile_begin,
                   std::optional<int64_t> tile_count, int64_t tile = 2);

// The rows a tile reads and writes, for both tile sizes (kTile = grid.tile).
namespace detail {

// window[i][j]: the NHWC row of pixel (i, j) of tile t's (kTile + 2 kPad)^2 input window (r's
// rows `ld` floats apart, the window kPad pixels above and left of the tile: 1 for a 3x3
// convolution, 2 for a 5x5), or `zeros` outside the image (the convolution's zero padding).
template <int kTile, int kPad = 1>
inline void window_rows(const TileGrid& grid, int64_t t, const float* r, int64_t ld,
                        const float* zeros,
                        const float* (&window)[kTile + 2 * kPad][kTile + 2 * kPad]) {
  const int64_t img = t / (grid.tiles_y * grid.tiles_x), ty = (t / grid.tiles_x) % grid.tiles_y,
                tx = t % grid.tiles_x;
#pragma GCC unroll 8
  for (int i = 0; i < kTile + 2 * kPad; ++i) {
    const int64_t y = kTile * ty - kPad + i;
#pragma GCC unroll 8
    for (int j = 0; j < kTile + 2 * kPad; ++j) {
      const int64_t x = kTile * tx - kPad + j;
      const bool inside = y >= 0 && y < grid.height && x >= 0 && x < grid.width;
      window[i][j] = inside ? r + ((img * grid.height + y) * grid.width + x) * ld : zeros;
    }
  }
}

// dst[i][j]: the row of tile t's pixel (i, j) in `rows` (rows `ld` floats apart), or
// `outside` for pixels past the image's bottom or right edge, so the transform has no
// branches: for an output, a scratch row to write; for an output gradient read by the weight
// gradient (const float), a row of zeros.
template <int kTile, typename T>
inline void output_rows(const TileGrid& grid, int64_t t, T* rows, int64_t ld, T* outside,
                        T* (&dst)[kTile][kTile]) {
  const int64_t img = t / (grid.tiles_y * grid.tiles_x), ty = (t / grid.tiles_x) % grid.tiles_y,
                tx = t % grid.tiles_x;
#pragma GCC unroll 4
  for (int i = 0; i < kTile; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < kTile; ++j) {
      const int64_t y = kTile * ty + i, x = kTile * tx + j;
      dst[i][j] = (y < grid.height && x < grid.width)
                      ? rows + ((img * grid.height + y) * grid.width + x) * ld
                      : outside;
    }
  }
}

// transform(window, v_tile) for every tile t of the range, in parallel (tiles_per_task tiles
// per task): window as window_rows gives it (zeros: `channels` zeros), v_tile = v + (t -
// grid.begin) * (kTile + 2)^2 * channels, the tile's dense V.
template <int kTile, typename Transform>
void for_each_window(const TileGrid& grid, const float* r, int64_t ld, int64_t channels, float* v,
                     int64_t tiles_per_task, const Transform& transform) {
  const std::vector<float> zeros(channels, 0.f);
  parallel_for(grid.begin, grid.begin + grid.count, tiles_per_task,
               [&](int64_t begin, int64_t end) {
                 for (int64_t t = begin; t < end; ++t) {
                   const float* window[kTile + 2][kTile + 2];
                   window_rows<kTile>(grid, t, r, ld, zeros.data(), window);
                   transform(window, v + (t - grid.begin) * (kTile + 2) * (kTile + 2) * channels);
                 }
               });
}

// tile(t, zeros, dst, pos_stride) for every tile t of the range, in parallel (kTilesPerTask
// tiles per task): dst = out + (t - grid.begin) * channels, position k of the tile at dst + k *
// pos_stride (pos_stride = grid.count * channels: the position-major [P, grid.count, channels]
// layout of the training operators' transforms); zeros holds `channels` zeros.
template <typename Tile>
void by_position(const TileGrid& grid, int64_t channels, float* out, const Tile& tile) {
  constexpr int64_t kTilesPerTask = 4;
  const std::vector<float> zeros(channels, 0.f);
  const int64_t first = grid.begin, pos_stride = grid.count * channels;
  parallel_for(first, first + grid.count, kTilesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      tile(t, zeros.data(), out + (t - first) * channels, pos_stride);
    }
  });
}

// The exponent bits of x: 0x7f800000 exactly when x is NaN or +-inf.
inline uint32_t exponent_bits(float x) { return std::bit_cast<uint32_t>(x) & 0x7f800000u; }

// torch.relu on the bits, for loops that must vectorise: a float comparison on loaded values is
// a branch GCC will not if-convert (it may trap), an integer select it will. Zeroed where the
// sign bit is set and the value is not NaN (magnitude bits <= those of inf); -0 becomes +0.
inline float relu_bits(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t negative = (u >> 31) & static_cast<uint32_t>((u & 0x7fffffffu) <= 0x7f800000u);
  return std::bit_cast<float>(u & (negative - 1u));
}

// Gy[k][c] for k = kAlpha * i + j: (A g A^T)[i][j] of one 4x4 tile of an output gradient, A
// applied by a(g0, g1, g2, g3) (kAlpha values in .v: F(4x4, 3x3)'s 6, F(4x4, 5x5)'s 8);
// src[i][j] points at the channel vector of tile pixel (i, j), or at zeros past the image.
// Position k is written at gy + k * pos_stride. Inlined into each ISA's version of its caller.
template <int kAlpha, typename ApplyA>
inline __attribute__((always_inline)) void grad_tile(const float* const src[4][4], float* gy,
                                                     int64_t pos_stride, int64_t channels,
                                                     const ApplyA& a) {
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float t[kAlpha][4];  // t = A g: column j of g through A
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const auto col = a(src[0][j][c], src[1][j][c], src[2][j][c], src[3][j][c]);
#pragma GCC unroll 8
      for (int i = 0; i < kAlpha; ++i) t[i][j] = col.v[i];
    }
#pragma GCC unroll 8
    for (int i = 0; i < kAlpha; ++i) {  // (A g) A^T: each row of t through A
      const auto row = a(t[i][0], t[i][1], t[i][2], t[i][3]);
      float* dst = gy + kAlpha * i * pos_stride + c;
#pragma GCC unroll 8
      for (int j = 0; j < kAlpha; ++j) dst[j * pos_stride] = row.v[j];
    }
  }
}

// y = A^T m A + bias of one 4x4 output tile, A^T applied by at(v) (v: kAlpha values; four in
// .v), dst[i][j] = relu(y[i][j]) (kRelu) or y[i][j]; position k of the tile is m + k *
// pos_stride. Returns the largest exponent field of any y (0x7f800000 exactly if one was NaN
// or inf). Outputs outside the image point at a scratch row. Inlined into each ISA's version
// of its caller.
template <int kAlpha, bool kRelu, typename ApplyAt>
inline __attribute__((always_inline)) uint32_t output_tile(const float* m, int64_t pos_stride,
                                                           const float* bias,
                                                           float* const dst[4][4], int64_t channels,
                                                           const ApplyAt& at) {
  uint32_t seen = 0;
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float a[4][kAlpha];  // A^T m: column j of m through A^T
#pragma GCC unroll 8
    for (int j = 0; j < kAlpha; ++j) {
      float col[kAlpha];
#pragma GCC unroll 8
      for (int i = 0; i < kAlpha; ++i) col[i] = m[(kAlpha * i + j) * pos_stride + c];
      const auto out = at(col);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) a[i][j] = out.v[i];
    }
    uint32_t largest = 0;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const auto row = at(a[i]);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const float y = row.v[j] + bias[c];
        largest = std::max(largest, exponent_bits(y));
        dst[i][j][c] = kRelu ? relu_bits(y) : y;
      }
    }
    seen = std::max(seen, largest);
  }
  return seen;
}

// out = output(m_tile, pos_stride, bias, dst, channels) for every kTile x kTile output tile of
// the range, in parallel (tile t's positions from m + (t - grid.begin) * tile_stride, its pixels
// by output_rows); output returns the largest exponent field of its values. Returns true if any
// was NaN or inf.
template <int kTile, typename Output>
bool output_tiles_with(const TileGrid& grid, const float* m, int64_t tile_stride,
                       int64_t pos_stride, const float* bias, float* out, int64_t ld,
                       int64_t channels, const Output& output) {
  constexpr int64_t kTilesPerTask = 4;
  const int64_t first = grid.begin;
  std::atomic<bool> nonfinite{false};
  parallel_for(first, first + grid.count, kTilesPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(channels);
    uint32_t largest = 0;
    for (int64_t t = begin; t < end; ++t) {
      float* dst[kTile][kTile];
      output_rows<kTile>(grid, t, out, ld, scratch.data(), dst);
      largest =
          std::max(largest, output(m + (t - first) * tile_stride, pos_stride, bias, dst, channels));
    }
    if (largest == 0x7f800000u) nonfinite.store(true, std::memory_order_relaxed);
  });
  return nonfinite.load();
}

}  // namespace detail

// n*h*w, the rows of r and out; refused where it overflows int64.
int64_t pixel_rows(const char* op, const TileGrid& grid);

// V = B^T d B of the range's tiles (F(4x4, 3x3)'s, input_tiles4, for grid.tile 4): r holds
// the n*h*w NHWC rows (row stride ld, `channels` contiguous values each), v is dense
// [grid.count, 16 (36 for tile 4), channels]. With relu the tiles read
// relu(r) (NaN kept, as torch.relu), so a caller need not store the ReLU'd tensor first.
void input_tiles(const TileGrid& grid, const float* r, int64_t ld, int64_t channels, bool relu,
                 float* v);

// out = relu(A^T m A + bias) for the range's pixels: tile t's (t counted from grid.begin)
// position k (0..15) is m + t * tile_stride + k * pos_stride, `channels` contiguous values;
// out holds the n*h*w rows (row stride ld). Pixels of other tiles are not written.
void output_tiles(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                  const float* bias, float* out, int64_t ld, int64_t channels);

// F(4x4, 3x3) (grid.tile == 4): V = B^T d B of the range's tiles into v, dense [grid.count,
// 36, channels], as input_tiles.
void input_tiles4(const TileGrid& grid, const float* r, int64_t ld, int64_t channels, bool relu,
                  float* v);

// F(4x4, 3x3): out = relu(A^T m A + bias) (without relu: A^T m A + bias) for the range's
// pixels, position k (0..35) of tile t at m + t * tile_stride + k * pos_stride, as
// output_tiles. Returns true if any output before its ReLU was NaN or inf (pixels outside the
// image included): the caller must then recompute the convolution directly, whose non-finite
// values land where torch's do (winograd_f4x3.cpp).
bool output_tiles4(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                   const float* bias, float* out, int64_t ld, int64_t channels, bool relu = true);

// The training operators' F(4x4, 3x3) (csrc/cpu/winograd_training.cpp): the same V = B^T d B as
// input_tiles4, and Gy = A g A^T of the range's 4x4 tiles of an output gradient g (NHWC rows,
// row stride ld, zero past the image), both position-major: [36, grid.count, channels], position
// k of tile t at (k * grid.count + t - grid.begin) * channels, so that each position's GEMM
// reads dense rows.
void input_tiles4_by_position(const TileGrid& grid, const float* r, int64_t ld, int64_t channels,
                              float* v);
void grad_tiles4_by_position(const TileGrid& grid, const float* g, int64_t ld, int64_t channels,
                             float* gy);

// F(4x4, 5x5) (csrc/cpu/winograd_f4x5.cpp; grid.tile == 4), for the training operators'
// 5x5 convolutions: V = B^T d B of the range's 8x8 windows (two pixels of zero padding) and
// Gy = A g A^T of its 4x4 tiles of an output gradient, position-major as the two above ([64,
// grid.count, channels]); and out = relu(A^T m A + bias) (without relu: A^T m A + bias) for
// the range's pixels from positions k (0..63) of tile t at m + t * tile_stride + k * pos_stride,
// returning true where an output was NaN or inf, as output_tiles4.
void input_tiles8_by_position(const TileGrid& grid, const float* r, int64_t ld, int64_t channels,
                              float* v);
void grad_tiles8_by_position(const TileGrid& grid, const float* g, int64_t ld, int64_t channels,
                             float* gy);
bool output_tiles8(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                   const float* bias, float* out, int64_t ld, int64_t channels, bool relu);

}  // namespace winograd
}  // namespace fused_inception
