"""A fused torchvision GoogLeNet captured in a CUDA graph: replays must equal eager calls.

The model is torchvision's GoogLeNet (random weights and BN statistics, eval mode, the
benchmark's network case) with every block swapped by fuse_inception for one backend. After
warm-up forwards on a side stream (kernel compiles, autotuning, the BN fold) one forward is
captured; the graph is then replayed on two new inputs copied into its static input, and each
replay's output is compared with an eager forward of the same input. CUDA only.
"""

from __future__ import annotations

import copy
import warnings

import torch

from fused_inception.bench.cases import IMAGE_HW, dtype_name, eager_network
from fused_inception.gpucheck.parity import compare, guarded
from fused_inception.swap import fuse_inception

WARMUP = 3


def _capture_and_compare(backend: str, device: torch.device, dtype, batch: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fuse_inception(copy.deepcopy(eager_network(gen)), backend=backend)
    model = model.to(device=device, dtype=dtype, memory_format=torch.channels_last)

    def image() -> torch.Tensor:
        x = torch.randn(batch, 3, IMAGE_HW, IMAGE_HW, generator=gen)
        return x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)

    static_x = image()
    with torch.no_grad(), torch.cuda.device(device):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                model(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        worst, bitwise = None, True
        for replay in range(2):
            x = image()
            static_x.copy_(x)
            graph.replay()
            torch.cuda.synchronize(device)
            replayed = static_out.clone()
            eager = model(x)
            result = compare(replayed, eager.double(), dtype)
            if not result["ok"]:
                return {**result, "detail": f"replay {replay + 1}: {result['detail']}"}
            bitwise = bitwise and torch.equal(replayed, eager)
            if worst is None or result["max_abs_err"] > worst["max_abs_err"]:
                worst = result
    return {
        **worst,
        "bitwise_equal": bitwise,
        "detail": f"2 replays {'bitwise equal to' if bitwise else 'within tolerance of'} eager; "
        + worst["detail"],
    }


def check_graph(
    backend: str, device: torch.device, dtype: torch.dtype = torch.float16, batch: int = 8
) -> dict:
    """Capture the fused GoogLeNet on `backend` and compare two replays with eager forwards."""
    name = f"GoogLeNet fused {backend} {dtype_name(dtype)} channels_last batch {batch}"
    if device.type != "cuda":
        return {"stage": "graph", "name": name, "ok": None, "detail": "skipped: not a CUDA device"}
    return guarded("graph", name, lambda: _capture_and_compare(backend, device, dtype, batch))
