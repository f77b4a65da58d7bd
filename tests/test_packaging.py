"""The source distribution builds the extension, and the wheel carries the package's data.

`pip install <sdist>` and `python -m build` (which builds the wheel from the sdist) compile
csrc/ from the sdist's files alone, so a header that setuptools leaves out breaks every install
that is not from a checkout. The sdist is built here with the PEP 517 hook pip and build call,
then:
- every source file under csrc/ (headers, .cu kernels, emulated sources), the C++ test programs,
  the benchmarks, docs and set-up scripts is in it, as is the autotuner's table;
- an emulated kernel source compiles (syntax only) from the unpacked sdist, which catches a
  missing header the file list could miss;
- build_py (what a wheel's Python part is made of) copies the autotuner's table.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import native
import pytest

REPO = Path(__file__).resolve().parent.parent
# Directories the sdist must hold whole, and single files.
SHIPPED_TREES = ("csrc", "tests", "benchmarks", "docs", "scripts")
SHIPPED_FILES = (
    "README.md",
    "LICENSE",
    "setup.py",
    "pyproject.toml",
    "fused_inception/triton/tuning_table.json",
)
_SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".benchmarks"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo", ".so", ".o"}


def _expected_files() -> set[str]:
    files = set(SHIPPED_FILES)
    for tree in SHIPPED_TREES:
        for path in (REPO / tree).rglob("*"):
            rel = path.relative_to(REPO)
            if (
                path.is_file()
                and not _SKIPPED_PARTS.intersection(rel.parts)
                and path.suffix not in _SKIPPED_SUFFIXES
            ):
                files.add(rel.as_posix())
    return files


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory) -> Path:
    """A copy of the checkout without build outputs: setuptools adds every file that an old
    *.egg-info/SOURCES.txt lists to a new sdist, which would hide a gap in MANIFEST.in."""
    tree = tmp_path_factory.mktemp("checkout") / "fused_inception"
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "*.so", "*.o", "*.pyc", *_SKIPPED_PARTS
    )
    shutil.copytree(REPO, tree, ignore=ignore)
    return tree


@pytest.fixture(scope="module")
def sdist(clean_tree: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    code = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=clean_tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out / result.stdout.strip().splitlines()[-1]


def _members(archive: Path) -> tuple[str, set[str]]:
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    root = names[0].split("/", 1)[0]
    return root, {n.split("/", 1)[1] for n in names if "/" in n}


def test_sdist_holds_every_source_the_build_and_tests_need(sdist: Path) -> None:
    _, members = _members(sdist)
    expected = _expected_files()
    assert any(f.endswith(".h") for f in expected) and any(f.endswith(".cu") for f in expected)
    missing = sorted(expected - members)
    assert not missing, f"{len(missing)} files missing from {sdist.name}: {missing[:20]}"
    stray = sorted(m for m in members if m.endswith((".so", ".o", ".pyc")))
    assert not stray, f"build artefacts in {sdist.name}: {stray[:20]}"


def test_an_emulated_kernel_compiles_from_the_unpacked_sdist(sdist: Path, tmp_path: Path) -> None:
    reason = native.missing_reason()
    if reason is not None:
        pytest.skip(reason)
    root, _ = _members(sdist)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    tree = tmp_path / root
    sources = sorted((tree / "csrc" / "emulated").glob("*.cpp"))
    assert sources, "no csrc/emulated/*.cpp in the sdist"
    cmd = [
        native.compiler(),
        "-std=c++20",
        "-fsyntax-only",
        f"-I{tree / 'csrc'}",
        f"-isystem{native.CUDA_HOME / 'include'}",
        str(tree / "csrc" / "emulated" / "block_kxk.cpp"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def test_build_py_copies_the_tuning_table(clean_tree: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path)],
        cwd=clean_tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    table = tmp_path / "fused_inception" / "triton" / "tuning_table.json"
    assert table.is_file(), sorted(p.name for p in (tmp_path / "fused_inception").iterdir())
    assert table.read_bytes() == (REPO / "fused_inception/triton/tuning_table.json").read_bytes()
