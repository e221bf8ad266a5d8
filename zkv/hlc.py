"""Hybrid logical clock: timestamps that follow physical time yet never go backwards.

Used to stamp writes in `lww` namespaces (DESIGN.md 2.6): the coordinator calls `now()` for
each write it accepts and `observe(ts)` for every timestamp it receives from a peer, so a
node whose wall clock runs behind still orders its writes after everything it has seen.

Design (Kulkarni, Demirbas, Madeppa, Avva, Leone 2014, "Logical Physical Clocks and
Consistent Snapshots in Globally Distributed Databases"): a timestamp is a pair (l, c)
where l is the highest physical time seen (ms) and c a counter that breaks ties within one
l. Packed big-endian into one u64 with l in the high bits, integer order is the pair's
lexicographic order, and the whole algorithm collapses to one line:

    send/local:  ts = max(pt << 16, last + 1)
    receive:     ts = max(pt << 16, last + 1, remote + 1)

(`last + 1` carries into l when c is 0xFFFF: after 65,536 events in one millisecond the
clock borrows the next millisecond, which keeps it monotonic at a cost of <= 1 ms drift per
65,536 events.)

Timestamp layout (u64; `pack` gives these 8 bytes big-endian, so bytes compare like ints):

    bits 63..16  l: physical ms since the Unix epoch (48 bits, good until year 10889)
    bits 15..0   c: logical counter within l (16 bits)

Bounded drift: a remote timestamp whose l is more than `max_skew_ms` ahead of our physical
clock would drag every later timestamp of ours into the future. `observe` refuses it
(`skew="refuse"`: raises `ClockSkewError`, clock unchanged) or clamps it to the bound
(`skew="clamp"`); either way `skewed` counts it. The class is pure: the physical clock is
injected (a callable returning ms), so tests and simulations drive it deterministically.

Ties between different nodes' identical timestamps are broken by node id (`lww_key`): the
higher (timestamp, node id as UTF-8 bytes) wins, the rule DESIGN.md 2.6 states for LWW.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1  # 0xFFFF
MAX_MS = (1 << 48) - 1
MAX_TS = (1 << 64) - 1
DEFAULT_MAX_SKEW_MS = 60_000  # a peer's clock may run up to a minute ahead of ours


class ClockSkewError(ValueError):
    """A remote timestamp is further ahead of the local physical clock than allowed."""

    def __init__(self, message: str, remote: int, limit: int) -> None:
        super().__init__(message)
        self.remote = remote
        self.limit = limit


def wall_ms() -> int:
    """The default physical clock: Unix time in whole milliseconds."""
    return time.time_ns() // 1_000_000


def make(ms: int, logical: int = 0) -> int:
    """(physical ms, logical counter) -> packed u64 timestamp."""
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"physical time {ms} ms outside 0..2**48-1")
    if not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"logical counter {logical} outside 0..65535")
    return (ms << LOGICAL_BITS) | logical


def split(ts: int) -> tuple[int, int]:
    """Packed timestamp -> (physical ms, logical counter)."""
    _check_ts(ts)
    return ts >> LOGICAL_BITS, ts & LOGICAL_MASK


def pack(ts: int) -> bytes:
    """Timestamp -> 8 bytes big-endian (bytewise order equals timestamp order)."""
    _check_ts(ts)
    return ts.to_bytes(8, "big")


def unpack(data: bytes) -> int:
    """8 bytes big-endian -> timestamp; anything else raises ValueError."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != 8:
        raise ValueError("an HLC timestamp is exactly 8 bytes")
    return int.from_bytes(data, "big")


def lww_key(ts: int, node: str) -> tuple[int, bytes]:
    """Sort key of a last-writer-wins version: the greatest key wins.

    Timestamp first, then the node id's UTF-8 bytes (the same canonical order the version
    vectors use), so two nodes that stamp the same timestamp still agree on one winner.
    """
    return ts, node.encode("utf-8")


def newer(ts_a: int, node_a: str, ts_b: int, node_b: str) -> bool:
    """True when version (ts_a, node_a) beats (ts_b, node_b) under LWW."""
    return lww_key(ts_a, node_a) > lww_key(ts_b, node_b)


def _check_ts(ts: int) -> None:
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS:
        raise ValueError(f"HLC timestamp must be an int in 0..2**64-1, not {ts!r}")


class HLC:
    """One node's hybrid logical clock (thread-safe; pure apart from the injected clock)."""

    __slots__ = ("_physical", "max_skew_ms", "skew", "_last", "skewed", "_lock")

    def __init__(self, physical: Callable[[], int] = wall_ms, *,
                 max_skew_ms: int = DEFAULT_MAX_SKEW_MS, skew: str = "refuse",
                 last: int = 0) -> None:
        """`physical` returns ms; `last` resumes after a restart (e.g. the highest timestamp
        found on disk); `skew` is "refuse" or "clamp" (see the module docstring)."""
        if skew not in ("refuse", "clamp"):
            raise ValueError(f"skew must be 'refuse' or 'clamp', not {skew!r}")
        if not isinstance(max_skew_ms, int) or max_skew_ms < 0:
            raise ValueError(f"max_skew_ms must be a non-negative int, not {max_skew_ms!r}")
        _check_ts(last)
        self._physical = physical
        self.max_skew_ms = max_skew_ms
        self.skew = skew
        self._last = last
        self.skewed = 0  # remote timestamps refused or clamped for being too far ahead
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The most recent timestamp this clock issued (0 before the first)."""
        return self._last

    def _pt(self) -> int:
        ms = self._physical()
        if not 0 <= ms <= MAX_MS:
            raise ValueError(f"physical clock returned {ms!r}: outside 0..2**48-1 ms")
        return ms

    def now(self) -> int:
        """Timestamp a local or send event: greater than every timestamp issued or observed."""
        with self._lock:
            ts = max(self._pt() << LOGICAL_BITS, self._last + 1)
            if ts > MAX_TS:
                raise OverflowError("HLC exhausted the 64-bit timestamp space")
            self._last = ts
            return ts

    def lead_ms(self) -> int:
        """How far the last timestamp issued runs ahead of the physical clock (ms; negative:
        behind). A timestamp observed is clamped to `max_skew_ms` ahead, so a lead beyond that
        is this clock's own: its physical clock ran ahead and was set back (an NTP step)."""
        return (self._last >> LOGICAL_BITS) - self._pt()

    def limit(self) -> int:
        """The greatest timestamp a peer may send: `max_skew_ms` ahead of our physical clock
        (`observe` clamps or refuses one beyond it)."""
        return self._limit_at(self._pt())

    def _limit_at(self, pt: int) -> int:
        return ((pt + self.max_skew_ms) << LOGICAL_BITS) | LOGICAL_MASK

    def observe(self, remote: int) -> int:
        """Timestamp a receive event carrying `remote`: the result is greater than both
        `remote` and every timestamp this clock issued before (unless `remote` was clamped).
        """
        _check_ts(remote)
        with self._lock:
            pt = self._pt()
            limit = self._limit_at(pt)
            if remote > limit:
                self.skewed += 1
                if self.skew == "refuse":
                    ahead = (remote >> LOGICAL_BITS) - pt
                    raise ClockSkewError(
                        f"remote timestamp is {ahead} ms ahead of the local clock "
                        f"(max skew {self.max_skew_ms} ms)", remote, limit)
                remote = limit
            ts = max(pt << LOGICAL_BITS, self._last + 1, remote + 1)
            if ts > MAX_TS:
                raise OverflowError("HLC exhausted the 64-bit timestamp space")
            self._last = ts
            return ts

    def __repr__(self) -> str:
        ms, c = self._last >> LOGICAL_BITS, self._last & LOGICAL_MASK
        return f"HLC(last=({ms} ms, {c}), max_skew_ms={self.max_skew_ms}, skew={self.skew!r})"


__all__ = ["HLC", "ClockSkewError", "wall_ms", "make", "split", "pack", "unpack", "lww_key",
           "newer", "LOGICAL_BITS", "LOGICAL_MASK", "MAX_MS", "DEFAULT_MAX_SKEW_MS"]
