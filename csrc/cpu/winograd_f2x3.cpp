// CPU kernels of the Winograd F(2x2, 3x3) convolution that the CPU backend uses for the 3x3
// convolution of a branch (b2 always, b3 in torchvision's form):
//
//   out = relu(conv3x3(r, W, pad 1) + B)  =  relu(A^T [ (G W G^T) . (B^T d B) ] A + B)
//
// per 2x2 output tile, with d the tile's 4x4 input window (zero outside the image: the padding
// applies to r, the reduced tensor). The element-wise products over the 16 positions are 16
// independent GEMMs [T tiles, C] x [C, Cout], which the backend runs as one torch.bmm; these
// kernels are the two transforms around it:
//   - winograd_f2x3_input:   r rows [N*H*W, C] (NHWC, any row stride) -> V [16, T, C]
//   - winograd_f2x3_output_: M [16, T, Cout] -> relu(A^T M A + B) written into out rows
//     [N*H*W, Cout] (any row stride: a channel slice of the block's output).
// The weight transform G W G^T happens once, in Python, when parameters are packed.
//
// Why: the 3x3 convolutions are most of the block's multiply-adds, and on this CPU they and the
// GEMMs already run at the FMA peak, so doing fewer of them is what is left: F(2,3) needs 16
// products per 2x2 outputs instead of 36 (2.25x fewer). Its transforms use only additions with
// coefficients 0, +-1 (and 1/2 in G, applied in float64), so it loses far less accuracy than
// larger tiles would; the parity tests check it against float64 references at 1e-4.
//
// Parallelisation: at::parallel_for over tiles; inside a tile the loop runs over the contiguous
// channel dimension, compiled twice (AVX2+FMA and baseline) with GCC's target_clones and picked
// at load time, so the module still runs on CPUs without AVX2. Offsets are int64.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace fused_inception {
namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FI_MULTIVERSION __attribute__((target_clones("avx2,fma", "default")))
#else
#define FI_MULTIVERSION
#endif

constexpr int64_t kTilesPerTask = 16;

struct TileGrid {
  int64_t batch, height, width, tiles_y, tiles_x;
  int64_t count() const { return batch * tiles_y * tiles_x; }
};

TileGrid make_grid(int64_t batch, int64_t height, int64_t width) {
  return {batch, height, width, (height + 1) / 2, (width + 1) / 2};
}

// V[k][t][c] for k = 4*i + j: (B^T d B)[i][j], B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
// src[i][j] points at the channel vector of input pixel (i, j) of the window, or at zeros.
FI_MULTIVERSION
void input_tile(const float* const src[4][4], float* v, int64_t tile_stride, int64_t channels) {
  // The 16 sources never alias the destination: let the compiler vectorise over channels.
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float t[4][4];
    for (int j = 0; j < 4; ++j) {
      const float d0 = src[0][j][c], d1 = src[1][j][c], d2 = src[2][j][c], d3 = src[3][j][c];
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

// y = A^T m A, A^T = [[1,1,1,0],[0,1,-1,-1]]; dst[i][j] = relu(y[i][j] + bias). Outputs outside
// the image point at a scratch row, so the loop has no branches and vectorises.
FI_MULTIVERSION
void output_tile(const float* m, int64_t tile_stride, const float* bias, float* const dst[2][2],
                 int64_t channels) {
#pragma GCC ivdep
  for (int64_t c = 0; c < channels; ++c) {
    float mv[4][4];
    for (int k = 0; k < 16; ++k) {
      mv[k / 4][k % 4] = m[k * tile_stride + c];
    }
    float a[2][4];
    for (int j = 0; j < 4; ++j) {
      a[0][j] = mv[0][j] + mv[1][j] + mv[2][j];
      a[1][j] = mv[1][j] - mv[2][j] - mv[3][j];
    }
    for (int i = 0; i < 2; ++i) {
      const float y0 = a[i][0] + a[i][1] + a[i][2] + bias[c];
      const float y1 = a[i][1] - a[i][2] - a[i][3] + bias[c];
      dst[i][0][c] = y0 < 0.f ? 0.f : y0;  // NaN stays NaN, as in torch.relu
      dst[i][1][c] = y1 < 0.f ? 0.f : y1;
    }
  }
}

void check_rows(const at::Tensor& t, const char* name, int64_t rows) {
  TORCH_CHECK(t.dim() == 2, "winograd_f2x3: ", name, " must be 2-D [N*H*W, C], got shape ",
              t.sizes());
  TORCH_CHECK(t.device().is_cpu(), "winograd_f2x3: ", name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "winograd_f2x3: ", name, " must be float32, got ",
              t.scalar_type());
  TORCH_CHECK(t.size(0) == rows, "winograd_f2x3: ", name, " has ", t.size(0),
              " rows, expected N*H*W = ", rows);
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, "winograd_f2x3: ", name,
              " must have contiguous channels (stride 1), got strides ", t.strides());
  TORCH_CHECK(t.size(0) <= 1 || t.stride(0) >= t.size(1), "winograd_f2x3: ", name,
              " rows overlap (row stride ", t.stride(0), " < ", t.size(1), " channels)");
}

void check_geometry(int64_t batch, int64_t height, int64_t width) {
  TORCH_CHECK(batch >= 0 && height >= 1 && width >= 1,
              "winograd_f2x3: expected n >= 0, h >= 1, w >= 1, got n=", batch, " h=", height,
              " w=", width);
}

at::Tensor winograd_f2x3_input_cpu(const at::Tensor& r, int64_t n, int64_t h, int64_t w) {
  check_geometry(n, h, w);
  check_rows(r, "r", n * h * w);
  const TileGrid grid = make_grid(n, h, w);
  const int64_t channels = r.size(1);
  at::Tensor v = at::empty({grid.count(), 16, channels}, r.options());
  if (v.numel() == 0) return v;
  const float* base = r.const_data_ptr<float>();
  const int64_t ld = r.stride(0);
  float* out = v.mutable_data_ptr<float>();
  const std::vector<float> zeros(channels, 0.f);
  at::parallel_for(0, grid.count(), kTilesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t img = t / (grid.tiles_y * grid.tiles_x);
      const int64_t ty = (t / grid.tiles_x) % grid.tiles_y, tx = t % grid.tiles_x;
      const float* src[4][4];
      for (int i = 0; i < 4; ++i) {
        const int64_t y = 2 * ty - 1 + i;
        for (int j = 0; j < 4; ++j) {
          const int64_t x = 2 * tx - 1 + j;
          const bool inside = y >= 0 && y < h && x >= 0 && x < w;
          src[i][j] = inside ? base + ((img * h + y) * w + x) * ld : zeros.data();
        }
      }
      input_tile(src, out + t * 16 * channels, channels, channels);
    }
  });
  return v;
}

void winograd_f2x3_output_cpu(const at::Tensor& m, const at::Tensor& bias, const at::Tensor& out,
                              int64_t n, int64_t h, int64_t w) {
  check_geometry(n, h, w);
  check_rows(out, "out", n * h * w);
  const TileGrid grid = make_grid(n, h, w);
  const int64_t channels = out.size(1);
  TORCH_CHECK(m.dim() == 3 && m.size(0) == 16 && m.size(1) == grid.count() && m.size(2) == channels,
              "winograd_f2x3_output_: m must be [16, tiles=", grid.count(), ", ", channels,
              "], got shape ", m.sizes());
  TORCH_CHECK(m.device().is_cpu() && m.scalar_type() == at::kFloat && m.is_contiguous(),
              "winograd_f2x3_output_: m must be a contiguous float32 CPU tensor");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == channels && bias.is_contiguous() &&
                  bias.device().is_cpu() && bias.scalar_type() == at::kFloat,
              "winograd_f2x3_output_: bias must be a contiguous float32 CPU tensor [", channels,
              "], got shape ", bias.sizes(), " and dtype ", bias.scalar_type());
  if (m.numel() == 0) return;
  const float* src = m.const_data_ptr<float>();
  const float* b = bias.const_data_ptr<float>();
  float* base = out.mutable_data_ptr<float>();
  const int64_t ld = out.stride(0);
  at::parallel_for(0, grid.count(), kTilesPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(channels);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t img = t / (grid.tiles_y * grid.tiles_x);
      const int64_t ty = (t / grid.tiles_x) % grid.tiles_y, tx = t % grid.tiles_x;
      float* dst[2][2];
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) {
          const int64_t y = 2 * ty + i, x = 2 * tx + j;
          dst[i][j] = (y < h && x < w) ? base + ((img * h + y) * w + x) * ld : scratch.data();
        }
      }
      output_tile(src + t * channels, grid.count() * channels, b, dst, channels);
    }
  });
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("winograd_f2x3_input", &fused_inception::winograd_f2x3_input_cpu);
  m.impl("winograd_f2x3_output_", &fused_inception::winograd_f2x3_output_cpu);
}
