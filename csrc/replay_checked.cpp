// fused_inception._C.replay_checked: a block's eval fast path (FusedInception._planned) in one
// C call: the checks that a recorded operator call still stands for the module's forward, then
// the call.
//
// The Python path asks the same questions through about ten Python functions (_ready_plan,
// replay_allowed, _weights_hold, _layout_key, the weight check's wrapper, replay_plan ...), each
// after the previous block's kernels have taken the caches. Here the context of one verified
// replay (built by module._fast_context right after the Python checks passed for it) is
// replayed: each check is the same C function the Python path calls (replay_modes,
// snapshot_matches, layout_key, fingerprint or version_key, call_op: this extension's own,
// called directly), without the interpreter in between; only the backend's settings (the
// plan's policy function) run Python.
//
// ctx, a tuple:
//   0-2   x's sizes and strides (tuples of ints) and dtype that the plan was made for
//   3-4   the plan's policy function and the policy it was made under
//   5-7   the structure snapshot's block, entries and tags (snapshot_matches' arguments)
//   8-9   the weights read in place and their layout key (8 None: no such check)
//   10-12 the weight check (_C.fingerprint or _C.version_key), the tensors it hashes and the
//         value they had
//   13    the backend's own checks: a tuple of (check, entry, seen) where entry[3] must still be
//         `seen` and check([entry[1]]) must give `seen` (backends/cpu.py, CpuPacked.checks)
//   14-15 the operator's call_op handle and its arguments after x
//
// Measured on the 2-core Emerald Rapids Xeon (2026-12-06; the benchmark's prepared blocks at
// batch 1 on NCHW input, interleaved with eager in one process, against the Python path):
// 0.962-0.990x the time, 13-50 us less per call (5b 24 us).
//
// Returns the operator's output, or None where any check does not hold or cannot be decided in
// C (the caller then runs the Python path, which decides, and falls back to the full forward).
// Errors raised by a check or the operator propagate, as they would from the Python path.

#include <Python.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>

namespace fused_inception {

PyObject* replay_modes(PyObject* self, PyObject* x);  // csrc/replay_modes.cpp
PyObject* snapshot_matches(PyObject* self, PyObject* const* args,
                           Py_ssize_t nargs);             // csrc/structure_check.cpp
PyObject* layout_key(PyObject* self, PyObject* tensors);  // csrc/version_key.cpp
PyObject* call_op(PyObject* self, PyObject* const* args, Py_ssize_t nargs);  // csrc/call_op.cpp

namespace {

constexpr Py_ssize_t kContextSize = 16;

// Whether the tuple of ints `expected` equals `values`.
bool same_ints(PyObject* expected, c10::IntArrayRef values) {
  if (!PyTuple_Check(expected) ||
      PyTuple_GET_SIZE(expected) != static_cast<Py_ssize_t>(values.size())) {
    return false;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    PyObject* item = PyTuple_GET_ITEM(expected, static_cast<Py_ssize_t>(i));
    if (!PyLong_Check(item)) return false;
    const long long v = PyLong_AsLongLong(item);
    if (v == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    if (v != values[i]) return false;
  }
  return true;
}

// value == expected for a new reference `value` (released here): 1 yes, 0 no (or value is
// None: undecided), -1 an error (also a null value).
int equals(PyObject* value, PyObject* expected) {
  if (value == nullptr) return -1;
  const int same = value == Py_None ? 0 : PyObject_RichCompareBool(value, expected, Py_EQ);
  Py_DECREF(value);
  return same;
}

// f(arg) == expected, as `equals`.
int call_equals(PyObject* f, PyObject* arg, PyObject* expected) {
  return equals(PyObject_CallOneArg(f, arg), expected);
}

}  // namespace

// replay_checked(x, ctx) -> Tensor | None (see the header comment).
PyObject* replay_checked(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != kContextSize) {
    PyErr_SetString(PyExc_TypeError, "replay_checked(x, ctx: tuple of 16) expected");
    return nullptr;
  }
  PyObject* x = args[0];
  PyObject* const* c = &PyTuple_GET_ITEM(args[1], 0);
  if (!THPVariable_Check(x) || !THPDtype_Check(c[2])) Py_RETURN_NONE;
  {
    const at::Tensor& t = THPVariable_Unpack(x);
    if (!t.defined() || t.is_sparse() || t.is_nested() ||
        t.scalar_type() != reinterpret_cast<THPDtype*>(c[2])->scalar_type ||
        !same_ints(c[0], t.sizes()) || !same_ints(c[1], t.strides())) {
      Py_RETURN_NONE;
    }
  }
  // Global modes (grad, tracing, torch function mode, autocast) and x on the CPU.
  PyObject* allowed = replay_modes(nullptr, x);
  if (allowed == nullptr) return nullptr;
  const bool modes_allow = allowed == Py_True;
  Py_DECREF(allowed);
  if (!modes_allow) Py_RETURN_NONE;
  // The backend's settings.
  int same = equals(PyObject_CallNoArgs(c[3]), c[4]);
  if (same != 1) {
    if (same < 0) return nullptr;
    Py_RETURN_NONE;
  }
  // The structure, attributes and hooks: True only (False or None: the Python path decides).
  {
    PyObject* snapshot_args[3] = {c[5], c[6], c[7]};
    PyObject* matches = snapshot_matches(nullptr, snapshot_args, 3);
    if (matches == nullptr) return nullptr;
    const bool holds = matches == Py_True;
    Py_DECREF(matches);
    if (!holds) Py_RETURN_NONE;
  }
  // The weights read in place: the same tensors, addresses and strides.
  if (c[8] != Py_None) {
    same = equals(layout_key(nullptr, c[8]), c[9]);
    if (same != 1) {
      if (same < 0) return nullptr;
      Py_RETURN_NONE;
    }
  }
  // The other weights and buffers: the block's weight check.
  same = call_equals(c[10], c[11], c[12]);
  if (same != 1) {
    if (same < 0) return nullptr;
    Py_RETURN_NONE;
  }
  // The weights the backend checks itself (a Winograd form's source).
  if (!PyTuple_Check(c[13])) Py_RETURN_NONE;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c[13]); ++i) {
    PyObject* check = PyTuple_GET_ITEM(c[13], i);
    if (!PyTuple_Check(check) || PyTuple_GET_SIZE(check) != 3) Py_RETURN_NONE;
    PyObject* entry = PyTuple_GET_ITEM(check, 1);
    PyObject* seen = PyTuple_GET_ITEM(check, 2);
    if (!PyList_Check(entry) || PyList_GET_SIZE(entry) != 4) Py_RETURN_NONE;
    same = PyObject_RichCompareBool(PyList_GET_ITEM(entry, 3), seen, Py_EQ);
    if (same == 1) {
      PyObject* one = PyList_New(1);
      if (one == nullptr) return nullptr;
      PyObject* weight = PyList_GET_ITEM(entry, 1);
      Py_INCREF(weight);
      PyList_SET_ITEM(one, 0, weight);
      same = call_equals(PyTuple_GET_ITEM(check, 0), one, seen);
      Py_DECREF(one);
    }
    if (same != 1) {
      if (same < 0) return nullptr;
      Py_RETURN_NONE;
    }
  }
  // The call: call_op(handle, x, *args).
  if (!PyTuple_Check(c[15])) Py_RETURN_NONE;
  const Py_ssize_t n = PyTuple_GET_SIZE(c[15]);
  constexpr Py_ssize_t kMaxArgs = 64;
  if (n + 2 > kMaxArgs) Py_RETURN_NONE;
  PyObject* call_args[kMaxArgs];
  call_args[0] = c[14];
  call_args[1] = x;
  for (Py_ssize_t i = 0; i < n; ++i) call_args[i + 2] = PyTuple_GET_ITEM(c[15], i);
  return call_op(nullptr, call_args, n + 2);
}

}  // namespace fused_inception
