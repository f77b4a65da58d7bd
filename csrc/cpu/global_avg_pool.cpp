// CPU kernel of fused_inception::global_avg_pool_nhwc: the mean over H and W of a channels_last
// tensor (nn.AdaptiveAvgPool2d(1), GoogLeNet's avgpool before its classifier), for a prepared
// network (fused_inception/nhwc_pool.py, NhwcAdaptiveAvgPool2d).
//
// ATen computes adaptive_avg_pool2d(x, 1) as x.mean((-1, -2)), a TensorIterator reduction whose
// setup dominates at batch 1 (GoogLeNet's 1 x 1024 x 7 x 7: 50 us warm, 110-200 us inside the
// network). Here each channel's sum runs over the pixels in row-major order from 0 and is then
// divided by H * W: the same mean, rounded in another order (ATen's reduction sums in cascades),
// so the two agree to float rounding, not bit for bit. Vectorised over the contiguous channels
// (the compiler's loop), parallel over images and blocks of channels where there is enough work.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cpu/parallel.h"

namespace fused_inception {
namespace {

constexpr int64_t kChannelBlock = 64;
// Values read per task at the least: below, the loop runs on the calling thread.
constexpr int64_t kGrainValues = 64 * 1024;

template <typename T>
void mean_channels(const T* x, int64_t pixels, int64_t ld, int64_t channels, T* out) {
  for (int64_t c = 0; c < channels; ++c) out[c] = T(0);
  for (int64_t p = 0; p < pixels; ++p) {
    const T* row = x + p * ld;
#pragma GCC ivdep
    for (int64_t c = 0; c < channels; ++c) out[c] += row[c];
  }
  const T count = static_cast<T>(pixels);
  for (int64_t c = 0; c < channels; ++c) out[c] /= count;
}

at::Tensor global_avg_pool_nhwc_cpu(const at::Tensor& x) {
  constexpr const char* op = "global_avg_pool_nhwc";
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": expected a 4-D x [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK(x.device().is_cpu(), op, ": expected a CPU tensor, got one on ", x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                   ": expected float32 or float64, got ", x.scalar_type());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK_VALUE(h * w > 0, op, ": expected a non-empty image, got H ", h, " and W ", w);
  // Pixels of C contiguous values, ld apart, the H * W of an image h * w * ld apart.
  const int64_t ld = w > 1 ? x.stride(3) : h > 1 ? x.stride(2) / w : c;
  TORCH_CHECK_VALUE((c <= 1 || x.stride(1) == 1) && ld >= c && (h <= 1 || x.stride(2) == w * ld) &&
                        (n <= 1 || x.stride(0) == h * w * ld),
                    op,
                    ": expected a channels_last x (channels contiguous, pixels dense), got "
                    "strides ",
                    x.strides());
  at::Tensor out =
      at::empty({n, c, 1, 1}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (n == 0 || c == 0) return out;
  const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
  const int64_t grain = std::max<int64_t>(1, kGrainValues / (kChannelBlock * h * w));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    parallel_for(0, n * blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t img = task / blocks, c0 = task % blocks * kChannelBlock;
        mean_channels(src + img * h * w * ld + c0, h * w, ld, std::min(kChannelBlock, c - c0),
                      dst + img * c + c0);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("global_avg_pool_nhwc", &fused_inception::global_avg_pool_nhwc_cpu);
}
