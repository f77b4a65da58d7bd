"""`python -m fused_inception.report`: the report's command line (fused_inception.report.cli)."""

from __future__ import annotations

import sys

from fused_inception.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
