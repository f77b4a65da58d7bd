// What the NHWC max-pool forward kernels share (csrc/cpu/max_pool3x3.cpp, max_pool_nhwc.cpp):
// torch's update rule (take_max) and its elementwise reduction over up to three equally long
// runs of values (max_of_runs): float32 in AVX-512 or AVX2 loops as torch's CPU capability
// allows, the other dtypes in AVX2 (at::vec::Vectorized), a scalar loop for the rest.
//
// Why the separable scheme both kernels use gives max_pool2d's bits: torch scans a window in
// row-major order with take_max, whose result is the last NaN of the window if it holds one,
// else the first element equal to its maximum. That choice is associative: reducing each row of
// the window first (left to right) and then the rows' results (top to bottom) selects the same
// element, so the choice between NaNs and between equal values such as -0.0 and +0.0 is the
// same as torch's. Include this header after every other ATen header of the file (see below).
#pragma once

#include <ATen/core/Tensor.h>

// Not used here directly: the capability-independent headers that vec.h includes, included first
// so that their inline functions are compiled for the baseline ISA, not in the AVX2 block below.
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/copysign.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "cpu/vector_isa.h"

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
// and the max-pool ran 3-14x slower than max_pool2d. So on x86 the SIMD part below is compiled
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

// float and double in three instructions instead of four: max_ps(value, running) is value where
// value > running and running otherwise, also where either is NaN (it then returns its second
// operand), so only where value is NaN does the blend have to put value back.
inline at::vec::Vectorized<float> take_max(const at::vec::Vectorized<float>& running,
                                           const at::vec::Vectorized<float>& value) {
  const __m256 v = value;
  return _mm256_blendv_ps(_mm256_max_ps(v, running), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

inline at::vec::Vectorized<double> take_max(const at::vec::Vectorized<double>& running,
                                            const at::vec::Vectorized<double>& value) {
  const __m256d v = value;
  return _mm256_blendv_pd(_mm256_max_pd(v, running), v, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
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

// float32 on AVX-512 as well (GoogLeNet's dtype; half the instructions of the AVX2 loop): a
// function with a target attribute, called only where torch runs its AVX512 kernels, so that
// no other code uses AVX-512. The tail of a run is a masked vector, not a scalar loop.
#define FUSED_INCEPTION_AVX512_TARGET __attribute__((target("avx512f")))

namespace fused_inception {
namespace {

// take_max of Vectorized<float> above, in 16 lanes.
FUSED_INCEPTION_AVX512_TARGET inline __m512 take_max_avx512(__m512 running, __m512 value) {
  const __mmask16 is_nan = _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q);
  return _mm512_mask_mov_ps(_mm512_max_ps(value, running), is_nan, value);
}

// max_of_runs_scalar over all of [0, len).
template <int kCount>
FUSED_INCEPTION_AVX512_TARGET void max_of_runs_avx512(float* out, const Runs<float>& src,
                                                      int64_t len) {
  for (int64_t i = 0; i < len; i += 16) {
    const __mmask16 lanes = len - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (len - i)) - 1);
    __m512 m = _mm512_maskz_loadu_ps(lanes, src[0] + i);
    for (int k = 1; k < kCount; ++k) {
      m = take_max_avx512(m, _mm512_maskz_loadu_ps(lanes, src[k] + i));
    }
    _mm512_mask_storeu_ps(out + i, lanes, m);
  }
}

}  // namespace
}  // namespace fused_inception
#endif

namespace fused_inception {
namespace {

// Where max_of_runs repeats its reduction: block b (of count) reads each src[k] + b * src_step
// and writes out + b * out_step. One block (the default) is one run; the pool's horizontal pass
// over strided windows reduces one block of C channels per output column in a single call.
struct Blocks {
  int64_t count = 1;
  int64_t src_step = 0;
  int64_t out_step = 0;
};

// out[i] = take_max over src[0][i], ..., src[count-1][i] in that order, for i in [0, len) (and
// so on for each block of `blocks`); count is 1, 2 or 3. out may be src[0] (each element is read
// before it is written).
template <typename scalar_t>
void max_of_runs(scalar_t* out, const Runs<scalar_t>& src, int count, int64_t len,
                 const Blocks& blocks = {}) {
  const auto run = [&](auto count_constant) {
    constexpr int kCount = decltype(count_constant)::value;
    Runs<scalar_t> block_src = src;
    scalar_t* block_out = out;
    for (int64_t b = 0; b < blocks.count; ++b) {
      int64_t done = 0;
#ifdef FUSED_INCEPTION_AVX2_PATH
      const VectorIsa isa = vector_isa();
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (isa == VectorIsa::kAvx512) {
          max_of_runs_avx512<kCount>(block_out, block_src, len);
          done = len;
        }
      }
      if (isa != VectorIsa::kNone && done < len) {
        done = max_of_runs_avx2<kCount>(block_out, block_src, len);
      }
#endif
      max_of_runs_scalar<kCount>(block_out, block_src, done, len);
      for (int k = 0; k < kCount; ++k) {
        block_src[k] += blocks.src_step;
      }
      block_out += blocks.out_step;
    }
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

// The checks both operators make of their input x before any work, naming the operator `op`.
inline void check_pool_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": expected a 4-D tensor [N, C, H, W], got ", x.dim(),
                    "-D with shape ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), op, " (CPU kernel): expected a CPU tensor, got ", x.device());
  const auto dtype = x.scalar_type();
  TORCH_CHECK_TYPE(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      op, ": expected dtype float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(x.is_contiguous(at::MemoryFormat::ChannelsLast), op,
                    ": expected a channels_last-contiguous tensor (NHWC in memory), got shape ",
                    x.sizes(), " with strides ", x.strides(),
                    "; call x.contiguous(memory_format=torch.channels_last) first");
}

}  // namespace
}  // namespace fused_inception
