"""The keydir's hash-range query (a ring partition's keys, for anti-entropy and handoff) equals
a brute-force filter, through growth, deletes (backward-shift) and wrap-around of the slots;
and a store holding some partitions' keys only fills its slots as evenly as one holding all."""

from __future__ import annotations

import mmh3
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv._core.keydir import KeyDir
from zkv._core.ring import partition_of
from zkv.storage import LogStore

U64 = 2**64 - 1


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 3000),
    deletes=st.integers(0, 100),
    ranges=st.lists(st.tuples(st.integers(0, U64), st.integers(0, U64)), min_size=1,
                    max_size=8),
    seed=st.integers(0, 1 << 30),
)
def test_hash_range_equals_brute_force(tmp_path_factory, n, deletes, ranges, seed):
    d = tmp_path_factory.mktemp("kr")
    with LogStore(str(d), sync="none") as s:
        keys = [b"k%d-%d" % (seed, i) for i in range(n)]
        for k in keys:
            s.put(k, b"v")
        for k in keys[: min(deletes, n)]:
            s.delete(k)
        live = {k: mmh3.hash64(k, signed=False)[0] for k in keys[min(deletes, n):]}
        assert sorted(s.key_hashes()) == sorted(live.items())
        for a, b in ranges + [(0, U64), (0, 0), (U64, U64)]:
            lo, hi = min(a, b), max(a, b)
            want = sorted((k, h) for k, h in live.items() if lo <= h <= hi)
            assert sorted(s.key_hashes(lo, hi)) == want
        # partitions of a 256-partition ring: every key exactly once
        step = 1 << 56
        total = []
        for p in range(256):
            total += s.key_hashes(p * step, (p + 1) * step - 1)
        assert sorted(total) == sorted(live.items())


def _keys_of(share: int, count: int) -> list[bytes]:
    """`count` keys of the first `share` of a 256-partition ring's partitions."""
    out, i = [], 0
    while len(out) < count:
        k = b"key:%d" % i
        i += 1
        if partition_of(k, 8) < share:
            out.append(k)
    return out


def test_keys_of_a_few_partitions_fill_the_slots_as_evenly_as_keys_of_all():
    """Homes were the hash's top bits, the ring's partition bits: a node holding some of the
    partitions (any cluster of more than N nodes, a joiner receiving its first ones) had its
    keys in those partitions' slot ranges only, at a local load of 0.7 / its share, and
    linear probing ran clusters thousands of slots long (puts 10x slower at 5 nodes, 50-60x
    at 8-12; a joiner took hours: an outside capacity run). Homes now come from the bits
    below the partition bits (keydir.pyx _mix)."""
    for share in (256, 64, 11, 3):
        kd = KeyDir()
        keys = _keys_of(share, 20_000)
        for i, k in enumerate(keys):
            kd.set(k, 1, i, 10, 0)
        assert kd.longest_run() < 100, (share, kd.longest_run())
        assert sorted(k for k, _ in kd.hash_range()) == sorted(keys)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["set", "set", "set", "remove", "remove_if",
                                               "trim", "reserve"]),
                              st.integers(0, 2500), st.integers(0, 3)), max_size=400),
       bulk=st.integers(0, 3000), share=st.sampled_from([256, 40, 2]),
       ranges=st.lists(st.tuples(st.integers(0, U64), st.integers(0, U64)), max_size=6))
def test_region_lists_match_a_model_through_inserts_removals_and_resizes(ops, bulk, share,
                                                                          ranges):
    """hash_range reads the region lists (keydir.pxd): through inserts, overwrites, removals
    (which move the last entry into the hole), growth and trims (the region count follows
    the table's size), it answers what a brute-force filter of a model does."""
    keys = _keys_of(share, 2501)
    kd = KeyDir()
    model: dict[bytes, int] = {}
    for i in range(bulk):  # (past a few resizes: 1024 slots hold 716 keys)
        kd.set(keys[i % 2501], 1, i, 10, 0)
        model[keys[i % 2501]] = i
    for op, i, x in ops:
        k = keys[i]
        if op == "set":
            kd.set(k, 2, i, 10, 1 if x == 3 else 0)  # (a tombstone: kept, not listed)
            model[k] = -1 if x == 3 else i
        elif op == "remove":
            assert kd.remove(k) == (k in model)
            model.pop(k, None)
        elif op == "remove_if":
            e = kd.lookup(k)
            if e is not None and kd.remove_if(k, e[0], e[1]):
                model.pop(k)
        elif op == "trim":
            kd.trim()
        else:
            kd.reserve(x * 1000)
    live = {k: mmh3.hash64(k, signed=False)[0] for k, v in model.items() if v != -1}
    assert sorted(kd.hash_range()) == sorted(live.items())
    for a, b in ranges + [(0, 0), (U64, U64)]:
        lo, hi = min(a, b), max(a, b)
        assert sorted(kd.hash_range(lo, hi)) == sorted(
            (k, h) for k, h in live.items() if lo <= h <= hi)
    step = 1 << 56
    parts = [kd.hash_range(p * step, (p + 1) * step - 1) for p in range(256)]
    assert sorted(x for p in parts for x in p) == sorted(live.items())
    assert len(kd) == len(live) and all(kd.contains(k) for k in live)


def test_partition_bytes_sums_live_records_per_partition_with_namespaced_keys_apart():
    kd = KeyDir()
    sizes: dict[int, int] = {}
    apart = []
    for i in range(3000):
        key = (b"\x00ns\x00" if i % 7 == 0 else b"") + b"k%d" % i
        size = 20 + i % 97
        tomb = i % 11 == 0
        kd.set(key, 1, i, size, 1 if tomb else 0)
        if tomb:
            continue
        if key[0] == 0:
            apart.append((key, size))
        else:
            p = partition_of(key, 6)
            sizes[p] = sizes.get(p, 0) + size
    got, got_apart = kd.partition_bytes(6)
    assert got == [sizes.get(p, 0) for p in range(64)]
    assert sorted(got_apart) == sorted(apart)
    whole, none_apart = kd.partition_bytes(6, False)
    assert not none_apart and sum(whole) == sum(sizes.values()) + sum(s for _, s in apart)
