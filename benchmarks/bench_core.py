"""Core micro-benchmarks (issue 2), each beside a baseline measured in the same run:
ring lookup of one key and of batches (vs mmh3), DVV sync/update/codec (vs dict.copy and
msgspec), Merkle leaf update, rebuild and diff (vs mmh3.hash128 and blake3). The table of
ratios is printed by benchmarks/conftest.py.

    python -m pytest benchmarks/bench_core.py --benchmark-only -q

The benchmarks themselves live beside the core module they measure (core_ring.py,
core_dvv.py, core_merkle.py); this file gathers them so one command runs them all.
"""

from core_dvv import *  # noqa: F403
from core_merkle import *  # noqa: F403
from core_ring import *  # noqa: F403
