"""Behaviour of zkv._core.merkle.MerkleTree: order independence, inverses, lazy hashing, diff."""

from __future__ import annotations

import random

import blake3
import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv._core.merkle import WIRE_VERSION, MerkleTree

ZERO = bytes(16)
keys_st = st.binary(min_size=0, max_size=40)
digest_st = st.binary(min_size=16, max_size=16)
entries_st = st.lists(st.tuples(keys_st, digest_st), max_size=40)
# small trees so that leaves collide and the shorter top level is exercised
shape_st = st.sampled_from([(0, 1, 1), (8, 3, 2), (8, 5, 2), (4, 6, 4), (8, 10, 4), (0, 7, 3)])


def build(entries, shape=(8, 10, 4)):
    t = MerkleTree(*shape)
    for k, d in entries:
        t.insert(k, d)
    return t


def nodes_at(t, level):
    return 2 ** max(0, t.leaf_bits - (t.depth - level) * t.fanout_bits)


def local_remote(tree, calls=None):
    def remote(level, indices):
        if calls is not None:
            calls.append((level, list(indices)))
        return tree.level_hashes(level, indices)

    return remote


def wire_remote(tree, calls=None):
    def remote(level, indices):
        if calls is not None:
            calls.append((level, list(indices)))
        return MerkleTree.decode_level(tree.encode_level(level, indices))

    return remote


# -- shape and placement -------------------------------------------------------------------


def test_shape_defaults():
    t = MerkleTree()
    assert (t.q_bits, t.leaf_bits, t.fanout_bits) == (8, 10, 4)
    assert t.leaves == 1024
    assert t.depth == 3  # 1024 leaves -> 64 -> 4 -> root: the top level is shorter
    assert t.root() == ZERO
    assert t.count() == 0
    assert len(t.level_hashes(1, range(4))) == 4
    with pytest.raises(ValueError):
        t.level_hashes(1, [4])


@pytest.mark.parametrize(
    "q,leaf,fan,depth", [(0, 1, 1, 1), (8, 10, 5, 2), (0, 12, 16, 1), (56, 8, 3, 3), (40, 24, 8, 3)]
)
def test_depth(q, leaf, fan, depth):
    t = MerkleTree(q, leaf, fan)
    assert t.depth == depth
    assert t.leaves == 2**leaf
    t.insert(b"k", b"v" * 16)
    assert len(t.root()) == 16 and t.root() != ZERO


@pytest.mark.parametrize(
    "args",
    [
        (8, 0, 4),
        (8, -1, 4),
        (-1, 10, 4),
        (60, 10, 4),
        (8, 10, 0),
        (8, 10, 17),
        (0, 25, 4),
        (8, 57, 4),
    ],
)
def test_bad_params(args):
    with pytest.raises(ValueError):
        MerkleTree(*args)


def test_leaf_placement_matches_murmur3():
    for q, leaf in [(0, 1), (8, 10), (0, 24), (40, 24), (63, 1), (54, 10)]:
        t = MerkleTree(q, leaf, 4)
        for i in range(200):
            key = f"key-{i}".encode()
            h = mmh3.hash64(key, signed=False)[0]
            expect = ((h << q) & (2**64 - 1)) >> (64 - leaf)
            assert t.leaf_of(key) == expect == t.leaf_of_hash(h)
    t = MerkleTree()
    for bad in (-1, 2**64, 1.5, True):  # (1.5 was taken as leaf 0)
        with pytest.raises(ValueError):
            t.leaf_of_hash(bad)


def test_bad_digest_sizes():
    t = MerkleTree()
    for bad in (b"", b"x" * 15, b"x" * 17, b"x" * 32):
        with pytest.raises(ValueError):
            t.insert(b"k", bad)
        with pytest.raises(ValueError):
            t.remove(b"k", bad)
        with pytest.raises(ValueError):
            t.replace(b"k", bad, ZERO)
        with pytest.raises(ValueError):
            t.replace(b"k", ZERO, bad)
    with pytest.raises(TypeError):
        t.insert("k", ZERO)
    assert t.count() == 0 and t.root() == ZERO


def test_insert_many_bad_input_leaves_tree_unchanged():
    t = build([(b"a", b"1" * 16), (b"b", b"2" * 16)])
    before = (t.root(), t.count())
    with pytest.raises(ValueError):
        t.insert_many([b"x", b"y"], [b"3" * 16])
    with pytest.raises(ValueError):
        t.insert_many([b"x", b"y", b"z"], [b"3" * 16, b"4" * 16, b"short"])
    with pytest.raises(TypeError):
        t.insert_many([b"x", 5], [b"3" * 16, b"4" * 16])
    with pytest.raises(ValueError):  # fails after a mix of fast and bytes-like items
        t.insert_many([b"x", bytearray(b"y"), b"z", b"w"], [b"3" * 16] * 3 + [b"bad"])
    assert (t.root(), t.count()) == before


def test_bytes_like_arguments():
    a = build([(b"key", b"d" * 16)])
    b = MerkleTree()
    b.insert(bytearray(b"key"), memoryview(b"d" * 16))
    assert a.root() == b.root()
    c = MerkleTree()
    c.insert_many((bytearray(b"key"),), [memoryview(b"d" * 16)])
    assert c.root() == a.root()
    assert a.leaf_of(memoryview(b"key")) == a.leaf_of(b"key")
    mixed = [b"a", bytearray(b"b"), b"c", memoryview(b"d"), b"e"]
    d = [b"1" * 16, b"2" * 16, bytearray(b"3" * 16), b"4" * 16, b"5" * 16]
    m = MerkleTree()
    m.insert_many(mixed, d)
    assert m.root() == build([(bytes(k), bytes(v)) for k, v in zip(mixed, d, strict=True)]).root()
    assert m.count() == 5


# -- algebra -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(entries_st, shape_st, st.randoms(use_true_random=False))
def test_insertion_order_independent(entries, shape, rnd):
    a = build(entries, shape)
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    b = build(shuffled, shape)
    c = MerkleTree(*shape)
    c.insert_many([k for k, _ in shuffled], [d for _, d in shuffled])
    assert a.root() == b.root() == c.root()
    assert a.count() == b.count() == c.count() == len(entries)
    leaves = range(a.leaves)
    assert a.level_hashes(a.depth, leaves) == c.level_hashes(c.depth, leaves)


@settings(max_examples=60, deadline=None)
@given(entries_st, entries_st, shape_st)
def test_insert_then_remove_is_identity(base, extra, shape):
    t = build(base, shape)
    before = t.root()
    for k, d in extra:
        t.insert(k, d)
    for k, d in reversed(extra):
        t.remove(k, d)
    assert t.root() == before
    for k, d in base:
        t.remove(k, d)
    assert t.root() == ZERO
    assert t.count() == 0
    assert all(h == ZERO for h in t.level_hashes(t.depth, range(t.leaves)))


def test_distinct_contents_distinct_roots():
    key = b"cart:42"
    roots = {build([(key, bytes([i]) * 16)]).root() for i in range(256)}
    assert len(roots) == 256  # the version digest matters
    roots = {build([(bytes([i]), ZERO)]).root() for i in range(256)}
    assert len(roots) == 256
    # a multiset, not a set: a duplicate entry counts twice
    assert build([(key, ZERO)]).root() != build([(key, ZERO), (key, ZERO)]).root()


def test_replace_semantics():
    v1, v2 = b"1" * 16, b"2" * 16
    t = MerkleTree()
    t.replace(b"k", None, v1)
    assert t.root() == build([(b"k", v1)]).root() and t.count() == 1
    t.replace(b"k", v1, v2)
    assert t.root() == build([(b"k", v2)]).root() and t.count() == 1
    t.replace(b"k", v2, v2)
    assert t.root() == build([(b"k", v2)]).root() and t.count() == 1
    t.replace(b"k", None, None)
    assert t.count() == 1
    t.replace(b"k", v2, None)
    assert t.root() == ZERO and t.count() == 0


def test_clear():
    t = build([(bytes([i]), b"v" * 16) for i in range(100)])
    assert t.root() != ZERO
    t.clear()
    assert t.root() == ZERO and t.count() == 0
    t.insert(b"a", ZERO)
    assert t.root() == build([(b"a", ZERO)]).root()


def test_inner_hash_format():
    """Inner node = blake3(children)[:16]; all-zero children -> zero; leaf = LE sum of digests."""
    t = MerkleTree(0, 4, 2)  # 16 leaves -> 4 -> root
    t.insert(b"x", b"v" * 16)
    leaf = t.leaf_of(b"x")
    parent = leaf // 4
    kids = b"".join(t.level_hashes(2, range(parent * 4, parent * 4 + 4)))
    assert t.level_hashes(1, [parent]) == [blake3.blake3(kids).digest(16)]
    assert all(h == ZERO for i, h in enumerate(t.level_hashes(1, range(4))) if i != parent)
    level1 = b"".join(t.level_hashes(1, range(4)))
    assert t.root() == blake3.blake3(level1).digest(16)
    # the leaf is the digest itself; two entries add mod 2**128
    d1 = int.from_bytes(t.level_hashes(2, [leaf])[0], "little")
    u = MerkleTree(0, 4, 2)
    u.insert(b"x", b"w" * 16)
    d2 = int.from_bytes(u.level_hashes(2, [leaf])[0], "little")
    t.insert(b"x", b"w" * 16)
    both = int.from_bytes(t.level_hashes(2, [leaf])[0], "little")
    assert both == (d1 + d2) % 2**128


# -- lazy recompute ------------------------------------------------------------------------


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("ins"), keys_st, digest_st),
        st.tuples(st.just("del"), st.integers(0, 10**6)),
        st.tuples(st.just("root")),
        st.tuples(st.just("level"), st.integers(0, 10**6)),
    ),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(ops_st, shape_st)
def test_lazy_recompute_matches_fresh_build(ops, shape):
    t = MerkleTree(*shape)
    live: list[tuple[bytes, bytes]] = []
    for op in ops:
        if op[0] == "ins":
            t.insert(op[1], op[2])
            live.append((op[1], op[2]))
        elif op[0] == "del" and live:
            k, d = live.pop(op[1] % len(live))
            t.remove(k, d)
        elif op[0] == "root":
            t.root()
        elif op[0] == "level":
            level = op[1] % (t.depth + 1)
            t.level_hashes(level, [0])
    fresh = build(live, shape)
    assert t.root() == fresh.root()
    assert t.count() == len(live)
    for level in range(t.depth + 1):
        n = nodes_at(t, level)
        assert t.level_hashes(level, range(n)) == fresh.level_hashes(level, range(n))


# -- diff ----------------------------------------------------------------------------------


def random_entries(n, seed):
    rng = random.Random(seed)
    return [(rng.randbytes(16), rng.randbytes(16)) for _ in range(n)]


@pytest.mark.parametrize("wire", [False, True])
def test_equal_trees_one_call(wire):
    entries = random_entries(500, 1)
    a, b = build(entries), build(reversed(entries))
    calls = []
    make = wire_remote if wire else local_remote
    assert a.diff(make(b, calls)) == []
    assert calls == [(0, [0])]
    calls.clear()
    assert MerkleTree().diff(make(MerkleTree(), calls)) == [] and len(calls) == 1


@pytest.mark.parametrize("shape", [(8, 10, 4), (0, 7, 3), (8, 12, 5), (8, 1, 1)])
def test_diff_finds_exactly_the_changed_leaves(shape):
    entries = random_entries(2000, 2)
    a, b = build(entries, shape), build(entries, shape)
    rng = random.Random(3)
    changed = set()
    for k, d in rng.sample(entries, 5):  # a new version on b
        b.replace(k, d, rng.randbytes(16))
        changed.add(b.leaf_of(k))
    k = b"only-on-a"
    a.insert(k, ZERO)  # a key b lacks
    changed.add(a.leaf_of(k))
    k, d = entries[7]
    b.remove(k, d)  # a key a has and b lost
    changed.add(b.leaf_of(k))
    calls = []
    got = a.diff(local_remote(b, calls))
    assert got == sorted(changed)
    assert len(calls) == a.depth + 1
    assert [lvl for lvl, _ in calls] == list(range(a.depth + 1))
    assert a.diff(wire_remote(b)) == got
    assert b.diff(local_remote(a)) == got  # symmetric


@settings(max_examples=40, deadline=None)
@given(entries_st, entries_st, entries_st, shape_st)
def test_diff_property(common, only_a, only_b, shape):
    a = build(common + only_a, shape)
    b = build(only_b + common, shape)
    got = a.diff(wire_remote(b))
    assert got == sorted(set(got))
    la = a.level_hashes(a.depth, range(a.leaves))
    lb = b.level_hashes(b.depth, range(b.leaves))
    assert got == [i for i in range(a.leaves) if la[i] != lb[i]]
    assert set(got) <= {a.leaf_of(k) for k, _ in only_a + only_b}


def test_diff_rejects_bad_remote():
    a = build(random_entries(50, 4))
    with pytest.raises(ValueError):
        a.diff(lambda level, idx: [])
    with pytest.raises(ValueError):
        a.diff(lambda level, idx: [b"short"] * len(idx))
    with pytest.raises(ValueError):
        a.diff(lambda level, idx: [1] * len(idx))
    with pytest.raises(ValueError):
        a.diff(lambda level, idx: None)


# -- wire ----------------------------------------------------------------------------------


def test_encode_decode_roundtrip():
    t = build(random_entries(300, 5))
    for level in range(t.depth + 1):
        idx = list(range(min(20, nodes_at(t, level))))[::-1]
        data = t.encode_level(level, idx)
        assert data[0] == WIRE_VERSION
        assert int.from_bytes(data[1:5], "little") == len(idx)
        assert len(data) == 5 + 16 * len(idx)
        assert MerkleTree.decode_level(data) == t.level_hashes(level, idx)
    assert MerkleTree.decode_level(t.encode_level(0, [])) == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x01\x00\x00\x00",
        b"\x02\x00\x00\x00\x00",
        b"\x01\x01\x00\x00\x00",
        b"\x01\x01\x00\x00\x00" + bytes(15),
        b"\x01\x01\x00\x00\x00" + bytes(17),
        b"\x01\xff\xff\xff\xff" + bytes(32),
        b"\x01\x00\x00\x00\x00" + bytes(16),
        "text",
        None,
    ],
)
def test_decode_garbage(data):
    with pytest.raises(ValueError):
        MerkleTree.decode_level(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_decode_fuzz(data):
    try:
        out = MerkleTree.decode_level(data)
    except ValueError:
        return
    assert len(data) == 5 + 16 * len(out) and data[0] == WIRE_VERSION


def test_bad_levels_and_indices():
    t = MerkleTree()
    for bad_level in (-1, t.depth + 1, "0", None):
        with pytest.raises(ValueError):
            t.level_hashes(bad_level, [0])
        with pytest.raises(ValueError):
            t.encode_level(bad_level, [0])
    for bad in (-1, t.leaves, "1", None):
        with pytest.raises(ValueError):
            t.level_hashes(t.depth, [bad])
