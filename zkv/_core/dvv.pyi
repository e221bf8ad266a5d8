"""Dotted version vector sets: one key's siblings and causal past (Python-facing contract).

A ``DVVSet`` is a list of entries ``(node id, counter n, [siblings newest first])``
sorted by node id: the causal past holds dots ``node:1..n`` and the siblings carry the
dots ``(node, n), (node, n-1), ...`` (Almeida et al. 2014; Riak's ``dvvset.erl``).
Values are ``bytes``; ``None`` is a tombstone sibling written by a delete. Sets are
immutable. Byte formats are defined in ``dvv.pxd``.

Caller's invariant: only node ``i``'s own replica calls ``update(..., node_id=i)``, on
its current set, so that a dot names one value everywhere.
"""

from collections.abc import Iterable

class DVVSet:
    """Immutable dotted version vector set. ``DVVSet()`` is the empty set."""

    def __init__(self) -> None: ...
    def values(self) -> list[bytes | None]:
        """All siblings (None = tombstone), deterministic order: by node id, then newest first."""
    def live_values(self) -> list[bytes]:
        """The siblings that are not tombstones, in ``values()`` order."""
    def context(self) -> bytes:
        """Encoded version vector of everything this set has seen: the opaque client token.

        Always versioned (first byte 1); ``update`` also accepts ``b""`` (blind write)."""
    def encode(self) -> bytes:
        """Canonical encoding, first byte = format version 1: equal sets give equal bytes."""
    @staticmethod
    def decode(data: bytes) -> DVVSet:
        """Inverse of ``encode``. Raises ValueError on malformed, truncated, non-canonical or
        wrong-version input (never crashes; every length is checked before allocating).
        TypeError if ``data`` is not bytes-like."""
    def digest(self) -> bytes:
        """16 bytes: murmur3 x64_128 (seed 0) of ``encode()`` (== ``mmh3.hash_bytes``); for Merkle leaves."""
    def size(self) -> int:
        """Number of siblings (tombstones included)."""
    def is_tombstone(self) -> bool:
        """At least one sibling and every sibling is a tombstone."""
    def vector(self) -> dict[str, int]:
        """The causal past as a version vector ``{node id: counter}`` (debug, tests)."""
    def entries(self) -> list[tuple[str, int, list[bytes | None]]]:
        """``[(node id, counter, [siblings newest first])]`` sorted by node id (debug, tests)."""
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __len__(self) -> int:
        """Same as ``size()``."""
    def __repr__(self) -> str: ...

EMPTY: DVVSet
"""The empty set (no entries, no siblings)."""

def update(server: DVVSet | None, context: bytes, value: bytes | None, node_id: str) -> DVVSet:
    """Coordinator ``node_id`` writes ``value`` (None = delete/tombstone) with the client's context.

    Siblings of ``server`` whose dots ``context`` covers are retired; all others survive.
    The new value gets dot ``(node_id, max(server[node_id], context[node_id]) + 1)``; the
    causal past becomes the join of server's and context's. ``b""`` is a blind write:
    it retires nothing. ValueError on a malformed context or a node id that is not
    1..255 bytes of UTF-8; TypeError on a value that is not bytes/None.
    """

def sync(a: DVVSet | None, b: DVVSet | None, /) -> DVVSet:
    """Merge two replicas' sets (None = empty). Commutative, associative, idempotent;
    returns ``a`` or ``b`` itself (no allocation) when it already is the result."""

def sync_many(sets: Iterable[DVVSet | None]) -> DVVSet:
    """``sync`` folded over ``sets``; ``EMPTY`` for an empty iterable."""

def descends(a: DVVSet, b: DVVSet) -> bool:
    """a's causal past includes every dot of b (b's versions are obsolete or present in a)."""

def merge_contexts(a: bytes, b: bytes) -> bytes:
    """The join of two encoded contexts, encoded. ValueError on a malformed one."""

def validate_context(ctx: bytes) -> None:
    """ValueError if ``ctx`` is not a well-formed context (``b""`` is well-formed). Client input!"""

def prune(s: DVVSet, max_entries: int) -> DVVSet:
    """Size bound hook. With more than ``max_entries`` entries, forget entries that hold no
    sibling, smallest counters first (ties by node id), until ``max_entries`` remain or
    none is left to forget; entries holding siblings are never dropped, so no value is lost.

    Risk (the standard one of pruning version vectors, cf. riak's vclock/dvvset prune):
    forgetting ``node:1..n`` makes the set no longer cover those dots, so a stale replica
    or a client context still carrying a sibling with such a dot can bring it back as a
    false sibling (a resurrected value), and a later context's coverage of them is lost.
    Only prune with a threshold well above the replication factor.
    """

def sync_encoded(a: bytes | None, b: bytes | None) -> bytes:
    """``sync`` on encoded sets (None = empty), for the replica's hot path. Both inputs are
    validated (ValueError); when one side already is the result its bytes are returned."""

def update_encoded(
    server: bytes | None, context: bytes, value: bytes | None, node_id: str
) -> bytes:
    """``update`` on an encoded server set (None = key absent); returns the new encoding."""

def is_tombstone_encoded(data: bytes) -> bool:
    """``DVVSet.decode(data).is_tombstone()`` computed on the encoded form without building the
    set (the replica's write path). ValueError on a truncated buffer."""
