// nvcuda::wmma emulated on the CPU SIMT shim (included by simt/simt.h).
//
// Shapes m16n16k16, m32n8k16, m8n32k16; __half or __nv_bfloat16 A/B fragments (row_major or
// col_major); float accumulators. CUDA leaves the fragment element mapping unspecified; here:
//   - a matrix_a / matrix_b fragment holds the whole tile in every lane, in logical row-major
//     order (x[r * cols + c] is element (r, c) of the M x K or K x N operand);
//   - an accumulator fragment is spread over the warp's 32 lanes: lane l owns the row-major
//     flat elements l, l + 32, ... of the M x N tile (x[j] is flat element l + 32 * j), so stores
//     by different lanes touch disjoint memory, as on hardware.
// mma_sync computes a lane's own accumulator elements from the full A and B tiles it holds, so
// no call needs the other lanes; the 16-bit inputs are converted to float exactly and the
// products summed in float in k order, starting from C.
//
// Checked, as hardware requires (a violation is a fault: launch() returns its message):
// pointers 256-bit (32-byte) aligned; ldm a multiple of 16 bytes (8 elements for 16-bit types,
// 4 for float); the calling warp complete (32 lanes).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>

#include "simt/simt.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

template <typename Use, int M, int N, int K>
struct tile_shape;
template <int M, int N, int K>
struct tile_shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct tile_shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct tile_shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <typename T>
inline constexpr bool is_16bit_v = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float to_float(float v) { return v; }

inline std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// Reports misuse that hardware does not tolerate; returns after reporting (the access itself is
// still performed, the memory being valid).
template <typename T>
void check_access(const char* call, const void* ptr, unsigned ldm) {
  if (reinterpret_cast<std::uintptr_t>(ptr) % 32 != 0) {
    ::simt::report_fault(std::string("wmma::") + call + ": pointer " + hex(ptr) +
                         " is not 256-bit (32-byte) aligned");
  }
  constexpr unsigned multiple = 16 / sizeof(T);
  if (ldm % multiple != 0) {
    ::simt::report_fault(std::string("wmma::") + call + ": ldm " + std::to_string(ldm) +
                         " is not a multiple of " + std::to_string(multiple) +
                         " elements (16 bytes)");
  }
}

inline void check_warp(const char* call) {
  if (::simt::warp_lanes() != 32) {
    ::simt::report_fault(std::string("wmma::") + call + " called by a partial warp of " +
                         std::to_string(::simt::warp_lanes()) +
                         " lanes (WMMA needs all 32 lanes of a warp)");
  }
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
  static_assert(K == 16 && ((M == 16 && N == 16) || (M == 32 && N == 8) || (M == 8 && N == 32)),
                "simt wmma emulates the shapes m16n16k16, m32n8k16 and m8n32k16 only");
  static constexpr bool is_accumulator = std::is_same_v<Use, accumulator>;
  static_assert(!is_accumulator || (std::is_same_v<T, float> && std::is_void_v<Layout>),
                "simt wmma: accumulator fragments are float, without a layout");
  static_assert(is_accumulator || (detail::is_16bit_v<T> && (std::is_same_v<Layout, row_major> ||
                                                             std::is_same_v<Layout, col_major>)),
                "simt wmma: matrix_a/matrix_b fragments are __half or __nv_bfloat16, with "
                "row_major or col_major");

 public:
  using element_type = T;
  using storage_element_type = T;
  static constexpr int rows = detail::tile_shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::tile_shape<Use, M, N, K>::cols;
  static constexpr int num_elements = is_accumulator ? M * N / 32 : rows * cols;
  T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& frag, const std::type_identity_t<T>& value) {
  for (T& v : frag.x) v = value;
}

// A or B operand: the whole tile, read by every lane.
template <typename Use, int M, int N, int K, typename T, typename Layout>
  requires(!std::is_same_v<Use, accumulator>)
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& frag, const std::type_identity_t<T>* ptr,
                      unsigned ldm) {
  detail::check_warp("load_matrix_sync");
  detail::check_access<T>("load_matrix_sync", ptr, ldm);
  using Frag = fragment<Use, M, N, K, T, Layout>;
  constexpr bool row = std::is_same_v<Layout, row_major>;
  for (int r = 0; r < Frag::rows; ++r) {
    for (int c = 0; c < Frag::cols; ++c) {
      frag.x[r * Frag::cols + c] = row ? ptr[r * ldm + c] : ptr[c * ldm + r];
    }
  }
}

namespace detail {

// Calls element(x, m) for each element x of the calling lane's accumulator fragment, with m the
// element it stands for in the M x N tile at ptr (row- or column-major, pitch ldm), after the
// checks hardware needs (load_matrix_sync and store_matrix_sync differ only in the direction).
template <int N, typename Frag, typename F, typename Element>
void for_each_accumulator_element(const char* call, Frag& frag, F* ptr, unsigned ldm,
                                  layout_t layout, Element element) {
  check_warp(call);
  check_access<float>(call, ptr, ldm);
  const unsigned lane = ::simt::lane_id();
  for (int j = 0; j < Frag::num_elements; ++j) {
    const unsigned flat = lane + 32 * j, r = flat / N, c = flat % N;
    element(frag.x[j], layout == mem_row_major ? ptr[r * ldm + c] : ptr[c * ldm + r]);
  }
}

}  // namespace detail

// Accumulator: the lane's own elements.
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& frag, const float* ptr, unsigned ldm,
                      layout_t layout) {
  detail::for_each_accumulator_element<N>("load_matrix_sync", frag, ptr, ldm, layout,
                                          [](float& x, const float& m) { x = m; });
}

template <int M, int N, int K>
void store_matrix_sync(float* ptr, const fragment<accumulator, M, N, K, float>& frag, unsigned ldm,
                       layout_t layout) {
  detail::for_each_accumulator_element<N>("store_matrix_sync", frag, ptr, ldm, layout,
                                          [](const float& x, float& m) { m = x; });
}

// d = a * b + c (d may be c).
template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d,
              const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  detail::check_warp("mma_sync");
  const unsigned lane = ::simt::lane_id();
  for (int j = 0; j < fragment<accumulator, M, N, K, float>::num_elements; ++j) {
    const unsigned flat = lane + 32 * j, r = flat / N, col = flat % N;
    float sum = c.x[j];
    for (int k = 0; k < K; ++k) {
      sum += detail::to_float(a.x[r * K + k]) * detail::to_float(b.x[k * N + col]);
    }
    d.x[j] = sum;
  }
}

}  // namespace nvcuda::wmma
