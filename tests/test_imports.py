"""Every module of the package imports on its own, in any order, and the imports form no cycle.

Three checks:
- each module of fused_inception (found by walking the source tree with pkgutil, subpackages
  included) is imported in a fresh interpreter, in a random order per seed, each seed in its
  own subprocess; any exception (an ImportError, a "partially initialized module" error of a
  circular import, ...) fails;
- the two command lines answer --help, and the console script names a function that exists;
- the package's internal import graph, read from the sources with ast (imports inside functions
  included, as they run when the function does), has no cycle but those in KNOWN_CYCLES.

Why both the runtime and the static check: importing any submodule runs fused_inception's
__init__ first, which imports its own submodules in a fixed order, so a random order exercises
only part of the possible first imports; the graph sees every edge, including the deferred
ones inside functions that an import alone never runs.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "fused_inception"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
REPO = PACKAGE_DIR.parent
SEEDS = (0, 1, 2, 3)

# Cycles allowed in the package's import graph (each a sorted tuple of the modules of one
# strongly connected component): none. The test fails on any cycle.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _walk(path: Path, prefix: str) -> Iterator[tuple[str, Path, bool]]:
    """(module name, file, is_package) of every Python source module below `path`.

    pkgutil.iter_modules lists a directory without importing anything (walk_packages would
    import every package to find its __path__, and so test imports before the test runs).
    Compiled extensions (_C) and __main__ modules (entry points: checked through --help) are
    left out.
    """
    for info in pkgutil.iter_modules([str(path)]):
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            yield name, path / info.name / "__init__.py", True
            yield from _walk(path / info.name, name)
        elif info.name != "__main__" and (path / f"{info.name}.py").exists():
            yield name, path / f"{info.name}.py", False


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (source file, is_package), the package itself included."""
    modules = {PACKAGE: (PACKAGE_DIR / "__init__.py", True)}
    modules.update({name: (file, ispkg) for name, file, ispkg in _walk(PACKAGE_DIR, PACKAGE)})
    return modules


# --------------------------------------------------------------------------------------------
# Importing every module in a fresh interpreter

_IMPORT_ALL = """
import importlib, random, sys, traceback
names = sys.argv[2:]
random.Random(int(sys.argv[1])).shuffle(names)
print("order:", " ".join(names))
failed = 0
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        failed += 1
        print(f"FAILED {name}:\\n{traceback.format_exc()}")
print("package:", sys.modules["fused_inception"].__file__)
sys.exit(1 if failed else 0)
"""


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    # From the repository root, so that this checkout's package is the one imported.
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_the_walk_finds_the_subpackages():
    modules = package_modules()
    for name in ("fused_inception.module", "fused_inception.backends.cpu"):
        assert name in modules
    for name in ("bench.cli", "bench.cases", "report.cli", "report.triton", "report.cuda"):
        assert f"{PACKAGE}.{name}" in modules
    assert not any(name.endswith("__main__") for name in modules)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_module_imports_in_a_fresh_interpreter(seed):
    proc = _run(["-c", _IMPORT_ALL, str(seed), *sorted(package_modules())])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert f"package: {PACKAGE_DIR / '__init__.py'}" in proc.stdout  # this checkout's


@pytest.mark.parametrize(
    "command",
    ["fused_inception.bench", "fused_inception.report", "fused_inception.train",
     "fused_inception.evaluate"],
)  # fmt: skip
def test_command_line_help(command):
    proc = _run(["-m", command, "--help"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"usage: python -m {command}" in proc.stdout


def test_console_script_target_exists():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["fused-inception-bench"].partition(":")
    proc = _run(["-c", f"import {module}; assert callable({module}.{function})"])
    assert proc.returncode == 0, proc.stderr[-3000:]


# --------------------------------------------------------------------------------------------
# The static import graph


def _binds(tree: ast.Module, name: str) -> bool:
    """Whether a module's top level defines `name` (so `from pkg import name` reads pkg)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:`: they never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _guards(tree: ast.Module) -> dict[int, dict[str, tuple[str, ...]]]:
    """id of each node under `if <name> in ("a", "b"):` -> {name: ("a", "b")}."""
    guards: dict[int, dict[str, tuple[str, ...]]] = {}
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        if (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.In)
            and isinstance(test.comparators[0], (ast.Tuple, ast.List, ast.Set))
        ):
            values = tuple(getattr(e, "value", None) for e in test.comparators[0].elts)
            if all(isinstance(v, str) for v in values):
                for stmt in node.body:
                    for inner in ast.walk(stmt):
                        guards.setdefault(id(inner), {})[test.left.id] = values
    return guards


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "string" assignments (KERNEL_PACKAGE = "fused_inception.triton")."""
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }


def _import_module_targets(
    call: ast.Call, name: str, package: str, guards: dict, constants: dict, modules: dict
) -> list[str]:
    """What an importlib.import_module(...) call can import, as far as the source says.

    A literal or module-constant name; `f".{var}"` against __name__/__package__ resolves to the
    values an enclosing `if var in (...)` allows, else to every submodule of that package (the
    backend registry's `_load(name)`). Other computed names are not seen.
    """
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called != "import_module" or not call.args:
        return []
    arg = call.args[0]
    anchor = name if modules[name][1] else package  # what __name__ / __package__ hold
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        names = [arg.value]
    elif isinstance(arg, ast.Name) and arg.id in constants:
        names = [constants[arg.id]]
    elif (
        isinstance(arg, ast.JoinedStr)
        and len(arg.values) == 2
        and getattr(arg.values[0], "value", None) == "."
        and isinstance(arg.values[1], ast.FormattedValue)
        and isinstance(arg.values[1].value, ast.Name)
    ):
        var = arg.values[1].value.id
        allowed = guards.get(id(call), {}).get(var)
        if allowed is None:
            prefix = f"{anchor}."
            allowed = tuple(
                m.removeprefix(prefix)
                for m in modules
                if m.startswith(prefix) and "." not in m.removeprefix(prefix)
            )
        names = [f".{value}" for value in allowed]
    else:
        return []
    return [f"{anchor}{n}" if n.startswith(".") else n for n in names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any depth of its code).

    `import a.b` and `from a.b import c` name a.b (and a.b.c where that is a module);
    `from pkg import name` names pkg.name if that is a module, else pkg itself, whose
    __init__ must have run to hand the name out. Relative imports are resolved against the
    importing module's package; importlib.import_module calls as _import_module_targets says.
    The implicit import of a module's parent packages is not an edge: Python initializes a
    parent before its child by design, and a child that reads a name from its parent's
    __init__ says so with an explicit import, which is an edge.
    """
    modules = package_modules()
    trees = {name: ast.parse(file.read_text(), str(file)) for name, (file, _) in modules.items()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in trees.items():
        package = name if modules[name][1] else name.rpartition(".")[0]
        skipped, guards, constants = _type_checking_only(tree), _guards(tree), _constants(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = []
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    if child in modules:
                        targets.append(child)
                    elif modules.get(base, (None, False))[1] and not _binds(
                        trees[base], alias.name
                    ):
                        continue  # a submodule that is not Python source: the compiled _C
                    else:
                        targets.append(base)
            elif isinstance(node, ast.Call):
                targets = _import_module_targets(node, name, package, guards, constants, modules)
            else:
                continue
            for target in targets:
                # `import a.b.c` where only a.b is ours (c an attribute): the deepest module.
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycle_finder_on_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": set()}
    assert cycles(graph) == [("a", "b", "c")]


def test_imports_inside_functions_and_through_importlib_are_edges():
    graph = import_graph()
    # backends/__init__.py imports fused_inception.triton and _ext inside functions, and each
    # backend through importlib.import_module(f".{name}", __name__).
    backends = graph["fused_inception.backends"]
    assert {"fused_inception.triton", "fused_inception._ext"} <= backends
    assert "fused_inception.backends.cpu" in backends
    # The package's __getattr__ loads only the names its `if name in (...)` allows.
    assert {"fused_inception.bench", "fused_inception.models"} <= graph[PACKAGE]
    assert "fused_inception.report" not in graph[PACKAGE]
    assert "fused_inception.backends" in graph["fused_inception.module"]
    assert "fused_inception.bench.cases" in graph["fused_inception.bench.cli"]
    # `from fused_inception import _C` names the compiled extension, not the package.
    assert PACKAGE not in graph["fused_inception._ext"]


def test_the_import_graph_is_acyclic():
    found = set(cycles(import_graph()))
    assert found - KNOWN_CYCLES == set(), f"import cycles: {sorted(found - KNOWN_CYCLES)}"
    assert KNOWN_CYCLES - found == set(), f"gone, drop from KNOWN_CYCLES: {KNOWN_CYCLES - found}"


if __name__ == "__main__":  # print the graph: python tests/test_imports.py
    for module, imported in sorted(import_graph().items()):
        print(module, "->", ", ".join(sorted(imported)) or "-")
    print("cycles:", cycles(import_graph()) or "none")
