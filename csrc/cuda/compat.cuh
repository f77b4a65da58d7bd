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
//   - launch through fi_launch (the launch's own error, never an earlier one), or FI_LAUNCH
//     with the kernel as a plain name or a local variable (`auto kernel = my_kernel<T, 64>;`:
//     a template-id's commas would split the macro) followed by fi_last_launch_error;
//   - dynamic shared memory only through FI_DYNAMIC_SHARED; a kernel that needs more than
//     48 KiB of it calls fi_opt_in_dynamic_shared first (once per kernel and device; checks
//     the device's limit), as CUDA requires;
//   - every thread of a block reaches every __syncthreads() (no early return before one);
//   - WMMA calls are made by all 32 lanes of a warp with the same arguments.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#define FI_KERNEL_NS cuda
// Everything below is in a namespace of its own per build: both builds are linked into one
// library, and inline functions or template instantiations of the same name with different
// bodies would be merged by the linker (one build would run the other's code).
#define FI_COMPAT_NS fi_compat_cuda

#define FI_DYNAMIC_SHARED(type, name) extern __shared__ __align__(32) type name[]

#define FI_SET_MAX_DYNAMIC_SHARED(kernel, bytes) \
  cudaFuncSetAttribute((kernel), cudaFuncAttributeMaxDynamicSharedMemorySize, (bytes))

#define FI_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  (kernel)<<<(grid), (block), (smem_bytes), static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)

namespace FI_COMPAT_NS {

// nullptr when the last launch (and everything before it on this thread) succeeded.
inline const char* fi_last_launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

namespace fi_detail {

inline const char* device_and_limit(int* device, long long* limit) {
  int optin = 0;
  if (cudaGetDevice(device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, *device) !=
          cudaSuccess) {
    static_cast<void>(cudaGetLastError());  // those calls' own errors, not a kernel's
    return "cannot query the current CUDA device's shared-memory limit";
  }
  *limit = optin;
  return nullptr;
}

template <typename Kernel>
const char* set_max_dynamic_shared(Kernel kernel, long long bytes) {
  const cudaError_t err =
      cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err == cudaSuccess) return nullptr;
  static_cast<void>(cudaGetLastError());
  return cudaGetErrorString(err);
}

// Starts kernel<<<grid, block, smem, stream>>>(args...) with cudaLaunchKernel, whose result is
// this launch's error: cudaGetLastError after <<<>>> would also return (and clear) an error an
// earlier, unrelated launch left behind. A failed launch's error is cleared, so that it is not
// blamed on the next launch of someone else either.
template <typename... KArgs, typename... Args>
const char* launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
                   cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "fi_launch: wrong number of arguments");
  std::tuple<KArgs...> params(std::forward<Args>(args)...);
  const cudaError_t err = std::apply(
      [&](auto&... p) {
        void* pointers[] = {static_cast<void*>(&p)...};
        return cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, pointers, smem,
                                stream);
      },
      params);
  if (err == cudaSuccess) return nullptr;
  static_cast<void>(cudaGetLastError());
  return cudaGetErrorString(err);
}

}  // namespace fi_detail
}  // namespace FI_COMPAT_NS

#else  // plain C++: the CPU SIMT shim

#include "simt/simt.h"

#define FI_KERNEL_NS emulated
#define FI_COMPAT_NS fi_compat_emulated

#define FI_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::simt::dynamic_shared_memory())

#define FI_SET_MAX_DYNAMIC_SHARED(kernel, bytes) ::simt::set_max_dynamic_shared((kernel), (bytes))

// The shim ignores the stream; evaluating it keeps -Wunused-parameter quiet in launchers.
#define FI_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  (static_cast<void>(stream), ::simt::launch((grid), (block), (smem_bytes), (kernel), __VA_ARGS__))

namespace FI_COMPAT_NS {

inline const char* fi_last_launch_error() { return ::simt::last_launch_error(); }

namespace fi_detail {

// The shim is one device (0) whose opt-in limit is sm_80's.
inline const char* device_and_limit(int* device, long long* limit) {
  *device = 0;
  *limit = static_cast<long long>(::simt::kMaxDynamicShared);
  return nullptr;
}

template <typename Kernel>
const char* set_max_dynamic_shared(Kernel kernel, long long bytes) {
  const char* error = ::simt::set_max_dynamic_shared(kernel, bytes);
  if (error != nullptr) static_cast<void>(::simt::last_launch_error());
  return error;
}

// simt::launch returns its own error; a failed launch's is cleared as on CUDA (see there).
template <typename... KArgs, typename... Args>
const char* launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
                   void* /*stream*/, Args&&... args) {
  const char* error = ::simt::launch(grid, block, smem, kernel, std::forward<Args>(args)...);
  if (error != nullptr) static_cast<void>(::simt::last_launch_error());
  return error;
}

}  // namespace fi_detail
}  // namespace FI_COMPAT_NS

#endif

namespace FI_COMPAT_NS {

// kernel<<<grid, block, smem_bytes, stream>>>(args...): nullptr, or the error of this launch
// (a bad configuration, too much shared memory, no kernel image for the device), never one an
// earlier launch left behind.
template <typename Kernel, typename Stream, typename... Args>
const char* fi_launch(Kernel kernel, dim3 grid, dim3 block, std::size_t smem_bytes, Stream stream,
                      Args&&... args) {
#if defined(__CUDACC__)
  return fi_detail::launch(kernel, grid, block, smem_bytes, static_cast<cudaStream_t>(stream),
                           std::forward<Args>(args)...);
#else
  return fi_detail::launch(kernel, grid, block, smem_bytes, static_cast<void*>(stream),
                           std::forward<Args>(args)...);
#endif
}

// Lets `kernel` use `bytes` of dynamic shared memory on the current device, as CUDA requires
// above 48 KiB: the attribute is set once per kernel and device (not on every launch) and
// its result checked; a device whose opt-in limit is lower gets a message saying so.
template <typename Kernel>
const char* fi_opt_in_dynamic_shared(Kernel kernel, long long bytes) {
  int device = 0;
  long long limit = 0;
  if (const char* error = fi_detail::device_and_limit(&device, &limit)) return error;
  if (bytes > limit) {
    static std::mutex messages_mutex;
    static std::map<std::pair<long long, long long>, std::string> messages;
    std::lock_guard<std::mutex> lock(messages_mutex);
    std::string& message = messages[{bytes, limit}];  // kept: callers hold its c_str()
    if (message.empty())
      message = "the kernel needs " + std::to_string(bytes) +
                " bytes of shared memory per block; this device allows " + std::to_string(limit);
    return message.c_str();
  }
  static std::mutex done_mutex;
  static std::map<std::pair<const void*, int>, long long> done;  // (kernel, device) -> bytes
  const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), device};
  std::lock_guard<std::mutex> lock(done_mutex);
  const auto it = done.find(key);
  if (it != done.end() && it->second >= bytes) return nullptr;
  if (const char* error = fi_detail::set_max_dynamic_shared(kernel, bytes)) return error;
  done[key] = bytes;
  return nullptr;
}

}  // namespace FI_COMPAT_NS

using FI_COMPAT_NS::fi_last_launch_error;
using FI_COMPAT_NS::fi_launch;
using FI_COMPAT_NS::fi_opt_in_dynamic_shared;
