// Transposing copies between NCHW and NHWC float32 for the eval block operator
// (csrc/cpu/block_onednn.cpp): x from NCHW into its NHWC working copy, and each branch's NHWC
// result into its channel slice of an NCHW output, with the branch's ReLU on the way.
//
// Why not Tensor::copy_: ATen's strided copy moved these layouts at 7-19 GB/s (2 threads, batch
// 8, an AVX2 EPYC), these copies, 8 x 8 blocks transposed in AVX2 registers, at 36-62 GB/s in
// the same run (2.9-5.5x; README "Backends").
#pragma once

#include <cstdint>

namespace fused_inception {

// For b < batch, i < rows, j < cols:
//   dst[b * dst_batch + j * dst_ld + i] = f(src[b * src_batch + i * src_ld + j]),
// f the identity or, with relu, max(v, 0) keeping NaN (as torch.relu; -0.0 may stay -0.0).
// The regions must not overlap. Runs on the operators' threads (parallel.h), with AVX-512 or
// AVX2 where the CPU and torch's capability allow it (vector_isa.h) and a portable loop
// otherwise. With AVX-512 each thread takes one range of columns (split_cols) or of rows: the
// caller passes the pixels' dimension, which its other loops split the same way.
void transpose_copy(const float* src, int64_t src_batch, int64_t src_ld, float* dst,
                    int64_t dst_batch, int64_t dst_ld, int64_t batch, int64_t rows, int64_t cols,
                    bool relu, bool split_cols);

}  // namespace fused_inception
