// The package's own float32 convolution for NHWC images as a GEMM over their pixel rows, with
// the bias, the ReLU and the store into channel slices in its epilogue
// (csrc/cpu/gemm_panels.cpp):
//
//   C[i, j] = relu(sum_t sum_c A_t[i, c] * B[t * C + c, j] + bias[j]),   i < m, j < n
//
// A_t: the pixel rows of x [N, H, W, C] shifted by tap t = (dy, dx) of a K x K kernel, stride 1,
// zero padding K / 2 (for K = 1, x's rows: a 1x1 convolution). B: the weight [n, K, K, C] packed
// as "panels" [ceil(n / 16), K * K * C, 16] (panel p holds output channels 16p .. 16p + 15, zero
// past n; fused_inception/backends/cpu_onednn.py, pack_panels). C's columns go to one or more
// destinations (ColumnRange): e.g. b1's into the block output's channel slice and r2's and r3's
// into their own buffers. The ReLU keeps NaN, as torch's does.
#pragma once

#include <cstdint>
#include <vector>

namespace fused_inception {

// Columns [begin, end) of C go to dst: C[i, j] is stored at dst[i * ldc + (j - begin)].
struct ColumnRange {
  int64_t begin, end;
  float* dst;
  int64_t ldc;
};

// x as the GEMM's A: pixel (b, y, x) of an [n, h, w] image with c channels at
// data + ((b * h + y) * w + x) * ld; `kernel` K (odd, at most kMaxKernel).
struct ConvInput {
  const float* data;
  int64_t ld, n, h, w, c;
  int kernel;
};

constexpr int kMaxKernel = 7;

// C = relu(conv(x) + bias) as above, into `ranges` (covering [0, n_out) without overlap, in
// column order). Parallel over (row chunk, panel) tasks (fused_inception::parallel_for). The
// vector kernel is AVX2 + FMA where cpu/vector_isa.h allows it, else a plain loop; both take one
// FMA chain per output in (tap, channel) order, so they give the same bits.
void conv_bias_relu(const ConvInput& x, const float* panels, int64_t n_out, const float* bias,
                    const std::vector<ColumnRange>& ranges);

}  // namespace fused_inception
