"""`python -m zkv.node ...` is `zkv-node ...` (used where the console script is not on PATH)."""

import sys

from zkv.cli import node_main

sys.exit(node_main())
