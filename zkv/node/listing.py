"""A page of one ring partition's live keys of one namespace (`zkv keys`, Client.keys): what an
owner answers to Keys.

A listing walks the ring's partitions and asks, for each, one owner that vouches for its copy
(zkv/client/core.py, KeyListing): a coverage read at R=1, as Riak's list-keys is. Within a
partition keys come in key-hash order from the keydir's hash-range query (no value read for a
key of another namespace or prefix); each candidate's value is read to leave out deleted keys
(tombstones). A page ends at whole groups of equal hashes, so a cursor (the next hash) never
splits one, after `limit` keys or about KEYS_PAGE_BYTES of them.
"""

from __future__ import annotations

from zkv._core import dvv
from zkv.wire import KEYS_PAGE_BYTES, Keys, KeysOk


def answer_keys(store, ring, msg: Keys, ns_prefix: bytes, default_ns: bool) -> KeysOk:
    """The page of `msg.partition` from `msg.cursor`: the user keys (`ns_prefix` taken off) of
    the namespace whose stored keys begin with `ns_prefix` (`default_ns`: the default
    namespace's, which begin with no 0x00 byte) and with `msg.prefix`, not deleted."""
    lo, hi = ring.partition_range(msg.partition)
    start = max(lo, msg.cursor)
    if start > hi:
        return KeysOk(msg.rid, [], hi, True)
    want = ns_prefix + msg.prefix
    cut = len(ns_prefix)
    listing = sorted((h, k) for k, h in store.key_hashes(start, hi)
                     if k.startswith(want) and (not default_ns or k[:1] != b"\x00"))
    keys: list[bytes] = []
    size = 0
    nxt = hi + 1
    i = 0
    while i < len(listing):
        h = listing[i][0]
        if keys and (len(keys) >= msg.limit or size >= KEYS_PAGE_BYTES):
            nxt = h
            break
        while i < len(listing) and listing[i][0] == h:
            k = listing[i][1]
            v = store.get(k)
            if v and not dvv.is_tombstone_encoded(v):
                keys.append(k[cut:])
                size += len(k) - cut
            i += 1
    return KeysOk(msg.rid, keys, min(nxt, hi), nxt > hi)  # (done: a cursor no one uses)
