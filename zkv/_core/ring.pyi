"""The consistent-hash ring: key -> partition -> preference list of N distinct, rack-spread nodes.

Fixed partitions (Dynamo strategy 3, Riak-style): the 64-bit murmur3 hash space is cut into
Q = 2**q_bits equal partitions; ``partition = hash64(key) >> (64 - q_bits)``. Primaries are
claimed by rendezvous hashing with capacity caps (balanced to within one partition; a pure
function of the membership, independent of member order); each preference list is the primary
followed by HRW-ordered, rack-round-robin nodes, precomputed as a C array. See ring.pyx for the
algorithm and its measured movement, ring.pxd for the C API and the fingerprint format.
"""

import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import final

def hash64(key: bytes) -> int:
    """murmur3 x64_128 of key, seed 0, first 64-bit word, unsigned.

    Equals ``mmh3.hash64(key, signed=False)[0]``. TypeError if key is not bytes.
    """

def partition_of(key: bytes, q_bits: int) -> int:
    """``hash64(key) >> (64 - q_bits)``: key's partition in a ring of 2**q_bits partitions.

    TypeError if key is not bytes; ValueError unless 1 <= q_bits <= 16.
    """

@final
class Ring:
    """An immutable ring for one membership. Equal inputs give equal rings on every node.

    Construction costs O(Q * M * (log M + N)) for M members; lookups are O(1).
    """

    q: int
    """Number of partitions Q (a power of two, 2..65536)."""
    q_bits: int
    """log2(Q)."""
    n: int
    """Replicas wanted per key (N); preference lists hold min(n, len(members)) nodes."""
    members: tuple[str, ...]
    """Node ids, sorted."""
    rack_violations: tuple[int, ...]
    """Partitions whose preference list spans fewer than min(n, distinct racks) racks.

    Checked independently after construction; the claim guarantees it is empty, so a
    non-empty value means a bug.
    """

    def __init__(self, members: Iterable[tuple[str, str]], q: int = 256, n: int = 3,
                 tokens: Mapping[str, str] | None = None) -> None:
        """Build the ring for members given as (node_id, rack) pairs, in any order.

        ``tokens``: node id -> placement token (the string its HRW weights are seeded by;
        default: the id). A node given the token of a node it replaces, with the same rack,
        takes exactly that node's place in every preference list. Tokens of ids that are not
        members are ignored; two members with the same token are a ValueError.

        ValueError: q not a power of two in 2..65536, n < 1, duplicate node ids, no members,
        more than 65535 members. TypeError: a member that is not a (str, str) pair, non-int q/n.
        """

    @property
    def racks(self) -> dict[str, str]:
        """A copy of node id -> rack."""

    @property
    def tokens(self) -> dict[str, str]:
        """A copy of node id -> placement token, for members placed by a token other than
        their id."""

    def partition(self, key: bytes) -> int:
        """The key's partition. TypeError if key is not bytes (empty bytes is allowed)."""

    def partitions(self, keys: Sequence[bytes]) -> array.array:
        """Partitions of many keys in one call, as ``array('I')`` (fastest for a list/tuple)."""

    def hashes(self, keys: Sequence[bytes]) -> array.array:
        """hash64 of many keys in one call, as ``array('Q')``."""

    def preflist(self, p: int) -> tuple[str, ...]:
        """Preference list of partition p: min(n, members) distinct node ids, primary first.

        IndexError if p is not in 0..q-1 (no negative indexing); TypeError if not an int.
        """

    def preflist_for_key(self, key: bytes) -> tuple[str, ...]:
        """``preflist(partition(key))``."""

    def walk(self, p: int) -> tuple[str, ...]:
        """Every member in p's fixed walk order: the preference list, then the fallback order
        sloppy quorum uses (the same HRW, rack-round-robin rule continued)."""

    def sloppy_preflist(self, p: int, down: Collection[str]) -> list[tuple[str, str | None]]:
        """The first n nodes of p's walk that are not in ``down``, each with the owner it stands
        in for: None for a node in the preference list itself, else the id of the down owner
        it replaces (down owners are matched to stand-ins in walk order). Fewer than n entries
        when fewer nodes are up. Ids in ``down`` that are not members are ignored.

        Example: preflist (A, B, C), down={B} -> [(A, None), (C, None), (D, "B")].
        """

    def owner(self, p: int) -> str:
        """The primary (first node of the preference list) of partition p."""

    def owned(self, node_id: str) -> list[int]:
        """Partitions where node_id is primary, ascending ([] for a non-member)."""

    def replicas_of(self, node_id: str) -> list[int]:
        """Partitions whose preference list contains node_id, ascending ([] for a non-member)."""

    def partition_range(self, p: int) -> tuple[int, int]:
        """Inclusive [lo, hi] of the hash64 values that fall in partition p."""

    def moved(self, other: Ring) -> float:
        """Fraction of partitions whose primary differs between self and other.

        ValueError if the rings have different q.
        """

    def fingerprint(self) -> bytes:
        """16 bytes identifying (algorithm version, q, n, members, racks, tokens): equal fingerprints
        mean equal rings, so gossip can compare rings cheaply."""

    def describe(self) -> list[dict]:
        """``[{"partition": p, "preflist": [...]}, ...]`` for every partition (``zkv ring --json``)."""

    def __eq__(self, other: object, /) -> bool:
        """Same q, n, members, racks and tokens (hence the same ring)."""

    def __hash__(self) -> int: ...
    def __reduce__(
        self,
    ) -> tuple[type[Ring], tuple[tuple[tuple[str, str], ...], int, int, dict[str, str]]]:
        """Pickles as its inputs; the ring is rebuilt on load."""
