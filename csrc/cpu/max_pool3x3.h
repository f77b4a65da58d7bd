// The 3x3 / stride 1 / padding 1 max-pool of csrc/cpu/max_pool3x3.cpp into a caller's tensor,
// for the eval block operator (csrc/cpu/block_onednn.cpp), which keeps its temporaries in a
// reused buffer.
#pragma once

#include <ATen/core/Tensor.h>

namespace fused_inception {

// out = max_pool2d(x, 3, stride 1, padding 1) (-inf padding), bit for bit as the operator
// fused_inception::max_pool3x3_nhwc; x as that operator takes it, out channels_last of x's
// shape and dtype.
void max_pool3x3_nhwc_into(const at::Tensor& x, const at::Tensor& out);

}  // namespace fused_inception
