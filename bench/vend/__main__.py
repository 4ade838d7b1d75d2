"""`python -m bench.vend` (and `python -m bench.vend_bench`): run the vend benchmark."""

import sys

from bench.vend.cli import main

if __name__ == "__main__":
    sys.exit(main())
