"""`python -m credbroker`: the command line (what `serve --workers N` starts each worker with)."""

import sys

from credbroker.cli import main

sys.exit(main())
