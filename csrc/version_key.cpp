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
//
// layout_key, below, gives the addresses and strides of the weights that CPU blocks read in
// place, the same way.

#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>

namespace fused_inception {

namespace {

// Python's Tensor.data_ptr(): the storage's data plus the offset.
const void* data_ptr(const at::Tensor& t) {
  return static_cast<const char*>(t.storage().data()) +
         t.storage_offset() * static_cast<int64_t>(t.element_size());
}

// key(tensors) for `tensors` (a list or tuple) of tensors with storage (nested ones only where
// `nested`: their strides() throws): the new tuple of `fields` new references per tensor that
// `make(t, out)` writes (false: an error is set), or None for any other item, or null with an
// error (not a list or tuple).
template <typename Make>
PyObject* tensor_key(PyObject* tensors, const char* what, int fields, bool nested, Make make) {
  PyObject* seq = PySequence_Fast(tensors, what);
  if (seq == nullptr) return nullptr;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!THPVariable_Check(items[i]) || !THPVariable_Unpack(items[i]).has_storage() ||
        (!nested && THPVariable_Unpack(items[i]).is_nested())) {
      Py_DECREF(seq);
      Py_RETURN_NONE;
    }
  }
  PyObject* key = PyTuple_New(fields * n);
  for (Py_ssize_t i = 0; key != nullptr && i < n; ++i) {
    PyObject* out[3] = {nullptr, nullptr, nullptr};
    const bool ok = make(THPVariable_Unpack(items[i]), out);
    for (int k = 0; k < fields; ++k) {
      if (ok) {
        PyTuple_SET_ITEM(key, fields * i + k, out[k]);
      } else {
        Py_XDECREF(out[k]);
      }
    }
    if (!ok) Py_CLEAR(key);
  }
  Py_DECREF(seq);
  return key;
}

}  // namespace

// version_key(tensors: list | tuple) -> tuple[int, ...] | None (see the header comment).
PyObject* version_key(PyObject* /*self*/, PyObject* tensors) {
  return tensor_key(tensors, "version_key expects a list or tuple of tensors", 3, true,
                    [](const at::Tensor& t, PyObject** out) {
                      const int64_t version =
                          t.is_inference() ? -1 : static_cast<int64_t>(t._version());
                      out[0] = PyLong_FromVoidPtr(const_cast<void*>(data_ptr(t)));
                      out[1] = PyLong_FromLong(static_cast<long>(t.scalar_type()));
                      out[2] = PyLong_FromLongLong(version);
                      return out[0] != nullptr && out[1] != nullptr && out[2] != nullptr;
                    });
}

// layout_key(tensors: list | tuple) -> tuple | None: ((t.data_ptr(), t.stride()), ...) as
// Python builds it, in one call: the live weights' check on every eval forward of a block
// (FusedInception._weights_hold and _live_weights; a block's weights read in place).
// None for anything it cannot read the way Python does (the caller then asks Python).
PyObject* layout_key(PyObject* /*self*/, PyObject* tensors) {
  return tensor_key(tensors, "layout_key expects a list or tuple of tensors", 1, false,
                    [](const at::Tensor& t, PyObject** out) {
                      const auto strides = t.strides();
                      PyObject* stride = PyTuple_New(static_cast<Py_ssize_t>(strides.size()));
                      PyObject* ptr = PyLong_FromVoidPtr(const_cast<void*>(data_ptr(t)));
                      bool ok = stride != nullptr && ptr != nullptr;
                      for (size_t d = 0; ok && d < strides.size(); ++d) {
                        PyObject* value = PyLong_FromLongLong(strides[d]);
                        ok = value != nullptr;
                        if (ok) PyTuple_SET_ITEM(stride, static_cast<Py_ssize_t>(d), value);
                      }
                      out[0] = ok ? PyTuple_Pack(2, ptr, stride) : nullptr;
                      Py_XDECREF(ptr);
                      Py_XDECREF(stride);
                      return out[0] != nullptr;
                    });
}

}  // namespace fused_inception
