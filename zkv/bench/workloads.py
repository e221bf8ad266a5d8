"""Workloads: the YCSB core mixes (A, B, C, F), the zipfian key chooser and value framing.

The request distribution is YCSB's ``ZipfianGenerator`` (Gray et al., "Quickly generating
billion-record synthetic databases", SIGMOD 1994), with YCSB's constant 0.99, wrapped the way
YCSB's ``ScrambledZipfianGenerator`` does: the zipfian *rank* is hashed (FNV-1a 64) onto the
key space so the popular keys are scattered instead of being the first records. Rank 0 is the
most popular. Everything here is a pure function of its arguments and an injected
``random.Random``: the same seed gives the same request stream.

Values carry a 16-byte header naming the write that produced them, so a read can tell which
acknowledged write it saw (see ``staleness.py``)::

    magic    4  b"zkvb"
    write id 8  unsigned big-endian: (phase << 48) | (client << 32) | sequence
    reserved 4  zero
    padding  value_size - 16 bytes, seeded pseudo-random filler
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

ZIPFIAN_CONSTANT = 0.99  # YCSB's ZipfianGenerator.ZIPFIAN_CONSTANT

VALUE_MAGIC = b"zkvb"
_HEADER = struct.Struct(">4sQ4x")  # 16 bytes: magic, write id, reserved
HEADER_SIZE = _HEADER.size

READ, UPDATE, RMW = "read", "update", "rmw"

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(value: int) -> int:
    """FNV-1a 64 of the 8 little-endian bytes of ``value`` (YCSB's Utils.fnvhash64 scrambling)."""
    h = _FNV_OFFSET
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * _FNV_PRIME) & _MASK64
        value >>= 8
    return h


def zeta(n: int, theta: float) -> float:
    """sum_{i=1..n} 1 / i**theta."""
    return sum(1.0 / (i**theta) for i in range(1, n + 1))


class ZipfianGenerator:
    """Ranks 0..items-1, rank k drawn with probability proportional to 1 / (k+1)**theta.

    Gray et al.'s closed-form inverse (as in YCSB): O(items) set-up to compute zeta(items),
    then O(1) per draw. ``rng`` is injected so a seed replays the stream.
    """

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPFIAN_CONSTANT) -> None:
        if items < 1:
            raise ValueError(f"items must be >= 1, got {items}")
        if not 0 < theta < 1:
            raise ValueError(f"theta must be in (0, 1), got {theta}")
        self.items = items
        self.theta = theta
        self.rng = rng
        self.zetan = zeta(items, theta)
        zeta2 = zeta(2, theta)
        self.alpha = 1.0 / (1.0 - theta)
        # items <= 2: every draw ends in the two short-cuts of next_rank (eta unused, and 0/0)
        self.eta = ((1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan)
                    if items > 2 else 0.0)
        self._half_pow_theta = 1 + 0.5**theta

    def next_rank(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self._half_pow_theta:
            return 1 if self.items > 1 else 0
        rank = int(self.items * (self.eta * u - self.eta + 1) ** self.alpha)
        return min(rank, self.items - 1)


class ScrambledZipfian:
    """Zipfian popularity scattered over the key space: record index = fnv(rank) mod items."""

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPFIAN_CONSTANT) -> None:
        self.items = items
        self.zipf = ZipfianGenerator(items, rng, theta)

    def next_index(self) -> int:
        return fnv1a64(self.zipf.next_rank()) % self.items


@dataclass(frozen=True)
class Workload:
    """A YCSB core workload: operation proportions (they sum to 1)."""

    name: str
    read: float
    update: float
    rmw: float
    description: str

    def choose(self, rng: random.Random) -> str:
        u = rng.random()
        if u < self.read:
            return READ
        if u < self.read + self.update:
            return UPDATE
        return RMW


WORKLOADS: dict[str, Workload] = {
    "A": Workload("A", 0.50, 0.50, 0.0, "update heavy: 50% read, 50% update"),
    "B": Workload("B", 0.95, 0.05, 0.0, "read mostly: 95% read, 5% update"),
    "C": Workload("C", 1.00, 0.00, 0.0, "read only"),
    "F": Workload("F", 0.50, 0.00, 0.50, "50% read, 50% read-modify-write through the context"),
}


def parse_workloads(spec: str) -> list[Workload]:
    """"A,B,C,F" -> the workloads, in that order; unknown names raise ValueError."""
    out = []
    for name in (s.strip().upper() for s in spec.split(",")):
        if not name:
            continue
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
        out.append(WORKLOADS[name])
    if not out:
        raise ValueError("no workload given")
    return out


class OpStream:
    """The request stream of one client: (operation, record index) pairs, seeded."""

    def __init__(self, workload: Workload, records: int, rng: random.Random) -> None:
        self.workload = workload
        self.rng = rng
        self.keys = ScrambledZipfian(records, rng)

    def next(self) -> tuple[str, int]:
        return self.workload.choose(self.rng), self.keys.next_index()


def key_name(index: int, prefix: bytes = b"") -> bytes:
    """The key of record ``index``: ``prefix`` + YCSB-style ``user`` + 12 digits (16 bytes)."""
    return prefix + b"user%012d" % index


def write_id(phase: int, client: int, seq: int) -> int:
    if not (0 <= phase < 1 << 16 and 0 <= client < 1 << 16 and 0 <= seq < 1 << 32):
        raise ValueError("write id field out of range")
    return (phase << 48) | (client << 32) | seq


def make_value(wid: int, size: int, rng: random.Random) -> bytes:
    """A ``size``-byte value whose header names write ``wid``; the rest is seeded filler."""
    if size < HEADER_SIZE:
        raise ValueError(f"value size must be >= {HEADER_SIZE} bytes, got {size}")
    return _HEADER.pack(VALUE_MAGIC, wid) + rng.randbytes(size - HEADER_SIZE)


def value_write_id(value: bytes) -> int | None:
    """The write id in a value's header; None for a value this suite did not write."""
    if len(value) < HEADER_SIZE:
        return None
    magic, wid = _HEADER.unpack_from(value)
    return wid if magic == VALUE_MAGIC else None
