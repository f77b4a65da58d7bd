// Winograd F(4x4, 3x3) and F(4x4, 5x5) for training steps, whose weights change on every step
// (fused_inception/backends/cpu_winograd.py: conv_winograd, weight_grad_winograd):
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
// fused_inception::conv5x5_winograd_f4 and conv5x5_weight_grad_winograd: the same for a 5x5
// convolution (zero padding 2) by F(4x4, 5x5): 8x8 windows, 64 positions and GEMMs, the
// transforms of csrc/cpu/winograd_f4x5.cpp; the weight transform and the weight gradient's
// last step one GEMM each with the [64, 25] table G (x) G.
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
// gradient's 144: 4x fewer (F(4x4, 5x5): 64 against 400, and G^T M G as a GEMM). V, Gy and M
// live in the per-thread scratch (cpu/scratch.h): as fresh allocations their page faults cost as
// much as the GEMMs (4e at batch 8: the 36 GEMMs took 3.0 ms inside a training step, 1.6 ms there
// on reused memory). Accuracy: the transforms' coefficients (up to 8 in A, 1/24 in G) cost
// precision as the forward's do: about 7e-6 of the gradient's scale in float32 on GoogLeNet's 96 ->
// 128 at batch 8, the direct gradient 1.4e-6.
//
// NaN and inf are not kept where they were: each input value reaches several positions, so a
// non-finite input or an overflow leaves some entry of the result non-finite. The caller checks
// the result and recomputes directly where one is (cpu_winograd.weight_grad_winograd).

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
#include <optional>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/scratch.h"
#include "cpu/winograd_f2x3.h"

namespace fused_inception {
namespace {

// G (x) G, [P, k * k] (P = alpha^2 positions): entry (alpha i + j, k a + b) = G[i][a] * G[j][b],
// G [alpha, k] F(4x4, 3x3)'s (k = 3, alpha = 6: the points 0, 1, -1, 2, -2, rows scaled by 1/4,
// -1/6, -1/6, 1/24, 1/24) or F(4x4, 5x5)'s (k = 5, alpha = 8: the points 0, 1, -1, 2, -2, 1/2,
// -1/2, scaled by 1, -2/9, -2/9, 1/90, 1/90, 32/45, 32/45), row p c_p (1, p, ..., p^(k-1)) and
// the last (0, ..., 0, 1) for infinity (csrc/cpu/winograd_f4x3.cpp, winograd_f4x5.cpp); rounded
// to float32 once from double. With `flip` the taps reversed (column t -> k*k - 1 - t: the
// kernel rotated by 180 degrees, as the input gradient's convolution reads it).
const std::vector<float>& gg_table(int64_t k, bool flip) {
  static const auto make = [](int64_t size, bool reversed) {
    constexpr double points[7] = {0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5};
    constexpr double scale3[5] = {1.0 / 4, -1.0 / 6, -1.0 / 6, 1.0 / 24, 1.0 / 24};
    constexpr double scale5[7] = {1.0,      -2.0 / 9,  -2.0 / 9, 1.0 / 90,
                                  1.0 / 90, 32.0 / 45, 32.0 / 45};
    const int64_t alpha = size + 3, taps = size * size;
    std::vector<double> g(alpha * size, 0.0);  // G [alpha, size]
    for (int64_t i = 0; i + 1 < alpha; ++i) {
      double power = size == 3 ? scale3[i] : scale5[i];
      for (int64_t a = 0; a < size; ++a, power *= points[i]) g[i * size + a] = power;
    }
    g[(alpha - 1) * size + size - 1] = 1.0;
    std::vector<float> t(alpha * alpha * taps, 0.f);
    for (int64_t i = 0; i < alpha; ++i)
      for (int64_t j = 0; j < alpha; ++j)
        for (int64_t a = 0; a < size; ++a)
          for (int64_t b = 0; b < size; ++b) {
            const int64_t tap = reversed ? taps - 1 - (size * a + b) : size * a + b;
            t[(alpha * i + j) * taps + tap] = static_cast<float>(g[i * size + a] * g[j * size + b]);
          }
    return t;
  };
  static const std::vector<float> tables[2][2] = {{make(3, false), make(3, true)},
                                                  {make(5, false), make(5, true)}};
  return tables[k == 5][flip];
}

at::Tensor gg_tensor(int64_t k, bool flip, const at::TensorOptions& options) {
  const int64_t alpha = k + 3;
  return at::from_blob(const_cast<float*>(gg_table(k, flip).data()), {alpha * alpha, k * k},
                       options.requires_grad(false));
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FI_MULTIVERSION_T __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define FI_MULTIVERSION_T
#endif

// G applied to three values (a column of a 3x3 kernel): six. G W G^T's rows.
struct Six {
  float v[6];
};
inline __attribute__((always_inline)) Six g3(float d0, float d1, float d2) {
  const float even = d0 + d2, s = -(even + d1) * (1.f / 6), t = -(even - d1) * (1.f / 6);
  const float u = d0 * (1.f / 24) + d2 * (1.f / 6), q = d1 * (1.f / 12);
  return {{d0 * 0.25f, s, t, u + q, u - q, d2}};
}

// G^T applied to six values: three. G^T M G's rows.
struct Three {
  float v[3];
};
inline __attribute__((always_inline)) Three gt6(float m0, float m1, float m2, float m3, float m4,
                                                float m5) {
  const float p = m1 + m2, q = m1 - m2, r = m3 + m4, s = m3 - m4;
  return {{m0 * 0.25f - p * (1.f / 6) + r * (1.f / 24), -q * (1.f / 6) + s * (1.f / 12),
           -p * (1.f / 6) + r * (1.f / 6) + m5}};
}

// U[k][co][ci] = (G W[co][ci] G^T)[i][j] (k = 6i + j) for one output channel co of a weight whose
// input channels are contiguous: tap (a, b) of input channel ci at w + (3a + b) * tap_stride + ci
// (a channels_last weight's row co; kFlip: the taps reversed, the kernel rotated by 180
// degrees). u points at U[0][co][0]; positions k_stride floats apart.
template <bool kFlip>
inline __attribute__((always_inline)) void transform_weight_row_impl(const float* __restrict__ w,
                                                                     int64_t tap_stride,
                                                                     int64_t c_in,
                                                                     float* __restrict__ u,
                                                                     int64_t k_stride) {
  const float* rows[9];
  for (int tap = 0; tap < 9; ++tap) rows[tap] = w + (kFlip ? 8 - tap : tap) * tap_stride;
  float* out[36];
  for (int k = 0; k < 36; ++k) out[k] = u + k * k_stride;
#pragma GCC ivdep
  for (int64_t ci = 0; ci < c_in; ++ci) {
    float t[6][3];  // G d: column b through G
#pragma GCC unroll 3
    for (int b = 0; b < 3; ++b) {
      const Six col = g3(rows[b][ci], rows[3 + b][ci], rows[6 + b][ci]);
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) t[i][b] = col.v[i];
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {  // (G d) G^T: each row through G
      const Six row = g3(t[i][0], t[i][1], t[i][2]);
#pragma GCC unroll 6
      for (int j = 0; j < 6; ++j) out[6 * i + j][ci] = row.v[j];
    }
  }
}

FI_MULTIVERSION_T
void transform_weight_row(const float* w, int64_t tap_stride, int64_t c_in, bool flip, float* u,
                          int64_t k_stride) {
  if (flip) {
    transform_weight_row_impl<true>(w, tap_stride, c_in, u, k_stride);
  } else {
    transform_weight_row_impl<false>(w, tap_stride, c_in, u, k_stride);
  }
}

// dW[co] = G^T M[.][co][.] G for one output channel: m points at M[0][co][0] (positions k_stride
// floats apart, input channels contiguous); tap (a, b) of input channel ci written at
// dw + (3a + b) * c_in + ci (kChannelsLast) or dw + 9 ci + 3a + b.
template <bool kChannelsLast>
inline __attribute__((always_inline)) void weight_grad_row_impl(const float* __restrict__ m,
                                                                int64_t k_stride, int64_t c_in,
                                                                float* __restrict__ dw) {
  const float* in[36];
  for (int k = 0; k < 36; ++k) in[k] = m + k * k_stride;
#pragma GCC ivdep
  for (int64_t ci = 0; ci < c_in; ++ci) {
    float t[6][3];  // M G: row i of M through G^T
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
      const Three row = gt6(in[6 * i][ci], in[6 * i + 1][ci], in[6 * i + 2][ci], in[6 * i + 3][ci],
                            in[6 * i + 4][ci], in[6 * i + 5][ci]);
#pragma GCC unroll 3
      for (int b = 0; b < 3; ++b) t[i][b] = row.v[b];
    }
#pragma GCC unroll 3
    for (int b = 0; b < 3; ++b) {  // G^T (M G): column b through G^T
      const Three col = gt6(t[0][b], t[1][b], t[2][b], t[3][b], t[4][b], t[5][b]);
#pragma GCC unroll 3
      for (int a = 0; a < 3; ++a) {
        if (kChannelsLast) {
          dw[(3 * a + b) * c_in + ci] = col.v[a];
        } else {
          dw[9 * ci + 3 * a + b] = col.v[a];
        }
      }
    }
  }
}

FI_MULTIVERSION_T
void weight_grad_row(const float* m, int64_t k_stride, int64_t c_in, float* dw,
                     bool channels_last) {
  if (channels_last) {
    weight_grad_row_impl<true>(m, k_stride, c_in, dw);
  } else {
    weight_grad_row_impl<false>(m, k_stride, c_in, dw);
  }
}

void check_operand(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": expected a 4-D ", name, " [N, C, H, W], got ", t.dim(),
                    "-D");
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, op, ": expected a float32 CPU ",
              name, ", got ", t.scalar_type(), " on ", t.device());
}

// The Winograd scheme of a k x k kernel, both with 4x4 output tiles: F(4x4, 3x3) (k = 3, 6x6
// windows, 36 positions) or F(4x4, 5x5) (k = 5, 8x8 windows, 64 positions); its transforms
// (csrc/cpu/winograd_f4x3.cpp, winograd_f4x5.cpp) position-major.
struct Scheme {
  int64_t k, positions;
  void (*input)(const winograd::TileGrid&, const float*, int64_t, int64_t, float*);
  void (*grad)(const winograd::TileGrid&, const float*, int64_t, int64_t, float*);
  bool (*output)(const winograd::TileGrid&, const float*, int64_t, int64_t, const float*, float*,
                 int64_t, int64_t, bool);
};
const Scheme kF4x3{3, 36, winograd::input_tiles4_by_position, winograd::grad_tiles4_by_position,
                   winograd::output_tiles4};
const Scheme kF4x5{5, 64, winograd::input_tiles8_by_position, winograd::grad_tiles8_by_position,
                   winograd::output_tiles8};

// The weight gradient [Cout, Cin, k, k] of a k x k convolution (stride 1, zero padding k / 2).
at::Tensor weight_grad_winograd(const char* op, const Scheme& scheme, const at::Tensor& x,
                                const at::Tensor& grad_out, int64_t tiles, bool channels_last) {
  check_operand(op, x, "x");
  check_operand(op, grad_out, "grad_out");
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c_out = grad_out.size(1), k = scheme.k;
  TORCH_CHECK_VALUE(grad_out.size(0) == n && grad_out.size(2) == h && grad_out.size(3) == w, op,
                    ": grad_out ", grad_out.sizes(), " must have x's batch and image size ",
                    x.sizes());
  TORCH_CHECK_VALUE(tiles > 0, op, ": tiles must be positive, got ", tiles);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (n == 0 || h == 0 || w == 0 || c_in == 0 || c_out == 0) {
    return at::zeros({c_out, c_in, k, k}, x.options().memory_format(format));
  }
  const at::Tensor x_nhwc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor g_nhwc = grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  const float* x_rows = x_nhwc.const_data_ptr<float>();
  const float* g_rows = g_nhwc.const_data_ptr<float>();
  const winograd::TileGrid all = winograd::make_grid(op, n, h, w, 0, std::nullopt, 4);
  const int64_t size = std::min(tiles, all.count), p = scheme.positions;
  Scratch scratch(x.options());
  const at::Tensor v = scratch.dense({p * size * c_in});
  const at::Tensor gy = scratch.dense({p * size * c_out});
  const at::Tensor m = scratch.dense({p, c_out, c_in});  // M^T: [P, Cout, Cin]
  for (int64_t begin = 0; begin < all.count; begin += size) {
    const int64_t count = std::min(size, all.count - begin);
    const winograd::TileGrid grid = winograd::make_grid(op, n, h, w, begin, count, 4);
    scheme.input(grid, x_rows, c_in, c_in, v.mutable_data_ptr<float>());
    scheme.grad(grid, g_rows, c_out, c_out, gy.mutable_data_ptr<float>());
    const at::Tensor v_k = v.narrow(0, 0, p * count * c_in).view({p, count, c_in});
    const at::Tensor gy_k = gy.narrow(0, 0, p * count * c_out).view({p, count, c_out});
    if (begin == 0) {
      at::bmm_out(const_cast<at::Tensor&>(m), gy_k.transpose(1, 2), v_k);
    } else {
      const_cast<at::Tensor&>(m).baddbmm_(gy_k.transpose(1, 2), v_k);
    }
  }
  if (k == 3) {
    // dW = G^T M G per channel pair, into grad_w's own layout (channels_last: taps Cin apart,
    // input channels contiguous; else input channels 9 apart).
    at::Tensor grad_w = at::empty({c_out, c_in, k, k}, x.options().memory_format(format));
    const float* m_data = m.const_data_ptr<float>();
    float* dw = grad_w.mutable_data_ptr<float>();
    fused_inception::parallel_for(0, c_out, 1, [&](int64_t begin, int64_t end) {
      for (int64_t co = begin; co < end; ++co) {
        weight_grad_row(m_data + co * c_in, c_out * c_in, c_in, dw + co * 9 * c_in, channels_last);
      }
    });
    return grad_w;
  }
  // dW[co][ci][tap] = sum over positions of (G (x) G)[k][tap] M[k][co][ci]: one [Cout * Cin, 64]
  // x [64, 25] GEMM into the contiguous layout (copied for channels_last: 5x5 weights are small).
  const at::Tensor rows = at::mm(m.view({p, c_out * c_in}).t(), gg_tensor(k, false, x.options()));
  return rows.view({c_out, c_in, k, k}).contiguous(format);
}

at::Tensor conv3x3_weight_grad_winograd_cpu(const at::Tensor& x, const at::Tensor& grad_out,
                                            int64_t tiles, bool channels_last) {
  return weight_grad_winograd("conv3x3_weight_grad_winograd", kF4x3, x, grad_out, tiles,
                              channels_last);
}

at::Tensor conv5x5_weight_grad_winograd_cpu(const at::Tensor& x, const at::Tensor& grad_out,
                                            int64_t tiles, bool channels_last) {
  return weight_grad_winograd("conv5x5_weight_grad_winograd", kF4x5, x, grad_out, tiles,
                              channels_last);
}

// conv(x, W, stride 1, pad k / 2) + bias (then ReLU), or the input gradient's convolution
// (transposed), from the plain weight W [Cout, Cin, k, k].
at::Tensor conv_winograd(const char* op, const Scheme& scheme, const at::Tensor& x,
                         const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         int64_t tiles, bool relu, bool transposed) {
  check_operand(op, x, "x");
  check_operand(op, weight, "weight");
  const int64_t k = scheme.k;
  TORCH_CHECK_VALUE(weight.size(2) == k && weight.size(3) == k, op, ": expected a ", k, "x", k,
                    " weight, got shape ", weight.sizes());
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
  const int64_t size = std::min(tiles, all.count), p = scheme.positions;
  bool nonfinite = false;
  {
    Scratch scratch(x.options());
    // U = (G (x) G) taps, taps W's [Cout * Cin, k * k] read in place (transposed: the taps
    // reversed in the table), U [P, Cout, Cin]: the GEMMs' B as it is for the input gradient's
    // convolution (inputs Cout, outputs Cin), transposed for the forward's (read as such).
    const int64_t w_out = weight.size(0), w_in = weight.size(1);
    const at::Tensor u = scratch.dense({p, w_out, w_in});
    if (k == 3 && !weight.is_contiguous() && w_in > 0) {
      // a channels_last 3x3 weight (input channels contiguous) read in place, or a copy
      const at::Tensor w_cl = weight.contiguous(at::MemoryFormat::ChannelsLast);
      const float* w_data = w_cl.const_data_ptr<float>();
      float* u_data = u.mutable_data_ptr<float>();
      fused_inception::parallel_for(0, w_out, 1, [&](int64_t begin, int64_t end) {
        for (int64_t co = begin; co < end; ++co) {
          transform_weight_row(w_data + co * 9 * w_in, w_in, w_in, transposed, u_data + co * w_in,
                               w_out * w_in);
        }
      });
    } else {  // one GEMM over W's [Cout * Cin, k * k] (a 5x5 weight copied contiguous: small)
      at::Tensor u_rows = u.view({p, w_out * w_in});
      at::mm_out(u_rows, gg_tensor(k, transposed, x.options()),
                 weight.contiguous().view({w_out * w_in, k * k}).t());
    }
    const at::Tensor u_b = transposed ? u : u.transpose(1, 2);  // [P, c_x, c_y]
    const at::Tensor v = scratch.dense({p * size * c_x});
    const at::Tensor m = scratch.dense({p * size * c_y});
    float* out_rows = out.mutable_data_ptr<float>();
    for (int64_t begin = 0; begin < all.count; begin += size) {
      const int64_t count = std::min(size, all.count - begin);
      const winograd::TileGrid grid = winograd::make_grid(op, n, h, w, begin, count, 4);
      scheme.input(grid, x_nhwc.const_data_ptr<float>(), c_x, c_x, v.mutable_data_ptr<float>());
      at::Tensor m_k = m.narrow(0, 0, p * count * c_y).view({p, count, c_y});
      at::bmm_out(m_k, v.narrow(0, 0, p * count * c_x).view({p, count, c_x}), u_b);
      nonfinite |= scheme.output(grid, m_k.const_data_ptr<float>(), c_y, count * c_y,
                                 b.const_data_ptr<float>(), out_rows, c_y, c_y, relu);
    }
  }
  if (nonfinite) {  // NaN or inf: the direct convolution, which keeps them where torch does
    const at::Tensor w_eff = transposed ? weight.flip({2, 3}).transpose(0, 1) : weight;
    const int64_t pad = k / 2;
    at::Tensor z = at::convolution(x_nhwc, w_eff, b, {1, 1}, {pad, pad}, {1, 1}, false, {0, 0}, 1);
    out.copy_(relu ? at::relu(z) : z);
  }
  return out;
}

at::Tensor conv3x3_winograd_f4_cpu(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, int64_t tiles, bool relu,
                                   bool transposed) {
  return conv_winograd("conv3x3_winograd_f4", kF4x3, x, weight, bias, tiles, relu, transposed);
}

at::Tensor conv5x5_winograd_f4_cpu(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, int64_t tiles, bool relu,
                                   bool transposed) {
  return conv_winograd("conv5x5_winograd_f4", kF4x5, x, weight, bias, tiles, relu, transposed);
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("conv3x3_weight_grad_winograd", &fused_inception::conv3x3_weight_grad_winograd_cpu);
  m.impl("conv3x3_winograd_f4", &fused_inception::conv3x3_winograd_f4_cpu);
  m.impl("conv5x5_weight_grad_winograd", &fused_inception::conv5x5_weight_grad_winograd_cpu);
  m.impl("conv5x5_winograd_f4", &fused_inception::conv5x5_winograd_f4_cpu);
}
