"""The keys a store found corrupt and awaits repair of (LogStore._corrupt), indexed by ring
partition, so a question about one partition costs that partition's keys, not the whole set.

A set of keys plus an index by the top 16 bits of each key's ring hash
(`zkv._core.ring.partition_of(key, 16)`, the finest ring there is: RING_MAX_Q_BITS), from
which any ring of 2**b partitions reads a partition as 2**(16-b) consecutive buckets: a
listing page asked "does partition p hold a key lost here?" (NodeCore._lost_in), which
scanned every corrupt key per page (0.16 s a page at 200,000 of them). A store that finds
keys corrupt is rare, and its set small; one that lost a segment can hold many.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from zkv._core.ring import partition_of

BITS = 16  # the index's buckets: partition_of(key, BITS) (RING_MAX_Q_BITS)


class CorruptKeys:
    """A set of keys (add, discard, in, len, iteration) that also answers `in_partition`."""

    __slots__ = ("_keys", "_buckets")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        self._keys: set[bytes] = set()
        self._buckets: dict[int, set[bytes]] = {}  # partition_of(key, BITS) -> its keys
        for k in keys:
            self.add(k)

    def add(self, key: bytes) -> None:
        if key not in self._keys:
            self._keys.add(key)
            self._buckets.setdefault(partition_of(key, BITS), set()).add(key)

    def discard(self, key: bytes) -> None:
        if key in self._keys:
            self._keys.remove(key)
            b = partition_of(key, BITS)
            bucket = self._buckets[b]
            bucket.discard(key)
            if not bucket:
                del self._buckets[b]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def in_partition(self, p: int, q_bits: int) -> list[bytes]:
        """The keys whose partition in a ring of 2**q_bits partitions is `p`
        (partition_of(key, q_bits) == p), in no useful order."""
        if not self._keys or not 0 <= p < 1 << q_bits or not 1 <= q_bits <= BITS:
            return []
        buckets = self._buckets
        shift = BITS - q_bits
        if len(buckets) < 1 << shift:  # (fewer buckets in use than the partition spans)
            return [k for b, ks in buckets.items() if b >> shift == p for k in ks]
        out: list[bytes] = []
        for b in range(p << shift, (p + 1) << shift):
            ks = buckets.get(b)
            if ks:
                out.extend(ks)
        return out
