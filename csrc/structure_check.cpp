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
//
// With `tags` (snapshot_tags, taken with the snapshot) it first reads the version tags of the
// dicts those comparisons read: each module's __dict__, and the _parameters, _buffers,
// _modules and hook dicts bound in it. CPython gives a dict a new, process-wide unique tag on
// every change (PEP 509: insertion, deletion, a value replaced by another object), so where
// every module still has the same __dict__ with the same tag, and every dict the same tag,
// nothing the comparisons read has changed and the answer is True; otherwise the comparisons
// below decide (a tag also moves on changes they count as none, e.g. an attribute rebound to
// an equal value). Inside a network every check runs with cold caches, and the comparisons
// touch each module's dict entries, their copies and the recorded ids, against ten objects per
// module for the tags (the entry, the module, its __dict__ and the seven dicts bound in it).
// CPython 3.12 deprecated the tag, so snapshot_tags returns None from 3.12 on and the
// comparisons alone decide there.

#include <Python.h>

#include <cstdint>

namespace {

// Interned attribute names, made once.
constexpr int kDictNames = 3, kHookNames = 4;
PyObject* g_dict_names[kDictNames];  // "_parameters", "_buffers", "_modules"
PyObject* g_hook_names[kHookNames];  // "_forward_hooks", "_forward_pre_hooks", ...
bool g_interned = false;

bool intern_names() {
  if (g_interned) return true;
  const char* dicts[kDictNames] = {"_parameters", "_buffers", "_modules"};
  const char* hooks[kHookNames] = {"_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                   "_backward_pre_hooks"};
  for (int i = 0; i < kDictNames; ++i) {
    g_dict_names[i] = PyUnicode_InternFromString(dicts[i]);
    if (g_dict_names[i] == nullptr) return false;
  }
  for (int i = 0; i < kHookNames; ++i) {
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
  for (int i = 0; i < kDictNames && verdict == kSame; ++i) {
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

// snapshot_tags' record of one module: the module, its __dict__ and that dict's tag, then a
// (dict, tag) pair for each of _parameters, _buffers, _modules and the four hook dicts bound
// in it ((0, 0) where the name is not bound).
constexpr int kTagged = kDictNames + kHookNames;
struct TagRecord {
  uint64_t module, dict, dict_tag;
  uint64_t sub[kTagged][2];
};

#if PY_VERSION_HEX < 0x030C0000
uint64_t dict_tag(PyObject* dict) { return reinterpret_cast<PyDictObject*>(dict)->ma_version_tag; }

// The records of `entries`' modules as bytes, or None (no tags: a __dict__ or bound dict that is
// not a dict).
PyObject* make_tags(PyObject* entries) {
  const Py_ssize_t n = PyList_GET_SIZE(entries);
  PyObject* out =
      PyBytes_FromStringAndSize(nullptr, n * static_cast<Py_ssize_t>(sizeof(TagRecord)));
  if (out == nullptr) return nullptr;
  auto* records = reinterpret_cast<TagRecord*>(PyBytes_AS_STRING(out));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* entry = PyList_GET_ITEM(entries, i);
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 1) {
      Py_DECREF(out);
      Py_RETURN_NONE;
    }
    PyObject* module = PyTuple_GET_ITEM(entry, 0);
    PyObject* md = PyObject_GenericGetDict(module, nullptr);  // new reference
    if (md == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    TagRecord& r = records[i];
    r = TagRecord{};
    r.module = reinterpret_cast<uint64_t>(module);
    r.dict = reinterpret_cast<uint64_t>(md);
    bool ok = PyDict_Check(md);
    if (ok) r.dict_tag = dict_tag(md);
    for (int k = 0; k < kTagged && ok; ++k) {
      PyObject* name = k < kDictNames ? g_dict_names[k] : g_hook_names[k - kDictNames];
      PyObject* d = PyDict_GetItemWithError(md, name);  // borrowed
      if (d == nullptr) {
        ok = !PyErr_Occurred();
        continue;
      }
      ok = PyDict_Check(d);
      if (ok) {
        r.sub[k][0] = reinterpret_cast<uint64_t>(d);
        r.sub[k][1] = dict_tag(d);
      }
    }
    Py_DECREF(md);
    if (!ok) {
      Py_DECREF(out);
      if (PyErr_Occurred()) return nullptr;
      Py_RETURN_NONE;
    }
  }
  return out;
}

// Whether every record still holds: the entry's module, its __dict__ the same dict with the
// same tag, and each dict bound in it the same tag. The dicts a record names are alive while
// the first comparisons hold: the module's __dict__ (the entries hold the module) has not
// changed since they were bound in it. -1: an error.
int tags_hold(PyObject* entries, PyObject* tags) {
  const Py_ssize_t n = PyList_GET_SIZE(entries);
  if (!PyBytes_Check(tags) ||
      PyBytes_GET_SIZE(tags) != n * static_cast<Py_ssize_t>(sizeof(TagRecord))) {
    return 0;
  }
  const auto* records = reinterpret_cast<const TagRecord*>(PyBytes_AS_STRING(tags));
  for (Py_ssize_t i = 0; i < n; ++i) {
    const TagRecord& r = records[i];
    PyObject* entry = PyList_GET_ITEM(entries, i);
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 1) return 0;
    PyObject* module = PyTuple_GET_ITEM(entry, 0);
    if (reinterpret_cast<uint64_t>(module) != r.module) return 0;
    PyObject* md = PyObject_GenericGetDict(module, nullptr);  // new reference
    if (md == nullptr) return -1;
    const bool same =
        reinterpret_cast<uint64_t>(md) == r.dict && PyDict_Check(md) && dict_tag(md) == r.dict_tag;
    Py_DECREF(md);
    if (!same) return 0;
    for (const auto& sub : r.sub) {
      if (sub[0] != 0 && dict_tag(reinterpret_cast<PyObject*>(sub[0])) != sub[1]) return 0;
    }
  }
  return 1;
}
#else
PyObject* make_tags(PyObject* /*entries*/) { Py_RETURN_NONE; }
int tags_hold(PyObject* /*entries*/, PyObject* /*tags*/) { return 0; }
#endif

}  // namespace

namespace fused_inception {

// snapshot_tags(entries) -> bytes | None (see the header comment).
PyObject* snapshot_tags(PyObject* /*self*/, PyObject* entries) {
  if (!PyList_Check(entries)) {
    PyErr_SetString(PyExc_TypeError, "snapshot_tags(entries: list) expected");
    return nullptr;
  }
  if (!intern_names()) return nullptr;
  return make_tags(entries);
}

// snapshot_matches(block, entries, tags=None) -> True | False | None (see the header comment).
PyObject* snapshot_matches(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 2 || nargs > 3 || !PyList_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "snapshot_matches(block, entries: list, tags=None) expected");
    return nullptr;
  }
  if (!intern_names()) return nullptr;
  PyObject* block = args[0];
  PyObject* entries = args[1];
  if (nargs == 3 && args[2] != Py_None) {
    const int hold = tags_hold(entries, args[2]);
    if (hold < 0) return nullptr;
    if (hold == 1) Py_RETURN_TRUE;
  }
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
