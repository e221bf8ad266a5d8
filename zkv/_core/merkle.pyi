"""Per-partition Merkle trees for anti-entropy: which key-hash segments two replicas disagree on.

One tree per (partition, replica). Leaves are ``2**leaf_bits`` contiguous segments of the
partition's key-hash space (murmur3 x64_128 first half, the ring's hash); a leaf's hash is the
sum mod 2**128 of 128-bit digests of its (key, version digest) entries, so a write updates it in
O(1) and insert/remove are exact inverses; inner levels are blake3 of their children, truncated
to 16 bytes, computed lazily. Empty leaves and all-empty subtrees hash to 16 zero bytes. See
merkle.pyx for the design (riak_core ``hashtree.erl``) and merkle.pxd for the byte formats.
"""

from collections.abc import Callable, Sequence
from typing import final

WIRE_VERSION: int
"""First byte of :meth:`MerkleTree.encode_level` output."""

@final
class MerkleTree:
    """A Merkle tree over one partition's key-hash space.

    Keys and digests may be any bytes-like object; lists of ``bytes`` take the fast path.

    The tree stores no keys: it trusts its caller to remove only what it inserted (a replica
    calls :meth:`replace` with the old and new version digests on every write, and rebuilds
    with :meth:`clear` + :meth:`insert_many` from its store when in doubt).
    """

    q_bits: int
    """Top bits of the key hash that name the partition (skipped when placing keys in leaves)."""
    leaf_bits: int
    """``leaves == 2**leaf_bits``."""
    fanout_bits: int
    """Inner nodes have ``2**fanout_bits`` children; the root may have fewer."""
    leaves: int
    """Number of leaves."""
    depth: int
    """Number of levels above the leaves: the root is level 0, the leaves are level ``depth``."""

    def __init__(self, q_bits: int = 8, leaf_bits: int = 10, fanout_bits: int = 4) -> None:
        """Make an empty tree.

        Raises ValueError unless ``1 <= leaf_bits <= 24``, ``q_bits >= 0``,
        ``q_bits + leaf_bits <= 64`` and ``1 <= fanout_bits <= 16``. ``leaf_bits`` need not be a
        multiple of ``fanout_bits``: the level under the root is then shorter.
        """
    def insert(self, key: bytes, vdigest: bytes) -> None:
        """Add the entry (key, vdigest) to its leaf. ``vdigest`` must be 16 bytes (ValueError)."""
    def remove(self, key: bytes, vdigest: bytes) -> None:
        """Take back an entry previously inserted (the exact inverse of :meth:`insert`)."""
    def replace(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """Remove (key, old) if ``old`` is given, then insert (key, new) if ``new`` is given.

        What a replica calls on each write. Both digests are checked before anything changes.
        """
    def replace_versions(self, key: bytes, old_version: bytes | None,
                         new_version: bytes | None) -> None:
        """:meth:`replace` with each digest computed here as murmur3 x64_128 of the stored
        version bytes (``mmh3.hash_bytes(version)``); ``None``/empty means no version. One C
        call: what a replica's write path uses."""
    def insert_many(self, keys: Sequence[bytes], vdigests: Sequence[bytes]) -> None:
        """Insert ``zip(keys, vdigests)``: the bulk rebuild path (fastest with lists of bytes).

        ValueError if the lengths differ or a digest is not 16 bytes; the tree is then unchanged.
        """
    def clear(self) -> None:
        """Forget every entry: back to the empty tree."""
    def leaf_of(self, key: bytes) -> int:
        """Index of the leaf ``key`` falls in."""
    def leaf_of_hash(self, h: int) -> int:
        """Index of the leaf of key hash ``h`` (unsigned 64-bit; ValueError otherwise)."""
    def root(self) -> bytes:
        """The root hash, 16 bytes (16 zero bytes for an empty tree)."""
    def level_hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        """The 16-byte hashes of nodes ``indices`` at ``level`` (0 = root, ``depth`` = leaves).

        Node ``i`` at level ``L`` has children ``i * k .. i * k + k - 1`` at level ``L + 1``,
        ``k`` its fanout. ValueError for a level or index out of range.
        """
    def encode_level(self, level: int, indices: Sequence[int]) -> bytes:
        """:meth:`level_hashes` in wire form: version byte, u32 LE count, 16-byte hashes."""
    @staticmethod
    def decode_level(data: bytes) -> list[bytes]:
        """Inverse of :meth:`encode_level`; ValueError on a wrong version, size or count."""
    def diff(self, remote: Callable[[int, list[int]], Sequence[bytes]]) -> list[int]:
        """Sorted indices of the leaves where this tree and a remote one of the same shape differ.

        ``remote(level, indices)`` returns the remote tree's hashes of those nodes (its
        :meth:`level_hashes`, possibly over the wire via :meth:`encode_level`/:meth:`decode_level`).
        Walks only differing subtrees, one call per level: equal trees cost one call (the root).
        ValueError if ``remote`` answers with the wrong number or size of hashes.
        """
    def count(self) -> int:
        """Entries currently in the tree (insert +1, remove -1)."""
