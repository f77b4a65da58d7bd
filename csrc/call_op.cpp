// fused_inception._C.op_handle / call_op: an operator of this library called through the C++
// dispatcher directly, for the calls that the eval fast paths replay
// (fused_inception/_ext.py, `direct_op`).
//
// torch.ops.fused_inception.<name>(...) runs Python (OpOverload.__call__) and then matches
// every argument against the schema before the dispatcher runs. Inside a network each call
// runs with cold caches (the blocks before it streamed megabytes of weights), and that path
// then costs 50-60 us: the eval block operator with an empty batch (no work) took 63 us after a
// 32 MB write against 10 us warm (2-core Zen 2 EPYC, 2026-12-05). Here the arguments, already
// checked when the call was planned, are boxed by their Python type (tensor, None, bool, int,
// float, list or tuple of ints) and the operator is called boxed: the same dispatcher, the same
// kernels, autograd and inference-mode handling; only the Python layer and the schema matching
// are left out. The GIL is released while the operator runs, as torch.ops does.

#include <ATen/core/dispatch/Dispatcher.h>
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fused_inception {
namespace {

// The operators asked for so far, by handle (an index: handles are never dropped).
std::vector<c10::OperatorHandle>& handles() {
  static std::vector<c10::OperatorHandle> all;
  return all;
}

// `o` as the IValue that the schema's argument takes, if its Python type says what it is.
bool box(PyObject* o, c10::IValue& out) {
  if (THPVariable_Check(o)) {
    out = THPVariable_Unpack(o);
  } else if (o == Py_None) {
    out = c10::IValue();
  } else if (PyBool_Check(o)) {
    out = o == Py_True;
  } else if (PyLong_Check(o)) {
    const long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return false;
    out = static_cast<int64_t>(v);
  } else if (PyFloat_Check(o)) {
    out = PyFloat_AS_DOUBLE(o);
  } else if (PyList_Check(o) || PyTuple_Check(o)) {  // int[]
    PyObject* seq = PySequence_Fast(o, "");
    if (seq == nullptr) return false;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    std::vector<int64_t> values;
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
      const long long v = PyLong_Check(item) && !PyBool_Check(item) ? PyLong_AsLongLong(item) : -1;
      if (!PyLong_Check(item) || PyBool_Check(item) || (v == -1 && PyErr_Occurred())) {
        Py_DECREF(seq);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "call_op: lists must hold ints");
        return false;
      }
      values.push_back(static_cast<int64_t>(v));
    }
    Py_DECREF(seq);
    out = c10::IValue(values);
  } else {
    PyErr_Format(PyExc_TypeError, "call_op: cannot pass an argument of type %s",
                 Py_TYPE(o)->tp_name);
    return false;
  }
  return true;
}

}  // namespace

// op_handle(name: str) -> int: the handle of fused_inception::<name> (its default overload).
PyObject* op_handle(PyObject* /*self*/, PyObject* name) {
  HANDLE_TH_ERRORS
  const char* text = PyUnicode_AsUTF8(name);
  if (text == nullptr) return nullptr;
  handles().push_back(c10::Dispatcher::singleton().findSchemaOrThrow(
      ("fused_inception::" + std::string(text)).c_str(), ""));
  return PyLong_FromSize_t(handles().size() - 1);
  END_HANDLE_TH_ERRORS
}

// call_op(handle, *args) -> Tensor: the operator on args, its schema's arguments in order
// (those left out at the end take their defaults).
PyObject* call_op(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs < 1 || !PyLong_Check(args[0])) {
    PyErr_SetString(PyExc_TypeError, "call_op(handle, *args): handle must be an int");
    return nullptr;
  }
  const Py_ssize_t index = PyLong_AsSsize_t(args[0]);
  if (index < 0 || index >= static_cast<Py_ssize_t>(handles().size())) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "call_op: unknown handle");
    return nullptr;
  }
  const c10::OperatorHandle& op = handles()[static_cast<size_t>(index)];
  const auto& schema = op.schema();
  const auto& arguments = schema.arguments();
  const auto given = static_cast<size_t>(nargs - 1);
  if (given > arguments.size() || schema.returns().size() != 1) {
    PyErr_Format(PyExc_TypeError, "call_op: %s takes %zu arguments and returns one tensor, got %zd",
                 schema.name().c_str(), arguments.size(), nargs - 1);
    return nullptr;
  }
  torch::jit::Stack stack;
  stack.reserve(arguments.size());
  for (Py_ssize_t i = 1; i < nargs; ++i) {
    c10::IValue value;
    if (!box(args[i], value)) return nullptr;
    stack.push_back(std::move(value));
  }
  for (size_t i = given; i < arguments.size(); ++i) {
    if (!arguments[i].default_value().has_value()) {
      PyErr_Format(PyExc_TypeError, "call_op: %s: argument %s not given", schema.name().c_str(),
                   arguments[i].name().c_str());
      return nullptr;
    }
    stack.push_back(*arguments[i].default_value());
  }
  {
    pybind11::gil_scoped_release no_gil;
    op.callBoxed(stack);
  }
  TORCH_INTERNAL_ASSERT(stack.size() == 1 && stack[0].isTensor(), "call_op: ", schema.name(),
                        " returned no tensor");
  return THPVariable_Wrap(std::move(stack[0]).toTensor());
  END_HANDLE_TH_ERRORS
}

}  // namespace fused_inception
