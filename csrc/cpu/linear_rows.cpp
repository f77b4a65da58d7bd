// CPU kernel of fused_inception::linear_rows: y = x W^T + b for a few rows x (a classifier at
// small batch: GoogLeNet's fc, 1024 -> 1000), for a prepared network (fused_inception/linear.py,
// RowsLinear).
//
// At batch 1 torch's linear is MKL's sgemv on one thread: 487 us for GoogLeNet's fc after a
// 48 MB write (the weight, 4 MB, from memory), against 300 us for the package's GEMM kernel on
// both threads (2-core Zen 2 EPYC, 2026-12-05). Here the weight is read in place, row-major
// [N, K] as nn.Linear holds it, each thread streaming its own rows once: output n's dot product
// with each x row runs in 8 lanes (lane j takes k = j, j + 8, ..., the remainder k >= K - K % 8
// lane by lane), one fused multiply-add per product, the lanes then summed as ((l0 + l1) + (l2 +
// l3)) + ((l4 + l5) + (l6 + l7)) and the bias added. AVX2 (with FMA) or the plain loop with
// std::fma, by torch's CPU capability (cpu/vector_isa.h): the same bits either way.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu/parallel.h"
#include "cpu/vector_isa.h"

#ifdef FI_X86_VECTOR
#include <immintrin.h>
#endif

namespace fused_inception {
namespace {

constexpr int kLanes = 8;
constexpr int64_t kRowsPerTask = 4;
// Multiply-adds per task at the least: below, the loop runs on the calling thread.
constexpr int64_t kGrainMacs = 32 * 1024;

inline float sum_lanes(const float* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// y[m][n] for n in [n0, n1), every m: the plain loop.
void rows_plain(const float* x, int64_t ldx, int64_t m_rows, const float* w, int64_t ldw, int64_t k,
                const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t k8 = k - k % kLanes;
  for (int64_t n = n0; n < n1; ++n) {
    const float* wn = w + n * ldw;
    for (int64_t m = 0; m < m_rows; ++m) {
      const float* xm = x + m * ldx;
      float lanes[kLanes] = {};
      for (int64_t i = 0; i < k8; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) lanes[j] = std::fma(xm[i + j], wn[i + j], lanes[j]);
      }
      for (int64_t i = k8; i < k; ++i) lanes[i - k8] = std::fma(xm[i], wn[i], lanes[i - k8]);
      y[m * ldy + n] = sum_lanes(lanes) + (bias != nullptr ? bias[n] : 0.f);
    }
  }
}

#ifdef FI_X86_VECTOR
// The same with AVX2: four outputs at a time, their four weight rows streamed together.
__attribute__((target("avx2,fma"))) void rows_avx2(const float* x, int64_t ldx, int64_t m_rows,
                                                   const float* w, int64_t ldw, int64_t k,
                                                   const float* bias, float* y, int64_t ldy,
                                                   int64_t n0, int64_t n1) {
  const int64_t k8 = k - k % kLanes;
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const float *w0 = w + n * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    for (int64_t m = 0; m < m_rows; ++m) {
      const float* xm = x + m * ldx;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = 0; i < k8; i += kLanes) {
        const __m256 v = _mm256_loadu_ps(xm + i);
        a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w0 + i), a0);
        a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w1 + i), a1);
        a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w2 + i), a2);
        a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w3 + i), a3);
      }
      alignas(32) float lanes[4][kLanes];
      _mm256_store_ps(lanes[0], a0);
      _mm256_store_ps(lanes[1], a1);
      _mm256_store_ps(lanes[2], a2);
      _mm256_store_ps(lanes[3], a3);
      const float* rows[4] = {w0, w1, w2, w3};
      for (int r = 0; r < 4; ++r) {
        for (int64_t i = k8; i < k; ++i) {
          lanes[r][i - k8] = std::fma(xm[i], rows[r][i], lanes[r][i - k8]);
        }
        y[m * ldy + n + r] = sum_lanes(lanes[r]) + (bias != nullptr ? bias[n + r] : 0.f);
      }
    }
  }
  if (n < n1) rows_plain(x, ldx, m_rows, w, ldw, k, bias, y, ldy, n, n1);
}
#endif

at::Tensor linear_rows_cpu(const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "linear_rows";
  TORCH_CHECK_VALUE(x.dim() == 2 && weight.dim() == 2, op,
                    ": expected x [M, K] and weight [N, K], "
                    "got ",
                    x.dim(), "-D and ", weight.dim(), "-D");
  const int64_t m_rows = x.size(0), k = x.size(1), n = weight.size(0);
  TORCH_CHECK_VALUE(weight.size(1) == k, op, ": x has ", k, " features, weight ", weight.size(1));
  for (const at::Tensor* t : {&x, &weight}) {
    TORCH_CHECK(t->device().is_cpu(), op, ": expected CPU tensors, got one on ", t->device());
    TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat, op, ": expected float32, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->size(1) <= 1 || t->stride(1) == 1, op,
                      ": expected rows of contiguous features, got strides ", t->strides());
  }
  at::Tensor b;
  if (bias.has_value()) {
    b = bias->contiguous();
    TORCH_CHECK_VALUE(
        b.dim() == 1 && b.size(0) == n && b.device().is_cpu() && b.scalar_type() == at::kFloat, op,
        ": expected a float32 CPU bias [", n, "], got ", b.scalar_type(), " ", b.sizes(), " on ",
        b.device());
  }
  at::Tensor y = at::empty({m_rows, n}, x.options());
  if (m_rows == 0 || n == 0) return y;
  const float* xd = x.const_data_ptr<float>();
  const float* wd = weight.const_data_ptr<float>();
  const float* bd = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* yd = y.mutable_data_ptr<float>();
  const int64_t ldx = m_rows > 1 ? x.stride(0) : k, ldw = n > 1 ? weight.stride(0) : k;
  const int64_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t grain =
      std::max<int64_t>(1, kGrainMacs / std::max<int64_t>(1, kRowsPerTask * k * m_rows));
#ifdef FI_X86_VECTOR
  const bool vector = vector_isa() != VectorIsa::kNone;
#else
  const bool vector = false;
#endif
  parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    const int64_t n0 = begin * kRowsPerTask, n1 = std::min(n, end * kRowsPerTask);
#ifdef FI_X86_VECTOR
    if (vector) {
      rows_avx2(xd, ldx, m_rows, wd, ldw, k, bd, yd, n, n0, n1);
      return;
    }
#endif
    rows_plain(xd, ldx, m_rows, wd, ldw, k, bd, yd, n, n0, n1);
  });
  return y;
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("linear_rows", &fused_inception::linear_rows_cpu);
}
