// CPU kernel of fused_inception::max_pool3x3_nhwc: the 3x3, stride 1, padding 1 max-pool of
// the Inception block's pool branch, on channels_last (NHWC) tensors.
//
// Result: bit for bit what torch.nn.functional.max_pool2d(x, 3, 1, 1) returns on the CPU, which
// scans each window in row-major order with the rule of take_max (max_pool_common.h). Padding
// is -inf (never selected), so an all-negative window stays negative. One exception, in NaN bits
// only: bfloat16 NaNs keep the input's bits here, while torch's AVX2/AVX512 kernels write those
// of their vector loop as 0xFFFF (its round trip through float); its default-capability kernel
// matches.
//
// Work: separable, two passes of at most two comparisons per element instead of eight:
//   1. horizontal: for each input row, hrow[w] = max over columns w-1, w, w+1 (in that order);
//   2. vertical:   for each output row, out[w] = max over hrow of rows h-1, h, h+1 (in order).
// Horizontal-first keeps torch's row-major window order, so the choice between NaNs (the last
// one wins) and between equal values such as -0.0 and +0.0 (the first one wins) is the same.
// In NHWC, a row is W*C contiguous values and a column neighbour is C values away, so both
// passes are elementwise over long contiguous runs, vectorised (AVX-512 or AVX2, see
// max_pool_common.h) plus a scalar loop for the remainder, so any C works, including C < vector
// width. (fused_inception::max_pool_nhwc, csrc/cpu/max_pool_nhwc.cpp, is the general pool, the
// same scheme; at GoogLeNet's 3x3/1 shapes this one measured 1-10% faster at batch 8 and 3 us
// faster at batch 1, interleaved, 2 threads, which is why the blocks keep it.)
// Parallelisation: parallel_for over output rows (n, h). Each task keeps the horizontal
// maxima of its last three input rows in a small ring buffer (3*W*C values, in L2 for the
// GoogLeNet shapes), so an input row is reduced horizontally once per task, not three times.

#include "cpu/max_pool3x3.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <memory>

#include "cpu/parallel.h"
// Last: its AVX2 block defines torch's CPU_CAPABILITY macros (see there).
#include "cpu/max_pool_common.h"

namespace fused_inception {
namespace {

// hrow[w*C + c] = max over columns w-1, w, w+1 (those inside [0, W)) of row_in[.*C + c].
template <typename scalar_t>
void horizontal_max(scalar_t* hrow, const scalar_t* row_in, int64_t width, int64_t channels) {
  const int64_t c = channels;
  if (width == 1) {
    max_of_runs(hrow, {row_in, nullptr, nullptr}, 1, c);
    return;
  }
  // Column 0 has no left neighbour, column W-1 no right one; columns 1..W-2 form one contiguous
  // run of (W-2)*C values whose neighbours are the same run shifted by -C and +C.
  max_of_runs(hrow, {row_in, row_in + c, nullptr}, 2, c);
  max_of_runs(hrow + c, {row_in, row_in + c, row_in + 2 * c}, 3, (width - 2) * c);
  const int64_t last = (width - 1) * c;
  max_of_runs(hrow + last, {row_in + last - c, row_in + last, nullptr}, 2, c);
}

template <typename scalar_t>
void max_pool3x3_nhwc_kernel(const scalar_t* x, scalar_t* out, int64_t batch, int64_t height,
                             int64_t width, int64_t channels) {
  const int64_t row_len = width * channels;  // one (n, h) row of NHWC memory
  const int64_t grain = at::divup(kGrainElements, row_len);
  fused_inception::parallel_for(0, batch * height, grain, [&](int64_t begin, int64_t end) {
    // Ring buffer: slot g % 3 holds the horizontal max of global input row g = n*H + h.
    std::unique_ptr<scalar_t[]> ring(new scalar_t[3 * row_len]);
    std::array<int64_t, 3> ring_row = {-1, -1, -1};
    auto hrow = [&](int64_t g) -> const scalar_t* {
      scalar_t* slot = ring.get() + (g % 3) * row_len;
      if (ring_row[g % 3] != g) {
        horizontal_max(slot, x + g * row_len, width, channels);
        ring_row[g % 3] = g;
      }
      return slot;
    };
    for (int64_t r = begin; r < end; ++r) {
      const int64_t h = r % height;
      const int64_t g_first = h > 0 ? r - 1 : r;
      const int64_t g_last = h + 1 < height ? r + 1 : r;
      Runs<scalar_t> rows = {nullptr, nullptr, nullptr};
      int count = 0;
      for (int64_t g = g_first; g <= g_last; ++g) {
        rows[count++] = hrow(g);
      }
      max_of_runs(out + r * row_len, rows, count, row_len);
    }
  });
}

at::Tensor max_pool3x3_nhwc_cpu(const at::Tensor& x) {
  // Checked before the allocation, which would fail less clearly on a bad x (the check in
  // max_pool3x3_nhwc_into, for its other callers, repeats it: a few comparisons).
  check_pool_input(x, "max_pool3x3_nhwc");
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  max_pool3x3_nhwc_into(x, out);
  return out;
}

}  // namespace

void max_pool3x3_nhwc_into(const at::Tensor& x, const at::Tensor& out) {
  check_pool_input(x, "max_pool3x3_nhwc");
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
                  out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "max_pool3x3_nhwc_into: out must be a channels_last tensor of x's shape and dtype");
  if (out.numel() == 0) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool3x3_nhwc", [&] {
        max_pool3x3_nhwc_kernel<scalar_t>(x.const_data_ptr<scalar_t>(),
                                          out.mutable_data_ptr<scalar_t>(), x.size(0), x.size(2),
                                          x.size(3), x.size(1));
      });
}

}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("max_pool3x3_nhwc", &fused_inception::max_pool3x3_nhwc_cpu);
}
