"""A page of one ring partition's live keys of one namespace (`zkv keys`, Client.keys): what an
owner answers to Keys.

A listing walks the ring's partitions and asks, for each, one owner that vouches for its copy
(zkv/client/core.py, KeyListing): a coverage read at R=1, as Riak's list-keys is. Within a
partition keys come in key-hash order from the keydir's hash-range query, in windows of the
hash range that grow until they hold a page (no value read for a key of another namespace or
prefix); each candidate's value is read to leave out deleted keys (tombstones). A page ends at
whole groups of equal hashes, so a cursor (the next hash) never splits one, after `limit` keys,
about KEYS_PAGE_BYTES of them or READ_BUDGET bytes of values read (fewer keys where tombstones
were left out, maybe none). With `Keys.values` every stored key comes with its copy (deleted
ones too: a client merging several owners' copies must see a delete one of them missed), and
KEYS_PAGE_BYTES counts the copies' bytes as well. In a namespace with a ttl, expired versions
are left out either way (expiry.py: a read finds nothing either). A key whose write outlived
its own ttl is left out of a page of keys (`hidden`), but its copy goes with a page of values:
the client merges it with the other owners' copies, which it may still hide an older value of
(expiry.served).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from zkv._core import dvv
from zkv.wire import KEYS_PAGE_BYTES, Keys, KeysOk

READ_BUDGET = 16 << 20  # value bytes one page reads at most (past its first hash group):
# a page of large values costs a bounded read, whatever `limit` a client asks for


def answer_keys(store, ring, msg: Keys, ns_prefix: bytes, default_ns: bool,
                expired: Callable[[bytes, bytes], bool] | None = None,
                hidden: Callable[[bytes], bool] | None = None) -> KeysOk:
    """The page of `msg.partition` from `msg.cursor`: the user keys (`ns_prefix` taken off) of
    the namespace whose stored keys begin with `ns_prefix` (`default_ns`: the default
    namespace's, which begin with no 0x00 byte) and with `msg.prefix`, not deleted, and not
    `expired` (stored key, version) if given (a namespace with a ttl: left out, with values
    too, as a read finds nothing), nor, without values, `hidden` (version) if given."""
    lo, hi = ring.partition_range(msg.partition)
    start = max(lo, msg.cursor)
    if start > hi:
        return KeysOk(msg.rid, [], hi, True)
    want = ns_prefix + msg.prefix
    cut = len(ns_prefix)
    # the rest of the partition in hash windows, a 64th of it first and each next one twice
    # as wide, until they hold a page's worth: a page costs about what it lists (sorting the
    # whole rest of the partition for each page made a listing of k keys a partition in pages
    # of p cost ~k*k/2p: benchmarks/keys_listing.py, RESULTS.md)
    listing: list[tuple[int, bytes]] = []
    w_lo, width = start, max(1, (hi - lo + 1) >> 6)
    while w_lo <= hi and len(listing) < msg.limit:
        w_hi = min(hi, w_lo + width - 1)
        listing += sorted((h, k) for k, h in store.key_hashes(w_lo, w_hi)
                          if k.startswith(want) and (not default_ns or k[:1] != b"\x00"))
        w_lo, width = w_hi + 1, width * 2
    keys: list[bytes] = []
    copies: list[bytes] = []
    values = msg.values
    size = read = 0
    nxt = w_lo  # (the first hash not scanned: every one before it is in `listing`)
    for h, group in hash_groups(listing):
        if (keys and (len(keys) >= msg.limit or size >= KEYS_PAGE_BYTES)) or (
                read >= READ_BUDGET):  # (a page of tombstones may be empty, not done)
            nxt = h
            break
        for k in group:
            v = store.get(k)
            if v:
                read += len(v)
                if expired is not None and expired(k, v):
                    continue
                if values:
                    keys.append(k[cut:])
                    copies.append(v)
                    size += len(k) - cut + len(v)
                elif dvv.has_value_encoded(v) and not (hidden is not None and hidden(v)):
                    keys.append(k[cut:])
                    size += len(k) - cut
    # (done: a cursor no one uses)
    return KeysOk(msg.rid, keys, min(nxt, hi), nxt > hi, True, copies)


def hash_groups(listing: list[tuple[int, bytes]]) -> Iterator[tuple[int, list[bytes]]]:
    """(hash, its keys) of each group of equal hashes of a (hash, key) listing sorted by hash:
    a page that stops between groups has a cursor (the next group's hash) that splits none."""
    i, end = 0, len(listing)
    while i < end:
        h = listing[i][0]
        j = i + 1
        while j < end and listing[j][0] == h:
            j += 1
        yield h, [k for _, k in listing[i:j]]
        i = j
