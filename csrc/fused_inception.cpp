// Entry point of the compiled extension fused_inception._C, and the one place where the
// schemas of all fused_inception operators are declared.
//
// Importing the Python module loads this shared library, whose static initialisers register
// the schemas below (TORCH_LIBRARY) and the kernels of each backend (TORCH_LIBRARY_IMPL in
// csrc/cpu/*.cpp, later csrc/cuda/*). Python then calls the operators through the dispatcher as
// torch.ops.fused_inception.<name>. The module's Python functions are the per-forward checks
// of FusedInception and FoldedConvUnit, where the dispatcher's argument handling would cost more
// than the check: snapshot_matches and snapshot_tags (csrc/structure_check.cpp, the structure),
// version_key (csrc/version_key.cpp, weight_check="version") and fingerprint
// (csrc/fingerprint_int.cpp, weight_check="content": the operator's hash as an int), and the
// eval fast paths' operator calls (op_handle, call_op: csrc/call_op.cpp) and global modes
// (replay_modes: csrc/replay_modes.cpp), and a block's whole eval fast path in one call
// (replay_checked: csrc/replay_checked.cpp). Only <Python.h> and <torch/library.h> are included
// here: pybind11 and torch/extension.h would multiply compile times and are not needed to register
// operators.

#include <Python.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace fused_inception {
std::vector<std::string> cuda_kernel_builds();  // csrc/cuda_ops.cpp
void emulated_counters_start();                 // csrc/cuda_ops.cpp
std::tuple<std::vector<std::string>, std::vector<std::string>, std::vector<int64_t>>
emulated_counters_stop();  // csrc/cuda_ops.cpp
// For tests: parallel_for (csrc/cpu/parallel.h) over n items with grain_size; [n, 2] int64, per
// item how many times the loop's function saw it and the OpenMP thread number that took it last.
// With hold_first, item 0 taken by thread 0 (the owner of the first range) waits, up to 10 s,
// until another thread has taken an item of that range, which only a thread taking over part of
// it can do (csrc/cpu/parallel.cpp).
at::Tensor parallel_for_probe(int64_t n, int64_t grain_size, bool hold_first);
// parallel_for_ordered over jobs of tasks[j] tasks, job j's tasks waiting for every task of
// jobs [0, after[j]); [total, 5] int64, per task: times run, thread, start and end on one
// clock, the next task its thread was given (csrc/cpu/parallel.cpp).
at::Tensor parallel_for_ordered_probe(at::IntArrayRef tasks, at::IntArrayRef after,
                                      int64_t hold_task, int64_t throw_task);
// csrc/cpu/gemm_panels.cpp
std::vector<int64_t> conv_tile_taps(int64_t n, int64_t c, int64_t h, int64_t w, int64_t kernel,
                                    int64_t stride, int64_t padding);
PyObject* snapshot_matches(PyObject* self, PyObject* const* args,
                           Py_ssize_t nargs);                  // csrc/structure_check.cpp
PyObject* snapshot_tags(PyObject* self, PyObject* entries);    // csrc/structure_check.cpp
PyObject* version_key(PyObject* self, PyObject* tensors);      // csrc/version_key.cpp
PyObject* layout_key(PyObject* self, PyObject* tensors);       // csrc/version_key.cpp
PyObject* fingerprint_int(PyObject* self, PyObject* tensors);  // csrc/fingerprint_int.cpp
PyObject* op_handle(PyObject* self, PyObject* name);           // csrc/call_op.cpp
PyObject* call_op(PyObject* self, PyObject* const* args, Py_ssize_t nargs);  // csrc/call_op.cpp
PyObject* replay_modes(PyObject* self, PyObject* x);  // csrc/replay_modes.cpp
PyObject* replay_checked(PyObject* self, PyObject* const* args,
                         Py_ssize_t nargs);  // csrc/replay_checked.cpp
}  // namespace fused_inception

namespace {
PyMethodDef g_methods[] = {
    {"snapshot_matches", reinterpret_cast<PyCFunction>(fused_inception::snapshot_matches),
     METH_FASTCALL,
     "snapshot_matches(block, entries, tags=None) -> True, False or None: "
     "StructureSnapshot.matches in C (fused_inception/structure.py); None where only the Python "
     "loop can tell. With tags (snapshot_tags), True at once where no dict read has changed."},
    {"snapshot_tags", reinterpret_cast<PyCFunction>(fused_inception::snapshot_tags), METH_O,
     "snapshot_tags(entries) -> bytes or None: the version tags of the dicts snapshot_matches "
     "reads, for its tags argument; None where CPython has no such tags (3.12 on)."},
    {"version_key", reinterpret_cast<PyCFunction>(fused_inception::version_key), METH_O,
     "version_key(tensors) -> tuple of ints or None: fused_inception.fingerprint.version_key in "
     "C (data pointer, scalar type, version or -1 per tensor); None where only Python can tell."},
    {"layout_key", reinterpret_cast<PyCFunction>(fused_inception::layout_key), METH_O,
     "layout_key(tensors) -> tuple or None: tuple((t.data_ptr(), t.stride()) for t in tensors) "
     "in C; None where only Python can tell."},
    {"fingerprint", reinterpret_cast<PyCFunction>(fused_inception::fingerprint_int), METH_O,
     "fingerprint(tensors) -> int or None: the operator fused_inception::fingerprint's value as "
     "an int, for CPU tensors; None where the operator must tell."},
    {"op_handle", reinterpret_cast<PyCFunction>(fused_inception::op_handle), METH_O,
     "op_handle(name) -> int: a handle of the operator fused_inception::<name> for call_op."},
    {"call_op", reinterpret_cast<PyCFunction>(fused_inception::call_op), METH_FASTCALL,
     "call_op(handle, *args) -> Tensor: the operator called boxed through the dispatcher, "
     "without torch.ops' Python layer and schema matching (the eval fast paths' replays)."},
    {"replay_modes", reinterpret_cast<PyCFunction>(fused_inception::replay_modes), METH_O,
     "replay_modes(x) -> bool: x a CPU tensor, and no grad mode, tracing, torch function mode "
     "or CPU autocast (fused_inception.module.replay_allowed, but torch.compile's flag)."},
    {"replay_checked", reinterpret_cast<PyCFunction>(fused_inception::replay_checked),
     METH_FASTCALL,
     "replay_checked(x, ctx) -> Tensor or None: a block's eval fast path in one call (the "
     "checks of one verified replay's context, module._fast_context, then the operator); None "
     "where a check does not hold or only Python can tell."},
    {nullptr, nullptr, 0, nullptr},
};
}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // m_name
      "fused_inception's compiled operators; call them as torch.ops.fused_inception.*",
      -1,         // m_size: no per-module state
      g_methods,  // the three checks; everything else goes through the dispatcher
  };
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fused_inception, m) {
  // x: [N, C, H, W], channels_last. Returns max_pool2d(x, 3, stride=1, padding=1) as a new
  // channels_last tensor of the same shape (padding counts as -inf).
  m.def("max_pool3x3_nhwc(Tensor x) -> Tensor");
  // x: [N, C, H, W], channels_last. Returns max_pool2d(x, kernel_size, stride, padding,
  // dilation=1, ceil_mode) (padding counts as -inf; kernel_size, stride, padding as (height,
  // width)) as a new channels_last tensor [N, C, OH, OW] (csrc/cpu/max_pool_nhwc.cpp).
  m.def(
      "max_pool_nhwc(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, "
      "bool ceil_mode) -> Tensor");
  // x: [N, C, H, W] float32 or float64, channels_last, H * W >= 1. Returns the mean over H and
  // W as a new channels_last tensor [N, C, 1, 1] (adaptive_avg_pool2d(x, 1) up to rounding;
  // csrc/cpu/global_avg_pool.cpp).
  m.def("global_avg_pool_nhwc(Tensor x) -> Tensor");
  // x: [M, K], weight: [N, K] (rows of contiguous features), bias: [N] or None, float32 CPU.
  // Returns x @ weight.T + bias, a new [M, N] tensor (F.linear up to float rounding; one
  // output's products summed in 8 lanes, csrc/cpu/linear_rows.cpp).
  m.def("linear_rows(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // grad_out, x: [N, C, H, W], channels_last, same dtype. Returns the gradient of
  // max_pool3x3_nhwc(x) with respect to x (what max_pool2d_with_indices_backward returns for
  // max_pool2d_with_indices(x, 3, 1, 1)'s indices) as a new channels_last tensor.
  m.def("max_pool3x3_nhwc_backward(Tensor grad_out, Tensor x) -> Tensor");
  // grad_in, grad_out, x: [N, C, H, W], channels_last, same dtype; grad_in shares no memory with
  // the others. grad_in += max_pool3x3_nhwc_backward(grad_out, x), in one pass.
  m.def("max_pool3x3_nhwc_backward_add_(Tensor(a!) grad_in, Tensor grad_out, Tensor x) -> ()");
  // The CPU backend's float32 eval block on oneDNN convolutions in one call
  // (csrc/cpu/block_onednn.cpp): x [N, Cin, H, W] float32, any memory format; w_x the three 1x1
  // convolutions over x stacked [c1 + c2r + c3r, Cin, 1, 1], w2 [c2, c2r, 3, 3], w3 [c3, c3r, K,
  // K], w_pool [c4, Cin, 1, 1], each plain channels_last or reordered by oneDNN for this input
  // shape, or (3-D) the panels of conv_bias_relu_nhwc's kernel, which then computes that
  // convolution; biases 1-D. winograd2 / winograd3: that branch's 3x3 convolution runs as
  // Winograd F(2x2, 3x3), its weight then the transformed [16 * c, c_red, 1, 1] (grouped: group
  // k is U[k]^T) or the own kernel's panels of each U[k], [16, ceil(c / 16), c_red, 16], in
  // chunks of winograd_tiles tiles; or as F(4x4, 3x3), its weight [36 * c, c_red, 1, 1] (oneDNN
  // only), direct2 / direct3 then that branch's plain weight for a direct recompute where the
  // transforms meet NaN or inf. A 4-D w_x, w2 (not Winograd), w3 (not Winograd) or w_pool in
  // the plain layout (gemm_panels.h, plain_weight_ldb: output channels contiguous, rows padded
  // to 16) also runs on that kernel, read in place; scale_x / scale2 / scale3 / scale_pool
  // (float32 [Cout], own kernel only) multiply that convolution's sums before its bias (BatchNorm
  // unfolded: relu(scale * conv + bias)). nchw_scatter: an NCHW output's slices that the own
  // kernel's AVX-512 tiles compute are scattered into their planes by the tiles (where the
  // planes allow), else staged in NHWC and transposed after; the same bits either way. Returns
  // the block output [N, c1 + c2 + c3 + c4, H, W] in x's memory format (NaN-filled before it is
  // written when poison).
  m.def(
      "inception_block_onednn(Tensor x, Tensor w_x, Tensor b_x, Tensor w2, Tensor b2, Tensor w3, "
      "Tensor b3, Tensor w_pool, Tensor b_pool, int c1, int c2r, bool poison=False, "
      "bool winograd2=False, bool winograd3=False, int winograd_tiles=0, Tensor? direct2=None, "
      "Tensor? direct3=None, Tensor? scale_x=None, Tensor? scale2=None, Tensor? scale3=None, "
      "Tensor? scale_pool=None, bool nchw_scatter=True) -> Tensor");
  // relu(conv3x3(x, W, pad 1) + bias) by Winograd F(2x2, 3x3) on a grouped oneDNN GEMM
  // (csrc/cpu/block_onednn.cpp): x [N, C, H, W] float32, weight the transformed [16 * Cout, C,
  // 1, 1] (plain or reordered by oneDNN for one chunk [1, 16 * C, 1, tiles]), bias [Cout], in
  // chunks of `tiles` tiles; or F(4x4, 3x3) for a weight [36 * Cout, C, 1, 1], `direct` then
  // the plain weight [Cout, C, 3, 3] for a direct recompute where it meets NaN or inf, and
  // which may leave the ReLU out (relu=False: the training backward's input gradients). Returns [N,
  // Cout, H, W] in x's memory format.
  m.def(
      "conv3x3_relu_winograd(Tensor x, Tensor weight, Tensor bias, int tiles, Tensor? direct=None, "
      "bool relu=True) -> Tensor");
  // The weight gradient [Cout, C, 3, 3] of a 3x3 convolution (stride 1, zero padding 1) of x
  // [N, C, H, W] with output gradient grad_out [N, Cout, H, W] (float32, any memory format), by
  // Winograd F(4x4, 3x3) in chunks of `tiles` 4x4 tiles (csrc/cpu/winograd_training.cpp).
  // Where x or grad_out holds NaN or inf, or the transforms overflow, some entries of the
  // result are not finite (the caller recomputes directly). channels_last: the result in that
  // memory format (a channels_last weight's gradient, which autograd would copy otherwise).
  m.def(
      "conv3x3_weight_grad_winograd(Tensor x, Tensor grad_out, int tiles, "
      "bool channels_last=False) -> Tensor");
  // conv3x3(x, weight, stride 1, zero padding 1) + bias (then ReLU with relu) by Winograd F(4x4,
  // 3x3) from the plain weight [Cout, C, 3, 3] (csrc/cpu/winograd_training.cpp); transposed:
  // the convolution of an input gradient x [N, Cout, H, W] instead (the weight's taps reversed
  // and its channels swapped) -> [N, C, H, W]. Chunks of `tiles` 4x4 tiles; float32 CPU x in
  // any memory format; the result channels_last. Recomputed directly where it meets NaN or inf.
  m.def(
      "conv3x3_winograd_f4(Tensor x, Tensor weight, Tensor? bias, int tiles, bool relu, "
      "bool transposed=False) -> Tensor");
  // The 5x5 counterparts of the two above (stride 1, zero padding 2), by Winograd F(4x4, 5x5):
  // 8x8 windows, 64 GEMMs (csrc/cpu/winograd_training.cpp, csrc/cpu/winograd_f4x5.cpp).
  m.def(
      "conv5x5_weight_grad_winograd(Tensor x, Tensor grad_out, int tiles, "
      "bool channels_last=False) -> Tensor");
  m.def(
      "conv5x5_winograd_f4(Tensor x, Tensor weight, Tensor? bias, int tiles, bool relu, "
      "bool transposed=False) -> Tensor");
  // relu(convKxK(x, W, stride, zero padding) + bias) by the package's own kernel
  // (csrc/cpu/gemm_panels.cpp): x [N, C, H, W] float32 with channels_last pixel rows (or a
  // channel slice of such a tensor; any layout for K > 1 on fewer than 16 channels, a first
  // layer, which is copied into a zero-padded NHWC buffer), panels the weight [Cout, K, K, C]
  // packed as [ceil(Cout / 16), K * K * C, 16] (zero past Cout; K odd, at most 7, read from the
  // shape), or the weight [Cout, C, K, K] itself in the plain layout (output channels contiguous,
  // read in place: gemm_panels.h, plain_weight_ldb), bias [Cout], padding at most K // 2 (-1: K //
  // 2); with scale [Cout], relu(scale * convKxK + bias). Returns [N, Cout, H', W'] channels_last,
  // written with non-temporal stores when larger than stream_bytes (-1: 16 MB, a Zen CCX's L3;
  // the same values either way).
  m.def(
      "conv_bias_relu_nhwc(Tensor x, Tensor panels, Tensor bias, int stride=1, int padding=-1, "
      "Tensor? scale=None, int stream_bytes=-1) -> Tensor");
  // Winograd F(2x2, 3x3) transforms (csrc/cpu/winograd_f2x3.cpp) over the flat tile range
  // [tile_begin, tile_begin + tile_count) of the N * ceil(H/2) * ceil(W/2) tiles (tile_count
  // None: to the last tile). input: r [N*H*W, C] float32 rows of an NHWC tensor (channels
  // contiguous, any row stride) -> V [tile_count, 16, C]. output_: m [16, tile_count, Cout] ->
  // the range's pixels of out [N*H*W, Cout] (a row-strided slice, not overlapping m or bias) =
  // relu(A^T m A + bias), written in place.
  m.def(
      "winograd_f2x3_input(Tensor r, int n, int h, int w, int tile_begin=0, "
      "int? tile_count=None) -> Tensor");
  m.def(
      "winograd_f2x3_output_(Tensor m, Tensor bias, Tensor(a!) out, int n, int h, int w, "
      "int tile_begin=0, int? tile_count=None) -> ()");

  // The CUDA C++ kernels (csrc/cuda/*.cu, bound in csrc/cuda_ops.cpp): CUDA tensors run the
  // nvcc build, CPU tensors the same sources compiled against the SIMT shim (csrc/simt/).
  // x: [N, Cin, H, W] channels_last; out: the block output [N, Ctot, H, W] channels_last, of
  // which only channels [c0, c0 + Cout) are written; out must not overlap any input. Weights
  // row-major [K, N], biases float32.
  // conv1x1_slice_: w [Cin, Cout]; out slice = relu(conv1x1(maxpool3x3(x) if pool else x) + b).
  m.def("conv1x1_slice_(Tensor x, Tensor w, Tensor bias, Tensor(a!) out, int c0, bool pool) -> ()");
  // chain_1x1_kxk_: w_red [Cin, Cr], w_kxk [K, K, Cr, Cout];
  // out slice = relu(convKxK(relu(conv1x1(x) + b_red), pad K//2) + b_kxk).
  m.def(
      "chain_1x1_kxk_(Tensor x, Tensor w_red, Tensor b_red, Tensor w_kxk, Tensor b_kxk, "
      "Tensor(a!) out, int c0) -> ()");
  // Version 2 (16-bit, tensor-core mainloops; csrc/cuda/block_1x1.cu, block_kxk.cu), the Triton
  // backend's two launches with its arguments. block_1x1_: [b1 | r2 | r3] = relu(x @ w_x + b_x)
  // with b1 into out's channels [0, c1) and r2 | r3 into the scratch r [N*H*W, n_x - c1], and
  // b4 = relu(maxpool3x3(x) @ w_pool + b_pool) into [pool_off, pool_off + C4).
  m.def(
      "block_1x1_(Tensor x, Tensor w_x, Tensor b_x, Tensor w_pool, Tensor b_pool, Tensor(a!) out, "
      "Tensor(b!) r, int c1, int pool_off) -> ()");
  // block_kxk_: b2 = relu(conv3x3(r[:, :c2r]) + b2) into [off2, off2 + C2) and b3 =
  // relu(convKxK(r[:, c2r:]) + b3) into [off3, off3 + C3); w2 [9, c2r, C2], w3 [K*K, c3r, C3].
  m.def(
      "block_kxk_(Tensor r, Tensor w2, Tensor b2, Tensor w3, Tensor b3, Tensor(a!) out, int c2r, "
      "int off2, int off3) -> ()");
  // A 64-bit hash of the bytes, dtypes, sizes and strides of CPU tensors, as a 0-dim int64 tensor
  // (csrc/cpu/fingerprint.cpp): FusedInception's check that no weight or buffer changed since
  // it packed them, including writes through .data or numpy that bump no version counter.
  m.def("fingerprint(Tensor[] tensors) -> Tensor");
  // Which versions of those kernels this build holds: "cuda" and/or "emulated".
  m.def("cuda_kernel_builds() -> str[]", &fused_inception::cuda_kernel_builds);
  // Counting the emulated (SIMT shim) launches of those kernels: start clears the log and turns
  // it on; stop turns it off and returns (launches "op|region names", counter names, values:
  // one row of counters per launch), csrc/cuda_ops.cpp.
  m.def("emulated_counters_start() -> ()", &fused_inception::emulated_counters_start);
  m.def("emulated_counters_stop() -> (str[], str[], int[])",
        &fused_inception::emulated_counters_stop);
  // The CPU operators' balanced parallel loop seen from a test (csrc/cpu/parallel.h): per item,
  // how many times the loop's function saw it and which thread took it.
  m.def("parallel_for_probe(int n, int grain_size, bool hold_first) -> Tensor",
        &fused_inception::parallel_for_probe);
  // Its ordered loop (parallel_for_ordered: jobs of `tasks` tasks, job j's waiting for every
  // task of jobs [0, after[j])): per task, how many times it ran, the thread, the order in
  // which it started and ended (one clock for both), and the next task its thread was given;
  // task hold_task waits until another has started, task throw_task throws (-1: none).
  m.def(
      "parallel_for_ordered_probe(int[] tasks, int[] after, int hold_task, int throw_task) -> "
      "Tensor",
      &fused_inception::parallel_for_ordered_probe);
  // The (pixel, tap) pairs the CPU convolution's tiles multiply, and all of them
  // (csrc/cpu/gemm_panels.h): the padding taps a tile drops, counted.
  m.def("conv_tile_taps(int n, int c, int h, int w, int kernel, int stride, int padding) -> int[]",
        &fused_inception::conv_tile_taps);
}
