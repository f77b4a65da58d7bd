// The launchers of the CUDA kernels: plain structs and raw pointers, no torch headers, so the
// .cu files compile fast and also compile as plain C++ against the SIMT shim.
//
// Each launcher exists twice with the same signature: fused_inception::cuda::* (nvcc build,
// device pointers, runs on `stream`) and fused_inception::emulated::* (shim build, host
// pointers, `stream` ignored). They return nullptr on success, or a message naming what failed
// (a launch error from CUDA or the shim). They do not validate arguments: the binding layer
// (csrc/cuda_ops.cpp) checks shapes, dtypes, devices and layouts before calling them.
//
// Layouts. Activations are NHWC (channels_last) and contiguous: pixel p = (n*H + y)*W + x of x
// starts at x + p * cin. The output is the block's NHWC output with `out_pixel_stride` channels
// per pixel (c1 + c3 + c5 + cp); `out` points at channel c0 of pixel 0, so a branch writes
// out[p * out_pixel_stride + j] for j in [0, cout). Weights are row-major [K, N] matrices in
// the activation dtype (B operands of the GEMMs); biases are float32. Offsets are int64.
#pragma once

#include <cstdint>

namespace fused_inception {

enum class ScalarKind : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// b1 = relu(x @ w + bias), or b4 = relu(maxpool3x3(x) @ w + bias) when pool is true
// (3x3 window, stride 1, padding 1 counting as -inf).
struct Conv1x1SliceArgs {
  ScalarKind dtype;
  const void* x;                 // [N, H, W, cin]
  const void* w;                 // [cin, cout]
  const float* bias;             // [cout]
  void* out;                     // channel c0 of pixel 0 of the block output
  int64_t batch, height, width;  // N, H, W
  int64_t cin, cout;             // channels in and out of this branch
  int64_t out_pixel_stride;
  bool pool;
};

// b2/b3 = relu(convKxK(r) + b_kxk) with r = relu(x @ w_red + b_red), zero padding K/2 applied
// to r (positions outside the image contribute 0, not relu(b_red)). r never reaches memory.
struct ChainArgs {
  ScalarKind dtype;
  const void* x;                 // [N, H, W, cin]
  const void* w_red;             // [cin, cr]
  const float* b_red;            // [cr]
  const void* w_kxk;             // [k*k, cr, cout]: tap t = ky*k + kx, then a row-major [cr, cout]
  const float* b_kxk;            // [cout]
  void* out;                     // channel c0 of pixel 0 of the block output
  int64_t batch, height, width;  // N, H, W
  int64_t cin, cr, cout;
  int64_t out_pixel_stride;
  int k;  // 3 or 5
};

namespace cuda {
const char* conv1x1_slice(const Conv1x1SliceArgs& args, void* stream);
const char* chain_1x1_kxk(const ChainArgs& args, void* stream);
}  // namespace cuda

namespace emulated {
const char* conv1x1_slice(const Conv1x1SliceArgs& args, void* stream);
const char* chain_1x1_kxk(const ChainArgs& args, void* stream);
}  // namespace emulated

}  // namespace fused_inception
