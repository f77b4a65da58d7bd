"""python -m fused_inception.gpucheck: see fused_inception/gpucheck/__init__.py."""

import sys

from fused_inception.gpucheck.cli import main

if __name__ == "__main__":
    sys.exit(main())
