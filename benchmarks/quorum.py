"""Runnable wrapper of the quorum suite: ``python benchmarks/quorum.py --quick --out bench-out``.

Same flags as ``zkv bench`` (see ``zkv/bench/__init__.py``); works from a source checkout
without installing the CLI.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    # the zkv-node processes the suite starts must import this checkout too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        x for x in (root, os.environ.get("PYTHONPATH")) if x)
    from zkv.bench import main

    sys.exit(main(sys.argv[1:]))
