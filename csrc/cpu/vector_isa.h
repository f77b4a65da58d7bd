// Which hand-written vector loops the CPU operators take: those of torch's CPU capability
// (ATEN_CPU_CAPABILITY lowers it, "default" means none) that the CPU also supports, decided once
// per process. The pools' forward (max_pool_common.h) and backward (max_pool3x3_backward.cpp)
// both ask here, so they always run the same instruction set.
#pragma once

#include <ATen/Version.h>

#include <string>

// Set where the hand-written x86 vector loops compile (GCC or Clang on x86-64): the operators'
// files guard their intrinsics with it.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FI_X86_VECTOR 1
#endif

namespace fused_inception {
namespace {

enum class VectorIsa { kNone, kAvx2, kAvx512 };

inline VectorIsa vector_isa() {
#ifdef FI_X86_VECTOR
  static const VectorIsa isa = [] {
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512" && __builtin_cpu_supports("avx512f")) {
      return VectorIsa::kAvx512;
    }
    if ((capability == "AVX512" || capability == "AVX2") && __builtin_cpu_supports("avx2")) {
      return VectorIsa::kAvx2;
    }
    return VectorIsa::kNone;
  }();
  return isa;
#else
  return VectorIsa::kNone;
#endif
}

}  // namespace
}  // namespace fused_inception
