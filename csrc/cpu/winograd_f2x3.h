// The Winograd F(2x2, 3x3) transforms of csrc/cpu/winograd_f2x3.cpp on raw rows, for the
// operators there and for the eval block operator (csrc/cpu/block_onednn.cpp), which runs the
// 16 GEMMs between them as one grouped oneDNN 1x1 convolution; and the F(4x4, 3x3) ones of
// csrc/cpu/winograd_f4x3.cpp (36 GEMMs), which that operator takes where they pay.
#pragma once

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

// window[i][j]: the NHWC row of pixel (i, j) of tile t's (kTile + 2)^2 input window (r's rows
// `ld` floats apart, the window one pixel above and left of the tile), or `zeros` outside the
// image (the convolution's zero padding).
template <int kTile>
inline void window_rows(const TileGrid& grid, int64_t t, const float* r, int64_t ld,
                        const float* zeros, const float* (&window)[kTile + 2][kTile + 2]) {
  const int64_t img = t / (grid.tiles_y * grid.tiles_x), ty = (t / grid.tiles_x) % grid.tiles_y,
                tx = t % grid.tiles_x;
#pragma GCC unroll 6
  for (int i = 0; i < kTile + 2; ++i) {
    const int64_t y = kTile * ty - 1 + i;
#pragma GCC unroll 6
    for (int j = 0; j < kTile + 2; ++j) {
      const int64_t x = kTile * tx - 1 + j;
      const bool inside = y >= 0 && y < grid.height && x >= 0 && x < grid.width;
      window[i][j] = inside ? r + ((img * grid.height + y) * grid.width + x) * ld : zeros;
    }
  }
}

// dst[i][j]: the output row of tile t's pixel (i, j) (rows `ld` floats apart), or `scratch`
// for pixels past the image's bottom or right edge, so the transform has no branches.
template <int kTile>
inline void output_rows(const TileGrid& grid, int64_t t, float* out, int64_t ld, float* scratch,
                        float* (&dst)[kTile][kTile]) {
  const int64_t img = t / (grid.tiles_y * grid.tiles_x), ty = (t / grid.tiles_x) % grid.tiles_y,
                tx = t % grid.tiles_x;
#pragma GCC unroll 4
  for (int i = 0; i < kTile; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < kTile; ++j) {
      const int64_t y = kTile * ty + i, x = kTile * tx + j;
      dst[i][j] = (y < grid.height && x < grid.width)
                      ? out + ((img * grid.height + y) * grid.width + x) * ld
                      : scratch;
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

// torch.relu on the bits, for loops that must vectorise: a float comparison on loaded values is
// a branch GCC will not if-convert (it may trap), an integer select it will. Zeroed where the
// sign bit is set and the value is not NaN (magnitude bits <= those of inf); -0 becomes +0.
inline float relu_bits(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t negative = (u >> 31) & static_cast<uint32_t>((u & 0x7fffffffu) <= 0x7f800000u);
  return std::bit_cast<float>(u & (negative - 1u));
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

// F(4x4, 3x3)'s weight gradient (csrc/cpu/winograd_weight_grad.cpp): the same V = B^T d B as
// input_tiles4, and Gy = A g A^T of the range's 4x4 tiles of an output gradient g (NHWC rows,
// row stride ld, zero past the image), both position-major: [36, grid.count, channels], position
// k of tile t at (k * grid.count + t - grid.begin) * channels, so that each position's GEMM
// reads dense rows.
void input_tiles4_by_position(const TileGrid& grid, const float* r, int64_t ld, int64_t channels,
                              float* v);
void grad_tiles4_by_position(const TileGrid& grid, const float* g, int64_t ld, int64_t channels,
                             float* gy);

}  // namespace winograd
}  // namespace fused_inception
