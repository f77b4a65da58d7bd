// The Winograd F(2x2, 3x3) transforms of csrc/cpu/winograd_f2x3.cpp on raw rows, for the
// operators there and for the eval block operator (csrc/cpu/block_onednn.cpp), which runs the
// 16 GEMMs between them as one grouped oneDNN 1x1 convolution.
#pragma once

#include <cstdint>
#include <optional>

namespace fused_inception {
namespace winograd {

// The 2x2-output tiles of an n x h x w image batch, numbered t = (img * tiles_y + ty) * tiles_x
// + tx, and the flat range [begin, begin + count) of them that one call transforms. The range
// lets the caller bound the workspace (V and M hold 16 * C values per tile) by chunking in
// tiles rather than whole images: one 1024x1024 image is 262144 tiles.
struct TileGrid {
  int64_t batch, height, width, tiles_y, tiles_x;
  int64_t begin, count;
};

// The grid of n x h x w and the range [tile_begin, tile_begin + tile_count) (None: to the last
// tile), every product and sum overflow-checked (ValueError naming `op` otherwise).
TileGrid make_grid(const char* op, int64_t batch, int64_t height, int64_t width, int64_t tile_begin,
                   std::optional<int64_t> tile_count);

// n*h*w, the rows of r and out; refused where it overflows int64.
int64_t pixel_rows(const char* op, const TileGrid& grid);

// V = B^T d B of the range's tiles: r holds the n*h*w NHWC rows (row stride ld, `channels`
// contiguous values each), v is dense [grid.count, 16, channels]. With relu the tiles read
// relu(r) (NaN kept, as torch.relu), so a caller need not store the ReLU'd tensor first.
void input_tiles(const TileGrid& grid, const float* r, int64_t ld, int64_t channels, bool relu,
                 float* v);

// out = relu(A^T m A + bias) for the range's pixels: tile t's (t counted from grid.begin)
// position k (0..15) is m + t * tile_stride + k * pos_stride, `channels` contiguous values;
// out holds the n*h*w rows (row stride ld). Pixels of other tiles are not written.
void output_tiles(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                  const float* bias, float* out, int64_t ld, int64_t channels);

}  // namespace winograd
}  // namespace fused_inception
