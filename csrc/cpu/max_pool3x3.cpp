// CPU kernel of fused_inception::max_pool3x3_nhwc: the 3x3, stride 1, padding 1 max-pool of
// the Inception block's pool branch, on channels_last (NHWC) tensors.
//
// Result: bit for bit what torch.nn.functional.max_pool2d(x, 3, 1, 1) returns on the CPU, which
// scans each window in row-major order with the rule of take_max below. Padding is -inf (never
// selected), so an all-negative window stays negative. One exception, in NaN bits only: bfloat16
// NaNs keep the input's bits here, while torch's AVX2/AVX512 kernels write those of their vector
// loop as 0xFFFF (its round trip through float); its default-capability kernel matches.
//
// Work: separable, two passes of at most two comparisons per element instead of eight:
//   1. horizontal: for each input row, hrow[w] = max over columns w-1, w, w+1 (in that order);
//   2. vertical:   for each output row, out[w] = max over hrow of rows h-1, h, h+1 (in order).
// Horizontal-first keeps torch's row-major window order, so the choice between NaNs (the last
// one wins) and between equal values such as -0.0 and +0.0 (the first one wins) is the same.
// In NHWC, a row is W*C contiguous values and a column neighbour is C values away, so both
// passes are elementwise over long contiguous runs, vectorised with at::vec::Vectorized (AVX2,
// see below) plus a scalar loop for the remainder, so any C works, including C < vector width.
// Parallelisation: at::parallel_for over output rows (n, h). Each task keeps the horizontal
// maxima of its last three input rows in a small ring buffer (3*W*C values, in L2 for the
// GoogLeNet shapes), so an input row is reduced horizontally once per task, not three times.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "cpu/parallel.h"

// Not used here directly: the capability-independent headers that vec.h includes, included first
// so that their inline functions are compiled for the baseline ISA, not in the AVX2 block below.
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/copysign.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

namespace fused_inception {
namespace {

// Elements per parallel task at least: at::internal::GRAIN_SIZE, which lives in a heavy header.
constexpr int64_t kGrainElements = 32768;

// Up to three equally long runs of values that one pass reduces elementwise.
template <typename scalar_t>
using Runs = std::array<const scalar_t*, 3>;

// torch's max-pool update rule (aten/src/ATen/native/cpu/MaxPoolKernel.cpp): a NaN always
// replaces the running max, any other value only if it is strictly greater. at::vec::maximum is
// not used: it propagates NaN, but as an all-ones NaN on AVX2, and of two equal values it keeps
// the later one; both differ from max_pool2d in the bits.
template <typename scalar_t>
inline scalar_t take_max(scalar_t running, scalar_t value) {
  const bool is_nan = value != value;  // also for c10::Half/BFloat16, which compare as float
  return (value > running || is_nan) ? value : running;
}

// out[i] = take_max over src[0][i], ..., src[kCount-1][i] in that order, for i in [begin, len).
template <int kCount, typename scalar_t>
void max_of_runs_scalar(scalar_t* out, const Runs<scalar_t>& src, int64_t begin, int64_t len) {
  for (int64_t i = begin; i < len; ++i) {
    scalar_t m = src[0][i];
    for (int k = 1; k < kCount; ++k) {
      m = take_max(m, src[k][i]);
    }
    out[i] = m;
  }
}

}  // namespace
}  // namespace fused_inception

// at::vec::Vectorized is SIMD only when one of torch's CPU_CAPABILITY_* macros is defined
// (torch compiles each of its kernels once per capability); without one it is a plain array
// and this kernel ran 3-14x slower than max_pool2d. So on x86 the SIMD part below is compiled
// for AVX2 (+FMA, F16C) whatever the compiler flags, and called only when torch itself runs its
// AVX2 or AVX512 kernels (which also honours ATEN_CPU_CAPABILITY=default); otherwise, and with
// other compilers or on other architectures, the portable loops above run. Only this block is
// AVX2 code (checked with objdump: no other function has a VEX instruction), so the module
// still imports and runs on CPUs without AVX2.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FUSED_INCEPTION_AVX2_PATH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // notes on the AVX calling convention, as torch does
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
// g++ does not define the ISA macros for `#pragma GCC target` in C++; sleef.h (included by
// vec.h) needs them to declare its AVX2 functions.
#define __AVX__ 1
#define __AVX2__ 1
#include <ATen/cpu/vec/vec.h>
#undef __AVX2__
#undef __AVX__

namespace fused_inception {
namespace {

template <typename scalar_t>
inline at::vec::Vectorized<scalar_t> take_max(const at::vec::Vectorized<scalar_t>& running,
                                              const at::vec::Vectorized<scalar_t>& value) {
  using Vec = at::vec::Vectorized<scalar_t>;
  return Vec::blendv(running, value, (value > running) | value.isnan());
}

// max_of_runs_scalar over whole vectors; returns where it stopped (the scalar loop finishes).
template <int kCount, typename scalar_t>
int64_t max_of_runs_avx2(scalar_t* out, const Runs<scalar_t>& src, int64_t len) {
  using Vec = at::vec::Vectorized<scalar_t>;
  constexpr int64_t kWidth = Vec::size();
  int64_t i = 0;
  for (; i + kWidth <= len; i += kWidth) {
    Vec m = Vec::loadu(src[0] + i);
    for (int k = 1; k < kCount; ++k) {
      m = take_max(m, Vec::loadu(src[k] + i));
    }
    m.store(out + i);
  }
  return i;
}

}  // namespace
}  // namespace fused_inception

#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

namespace fused_inception {
namespace {

bool use_avx2_path() {
#ifdef FUSED_INCEPTION_AVX2_PATH
  static const bool enabled = [] {
    const std::string capability = at::get_cpu_capability();
    return capability == "AVX2" || capability == "AVX512";
  }();
  return enabled;
#else
  return false;
#endif
}

// out[i] = take_max over src[0][i], ..., src[count-1][i] in that order, for i in [0, len).
template <typename scalar_t>
void max_of_runs(scalar_t* out, const Runs<scalar_t>& src, int count, int64_t len) {
  const auto run = [&](auto count_constant) {
    constexpr int kCount = decltype(count_constant)::value;
    int64_t done = 0;
#ifdef FUSED_INCEPTION_AVX2_PATH
    if (use_avx2_path()) {
      done = max_of_runs_avx2<kCount>(out, src, len);
    }
#endif
    max_of_runs_scalar<kCount>(out, src, done, len);
  };
  switch (count) {
    case 1:
      run(std::integral_constant<int, 1>{});
      break;
    case 2:
      run(std::integral_constant<int, 2>{});
      break;
    default:
      run(std::integral_constant<int, 3>{});
      break;
  }
}

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
  TORCH_CHECK_VALUE(x.dim() == 4, "max_pool3x3_nhwc: expected a 4-D tensor [N, C, H, W], got ",
                    x.dim(), "-D with shape ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "max_pool3x3_nhwc (CPU kernel): expected a CPU tensor, got ",
              x.device());
  const auto dtype = x.scalar_type();
  TORCH_CHECK_TYPE(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      "max_pool3x3_nhwc: expected dtype float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(
      x.is_contiguous(at::MemoryFormat::ChannelsLast),
      "max_pool3x3_nhwc: expected a channels_last-contiguous tensor (NHWC in memory), "
      "got shape ",
      x.sizes(), " with strides ", x.strides(),
      "; call x.contiguous(memory_format=torch.channels_last) first");

  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "max_pool3x3_nhwc", [&] {
    max_pool3x3_nhwc_kernel<scalar_t>(x.const_data_ptr<scalar_t>(),
                                      out.mutable_data_ptr<scalar_t>(), batch, height, width,
                                      channels);
  });
  return out;
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("max_pool3x3_nhwc", &fused_inception::max_pool3x3_nhwc_cpu);
}
