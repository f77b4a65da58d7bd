"""Build script for fused_inception's compiled extension `fused_inception._C`.

C++ sources (csrc/*.cpp, csrc/cpu/*.cpp) are always built. CUDA sources (csrc/cuda/*.cu) are
added when nvcc and a CUDA build of torch are present, unless FUSED_INCEPTION_SKIP_CUDA=1.
No GPU is needed to build: TORCH_CUDA_ARCH_LIST is honoured and defaults to "8.0;9.0".
Install with `pip install --no-build-isolation .` so the build uses the torch already installed.
"""

from __future__ import annotations

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _extension():
    import torch
    from torch.utils import cpp_extension

    cpp_sources = sorted(
        glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
    )
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    use_cuda = (
        bool(cuda_sources)
        and not _env_flag("FUSED_INCEPTION_SKIP_CUDA")
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
    )
    cxx_flags = ["-O3", "-std=c++20"]
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        return cpp_extension.CUDAExtension(
            "fused_inception._C",
            cpp_sources + cuda_sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=[("FUSED_INCEPTION_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
        )
    return cpp_extension.CppExtension(
        "fused_inception._C",
        cpp_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
    )


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(ext_modules=[_extension()], cmdclass={"build_ext": _build_ext()})
