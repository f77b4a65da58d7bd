// One header that every kernel file (csrc/cuda/*.cu) includes first. It makes the same source
// compile two ways:
//   - with nvcc (__CUDACC__): the real CUDA runtime, cuda_fp16/cuda_bf16 and WMMA (<mma.h>);
//     the kernels land in namespace fused_inception::cuda.
//   - with a plain C++ compiler: the CPU SIMT shim (csrc/simt/simt.h), which runs a block's
//     threads as real threads; the kernels land in namespace fused_inception::emulated.
// Both builds can be linked into one library; the binding layer (csrc/cuda_ops.cpp) calls the
// first for CUDA tensors and the second for CPU tensors.
//
// Rules for kernel code, so that both builds mean the same thing:
//   - launch only through FI_LAUNCH, with the kernel as a plain name or a local variable
//     (`auto kernel = my_kernel<T, 64>;`: a template-id's commas would split the macro);
//   - dynamic shared memory only through FI_DYNAMIC_SHARED; a kernel that needs more than
//     48 KiB of it calls FI_SET_MAX_DYNAMIC_SHARED first, as CUDA requires;
//   - every thread of a block reaches every __syncthreads() (no early return before one);
//   - WMMA calls are made by all 32 lanes of a warp with the same arguments.
#pragma once

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#define FI_KERNEL_NS cuda

#define FI_DYNAMIC_SHARED(type, name) extern __shared__ __align__(32) type name[]

#define FI_SET_MAX_DYNAMIC_SHARED(kernel, bytes) \
  cudaFuncSetAttribute((kernel), cudaFuncAttributeMaxDynamicSharedMemorySize, (bytes))

#define FI_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  (kernel)<<<(grid), (block), (smem_bytes), static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)

// nullptr when the last launch (and everything before it on this thread) succeeded.
inline const char* fi_last_launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

#else  // plain C++: the CPU SIMT shim

#include "simt/simt.h"

#define FI_KERNEL_NS emulated

#define FI_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::simt::dynamic_shared_memory())

#define FI_SET_MAX_DYNAMIC_SHARED(kernel, bytes) ::simt::set_max_dynamic_shared((kernel), (bytes))

// The shim ignores the stream; evaluating it keeps -Wunused-parameter quiet in launchers.
#define FI_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  (static_cast<void>(stream), ::simt::launch((grid), (block), (smem_bytes), (kernel), __VA_ARGS__))

inline const char* fi_last_launch_error() { return ::simt::last_launch_error(); }

#endif
