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

// Version 2 (16-bit, tensor-core mainloops: mma.sync m16n8k16, ldmatrix, cp.async pipelines),
// the same split as the Triton backend: two launches per block, M = N*H*W pixel rows.
//
// block_1x1: every 1x1 convolution over x, and the pool branch.
//   [b1 | r2 | r3] = relu(x @ w_x + b_x): columns [0, c1) into out's channels [0, c1), columns
//   [c1, n_x) into the scratch rows r [M, n_x - c1] (contiguous); and
//   b4 = relu(maxpool3x3(x) @ w_pool + b_pool) (3x3/1, padding counts as -inf) into out's
//   channels [pool_off, pool_off + c_pool).
struct Block1x1Args {
  ScalarKind dtype;              // kFloat16 or kBFloat16
  const void* x;                 // NHWC rows: pixel p starts at x + p * x_pixel_stride
  const void* w_x;               // [c_in, n_x] row-major
  const float* b_x;              // [n_x]
  const void* w_pool;            // [c_in, c_pool] row-major
  const float* b_pool;           // [c_pool]
  void* out;                     // channel 0 of pixel 0 of the block output
  void* r;                       // [M, n_x - c1] row-major scratch
  int64_t batch, height, width;  // N, H, W (M = N*H*W)
  int64_t c_in, n_x, c1, c_pool;
  int64_t x_pixel_stride, out_pixel_stride, pool_off;
};

// block_kxk: b2 = relu(conv3x3(r2) + b2) into out's channels [off2, off2 + c2) and
// b3 = relu(convKxK(r3) + b3) (K = k3, 3 or 5) into [off3, off3 + c3); zero padding (taps
// outside the image contribute 0). r2 is columns [0, c2r) of r, r3 columns [c2r, c2r + c3r).
struct BlockKxkArgs {
  ScalarKind dtype;              // kFloat16 or kBFloat16
  const void* r;                 // [M, c2r + c3r] row-major (block_1x1's scratch)
  const void* w2;                // [9, c2r, c2]: tap t = ky*3 + kx, then a row-major [c2r, c2]
  const float* b2;               // [c2]
  const void* w3;                // [k3*k3, c3r, c3]
  const float* b3;               // [c3]
  void* out;                     // channel 0 of pixel 0 of the block output
  int64_t batch, height, width;  // N, H, W
  int64_t c2r, c3r, c2, c3;
  int64_t out_pixel_stride, off2, off3;
  int k3;  // 3 or 5
};

namespace cuda {
const char* conv1x1_slice(const Conv1x1SliceArgs& args, void* stream);
const char* chain_1x1_kxk(const ChainArgs& args, void* stream);
const char* block_1x1(const Block1x1Args& args, void* stream);
const char* block_kxk(const BlockKxkArgs& args, void* stream);
}  // namespace cuda

namespace emulated {
const char* conv1x1_slice(const Conv1x1SliceArgs& args, void* stream);
const char* chain_1x1_kxk(const ChainArgs& args, void* stream);
const char* block_1x1(const Block1x1Args& args, void* stream);
const char* block_kxk(const BlockKxkArgs& args, void* stream);

// Counting on the shim (csrc/emulated/counters.cpp; what python -m fused_inception.report
// --work reads through csrc/cuda_ops.cpp). count_regions: the next emulated launch on this host
// thread attributes the global bytes its cp.async copies read to these n ranges (at most
// kCountedRegions), in order; nullptr or the error. last_launch_counters: the counters of the
// last emulated launch on this host thread, kLaunchCounterNames order, into out.
inline constexpr int kCountedRegions = 8;
inline constexpr const char* kLaunchCounterNames[] = {
    "blocks",           "threads_per_block",   "dynamic_shared_bytes",
    "mma_macs",         "cp_async_copies",     "cp_async_bytes",
    "region0_bytes",    "region1_bytes",       "region2_bytes",
    "region3_bytes",    "region4_bytes",       "region5_bytes",
    "region6_bytes",    "region7_bytes",       "ldmatrix_instructions",
    "ldmatrix_phases",  "ldmatrix_wavefronts", "ldmatrix_max_degree",
    "lds_instructions", "lds_phases",          "lds_wavefronts",
    "lds_max_degree",   "sts_instructions",    "sts_phases",
    "sts_wavefronts",   "sts_max_degree"};
inline constexpr int kLaunchCounters =
    static_cast<int>(sizeof(kLaunchCounterNames) / sizeof(kLaunchCounterNames[0]));
const char* count_regions(const void* const* bases, const int64_t* bytes, int n);
void last_launch_counters(int64_t* out);
}  // namespace emulated

}  // namespace fused_inception
