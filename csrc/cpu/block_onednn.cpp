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
// oneDNN's fused ReLU, which maps NaN to 0 where torch keeps it. Weights are plain
// channels_last tensors or oneDNN's reordered (opaque) weights for x's shape. The output is
// allocated in x's memory format (fused_inception.backends.output.output_memory_format) and
// each branch copied into its slice in that format: for NCHW x that copy transposes, and no
// conversion of the whole output follows (8-13% less time per batch-8 call than converting
// after, 2 threads).

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <limits>
#include <optional>

namespace fused_inception {
namespace {

at::Tensor onednn_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                            c10::string_view, c10::List<std::optional<at::Scalar>>,
                            std::optional<c10::string_view>)>();
  const int64_t pad = weight.size(3) / 2;
  const int64_t padding[2] = {pad, pad};
  const int64_t ones[2] = {1, 1};
  return op.call(x, weight, bias, padding, ones, ones, 1, "none",
                 c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

at::Tensor max_pool3x3(const at::Tensor& x) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fused_inception::max_pool3x3_nhwc", "")
                             .typed<at::Tensor(const at::Tensor&)>();
  return op.call(x);
}

// relu(src) into dst (a channel slice of the output, or a fresh tensor).
void relu_into(const at::Tensor& dst, const at::Tensor& src) {
  at::Tensor out = dst;
  at::clamp_min_out(out, src, 0);
}

at::Tensor inception_block_onednn_cpu(const at::Tensor& x, const at::Tensor& w_x,
                                      const at::Tensor& b_x, const at::Tensor& w2,
                                      const at::Tensor& b2, const at::Tensor& w3,
                                      const at::Tensor& b3, const at::Tensor& w_pool,
                                      const at::Tensor& b_pool, int64_t c1, int64_t c2r,
                                      bool poison) {
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
  const int64_t c3r = c_x - c1 - c2r;
  TORCH_CHECK_VALUE(c1 >= 0 && c2r > 0 && c3r > 0,
                    "inception_block_onednn: c1 + c2r must leave channels of b_x for r3, got c1 ",
                    c1, ", c2r ", c2r, " and b_x of ", c_x);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t c_total = c1 + c2 + c3 + c4;

  // The output in x's memory format: channels_last for strictly channels_last x (not also
  // contiguous, as 1x1 images and single channels are), else NCHW. Each branch is copied into
  // its channel slice in that format (for NCHW the copy transposes), so no whole-output
  // conversion follows.
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  at::Tensor out = at::empty(
      {n, c_total, h, w}, x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
  if (poison) {
    out.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  if (out.numel() == 0) {
    return out;
  }
  {
    const at::Tensor x_nhwc = x.contiguous(at::MemoryFormat::ChannelsLast);
    {
      const at::Tensor b4 = onednn_conv(max_pool3x3(x_nhwc), w_pool, b_pool);
      relu_into(out.narrow(1, c1 + c2 + c3, c4), b4);
    }
    at::Tensor r2, r3;
    {
      const at::Tensor y = onednn_conv(x_nhwc, w_x, b_x);  // b1 | r2 | r3
      if (c1 > 0) {
        relu_into(out.narrow(1, 0, c1), y.narrow(1, 0, c1));
      }
      r2 = at::empty({n, c2r, h, w}, out.options().memory_format(at::MemoryFormat::ChannelsLast));
      relu_into(r2, y.narrow(1, c1, c2r));
      r3 = at::empty({n, c3r, h, w}, out.options().memory_format(at::MemoryFormat::ChannelsLast));
      relu_into(r3, y.narrow(1, c1 + c2r, c3r));
    }
    relu_into(out.narrow(1, c1, c2), onednn_conv(r2, w2, b2));
    r2.reset();
    relu_into(out.narrow(1, c1 + c2, c3), onednn_conv(r3, w3, b3));
  }
  return out;
}

}  // namespace
}  // namespace fused_inception

// x is a dense CPU tensor, the weights may be oneDNN's opaque tensors (MkldnnCPU): the
// dispatcher then picks the MkldnnCPU kernel, the same function.
TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("inception_block_onednn", &fused_inception::inception_block_onednn_cpu);
}
TORCH_LIBRARY_IMPL(fused_inception, MkldnnCPU, m) {
  m.impl("inception_block_onednn", &fused_inception::inception_block_onednn_cpu);
}
