"""`python -m fused_inception.bench`: the benchmark's command line (fused_inception.bench.cli)."""

from __future__ import annotations

import sys

from fused_inception.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
