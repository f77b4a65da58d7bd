// CPU kernel of fused_inception::max_pool_nhwc: the general 2-D max-pool (any kernel, stride and
// padding, ceil_mode, dilation 1, no indices) on channels_last (NHWC) tensors, for GoogLeNet's
// stem pools (3x3 stride 2 and 2x2 stride 2, ceil_mode) and any other nn.MaxPool2d.
//
// Result: bit for bit what torch.nn.functional.max_pool2d(x, kernel_size, stride, padding,
// ceil_mode=ceil_mode) returns on the CPU: the same output size (ATen's pooling_output_shape:
// with ceil_mode the last window must start inside the input or its left padding), the same
// windows (rows [oh*s - p, oh*s - p + k) clipped to [0, H), columns alike; padding is never
// selected) and the same element of each, chosen by take_max (max_pool_common.h). One exception,
// in NaN bits only, as for max_pool3x3_nhwc: bfloat16 NaNs keep the input's bits here, while
// torch's AVX2/AVX512 kernels write some as 0xFFFF. ATen also computes int64 indices it then
// drops; this kernel has none to compute.
//
// Work: separable, as max_pool3x3_nhwc (horizontal max of each input row, then vertical max of
// the rows a window spans, in order; max_pool_common.h says why that gives torch's bits):
//   1. horizontal: for each input row, hrow[ow] = max over the in-image columns of window ow;
//   2. vertical:   for each output row, out[ow] = max over hrow of the window's in-image rows.
// In NHWC a column is C contiguous values, so each step reduces runs of C values elementwise
// (max_of_runs: AVX-512 or AVX2 plus a scalar remainder, any C). With stride 1 the columns whose
// window lies inside the row form one long run whose kernel_w sources are that run shifted by C;
// with a larger stride, one call reduces a step of columns, a block of C values each, and the
// input is prefetched ahead of the steps (see kPrefetchBytes).
// Parallelisation: fused_inception::parallel_for over output rows (n, oh). Each task keeps the
// horizontal maxima of the last kernel_h input rows it reduced in a ring (kernel_h * OW*C
// values; 43-81 KB for GoogLeNet's stem pools in float32), so with stride < kernel the rows
// that consecutive windows share are reduced once per task.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/parallel.h"
// Last: its AVX2 block defines torch's CPU_CAPABILITY macros (see there).
#include "cpu/max_pool_common.h"

namespace fused_inception {
namespace {

// One spatial dimension of the pool (dilation 1).
struct Axis {
  int64_t in, out, kernel, stride, padding;

  // The in-image part [first(o), last(o)) of output position o's window: never empty for the
  // output sizes of pooled_size and padding <= kernel / 2.
  int64_t first(int64_t o) const { return std::max<int64_t>(o * stride - padding, 0); }
  int64_t last(int64_t o) const { return std::min(o * stride - padding + kernel, in); }
};

// ATen's pooling_output_shape (aten/src/ATen/native/Pool.h) with dilation 1.
int64_t pooled_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  const int64_t span = in + 2 * padding - kernel + (ceil_mode ? stride - 1 : 0);
  const int64_t floor_div = span >= 0 ? span / stride : -((-span + stride - 1) / stride);
  int64_t out = floor_div + 1;
  if (ceil_mode && (out - 1) * stride >= in + padding) {
    --out;  // the last window would start in the right padding
  }
  return out;
}

// out[i] = take_max over src[0][i], ..., src[count-1][i] in that order, for i in [0, len) and
// each block of `blocks` (max_of_runs), for any count >= 1.
template <typename scalar_t>
void max_of_many_runs(scalar_t* out, const scalar_t* const* src, int64_t count, int64_t len,
                      const Blocks& blocks = {}) {
  if (count <= 3) {
    max_of_runs<scalar_t>(out, {src[0], count > 1 ? src[1] : nullptr, count > 2 ? src[2] : nullptr},
                          static_cast<int>(count), len, blocks);
    return;
  }
  // Kernels larger than 3, block by block: the first three runs, then up to two more at a time
  // folded into out (the choice of take_max is associative: the grouping gives the same element).
  for (int64_t b = 0; b < blocks.count; ++b) {
    const int64_t offset = b * blocks.src_step;
    scalar_t* block_out = out + b * blocks.out_step;
    max_of_runs<scalar_t>(block_out, {src[0] + offset, src[1] + offset, src[2] + offset}, 3, len);
    for (int64_t j = 3; j < count; j += 2) {
      const bool two = j + 1 < count;
      max_of_runs<scalar_t>(block_out,
                            {block_out, src[j] + offset, two ? src[j + 1] + offset : nullptr},
                            two ? 3 : 2, len);
    }
  }
}

// Output columns per step of the horizontal pass: between steps it prefetches.
constexpr int64_t kColumnsPerStep = 8;

// How far the horizontal pass prefetches the input ahead of the columns it reads. Without any
// prefetch the loads of the strided windows waited on memory (perf: most samples on them) and
// on GoogLeNet's stem shapes (2 threads) the pool ran 1.0-1.4x faster than ATen's, with it
// about 2x; 4, 8 and 16 KB and a whole row ahead measured alike within this machine's noise.
constexpr int64_t kPrefetchBytes = 8192;

// Where a task's prefetch of the input stands: rows follow each other in memory, so it runs on
// from the end of one row into the next (the next one reduced, unless the stride skips rows).
struct Prefetch {
  const char* input;  // the input's first byte
  int64_t size;       // its bytes
  int64_t done = 0;   // the lines before this offset are prefetched
};

// hrow[ow*C + c] = max over the in-image columns iw of window ow of row_in[iw*C + c], for one
// input row; src: scratch for cols.kernel pointers; ahead: the task's prefetch, kept
// kPrefetchBytes beyond the columns read.
template <typename scalar_t>
void horizontal_max(scalar_t* hrow, const scalar_t* row_in, const Axis& cols, int64_t channels,
                    const scalar_t** src, Prefetch& ahead) {
  const int64_t c = channels;
  const int64_t row_offset = reinterpret_cast<const char*>(row_in) - ahead.input;
  const int64_t row_bytes = cols.in * c * int64_t(sizeof(scalar_t));
  const auto prefetch_until = [&](int64_t ow) {  // kPrefetchBytes beyond the columns < ow
    const int64_t until =
        std::min(ahead.size, row_offset + row_bytes * ow / cols.out + kPrefetchBytes);
    int64_t line = std::max(ahead.done, row_offset);
    for (; line < until; line += 64) {
      __builtin_prefetch(ahead.input + line, 0, 3);
    }
    ahead.done = std::max(ahead.done, line);
  };
  // Columns ow_full .. ow_end-1 have whole windows; the others lose columns to the left padding
  // or the row's end.
  const int64_t ow_full = std::min(cols.out, at::divup(cols.padding, cols.stride));
  const int64_t room = cols.in + cols.padding - cols.kernel;  // last whole window's start * s
  const int64_t ow_end =
      room < 0 ? ow_full : std::max(ow_full, std::min(cols.out, room / cols.stride + 1));
  const auto window = [&](int64_t ow) {
    const int64_t first = cols.first(ow), count = cols.last(ow) - first;
    for (int64_t j = 0; j < count; ++j) {
      src[j] = row_in + (first + j) * c;
    }
    return count;
  };
  for (int64_t ow = 0; ow < ow_full; ++ow) {
    max_of_many_runs(hrow + ow * c, src, window(ow), c);
  }
  // Whole windows: each column's sources are the previous column's advanced by stride*C. With
  // stride 1 they are all one long run (the row read in order, which the hardware prefetches);
  // otherwise one block of C values per column, a step of columns at a time between prefetches.
  if (cols.stride == 1 && ow_full < ow_end) {
    max_of_many_runs(hrow + ow_full * c, src, window(ow_full), (ow_end - ow_full) * c);
  } else {
    for (int64_t ow = ow_full; ow < ow_end; ow += kColumnsPerStep) {
      const int64_t step = std::min(kColumnsPerStep, ow_end - ow);
      prefetch_until(ow + step);
      max_of_many_runs(hrow + ow * c, src, window(ow), c, Blocks{step, cols.stride * c, c});
    }
    prefetch_until(cols.out);
  }
  for (int64_t ow = ow_end; ow < cols.out; ++ow) {
    max_of_many_runs(hrow + ow * c, src, window(ow), c);
  }
}

template <typename scalar_t>
void max_pool_nhwc_kernel(const scalar_t* x, scalar_t* out, int64_t batch, int64_t channels,
                          const Axis& rows, const Axis& cols) {
  const int64_t in_row_len = cols.in * channels;    // one (n, h) row of the input
  const int64_t out_row_len = cols.out * channels;  // one (n, oh) row of the output
  const int64_t ring_size = rows.kernel;
  const int64_t grain = at::divup(kGrainElements, out_row_len);
  fused_inception::parallel_for(0, batch * rows.out, grain, [&](int64_t begin, int64_t end) {
    // Slot g % kernel_h holds the horizontal maxima of global input row g = n*H + h: the rows
    // of one window are consecutive, so they never share a slot.
    std::unique_ptr<scalar_t[]> ring(new scalar_t[ring_size * out_row_len]);
    std::vector<int64_t> ring_row(ring_size, -1);
    std::vector<const scalar_t*> column_src(cols.kernel);
    std::vector<const scalar_t*> row_src(rows.kernel);
    Prefetch ahead{reinterpret_cast<const char*>(x),
                   batch * rows.in * in_row_len * int64_t(sizeof(scalar_t))};
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / rows.out, oh = r % rows.out;
      const int64_t first = rows.first(oh), count = rows.last(oh) - first;
      for (int64_t j = 0; j < count; ++j) {
        const int64_t g = n * rows.in + first + j;
        scalar_t* slot = ring.get() + (g % ring_size) * out_row_len;
        if (ring_row[g % ring_size] != g) {
          horizontal_max(slot, x + g * in_row_len, cols, channels, column_src.data(), ahead);
          ring_row[g % ring_size] = g;
        }
        row_src[j] = slot;
      }
      max_of_many_runs(out + r * out_row_len, row_src.data(), count, out_row_len);
    }
  });
}

at::Tensor max_pool_nhwc_cpu(const at::Tensor& x, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode) {
  check_pool_input(x, "max_pool_nhwc");
  TORCH_CHECK_VALUE(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2,
                    "max_pool_nhwc: expected kernel_size, stride and padding of 2 values each "
                    "(height, width), got kernel_size=",
                    kernel_size, ", stride=", stride, ", padding=", padding);
  TORCH_CHECK_VALUE(kernel_size[0] >= 1 && kernel_size[1] >= 1,
                    "max_pool_nhwc: expected kernel_size >= 1, got ", kernel_size);
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1, "max_pool_nhwc: expected stride >= 1, got ",
                    stride);
  TORCH_CHECK_VALUE(padding[0] >= 0 && padding[1] >= 0 && padding[0] <= kernel_size[0] / 2 &&
                        padding[1] <= kernel_size[1] / 2,
                    "max_pool_nhwc: expected padding >= 0 and at most half the kernel size ",
                    "(kernel_size // 2 = [", kernel_size[0] / 2, ", ", kernel_size[1] / 2,
                    "]), got padding ", padding);

  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const Axis rows{height, pooled_size(height, kernel_size[0], stride[0], padding[0], ceil_mode),
                  kernel_size[0], stride[0], padding[0]};
  const Axis cols{width, pooled_size(width, kernel_size[1], stride[1], padding[1], ceil_mode),
                  kernel_size[1], stride[1], padding[1]};
  TORCH_CHECK_VALUE(rows.out >= 1 && cols.out >= 1, "max_pool_nhwc: input size [H, W] = [", height,
                    ", ", width, "] with kernel_size ", kernel_size, ", stride ", stride,
                    ", padding ", padding, " and ceil_mode=", ceil_mode ? "True" : "False",
                    " gives the output size [", rows.out, ", ", cols.out,
                    "]; expected at least 1x1");

  at::Tensor out = at::empty({batch, channels, rows.out, cols.out},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool_nhwc", [&] {
    max_pool_nhwc_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                   batch, channels, rows, cols);
  });
  return out;
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("max_pool_nhwc", &fused_inception::max_pool_nhwc_cpu);
}
