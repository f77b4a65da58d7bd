#!/usr/bin/env bash
# On a GPU machine (no network needed): build fused_inception in place for this GPU only, then
# run `python -m fused_inception.gpucheck` into OUTDIR.
#
#   bash scripts/gpu_check.sh [--quick] OUTDIR
#
# Needs what is already installed there: torch >= 2.6 with CUDA, triton >= 3.2, setuptools,
# wheel, ninja, pybind11 and nvcc (CUDA_HOME, else /usr/local/cuda, else nvcc on PATH). Nothing
# is downloaded: `setup.py build_ext --inplace` builds against the torch installed there (as
# `pip install --no-deps --no-build-isolation -e .` would) and PYTHONPATH puts this checkout
# first, so the check imports this build whatever else is installed. The build's output
# goes to OUTDIR/build.log; the check writes OUTDIR/gpucheck.json, OUTDIR/summary.md and the
# sanitizer logs. Exit status: the build's if it fails, else the check's (0 pass, 1 a check
# failed, 3 no CUDA device).
set -euo pipefail

usage() { echo "usage: bash scripts/gpu_check.sh [--quick] OUTDIR" >&2; exit 2; }
QUICK=()
OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=(--quick) ;;
        -h|--help) usage ;;
        -*) echo "gpu_check.sh: unknown option $arg" >&2; usage ;;
        *) [[ -z "$OUTDIR" ]] || usage; OUTDIR=$arg ;;
    esac
done
[[ -n "$OUTDIR" ]] || usage

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/build.log"

if ! ARCH=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' \
        2>>"$LOG"); then
    echo "gpu_check.sh: torch sees no CUDA device (see $LOG); nothing built" >&2
    exit 3
fi
if [[ -z "${CUDA_HOME:-}" ]]; then
    if [[ -x /usr/local/cuda/bin/nvcc ]]; then
        export CUDA_HOME=/usr/local/cuda
    elif command -v nvcc >/dev/null; then
        CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
        export CUDA_HOME
    fi
fi
export TORCH_CUDA_ARCH_LIST="$ARCH"   # this GPU only: one build per kernel, not two archs
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

{
    echo "== $(date -u +%FT%TZ) building for sm_${ARCH/./} (TORCH_CUDA_ARCH_LIST=$ARCH," \
        "MAX_JOBS=$MAX_JOBS, CUDA_HOME=${CUDA_HOME:-unset})"
    "$PYTHON" --version
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
    "${CUDA_HOME:+$CUDA_HOME/bin/}nvcc" --version || echo "nvcc not found"
} >>"$LOG" 2>&1

echo "building fused_inception in place for sm_${ARCH/./} (log: $LOG) ..."
start=$SECONDS
if ! "$PYTHON" setup.py build_ext --inplace >>"$LOG" 2>&1; then
    echo "gpu_check.sh: the build failed; the end of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
fi
echo "built in $((SECONDS - start)) s"
# The in-place build is imported from this checkout, whatever else is installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import fused_inception._ext as e; assert e.has_extension(), e.extension_error()' \
    >>"$LOG" 2>&1 || { echo "gpu_check.sh: the extension does not load (see $LOG)" >&2; exit 1; }

set +e
"$PYTHON" -m fused_inception.gpucheck ${QUICK[@]+"${QUICK[@]}"} --out "$OUTDIR"
status=$?
set -e
echo "gpu_check.sh: exit status $status; summary in $OUTDIR/summary.md"
exit $status
