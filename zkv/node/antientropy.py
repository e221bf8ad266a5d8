"""Merkle anti-entropy: trees kept current on every write, exchanges between replicas, the
answers a replica gives to a peer's exchange, and tombstone reaping with the bookkeeping that
makes it safe. No sockets here: the node core routes messages to these functions and the
background scheduler (`background.py`) decides when exchanges and reaping passes run.

Trees: one `zkv._core.merkle.MerkleTree` per partition this node holds keys of; a key's entry
is (key, version digest) where the digest is murmur3-128 of the stored (canonical) DVV bytes,
so equal versions on two replicas give equal digests without decoding. `on_change` updates
the tree in O(1) on every local write; `rebuild` (start-up, or after corruption) re-reads the
store once.

Exchange (riak_core `hashtree` style, driven by `Exchange` step objects): compare roots; walk
only differing subtrees one level per round trip; list (key, digest) of the differing leaves on
both sides; push our differing versions, pull theirs. Only differing keys' versions travel.
The roots of a whole planning round are compared first, one round trip per peer for all its
partitions (`check_roots`); only the partitions whose roots differ are exchanged. (One
exchange per partition, even when the roots agreed, cost an idle 3-node cluster about 80
exchanges per second per node, most of its idle CPU.)

Tombstones (delete = a DVV whose siblings are all tombstones) are reaped only when (a) every
other owner of the partition agreed with us in an exchange that *started after* we stored
the tombstone (so each owner held it) and (b) the grace period passed. A replica down during
the delete never agreed, so nothing is reaped until it is back and has the tombstone; it can
therefore never bring the value back. Known limit (as in Dynamo/Riak): a hint holding an
*older* value whose delivery is delayed beyond the grace period could resurrect it; the grace
period (default 60 s) is meant to exceed hint delivery time.

Reap memory. A replica that reaped a tombstone remembers it for an echo window (2 x grace
+ 60 s): a copy of it coming back is ignored, a late copy of a write it deleted is retired,
and a re-add continues above its dots (replica.py). The memory is journaled in the handoff
store (`journal`) and restored at start: kept in memory only, a restart forgot it, and a
late retry of a deleted put came back on the restarted owners while another owner still
refused it (simulate.py --client core --loss 0.05 --dup 0.02 --partitions 4 --pauses 2
--crashes 2 --power-losses 1, seeds 477, 559, 586: "deleted value came back").

Namespaces (issue 15): a partition's owners depend on the namespace's N, so the node keeps
one `AntiEntropy` per N (NodeCore.ae_for) and an exchange, a leaf listing or a pull is about
the keys of one N only (`accept`: a predicate on the stored key); reaping asks the ring of
that N for the owners. The wire messages name the N (TreeLevel.n etc., 0 = the cluster's).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Protocol

import mmh3

from zkv._core.dvv import DVVSet, is_tombstone_encoded
from zkv._core.merkle import MerkleTree
from zkv._core.ring import Ring, partition_of
from zkv.wire import LeafKeys, LeafKeysOk, Reap, RGetHashes, RGetHashesOk, TreeLevel, TreeLevelOk

LEAF_BITS = 10  # 1024 leaves per partition: ~4 keys per leaf at 1M keys / 256 partitions
FANOUT_BITS = 2  # 4 children per inner node: a narrow walk sends few hashes per divergent key
WIRE_HASH = 8  # bytes of each version digest compared over the wire (leaf listings)
TREE_HASH = 6  # bytes of each tree node hash compared over the wire. A false "equal" hides a
# subtree's divergence only until its next write (odds 2**-48 per comparison); it saves a
# quarter of the walk's bytes, the largest share of a small divergence's cost.


def vdigest(encoded: bytes) -> bytes:
    """16-byte digest of a stored version (the canonical encoded DVV set)."""
    return mmh3.hash_bytes(encoded)


class ReapJournal(Protocol):
    def remember_reap(self, key: bytes, digest: bytes, version: bytes) -> None: ...
    def forget_reap(self, key: bytes) -> None: ...



def echo_window(grace: float) -> float:
    """Seconds a replica remembers a tombstone it reaped (the reap memory above): after that
    a copy of the deleted value is taken as new, so data older than this (a snapshot restored)
    would bring deletes back (snapshots.check_restored)."""
    return 2 * grace + 60

class AntiEntropy:
    def __init__(self, q_bits: int, clock: Callable[[], float], grace: float = 60.0) -> None:
        self.q_bits = q_bits
        self.clock = clock
        self.grace = grace
        self.trees: dict[int, MerkleTree] = {}
        self.tombstones: dict[bytes, float] = {}  # key -> when this replica stored the tombstone
        self.agreed: dict[tuple[int, str], float] = {}  # (partition, peer) -> exchange start time
        # (partition, peer) -> start of the last exchange after which nothing was left to
        # pull from the peer (agreement, or every differing key fetched): refill tracking
        self.synced: dict[tuple[int, str], float] = {}
        self.refilled: set[int] = set()  # partitions verified since the refill began
        # key -> (digest, when, the reaped tombstone's encoding)
        self.recently_reaped: dict[bytes, tuple[bytes, float, bytes]] = {}
        # durable reap memory (handoff.HandoffStore's reap journal): remember_reap(key, digest,
        # version) and forget_reap(key); None: in memory only
        self.journal: ReapJournal | None = None
        self.echo_window = echo_window(grace)  # seconds a reap is remembered
        self.stats = {"exchanges": 0, "keys_repaired": 0, "bytes_sent": 0, "agreements": 0,
                      "reaped": 0, "root_checks": 0}

    def tree(self, p: int) -> MerkleTree:
        t = self.trees.get(p)
        if t is None:
            t = self.trees[p] = MerkleTree(self.q_bits, LEAF_BITS, FANOUT_BITS)
        return t

    # ---- keeping trees current -----------------------------------------------------------------
    def on_change(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        # on every write: one C call for the tree (digests computed inside, == vdigest) and
        # one for the tombstone check, no decoding
        p = partition_of(key, self.q_bits)
        t = self.trees.get(p)
        if t is None:
            t = self.tree(p)
        t.replace_versions(key, old, new)
        if new and is_tombstone_encoded(new):
            self.tombstones.setdefault(key, self.clock())
        elif self.tombstones:
            self.tombstones.pop(key, None)

    def rebuild(self, items: Iterable[tuple[bytes, bytes]]) -> int:
        self.trees.clear()
        self.tombstones.clear()
        per_part: dict[int, tuple[list, list]] = {}
        now = self.clock()
        n = 0
        for key, value in items:
            ks, ds = per_part.setdefault(partition_of(key, self.q_bits), ([], []))
            ks.append(key)
            ds.append(vdigest(value))
            if is_tombstone_encoded(value):
                self.tombstones[key] = now
            n += 1
        for p, (ks, ds) in per_part.items():
            self.tree(p).insert_many(ks, ds)
        return n

    def rebuild_partition(self, p: int, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild one partition's tree from what the store holds now: after the engine found a
        corrupt record, whose old digest the tree still counts."""
        t = self.tree(p)
        t.clear()
        keys, digests = [], []
        for key, value in items:
            keys.append(key)
            digests.append(vdigest(value))
        t.insert_many(keys, digests)

    # ---- agreement and reaping ----------------------------------------------------------------
    def record_agreement(self, p: int, peer: str, started: float) -> None:
        self.agreed[(p, peer)] = max(started, self.agreed.get((p, peer), -1e18))
        self.stats["agreements"] += 1

    def record_sync(self, p: int, peer: str, started: float) -> None:
        """An exchange that started at `started` left nothing to pull from `peer`."""
        self.synced[(p, peer)] = max(started, self.synced.get((p, peer), -1e18))

    def unsure(self, p: int, others: Iterable[str], since: float) -> bool:
        """Refilling since `since` (this node lost its data): True while some other owner of
        partition `p` has not been exchanged with, to the end, in an exchange that started
        after that; a read of the partition may lack a write this node lost until then."""
        if p in self.refilled:
            return False
        if self.exchanged_since(p, others, since):
            self.refilled.add(p)
            return False
        return True

    def exchanged_since(self, p: int, others: Iterable[str], since: float) -> bool:
        """Has every node of `others` been exchanged with about partition `p`, to the end, in
        an exchange that started at `since` or later?"""
        agreed, synced = self.agreed, self.synced
        return all(max(agreed.get((p, x), -1e18), synced.get((p, x), -1e18)) >= since
                   for x in others)

    def last_full_agreement(self, p: int, peers: Iterable[str]) -> float | None:
        times = [self.agreed.get((p, x)) for x in peers]
        if not times:  # no other owner: trivially in agreement
            return self.clock()
        known = [t for t in times if t is not None]
        return min(known) if len(known) == len(times) else None

    def reapable(self, owners_of: Callable[[int], Iterable[str]], me: str) -> list[bytes]:
        """Tombstones every other owner is known to hold, older than the grace period."""
        now = self.clock()
        out = []
        for key, since in self.tombstones.items():
            if now - since < self.grace:
                continue
            p = partition_of(key, self.q_bits)
            others = [x for x in owners_of(p) if x != me]
            if all(self.agreed.get((p, x), -1e18) > since for x in others):
                out.append(key)
        return out

    def note_reaped(self, key: bytes, digest: bytes, version: bytes) -> None:
        self.tombstones.pop(key, None)
        self.recently_reaped[key] = (digest, self.clock(), version)
        self.stats["reaped"] += 1
        if self.journal is not None:
            self.journal.remember_reap(key, digest, version)

    def restore_reap(self, key: bytes, digest: bytes, age: float, version: bytes) -> bool:
        """A journaled reap `age` seconds old, after a restart: remembered for the rest of its
        echo window (False, and dropped from the journal, when that is over)."""
        if age > self.echo_window:
            if self.journal is not None:
                self.journal.forget_reap(key)
            return False
        self.recently_reaped[key] = (digest, self.clock() - max(0.0, age), version)
        return True

    def _forget_reap(self, key: bytes) -> None:
        del self.recently_reaped[key]
        if self.journal is not None:
            self.journal.forget_reap(key)

    def forget_old_reaps(self) -> None:
        """Drop reap memories past their echo window (called with the periodic reap pass)."""
        horizon = self.clock() - self.echo_window
        for key in [k for k, (_, when, _) in self.recently_reaped.items() if when < horizon]:
            self._forget_reap(key)

    def reaped_past(self, key: bytes) -> bytes | None:
        """The causal past of key's tombstone if this replica reaped it recently."""
        hit = self.recently_reaped.get(key)
        return DVVSet.decode(hit[2]).context() if hit else None

    def reaped_version(self, key: bytes) -> bytes | None:
        """The encoded tombstone of key if this replica reaped it recently: its retired write
        ids still retire late copies of the writes it deleted (dvv rule R)."""
        hit = self.recently_reaped.get(key)
        return hit[2] if hit else None

    def is_reaped_echo(self, key: bytes, incoming: bytes) -> bool:
        """An incoming version equal to a tombstone we just reaped: ignore it (no ping-pong)."""
        hit = self.recently_reaped.get(key)
        if hit is None:
            return False
        digest, when, _ = hit
        if self.clock() - when > self.echo_window:
            self._forget_reap(key)
            return False
        return digest == vdigest(incoming)


def leaf_keys(store, tree: MerkleTree, lo: int, hi: int, leaves: Iterable[int],
              accept: Callable[[bytes], bool] | None = None) -> dict[int, tuple[bytes, bytes]]:
    """{key hash: (key, version digest)} of the keys `store` holds in those leaves of the
    partition whose hash range is [lo, hi] (and that `accept`, when given, accepts: the keys
    of one N); lists keys from the keydir, reads only their values."""
    want = set(leaves)
    out = {}
    for key, h in store.key_hashes(lo, hi):
        if tree.leaf_of_hash(h) in want and (accept is None or accept(key)):
            value = store.get(key)
            if value:
                out[h] = (key, vdigest(value))
    return out


def pack_hashes(hashes: Iterable[bytes]) -> bytes:
    """Tree hashes on the wire: their first TREE_HASH bytes, concatenated."""
    return b"".join(h[:TREE_HASH] for h in hashes)


def unpack_hashes(data: bytes, count: int) -> list[bytes]:
    if len(data) != count * TREE_HASH:
        raise ValueError(f"expected {count} hashes of {TREE_HASH} bytes, got {len(data)} bytes")
    return [data[i:i + TREE_HASH] for i in range(0, len(data), TREE_HASH)]


def level_size(tree: MerkleTree, level: int) -> int:
    bits = tree.leaf_bits - (tree.depth - level) * tree.fanout_bits
    return 1 << max(0, bits)


def children(tree: MerkleTree, level: int, parents: list[int]) -> list[int]:
    """Indices at `level` of the children of `parents` (nodes of level - 1); level 0: the root.

    Node i at level L has children i*k .. i*k+k-1 at level L+1 (the root's level may be
    shorter). ValueError for a level or parent out of range (peer input)."""
    if level == 0:
        return [0]
    if not 0 < level <= tree.depth:
        raise ValueError(f"level {level} out of range")
    size = level_size(tree, level)
    k = 1 << tree.fanout_bits
    if len(parents) > level_size(tree, level - 1) or any(
            not 0 <= i < level_size(tree, level - 1) for i in parents):
        raise ValueError("parent index out of range")
    return [c for i in parents for c in range(i * k, min(i * k + k, size))]


def pack_listing(listing: dict[int, tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """A leaf listing on the wire: u64 LE key hashes and WIRE_HASH-byte digest prefixes."""
    hashes = sorted(listing)
    return (struct.pack(f"<{len(hashes)}Q", *hashes),
            b"".join(listing[h][1][:WIRE_HASH] for h in hashes))


def unpack_listing(hashes: bytes, digests: bytes) -> dict[int, bytes]:
    n = len(hashes) // 8
    if len(hashes) != 8 * n or len(digests) != WIRE_HASH * n:
        raise ValueError("malformed leaf listing")
    hs = struct.unpack(f"<{n}Q", hashes)
    return {h: digests[i * WIRE_HASH:(i + 1) * WIRE_HASH] for i, h in enumerate(hs)}


class Exchange:
    """One exchange of partition `p` with `peer`, as a sequence of steps.

    `next_request()` returns what to ask the peer next: ("level", level, parents) (the
    hashes of the children of `parents`, or the root for level 0) or ("keys", leaves) or
    None when the walk is finished; `on_level(hashes)` and
    `on_keys(listing)` feed the answers back (hashes may be truncated to WIRE_HASH bytes; the
    listing maps key hash -> digest prefix). Then `push` names our keys to send and `pull` the
    key hashes to fetch from the peer.

    Wire cost per divergent key is about fanout x depth x WIRE_HASH bytes for the walk plus
    8 + WIRE_HASH per key listed in its leaf: the tree is narrow (fanout 4) and leaves small
    (~4 keys at 1M keys per 256 partitions) so that a small divergence moves little more than
    the divergent records themselves.
    """

    def __init__(self, tree: MerkleTree, p: int, peer: str, started: float,
                 local_keys: Callable[[list[int]], dict[int, tuple[bytes, bytes]]],
                 n: int = 0) -> None:
        self.tree = tree
        self.n = n  # the N-group exchanged (0: the cluster's N); goes in every request
        self.p = p
        self.peer = peer
        self.started = started
        self.local_keys = local_keys  # leaves -> {key hash: (key, digest)} held locally
        self.level = 0
        self.parents: list[int] = []
        self.indices = [0]  # the nodes asked for: children(level, parents)
        self.leaves: list[int] | None = None
        self.agreed = False
        self.push: list[bytes] = []
        self.pull: list[int] = []
        self.finished = False
        self.round_trips = 0

    def next_request(self):
        if self.finished:
            return None
        if self.leaves is not None:
            return ("keys", self.leaves)
        return ("level", self.level, self.parents)

    def on_level(self, remote: list[bytes]) -> None:
        self.round_trips += 1
        local = self.tree.level_hashes(self.level, self.indices)
        if len(remote) != len(local):
            raise ValueError("peer answered with a different tree shape")
        differing = [i for i, a, b in zip(self.indices, local, remote, strict=True)
                     if a[:len(b)] != b]
        if not differing:
            self.agreed = self.level == 0
            self.finished = True
            return
        if self.level == self.tree.depth:
            self.leaves = differing
            return
        self.level += 1
        self.parents = differing
        self.indices = children(self.tree, self.level, differing)

    def on_keys(self, theirs: dict[int, bytes]) -> None:
        self.round_trips += 1
        ours = self.local_keys(self.leaves or [])
        self.push = [key for h, (key, d) in ours.items() if theirs.get(h) != d[:WIRE_HASH]]
        self.pull = [h for h, d in theirs.items() if h not in ours or ours[h][1][:WIRE_HASH] != d]
        self.finished = True


# ---- answering a peer's exchange, and reaping ------------------------------------------------------
def _valid(ring: Ring, p: int) -> bool:
    return 0 <= p < ring.q


def answer_tree_level(ae: AntiEntropy | None, ring: Ring, msg: TreeLevel) -> TreeLevelOk:
    """The hashes a peer asked for (empty when a partition or index is out of range); at
    level 0 with `more`, the roots of `partition` and of each of `more`, in that order."""
    hashes = b""
    if msg.more:
        if ae is not None and msg.level == 0 and all(
                _valid(ring, p) for p in (msg.partition, *msg.more)):
            hashes = pack_hashes(ae.tree(p).root() for p in (msg.partition, *msg.more))
        return TreeLevelOk(msg.rid, hashes)
    if ae is not None and _valid(ring, msg.partition):
        tree = ae.tree(msg.partition)
        try:
            hashes = pack_hashes(tree.level_hashes(msg.level,
                                                   children(tree, msg.level, msg.parents)))
        except ValueError:
            hashes = b""
    return TreeLevelOk(msg.rid, hashes)


def check_roots(ae: AntiEntropy, parts: list[int], answer: bytes
                ) -> tuple[list[int], list[int]]:
    """A peer's roots for `parts` (its TreeLevelOk to a TreeLevel asking for them at once):
    (the partitions whose root equals ours, the rest). The rest is every partition the
    answer does not cover: all of them for an empty or malformed answer, all but the first
    when the peer answered one root (a node that predates TreeLevel.more)."""
    if len(answer) == TREE_HASH * len(parts):
        remote = unpack_hashes(answer, len(parts))
    elif len(answer) == TREE_HASH:
        remote = [answer]
    else:
        remote = []
    agreed, differ = [], []
    for i, p in enumerate(parts):
        if i < len(remote) and ae.tree(p).root()[:TREE_HASH] == remote[i]:
            agreed.append(p)
        else:
            differ.append(p)
    return agreed, differ


def answer_leaf_keys(ae: AntiEntropy | None, store, ring: Ring, msg: LeafKeys,
                     accept: Callable[[bytes], bool] | None = None) -> LeafKeysOk:
    listing = {}
    if ae is not None and _valid(ring, msg.partition):
        lo, hi = ring.partition_range(msg.partition)
        listing = leaf_keys(store, ae.tree(msg.partition), lo, hi, msg.leaves, accept)
    return LeafKeysOk(msg.rid, *pack_listing(listing))


def answer_versions(ae: AntiEntropy | None, store, ring: Ring, msg: RGetHashes,
                    accept: Callable[[bytes], bool] | None = None,
                    read: Callable[[bytes], bytes | None] | None = None) -> RGetHashesOk:
    """The versions of the partition's keys whose u64 hashes the peer listed (its pull).
    `read`: how a version is read (the node's Replica.read: an expired one is dropped then,
    not sent, expiry.py); the store's get by default."""
    if ae is None or not _valid(ring, msg.partition) or len(msg.hashes) % 8:
        return RGetHashesOk(msg.rid, [], [])
    want = set(struct.unpack(f"<{len(msg.hashes) // 8}Q", msg.hashes))
    lo, hi = ring.partition_range(msg.partition)
    keys, dvvs = [], []
    get = store.get if read is None else read
    for key, h in store.key_hashes(lo, hi):
        if h in want and (accept is None or accept(key)):
            value = get(key)
            if value:
                keys.append(key)
                dvvs.append(value)
    return RGetHashesOk(msg.rid, keys, dvvs)


def apply_reap(ae: AntiEntropy | None, replica, msg: Reap) -> None:
    """A peer reaped these tombstones: drop ours if we hold exactly the same version."""
    if ae is None or len(msg.keys) != len(msg.digests):
        return
    for key, digest in zip(msg.keys, msg.digests, strict=True):
        cur = replica.store.get(key)
        if cur and vdigest(cur) == digest and is_tombstone_encoded(cur):
            replica.reap(key)
            ae.note_reaped(key, digest, cur)


def reap_pass(ae: AntiEntropy, replica, ring: Ring, me: str, limit: int = 1000
              ) -> dict[str, Reap]:
    """Reap what is safe to reap now; returns the Reap announcement for each other owner."""
    ae.forget_old_reaps()
    by_peer: dict[str, tuple[list, list]] = {}
    for key in ae.reapable(ring.preflist, me)[:limit]:
        old = replica.reap(key)
        if old is None:
            continue
        digest = vdigest(old)
        ae.note_reaped(key, digest, old)
        for peer in ring.preflist_for_key(key):
            if peer != me:
                ks, ds = by_peer.setdefault(peer, ([], []))
                ks.append(key)
                ds.append(digest)
    return {peer: Reap(0, ks, ds) for peer, (ks, ds) in by_peer.items()}
