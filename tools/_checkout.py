"""Which zkv the tools import: the checkout's own only where its compiled core is built in
place (`pip install -e`, `setup.py build_ext --inplace`); after `pip install .` the installed
one (the checkout's sources have no compiled core). Imported before zkv by each tool."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if any(f.endswith((".so", ".pyd")) for f in os.listdir(os.path.join(ROOT, "zkv", "_core"))):
    sys.path.insert(0, ROOT)
