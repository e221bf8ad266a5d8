"""Dotted version vector sets: one key's siblings and causal past (Python-facing contract).

A ``DVVSet`` is a list of entries ``(node id, counter n, [siblings newest first])``
sorted by node id: the causal past holds dots ``node:1..n`` and each sibling carries its
own dot ``(node, d)``, ``d <= n`` strictly decreasing (Almeida et al. 2014; Riak's
``dvvset.erl``, where the dots are always ``n, n-1, ...``). Values are ``bytes``;
``None`` is a tombstone sibling written by a delete. A sibling may carry a write id
(1..32 bytes, chosen by the client, kept across its retries). Sets are immutable. Byte
formats are defined in ``dvv.pxd``; the design and the convergence argument are in the
docstring of ``dvv.pyx``.

Retired: a sibling removed while its dot stays in the causal past (exactly like a
sibling a later write overwrote). Four rules retire siblings:

- **write-id dedup** (every constructor: ``update``, ``sync``, ``lww``, ``retain``; the
  decoder rejects a set where it was not applied): of the live siblings sharing a
  non-empty write id, only the greatest in the sibling order ``O`` stays; it keeps the
  others' dots as its *aliases* (``aliases()``, at most 8; ``sync`` joins them, and a
  copy that dies there hands its own to the live copy that lists it), and a context
  covering an alias covers it (``update``): copies of one write are one write.
- **retired write ids** (rule R, every constructor, checked by the decoder): a write made
  by ``update`` lists the write ids of the siblings its context retired (at most 4, newest
  first, inherited through overwrites; ``retired_wids()``); a live sibling carrying a
  listed id is retired, so a late copy of an overwritten write never comes back.
- **LWW collapse** (``lww``): only the ``O``-greatest sibling stays.
- **retain**: only the siblings the caller chose stay.

Order ``O``: tombstones below values; values by their first 8 bytes (bytewise, a shorter
prefix first); then by dot (node id bytewise, then counter). In LWW namespaces the node
stores ``value = 8-byte big-endian HLC stamp + user value``, so ``O`` is (stamp, node
id, counter) there. Values and write ids of retired siblings are gone: ``values()``,
``live_values()``, ``siblings()`` and ``size()`` never include them.

Caller's invariant: only node ``i``'s own replica calls ``update(..., node_id=i)``, on
its current set, so that a dot names one value everywhere. A write id must be unique per
logical write (e.g. 16 random bytes): two different writes with one write id collapse.
"""

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import final

MAX_AHEAD: int
"""2**32: default bound on how far a context's (or a peer's set's) counter for a node may
run ahead of the replica's own counter for it (``update``, ``check_plausible``)."""

WID_MAX: int
"""32: the longest write id, in bytes."""

Sibling = tuple[str, int, bytes | None, bytes]
"""``(node id, dot counter, value or None, write id or b"")``."""

@final
class DVVSet:
    """Immutable dotted version vector set. ``DVVSet()`` is the empty set."""

    def __init__(self) -> None: ...
    def values(self) -> list[bytes | None]:
        """All siblings (None = tombstone), deterministic order: by node id, then newest first."""
    def live_values(self) -> list[bytes]:
        """The siblings that are not tombstones, in ``values()`` order."""
    def siblings(self) -> list[Sibling]:
        """``[(node id, dot counter, value or None, write id or b"")]`` in ``values()`` order."""
    def aliases(self) -> list[list[tuple[str, int]]]:
        """Per sibling, in ``values()`` order: the dots of retired copies of the same write
        (rule D) that a context may cover instead of the sibling's own; usually ``[]``."""
    def retired_wids(self) -> list[list[bytes]]:
        """Per sibling, in ``values()`` order: the write ids its write overwrote, newest
        first (rule R retires late copies of them); usually ``[]``."""
    def context(self) -> bytes:
        """Encoded version vector of everything this set has seen: the opaque client token.

        First byte 1; 2 when the set has write ids: the context then also carries the ids a
        write covering the set retires (at most 4), so a coordinator holding no copy still
        retires late copies of them. ``update`` also accepts ``b""`` (blind write)."""
    def encode(self) -> bytes:
        """Canonical encoding: equal sets give equal bytes. Format version 1 (today's, byte
        for byte) unless a sibling has a write id or an entry's dots have a gap: then 2;
        3 when a sibling has aliases or retired write ids."""
    @staticmethod
    def decode(data: bytes) -> DVVSet:
        """Inverse of ``encode`` (versions 1, 2 and 3). Raises ValueError on malformed,
        truncated, non-canonical or wrong-version input, including two live siblings with
        one write id or a live sibling whose write id another lists as retired (never
        crashes; every length is checked before allocating).
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
        """``[(node id, counter, [siblings newest first])]`` sorted by node id (debug, tests).
        The siblings' dots are in ``siblings()``."""
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __len__(self) -> int:
        """Same as ``size()``."""
    def __repr__(self) -> str: ...

EMPTY: DVVSet
"""The empty set (no entries, no siblings)."""

def update(
    server: DVVSet | None,
    context: bytes,
    value: bytes | None,
    node_id: str,
    wid: bytes = b"",
    *,
    max_ahead: int | None = MAX_AHEAD,
) -> DVVSet:
    """Coordinator ``node_id`` writes ``value`` (None = delete/tombstone) with the client's
    context and write id ``wid`` (0..32 bytes, b"" = none).

    Siblings of ``server`` whose dots (or alias dots) ``context`` covers are retired; all
    others survive. The new sibling lists the retired siblings' write ids (rule R).
    The new value gets dot ``(node_id, max(server[node_id], context[node_id]) + 1)``; the
    causal past becomes the join of server's and context's. ``b""`` is a blind write:
    it retires nothing. With a ``wid``: if a live sibling (after the context is applied)
    already carries ``wid`` and the same value, this is a retry of a write the replica
    holds: the result is ``sync(context, server)``, no new dot; likewise when a live sibling
    lists ``wid`` as retired (a late retry of an overwritten write); otherwise the new
    sibling joins and write-id dedup runs.

    ValueError on a malformed context, on a context counter more than ``max_ahead`` beyond
    ``server``'s counter for that node (a forged or corrupt context: refused, never stored,
    so a key can never be made unwritable; None disables the bound), on a ``wid`` longer
    than 32 bytes, on a node id that is not 1..255 bytes of UTF-8, and (only possible with
    ``max_ahead=None`` or a set stored before this check) when ``node_id``'s counter is
    already 2**63-1. TypeError on a value that is not bytes/None or a wid not bytes.
    """

def sync(a: DVVSet | None, b: DVVSet | None, /) -> DVVSet:
    """Merge two replicas' sets (None = empty), then write-id dedup. Commutative and
    idempotent; associative whenever no dedup fires (always without write ids); with
    dedup, replicas still converge to identical sets once they have all exchanged (see the
    dvv.pyx docstring for the one order-dependent case). Returns ``a`` or ``b`` itself (no
    allocation) when it already is the result, e.g. whenever one descends the other.
    ValueError, in either argument order, when a dot live in both names two different
    writes (two write ids, or one and none: a corrupt or forged set, as honest dots are
    unique); ``lww_sync``, ``sync_encoded``, ``lww_sync_encoded``, ``sync_plausible`` and
    ``sync_many`` raise it too. A replica drops such a peer version (counted malformed)."""

def sync_many(sets: Iterable[DVVSet | None]) -> DVVSet:
    """``sync`` folded over ``sets``; ``EMPTY`` for an empty iterable."""

def descends(a: DVVSet, b: DVVSet) -> bool:
    """a's causal past includes every dot of b (b's versions are obsolete or present in a).
    About causal pasts only: ``sync(a, b) == a`` implies it, but a set can descend
    another and still lack some of its retirements (write-id dedup, ``lww``, ``retain``),
    so the converse holds only where no sibling was retired."""

def context_descends(a: bytes, b: bytes) -> bool:
    """The encoded context ``a`` has seen every write the encoded context ``b`` has (a read
    whose context descends a put's returned context saw that put, or what replaced it).
    ``b""`` has seen nothing. ValueError on a malformed one."""

def context_has_new_dot(a: bytes, b: bytes) -> bool:
    """The encoded context ``a`` counts a dot ``b`` does not, under a node id (the entry
    ``~``, BLIND_ACTOR, names no write). A put's returned context has one over the context
    it was given exactly when it covers the put's own dot (put_context's usual case; its
    other returns the given context, with the write id listed)."""

def merge_contexts(a: bytes, b: bytes) -> bytes:
    """The join of two encoded contexts, encoded (write ids: a's, then b's, at most 4).
    ValueError on a malformed one."""

BLIND_ACTOR: bytes
def put_context(written: DVVSet | bytes, context: bytes | None, wid: bytes | None) -> bytes:
    """The context a put returns: its own context joined with the new write's dot, never a
    sibling the client did not read (else the context it wrote with)."""
    ...

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

def lww(s: DVVSet | None, before: DVVSet | None = None) -> DVVSet:
    """Last-writer-wins collapse (issue 15): only the ``O``-greatest sibling stays -- in an
    LWW namespace the highest (8-byte big-endian stamp prefix, node id, counter); a
    tombstone carries no stamp and ranks below every value, so a delete wins only over the
    writes its context covered -- and the others retire (their dots stay in the clock).
    Returns ``s`` itself when it has at most one sibling.

    Laws: ``lww(lww(s)) == lww(s)``; deterministic on every replica; on collapsed sets (all
    of an LWW namespace's: the node collapses after every update and sync)
    ``lww(sync(a, b)) == lww(sync(lww(a), lww(b)))`` and replicas converge. ``O`` is also
    the write-id dedup order, so the two rules always pick the same survivor.

    ``before``: the set a coordinator's write was made on (``s == update(before, ...)``).
    When that write's new sibling is the one kept, it also lists as retired the write ids of
    the siblings the collapse retires, then the lists they carried (after its own list,
    without repeats or its own id, the first ``DVV_RETIRED_MAX``), as a write whose context
    covered them would: so a late retry or copy of a write a blind lww write replaced is
    retired by rule R, and ``update`` with its id is a no-op. Only the coordinator passes it,
    where the dot is made, so every replica holds the same list; a kept sibling that was
    already in ``before`` (or a new write that loses) is collapsed as without it."""

def lww_sync(a: DVVSet | None, b: DVVSet | None, /) -> DVVSet:
    """``lww(sync(a, b))`` (None = empty), except that it never leaves no sibling when ``a``
    or ``b`` has one. Each side of a sync can have retired the other's survivor -- rule R
    kept x over y here (x lists y's write id, a late retry stamped after x), the stamp kept
    y over z elsewhere and z over x -- and sticky death then kills both: an lww key with
    acknowledged writes left with no value on every replica (a Jepsen-style run, 1 key of
    191). Then the result is the join's vector with the ``O``-greatest of the two sides'
    siblings live (so it may be a late retry that R retired on one side: the stamp decides).
    Not a join (a retired dot comes back), but once vectors are equal every disagreement
    resolves by ``O``, a total order: replicas converge under any pattern of exchanges,
    one-way pushes included, though a gather-and-give-back may take a second round.
    Laws of ``lww`` otherwise."""

def lww_sync_encoded(a: bytes | None, b: bytes | None) -> bytes:
    """``lww_sync`` on encoded sets (None = empty; both validated: ValueError): what a
    replica stores, and a get's or listing's merge, for an lww key."""

def retain(s: DVVSet | None, keep: Callable[[Sibling], bool] | Iterable[int]) -> DVVSet:
    """The general retirement primitive: ``s`` with only the siblings ``keep`` chooses --
    a predicate on ``siblings()`` tuples, or indices into ``values()`` (IndexError when out
    of range) -- and the others retired, counters unchanged. ``s`` itself when all stay.
    Convergence of a rule built on it is the caller's: it must be a deterministic function
    of the set, applied on every replica (as ``lww`` is)."""

def lww_encoded(data: bytes, before: bytes | None = None) -> bytes:
    """``lww`` on an encoded set (validated: ValueError); ``data`` itself when unchanged.
    ``before``: the encoded set the write was made on (``lww``'s ``before``; None or b"":
    none)."""

def retain_encoded(data: bytes, keep: Callable[[Sibling], bool] | Iterable[int]) -> bytes:
    """``retain`` on an encoded set (validated: ValueError)."""

def check_plausible(
    data: bytes | DVVSet,
    members: Collection[str] | None = None,
    limits: Mapping[str, int] | None = None,
    *,
    base: bytes | DVVSet | None = None,
    max_ahead: int | None = MAX_AHEAD,
) -> None:
    """Refuse a forged or corrupt version (issue 13): ValueError, naming the node id, when
    the set (encoded, validated) a peer sent names a node id not in ``members``, has a
    counter above ``limits[id]`` (a per-node ceiling, e.g. how many writes that node says
    it has coordinated, plus slack; ids absent from ``limits`` have none), or a counter
    more than ``max_ahead`` beyond ``base``'s counter for that id (``base``: the replica's
    own set for the key, None = absent; ``max_ahead=None`` disables that check). ``None``
    disables a check. The replica calls it on every set from a peer (RPut, read replies,
    hints, repair) before ``sync_encoded``; a refused set is dropped, so it can never be
    stored and make the key unwritable. Honest counters only grow by one per coordinated
    write, so the default bound (2**32 writes of one key missed) is never hit by them."""

def check_plausible_context(
    ctx: bytes,
    members: Collection[str] | None = None,
    limits: Mapping[str, int] | None = None,
    *,
    base: bytes | DVVSet | None = None,
    max_ahead: int | None = MAX_AHEAD,
) -> None:
    """``check_plausible`` for an encoded client context (``b""`` passes). ``update``
    already applies the ``max_ahead`` check against its server set."""

def sync_encoded(a: bytes | None, b: bytes | None) -> bytes:
    """``sync`` on encoded sets (None = empty), for the replica's hot path. Both inputs are
    validated (ValueError), and a pair ``sync`` refuses raises its ValueError; when one side
    already is the result its bytes are returned."""

def sync_plausible(
    base: bytes | None, incoming: bytes, *, max_ahead: int | None = MAX_AHEAD, lww: bool = False
) -> bytes:
    """``check_plausible(incoming, base=base, max_ahead=max_ahead)`` then
    ``sync_encoded(base, incoming)``, each input decoded once: a replica taking a peer's
    version (the write path's pair). The same ValueError as ``check_plausible`` for an
    implausible or corrupt ``incoming`` (or a corrupt ``base``), and as ``sync`` for an
    ``incoming`` one of whose dots names another write than in ``base``; else the same bytes
    as ``sync_encoded`` -- or, with ``lww``, as ``lww_sync_encoded``."""

def update_encoded(
    server: bytes | None,
    context: bytes,
    value: bytes | None,
    node_id: str,
    wid: bytes = b"",
    *,
    max_ahead: int | None = MAX_AHEAD,
) -> bytes:
    """``update`` on an encoded server set (None = key absent); returns the new encoding."""

def has_value_encoded(data: bytes) -> bool:
    """Whether an encoded set holds a live value (not a tombstone): False for a tombstone and
    for a set with no live sibling at all, computed on the encoded form. ValueError on a
    truncated buffer."""
    ...
def is_tombstone_encoded(data: bytes) -> bool:
    """``DVVSet.decode(data).is_tombstone()`` computed on the encoded form without building the
    set (the replica's write path). ValueError on a truncated buffer."""

RETIRED_MEMORY: int
"""65536: the (key, write id) pairs a ``RetiredWids`` remembers by default."""
RETIRED_FORMAT_VERSION: int
"""1: the first byte of ``RetiredWids.export()``."""

@final
class RetiredWids:
    """A replica's memory of the (key, write id) pairs overwritten where it stores versions:
    rule R (``retired_wids()``) with a longer memory than a set carries. A set lists at most
    4 retired ids per sibling, so a late copy of a write (a retry that reached a slow
    coordinator, a hedged try) arriving after 5 or more overwrites of its key was live again
    beside the newest value. A replica that ``note``s every set it stores remembers the last
    ``cap`` pairs they listed and ``strip``s a late copy of any of them from a set of that key
    before storing it; its dot stays in the set's causal past, so the copy's death spreads
    with sync like any retirement (safe as rule R is: an id is listed only by a write whose
    context covered a copy of that write). Per key, as rule R is: the same id on another key
    is another write. Bounded: ``cap`` pairs of 16-byte digests (~8 MB at the default),
    oldest forgotten first."""

    @property
    def cap(self) -> int: ...
    def __init__(self, cap: int = ...) -> None:
        """ValueError unless ``cap`` >= 1."""
    def note(self, key: bytes, data: bytes) -> int:
        """Remember the ids the live siblings of ``key``'s encoded set ``data`` list as
        retired; returns how many were new. TypeError for non-bytes; ValueError if truncated."""
    def add(self, key: bytes, wid: bytes) -> None:
        """Remember one pair (a write id of 1..32 bytes; ValueError otherwise)."""
    def holds(self, key: bytes, wid: bytes) -> bool:
        """Whether (key, wid) is remembered as overwritten."""
    def strip(self, key: bytes, data: bytes) -> bytes:
        """``key``'s encoded set ``data`` with its live siblings whose (key, write id) is
        remembered, when it has two or more live siblings and one or more of them stays;
        ``data`` itself (the same object) when nothing retires."""
    def __len__(self) -> int: ...
    @property
    def added(self) -> int:
        """Pairs remembered since the memory was made or last ``load``ed (a saver's check for
        change)."""
    def export(self) -> bytes:
        """The memory as bytes, 17 + 16 per pair: version byte (``RETIRED_FORMAT_VERSION``),
        seed (4), pair count (4), the 16-byte digests oldest first, checksum (8; dvv.pyx has
        the layout)."""
    def load(self, data: bytes) -> int:
        """Replace the memory's seed and pairs with an ``export()``'s (the newest ``cap`` of
        them); returns how many it holds, and resets ``added``. ValueError (the memory left
        as it was) for a short, long, damaged or other-version buffer; TypeError for
        non-bytes."""
