"""Latency statistics: exact nearest-rank percentiles, summaries, CDF points and log histograms.

Percentiles use the nearest-rank definition: the p-th percentile of n samples is the smallest
sample such that at least p% of the samples are <= it (index ceil(p/100 * n) - 1 of the sorted
samples). It never interpolates, so every reported figure is a latency that really happened.
Latencies are in seconds in; summaries report milliseconds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def pct_label(p: float) -> str:
    """50 -> "p50", 99.9 -> "p99.9"."""
    return "p" + (f"{p:g}")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values; p in [0, 100]."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no samples")
    rank = max(1, math.ceil(p / 100.0 * n - 1e-9))
    return sorted_values[rank - 1]


def summarize(latencies: Iterable[float], percentiles: Sequence[float] = PERCENTILES) -> dict:
    """count, min, mean, max and the percentiles of latencies (seconds), reported in ms."""
    xs = sorted(latencies)
    out: dict = {"count": len(xs)}
    if not xs:
        out.update({"min": None, "mean": None, "max": None})
        out.update({pct_label(p): None for p in percentiles})
        return out
    out["min"] = xs[0] * 1e3
    out["mean"] = sum(xs) / len(xs) * 1e3
    out["max"] = xs[-1] * 1e3
    for p in percentiles:
        out[pct_label(p)] = percentile(xs, p) * 1e3
    return out


def cdf_points(latencies: Iterable[float], points: int = 200) -> list[list[float]]:
    """[[latency_ms, fraction <= it], ...] at evenly spaced ranks, ending with the maximum."""
    xs = sorted(latencies)
    n = len(xs)
    if n == 0:
        return []
    step = max(1, n // points)
    ranks = list(range(step, n + 1, step))
    if ranks[-1] != n:
        ranks.append(n)
    return [[xs[k - 1] * 1e3, k / n] for k in ranks]


class Histogram:
    """Log-bucketed latency histogram (HdrHistogram-like): mergeable, bounded relative error.

    Bucket i covers [lowest * growth**i, lowest * growth**(i+1)); values below ``lowest`` go to
    bucket 0 and values beyond the last bucket to the last one. With growth 2**(1/16) a
    percentile read from the histogram is within ~4.4% of the true value.
    """

    def __init__(self, lowest: float = 1e-6, highest: float = 100.0,
                 growth: float = 2 ** (1 / 16)) -> None:
        if not (0 < lowest < highest and growth > 1):
            raise ValueError("need 0 < lowest < highest and growth > 1")
        self.lowest, self.highest, self.growth = lowest, highest, growth
        self.buckets = math.ceil(math.log(highest / lowest, growth)) + 1
        self.counts = [0] * self.buckets
        self.total = 0
        self._log_growth = math.log(growth)

    def index(self, value: float) -> int:
        if value <= self.lowest:
            return 0
        i = int(math.log(value / self.lowest) / self._log_growth)
        return min(i, self.buckets - 1)

    def upper(self, i: int) -> float:
        """The upper edge of bucket i."""
        return self.lowest * self.growth ** (i + 1)

    def record(self, value: float, count: int = 1) -> None:
        self.counts[self.index(value)] += count
        self.total += count

    def merge(self, other: Histogram) -> None:
        if (other.lowest, other.growth, other.buckets) != (self.lowest, self.growth, self.buckets):
            raise ValueError("histograms with different bucketing cannot be merged")
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.total += other.total

    def percentile(self, p: float) -> float:
        """Upper edge of the bucket holding the nearest-rank p-th percentile."""
        if self.total == 0:
            raise ValueError("percentile of an empty histogram")
        rank = max(1, math.ceil(p / 100.0 * self.total - 1e-9))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return self.upper(i)
        return self.upper(self.buckets - 1)

    def to_dict(self) -> dict:
        """Non-empty buckets only: {"lowest", "growth", "buckets": [[upper_edge_s, count]]}."""
        return {"lowest": self.lowest, "growth": self.growth,
                "buckets": [[self.upper(i), c] for i, c in enumerate(self.counts) if c]}


def rate_buckets(times: Sequence[float], start: float, end: float, width: float) -> list[int]:
    """Counts of events (sorted times) per ``width``-second slot of [start, end)."""
    slots = max(1, math.ceil((end - start) / width))
    out = []
    for k in range(slots):
        lo, hi = start + k * width, min(end, start + (k + 1) * width)
        out.append(bisect.bisect_left(times, hi) - bisect.bisect_left(times, lo))
    return out
