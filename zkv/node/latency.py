"""Per-peer round-trip times and the per-replica soft timeout derived from them.

A coordinator waits for each replica only as long as that replica usually takes (a high
percentile of its recent round trips times a factor), never less than a floor and never more
than a fraction of the request's remaining time; past that, the replica counts as silent and
a stand-in is asked too (see coordinator.py). Pure bookkeeping: times are given, not read.
"""

from __future__ import annotations

from collections import deque

WINDOW = 64  # round trips remembered per peer
FACTOR = 4.0  # budget = FACTOR x the high percentile of recent round trips ...
FLOOR = 0.1  # ... but at least this many seconds (scheduling noise on a busy host) ...
CEILING = 0.5  # ... and at most this fraction of the request's remaining time
REFRESH = 16  # recompute a peer's percentile every REFRESH samples


class PeerLatency:
    __slots__ = ("samples", "seen", "high", "base")

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {}
        self.seen: dict[str, int] = {}
        self.high: dict[str, float] = {}  # node -> cached high percentile (seconds)
        self.base: dict[str, float] = {}  # node -> its budget before the CEILING cap (asked
        # per replica request: worked out when the percentile is, not per call)

    def observe(self, node: str, rtt: float) -> None:
        d = self.samples.get(node)
        if d is None:
            d = self.samples[node] = deque(maxlen=WINDOW)
        d.append(rtt)
        n = self.seen[node] = self.seen.get(node, 0) + 1
        if n <= 4 or n % REFRESH == 0:
            count = len(d)
            if count <= 100:  # the 99th percentile of at most 100 samples is the largest
                high = max(d)  # (index count - 1 of them sorted: no sort per refresh)
            else:
                high = sorted(d)[min(count - 1, int(count * 0.99))]
            self.high[node] = high
            self.base[node] = max(FLOOR, FACTOR * high)

    def budget(self, node: str, remaining: float) -> float:
        """Seconds to wait for `node` before asking a stand-in."""
        b = self.base.get(node, FLOOR)
        cap = CEILING * remaining
        if b <= cap:
            return b
        return cap if cap > 0.0 else 0.0

