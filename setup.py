"""Build script for fused_inception's compiled extension `fused_inception._C`.

- C++ sources (csrc/*.cpp, csrc/cpu/*.cpp) are always built.
- The CUDA kernels (csrc/cuda/*.cu) are built twice when possible:
  - with nvcc for the GPU, when nvcc and a CUDA build of torch are present, unless
    FUSED_INCEPTION_SKIP_CUDA=1. No GPU is needed: TORCH_CUDA_ARCH_LIST is honoured and
    defaults to "8.0;9.0+PTX" when no GPU is visible: sm_80 and sm_90 code, plus sm_90 PTX that
    the driver compiles for newer GPUs (sm_100, sm_120), which would otherwise get "no kernel
    image is available" (e.g. TORCH_CUDA_ARCH_LIST="8.6;8.9+PTX").
  - as plain C++ against the SIMT shim (csrc/emulated/*.cpp include the .cu files), so that
    the CPU can execute them (FUSED_INCEPTION_EMULATE_CUDA=1 at run time); this needs only
    the CUDA headers (cuda_fp16.h, cuda_bf16.h) under CUDA_HOME, not a GPU or nvcc.
Install with `pip install --no-build-isolation .` so the build uses the torch already installed.
"""

from __future__ import annotations

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


# nvcc flags of the CUDA kernels; fused_inception/report/cuda.py compiles them with the same ones.
NVCC_FLAGS = ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _extension():
    import torch
    from torch.utils import cpp_extension

    cpp_sources = sorted(
        glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
    )
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    include_dirs = [os.path.join(ROOT, "csrc")]
    define_macros = []
    cuda_home = cpp_extension.CUDA_HOME
    if cuda_home and os.path.exists(os.path.join(cuda_home, "include", "cuda_fp16.h")):
        cpp_sources += sorted(glob.glob(os.path.join("csrc", "emulated", "*.cpp")))
        include_dirs.append(os.path.join(cuda_home, "include"))
        define_macros.append(("FUSED_INCEPTION_WITH_EMULATION", "1"))
    use_cuda = (
        bool(cuda_sources)
        and not _env_flag("FUSED_INCEPTION_SKIP_CUDA")
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
    )
    # -fopenmp: at::parallel_for (the CPU operators' loops over images and chunks) is an OpenMP
    # loop compiled into this extension; without the flag it silently runs on one thread. The
    # library it links, libgomp.so.1, is the one torch has already loaded (same soname).
    cxx_flags = ["-O3", "-std=c++20", "-pthread", "-fopenmp"]
    # No debug information unless asked for (FUSED_INCEPTION_DEBUG_INFO=1): Python's CFLAGS
    # carry -g, which with torch's and pybind11's headers cost a quarter of the C++ build's time
    # and most of the extension's size, for the same machine code (README "Building the CUDA
    # kernels" has the measurement). perf and gdb still name the functions.
    if not _env_flag("FUSED_INCEPTION_DEBUG_INFO"):
        cxx_flags.append("-g0")
    link_flags = ["-fopenmp"]
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        return cpp_extension.CUDAExtension(
            "fused_inception._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=define_macros + [("FUSED_INCEPTION_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": NVCC_FLAGS},
            extra_link_args=link_flags,
        )
    return cpp_extension.CppExtension(
        "fused_inception._C",
        cpp_sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(ext_modules=[_extension()], cmdclass={"build_ext": _build_ext()})
