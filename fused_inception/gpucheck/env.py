"""What the check runs on: device, driver, versions, and what this build of the package holds."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess

import torch

from fused_inception import __version__, _ext
from fused_inception.backends import available_backends, cuda_kernel_builds


def _dist_version(name: str) -> str | None:
    try:  # the installed metadata: importing triton only for its version costs a second
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi, or None where it cannot be asked."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.split()
    return lines[0] if proc.returncode == 0 and lines else None


def gpu_info(index: int) -> dict:
    """Name, compute capability, SMs and memory of CUDA device `index`."""
    p = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": p.name,
        "capability": f"{p.major}.{p.minor}",
        "sms": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1),
    }


def environment(device: torch.device) -> dict:
    """Versions, device(s) and build contents, as the JSON's "environment"."""
    info = {
        "fused_inception": __version__,
        "package_path": __file__.rsplit("/gpucheck/", 1)[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _dist_version("torchvision"),
        "triton": _dist_version("triton"),
        "cuda_torch_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "driver": None,
        "gpus": [],
        "extension_loaded": _ext.has_extension(),
        "extension_error": _ext.extension_error(),
        "cuda_kernel_builds": list(cuda_kernel_builds()),
        "available_backends": available_backends(),
    }
    if device.type == "cuda":
        info["driver"] = driver_version()
        info["gpus"] = [gpu_info(i) for i in range(torch.cuda.device_count())]
    return info


def environment_lines(info: dict) -> list[str]:
    """The environment as printed at the start of the run and in summary.md."""
    versions = " | ".join(
        f"{name} {info[key] or 'absent'}"
        for name, key in (
            ("fused_inception", "fused_inception"),
            ("python", "python"),
            ("torch", "torch"),
            ("torchvision", "torchvision"),
            ("triton", "triton"),
            ("CUDA (torch build)", "cuda_torch_build"),
            ("cuDNN", "cudnn"),
            ("driver", "driver"),
        )
    )
    lines = [versions, f"package: {info['package_path']}", f"device: {info['device']}"]
    lines += [
        f"  cuda:{g['index']} {g['name']} (sm_{g['capability'].replace('.', '')}, "
        f"{g['sms']} SMs, {g['memory_gib']:g} GiB)"
        for g in info["gpus"]
    ]
    ext = "loaded" if info["extension_loaded"] else f"NOT loaded ({info['extension_error']})"
    lines.append(
        f"build: fused_inception._ext {ext}; cuda_kernel_builds() = "
        f"{tuple(info['cuda_kernel_builds'])}; available_backends() = "
        f"{info['available_backends']}"
    )
    return lines
