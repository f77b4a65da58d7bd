// fused_inception._C.snapshot_matches: StructureSnapshot.matches (fused_inception/structure.py)
// in C, for the per-forward structure check of FusedInception and FoldedConvUnit.
//
// The Python loop over a block's ~25 modules took 38-40 us per forward on the CPUs measured
// (55-65 us in a batch-1 forward, with cold caches), 3-5% of a batch-1 block forward. This is
// the same comparison with the same answers, minus the interpreter: per module, its __dict__
// against the snapshot's shallow copy (PyObject_RichCompareBool: identity first, then ==, so a
// changed plain attribute or `training` compares unequal), the identities of the values of its
// _parameters, _buffers and _modules against the ids recorded, and whether it has hooks.
//
// It returns True, False, or None where it cannot decide the way the Python loop does (a
// _parameters, _buffers or _modules that is not an exact dict, whose order Python's .values()
// might not share with PyDict_Next): the caller then runs the Python loop. Any error raised by
// a comparison (a replaced tensor attribute compared by value) counts as a change, as in Python.

#include <Python.h>

namespace {

// Interned attribute names, made once.
PyObject* g_dict_names[3];  // "_parameters", "_buffers", "_modules"
PyObject* g_hook_names[4];  // "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", ...
bool g_interned = false;

bool intern_names() {
  if (g_interned) return true;
  const char* dicts[3] = {"_parameters", "_buffers", "_modules"};
  const char* hooks[4] = {"_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                          "_backward_pre_hooks"};
  for (int i = 0; i < 3; ++i) {
    g_dict_names[i] = PyUnicode_InternFromString(dicts[i]);
    if (g_dict_names[i] == nullptr) return false;
  }
  for (int i = 0; i < 4; ++i) {
    g_hook_names[i] = PyUnicode_InternFromString(hooks[i]);
    if (g_hook_names[i] == nullptr) return false;
  }
  g_interned = true;
  return true;
}

enum Verdict { kChanged = 0, kSame = 1, kUndecided = 2, kError = 3 };

// The values of `dict` (an exact dict) are, in order, the objects whose ids are in `ids`.
Verdict same_ids(PyObject* dict, PyObject* ids) {
  if (!PyDict_CheckExact(dict)) return kUndecided;
  if (!PyTuple_Check(ids)) return kError;
  if (PyDict_GET_SIZE(dict) != PyTuple_GET_SIZE(ids)) return kChanged;
  Py_ssize_t pos = 0, i = 0;
  PyObject *key, *value;
  while (PyDict_Next(dict, &pos, &key, &value)) {
    void* id = PyLong_AsVoidPtr(PyTuple_GET_ITEM(ids, i++));
    if (id == nullptr && PyErr_Occurred()) return kError;
    if (id != static_cast<void*>(value)) return kChanged;
  }
  return kSame;
}

// True if module dict `md` holds a non-empty hook dict (nn.Module's four).
int has_hooks(PyObject* md) {
  for (PyObject* name : g_hook_names) {
    PyObject* hooks = PyDict_GetItemWithError(md, name);  // borrowed
    if (hooks == nullptr) {
      if (PyErr_Occurred()) return -1;
      continue;  // not an instance attribute: Python would not find hooks there either
    }
    int truth = PyObject_IsTrue(hooks);
    if (truth != 0) return truth;
  }
  return 0;
}

// dict == copy, as Python's dict comparison answers it (-1: it raised). A module's __dict__ and
// its snapshot copy normally hold the same keys in the same order, so they are walked side by
// side (no hash lookups; values compared by identity first, as PyObject_RichCompareBool does);
// where the keys differ in order, the full comparison decides. Both must be dicts.
int dicts_equal(PyObject* dict, PyObject* copy) {
  if (PyDict_GET_SIZE(dict) != PyDict_GET_SIZE(copy)) return 0;
  Py_ssize_t pos_a = 0, pos_b = 0;
  PyObject *key_a, *value_a, *key_b, *value_b;
  while (PyDict_Next(dict, &pos_a, &key_a, &value_a)) {
    if (!PyDict_Next(copy, &pos_b, &key_b, &value_b) || key_a != key_b) {
      return PyObject_RichCompareBool(dict, copy, Py_EQ);
    }
    if (value_a == value_b) continue;
    Py_INCREF(value_a);  // the comparison may run Python code that edits the dict
    Py_INCREF(value_b);
    int equal = PyObject_RichCompareBool(value_a, value_b, Py_EQ);
    Py_DECREF(value_a);
    Py_DECREF(value_b);
    if (equal != 1) return equal;
    if (PyDict_GET_SIZE(dict) != PyDict_GET_SIZE(copy)) return 0;
  }
  return 1;
}

// One entry (module, dict copy, parameter ids, buffer ids, child ids, hooked).
Verdict entry_matches(PyObject* block, PyObject* entry) {
  if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 6) return kError;
  PyObject* module = PyTuple_GET_ITEM(entry, 0);
  PyObject* md = PyObject_GenericGetDict(module, nullptr);  // the instance dict, new reference
  if (md == nullptr) return kError;
  PyObject* copy = PyTuple_GET_ITEM(entry, 1);
  Verdict verdict = kSame;
  const int equal = PyDict_Check(md) && PyDict_Check(copy) ? dicts_equal(md, copy) : 0;
  if (equal != 1) {
    if (equal < 0) PyErr_Clear();  // an attribute compared by value raised: a change too
    verdict = kChanged;
  }
  for (int i = 0; i < 3 && verdict == kSame; ++i) {
    PyObject* d = PyDict_GetItemWithError(md, g_dict_names[i]);  // borrowed
    if (d == nullptr) {
      verdict = PyErr_Occurred() ? kError : kChanged;
    } else {
      verdict = same_ids(d, PyTuple_GET_ITEM(entry, 2 + i));
    }
  }
  if (verdict == kSame && module != block) {
    int hooked = has_hooks(md);
    int recorded = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 5));
    if (hooked < 0 || recorded < 0) {
      verdict = kError;
    } else if (hooked != recorded) {
      verdict = kChanged;
    }
  }
  Py_DECREF(md);
  return verdict;
}

}  // namespace

namespace fused_inception {

// snapshot_matches(block, entries) -> True | False | None (see the header comment).
PyObject* snapshot_matches(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyList_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "snapshot_matches(block, entries: list) expected");
    return nullptr;
  }
  if (!intern_names()) return nullptr;
  PyObject* block = args[0];
  PyObject* entries = args[1];
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); ++i) {
    switch (entry_matches(block, PyList_GET_ITEM(entries, i))) {
      case kSame:
        continue;
      case kChanged:
        Py_RETURN_FALSE;
      case kUndecided:
        Py_RETURN_NONE;
      case kError:
        if (!PyErr_Occurred()) {
          PyErr_SetString(PyExc_TypeError, "snapshot_matches: malformed snapshot entry");
        }
        return nullptr;
    }
  }
  Py_RETURN_TRUE;
}

}  // namespace fused_inception
