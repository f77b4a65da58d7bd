#!/usr/bin/env bash
# Set up a fresh machine: torch + torchvision (the pinned CUDA builds that pip takes from this
# machine's disk), the build tools, then fused_inception itself (editable, with its test
# extras). --no-build-isolation makes the build use the torch installed here instead of
# downloading or copying a second one. Safe to run again: satisfied requirements are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" \
    "setuptools>=77" wheel ninja pybind11

# torch's cpp_extension finds nvcc through CUDA_HOME; the toolkit lives here on these machines.
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then
    export CUDA_HOME=/usr/local/cuda
fi
"$PYTHON" -m pip install --quiet --no-build-isolation -e ".[test]"
"$PYTHON" -c "import fused_inception._ext as e; assert e.has_extension(), e.extension_error()"
echo "fused_inception installed: backends $("$PYTHON" -c \
    'import fused_inception; print(fused_inception.available_backends())')"
