// CPU kernels of the Winograd F(2x2, 3x3) convolution that the CPU backend uses for the 3x3
// convolution of a branch (b2 always, b3 in torchvision's form):
//
//   out = relu(conv3x3(r, W, pad 1) + B)  =  relu(A^T [ (G W G^T) . (B^T d B) ] A + B)
//
// per 2x2 output tile, with d the tile's 4x4 input window (zero outside the image: the padding
// applies to r, the reduced tensor). The element-wise products over the 16 positions are 16
// independent GEMMs [T tiles, C] x [C, Cout], which the backend runs as one torch.bmm (or, in
// the eval block operator on oneDNN, as one grouped 1x1 convolution); these kernels are the two
// transforms around it:
//   - winograd_f2x3_input:   r rows [N*H*W, C] (NHWC, any row stride) -> V [T, 16, C]
//   - winograd_f2x3_output_: M [16, T, Cout] (channels contiguous, any other strides) ->
//     relu(A^T M A + B) written into out rows [N*H*W, Cout] (any row stride: a channel slice of
//     the block's output).
// The transforms on raw rows (winograd_f2x3.h) are shared with csrc/cpu/block_onednn.cpp.
// Both take a flat range of T tiles out of the N*ceil(H/2)*ceil(W/2), so that the caller can
// bound V and M (16*C floats per tile) whatever the image size (cpu_winograd.py).
// The weight transform G W G^T happens once, in Python, when parameters are packed.
//
// Why: the 3x3 convolutions are most of the block's multiply-adds, and on this CPU they and the
// GEMMs already run at the FMA peak, so doing fewer of them is what is left: F(2,3) needs 16
// products per 2x2 outputs instead of 36 (2.25x fewer). Its transforms use only additions with
// coefficients 0, +-1 (and 1/2 in G, applied in float64), so it loses far less accuracy than
// larger tiles would; the parity tests check it against float64 references at 1e-4.
//
// Checks: every product and sum of the caller's integers is overflow-checked, and `out` must not
// overlap m or bias (csrc/overlap.h).
//
// Parallelisation: parallel_for over tiles; inside a tile the loop runs over the contiguous
// channel dimension, compiled twice (AVX2+FMA and baseline) with GCC's target_clones and picked
// at load time, so the module still runs on CPUs without AVX2. Offsets are int64.

#include "cpu/winograd_f2x3.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

#include "cpu/parallel.h"
#include "overlap.h"

namespace fused_inception {
namespace winograd {
namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FI_MULTIVERSION __attribute__((target_clones("avx2,fma", "default")))
#else
#define FI_MULTIVERSION
#endif

constexpr int64_t kTilesPerTask = 16;

// torch.relu's value: x < 0 -> 0, NaN stays NaN.
inline float relu(float x) { return x < 0.f ? 0.f : x; }

using detail::relu_bits;

// V[k][t][c] for k = 4*i + j: (B^T d B)[i][j], B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
// src[i][j] points at the channel vector of input pixel (i, j) of the window, or at zeros; with
// kRelu the window reads relu(d). Each output row i of B^T reads only its own 3 input rows (and
// each column of B likewise), so a NaN or inf reaches exactly the outputs whose 3x3 window holds
// it, as in the direct convolution.
template <bool kRelu>
inline __attribute__((always_inline)) void input_tile_impl(const float* const src[4][4], float* v,
                                                           int64_t tile_stride, int64_t channels) {
  // The 16 sources never alias the destination: let the compiler vectorise over channels.
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float t[4][4];
    for (int j = 0; j < 4; ++j) {
      float d0 = src[0][j][c], d1 = src[1][j][c], d2 = src[2][j][c], d3 = src[3][j][c];
      if constexpr (kRelu) {
        d0 = relu_bits(d0), d1 = relu_bits(d1), d2 = relu_bits(d2), d3 = relu_bits(d3);
      }
      t[0][j] = d0 - d2;
      t[1][j] = d1 + d2;
      t[2][j] = d2 - d1;
      t[3][j] = d1 - d3;
    }
    for (int i = 0; i < 4; ++i) {
      float* row = v + 4 * i * tile_stride + c;
      row[0] = t[i][0] - t[i][2];
      row[tile_stride] = t[i][1] + t[i][2];
      row[2 * tile_stride] = t[i][2] - t[i][1];
      row[3 * tile_stride] = t[i][1] - t[i][3];
    }
  }
}

FI_MULTIVERSION
void input_tile(const float* const src[4][4], float* v, int64_t tile_stride, int64_t channels) {
  input_tile_impl<false>(src, v, tile_stride, channels);
}

FI_MULTIVERSION
void input_tile_relu(const float* const src[4][4], float* v, int64_t tile_stride,
                     int64_t channels) {
  input_tile_impl<true>(src, v, tile_stride, channels);
}

// y = A^T m A, A^T = [[1,1,1,0],[0,1,-1,-1]]; dst[i][j] = relu(y[i][j] + bias). Position k of
// the tile is m + k * pos_stride. Outputs outside the image point at a scratch row, so the loop
// has no branches and vectorises.
FI_MULTIVERSION
void output_tile(const float* m, int64_t pos_stride, const float* bias, float* const dst[2][2],
                 int64_t channels) {
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float mv[4][4];
    for (int k = 0; k < 16; ++k) {
      mv[k / 4][k % 4] = m[k * pos_stride + c];
    }
    float a[2][4];
    for (int j = 0; j < 4; ++j) {
      a[0][j] = mv[0][j] + mv[1][j] + mv[2][j];
      a[1][j] = mv[1][j] - mv[2][j] - mv[3][j];
    }
    for (int i = 0; i < 2; ++i) {
      const float y0 = a[i][0] + a[i][1] + a[i][2] + bias[c];
      const float y1 = a[i][1] - a[i][2] - a[i][3] + bias[c];
      dst[i][0][c] = relu(y0);
      dst[i][1][c] = relu(y1);
    }
  }
}

void check_rows(const char* op, const at::Tensor& t, const char* name, int64_t rows) {
  TORCH_CHECK_VALUE(t.dim() == 2, op, ": ", name, " must be 2-D [N*H*W, C], got shape ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.size(0) == rows, op, ": ", name, " has ", t.size(0),
                    " rows, expected N*H*W = ", rows);
  TORCH_CHECK_VALUE(t.size(1) <= 1 || t.stride(1) == 1, op, ": ", name,
                    " must have contiguous channels (stride 1), got strides ", t.strides());
  TORCH_CHECK_VALUE(t.size(0) <= 1 || t.stride(0) >= t.size(1), op, ": ", name,
                    " rows overlap (row stride ", t.stride(0), " < ", t.size(1), " channels)");
}

// A float32 CPU tensor of the given shape.
void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, " must be ", shape, ", got shape ",
                    t.sizes());
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
                   t.scalar_type());
}

// r: [n*h*w, C] -> V: [tile_count, 16, C] for the tiles [tile_begin, tile_begin + tile_count)
// (all tiles from tile_begin on when tile_count is None). The 4x4 windows read r's rows of
// any tile, so r is always the whole tensor, whatever the range.
at::Tensor winograd_f2x3_input_cpu(const at::Tensor& r, int64_t n, int64_t h, int64_t w,
                                   int64_t tile_begin, std::optional<int64_t> tile_count) {
  constexpr const char* op = "winograd_f2x3_input";
  const TileGrid grid = make_grid(op, n, h, w, tile_begin, tile_count);
  check_rows(op, r, "r", pixel_rows(op, grid));
  const int64_t channels = r.size(1);
  at::Tensor v = at::empty({grid.count, 16, channels}, r.options());
  if (v.numel() == 0) return v;
  input_tiles(grid, r.const_data_ptr<float>(), r.stride(0), channels, /*relu=*/false,
              v.mutable_data_ptr<float>());
  return v;
}

// m: [16, tile_count, Cout] (channels contiguous, any other strides) -> out rows of the tiles
// [tile_begin, tile_begin + tile_count) (out is the whole [n*h*w, Cout] slice; rows of other
// tiles are not touched).
void winograd_f2x3_output_cpu(const at::Tensor& m, const at::Tensor& bias, const at::Tensor& out,
                              int64_t n, int64_t h, int64_t w, int64_t tile_begin,
                              std::optional<int64_t> tile_count) {
  constexpr const char* op = "winograd_f2x3_output_";
  const TileGrid grid = make_grid(op, n, h, w, tile_begin, tile_count);
  TORCH_CHECK_VALUE(out.dim() == 2, op, ": out must be 2-D [N*H*W, C], got shape ", out.sizes());
  const int64_t channels = out.size(1);
  check_shape(op, m, "m", {16, grid.count, channels});
  TORCH_CHECK_VALUE(channels <= 1 || m.stride(2) == 1, op,
                    ": m must have contiguous channels (stride 1), got strides ", m.strides());
  TORCH_CHECK_VALUE(m.stride(0) >= 0 && m.stride(1) >= 0, op,
                    ": m must not have negative strides, got ", m.strides());
  check_rows(op, out, "out", pixel_rows(op, grid));
  check_shape(op, bias, "bias", {channels});
  TORCH_CHECK_VALUE(bias.is_contiguous(), op, ": bias must be contiguous, got strides ",
                    bias.strides());
  check_no_overlap(op, out, "m", m);
  check_no_overlap(op, out, "bias", bias);
  if (m.numel() == 0) return;
  output_tiles(grid, m.const_data_ptr<float>(), m.stride(1), m.stride(0),
               bias.const_data_ptr<float>(), out.mutable_data_ptr<float>(), out.stride(0),
               channels);
}

}  // namespace

// n, h, w and the range come straight from the caller, so every product and sum of them is
// checked: a wrapped n*h*w once passed the row check and sent the kernel 2^62 elements away.
TileGrid make_grid(const char* op, int64_t batch, int64_t height, int64_t width, int64_t tile_begin,
                   std::optional<int64_t> tile_count, int64_t tile) {
  TORCH_CHECK_VALUE(batch >= 0 && height >= 1 && width >= 1, op,
                    ": expected n >= 0, h >= 1, w >= 1, got n=", batch, " h=", height,
                    " w=", width);
  TORCH_INTERNAL_ASSERT(tile == 2 || tile == 4, op, ": Winograd tiles are 2 or 4, got ", tile);
  // ceil(h/tile) without h + tile - 1, which overflows for h = 2^63 - 1.
  const int64_t tiles_y = height / tile + (height % tile != 0),
                tiles_x = width / tile + (width % tile != 0);
  int64_t tiles = 0;
  TORCH_CHECK_VALUE(
      !c10::mul_overflows(tiles_y, tiles_x, &tiles) && !c10::mul_overflows(batch, tiles, &tiles),
      op, ": the tile count n*ceil(h/", tile, ")*ceil(w/", tile, ") = ", batch, " * ", tiles_y,
      " * ", tiles_x, " overflows int64");
  // (begin <= tiles - count rather than begin + count <= tiles: no overflow near 2^63)
  TORCH_CHECK_VALUE(tile_begin >= 0 && tile_begin <= tiles, op, ": tile_begin must be in [0, ",
                    tiles, "] (the tiles of n=", batch, " h=", height, " w=", width, "), got ",
                    tile_begin);
  const int64_t count = tile_count.value_or(tiles - tile_begin);
  TORCH_CHECK_VALUE(count >= 0 && count <= tiles - tile_begin, op, ": tile_count must be in [0, ",
                    tiles - tile_begin, "] (tiles left after tile_begin=", tile_begin, " of ",
                    tiles, "), got ", count);
  return {batch, height, width, tiles_y, tiles_x, tile_begin, count, tile};
}

int64_t pixel_rows(const char* op, const TileGrid& grid) {
  int64_t plane = 0, rows = 0;
  TORCH_CHECK_VALUE(!c10::mul_overflows(grid.height, grid.width, &plane) &&
                        !c10::mul_overflows(grid.batch, plane, &rows),
                    op, ": n*h*w = ", grid.batch, " * ", grid.height, " * ", grid.width,
                    " overflows int64");
  return rows;
}

void input_tiles(const TileGrid& grid, const float* r, int64_t ld, int64_t channels, bool relu,
                 float* v) {
  if (grid.tile == 4) {
    input_tiles4(grid, r, ld, channels, relu, v);
    return;
  }
  detail::for_each_window<2>(grid, r, ld, channels, v, kTilesPerTask,
                             [&](const float* const src[4][4], float* dst) {
                               if (relu) {
                                 input_tile_relu(src, dst, channels, channels);
                               } else {
                                 input_tile(src, dst, channels, channels);
                               }
                             });
}

void output_tiles(const TileGrid& grid, const float* m, int64_t tile_stride, int64_t pos_stride,
                  const float* bias, float* out, int64_t ld, int64_t channels) {
  const int64_t first = grid.begin;
  fused_inception::parallel_for(
      first, first + grid.count, kTilesPerTask, [&](int64_t begin, int64_t end) {
        std::vector<float> scratch(channels);
        for (int64_t t = begin; t < end; ++t) {
          float* dst[2][2];
          detail::output_rows<2>(grid, t, out, ld, scratch.data(), dst);
          output_tile(m + (t - first) * tile_stride, pos_stride, bias, dst, channels);
        }
      });
}

}  // namespace winograd
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("winograd_f2x3_input", &fused_inception::winograd::winograd_f2x3_input_cpu);
  m.impl("winograd_f2x3_output_", &fused_inception::winograd::winograd_f2x3_output_cpu);
}
