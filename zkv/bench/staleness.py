"""Measured staleness: did a read miss the latest acknowledged write of its key?

The PBS view (Bailis et al., "Probabilistically Bounded Staleness for Practical Partial
Quorums", VLDB 2012): with R + W <= N a read may miss a write that was already acknowledged,
and the chance falls with the time since that write. Here it is measured, not modelled. Every
write is logged as (key, write id, start, ack) and every read as (key, start, write ids it
returned, tag); times come from one monotonic clock shared by the processes of one machine.

For a read that starts at time t, the *latest acknowledged write* L is the write of that key
with the greatest ack time < t. The read is **stale** when everything it returned is older
than L in real time: each returned write was acknowledged before L even started, or is not a
write of this run (or the read found nothing). A returned write that overlapped L in time, or
was never acknowledged (it may have been stored anyway), may causally follow L (its context
may cover L, since zkv retires covered versions), so it counts as fresh: staleness is never
over-reported, and with R + W > N it must be 0. Reads of keys with no acknowledged write
before they started are not counted. The time since the write is t - ack(L); results are
bucketed on it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

# upper edges (ms) of the time-since-write buckets; the last bucket is open-ended
DEFAULT_EDGES_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class StalenessTracker:
    """Collects write and read events, then classifies reads (``analyze``)."""

    def __init__(self) -> None:
        # key -> sorted list of (ack, start, wid) for acknowledged writes
        self._acked: dict[object, list[tuple[float, float, int]]] = {}
        self._writes: dict[int, tuple[float, float | None]] = {}  # wid -> (start, ack|None)
        self._reads: list[tuple[object, float, tuple[int, ...], object]] = []
        self._sorted = True

    def add_write(self, key, wid: int, start: float, ack: float | None) -> None:
        """A write of ``key`` with id ``wid``; ``ack`` None when it was never acknowledged."""
        self._writes[wid] = (start, ack)
        if ack is not None:
            self._acked.setdefault(key, []).append((ack, start, wid))
            self._sorted = False

    def add_read(self, key, start: float, wids: Iterable[int], tag=None) -> None:
        """A successful read of ``key`` that began at ``start`` and returned these write ids."""
        self._reads.append((key, start, tuple(wids), tag))

    def add_events(self, writes: Iterable[Sequence], reads: Iterable[Sequence], tag=None) -> None:
        """Bulk form: writes as (key, wid, start, ack|None), reads as (key, start, wids)."""
        for key, wid, start, ack in writes:
            self.add_write(key, wid, start, ack)
        for key, start, wids in reads:
            self.add_read(key, start, wids, tag)

    def _sort(self) -> None:
        if not self._sorted:
            for lst in self._acked.values():
                lst.sort()
            self._sorted = True

    def classify(self, key, start: float, wids: Sequence[int]) -> tuple[bool, float] | None:
        """(stale?, seconds since the latest acknowledged write), or None if there was none."""
        self._sort()
        acked = self._acked.get(key)
        if not acked:
            return None
        i = bisect.bisect_left(acked, (start, -float("inf"), -1)) - 1
        if i < 0:
            return None
        l_ack, l_start, l_wid = acked[i]
        for wid in wids:
            if wid == l_wid:
                return False, start - l_ack
            w = self._writes.get(wid)
            if w is None:
                continue  # not written by this run: older than anything tracked
            w_ack = w[1]
            if w_ack is None or w_ack >= l_start:
                return False, start - l_ack
        return True, start - l_ack

    def analyze(self, tag=None, edges_ms: Sequence[float] = DEFAULT_EDGES_MS) -> dict:
        """Stale fraction overall and per time-since-write bucket, for reads with this tag."""
        buckets = [[0, 0] for _ in range(len(edges_ms) + 1)]  # [reads, stale]
        reads = stale = skipped = 0
        for key, start, wids, t in self._reads:
            if t != tag:
                continue
            got = self.classify(key, start, wids)
            if got is None:
                skipped += 1
                continue
            is_stale, since = got
            b = bisect.bisect_right(edges_ms, since * 1e3)
            buckets[b][0] += 1
            reads += 1
            if is_stale:
                buckets[b][1] += 1
                stale += 1
        rows = []
        lo = 0.0
        for i, (n, s) in enumerate(buckets):
            hi = edges_ms[i] if i < len(edges_ms) else None
            rows.append({"lo_ms": lo, "hi_ms": hi, "reads": n, "stale": s,
                         "fraction": (s / n) if n else None})
            lo = hi if hi is not None else lo
        return {"reads": reads, "stale": stale, "fraction": (stale / reads) if reads else None,
                "uncounted": skipped, "buckets": rows}
