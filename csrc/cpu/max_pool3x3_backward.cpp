// CPU kernels of fused_inception::max_pool3x3_nhwc_backward and its accumulating form
// max_pool3x3_nhwc_backward_add_: the gradient max_pool2d_with_indices_backward returns for
// max_pool2d_with_indices(x, 3, 1, 1)'s indices, on channels_last (NHWC) tensors, without
// storing indices.
//
// Result: bit for bit ATen's in float32 and float64 (ties, NaN, infinities and all -inf windows
// included); 16-bit dtypes accumulate in float32 and round once. Two facts fix it:
//   - the element an output's gradient goes to is the one torch's rule selects when it scans the
//     window's in-image elements in row-major order: the running max starts at -inf with the
//     first element selected, and a value replaces it if it is NaN or strictly greater. So the
//     last NaN of the window wins, else the first occurrence of its maximum;
//   - an input element's gradient is the sum of the gradients of the outputs that selected it,
//     added in the outputs' row-major order (ATen scatters them in that order into zeros).
//
// Work per image, streaming over rows with rings of three rows (in L1/L2 for GoogLeNet's shapes):
//   1. horizontal selection of each input row: per column w, the rule over columns w-1, w, w+1
//      gives a value and its column in the window (0..2);
//   2. vertical selection of each output row: the rule over the horizontal results of rows
//      h-1, h, h+1 gives the tap, 3 * row + column (0..8). Applying the rule per row and then
//      across rows selects the same element as the row-major scan: a row's result is its last
//      NaN or its first maximum, and across rows the last row with a NaN or the first row
//      holding the maximum wins; an all -inf window keeps its first element either way;
//   3. gather of each input row: per element, the sum over its up to nine neighbouring outputs,
//      in their row-major order, of the gradients of those whose tap is this element.
// Steps 1 and 2 take 4 comparisons per element where a 9-element scan takes 9. Each step is
// elementwise over contiguous runs of NHWC memory (a row is W*C values; the column neighbours
// of a run are the same run shifted by C): float32 runs take AVX-512 (16 lanes) or AVX2 (8)
// loops as torch's CPU capability allows (ATEN_CPU_CAPABILITY=default: scalar loops only), a
// scalar loop finishes each run and does everything for the other dtypes. Taps and columns are
// kept as floats (small integers, exact) so that they are compared and blended in the same
// lanes as the values. Vector and scalar loops evaluate the same comparisons, selections and
// additions in the same order, so every width gives the same bits.
// Images run in parallel (parallel_for over the batch).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/vector_isa.h"

namespace fused_inception {
namespace {

// Up to three runs (rows or shifted columns) reduced elementwise by a selection step, or up to
// nine (neighbouring outputs) by a gather step.
constexpr int kMaxTerms = 9;

// One selection step over `count` equally long runs, in scan order: candidate j has value
// value[j][i] and tap tap[j] + (tap_of ? tap_of[j][i] : 0).
template <typename value_t>
struct Selection {
  std::array<const value_t*, 3> value{};
  std::array<const float*, 3> tap_of{};  // null: the candidate's tap is tap[j] alone
  std::array<float, 3> tap{};
  int count = 0;
};

// One gather step: the sum over j < count, in order, of grad[j][i] where taps[j][i] == tap_is[j].
template <typename scalar_t>
struct Gather {
  std::array<const float*, kMaxTerms> taps{};
  std::array<const scalar_t*, kMaxTerms> grad{};
  std::array<float, kMaxTerms> tap_is{};
  int count = 0;
};

// ---- scalar loops: every dtype, and the tail of each vector run -----------------------------

// The selection rule, for out_value (may be null) and out_tap over elements [begin, len).
template <typename value_t>
void select_scalar(value_t* out_value, float* out_tap, const Selection<value_t>& s, int64_t begin,
                   int64_t len) {
  for (int64_t i = begin; i < len; ++i) {
    value_t m = s.value[0][i];
    float t = s.tap[0] + (s.tap_of[0] != nullptr ? s.tap_of[0][i] : 0.0f);
    for (int j = 1; j < s.count; ++j) {
      const value_t v = s.value[j][i];
      if (v > m || v != v) {
        m = v;
        t = s.tap[j] + (s.tap_of[j] != nullptr ? s.tap_of[j][i] : 0.0f);
      }
    }
    if (out_value != nullptr) {
      out_value[i] = m;
    }
    out_tap[i] = t;
  }
}

template <typename scalar_t>
void gather_scalar(scalar_t* dst, const Gather<scalar_t>& g, int64_t begin, int64_t len,
                   bool accumulate) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = begin; i < len; ++i) {
    opmath_t acc = opmath_t(0);
    for (int j = 0; j < g.count; ++j) {
      acc += g.taps[j][i] == g.tap_is[j] ? static_cast<opmath_t>(g.grad[j][i]) : opmath_t(0);
    }
    const scalar_t sum = static_cast<scalar_t>(acc);
    dst[i] = accumulate
                 ? static_cast<scalar_t>(static_cast<opmath_t>(dst[i]) + static_cast<opmath_t>(sum))
                 : sum;
  }
}

// ---- vector loops (float32): AVX-512 and AVX2 intrinsics ------------------------------------
//
// Each is the scalar loop above over whole vectors: the same comparisons (v > m ordered, or v
// unordered: NaN), the same selections and the same additions in the same order. (GCC's vector
// extensions were tried first: it compiled `(v > m) | (v != v)` lane by lane.) The AVX-512 and
// AVX2 functions are the same loop written twice, once per ISA: their masks differ in kind
// (__mmask16 against a vector), and a shared template would not take either target attribute.

#ifdef FI_X86_VECTOR
#define FUSED_INCEPTION_VECTOR_BACKWARD 1
#include <immintrin.h>

// AVX-512F is all these use; DQ/VL/BW come with every AVX-512 CPU since Skylake-SP.
#define FI_TARGET_AVX512 __attribute__((target("avx512f")))
#define FI_TARGET_AVX2 __attribute__((target("avx2")))

FI_TARGET_AVX512 int64_t select_avx512(float* out_value, float* out_tap, const Selection<float>& s,
                                       int64_t len) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    __m512 m = _mm512_loadu_ps(s.value[0] + i);
    __m512 t = _mm512_set1_ps(s.tap[0]);
    if (s.tap_of[0] != nullptr) {
      t = _mm512_add_ps(t, _mm512_loadu_ps(s.tap_of[0] + i));
    }
    for (int j = 1; j < s.count; ++j) {
      const __m512 v = _mm512_loadu_ps(s.value[j] + i);
      __m512 tj = _mm512_set1_ps(s.tap[j]);
      if (s.tap_of[j] != nullptr) {
        tj = _mm512_add_ps(tj, _mm512_loadu_ps(s.tap_of[j] + i));
      }
      const __mmask16 take =
          _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      m = _mm512_mask_blend_ps(take, m, v);
      t = _mm512_mask_blend_ps(take, t, tj);
    }
    if (out_value != nullptr) {
      _mm512_storeu_ps(out_value + i, m);
    }
    _mm512_storeu_ps(out_tap + i, t);
  }
  return i;
}

FI_TARGET_AVX2 int64_t select_avx2(float* out_value, float* out_tap, const Selection<float>& s,
                                   int64_t len) {
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    __m256 m = _mm256_loadu_ps(s.value[0] + i);
    __m256 t = _mm256_set1_ps(s.tap[0]);
    if (s.tap_of[0] != nullptr) {
      t = _mm256_add_ps(t, _mm256_loadu_ps(s.tap_of[0] + i));
    }
    for (int j = 1; j < s.count; ++j) {
      const __m256 v = _mm256_loadu_ps(s.value[j] + i);
      __m256 tj = _mm256_set1_ps(s.tap[j]);
      if (s.tap_of[j] != nullptr) {
        tj = _mm256_add_ps(tj, _mm256_loadu_ps(s.tap_of[j] + i));
      }
      const __m256 take =
          _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      m = _mm256_blendv_ps(m, v, take);
      t = _mm256_blendv_ps(t, tj, take);
    }
    if (out_value != nullptr) {
      _mm256_storeu_ps(out_value + i, m);
    }
    _mm256_storeu_ps(out_tap + i, t);
  }
  return i;
}

FI_TARGET_AVX512 int64_t gather_avx512(float* dst, const Gather<float>& g, int64_t len,
                                       bool accumulate) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < g.count; ++j) {
      const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(g.taps[j] + i),
                                               _mm512_set1_ps(g.tap_is[j]), _CMP_EQ_OQ);
      acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(hit, g.grad[j] + i));
    }
    if (accumulate) {
      acc = _mm512_add_ps(_mm512_loadu_ps(dst + i), acc);
    }
    _mm512_storeu_ps(dst + i, acc);
  }
  return i;
}

FI_TARGET_AVX2 int64_t gather_avx2(float* dst, const Gather<float>& g, int64_t len,
                                   bool accumulate) {
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < g.count; ++j) {
      const __m256 hit =
          _mm256_cmp_ps(_mm256_loadu_ps(g.taps[j] + i), _mm256_set1_ps(g.tap_is[j]), _CMP_EQ_OQ);
      acc = _mm256_add_ps(acc, _mm256_and_ps(hit, _mm256_loadu_ps(g.grad[j] + i)));
    }
    if (accumulate) {
      acc = _mm256_add_ps(_mm256_loadu_ps(dst + i), acc);
    }
    _mm256_storeu_ps(dst + i, acc);
  }
  return i;
}

#endif  // vector loops

template <typename value_t>
void select_run(value_t* out_value, float* out_tap, const Selection<value_t>& s, int64_t len) {
  int64_t done = 0;
#ifdef FUSED_INCEPTION_VECTOR_BACKWARD
  if constexpr (std::is_same_v<value_t, float>) {
    switch (vector_isa()) {
      case VectorIsa::kAvx512:
        done = select_avx512(out_value, out_tap, s, len);
        break;
      case VectorIsa::kAvx2:
        done = select_avx2(out_value, out_tap, s, len);
        break;
      default:
        break;
    }
  }
#endif
  select_scalar(out_value, out_tap, s, done, len);
}

template <typename scalar_t>
void gather_run(scalar_t* dst, const Gather<scalar_t>& g, int64_t len, bool accumulate) {
  int64_t done = 0;
#ifdef FUSED_INCEPTION_VECTOR_BACKWARD
  if constexpr (std::is_same_v<scalar_t, float>) {
    switch (vector_isa()) {
      case VectorIsa::kAvx512:
        done = gather_avx512(dst, g, len, accumulate);
        break;
      case VectorIsa::kAvx2:
        done = gather_avx2(dst, g, len, accumulate);
        break;
      default:
        break;
    }
  }
#endif
  gather_scalar(dst, g, done, len, accumulate);
}

// ---- one image ----------------------------------------------------------------------------

// Columns [w0, w1) share which column neighbours s = -1, 0, +1 exist: the first and last
// column have one fewer, the columns between form one contiguous run.
struct ColumnSpan {
  int64_t w0, w1;
  int s_first, s_last;
};

int column_spans(int64_t width, std::array<ColumnSpan, 3>& spans) {
  if (width == 1) {
    spans[0] = {0, 1, 0, 0};
    return 1;
  }
  int count = 0;
  spans[count++] = {0, 1, 0, 1};
  if (width > 2) {
    spans[count++] = {1, width - 1, -1, 1};
  }
  spans[count++] = {width - 1, width, -1, 0};
  return count;
}

// Scratch of one task: rings of three rows (W*C elements each) of horizontal values (opmath),
// horizontal columns and taps (float), and one row of opmath values (16-bit inputs widened).
// Kept per thread between calls: fresh buffers on every call cost page faults.
template <typename value_t>
struct Rings {
  value_t* hval;
  value_t* widened;
  float* hcol;
  float* taps;
};

template <typename value_t>
Rings<value_t> rings(int64_t row_len) {
  thread_local std::vector<unsigned char> buffer;
  const size_t rows = static_cast<size_t>(row_len);
  const size_t bytes = 4 * rows * sizeof(value_t) + 6 * rows * sizeof(float);
  if (buffer.size() < bytes) {
    buffer.resize(bytes);
  }
  // value_t first: the floats after it stay aligned for both 4- and 8-byte value types.
  auto* hval = reinterpret_cast<value_t*>(buffer.data());
  auto* hcol = reinterpret_cast<float*>(hval + 4 * rows);
  return {hval, hval + 3 * rows, hcol, hcol + 3 * rows};
}

template <typename scalar_t>
void backward_image(const scalar_t* grad_out, const scalar_t* x, scalar_t* grad_in, int64_t height,
                    int64_t width, int64_t channels, bool accumulate) {
  // Values are selected in opmath (exact copies): float for float32 and the 16-bit types.
  using value_t = at::opmath_type<scalar_t>;
  const int64_t c = channels;
  const int64_t row_len = width * c;
  const Rings<value_t> ring = rings<value_t>(row_len);
  std::array<ColumnSpan, 3> spans;
  const int span_count = column_spans(width, spans);

  // 16-bit inputs are widened to float once per row (into ring.widened); float and double rows
  // are read in place.
  auto horizontal = [&](int64_t ih) {
    const value_t* row;
    if constexpr (std::is_same_v<scalar_t, value_t>) {
      row = x + ih * row_len;
    } else {
      for (int64_t i = 0; i < row_len; ++i) {
        ring.widened[i] = static_cast<value_t>(x[ih * row_len + i]);
      }
      row = ring.widened;
    }
    value_t* hval = ring.hval + (ih % 3) * row_len;
    float* hcol = ring.hcol + (ih % 3) * row_len;
    for (int k = 0; k < span_count; ++k) {
      const ColumnSpan& span = spans[k];
      Selection<value_t> s;
      for (int d = span.s_first; d <= span.s_last; ++d) {
        s.value[s.count] = row + (span.w0 + d) * c;
        s.tap[s.count++] = static_cast<float>(d + 1);
      }
      select_run(hval + span.w0 * c, hcol + span.w0 * c, s, (span.w1 - span.w0) * c);
    }
  };
  auto vertical = [&](int64_t h) {
    Selection<value_t> s;
    for (int64_t ih = std::max<int64_t>(h - 1, 0); ih <= std::min(h + 1, height - 1); ++ih) {
      s.value[s.count] = ring.hval + (ih % 3) * row_len;
      s.tap_of[s.count] = ring.hcol + (ih % 3) * row_len;
      s.tap[s.count++] = static_cast<float>((ih - h + 1) * 3);
    }
    select_run<value_t>(nullptr, ring.taps + (h % 3) * row_len, s, row_len);
  };
  auto gather = [&](int64_t ih) {
    scalar_t* dst = grad_in + ih * row_len;
    for (int k = 0; k < span_count; ++k) {
      const ColumnSpan& span = spans[k];
      Gather<scalar_t> g;
      // Output (oh, ow = iw + d) selected input (ih, iw) if its tap is (ih-oh+1)*3 + (1-d).
      for (int64_t oh = std::max<int64_t>(ih - 1, 0); oh <= std::min(ih + 1, height - 1); ++oh) {
        for (int d = span.s_first; d <= span.s_last; ++d) {
          const int64_t offset = (span.w0 + d) * c;
          g.taps[g.count] = ring.taps + (oh % 3) * row_len + offset;
          g.grad[g.count] = grad_out + oh * row_len + offset;
          g.tap_is[g.count++] = static_cast<float>((ih - oh + 1) * 3 + (1 - d));
        }
      }
      gather_run(dst + span.w0 * c, g, (span.w1 - span.w0) * c, accumulate);
    }
  };

  // Ring slot r % 3 of each ring holds row r; the vertical step of output row h needs the
  // horizontal rows h-1..h+1, the gather of input row h-1 the tap rows h-2..h.
  horizontal(0);
  for (int64_t h = 0; h < height; ++h) {
    if (h + 1 < height) {
      horizontal(h + 1);
    }
    vertical(h);
    if (h > 0) {
      gather(h - 1);
    }
  }
  gather(height - 1);
}

// ---- operators ----------------------------------------------------------------------------

// Argument checks shared by max_pool3x3_nhwc_backward and its accumulating form (`op`: the
// operator's name in the messages); grad_in (may be null) is the accumulator.
void check_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                         const at::Tensor* grad_in) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": expected a 4-D x [N, C, H, W], got ", x.dim(),
                    "-D with shape ", x.sizes());
  TORCH_CHECK_VALUE(grad_out.sizes() == x.sizes(), op, ": grad_out must have x's shape ", x.sizes(),
                    ", got ", grad_out.sizes());
  if (grad_in != nullptr) {
    TORCH_CHECK_VALUE(grad_in->sizes() == x.sizes(), op, ": grad_in must have x's shape ",
                      x.sizes(), ", got ", grad_in->sizes());
  }
  TORCH_CHECK(x.device().is_cpu() && grad_out.device().is_cpu() &&
                  (grad_in == nullptr || grad_in->device().is_cpu()),
              op, " (CPU kernel): expected CPU tensors, got x on ", x.device(), " and grad_out on ",
              grad_out.device(), grad_in != nullptr ? " and grad_in on " : "",
              grad_in != nullptr ? grad_in->device().str() : "");
  const auto dtype = x.scalar_type();
  TORCH_CHECK_TYPE(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      op, ": expected dtype float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_TYPE(grad_out.scalar_type() == dtype, op, ": grad_out is ", grad_out.scalar_type(),
                   ", x is ", dtype);
  if (grad_in != nullptr) {
    TORCH_CHECK_TYPE(grad_in->scalar_type() == dtype, op, ": grad_in is ", grad_in->scalar_type(),
                     ", x is ", dtype);
  }
  for (const at::Tensor* t : {&x, &grad_out, grad_in}) {
    if (t == nullptr) {
      continue;
    }
    TORCH_CHECK_VALUE(t->is_contiguous(at::MemoryFormat::ChannelsLast), op,
                      ": expected channels_last-contiguous tensors (NHWC in memory), got shape ",
                      t->sizes(), " with strides ", t->strides());
  }
  if (grad_in != nullptr && grad_in->numel() > 0) {
    for (const at::Tensor* t : {&x, &grad_out}) {
      TORCH_CHECK_VALUE(!grad_in->is_same(*t) && grad_in->data_ptr() != t->data_ptr(), op,
                        ": grad_in must not share memory with x or grad_out");
    }
  }
}

void backward_into(const at::Tensor& grad_out, const at::Tensor& x, at::Tensor& grad_in,
                   bool accumulate) {
  if (grad_in.numel() == 0) {
    return;
  }
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t image = height * width * channels;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool3x3_nhwc_backward", [&] {
        const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
        const scalar_t* xp = x.const_data_ptr<scalar_t>();
        scalar_t* gi = grad_in.mutable_data_ptr<scalar_t>();
        fused_inception::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
          for (int64_t n = begin; n < end; ++n) {
            backward_image(g + n * image, xp + n * image, gi + n * image, height, width, channels,
                           accumulate);
          }
        });
      });
}

at::Tensor max_pool3x3_nhwc_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x) {
  check_backward_args("max_pool3x3_nhwc_backward", grad_out, x, nullptr);
  at::Tensor grad_in =
      at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  backward_into(grad_out, x, grad_in, false);
  return grad_in;
}

void max_pool3x3_nhwc_backward_add_cpu(at::Tensor& grad_in, const at::Tensor& grad_out,
                                       const at::Tensor& x) {
  check_backward_args("max_pool3x3_nhwc_backward_add_", grad_out, x, &grad_in);
  backward_into(grad_out, x, grad_in, true);
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("max_pool3x3_nhwc_backward", &fused_inception::max_pool3x3_nhwc_backward_cpu);
  m.impl("max_pool3x3_nhwc_backward_add_", &fused_inception::max_pool3x3_nhwc_backward_add_cpu);
}
