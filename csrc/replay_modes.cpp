// fused_inception._C.replay_modes: whether an eval fast path's recorded call may stand in for a
// module's forward on x as far as torch's global modes go (fused_inception.module.
// replay_allowed): x is a plain CPU tensor, and there is no autograd recording (grad mode),
// tracing (torch.jit.trace, ONNX export), torch function mode or CPU autocast. The same four
// questions replay_allowed asked Python one by one (torch.is_grad_enabled(),
// torch._C._is_tracing(), torch._C._is_torch_function_mode_enabled(),
// torch.is_autocast_enabled("cpu")), read from the same thread-local state in one call: every
// eval forward of a block or unit asks them, right after the previous module's kernels have
// taken the caches, where each Python call costs several microseconds (README "Weights,
// attributes and hooks"). torch.compiler.is_compiling() stays in Python (TorchDynamo's flag).

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <Python.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

namespace fused_inception {

// replay_modes(x) -> bool (see the header comment); False for an object that is not a tensor.
PyObject* replay_modes(PyObject* /*self*/, PyObject* x) {
  if (!THPVariable_Check(x)) Py_RETURN_FALSE;
  const at::Tensor& t = THPVariable_Unpack(x);
  const bool allowed = t.defined() && t.device().is_cpu() && !c10::GradMode::is_enabled() &&
                       !torch::jit::tracer::isTracing() &&
                       !at::impl::torch_function_mode_enabled() &&
                       !at::autocast::is_autocast_enabled(at::kCPU);
  return PyBool_FromLong(allowed ? 1 : 0);
}

}  // namespace fused_inception
