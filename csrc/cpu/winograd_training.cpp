// Winograd F(4x4, 3x3) for training steps, whose weights change on every step (fused_inception/
// backends/cpu_winograd.py: conv3x3_f4, weight_grad_f4):
//
// fused_inception::conv3x3_winograd_f4: conv3x3(x, W, pad 1) + bias (then ReLU), or the input
// gradient's convolution (W's taps reversed and its channels swapped), from the plain weight W:
// its transform U = G W G^T ([36, C_in, C_out], one [36, 9] x [9, C_in*C_out] GEMM), the
// input transform V = B^T d B and the 36 GEMMs M = V U (torch.bmm, MKL) position-major in the
// per-thread scratch, the output transform A^T M A (+ bias, ReLU) into the result. Against the
// eval operator's F(4x4, 3x3) (a grouped oneDNN convolution over a weight oneDNN reorders):
// no reorder of a 36-group weight, and no fresh multi-MB weight per step. Where it meets NaN or
// inf (or an overflow) it recomputes directly, as the eval operator does.
//
// fused_inception::conv3x3_weight_grad_winograd: the weight gradient of a 3x3 convolution
// (stride 1, zero padding 1) by Winograd F(4x4, 3x3).
//
// The forward of F(4x4, 3x3) is, per 4x4 output tile with d its 6x6 input window,
//
//   y = A^T [ (G W G^T) . (B^T d B) ] A,
//
// bilinear in W and d, so the gradient of W for an output gradient g of the tile is
//
//   dW = G^T [ (A g A^T) . (B^T d B) ] G,
//
// summed over tiles (the matrices of csrc/cpu/winograd_f4x3.cpp). The sum over tiles goes
// inside the brackets: per position k of the 6x6 and channel pair,
//
//   M[k][co][ci] = sum over tiles of Gy[k][t][co] * V[k][t][ci]   (36 GEMMs, K = the tiles),
//   dW[co][ci] = G^T M[.][co][ci] G                               (one [Cout*Cin, 36] x [36, 9]),
//
// with V = B^T d B (the forward's input transform) and Gy = A g A^T, both position-major so
// that each GEMM reads dense rows. 36 * Cin * Cout multiply-adds per tile against the direct
// gradient's 144: 4x fewer. V, Gy and M live in the per-thread scratch (cpu/scratch.h): as
// fresh allocations their page faults cost as much as the GEMMs (4e at batch 8: the 36 GEMMs
// took 3.0 ms inside a training step, 1.4 ms on reused memory). Accuracy: the transforms'
// coefficients (up to 8 in A, 1/24 in G) cost precision as the forward's do: about 7e-6 of the
// gradient's scale in float32 on GoogLeNet's 96 -> 128 at batch 8, the direct gradient 1.4e-6.
//
// NaN and inf are not kept where they were: each input value reaches several positions, so a
// non-finite input or an overflow leaves some entry of the result non-finite. The caller checks
// the result and recomputes directly where one is (cpu_winograd.weight_grad_f4).

#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>

#include "cpu/scratch.h"
#include "cpu/winograd_f2x3.h"

namespace fused_inception {
namespace {

// G (x) G of F(4x4, 3x3), [36, 9]: entry (6i + j, 3a + b) = G[i][a] * G[j][b], rounded to
// float32 once from double; with `flip` the taps reversed (column t -> 8 - t: the kernel
// rotated by 180 degrees, as the input gradient's convolution reads it).
const std::array<float, 36 * 9>& gg_table(bool flip) {
  static const auto make = [](bool reversed) {
    constexpr double g[6][3] = {{1.0 / 4, 0.0, 0.0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0.0, 0.0, 1.0}};
    std::array<float, 36 * 9> t{};
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j)
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) {
            const int tap = reversed ? 8 - (3 * a + b) : 3 * a + b;
            t[(6 * i + j) * 9 + tap] = static_cast<float>(g[i][a] * g[j][b]);
          }
    return t;
  };
  static const std::array<float, 36 * 9> plain = make(false), reversed = make(true);
  return flip ? reversed : plain;
}

at::Tensor gg_tensor(bool flip, const at::TensorOptions& options) {
  return at::from_blob(const_cast<float*>(gg_table(flip).data()), {36, 9},
                       options.requires_grad(false));
}

void check_operand(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": expected a 4-D ", name, " [N, C, H, W], got ", t.dim(),
                    "-D");
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, op, ": expected a float32 CPU ",
              name, ", got ", t.scalar_type(), " on ", t.device());
}

at::Tensor conv3x3_weight_grad_winograd_cpu(const at::Tensor& x, const at::Tensor& grad_out,
                                            int64_t tiles) {
  constexpr const char* op = "conv3x3_weight_grad_winograd";
  check_operand(op, x, "x");
  check_operand(op, grad_out, "grad_out");
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c_out = grad_out.size(1);
  TORCH_CHECK_VALUE(grad_out.size(0) == n && grad_out.size(2) == h && grad_out.size(3) == w, op,
                    ": grad_out ", grad_out.sizes(), " must have x's batch and image size ",
                    x.sizes());
  TORCH_CHECK_VALUE(tiles > 0, op, ": tiles must be positive, got ", tiles);
  at::Tensor grad_w = at::empty({c_out, c_in, 3, 3}, x.options());
  if (n == 0 || h == 0 || w == 0 || c_in == 0 || c_out == 0) {
    return grad_w.zero_();
  }
  const at::Tensor x_nhwc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor g_nhwc = grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  const float* x_rows = x_nhwc.const_data_ptr<float>();
  const float* g_rows = g_nhwc.const_data_ptr<float>();
  const winograd::TileGrid all = winograd::make_grid(op, n, h, w, 0, std::nullopt, 4);
  const int64_t size = std::min(tiles, all.count);
  Scratch scratch(x.options());
  const at::Tensor v = scratch.dense({36 * size * c_in});
  const at::Tensor gy = scratch.dense({36 * size * c_out});
  const at::Tensor m = scratch.dense({36, c_out, c_in});  // M^T: [36, Cout, Cin]
  for (int64_t begin = 0; begin < all.count; begin += size) {
    const int64_t count = std::min(size, all.count - begin);
    const winograd::TileGrid grid = winograd::make_grid(op, n, h, w, begin, count, 4);
    winograd::input_tiles4_by_position(grid, x_rows, c_in, c_in, v.mutable_data_ptr<float>());
    winograd::grad_tiles4_by_position(grid, g_rows, c_out, c_out, gy.mutable_data_ptr<float>());
    const at::Tensor v_k = v.narrow(0, 0, 36 * count * c_in).view({36, count, c_in});
    const at::Tensor gy_k = gy.narrow(0, 0, 36 * count * c_out).view({36, count, c_out});
    if (begin == 0) {
      at::bmm_out(const_cast<at::Tensor&>(m), gy_k.transpose(1, 2), v_k);
    } else {
      const_cast<at::Tensor&>(m).baddbmm_(gy_k.transpose(1, 2), v_k);
    }
  }
  // dW as [Cout * Cin, 9] = (M^T as [36, Cout * Cin])^T (G (x) G): written in place, in the
  // weight's own layout.
  at::Tensor grad_rows = grad_w.view({c_out * c_in, 9});
  at::mm_out(grad_rows, m.view({36, c_out * c_in}).t(), gg_tensor(false, x.options()));
  return grad_w;
}

at::Tensor conv3x3_winograd_f4_cpu(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, int64_t tiles, bool relu,
                                   bool transposed) {
  constexpr const char* op = "conv3x3_winograd_f4";
  check_operand(op, x, "x");
  check_operand(op, weight, "weight");
  TORCH_CHECK_VALUE(weight.size(2) == 3 && weight.size(3) == 3, op,
                    ": expected a 3x3 weight, got shape ", weight.sizes());
  // this convolution's input and output channels
  const int64_t c_x = transposed ? weight.size(0) : weight.size(1);
  const int64_t c_y = transposed ? weight.size(1) : weight.size(0);
  TORCH_CHECK_VALUE(x.size(1) == c_x, op, ": x has ", x.size(1), " channels, the weight ",
                    weight.sizes(), (transposed ? " (transposed)" : ""), " takes ", c_x);
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kFloat && bias->dim() == 1 &&
                    bias->size(0) == c_y,
                op, ": expected a float32 CPU bias [", c_y, "], got ", bias->scalar_type(), " ",
                bias->sizes(), " on ", bias->device());
    b = bias->contiguous();
  } else {
    b = at::zeros({c_y}, x.options());
  }
  TORCH_CHECK_VALUE(tiles > 0, op, ": tiles must be positive, got ", tiles);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  at::Tensor out =
      at::empty({n, c_y, h, w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) {
    return out;
  }
  if (c_x == 0) {  // no input channels: the convolution is its bias
    out.copy_((relu ? b.clamp_min(0) : b).view({1, c_y, 1, 1}));
    return out;
  }
  const at::Tensor x_nhwc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const winograd::TileGrid all = winograd::make_grid(op, n, h, w, 0, std::nullopt, 4);
  const int64_t size = std::min(tiles, all.count);
  bool nonfinite = false;
  {
    Scratch scratch(x.options());
    // U [36, c_x, c_y] = (G (x) G) taps, taps [9, c_x * c_y] in (tap, input, output) order:
    // W permuted (a copy into the scratch); transposed: W's own (output, input) order, which is
    // the input gradient's (input, output), read in place, with the taps reversed in the table.
    const at::Tensor u = scratch.dense({36, c_x, c_y});
    at::Tensor u_rows = u.view({36, c_x * c_y});
    if (transposed) {
      at::mm_out(u_rows, gg_tensor(true, x.options()),
                 weight.contiguous().view({c_y * c_x, 9}).t());
    } else {
      const at::Tensor taps = scratch.dense({3, 3, c_x, c_y});
      const_cast<at::Tensor&>(taps).copy_(weight.permute({2, 3, 1, 0}));
      at::mm_out(u_rows, gg_tensor(false, x.options()), taps.view({9, c_x * c_y}));
    }
    const at::Tensor v = scratch.dense({36 * size * c_x});
    const at::Tensor m = scratch.dense({36 * size * c_y});
    float* out_rows = out.mutable_data_ptr<float>();
    for (int64_t begin = 0; begin < all.count; begin += size) {
      const int64_t count = std::min(size, all.count - begin);
      const winograd::TileGrid grid = winograd::make_grid(op, n, h, w, begin, count, 4);
      winograd::input_tiles4_by_position(grid, x_nhwc.const_data_ptr<float>(), c_x, c_x,
                                         v.mutable_data_ptr<float>());
      at::Tensor m_k = m.narrow(0, 0, 36 * count * c_y).view({36, count, c_y});
      at::bmm_out(m_k, v.narrow(0, 0, 36 * count * c_x).view({36, count, c_x}), u);
      nonfinite |= winograd::output_tiles4(grid, m_k.const_data_ptr<float>(), c_y, count * c_y,
                                           b.const_data_ptr<float>(), out_rows, c_y, c_y, relu);
    }
  }
  if (nonfinite) {  // NaN or inf: the direct convolution, which keeps them where torch does
    const at::Tensor w_eff = transposed ? weight.flip({2, 3}).transpose(0, 1) : weight;
    at::Tensor z = at::convolution(x_nhwc, w_eff, b, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1);
    out.copy_(relu ? at::relu(z) : z);
  }
  return out;
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("conv3x3_weight_grad_winograd", &fused_inception::conv3x3_weight_grad_winograd_cpu);
  m.impl("conv3x3_winograd_f4", &fused_inception::conv3x3_winograd_f4_cpu);
}
