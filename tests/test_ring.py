"""Behaviour of the consistent-hash ring (zkv._core.ring): hashing, claim, preference lists,
rack spread, movement on membership change, sloppy-quorum walk, batch lookup, input checks."""

from __future__ import annotations

import array
import pickle
import random
from collections import Counter

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv._core.ring import Ring, _rack_violations, hash64, partition_of

SETTINGS = settings(max_examples=60, deadline=None)


def make_members(n_nodes: int, n_racks: int, uneven: bool = False) -> list[tuple[str, str]]:
    if uneven:  # rack 0 gets most nodes, the rest one each (as far as nodes allow)
        racks = [0 if i >= n_racks - 1 else i + 1 for i in range(n_nodes)]
        racks = [r % n_racks for r in racks]
    else:
        racks = [i % n_racks for i in range(n_nodes)]
    return [(f"node-{i:02d}", f"rack-{r}") for i, r in enumerate(racks)]


@st.composite
def memberships(draw, max_nodes=20, max_racks=5):
    n_nodes = draw(st.integers(1, max_nodes))
    n_racks = draw(st.integers(1, max_racks))
    racks = draw(st.lists(st.integers(0, n_racks - 1), min_size=n_nodes, max_size=n_nodes))
    ids = draw(st.lists(st.text("abcdefgh0123456789-", min_size=1, max_size=8),
                        min_size=n_nodes, max_size=n_nodes, unique=True))
    return [(i, f"r{r}") for i, r in zip(ids, racks, strict=True)]


QS = st.sampled_from([2, 4, 16, 64, 256])
NS = st.integers(1, 5)


# --------------------------------------------------------------------------- hashing

def test_hash64_matches_mmh3_for_lengths_0_to_100():
    rng = random.Random(1234)
    for length in range(101):
        for _ in range(5):
            key = rng.randbytes(length)
            assert hash64(key) == mmh3.hash64(key, signed=False)[0]


@pytest.mark.parametrize(
    "key, expected",
    [
        (b"", 0),
        (b"a", 9607679276477937801),
        (b"abc", 13012657714217449575),
        (b"hello world", 5998619086395760910),
        (b"0123456789abcdef", 5467490433528156583),
        (b"0123456789abcdefg", 10246358950979434974),
        (b"cart:42", 7683480308670753113),
        (bytes(range(31)), 377690909827715220),
    ],
)
def test_hash64_literal_vectors(key, expected):
    # pinned literals: catch a platform/endianness change even if mmh3 changed with it
    assert hash64(key) == expected


@given(key=st.binary(max_size=80), q_bits=st.integers(1, 16))
@SETTINGS
def test_partition_is_hash_shifted(key, q_bits):
    h = mmh3.hash64(key, signed=False)[0]
    assert partition_of(key, q_bits) == h >> (64 - q_bits)
    ring = Ring([("a", "r")], q=2**q_bits, n=1)
    assert ring.partition(key) == h >> (64 - q_bits)
    lo, hi = ring.partition_range(ring.partition(key))
    assert lo <= h <= hi


def test_partition_ranges_tile_the_hash_space():
    ring = Ring(make_members(3, 1), q=64)
    prev_hi = -1
    for p in range(ring.q):
        lo, hi = ring.partition_range(p)
        assert lo == prev_hi + 1 and hi >= lo
        prev_hi = hi
    assert prev_hi == 2**64 - 1


# --------------------------------------------------------------------------- claim

@given(members=memberships(), q=QS, n=NS)
@SETTINGS
def test_claim_balanced_distinct_and_rack_spread(members, q, n):
    ring = Ring(members, q=q, n=n)
    m = len(members)
    counts = Counter(ring.owner(p) for p in range(q))
    all_counts = [counts.get(x, 0) for x in ring.members]
    assert max(all_counts) - min(all_counts) <= 1
    assert sum(all_counts) == q
    racks = dict(members)
    want_racks = min(n, len(set(racks.values())))
    for p in range(q):
        pl = ring.preflist(p)
        assert len(pl) == min(n, m)
        assert len(set(pl)) == len(pl)
        assert pl[0] == ring.owner(p)
        assert len({racks[x] for x in pl}) >= want_racks
    assert ring.rack_violations == ()
    for x in ring.members:
        assert ring.owned(x) == [p for p in range(q) if ring.owner(p) == x]
        assert ring.replicas_of(x) == [p for p in range(q) if x in ring.preflist(p)]


@given(members=memberships(), q=QS, n=NS, seed=st.integers(0, 2**32))
@SETTINGS
def test_ring_independent_of_member_order(members, q, n, seed):
    shuffled = list(members)
    random.Random(seed).shuffle(shuffled)
    a, b = Ring(members, q=q, n=n), Ring(iter(shuffled), q=q, n=n)
    assert a.describe() == b.describe()
    assert a.fingerprint() == b.fingerprint()
    assert a == b and hash(a) == hash(b)
    assert [a.walk(p) for p in range(q)] == [b.walk(p) for p in range(q)]


@pytest.mark.parametrize("n_nodes, n_racks, n", [(10, 3, 3), (7, 2, 3), (8, 5, 3), (9, 4, 5), (12, 5, 2)])
def test_rack_spread_with_uneven_racks(n_nodes, n_racks, n):
    members = make_members(n_nodes, n_racks, uneven=True)
    racks = dict(members)
    assert len(set(racks.values())) == n_racks
    assert max(Counter(racks.values()).values()) > n_nodes // n_racks  # really uneven
    ring = Ring(members, q=256, n=n)
    for p in range(ring.q):
        assert len({racks[x] for x in ring.preflist(p)}) == min(n, n_racks)
    assert ring.rack_violations == ()


def test_rack_violation_checker_flags_partitions_it_cannot_spread():
    racks = {"a": "r1", "b": "r1", "c": "r2"}
    assert _rack_violations([("a", "c"), ("a", "b"), ("b", "c")], racks, 2) == (1,)
    assert _rack_violations([("a", "b")], racks, 1) == ()
    # one rack: min(n, racks) == 1, so nothing to violate
    assert Ring([("a", "r"), ("b", "r"), ("c", "r")], q=16).rack_violations == ()


def test_fewer_members_than_n_gives_everyone():
    ring = Ring([("a", "r1"), ("b", "r2")], q=8, n=3)
    for p in range(8):
        assert sorted(ring.preflist(p)) == ["a", "b"]


def test_single_member_owns_everything():
    ring = Ring([("solo", "r")], q=4, n=3)
    assert ring.owned("solo") == [0, 1, 2, 3]
    assert ring.preflist(3) == ("solo",)
    assert ring.moved(ring) == 0.0


# --------------------------------------------------------------------------- movement

def _cluster(k: int) -> list[tuple[str, str]]:
    return [(f"node{i}", f"rack{i % 3}") for i in range(k)]


@pytest.mark.parametrize(
    "q, sizes", [(256, range(2, 13)), (1024, range(2, 21)), (4096, (5, 10, 30))]
)
def test_movement_on_join_and_leave_is_near_minimal(q, sizes):
    for m in sizes:
        before = Ring(_cluster(m), q=q)
        after_join = Ring(_cluster(m) + [(f"node{m}", "rack-new")], q=q)
        bound = 1.5 / (m + 1) + 2 / q
        assert after_join.moved(before) <= bound, (q, m, "join")
        # the joiner takes only what it now owns: nobody else's primaries shuffle far
        assert len(after_join.owned(f"node{m}")) in (q // (m + 1), -(-q // (m + 1)))
        for leaver in (0, m // 2):
            rest = [x for x in _cluster(m + 1) if x[0] != f"node{leaver}"]
            left = Ring(rest, q=q)
            assert left.moved(Ring(_cluster(m + 1), q=q)) <= bound, (q, m, "leave", leaver)


def test_movement_is_at_least_the_minimum():
    a, b = Ring(_cluster(4), q=256), Ring(_cluster(5), q=256)
    assert a.moved(b) == b.moved(a) >= 51 / 256


# --------------------------------------------------------------------------- sloppy quorum

def test_sloppy_preflist_example_from_contract():
    ring = Ring([(x, x) for x in "ABCDEFG"], q=16, n=3)
    for p in range(ring.q):
        a, b, c = ring.preflist(p)
        d = ring.walk(p)[3]
        assert ring.sloppy_preflist(p, {b}) == [(a, None), (c, None), (d, b)]
        assert ring.sloppy_preflist(p, set()) == [(a, None), (b, None), (c, None)]
        assert ring.sloppy_preflist(p, {"not-a-member"}) == [(a, None), (b, None), (c, None)]


@given(members=memberships(), q=st.sampled_from([4, 16]), n=NS, data=st.data())
@SETTINGS
def test_sloppy_preflist_properties(members, q, n, data):
    ring = Ring(members, q=q, n=n)
    ids = list(ring.members)
    down = set(data.draw(st.lists(st.sampled_from(ids), unique=True)))
    p = data.draw(st.integers(0, q - 1))
    got = ring.sloppy_preflist(p, down)
    nodes = [x for x, _ in got]
    up = [x for x in ids if x not in down]
    pl = ring.preflist(p)
    assert len(nodes) == min(n, len(up))
    assert len(set(nodes)) == len(nodes)
    assert not set(nodes) & down
    # it is the first up nodes of the walk, which starts with the preference list
    walk = ring.walk(p)
    assert walk[: len(pl)] == pl and sorted(walk) == ids
    assert nodes == [x for x in walk if x not in down][: len(nodes)]
    stand_ins = [(x, owner) for x, owner in got if owner is not None]
    for x, owner in got:
        assert (owner is None) == (x in pl)
    # each stand-in names a distinct down owner, in preference order
    assert [o for _, o in stand_ins] == [x for x in pl if x in down][: len(stand_ins)]


def test_sloppy_preflist_fewer_than_n_when_not_enough_up():
    ring = Ring([(x, "r") for x in "ABCD"], q=8, n=3)
    for p in range(8):
        got = ring.sloppy_preflist(p, {"A", "B", "C"})
        assert [x for x, _ in got] == ["D"]
        assert ring.sloppy_preflist(p, "ABCD" and {"A", "B", "C", "D"}) == []


# --------------------------------------------------------------------------- batch

@given(keys=st.lists(st.binary(max_size=40), max_size=50), q=QS)
@SETTINGS
def test_batch_equals_per_key(keys, q):
    ring = Ring(_cluster(4), q=q)
    parts = ring.partitions(keys)
    assert isinstance(parts, array.array) and parts.typecode == "I"
    assert list(parts) == [ring.partition(k) for k in keys]
    assert list(ring.partitions(tuple(keys))) == list(parts)
    assert list(ring.partitions(k for k in keys)) == list(parts)
    hs = ring.hashes(keys)
    assert isinstance(hs, array.array) and hs.typecode == "Q"
    assert list(hs) == [hash64(k) for k in keys]
    assert [ring.preflist_for_key(k) for k in keys] == [ring.preflist(p) for p in parts]


# --------------------------------------------------------------------------- misc API

def test_fingerprint_identifies_inputs():
    base = Ring(_cluster(4), q=64, n=3)
    fp = base.fingerprint()
    assert isinstance(fp, bytes) and len(fp) == 16
    others = [
        Ring(_cluster(4), q=128, n=3),
        Ring(_cluster(4), q=64, n=2),
        Ring(_cluster(5), q=64, n=3),
        Ring([(x, r + "x") if x == "node0" else (x, r) for x, r in _cluster(4)], q=64, n=3),
    ]
    assert len({fp, *(o.fingerprint() for o in others)}) == 5
    assert all(o != base for o in others)


def test_describe_pickle_and_views():
    ring = Ring(_cluster(5), q=16, n=3)
    desc = ring.describe()
    assert desc == [{"partition": p, "preflist": list(ring.preflist(p))} for p in range(16)]
    clone = pickle.loads(pickle.dumps(ring))
    assert clone == ring and clone.describe() == desc
    assert ring.members == tuple(sorted(x for x, _ in _cluster(5)))
    assert ring.racks == dict(_cluster(5))
    ring.racks["node0"] = "mutated"  # a copy: the ring is unaffected
    assert ring.racks["node0"] == "rack0"
    assert (ring.q, ring.q_bits, ring.n) == (16, 4, 3)
    assert ring.owned("nobody") == [] and ring.replicas_of("nobody") == []
    assert "q=16" in repr(ring)


@pytest.mark.parametrize(
    "args, kwargs, exc",
    [
        (([],), {}, ValueError),                                   # no members
        ((_cluster(2),), {"q": 3}, ValueError),                    # not a power of two
        ((_cluster(2),), {"q": 1}, ValueError),
        ((_cluster(2),), {"q": 0}, ValueError),
        ((_cluster(2),), {"q": 2**17}, ValueError),
        ((_cluster(2),), {"n": 0}, ValueError),
        (([("a", "r"), ("a", "s")],), {}, ValueError),             # duplicate id
        ((["a"],), {}, TypeError),                                 # not a pair
        ((["ab"],), {}, TypeError),                      # (was taken as node "a", rack "b")
        (([("", "r")],), {}, ValueError),                          # an empty id
        (([("a", 1)],), {}, TypeError),
        (([(1, "r")],), {}, TypeError),
        ((_cluster(2),), {"q": 16.0}, TypeError),
    ],
)
def test_bad_ring_arguments(args, kwargs, exc):
    with pytest.raises(exc):
        Ring(*args, **kwargs)


def test_bad_lookups_raise():
    ring = Ring(_cluster(3), q=16)
    for bad in ("str", bytearray(b"x"), memoryview(b"x"), None, 5):
        with pytest.raises(TypeError):
            ring.partition(bad)
        with pytest.raises(TypeError):
            partition_of(bad, 8)
        with pytest.raises(TypeError):
            hash64(bad)
        with pytest.raises(TypeError):
            ring.partitions([b"ok", bad])
        with pytest.raises(TypeError):
            ring.hashes([bad])
    assert ring.partition(b"") == partition_of(b"", 4) == 0
    for q_bits in (0, 17, -1):
        with pytest.raises(ValueError):
            partition_of(b"k", q_bits)
    for p in (-1, 16, 2**40):
        for method in (ring.preflist, ring.owner, ring.partition_range, ring.walk):
            with pytest.raises(IndexError):
                method(p)
        with pytest.raises(IndexError):
            ring.sloppy_preflist(p, ())
    with pytest.raises(TypeError):
        ring.preflist("0")
    with pytest.raises(TypeError):
        ring.sloppy_preflist(0, "node0")
    with pytest.raises(ValueError):
        ring.moved(Ring(_cluster(3), q=32))
