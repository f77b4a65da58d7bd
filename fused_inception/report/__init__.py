"""Ahead-of-time resource report: compile every kernel build for real GPUs, without a GPU.

    python -m fused_inception.report --help

Compiles every kernel of both GPU backends for sm_80 and sm_90 and prints one record per
(build, arch): registers, shared memory, local memory (spills), tensor-core use; exits 1 if any
build fails to compile, spills, is 16-bit without tensor cores or needs more shared memory than
the arch allows. CI runs it.

Modules, in the order they import each other (no cycle; this file imports none of them):
- records: the record fields, their checks, the request, cuobjdump: what both compilers share;
- specialization: what Triton's JIT compiles for the launches of real forwards (captured);
- triton:  the Triton builds (those specializations, and the configs of `aot_builds()` of
           fused_inception.triton that no launch uses), with triton.compile;
- cuda:    the CUDA C++ kernels (csrc/cuda/*.cu), with nvcc -cubin -Xptxas -v;
- cli:     the providers of both, arguments, the printed table, JSON, main.
"""
