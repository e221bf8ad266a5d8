"""Hottest keys of one node in bounded memory: the Misra-Gries frequent-items summary.

A node sees an unbounded stream of keys; counting each exactly would grow without bound.
Misra and Gries ("Finding repeated elements", 1982) keep at most k counters: a key already
counted is incremented, a new key takes a free counter, and when none is free every counter
(and the newcomer's weight) is decreased by the smallest of them, freeing at least one. After
a stream of total weight n every estimate is a lower bound within n/(k+1) of the true count,
and every key whose true count exceeds n/(k+1) holds a counter (the guarantees the property
tests in tests/test_ops_hotkeys.py check). Each decrement round costs O(k) and removes
(k+1)*m of weight, so updates are amortised O(1).

`decay()` halves every counter (and n): called periodically, it turns all-time counts into
exponentially weighted recent ones; estimates stay lower bounds (rounding down adds at most
one to the error per decay).
"""

from __future__ import annotations

from collections.abc import Hashable


class TopK:
    """At most `k` counters; `top(m)` returns the (key, estimate) pairs, largest first."""

    __slots__ = ("k", "counts", "total")

    def __init__(self, k: int = 64) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k
        self.counts: dict[Hashable, int] = {}
        self.total = 0  # n: weight of the whole stream seen (after decays)

    def add(self, key: Hashable, weight: int = 1) -> None:
        if weight <= 0:
            return
        self.total += weight
        counts = self.counts
        if key in counts:
            counts[key] += weight
            return
        if len(counts) < self.k:
            counts[key] = weight
            return
        m = min(min(counts.values()), weight)
        for other in list(counts):
            left = counts[other] - m
            if left:
                counts[other] = left
            else:
                del counts[other]
        if weight > m:
            counts[key] = weight - m

    def estimate(self, key: Hashable) -> int:
        """A lower bound of key's count, at most error_bound() below it."""
        return self.counts.get(key, 0)

    def error_bound(self) -> float:
        return self.total / (self.k + 1)

    def top(self, m: int | None = None) -> list[tuple[Hashable, int]]:
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))
        return items if m is None else items[:m]

    def decay(self, factor: float = 0.5) -> None:
        """Scale every counter (and n) by factor, dropping counters that reach zero."""
        if not 0 <= factor <= 1:
            raise ValueError(f"factor must be within [0, 1], got {factor!r}")
        self.counts = {key: c2 for key, c in self.counts.items() if (c2 := int(c * factor))}
        self.total = int(self.total * factor)

    def __len__(self) -> int:
        return len(self.counts)
