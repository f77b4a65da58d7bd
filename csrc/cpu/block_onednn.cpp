// CPU kernel of fused_inception::inception_block_onednn: the fused eval-mode Inception block on
// oneDNN convolutions in one operator call, the float32 inference path of the CPU backend
// (fused_inception/backends/cpu.py, _forward_onednn, is the same computation from Python).
//
// Why C++: at batch 1 a block's four convolutions take 0.5-1 ms, and calling the fifteen or so
// operators of the block from Python (allocation, max-pool, four convolutions, five ReLU copies
// into the output's channel slices, views) added per-call overhead on top: 40-80 us less per
// batch-1 call here (README, "Backends"), where those calls go through the dispatcher directly.
// The work itself is unchanged:
//   out ([N, c1 + c2 + c3 + c4, H, W], in x's memory format):
//     b4 = relu(conv1x1(maxpool3x3(x), w_pool) + b_pool)       -> channels [c1+c2+c3, Ctot)
//     y  = conv1x1(x, w_x) + b_x, y = [b1 | r2 | r3]
//     relu(b1)                                                  -> channels [0, c1)
//     b2 = relu(conv3x3(relu(r2), w2) + b2)                     -> channels [c1, c1+c2)
//     b3 = relu(convKxK(relu(r3), w3) + b3)                     -> channels [c1+c2, c1+c2+c3)
// Convolutions are mkldnn::_convolution_pointwise (bias in oneDNN's epilogue, zero padding
// K // 2, stride 1); each ReLU is torch's clamp_min applied while copying into the slice, not
// oneDNN's fused ReLU, which maps NaN to 0 where torch keeps it. A weight given as panels (3-D;
// for Winograd [16, P, c_red, 16]) runs on the package's own kernel instead (cpu/gemm_panels.h,
// the default on AVX2 and AMD AVX-512 CPUs: backends/cpu_onednn.py, own_gemm), which stores
// relu(b1) and relu(b4) straight into their slices (channels_last output), relu(r2) and relu(r3)
// into dense buffers, and a direct KxK branch into its slice, with no ReLU copies. A 3x3 branch
// flagged winograd2 / winograd3 runs as Winograd F(2x2, 3x3) instead (winograd_branch below): its
// input transform reads r straight from y with the ReLU, its 16 GEMMs are one grouped oneDNN 1x1
// convolution per chunk of tiles (oneDNN's AVX-512 kernels; torch.bmm's MKL ones ran at 25-50
// GMAC/s on AMD and lost to the direct convolution; on Intel AVX-512 CPUs they are one torch.bmm,
// MKL's batched SGEMM, 1.2-2.1x faster there), and its output transform adds the bias, applies the
// ReLU and stores into the branch's slice. On the GoogLeNet blocks' b2 shapes that is 1.35-2.1x
// faster than the direct convolution and its ReLU copy (cpu_winograd.onednn_winograd_pays). Weights
// are plain channels_last tensors or oneDNN's reordered (opaque) weights for x's shape. The output
// is allocated in x's memory format (fused_inception.backends.output.output_memory_format) and each
// branch copied into its slice in that format: for NCHW x that copy transposes, and no conversion
// of the whole output follows (8-13% less time per batch-8 call than converting after, 2 threads);
// where the own kernel's AVX-512 tiles write a branch, they scatter it into an NCHW output's slice
// themselves with nchw_scatter (gemms_nchw_stores; by default on Intel CPUs only).

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cpu/gemm_panels.h"
#include "cpu/max_pool3x3.h"
#include "cpu/scratch.h"
#include "cpu/transpose.h"
#include "cpu/winograd_f2x3.h"

namespace fused_inception {
namespace {

// out = conv2d(x, weight) + bias by oneDNN (stride 1, zero padding K // 2, `groups` groups),
// written into out (a dense channels_last tensor): oneDNN's in-place form adds the convolution
// to `out`, which is zeroed first (in cache, 4 MB in 0.025 ms here).
void onednn_conv_into(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, int64_t groups = 1) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_convolution_pointwise_", "binary")
          .typed<at::Tensor&(at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const std::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef, int64_t, c10::string_view, std::optional<at::Scalar>,
                             std::optional<c10::string_view>, c10::List<std::optional<at::Scalar>>,
                             std::optional<c10::string_view>)>();
  const int64_t pad = weight.size(3) / 2;
  const int64_t padding[2] = {pad, pad}, ones[2] = {1, 1};
  at::Tensor dst = out;
  dst.zero_();
  op.call(dst, x, weight, bias, padding, ones, ones, groups, "add", std::nullopt, std::nullopt,
          c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

// conv2d(x, weight) + bias by oneDNN into a tensor it allocates (stride 1, padding K // 2,
// `groups` groups; channels_last for channels_last x).
at::Tensor onednn_conv(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, int64_t groups = 1) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                            c10::string_view, c10::List<std::optional<at::Scalar>>,
                            std::optional<c10::string_view>)>();
  const int64_t pad = weight.size(3) / 2;
  const int64_t padding[2] = {pad, pad}, ones[2] = {1, 1};
  return op.call(x, weight, bias, padding, ones, ones, groups, "none",
                 c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

// Outputs of at most this many floats (1 MiB) are oneDNN's own allocations rather than zeroed
// scratch: no zero fill and no read of the zeros by the in-place add, and glibc serves blocks
// this small from its heap without page faults. Measured on the 2-core Sapphire Rapids
// (2026-12-03, interleaved, the prepared network): 1.04x at batch 1, level at batch 8, where the
// outputs are larger and stay in scratch; with every output allocated, batch 8's larger ones
// paid hundreds of page faults a call (3a: 836) and ran 0.93-1.10x per block, 0.99x network.
constexpr int64_t kOwnOutputFloats = int64_t{1} << 18;

// oneDNN's conv2d(x, weight) + bias (x channels_last) as a dense channels_last tensor shaped as
// `dst`: allocated by oneDNN where it has at most kOwnOutputFloats, else written into dst (the
// call's scratch) through the in-place add form on zeroed memory (onednn_conv_into).
at::Tensor onednn_conv_small_or_into(const at::Tensor& dst, const at::Tensor& x,
                                     const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, int64_t groups = 1) {
  if (dst.numel() > kOwnOutputFloats) {
    onednn_conv_into(dst, x, weight, bias, groups);
    return dst;
  }
  at::Tensor out = onednn_conv(x, weight, bias, groups);
  TORCH_INTERNAL_ASSERT(
      out.sizes() == dst.sizes() && out.is_contiguous(at::MemoryFormat::ChannelsLast),
      "oneDNN's output is not the dense channels_last tensor expected");
  return out;
}

// relu(src) into dst (a channel slice of the output, or a fresh tensor).
void relu_into(const at::Tensor& dst, const at::Tensor& src) {
  at::Tensor out = dst;
  at::clamp_min_out(out, src, 0);
}

// True if t [N, C, H, W] has its h * w pixels `pixel` apart (H and W merge into one dimension).
bool pixels_merge(const at::Tensor& t, int64_t pixel) {
  return t.stride(3) == pixel && t.stride(2) == t.size(3) * pixel;
}

// dst = src, or relu(src) with relu, where src is NHWC (channels_last, or a channel slice of such
// a tensor) and dst a channel slice of an NCHW output: a transposing copy (transpose.h) rather
// than ATen's strided one, 2.9-5.5x slower at batch 8. Other strides take ATen's copy.
void store_nchw(const at::Tensor& dst, const at::Tensor& src, bool relu) {
  const int64_t n = src.size(0), c = src.size(1), hw = src.size(2) * src.size(3);
  if (src.stride(1) == 1 && pixels_merge(src, src.stride(3)) && pixels_merge(dst, 1)) {
    transpose_copy(src.const_data_ptr<float>(), src.stride(0), src.stride(3),
                   dst.mutable_data_ptr<float>(), dst.stride(0), dst.stride(1), n, hw, c, relu,
                   /*split_cols=*/false);
  } else if (relu) {
    relu_into(dst, src);
  } else {
    at::Tensor out = dst;
    out.copy_(src);
  }
}

// x [N, C, H, W] as a channels_last tensor: x itself where it is one, else a copy in the call's
// scratch (an NCHW x by the transposing copy).
at::Tensor nhwc_input(Scratch& scratch, const at::Tensor& x) {
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  const at::Tensor out = scratch.nhwc(x.size(0), x.size(1), x.size(2), x.size(3));
  const int64_t c = x.size(1), hw = x.size(2) * x.size(3);
  if (x.is_contiguous()) {
    transpose_copy(x.const_data_ptr<float>(), c * hw, hw, out.mutable_data_ptr<float>(), hw * c, c,
                   x.size(0), c, hw, /*relu=*/false, /*split_cols=*/true);
  } else {
    out.copy_(x);
  }
  return out;
}

// The distance between the NHWC rows of t [N, C, H, W], a channels_last tensor or a channel
// slice of one (every caller's y and dst): pixel p = (n * H + h) * W + w's C channels lie at
// t's data + p * ld, consecutive. Computed from the strides (dimensions of size 1 aside, as
// is_contiguous does): the permute and reshape views that gave the same rows took 8-16 us of
// serial time per Winograd branch call (a 2-core Zen 3 EPYC, 2026-12-07).
int64_t nhwc_ld(const char* op, const at::Tensor& t) {
  const int64_t n = t.size(0), c = t.size(1), h = t.size(2), w = t.size(3);
  const int64_t ld = w > 1 ? t.stride(3) : h > 1 ? t.stride(2) : n > 1 ? t.stride(0) : c;
  TORCH_INTERNAL_ASSERT((c <= 1 || t.stride(1) == 1) && (h <= 1 || t.stride(2) == w * ld) &&
                            (n <= 1 || t.stride(0) == h * w * ld),
                        op, ": internal: the Winograd branch reads and writes NHWC rows in place");
  return ld;
}

// Whether a Winograd weight is given as the own kernel's panels [P, ceil(Cout / 16), c_red, 16],
// P = 16 or 36 (oneDNN's grouped 1x1 weight is [P * Cout, c_red, 1, 1]: its last size is 1).
bool is_winograd_panels(const at::Tensor& weight) {
  return weight.dim() == 4 && (weight.size(0) == 16 || weight.size(0) == 36) &&
         weight.size(3) == 16 && weight.layout() == at::kStrided;
}

// Whether a Winograd weight is given as P = 16 or 36 dense matrices [P, c_red, Cout] (group k:
// U[k]), for one batched matrix product (at::bmm_out: MKL's batched SGEMM in torch's builds).
bool is_winograd_matrices(const at::Tensor& weight) {
  return weight.dim() == 3 && (weight.size(0) == 16 || weight.size(0) == 36) &&
         weight.layout() == at::kStrided;
}

// Winograd positions (16 for F(2x2, 3x3), 36 for F(4x4, 3x3)) of a transformed weight for a
// branch of c outputs: panels and matrices by their first size, oneDNN's grouped weight [P * c,
// c_red, 1, 1] by its first size over c.
int64_t winograd_positions(const at::Tensor& weight, int64_t c) {
  if (is_winograd_panels(weight) || is_winograd_matrices(weight)) return weight.size(0);
  return c > 0 && weight.size(0) == 36 * c ? 36 : 16;
}

// dst = relu(conv3x3(r', W, pad 1) + bias), r' = relu(r) with relu_input, else r, by Winograd
// F(2x2, 3x3) (csrc/cpu/winograd_f2x3.h), or F(4x4, 3x3) (winograd_f4x3.cpp) for a weight of 36
// groups, r being `c_red` channels of y from channel `col` on (y: [N, C, H, W] channels_last), dst
// a channels_last tensor or channel slice [N, Cout, H, W]. The P GEMMs (P = 16, or 36) of each
// chunk of `chunk` tiles are one grouped oneDNN 1x1 convolution: V [T, P, c_red] is an NHWC image
// of T pixels and P * c_red channels, `w_grouped` the transformed weight [P * Cout, c_red, 1, 1]
// (group k: U[k]^T), and its output M [T, P, Cout] is read in place by the output transform. With
// `w_grouped` as panels [P, ceil(Cout / 16), c_red, 16] the P GEMMs run on the own kernel
// instead, in one parallel loop (gemm_panels.h, gemms); as matrices [P, c_red, Cout] they are
// one batched matrix product (at::bmm_out, MKL's batched SGEMM: on a 2-core Emerald Rapids Xeon
// 1.2-2.1x faster than oneDNN's grouped convolution on GoogLeNet's shapes, README "Backends")
// reading V in place as [P, T, c_red] (rows P * c_red floats apart) and writing M position-major,
// [P, T, Cout], which the output transform reads with those strides. With relu_input the input
// transform applies r's ReLU, so no ReLU'd copy of r is stored. V and M (P * (c_red + Cout) floats
// per tile of one chunk) come from the call's scratch and are reused from chunk to chunk. Returns
// true where F(4x4, 3x3) saw a NaN or inf: dst is then not the convolution, which the caller
// recomputes directly. F(2x2, 3x3) returns false.
bool winograd_branch(const char* op, Scratch& scratch, const at::Tensor& y, int64_t col,
                     int64_t c_red, bool relu_input, const at::Tensor& w_grouped,
                     const at::Tensor& bias, const at::Tensor& dst, int64_t chunk,
                     bool relu_output = true) {
  const int64_t n = y.size(0), h = y.size(2), w = y.size(3), c_out = dst.size(1);
  const int64_t positions = winograd_positions(w_grouped, c_out);
  const int64_t tile = positions == 36 ? 4 : 2;
  TORCH_INTERNAL_ASSERT(relu_output || tile == 4, op, ": without the ReLU only as F(4x4, 3x3)");
  const winograd::TileGrid all = winograd::make_grid(op, n, h, w, 0, std::nullopt, tile);
  const int64_t r_ld = nhwc_ld(op, y), out_ld = nhwc_ld(op, dst);
  const float* r = y.const_data_ptr<float>() + col;
  float* out = dst.mutable_data_ptr<float>();
  const float* b = bias.const_data_ptr<float>();
  const int64_t size = std::min(chunk, all.count);  // every GEMM has this many tiles
  const at::Tensor v = scratch.nhwc(1, positions * c_red, 1, size);
  const at::Tensor m = scratch.nhwc(1, positions * c_out, 1, size);
  const bool matrices = is_winograd_matrices(w_grouped);
  float* v_data = v.mutable_data_ptr<float>();
  float* m_data = m.mutable_data_ptr<float>();
  // w_grouped as gemm_panels.h's panels [P, ceil(Cout / 16), c_red, 16] (group k: U[k]), or
  // oneDNN's grouped 1x1 weight [P * Cout, c_red, 1, 1].
  const bool own_gemm = is_winograd_panels(w_grouped);
  const int64_t group_floats = own_gemm ? w_grouped.numel() / positions : 0;
  bool nonfinite = false;
  at::Tensor m_read = m;  // M [T, positions, Cout]: m, or oneDNN's allocation where small
  for (int64_t begin = 0; begin < all.count; begin += size) {
    const int64_t count = std::min(size, all.count - begin);
    const winograd::TileGrid grid = winograd::make_grid(op, n, h, w, begin, count, tile);
    winograd::input_tiles(grid, r, r_ld, c_red, relu_input, v_data);
    if (own_gemm) {  // the P GEMMs M[., k, :] = V[., k, :] U[k] in one parallel loop
      std::vector<GemmJob> jobs;
      for (int64_t k = 0; k < positions; ++k) {
        jobs.push_back(
            GemmJob{ConvInput{v_data + k * c_red, positions * c_red, 1, 1, count, c_red, 1},
                    w_grouped.const_data_ptr<float>() + k * group_floats,
                    c_out,
                    nullptr,
                    {ColumnRange{0, c_out, m_data + k * c_out, positions * c_out}}});
      }
      gemms(jobs, /*relu=*/false);
    } else if (matrices) {  // M[k] = V[., k, :] U[k] for the P positions k, M position-major
      const at::Tensor a = v.as_strided({positions, count, c_red}, {c_red, positions * c_red, 1});
      at::Tensor mk = at::from_blob(m_data, {positions, count, c_out}, m.options());
      at::bmm_out(mk, a, w_grouped);
    } else {
      // The last chunk is padded with zero tiles, whose outputs are not read: a weight
      // reordered for one GEMM size makes oneDNN reorder it back on every call of another size
      // (4e's 392-tile weight on 32 tiles: 40x slower).
      std::fill(v_data + count * positions * c_red, v_data + size * positions * c_red, 0.f);
      m_read = onednn_conv_small_or_into(m, v, w_grouped, std::nullopt, positions);
    }
    // M's strides: tile-major [T, P, Cout], or position-major [P, count, Cout] (matrices)
    const int64_t tile_stride = matrices ? c_out : positions * c_out;
    const int64_t pos_stride = matrices ? count * c_out : c_out;
    if (tile == 4) {
      nonfinite |= winograd::output_tiles4(grid, m_read.const_data_ptr<float>(), tile_stride,
                                           pos_stride, b, out, out_ld, c_out, relu_output);
    } else {
      winograd::output_tiles(grid, m_read.const_data_ptr<float>(), tile_stride, pos_stride, b, out,
                             out_ld, c_out);
    }
  }
  return nonfinite;
}

// Panels (any of the own kernel's weights) are read as dense float32 CPU memory.
void check_panels_data(const char* op, const at::Tensor& weight, const char* name) {
  TORCH_CHECK(
      weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.is_contiguous(), op,
      ": ", name, " must be a contiguous float32 CPU tensor");
}

// A Winograd weight must be [16 * c, c_red, 1, 1] (F(2x2, 3x3)) or [36 * c, c_red, 1, 1]
// (F(4x4, 3x3), which needs `direct`, the plain [c, c_red, 3, 3] weight for a recompute) for a
// branch of c outputs from c_red inputs, or its P = 16 or 36 groups as gemm_panels.h's panels
// [P, ceil(c / 16), c_red, 16] or as matrices [P, c_red, c] (P = 36 needs `direct` too).
void check_grouped_weight(const char* op, const at::Tensor& weight, const char* name, int64_t c,
                          int64_t c_red, const std::optional<at::Tensor>& direct,
                          const char* direct_name) {
  if (is_winograd_matrices(weight)) {
    TORCH_CHECK_VALUE(weight.size(1) == c_red && weight.size(2) == c, op, ": with Winograd, ", name,
                      " as matrices must be [16 or 36, ", c_red, ", ", c, "], got shape ",
                      weight.sizes());
    check_panels_data(op, weight, name);
  } else if (is_winograd_panels(weight)) {
    TORCH_CHECK_VALUE(weight.size(1) == (c + 15) / 16 && weight.size(2) == c_red, op,
                      ": with Winograd, ", name, " as panels must be [16 or 36, ", (c + 15) / 16,
                      ", ", c_red, ", 16], got shape ", weight.sizes());
    check_panels_data(op, weight, name);
  } else {
    TORCH_CHECK_VALUE(weight.dim() == 4 && (weight.size(0) == 16 * c || weight.size(0) == 36 * c) &&
                          weight.size(1) == c_red && weight.size(2) == 1 && weight.size(3) == 1,
                      op, ": with Winograd, ", name, " must be the transformed ", "weight [16 * ",
                      c, ", ", c_red, ", 1, 1] (F(2x2, 3x3)) or [36 * ", c, ", ", c_red,
                      ", 1, 1] (F(4x4, 3x3)), got shape ", weight.sizes());
  }
  if (winograd_positions(weight, c) == 36) {
    TORCH_CHECK_VALUE(direct.has_value(), op, ": F(4x4, 3x3) needs ", direct_name,
                      ", the plain 3x3 weight, for inputs with NaN or inf");
    TORCH_CHECK_VALUE(direct->dim() == 4 && direct->size(0) == c && direct->size(1) == c_red &&
                          direct->size(2) == 3 && direct->size(3) == 3,
                      op, ": ", direct_name, " must be [", c, ", ", c_red, ", 3, 3], got shape ",
                      direct->sizes());
    TORCH_CHECK_TYPE(direct->scalar_type() == at::kFloat, op, ": ", direct_name,
                     " must be float32, got ", direct->scalar_type());
    TORCH_CHECK(direct->device().is_cpu(), op, ": ", direct_name, " must be a CPU tensor, got ",
                direct->device());
  }
}

// A KxK weight (K = `kernel`; 0: none fits) given as gemm_panels.h's panels [ceil(c / 16),
// K * K * c_in, 16] for c outputs.
void check_panels(const char* op, const at::Tensor& weight, const char* name, int64_t c,
                  int64_t c_in, int64_t kernel) {
  TORCH_CHECK_VALUE(kernel > 0 && weight.dim() == 3 && weight.size(0) == (c + 15) / 16 &&
                        weight.size(1) == kernel * kernel * c_in && weight.size(2) == 16,
                    op, ": as panels, ", name, " must be [", (c + 15) / 16, ", ",
                    kernel > 0 ? std::to_string(kernel * kernel * c_in)
                               : "K * K * " + std::to_string(c_in) + " (K odd, at most 7)",
                    ", 16] for ", c, " outputs from ", c_in, " channels, got shape ",
                    weight.sizes());
  check_panels_data(op, weight, name);
}

// Columns [begin, begin + t.size(1)) of a GEMM into t [N, C, H, W], a channels_last tensor or a
// channel slice of one (its pixels stride(3) floats apart: the operator's scratch and output
// keep that stride even where W is 1).
ColumnRange columns_into(const at::Tensor& t, int64_t begin) {
  return ColumnRange{begin, begin + t.size(1), t.mutable_data_ptr<float>(), t.stride(3)};
}

// Columns [begin, begin + t.size(1)) of a GEMM into t [N, C, H, W], a channel slice of a
// contiguous (NCHW) tensor: plane by plane (ColumnRange::hw).
ColumnRange planes_into(const at::Tensor& t, int64_t begin) {
  const int64_t hw = t.size(2) * t.size(3);
  TORCH_CHECK(t.stride(1) == hw && t.stride(2) == t.size(3) && t.stride(3) == 1,
              "planes_into: expected a channel slice of an NCHW tensor");
  return ColumnRange{begin, begin + t.size(1), t.mutable_data_ptr<float>(), t.stride(0), hw};
}

// relu(scale * convKxK(src, W, pad K / 2) + bias) over src's pixels (channels_last, `src_row`
// floats apart) by gemm_panels.h's kernel, W as panels or a plain weight (read in place), its
// columns into `ranges`; no scale: relu(conv + bias). A job for gemms (run with others where
// gemms_one_loop says so).
GemmJob conv_job(const at::Tensor& src, int64_t src_row, int64_t kernel, const at::Tensor& weight,
                 const at::Tensor& bias, const at::Tensor& scale,
                 const std::vector<ColumnRange>& ranges) {
  GemmJob job{ConvInput{src.const_data_ptr<float>(), src_row, src.size(0), src.size(2), src.size(3),
                        src.size(1), static_cast<int>(kernel)},
              weight.const_data_ptr<float>(), bias.size(0), bias.const_data_ptr<float>(), ranges};
  job.ldb = weight.dim() == 4 ? plain_weight_ldb(weight) : 0;
  job.scale = scale.defined() ? scale.const_data_ptr<float>() : nullptr;
  return job;
}

// A 4-D weight in gemm_panels.h's plain layout for `c` outputs from `c_in` channels: its kernel
// size, read in place by the own kernel; 0 for any other weight (oneDNN's, or panels).
int64_t plain_kernel(const at::Tensor& weight, int64_t c, int64_t c_in) {
  if (weight.dim() != 4 || weight.layout() != at::kStrided || weight.size(0) != c ||
      weight.size(1) != c_in || plain_weight_ldb(weight) == 0) {
    return 0;
  }
  return weight.size(3);
}

at::Tensor inception_block_onednn_cpu(
    const at::Tensor& x, const at::Tensor& w_x, const at::Tensor& b_x, const at::Tensor& w2,
    const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w_pool,
    const at::Tensor& b_pool, int64_t c1, int64_t c2r, bool poison, bool winograd2, bool winograd3,
    int64_t winograd_tiles, const std::optional<at::Tensor>& direct2,
    const std::optional<at::Tensor>& direct3, const std::optional<at::Tensor>& scale_x,
    const std::optional<at::Tensor>& scale2, const std::optional<at::Tensor>& scale3,
    const std::optional<at::Tensor>& scale_pool, bool nchw_scatter) {
  // The ATen calls below (the output, its channel slices, scratch views) skip the autograd and
  // view-tracking kernels: this is the CPU kernel, below autograd already, and nothing it makes
  // is seen by autograd but the returned output, a new tensor. Per call about 5 us less serial
  // time (5b and 4b at batch 1 on a 2-core Zen 3 EPYC, 2026-12-07, instrumented build).
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  TORCH_CHECK_VALUE(x.dim() == 4, "inception_block_onednn: expected a 4-D x [N, C, H, W], got ",
                    x.dim(), "-D");
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "inception_block_onednn: expected a float32 CPU x, got ", x.scalar_type(), " on ",
              x.device());
  for (const at::Tensor* b : {&b_x, &b2, &b3, &b_pool}) {
    TORCH_CHECK_VALUE(b->dim() == 1, "inception_block_onednn: expected 1-D biases, got shape ",
                      b->sizes());
  }
  const int64_t c_x = b_x.size(0), c2 = b2.size(0), c3 = b3.size(0), c4 = b_pool.size(0);
  // The biases as every kernel here reads them: dense (oneDNN's convolution, the own kernel and
  // Winograd's output transform all read a strided bias as if it were dense).
  const at::Tensor bias_x = b_x.contiguous(), bias2 = b2.contiguous(), bias3 = b3.contiguous(),
                   bias_pool = b_pool.contiguous();
  const int64_t c3r = c_x - c1 - c2r;
  TORCH_CHECK_VALUE(c1 >= 0 && c2r > 0 && c3r > 0,
                    "inception_block_onednn: c1 + c2r must leave channels of b_x for r3, got c1 ",
                    c1, ", c2r ", c2r, " and b_x of ", c_x);
  TORCH_CHECK_VALUE(!(winograd2 || winograd3) || winograd_tiles > 0,
                    "inception_block_onednn: winograd_tiles must be positive, got ",
                    winograd_tiles);
  if (winograd2) {
    check_grouped_weight("inception_block_onednn", w2, "w2", c2, c2r, direct2, "direct2");
  }
  if (winograd3) {
    check_grouped_weight("inception_block_onednn", w3, "w3", c3, c3r, direct3, "direct3");
  }
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3);
  // A 3-D w_x or w_pool is panels for the package's own GEMM (gemm_panels.h), which stores
  // each branch's columns with their ReLU, and so is a 4-D one in the plain layout (read in
  // place); any other 4-D one is oneDNN's convolution weight.
  const bool own_gemm_x = w_x.dim() == 3 || plain_kernel(w_x, c_x, c_in) == 1;
  const bool own_gemm_pool = w_pool.dim() == 3 || plain_kernel(w_pool, c4, c_in) == 1;
  if (w_x.dim() == 3) check_panels("inception_block_onednn", w_x, "w_x", c_x, c_in, 1);
  if (w_pool.dim() == 3) check_panels("inception_block_onednn", w_pool, "w_pool", c4, c_in, 1);
  // A 3-D w2 or w3 (not Winograd), or a plain one: that branch's KxK convolution on the same
  // kernel.
  const auto own_kernel = [](const at::Tensor& weight, bool winograd, int64_t c, int64_t c_red) {
    if (winograd) return int64_t{0};
    return weight.dim() == 3 ? int64_t{panels_kernel(weight.size(1), c_red)}
                             : plain_kernel(weight, c, c_red);
  };
  const int64_t kernel2 = own_kernel(w2, winograd2, c2, c2r);
  const int64_t kernel3 = own_kernel(w3, winograd3, c3, c3r);
  if (!winograd2 && w2.dim() == 3)
    check_panels("inception_block_onednn", w2, "w2", c2, c2r, kernel2);
  if (!winograd3 && w3.dim() == 3)
    check_panels("inception_block_onednn", w3, "w3", c3, c3r, kernel3);
  constexpr const char* op = "inception_block_onednn";
  const at::Tensor sc_x = channel_scale(op, "scale_x", scale_x, c_x),
                   sc2 = channel_scale(op, "scale2", scale2, c2),
                   sc3 = channel_scale(op, "scale3", scale3, c3),
                   sc_pool = channel_scale(op, "scale_pool", scale_pool, c4);
  TORCH_CHECK_VALUE((!sc_x.defined() || own_gemm_x) && (!sc_pool.defined() || own_gemm_pool) &&
                        (!sc2.defined() || kernel2 > 0) && (!sc3.defined() || kernel3 > 0),
                    "inception_block_onednn: a scale needs its convolution on the own kernel "
                    "(panels or a plain weight)");
  const int64_t c_total = c1 + c2 + c3 + c4;

  // The output in x's memory format: channels_last for strictly channels_last x (not also
  // contiguous, as 1x1 images and single channels are), else NCHW. Each branch is copied into
  // its channel slice in that format (for NCHW the copy transposes), so no whole-output
  // conversion follows.
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  // With nchw_scatter, an NCHW output's slices that the own kernel writes (b1, b4, direct KxKs)
  // are written by its AVX-512 tiles directly, each row's 16 channels scattered to their planes
  // (gemms_nchw_stores), rather than staged in NHWC and transposed after. Measured on a 2-core
  // Emerald Rapids Xeon (2026-12-06, the benchmark's prepared blocks on NCHW input, switched per
  // call and interleaved in one process, two runs): 5a and 5b at batch 1 0.97-0.98x the time,
  // 5b and 3b at batch 8 0.97x and 0.95x, the others 0.98-1.01x; stores through a stack buffer
  // plane by plane instead of the scatter took 1.04-1.13x. On AMD's Zen 5 the scatter is the
  // slower one (backends/cpu_onednn.py, nchw_scatter: the caller passes false there).
  const bool planes = !channels_last && nchw_scatter && gemms_nchw_stores(h * w);
  at::Tensor out = at::empty(
      {n, c_total, h, w}, x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
  if (poison) {
    out.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  if (out.numel() == 0) {
    return out;
  }
  // relu(src) into its slice of out: for NCHW out, by the transposing copy.
  const auto store_relu = [&](const at::Tensor& slice, const at::Tensor& src) {
    if (channels_last) {
      relu_into(slice, src);
    } else {
      store_nchw(slice, src, /*relu=*/true);
    }
  };
  {
    Scratch scratch(x.options());
    const at::Tensor x_nhwc = nhwc_input(scratch, x);
    // b4 = relu(conv1x1(maxpool3x3(x))). The own kernel's 1x1s over the pooled x and over x
    // run as one loop where gemms_one_loop says so (small ones); otherwise b4's runs first and
    // the pooled x (and an NCHW output's staging of b4) is released before the GEMM over x
    // allocates its outputs, as a large image's scratch comes from the allocator.
    std::vector<GemmJob> ones;
    at::Tensor pooled = scratch.nhwc(n, c_in, h, w);
    max_pool3x3_nhwc_into(x_nhwc, pooled);
    const at::Tensor slice4 = out.narrow(1, c1 + c2 + c3, c4);
    const bool together = own_gemm_pool && own_gemm_x &&
                          gemms_one_loop({conv_job(pooled, c_in, 1, w_pool, bias_pool, sc_pool, {}),
                                          conv_job(x_nhwc, c_in, 1, w_x, bias_x, sc_x, {})});
    at::Tensor b4;        // b4 in NHWC staging for an NCHW output
    if (own_gemm_pool) {  // b4 with its ReLU straight into the output's slice
      ones.push_back(conv_job(
          pooled, c_in, 1, w_pool, bias_pool, sc_pool,
          {planes ? planes_into(slice4, 0)
                  : columns_into(channels_last ? slice4 : (b4 = scratch.nhwc(n, c4, h, w)), 0)}));
    } else {
      store_relu(slice4,
                 onednn_conv_small_or_into(scratch.nhwc(n, c4, h, w), pooled, w_pool, bias_pool));
    }
    const auto finish_b4 = [&] {
      gemms(ones, /*relu=*/true, /*steps=*/true);
      ones.clear();
      if (b4.defined()) store_nchw(slice4, b4, /*relu=*/false);
      b4 = pooled = at::Tensor();
    };
    if (!together) finish_b4();
    // b1 | r2 | r3 = conv1x1(x): by the own GEMM, b1 with its ReLU into its slice (or NHWC
    // staging for an NCHW output) and relu(r2), relu(r3) into dense buffers; by oneDNN, into
    // y, whose b1 columns are then copied with the ReLU.
    struct Reduced {
      at::Tensor source;  // holds r at channel `col`
      int64_t col;
      bool relu;  // whether r's ReLU is still to be applied
    };
    Reduced reduced[2];
    // Where the 1x1s run as one loop and so would both direct KxKs (5a and 5b at batch 1): all
    // four GEMMs in one loop (gemms_in_order), the KxKs' tasks last, each starting once the 1x1
    // over x, which writes their r, has ended; b4's tasks between fill that wait. That spares the
    // 1x1s' loop its end, where one thread waits for the other's last task.
    // Both KxKs direct on the own kernel, from the dense r2 and r3 of the own 1x1 over x: one
    // loop after the branches' loop below where gemms_one_loop says so (`staged`: the NHWC
    // staging of an NCHW output's slice, stored after it); otherwise each runs in its turn.
    bool kxk_together = false, in_order = false;
    at::Tensor b1_staged;  // b1 in NHWC staging for an NCHW output, stored after its loop
    if (own_gemm_x) {
      const at::Tensor b1 =
          channels_last || planes ? out.narrow(1, 0, c1) : scratch.nhwc(n, c1, h, w);
      const at::Tensor r2 = scratch.nhwc(n, c2r, h, w), r3 = scratch.nhwc(n, c3r, h, w);
      ones.push_back(conv_job(x_nhwc, c_in, 1, w_x, bias_x, sc_x,
                              {planes ? planes_into(b1, 0) : columns_into(b1, 0),
                               columns_into(r2, c1), columns_into(r3, c1 + c2r)}));
      kxk_together = kernel2 > 0 && kernel3 > 0 &&  // (0 for a Winograd branch)
                     gemms_one_loop({conv_job(r2, c2r, kernel2, w2, bias2, sc2, {}),
                                     conv_job(r3, c3r, kernel3, w3, bias3, sc3, {})});
      in_order = together && kxk_together;
      if (!channels_last && !planes && c1 > 0) b1_staged = b1;
      if (!in_order) {
        finish_b4();  // (b4's job too where together)
        if (b1_staged.defined()) store_nchw(out.narrow(1, 0, c1), b1_staged, /*relu=*/false);
        b1_staged = at::Tensor();
      }
      reduced[0] = {r2, 0, false};
      reduced[1] = {r3, 0, false};
    } else {
      const at::Tensor y =
          onednn_conv_small_or_into(scratch.nhwc(n, c_x, h, w), x_nhwc, w_x, bias_x);
      if (c1 > 0) {
        store_relu(out.narrow(1, 0, c1), y.narrow(1, 0, c1));
      }
      reduced[0] = {y, c1, true};
      reduced[1] = {y, c1 + c2r, true};
    }
    // b2 and b3: Winograd reads its r in place (applying the ReLU if still due), the direct
    // convolution a dense ReLU'd r (a ReLU'd copy from y); the Winograd transform writes into a
    // channels_last output's slice directly, or into a channels_last temporary copied into an
    // NCHW output's slice.
    const struct {
      const Reduced& r;
      int64_t c_red, c_out_col, c;
      const at::Tensor &weight, &bias, &scale;
      bool winograd;
      int64_t own_kernel;  // > 0: the branch's KxK convolution on gemm_panels.h's kernel
      const std::optional<at::Tensor>& direct;  // F(4x4, 3x3)'s plain weight
    } branches[2] = {{reduced[0], c2r, c1, c2, w2, bias2, sc2, winograd2, kernel2, direct2},
                     {reduced[1], c3r, c1 + c2, c3, w3, bias3, sc3, winograd3, kernel3, direct3}};
    std::vector<GemmJob> kxk;  // the KxKs' jobs, for run_kxk
    std::vector<std::pair<at::Tensor, at::Tensor>> staged;
    const auto run_kxk = [&] {
      if (in_order) {  // ones: [b4's, the 1x1 over x] -> [over x, b4's, KxK, KxK]
        TORCH_CHECK(ones.size() == 2 && kxk.size() == 2,
                    "inception_block_onednn: internal: ", ones.size(), " 1x1 jobs and ", kxk.size(),
                    " KxK jobs to run in order");
        gemms_in_order({ones[1], ones[0], kxk[0], kxk[1]}, {0, 0, 1, 1}, /*relu=*/true);
        ones.clear();
        if (b4.defined()) store_nchw(slice4, b4, /*relu=*/false);
        b4 = pooled = at::Tensor();
        if (b1_staged.defined()) store_nchw(out.narrow(1, 0, c1), b1_staged, /*relu=*/false);
        in_order = false;
      } else {
        gemms(kxk, /*relu=*/true, /*steps=*/true);
      }
      kxk.clear();
      for (const auto& [to, from] : staged) store_nchw(to, from, /*relu=*/false);
      staged.clear();
    };
    for (const auto& br : branches) {
      const at::Tensor slice = out.narrow(1, br.c_out_col, br.c);
      bool direct = !br.winograd;
      if (br.winograd) {
        const at::Tensor dst = channels_last ? slice : scratch.nhwc(n, br.c, h, w);
        // F(4x4, 3x3) that saw NaN or inf: the branch again, by the direct convolution.
        direct = winograd_branch("inception_block_onednn", scratch, br.r.source, br.r.col, br.c_red,
                                 br.r.relu, br.weight, br.bias, dst, winograd_tiles);
        if (!channels_last && !direct) store_nchw(slice, dst, /*relu=*/false);
      }
      if (direct) {
        const at::Tensor& weight = br.winograd ? *br.direct : br.weight;
        at::Tensor r = br.r.source;
        if (br.r.relu) {
          r = scratch.nhwc(n, br.c_red, h, w);
          relu_into(r, br.r.source.narrow(1, br.r.col, br.c_red));
        }
        if (br.own_kernel > 0) {  // bias and ReLU stored by the kernel, as for b1 and b4
          const at::Tensor dst = channels_last || planes ? slice : scratch.nhwc(n, br.c, h, w);
          kxk.push_back(conv_job(r, br.c_red, br.own_kernel, br.weight, br.bias, br.scale,
                                 {planes ? planes_into(dst, 0) : columns_into(dst, 0)}));
          if (!channels_last && !planes) staged.emplace_back(slice, dst);
          if (!kxk_together) run_kxk();
        } else {
          const at::Tensor z =
              onednn_conv_small_or_into(scratch.nhwc(n, br.c, h, w), r, weight, br.bias);
          store_relu(slice, z);
        }
      }
    }
    run_kxk();
  }
  return out;
}

// fused_inception::conv3x3_relu_winograd: relu(conv3x3(x, W, pad 1) + bias) by the same
// Winograd F(2x2, 3x3) on a grouped oneDNN GEMM, for a standalone convolution (a prepared
// network's FoldedConvUnit, e.g. GoogLeNet's conv3, 64 -> 192 at 56x56). The output has x's
// memory format (channels_last for strictly channels_last x, else contiguous).
at::Tensor conv3x3_relu_winograd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t tiles,
                                     const std::optional<at::Tensor>& direct, bool relu) {
  constexpr const char* op = "conv3x3_relu_winograd";
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // as inception_block_onednn_cpu
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": expected a 4-D x [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, op,
              ": expected a float32 CPU x, got ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK_VALUE(bias.dim() == 1, op, ": expected a 1-D bias, got shape ", bias.sizes());
  TORCH_CHECK(bias.device().is_cpu() && bias.scalar_type() == at::kFloat, op,
              ": expected a float32 CPU bias, got ", bias.scalar_type(), " on ", bias.device());
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c_out = bias.size(0);
  check_grouped_weight(op, weight, "weight", c_out, c_in, direct, "direct");
  TORCH_CHECK_VALUE(relu || winograd_positions(weight, c_out) == 36, op,
                    ": relu=False needs the F(4x4, 3x3) weight [36 * ", c_out, ", ", c_in,
                    ", 1, 1], got shape ", weight.sizes());
  TORCH_CHECK_VALUE(tiles > 0, op, ": tiles must be positive, got ", tiles);
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  at::Tensor out = at::empty(
      {n, c_out, h, w}, x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                : at::MemoryFormat::Contiguous));
  if (out.numel() == 0) {
    return out;
  }
  if (c_in == 0) {  // no input channels: the convolution is its bias
    out.copy_(bias.clamp_min(0).view({1, c_out, 1, 1}));
    return out;
  }
  // NCHW x: moved into NHWC, and the result staged in NHWC and moved into out, by the
  // transposing copies.
  Scratch scratch(x.options());
  const at::Tensor x_nhwc = nhwc_input(scratch, x);
  const at::Tensor dst = channels_last ? out : scratch.nhwc(n, c_out, h, w);
  const at::Tensor b = bias.contiguous();
  if (winograd_branch(op, scratch, x_nhwc, 0, c_in, /*relu_input=*/false, weight, b, dst, tiles,
                      relu)) {
    // F(4x4, 3x3) saw NaN or inf: the direct convolution instead.
    const at::Tensor z = scratch.nhwc(n, c_out, h, w);
    onednn_conv_into(z, x_nhwc, *direct, b);
    if (channels_last) {
      if (relu) {
        relu_into(out, z);
      } else {
        out.copy_(z);
      }
    } else {
      store_nchw(out, z, relu);
    }
    return out;
  }
  if (!channels_last) store_nchw(out, dst, /*relu=*/false);
  return out;
}

}  // namespace
}  // namespace fused_inception

// x is a dense CPU tensor, the weights may be oneDNN's opaque tensors (MkldnnCPU): the
// dispatcher then picks the MkldnnCPU kernel, the same function.
TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("inception_block_onednn", &fused_inception::inception_block_onednn_cpu);
  m.impl("conv3x3_relu_winograd", &fused_inception::conv3x3_relu_winograd_cpu);
}
TORCH_LIBRARY_IMPL(fused_inception, MkldnnCPU, m) {
  m.impl("inception_block_onednn", &fused_inception::inception_block_onednn_cpu);
  m.impl("conv3x3_relu_winograd", &fused_inception::conv3x3_relu_winograd_cpu);
}
