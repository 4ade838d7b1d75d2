"""The vend benchmark's entry point: `.venv/bin/python -m bench.vend_bench [flags]`.

The benchmark itself is the bench/vend/ package (see its docstring and bench/README.md);
`python -m bench.vend` runs the same thing.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/vend_bench.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO_ROOT))

from bench.vend.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
