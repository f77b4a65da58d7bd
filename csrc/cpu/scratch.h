// A per-thread scratch buffer reused from operator call to operator call (csrc/cpu/
// block_onednn.cpp, csrc/cpu/winograd_training.cpp): no fresh multi-MB allocations, and so
// no page faults, per call.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace fused_inception {

// One operator call's temporaries (the eval block operator's x's NHWC copy, pooled x, b4, y,
// direct branches' r and convolution outputs, Winograd's V and M and an NCHW output's Winograd
// staging; the Winograd weight gradient's V, Gy and M), carved in turn from one per-thread
// buffer that is reused from call to call. Fresh multi-MB tensors per call
// were served by glibc with new pages whenever its heap had been trimmed: up to 4,000-5,000 page
// faults per batch-8 call of 3a and 3b on NCHW input, 18 and 26 ms against 6.5 and 13 ms without
// them. The buffer grows to the largest call's need (known after that call) up to kMaxScratch bytes
// per thread; what does not fit is allocated as usual. Tensors from it live only inside the call.
constexpr int64_t kMaxScratch = int64_t{64} << 20;

class Scratch {
 public:
  explicit Scratch(const at::TensorOptions& options) : options_(options) {
    State& s = state();
    if (s.want > s.capacity) {  // grow to the largest need seen, before anything is carved
      s.data.reset();
      s.capacity = 0;
      s.data.reset(static_cast<float*>(std::aligned_alloc(64, s.want * sizeof(float))));
      if (s.data != nullptr) s.capacity = s.want;
    }
    TORCH_CHECK(!s.busy, "fused_inception: CPU scratch in use on this thread (re-entered)");
    s.busy = true;
  }
  ~Scratch() {
    State& s = state();
    s.busy = false;
    if (need_ * int64_t{sizeof(float)} <= kMaxScratch) s.want = std::max(s.want, need_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // An uninitialised dense float32 tensor of `sizes` (at most 4-D).
  at::Tensor dense(at::IntArrayRef sizes) {
    int64_t count = 1;
    for (const int64_t size : sizes) count *= size;
    const int64_t numel = (count + 15) / 16 * 16;  // 64-byte steps
    need_ += numel;
    State& s = state();
    if (used_ + numel > s.capacity) {
      return at::empty(sizes, options_);
    }
    float* data = s.data.get() + used_;
    used_ += numel;
    return at::from_blob(data, sizes, options_);
  }

  // An uninitialised [n, c, h, w] channels_last float32 tensor.
  at::Tensor nhwc(int64_t n, int64_t c, int64_t h, int64_t w) {
    const int64_t numel = (n * c * h * w + 15) / 16 * 16;  // 64-byte steps
    need_ += numel;
    State& s = state();
    if (used_ + numel > s.capacity) {
      return at::empty({n, c, h, w}, options_.memory_format(at::MemoryFormat::ChannelsLast));
    }
    float* data = s.data.get() + used_;
    used_ += numel;
    return at::from_blob(data, {n, c, h, w}, {h * w * c, 1, w * c, c}, options_);
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  struct State {
    std::unique_ptr<float, Free> data;
    int64_t capacity = 0, want = 0;  // floats
    bool busy = false;
  };
  static State& state() {
    static thread_local State s;
    return s;
  }
  at::TensorOptions options_;
  int64_t used_ = 0, need_ = 0;
};

}  // namespace fused_inception
