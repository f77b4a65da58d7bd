// fused_inception._C.version_key: fused_inception.fingerprint.version_key in C, the per-forward
// weight check of weight_check="version" (the default for weights on a GPU).
//
// The Python generator asked each of a block's 36 parameters and buffers for data_ptr(), dtype,
// is_inference() and _version: 13-15 us per block forward on the CPUs measured (about 30 us in a
// batch-1 forward, with cold caches), of the same order as a GPU block's kernels at batch 1.
// Here the same facts come from the tensors directly: a flat tuple of three ints per tensor,
// (data pointer, scalar type, version counter or -1 for an inference tensor, which has none).
// Equal tuples mean that autograd saw no write and no tensor was moved or replaced by another
// storage or dtype; like the Python one it is blind to writes that bypass the version counter
// (README "Weights, attributes and hooks").
//
// It returns None for anything it cannot read the way Python does (an object that is not a
// tensor, a tensor without storage); the caller then runs the Python function.

#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>

namespace fused_inception {

// version_key(tensors: list | tuple) -> tuple[int, ...] | None (see the header comment).
PyObject* version_key(PyObject* /*self*/, PyObject* tensors) {
  PyObject* seq = PySequence_Fast(tensors, "version_key expects a list or tuple of tensors");
  if (seq == nullptr) return nullptr;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!THPVariable_Check(items[i]) || !THPVariable_Unpack(items[i]).has_storage()) {
      Py_DECREF(seq);
      Py_RETURN_NONE;
    }
  }
  PyObject* key = PyTuple_New(3 * n);
  if (key == nullptr) {
    Py_DECREF(seq);
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    const at::Tensor& t = THPVariable_Unpack(items[i]);
    // data_ptr() as Python's Tensor.data_ptr(): the storage's data plus the offset.
    const auto* data = static_cast<const char*>(t.storage().data()) +
                       t.storage_offset() * static_cast<int64_t>(t.element_size());
    const int64_t version = t.is_inference() ? -1 : static_cast<int64_t>(t._version());
    PyObject* fields[3] = {PyLong_FromVoidPtr(const_cast<char*>(data)),
                           PyLong_FromLong(static_cast<long>(t.scalar_type())),
                           PyLong_FromLongLong(version)};
    for (int k = 0; k < 3; ++k) {
      if (fields[k] == nullptr) {
        for (int j = 0; j < 3; ++j) Py_XDECREF(fields[j]);
        Py_DECREF(key);
        Py_DECREF(seq);
        return nullptr;
      }
    }
    for (int k = 0; k < 3; ++k) PyTuple_SET_ITEM(key, 3 * i + k, fields[k]);
  }
  Py_DECREF(seq);
  return key;
}

}  // namespace fused_inception
