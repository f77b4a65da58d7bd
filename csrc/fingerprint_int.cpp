// fused_inception._C.fingerprint: the value of the operator fused_inception::fingerprint
// (csrc/cpu/fingerprint.cpp) as a Python int, computed by the same function, for the content
// check that CPU blocks and folded units make on every eval forward
// (fused_inception.fingerprint.fingerprint_cpu).
//
// Through the dispatcher a call is two operators (the hash as a 0-dim tensor, then item()), and
// inside a network each runs with cold caches: the blocks between two checks stream megabytes
// of weights, which evict the dispatcher's code and data. Measured on a 2-core Zen 2 EPYC
// (2026-12-05) after a 32 MB write, for a block's 30 small BN tensors: 91 us through the
// operator, against 16 us warm.
//
// It returns None for anything that is not a list or tuple of strided CPU tensors with storage
// (a meta or fake tensor, another device, a sparse tensor, an object that is not a tensor): the
// caller then calls the operator, which hashes or refuses them.

#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace fused_inception {

int64_t fingerprint_value(at::TensorList tensors);  // csrc/cpu/fingerprint.cpp

// fingerprint(tensors: list | tuple) -> int | None (see the header comment).
PyObject* fingerprint_int(PyObject* /*self*/, PyObject* tensors) {
  PyObject* seq = PySequence_Fast(tensors, "fingerprint expects a list or tuple of tensors");
  if (seq == nullptr) return nullptr;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  std::vector<at::Tensor> list;
  list.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!THPVariable_Check(items[i])) {
      Py_DECREF(seq);
      Py_RETURN_NONE;
    }
    const at::Tensor& t = THPVariable_Unpack(items[i]);
    if (!t.defined() || !t.device().is_cpu() || t.layout() != at::kStrided || !t.has_storage()) {
      Py_DECREF(seq);
      Py_RETURN_NONE;
    }
    list.push_back(t);
  }
  Py_DECREF(seq);
  int64_t value = 0;
  std::string error;
  Py_BEGIN_ALLOW_THREADS;  // the hash of a large weight runs on every thread
  try {
    value = fingerprint_value(list);
  } catch (const std::exception& e) {
    error = e.what();
  }
  Py_END_ALLOW_THREADS;
  if (!error.empty()) {
    PyErr_SetString(PyExc_RuntimeError, error.c_str());
    return nullptr;
  }
  return PyLong_FromLongLong(value);
}

}  // namespace fused_inception
