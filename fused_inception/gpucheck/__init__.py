"""The GPU check: validate and benchmark everything on a real GPU with one command.

    python -m fused_inception.gpucheck [--quick] [--out DIR] [--work-json PATH]

Stages, each timed against the run's budget (8 minutes, --quick 3; budget.py):
- env:       device, driver, torch / triton / CUDA versions, what the build holds (env.py);
- parity:    every GoogLeNet block on the triton and cuda backends, fp32 / fp16 / bf16, NCHW and
             channels_last, torchvision's and the paper's form, against float64 references with
             NaN-poisoned outputs; one gradient check per backend; a second-GPU check (parity.py);
- sanitizer: a child process (`--sanitizer-child`) under compute-sanitizer's memcheck,
             racecheck, synccheck and initcheck, each kernel once on a small block
             (sanitizer.py);
- graph:     a fused torchvision GoogLeNet captured in a CUDA graph, replay against eager
             (graph.py);
- bench:     the benchmark's cases (fused_inception.bench) beside the work report's roofline
             MODEL (bench.py);
then JSON and summary.md into DIR (summary.py). Every part takes its device as an argument, so
the tests run them on CPU tensors (Triton's interpreter, the SIMT shim) at tiny sizes.

Exit status (EXIT_*): 0 every check passed; 1 a parity, gradient, graph or sanitizer check
failed; 2 bad arguments (argparse); 3 no CUDA device (nothing was done).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DEVICE = 3

__all__ = ["EXIT_FAILED", "EXIT_NO_DEVICE", "EXIT_OK", "EXIT_USAGE"]
