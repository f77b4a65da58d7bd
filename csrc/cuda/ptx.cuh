// sm_80 tensor-core and asynchronous-copy instructions for the kernels (csrc/cuda/*.cu), in
// namespace fi::ptx. Under nvcc each wrapper is one inline PTX instruction; in the plain C++
// build it calls the CPU SIMT shim's emulation (csrc/simt/ptx.h), which implements the PTX ISA's
// semantics and fragment layouts, checks the addresses, and counts the work and the shared-memory
// bank conflicts (simt::last_launch_stats).
//
// Warp-collective (all 32 lanes of a warp, converged, with their own operands): the mma, the
// ldmatrix and the counted shared accesses lds32/sts32/lds128/sts128 (per-thread instructions on
// hardware; the shim needs the whole warp to count bank conflicts). cp.async is per thread.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#else
#include "simt/simt.h"
#endif

namespace fi::ptx {

#if defined(__CUDACC__)
__device__ __forceinline__ std::uint32_t shared_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}
#endif

// d = a * b + c: mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32 with T __half or __nv_bfloat16.
// Fragments per lane (group = lane / 4, t = lane % 4; two 16-bit elements per register, the
// lower-indexed one in the low half):
//   a[r] (16x16 A, row): A[group + 8 * (r % 2)][2 * t + 8 * (r / 2) + {0, 1}]
//   b[r] (16x8 B, col):  B[2 * t + 8 * r + {0, 1}][group]
//   c[i], d[i] (16x8):   C[group + 8 * (i / 2)][2 * t + i % 2]
template <typename T>
__device__ __forceinline__ void mma_m16n8k16_f32(float (&d)[4], const std::uint32_t (&a)[4],
                                                 const std::uint32_t (&b)[2], const float (&c)[4]) {
#if defined(__CUDACC__)
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "mma.m16n8k16 takes __half or __nv_bfloat16 inputs");
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
  }
#else
  ::simt::ptx::mma_m16n8k16<T>(d, a, b, c);
#endif
}

// ldmatrix.sync.aligned.m8n8.x{N}{.trans}.shared.b16: N 8x8 matrices of 16-bit elements; each
// lane passes one row address (16 bytes, 16-byte aligned, shared memory): lanes 8i..8i+7 the
// rows of matrix i (for N = 1 or 2 the other lanes' addresses are not used). Lane l receives in
// r[i] row l / 4, elements 2 * (l % 4) and 2 * (l % 4) + 1 of matrix i (of its transpose with
// Trans).
template <int N, bool Trans>
__device__ __forceinline__ void ldmatrix(std::uint32_t (&r)[N], const void* row_address) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(__CUDACC__)
  const std::uint32_t address = shared_address(row_address);
  if constexpr (N == 1 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(address)
                 : "memory");
  } else if constexpr (N == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(address)
                 : "memory");
  } else if constexpr (N == 2 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(address)
                 : "memory");
  } else if constexpr (N == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(address)
                 : "memory");
  } else if constexpr (!Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
  }
#else
  ::simt::ptx::ldmatrix<N, Trans>(r, row_address);
#endif
}

__device__ __forceinline__ void ldmatrix_x1(std::uint32_t (&r)[1], const void* row) {
  ldmatrix<1, false>(r, row);
}
__device__ __forceinline__ void ldmatrix_x2(std::uint32_t (&r)[2], const void* row) {
  ldmatrix<2, false>(r, row);
}
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  ldmatrix<4, false>(r, row);
}
__device__ __forceinline__ void ldmatrix_x1_trans(std::uint32_t (&r)[1], const void* row) {
  ldmatrix<1, true>(r, row);
}
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], const void* row) {
  ldmatrix<2, true>(r, row);
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  ldmatrix<4, true>(r, row);
}

// cp.async.cg.shared.global [smem_dst], [gmem_src], 16, src_bytes: copies src_bytes (0..16)
// bytes and zero-fills the rest of the 16 (src_bytes 0 reads nothing). Both addresses 16-byte
// aligned. The data is visible only after a cp_async_wait that completes its group.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
#if defined(__CUDACC__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(smem_dst)),
               "l"(__cvta_generic_to_global(gmem_src)), "r"(src_bytes)
               : "memory");
#else
  ::simt::ptx::cp_async_16(smem_dst, gmem_src, src_bytes);
#endif
}

// cp.async.commit_group: the copies issued since the last commit form one group.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDACC__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  ::simt::ptx::cp_async_commit();
#endif
}

// cp.async.wait_group Pending: waits until at most the Pending most recent groups are in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  static_assert(Pending >= 0, "cp.async.wait_group takes a non-negative count");
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#else
  ::simt::ptx::cp_async_wait(Pending);
#endif
}

// cp.async.wait_all: commits the open group and waits for every group.
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#else
  ::simt::ptx::cp_async_wait_all();
#endif
}

// Shared-memory loads and stores of 4 and 16 bytes (naturally aligned), made by the whole warp.
__device__ __forceinline__ std::uint32_t lds32(const void* address) {
#if defined(__CUDACC__)
  std::uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(shared_address(address)) : "memory");
  return v;
#else
  return ::simt::ptx::lds32(address);
#endif
}

__device__ __forceinline__ void sts32(void* address, std::uint32_t value) {
#if defined(__CUDACC__)
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(shared_address(address)), "r"(value) : "memory");
#else
  ::simt::ptx::sts32(address, value);
#endif
}

__device__ __forceinline__ uint4 lds128(const void* address) {
#if defined(__CUDACC__)
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(shared_address(address))
               : "memory");
  return v;
#else
  return ::simt::ptx::lds128(address);
#endif
}

__device__ __forceinline__ void sts128(void* address, uint4 value) {
#if defined(__CUDACC__)
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(shared_address(address)),
               "r"(value.x), "r"(value.y), "r"(value.z), "r"(value.w)
               : "memory");
#else
  ::simt::ptx::sts128(address, value);
#endif
}

}  // namespace fi::ptx
