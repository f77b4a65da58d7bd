// Binding layer of the CUDA C++ kernels: fused_inception::conv1x1_slice_ and
// fused_inception::chain_1x1_kxk_ turn tensors into the plain structs of csrc/cuda/kernels.h,
// after checking everything a kernel relies on (a kernel does no checks of its own, so a direct
// call of an operator with bad arguments must fail here, before any memory is touched). That
// includes an `out` overlapping any input (csrc/overlap.h): the kernels read x and the weights
// while other blocks already store into out.
//
// Error types, the same in every operator of this package (C++ here and in csrc/cpu/, Python in
// fused_inception/checks.py and the Triton launchers), one per kind of mistake:
//   - a wrong dtype                                   -> TypeError    (TORCH_CHECK_TYPE)
//   - a wrong shape, layout, value or an overlap      -> ValueError   (TORCH_CHECK_VALUE)
//   - tensors on different devices, or a device this
//     build or backend cannot run on                  -> RuntimeError (TORCH_CHECK)
// (A launch that fails on the device is a RuntimeError too.)
//
// Dispatch:
//   CUDA tensors -> fused_inception::cuda::*     (nvcc build; FUSED_INCEPTION_WITH_CUDA)
//   CPU tensors  -> fused_inception::emulated::* (the same .cu sources compiled as plain C++
//                                                 against the SIMT shim, csrc/simt/; slow, for
//                                                 testing; FUSED_INCEPTION_WITH_EMULATION)
// Only c10/cuda headers are included for the CUDA build (not ATen/cuda/CUDAContext.h, which
// pulls in cusparse.h and doubles the compile time).

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/kernels.h"
#include "overlap.h"

#if defined(FUSED_INCEPTION_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fused_inception {
namespace {

// x and out: 4-D [N, C, H, W] in channels_last memory with no gaps (what the kernels index).
void check_nhwc(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must be 4-D [N, C, H, W], got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", name,
                    " must be channels_last-contiguous (NHWC memory), got strides ", t.strides(),
                    " for shape ", t.sizes(),
                    "; use .contiguous(memory_format=torch.channels_last)");
}

// t on a device this build has kernels for, of a dtype they are instantiated for.
ScalarKind check_kind(const char* op, const at::Tensor& t, const char* name) {
  const bool cuda = t.device().is_cuda();
#if !defined(FUSED_INCEPTION_WITH_CUDA)
  TORCH_CHECK(!cuda, op,
              ": this build of fused_inception has no CUDA kernels (built without "
              "nvcc or with FUSED_INCEPTION_SKIP_CUDA=1)");
#endif
#if !defined(FUSED_INCEPTION_WITH_EMULATION)
  TORCH_CHECK(cuda, op,
              ": this build has no emulated (CPU) version of the CUDA kernels (built "
              "without CUDA headers)");
#endif
  TORCH_CHECK(cuda || t.device().is_cpu(), op, ": ", name, " must be a CUDA or CPU tensor, got ",
              t.device());
  switch (t.scalar_type()) {
    case at::kFloat:
      return ScalarKind::kFloat32;
    case at::kHalf:
      return ScalarKind::kFloat16;
    case at::kBFloat16:
      return ScalarKind::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, op, ": ", name, " must be float32, float16 or bfloat16, got ",
                       t.scalar_type());
  }
  return ScalarKind::kFloat32;
}

// x: 4-D [N, C, H, W] in channels_last memory with no gaps (what the kernels index), on a
// device this build has kernels for, of a dtype they are instantiated for.
ScalarKind check_x(const char* op, const at::Tensor& x) {
  check_nhwc(x, op, "x");
  return check_kind(op, x, "x");
}

// A weight (x's dtype) or a bias (float32) of the given shape, contiguous, on x's device.
struct Operand {
  const char* name;
  const at::Tensor& tensor;
  std::vector<int64_t> shape;
  bool is_bias;
};

void check_operand(const char* op, const at::Tensor& x, const Operand& operand) {
  const at::Tensor& t = operand.tensor;
  const char* name = operand.name;
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ",
              x.device());
  const auto want = operand.is_bias ? at::kFloat : x.scalar_type();
  TORCH_CHECK_TYPE(t.scalar_type() == want, op, ": ", name, " must be ", want, " (",
                   operand.is_bias ? "biases are float32" : "the dtype of x", "), got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(operand.shape), op, ": ", name,
                    " must have shape ", at::IntArrayRef(operand.shape), ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name, " must be contiguous, got strides ",
                    t.strides());
}

// The operands, then out (the whole block output; the branch writes its channels
// [c0, c0 + cout)), then that out overlaps none of x and the operands.
void check_operands_and_out(const char* op, const at::Tensor& x, const at::Tensor& out, int64_t c0,
                            int64_t cout, std::initializer_list<Operand> operands) {
  for (const Operand& operand : operands) check_operand(op, x, operand);
  check_nhwc(out, op, "out");
  TORCH_CHECK(out.device() == x.device(), op, ": out is on ", out.device(), " but x is on ",
              x.device());
  TORCH_CHECK_TYPE(out.scalar_type() == x.scalar_type(), op, ": out must have x's dtype ",
                   x.scalar_type(), ", got ", out.scalar_type());
  TORCH_CHECK_VALUE(
      out.size(0) == x.size(0) && out.size(2) == x.size(2) && out.size(3) == x.size(3), op,
      ": out must be [", x.size(0), ", C, ", x.size(2), ", ", x.size(3), "] like x, got ",
      out.sizes());
  // (c0 <= size - cout rather than c0 + cout <= size: no overflow for c0 near 2^63)
  TORCH_CHECK_VALUE(c0 >= 0 && cout <= out.size(1) && c0 <= out.size(1) - cout, op, ": channels [",
                    c0, ", ", c0, " + ", cout, ") do not fit in out's ", out.size(1), " channels");
  check_no_overlap(op, out, "x", x);
  for (const Operand& operand : operands) check_no_overlap(op, out, operand.name, operand.tensor);
}

// The inputs a launch reads through cp.async, by name: what the shim's counters attribute
// bytes to (emulated_counters_stop).
using Regions = std::initializer_list<std::pair<const char*, const at::Tensor*>>;

#if defined(FUSED_INCEPTION_WITH_EMULATION)
// The emulated launches' counters while counting is on (emulated_counters_start .. _stop):
// per launch, "op|region names" and emulated::kLaunchCounters values.
struct CounterLog {
  std::mutex mutex;
  bool on = false;
  std::vector<std::string> launches;
  std::vector<int64_t> values;
};

CounterLog& counter_log() {
  static CounterLog log;
  return log;
}

bool counting() {
  CounterLog& log = counter_log();
  const std::lock_guard<std::mutex> lock(log.mutex);
  return log.on;
}

// Runs the emulated launcher; while counting, with the regions and its counters logged.
template <class Args>
const char* launch_emulated(const char* op, const Args& args,
                            const char* (*launcher)(const Args&, void*), const Regions& regions) {
  if (!counting()) return launcher(args, nullptr);
  std::vector<const void*> bases;
  std::vector<int64_t> bytes;
  std::string name = std::string(op) + "|";
  for (const auto& [region, tensor] : regions) {
    bases.push_back(tensor->data_ptr());
    bytes.push_back(static_cast<int64_t>(tensor->numel() * tensor->element_size()));
    name += std::string(bases.size() > 1 ? "," : "") + region;
  }
  const char* error =
      emulated::count_regions(bases.data(), bytes.data(), static_cast<int>(bases.size()));
  if (error == nullptr) error = launcher(args, nullptr);
  if (error != nullptr) return error;
  int64_t values[emulated::kLaunchCounters];
  emulated::last_launch_counters(values);
  CounterLog& log = counter_log();
  const std::lock_guard<std::mutex> lock(log.mutex);
  if (log.on) {
    log.launches.push_back(std::move(name));
    log.values.insert(log.values.end(), values, values + emulated::kLaunchCounters);
  }
  return nullptr;
}
#endif

// Calls the CUDA launcher for CUDA tensors and the emulated one for CPU tensors.
template <class Args>
using Launcher = const char* (*)(const Args&, void*);

template <class Args>
void launch(const char* op, const at::Tensor& x, const Args& args,
            std::type_identity_t<Launcher<Args>> cuda_launcher,
            std::type_identity_t<Launcher<Args>> emulated_launcher, const Regions& regions = {}) {
  const char* error = "no kernel for this device in this build";
  if (x.device().is_cuda()) {
#if defined(FUSED_INCEPTION_WITH_CUDA)
    const c10::cuda::CUDAGuard guard(x.device());
    error = cuda_launcher(args, c10::cuda::getCurrentCUDAStream().stream());
#endif
  } else {
#if defined(FUSED_INCEPTION_WITH_EMULATION)
    error = launch_emulated(op, args, emulated_launcher, regions);
#endif
  }
  (void)regions;
  (void)cuda_launcher;
  (void)emulated_launcher;
  TORCH_CHECK(error == nullptr, op, ": kernel launch failed: ", error);
}

#if defined(FUSED_INCEPTION_WITH_CUDA)
#define FI_CUDA_LAUNCHER(name) &cuda::name
#else
#define FI_CUDA_LAUNCHER(name) nullptr
#endif
#if defined(FUSED_INCEPTION_WITH_EMULATION)
#define FI_EMULATED_LAUNCHER(name) &emulated::name
#else
#define FI_EMULATED_LAUNCHER(name) nullptr
#endif

// The fields every kernel's Args has: the dtype, x, the output slice from channel c0 on and
// the geometry; the caller adds its weights.
template <class Args>
Args slice_args(ScalarKind kind, const at::Tensor& x, const at::Tensor& out, int64_t c0,
                int64_t cout) {
  Args args{};
  args.dtype = kind;
  args.x = x.data_ptr();
  args.out = static_cast<char*>(out.data_ptr()) + c0 * out.element_size();
  args.batch = x.size(0);
  args.height = x.size(2);
  args.width = x.size(3);
  args.cin = x.size(1);
  args.cout = cout;
  args.out_pixel_stride = out.size(1);
  return args;
}

// out[:, c0:c0+Cout] = relu(conv1x1(maxpool3x3(x) if pool else x; w) + bias)
//   x:    [N, Cin, H, W] channels_last, float32/float16/bfloat16
//   w:    [Cin, Cout] contiguous, x's dtype
//   bias: [Cout] float32
//   out:  [N, Ctot, H, W] channels_last, x's dtype; written in channels [c0, c0 + Cout) only
void conv1x1_slice_(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                    const at::Tensor& out, int64_t c0, bool pool) {
  constexpr const char* op = "fused_inception::conv1x1_slice_";
  const ScalarKind kind = check_x(op, x);
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w must be 2-D [Cin, Cout], got shape ", w.sizes());
  const int64_t cin = x.size(1), cout = w.size(1);
  check_operands_and_out(op, x, out, c0, cout,
                         {{"w", w, {cin, cout}, false}, {"bias", bias, {cout}, true}});
  if (out.numel() == 0 || cout == 0) return;

  auto args = slice_args<Conv1x1SliceArgs>(kind, x, out, c0, cout);
  args.w = w.data_ptr();
  args.bias = bias.data_ptr<float>();
  args.pool = pool;
  launch(op, x, args, FI_CUDA_LAUNCHER(conv1x1_slice), FI_EMULATED_LAUNCHER(conv1x1_slice));
}

// out[:, c0:c0+Cout] = relu(convKxK(relu(conv1x1(x; w_red) + b_red); w_kxk, pad K//2) + b_kxk)
//   x:     [N, Cin, H, W] channels_last, float32/float16/bfloat16
//   w_red: [Cin, Cr] contiguous, x's dtype;     b_red: [Cr] float32
//   w_kxk: [K, K, Cr, Cout] contiguous, x's dtype, K in {3, 5};  b_kxk: [Cout] float32
//   out:   [N, Ctot, H, W] channels_last, x's dtype; written in channels [c0, c0 + Cout) only
void chain_1x1_kxk_(const at::Tensor& x, const at::Tensor& w_red, const at::Tensor& b_red,
                    const at::Tensor& w_kxk, const at::Tensor& b_kxk, const at::Tensor& out,
                    int64_t c0) {
  constexpr const char* op = "fused_inception::chain_1x1_kxk_";
  const ScalarKind kind = check_x(op, x);
  TORCH_CHECK_VALUE(w_red.dim() == 2, op, ": w_red must be 2-D [Cin, Cr], got shape ",
                    w_red.sizes());
  TORCH_CHECK_VALUE(w_kxk.dim() == 4, op, ": w_kxk must be 4-D [K, K, Cr, Cout], got shape ",
                    w_kxk.sizes());
  const int64_t cin = x.size(1), cr = w_red.size(1), k = w_kxk.size(0), cout = w_kxk.size(3);
  TORCH_CHECK_VALUE(k == 3 || k == 5, op, ": kernel size K must be 3 or 5, got ", k);
  check_operands_and_out(op, x, out, c0, cout,
                         {{"w_red", w_red, {cin, cr}, false},
                          {"b_red", b_red, {cr}, true},
                          {"w_kxk", w_kxk, {k, k, cr, cout}, false},
                          {"b_kxk", b_kxk, {cout}, true}});
  if (out.numel() == 0 || cout == 0) return;

  auto args = slice_args<ChainArgs>(kind, x, out, c0, cout);
  args.w_red = w_red.data_ptr();
  args.b_red = b_red.data_ptr<float>();
  args.w_kxk = w_kxk.data_ptr();
  args.b_kxk = b_kxk.data_ptr<float>();
  args.cr = cr;
  args.k = static_cast<int>(k);
  launch(op, x, args, FI_CUDA_LAUNCHER(chain_1x1_kxk), FI_EMULATED_LAUNCHER(chain_1x1_kxk));
}

// Version 2 (16-bit only): x, out and the scratch r as the Triton launchers take them.
ScalarKind check_sixteen_bit(const char* op, const at::Tensor& t, const char* name) {
  const ScalarKind kind = check_kind(op, t, name);
  TORCH_CHECK_TYPE(kind != ScalarKind::kFloat32, op,
                   ": runs float16 and bfloat16 (float32 runs conv1x1_slice_ and "
                   "chain_1x1_kxk_), got ",
                   t.scalar_type());
  return kind;
}

// out: the block output [N, Ctot, H, W] in NHWC memory, on t's device and of t's dtype, with
// N*H*W == m pixels, written in channel slices [offset, offset + width) that must fit.
void check_block_out(const char* op, const at::Tensor& t, const at::Tensor& out, int64_t m,
                     std::initializer_list<std::pair<int64_t, int64_t>> slices) {
  check_nhwc(out, op, "out");
  TORCH_CHECK(out.device() == t.device(), op, ": out is on ", out.device(), " but the input is on ",
              t.device());
  TORCH_CHECK_TYPE(out.scalar_type() == t.scalar_type(), op, ": out must have the input's dtype ",
                   t.scalar_type(), ", got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.size(0) * out.size(2) * out.size(3) == m, op, ": out has ",
                    out.size(0) * out.size(2) * out.size(3), " pixels, the input ", m);
  for (const auto& [offset, width] : slices) {
    TORCH_CHECK_VALUE(offset >= 0 && width <= out.size(1) && offset <= out.size(1) - width, op,
                      ": channels [", offset, ", ", offset, " + ", width, ") do not fit in out's ",
                      out.size(1), " channels");
  }
}

// Two channel slices [a, a + wa) and [b, b + wb) of out must not overlap.
void check_disjoint(const char* op, int64_t a, int64_t wa, int64_t b, int64_t wb) {
  TORCH_CHECK_VALUE(wa == 0 || wb == 0 || a + wa <= b || b + wb <= a, op, ": the slices [", a,
                    ", +", wa, ") and [", b, ", +", wb, ") overlap");
}

// The scratch r [m, cols]: contiguous, t's dtype and device.
void check_scratch(const char* op, const at::Tensor& t, const at::Tensor& r, int64_t m,
                   int64_t cols) {
  TORCH_CHECK(r.device() == t.device(), op, ": r is on ", r.device(), " but x is on ", t.device());
  TORCH_CHECK_TYPE(r.scalar_type() == t.scalar_type(), op, ": r must have x's dtype ",
                   t.scalar_type(), ", got ", r.scalar_type());
  TORCH_CHECK_VALUE(r.dim() == 2 && r.size(0) == m && r.size(1) == cols, op, ": r must be [", m,
                    ", ", cols, "], got ", r.sizes());
  TORCH_CHECK_VALUE(r.is_contiguous(), op, ": r must be contiguous, got strides ", r.strides());
}

// out[:, :c1] = b1, r = r2 | r3, out[:, pool_off:pool_off + C4] = b4 (see the schema)
void block_1x1_(const at::Tensor& x, const at::Tensor& w_x, const at::Tensor& b_x,
                const at::Tensor& w_pool, const at::Tensor& b_pool, const at::Tensor& out,
                const at::Tensor& r, int64_t c1, int64_t pool_off) {
  constexpr const char* op = "fused_inception::block_1x1_";
  check_nhwc(x, op, "x");
  const ScalarKind kind = check_sixteen_bit(op, x, "x");
  TORCH_CHECK_VALUE(w_x.dim() == 2 && w_pool.dim() == 2, op,
                    ": w_x and w_pool must be 2-D [Cin, N], got shapes ", w_x.sizes(), " and ",
                    w_pool.sizes());
  const int64_t c_in = x.size(1), n_x = w_x.size(1), c_pool = w_pool.size(1);
  const int64_t m = x.size(0) * x.size(2) * x.size(3);
  for (const Operand& operand :
       {Operand{"w_x", w_x, {c_in, n_x}, false}, Operand{"b_x", b_x, {n_x}, true},
        Operand{"w_pool", w_pool, {c_in, c_pool}, false},
        Operand{"b_pool", b_pool, {c_pool}, true}}) {
    check_operand(op, x, operand);
  }
  TORCH_CHECK_VALUE(c1 >= 0 && c1 <= n_x, op, ": c1 must be in [0, ", n_x, "], got ", c1);
  check_block_out(op, x, out, m, {{0, c1}, {pool_off, c_pool}});
  TORCH_CHECK_VALUE(
      out.size(0) == x.size(0) && out.size(2) == x.size(2) && out.size(3) == x.size(3), op,
      ": out must be [", x.size(0), ", C, ", x.size(2), ", ", x.size(3), "] like x, got ",
      out.sizes());
  check_disjoint(op, 0, c1, pool_off, c_pool);
  check_scratch(op, x, r, m, n_x - c1);
  for (const auto& [name, input] : {std::pair<const char*, const at::Tensor&>{"x", x},
                                    {"w_x", w_x},
                                    {"b_x", b_x},
                                    {"w_pool", w_pool},
                                    {"b_pool", b_pool}}) {
    check_no_overlap(op, out, name, input);
    check_no_overlap(op, r, name, input, "r");
  }
  check_no_overlap(op, out, "r", r);
  if (m == 0) return;

  const Block1x1Args args{.dtype = kind,
                          .x = x.data_ptr(),
                          .w_x = w_x.data_ptr(),
                          .b_x = b_x.data_ptr<float>(),
                          .w_pool = w_pool.data_ptr(),
                          .b_pool = b_pool.data_ptr<float>(),
                          .out = out.data_ptr(),
                          .r = r.data_ptr(),
                          .batch = x.size(0),
                          .height = x.size(2),
                          .width = x.size(3),
                          .c_in = c_in,
                          .n_x = n_x,
                          .c1 = c1,
                          .c_pool = c_pool,
                          .x_pixel_stride = c_in,
                          .out_pixel_stride = out.size(1),
                          .pool_off = pool_off};
  launch(op, x, args, FI_CUDA_LAUNCHER(block_1x1), FI_EMULATED_LAUNCHER(block_1x1),
         {{"x", &x}, {"w_x", &w_x}, {"w_pool", &w_pool}});
}

// out[:, off2:off2 + C2] = b2, out[:, off3:off3 + C3] = b3 (see the schema)
void block_kxk_(const at::Tensor& r, const at::Tensor& w2, const at::Tensor& b2,
                const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& out, int64_t c2r,
                int64_t off2, int64_t off3) {
  constexpr const char* op = "fused_inception::block_kxk_";
  TORCH_CHECK_VALUE(r.dim() == 2, op, ": r must be 2-D [N*H*W, c2r + c3r], got shape ", r.sizes());
  TORCH_CHECK_VALUE(r.is_contiguous(), op, ": r must be contiguous, got strides ", r.strides());
  const ScalarKind kind = check_sixteen_bit(op, r, "r");
  TORCH_CHECK_VALUE(w2.dim() == 3 && w3.dim() == 3, op,
                    ": w2 and w3 must be 3-D [taps, Cr, C], got shapes ", w2.sizes(), " and ",
                    w3.sizes());
  TORCH_CHECK_VALUE(c2r >= 0 && c2r <= r.size(1), op, ": c2r must be in [0, ", r.size(1), "], got ",
                    c2r);
  const int64_t c3r = r.size(1) - c2r, c2 = w2.size(2), c3 = w3.size(2), taps3 = w3.size(0);
  TORCH_CHECK_VALUE(taps3 == 9 || taps3 == 25, op, ": w3 must have 9 or 25 taps (3x3 or 5x5), got ",
                    taps3);
  for (const Operand& operand :
       {Operand{"w2", w2, {9, c2r, c2}, false}, Operand{"b2", b2, {c2}, true},
        Operand{"w3", w3, {taps3, c3r, c3}, false}, Operand{"b3", b3, {c3}, true}}) {
    check_operand(op, r, operand);
  }
  check_block_out(op, r, out, r.size(0), {{off2, c2}, {off3, c3}});
  check_disjoint(op, off2, c2, off3, c3);
  for (const auto& [name, input] : {std::pair<const char*, const at::Tensor&>{"r", r},
                                    {"w2", w2},
                                    {"b2", b2},
                                    {"w3", w3},
                                    {"b3", b3}}) {
    check_no_overlap(op, out, name, input);
  }
  if (r.size(0) == 0) return;

  const BlockKxkArgs args{.dtype = kind,
                          .r = r.data_ptr(),
                          .w2 = w2.data_ptr(),
                          .b2 = b2.data_ptr<float>(),
                          .w3 = w3.data_ptr(),
                          .b3 = b3.data_ptr<float>(),
                          .out = out.data_ptr(),
                          .batch = out.size(0),
                          .height = out.size(2),
                          .width = out.size(3),
                          .c2r = c2r,
                          .c3r = c3r,
                          .c2 = c2,
                          .c3 = c3,
                          .out_pixel_stride = out.size(1),
                          .off2 = off2,
                          .off3 = off3,
                          .k3 = taps3 == 9 ? 3 : 5};
  launch(op, r, args, FI_CUDA_LAUNCHER(block_kxk), FI_EMULATED_LAUNCHER(block_kxk),
         {{"r", &r}, {"w2", &w2}, {"w3", &w3}});
}

}  // namespace

// Which versions of the CUDA kernels this build holds: "cuda" (nvcc, device code for the
// architectures in TORCH_CUDA_ARCH_LIST) and/or "emulated" (the SIMT shim on the CPU).
std::vector<std::string> cuda_kernel_builds() {
  std::vector<std::string> builds;
#if defined(FUSED_INCEPTION_WITH_CUDA)
  builds.emplace_back("cuda");
#endif
#if defined(FUSED_INCEPTION_WITH_EMULATION)
  builds.emplace_back("emulated");
#endif
  return builds;
}

// Counting the emulated launches (python -m fused_inception.report --work): start clears the
// log and turns it on; stop turns it off and returns the launches ("op|region,names"), the
// counter names and the values (one row of names.size() per launch). Every emulated launch
// of the process is logged meanwhile, from any thread.
void emulated_counters_start() {
#if defined(FUSED_INCEPTION_WITH_EMULATION)
  CounterLog& log = counter_log();
  const std::lock_guard<std::mutex> lock(log.mutex);
  log.on = true;
  log.launches.clear();
  log.values.clear();
#else
  TORCH_CHECK(false,
              "fused_inception::emulated_counters_start: this build has no emulated "
              "(CPU) version of the CUDA kernels (built without CUDA headers)");
#endif
}

std::tuple<std::vector<std::string>, std::vector<std::string>, std::vector<int64_t>>
emulated_counters_stop() {
#if defined(FUSED_INCEPTION_WITH_EMULATION)
  CounterLog& log = counter_log();
  const std::lock_guard<std::mutex> lock(log.mutex);
  log.on = false;
  return {std::move(log.launches),
          std::vector<std::string>(std::begin(emulated::kLaunchCounterNames),
                                   std::end(emulated::kLaunchCounterNames)),
          std::move(log.values)};
#else
  TORCH_CHECK(false,
              "fused_inception::emulated_counters_stop: this build has no emulated "
              "(CPU) version of the CUDA kernels (built without CUDA headers)");
#endif
}

}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("conv1x1_slice_", &fused_inception::conv1x1_slice_);
  m.impl("chain_1x1_kxk_", &fused_inception::chain_1x1_kxk_);
  m.impl("block_1x1_", &fused_inception::block_1x1_);
  m.impl("block_kxk_", &fused_inception::block_kxk_);
}

TORCH_LIBRARY_IMPL(fused_inception, CUDA, m) {
  m.impl("conv1x1_slice_", &fused_inception::conv1x1_slice_);
  m.impl("chain_1x1_kxk_", &fused_inception::chain_1x1_kxk_);
  m.impl("block_1x1_", &fused_inception::block_1x1_);
  m.impl("block_kxk_", &fused_inception::block_kxk_);
}
