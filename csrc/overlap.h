// Refusing outputs that overlap an input, for every operator that writes into a caller's tensor
// (csrc/cuda_ops.cpp, csrc/cpu/winograd_f2x3.cpp).
//
// Why: the kernels read their inputs while they write `out` (a tile's stores land before other
// tiles' loads), so an `out` that is, or overlaps, an input silently gives wrong results, e.g.
// conv1x1_slice_(x, w, b, out=x, 0, pool=True) was off by up to 9.1.
//
// Why not at::get_overlap_status: it answers TOO_HARD for any non-dense tensor, and a channel
// slice of the block output (a row-strided view, what every operator here writes) is not dense;
// it also compares addresses only within one storage (two storages over the same memory, e.g.
// from numpy views, pass it). So the check is conservative instead: two non-empty tensors may
// overlap if they share a storage, or if the byte ranges they can address intersect, each
// [data + min offset, data + max offset + itemsize). Disjoint slices of one storage are refused
// too; no caller of these operators needs them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <cstdint>

namespace fused_inception {

// The bytes t can address, as [lo, hi) relative to t.data_ptr(). False if the span does not fit
// in int64 (then nothing can be concluded).
inline bool byte_span(const at::Tensor& t, int64_t& lo, int64_t& hi) {
  int64_t low = 0, high = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    int64_t extent = 0;  // stride * (size - 1): the offset of the last index along d
    if (c10::mul_overflows(t.stride(d), t.size(d) - 1, &extent)) return false;
    int64_t& side = extent < 0 ? low : high;
    if (c10::add_overflows(side, extent, &side)) return false;
  }
  const int64_t item = static_cast<int64_t>(t.element_size());
  return !c10::mul_overflows(low, item, &lo) && !c10::add_overflows(high, int64_t{1}, &high) &&
         !c10::mul_overflows(high, item, &hi);
}

// True unless a and b provably address disjoint memory.
inline bool may_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;  // touches no memory
  if (a.has_storage() && b.has_storage() && a.storage().is_alias_of(b.storage())) return true;
  int64_t a_lo = 0, a_hi = 0, b_lo = 0, b_hi = 0;
  if (!byte_span(a, a_lo, a_hi) || !byte_span(b, b_lo, b_hi)) return true;
  // Addresses as unsigned integers: comparing pointers into different objects is undefined.
  const auto a_base = reinterpret_cast<uintptr_t>(a.data_ptr());
  const auto b_base = reinterpret_cast<uintptr_t>(b.data_ptr());
  const uintptr_t a_first = a_base + static_cast<uintptr_t>(a_lo);
  const uintptr_t b_first = b_base + static_cast<uintptr_t>(b_lo);
  const uintptr_t a_end = a_base + static_cast<uintptr_t>(a_hi);
  const uintptr_t b_end = b_base + static_cast<uintptr_t>(b_hi);
  return a_first < b_end && b_first < a_end;
}

// Refuses an output (`out`, or the one named out_name) that may overlap the input `name` (call
// after the device checks: tensors on different devices are compared by address like any
// others).
inline void check_no_overlap(const char* op, const at::Tensor& out, const char* name,
                             const at::Tensor& input, const char* out_name = "out") {
  TORCH_CHECK_VALUE(!may_overlap(out, input), op, ": ", out_name, " overlaps ", name,
                    " in memory (expected ", out_name, " not to share storage with ", name,
                    ", got ", out_name, " at ", out.data_ptr(), " with shape ", out.sizes(),
                    " and strides ", out.strides(), ", ", name, " at ", input.data_ptr(),
                    " with shape ", input.sizes(), " and strides ", input.strides(),
                    "); the kernel would read values it has already overwritten");
}

}  // namespace fused_inception
