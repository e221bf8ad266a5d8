"""Merge helpers (zkv.crdt): semilattice laws, codec round trips and bad input, and the
seed's shopping cart under concurrent writers over an in-memory model of the sibling store
(pure, no sockets)."""

import itertools
import os

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv import crdt
from zkv.crdt import GSet, ORSet, PNCounter
from zkv.node import seal

_keys = itertools.count()


def fresh_key() -> bytes:
    """A key no other test used (the dot memory is per process)."""
    return b"test:%d:%s" % (next(_keys), os.urandom(4).hex().encode())


# ---- strategies ---------------------------------------------------------------------------
elements = st.one_of(st.sampled_from(["book", "pen", "lamp", "mug"]), st.integers(-3, 3),
                     st.sampled_from([b"\x00", b"sku-1"]))
actors = st.sampled_from(["a", "b", "c"])

gsets = st.builds(GSet, st.frozensets(elements, max_size=6))


@st.composite
def pncounters(draw):
    c = PNCounter()
    for actor, delta in draw(st.lists(st.tuples(actors, st.integers(-5, 5)), max_size=8)):
        c.increment(delta, actor)
    return c


@st.composite
def orset_worlds(draw):
    """Snapshots of three replicas (actor per replica) running adds, removes, gapped adds
    (a dot above the actor's next counter, as after an unstored write) and merges."""
    reps = [ORSet() for _ in range(3)]
    snaps = [ORSet()]
    ops = st.tuples(st.sampled_from(["add", "add", "remove", "gap", "merge"]),
                    st.integers(0, 2), elements, st.integers(0, 2))
    for op, i, e, j in draw(st.lists(ops, max_size=25)):
        r = reps[i]
        if op == "add":
            r.add(e, "abc"[i])
        elif op == "gap":
            r._add_dot(e, ("abc"[i], r._max_counter("abc"[i]) + 2))
        elif op == "remove":
            r.remove(e)
        else:
            reps[i] = r.merge(reps[j])
        snaps.append(ORSet.decode(reps[i].encode()))
    return snaps


def three(world):
    return st.tuples(*(st.sampled_from(world),) * 3)


# ---- laws ---------------------------------------------------------------------------------
def check_laws(a, b, c):
    enc = type(a).encode
    assert enc(a.merge(b)) == enc(b.merge(a))
    assert enc(a.merge(b).merge(c)) == enc(a.merge(b.merge(c)))
    assert enc(a.merge(a)) == enc(a)
    assert enc(a.merge(type(a)())) == enc(a)  # the empty state is the bottom


@given(gsets, gsets, gsets)
def test_gset_laws(a, b, c):
    check_laws(a, b, c)
    assert a.merge(b).elements == a.elements | b.elements


@given(pncounters(), pncounters(), pncounters())
def test_pncounter_laws(a, b, c):
    check_laws(a, b, c)


@given(st.data())
@settings(max_examples=200)
def test_orset_laws(data):
    world = data.draw(orset_worlds())
    a, b, c = data.draw(three(world))
    check_laws(a, b, c)


# ---- codec --------------------------------------------------------------------------------
@given(gsets)
def test_gset_round_trip(s):
    assert GSet.decode(s.encode()) == s and GSet.decode(s.encode()).elements == s.elements


@given(pncounters())
def test_pncounter_round_trip(c):
    d = PNCounter.decode(c.encode())
    assert d.value == c.value and d.encode() == c.encode()


@given(orset_worlds())
def test_orset_round_trip(world):
    for s in world:
        d = ORSet.decode(s.encode())
        assert d.encode() == s.encode() and d.elements == s.elements
        assert crdt.decode_any(s.encode()) == s


def test_format_version_byte_first_and_kind_named():
    assert GSet().encode()[:2] == bytes([crdt.FORMAT_VERSION, crdt.KIND_GSET])
    with pytest.raises(ValueError, match="format version 9"):
        ORSet.decode(b"\x09" + ORSet().encode()[1:])
    with pytest.raises(ValueError, match="is a GSet, not a PNCounter"):
        PNCounter.decode(GSet(["x"]).encode())
    with pytest.raises(ValueError, match="over the 10-byte limit"):
        GSet.decode(GSet(["a" * 50]).encode(), max_bytes=10)
    with pytest.raises(ValueError, match="not a zkv.crdt value"):
        crdt.decode_any(b"\x01\x63...")


def test_invariants_checked_on_decode():
    body = crdt._encode
    hdr = bytes([1, crdt.KIND_ORSET])
    with pytest.raises(ValueError, match="outside the causal context"):
        ORSet.decode(hdr + body((["a"], [1], [], [("x", [0, 2])])))
    with pytest.raises(ValueError, match="tags two elements"):
        ORSet.decode(hdr + body((["a"], [1], [], [("x", [0, 1]), ("y", [0, 1])])))
    with pytest.raises(ValueError, match="not sorted and unique"):
        ORSet.decode(hdr + body((["b", "a"], [1, 1], [], [])))
    with pytest.raises(ValueError, match="names actor #3"):
        ORSet.decode(hdr + body((["a"], [1], [], [("x", [3, 1])])))
    with pytest.raises(ValueError, match="not str, bytes or int"):
        GSet.decode(bytes([1, crdt.KIND_GSET]) + body([True]))
    with pytest.raises(ValueError, match="outside 0..2"):
        PNCounter.decode(bytes([1, crdt.KIND_PNCOUNTER]) + body([("a", -1, 0)]))


msgpack_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=5)
    | st.binary(max_size=5) | st.floats(allow_nan=False),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=3), kids,
                                                             max_size=3),
    max_leaves=20)


@given(st.sampled_from([GSet, ORSet, PNCounter]), st.binary(max_size=64))
def test_random_bytes_raise_value_error_only(cls, junk):
    for data in (junk, bytes([1, cls.KIND]) + junk):
        try:
            cls.decode(data)
        except ValueError:
            pass


@given(st.sampled_from([GSet, ORSet, PNCounter]), msgpack_junk)
def test_well_formed_msgpack_of_wrong_shape_raises_value_error_only(cls, obj):
    try:
        cls.decode(bytes([1, cls.KIND]) + msgspec.msgpack.encode(obj))
    except ValueError:
        pass


@given(orset_worlds(), st.data())
def test_mutated_encodings_raise_value_error_or_decode_valid(world, data):
    enc = bytearray(data.draw(st.sampled_from(world)).encode())
    i = data.draw(st.integers(0, len(enc) - 1))
    enc[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(enc)))
    for blob in (bytes(enc), bytes(enc[:cut])):
        try:
            s = ORSet.decode(blob)
        except ValueError:
            continue
        assert ORSet.decode(s.encode()) == s  # whatever decodes is a valid, canonical state


def test_deep_nesting_is_a_value_error():
    deep = b"\x91" * 200_000 + b"\xc0"
    for cls in (GSet, ORSet):
        with pytest.raises(ValueError):
            cls.decode(bytes([1, cls.KIND]) + b"\x94\x90\x90\x90\x91\x92" + deep)
        with pytest.raises(ValueError):
            cls.decode(bytes([1, cls.KIND]) + b"\x91" + deep)


def test_bad_api_arguments():
    with pytest.raises(TypeError):
        GSet([1.5])
    with pytest.raises(TypeError):
        ORSet().add(True)
    with pytest.raises(ValueError, match="actor"):
        ORSet().add("x", actor="")
    with pytest.raises(ValueError, match="both added and removed"):
        ORSet.updater(b"k", add=["x"], remove=["x"])
    with pytest.raises(ValueError, match="key must be"):
        PNCounter.updater("k", 1)
    with pytest.raises(ValueError, match="corrupt|not a|too short"):
        ORSet.updater(b"k", add=["x"])([b"not a crdt"])


# ---- ORSet semantics --------------------------------------------------------------------
def test_remove_leaves_no_per_element_trace():
    s = ORSet()
    for i in range(1000):
        s.add(f"item{i}", "a")
        s.remove(f"item{i}")
    assert len(s) == 0 and s.context_size == 1 and len(s.encode()) < 16


def test_concurrent_readd_wins_and_sequential_readd_works():
    base = ORSet()
    base.add("x", "a")
    remover, readder = ORSet.decode(base.encode()), ORSet.decode(base.encode())
    remover.remove("x")
    readder.add("x", "b")
    assert "x" in remover.merge(readder)
    gone = remover.merge(base)
    assert "x" not in gone  # the remove observed base's dot
    gone.add("x", "a")
    assert "x" in gone.merge(remover).merge(base)


def test_gap_dots_fold_once_filled():
    s = ORSet()
    s._add_dot("x", ("a", 2))
    assert s.context_size == 1 and s._cloud == {("a", 2)}
    t = ORSet()
    t._add_dot("y", ("a", 1))
    m = s.merge(t)
    assert m.elements == {"x", "y"} and m._vv == {"a": 2} and not m._cloud


# ---- the shopping cart over a model of the sibling store -----------------------------------
class SiblingStore:
    """One key of the store: siblings; a write replaces exactly the siblings its read saw."""

    def __init__(self) -> None:
        self.sibs: dict[int, bytes] = {}
        self.ids = itertools.count()

    def read(self) -> dict[int, bytes]:
        return dict(self.sibs)

    def write(self, seen: dict[int, bytes], value: bytes) -> None:
        self.sibs = {i: v for i, v in self.sibs.items() if i not in seen}
        self.sibs[next(self.ids)] = value


def schedules(n_ops):
    """Interleavings of n ops' reads and writes: each op index twice, first is its read."""
    return st.permutations([i for i in range(n_ops) for _ in (0, 1)])


cart_ops = st.lists(st.tuples(st.sampled_from(["add", "add", "remove"]),
                              st.sampled_from(["book", "pen", "lamp"]), st.integers(0, 3)),
                    min_size=1, max_size=10)


@given(st.data(), st.booleans())
@settings(max_examples=300)
def test_cart_under_concurrent_writers(data, shared_actor):
    """Every add survives unless a remove read after it was written; a remove takes out what
    it observed; a concurrent re-add wins. Writers may all share this process's actor."""
    ops = data.draw(cart_ops)
    order = data.draw(schedules(len(ops)))
    key, store = fresh_key(), SiblingStore()
    seen: dict[int, dict] = {}
    read_t: dict[int, int] = {}
    write_t: dict[int, int] = {}
    fns = [ORSet.updater(key, add=[e] if kind == "add" else [],
                         remove=[e] if kind == "remove" else [],
                         actor=None if shared_actor else f"w{w}")
           for kind, e, w in ops]
    for t, i in enumerate(order):
        if i not in seen:
            seen[i] = store.read()
            read_t[i] = t
        else:
            store.write(seen[i], fns[i](list(seen[i].values())))
            write_t[i] = t
    cart = ORSet.from_siblings(store.sibs.values())
    for e in ("book", "pen", "lamp"):
        adds = [i for i, (k, x, _) in enumerate(ops) if k == "add" and x == e]
        removes = [i for i, (k, x, _) in enumerate(ops) if k == "remove" and x == e]
        survivors = [a for a in adds if not any(write_t[a] < read_t[r] for r in removes)]
        assert (e in cart) == bool(survivors), (e, ops, order)


def test_seed_figure_3_cart_merge():
    """The seed's Figure 3: two carts written across a partition merge to their union."""
    key, store = fresh_key(), SiblingStore()
    c1, c2 = store.read(), store.read()
    store.write(c1, ORSet.updater(key, add=["book"], actor="C1")(list(c1.values())))
    store.write(c2, ORSet.updater(key, add=["pen"], actor="C2")(list(c2.values())))
    assert len(store.sibs) == 2
    v = store.read()
    store.write(v, ORSet.updater(key, remove=["pen"], actor="C1")(list(v.values())))
    assert ORSet.from_siblings(store.sibs.values()).elements == {"book"}
    assert len(store.sibs) == 1


def test_retried_update_applies_once():
    """Client.update retries after a QuorumError whose put was stored anyway: the second
    call reuses the first call's dot/target, so nothing is double-applied or resurrected."""
    key, store = fresh_key(), SiblingStore()
    add = ORSet.updater(key, add=["x"], actor="r")
    s0 = store.read()
    store.write(s0, add(list(s0.values())))  # stored, but the client saw a timeout
    s1 = store.read()
    store.write(s1, ORSet.updater(key, remove=["x"], actor="o")(list(s1.values())))
    s2 = store.read()
    store.write(s2, add(list(s2.values())))  # the retry must not resurrect the removed x
    assert "x" not in ORSet.from_siblings(store.sibs.values())

    key, store = fresh_key(), SiblingStore()
    inc = PNCounter.updater(key, 5)
    s0 = store.read()
    store.write(s0, inc(list(s0.values())))
    store.write(s0, inc(list(s0.values())))  # retry from the same (stale) read: a sibling
    s1 = store.read()
    store.write(s1, inc(list(s1.values())))
    assert PNCounter.from_siblings(store.sibs.values()).value == 5


@given(st.lists(st.tuples(st.integers(-4, 4), st.integers(0, 2), st.booleans()), min_size=1,
                max_size=8), st.data(), st.booleans())
@settings(max_examples=300)
def test_counter_counts_every_stored_update_once(deltas, data, shared_actor):
    """Concurrent updaters, of one process or several: each stored update counts once, and
    one whose write was refused (Client.update settles it as not stored) counts nothing,
    however the others overlap it. An outside run: 200 concurrent +1s of one process, 144
    refused, read 200 (each total had counted the ones reserved before it)."""
    order = data.draw(schedules(len(deltas)))
    key, store = fresh_key(), SiblingStore()
    fns = [PNCounter.updater(key, d, actor=None if shared_actor else f"w{w}")
           for d, w, _ in deltas]
    seen: dict[int, dict] = {}
    for i in order:
        if i not in seen:
            seen[i] = store.read()
        else:
            value = fns[i](list(seen[i].values()))
            if deltas[i][2]:  # stored
                store.write(seen[i], value)
            fns[i].__zkv_settled__(deltas[i][2])
    assert PNCounter.from_siblings(store.sibs.values()).value == sum(
        d for d, _, ok in deltas if ok)


def test_a_counter_updater_dropped_unsettled_frees_its_lane():
    """An updater called by hand (not through Client.update) never hears its outcome: once
    dropped, its lane is free again, so updaters in a loop count under one actor, not one
    each."""
    key, store = fresh_key(), SiblingStore()
    for _ in range(50):
        s = store.read()
        store.write(s, PNCounter.updater(key, 1, actor="solo")(list(s.values())))
    counter = PNCounter.from_siblings(store.sibs.values())
    assert counter.value == 50 and counter.totals("solo") == (50, 0)
    assert len(counter.encode()) < 32


def test_gset_updater_and_merge_values():
    store = SiblingStore()
    a, b = store.read(), store.read()
    store.write(a, GSet.updater(add=["x"])(list(a.values())))
    store.write(b, GSet.updater(add=["y", 3])(list(b.values())))
    assert GSet.decode(GSet.merge_values(store.sibs.values())).elements == {"x", "y", 3}


def test_fork_gets_a_fresh_actor():
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    parent = crdt.default_actor()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(w, crdt.default_actor().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child and child != parent and crdt.default_actor() == parent


class DvvKey:
    """One key of a one-replica store with real version vectors: reads give a context, a
    write or a delete covers what its context saw and returns the key's new context."""

    def __init__(self, sealed: bool = False) -> None:
        from zkv._core import dvv
        self.dvv, self.set = dvv, None
        # a keyed cluster's contexts are sealed (node/seal.py: a tag in front of the bare one)
        self.seal = bytes((seal.SEALED,)) + os.urandom(seal.TAG) if sealed else b""

    def read(self) -> tuple[list[bytes], bytes]:
        if self.set is None:
            return [], b""
        return self.set.live_values(), self.seal + self.set.context()

    def write(self, value: bytes | None, context: bytes) -> bytes:
        self.set = self.dvv.update(self.set, seal.bare(context), value, "n1")
        return self.seal + self.set.context()

    def update(self, fn, stored: bool = True) -> None:
        """What Client.update does with a counter's updater: the read's context, fn, the
        write, the outcome."""
        values, ctx = self.read()
        fn.__zkv_read__(ctx)
        value = fn(values)
        fn.__zkv_settled__(True, self.write(value, ctx)) if stored else \
            fn.__zkv_settled__(False)


@pytest.mark.parametrize("sealed", [False, True], ids=["bare", "sealed"])
def test_a_deleted_counter_starts_again_from_zero_and_a_stale_read_never_counts_back(sealed):
    """A counter deleted (`zkv delete`) and then incremented read its old count + 1: the
    process's lane remembered the totals it had written (an outside run: 25 likes, deleted,
    one more like read 26). A read whose context saw the lane's last write, or what replaced
    it, is the truth; a read that missed it (stale: R + W <= N, a sloppy quorum) still
    counts on from the lane's totals, never below them. The same with a keyed cluster's
    sealed contexts (an upgrade tester: the settled hook raised "unknown format version 83"
    on every update, logged as an ERROR, and the lane kept no totals)."""
    key, store = fresh_key(), DvvKey(sealed)
    for _ in range(25):
        store.update(PNCounter.updater(key, +1))
    assert PNCounter.from_siblings(store.read()[0]).value == 25
    values, ctx = store.read()
    store.write(None, ctx)  # the admin's delete: a tombstone over what it read
    assert store.read()[0] == []
    store.update(PNCounter.updater(key, +1))
    assert PNCounter.from_siblings(store.read()[0]).value == 1
    # a stale read (it saw nothing) of another replica: the lane's totals still count
    fn = PNCounter.updater(key, +1)
    fn.__zkv_read__(b"")
    assert PNCounter.from_siblings([fn([])]).value == 2
    fn.__zkv_settled__(False)
    # a refused write keeps the lane where it was
    store.update(PNCounter.updater(key, +5), stored=False)
    store.update(PNCounter.updater(key, +1))
    assert PNCounter.from_siblings(store.read()[0]).value == 2


def test_an_updater_retried_after_a_refusal_counts_afresh():
    """Updater a is refused (nothing stored), b then takes the lane and is stored, and a is
    retried, as docs/crdt.md allows: a kept the totals it fixed before its refusal and wrote
    over b's +1 (the review's model: 2,765 of 3,000 schedules below the acknowledged count).
    Settled as refused, it counts afresh when retried."""
    key, store = fresh_key(), DvvKey()
    a, b = PNCounter.updater(key, +1), PNCounter.updater(key, +1)
    store.update(a, stored=False)
    store.update(b)
    store.update(a)
    assert PNCounter.from_siblings(store.read()[0]).value == 2


def test_a_lone_sibling_merges_as_two_copies_of_it_do():
    """from_siblings of one value was the value as decoded: one whose cloud extends its
    version vector (not what the encoder makes; a foreign one) differed from the merge of
    two copies of it."""
    body, hdr = crdt._encode, bytes([1, crdt.KIND_ORSET])
    v = hdr + body((["a"], [3], [0, 4], [("p", [0, 4])]))
    assert ORSet.from_siblings([v]).encode() == ORSet.from_siblings([v, v]).encode()
    assert ORSet.merge_values([v]) == ORSet.merge_values([v, v])


def test_an_updater_is_one_update_and_a_lane_actor_is_refused():
    """Five acknowledged update() calls with one updater counted once, and an add updater
    reused after a remove added nothing: an updater whose write was stored refuses to run
    again (it may run again after a failure: that retry is applied once). An explicit actor
    with '#' named another process's lane and lost increments."""
    key, store = fresh_key(), DvvKey()
    inc = PNCounter.updater(key, +1)
    store.update(inc)
    with pytest.raises(ValueError, match="stored already"):
        store.update(inc)
    retry = PNCounter.updater(key, +1)
    values, ctx = store.read()
    retry.__zkv_read__(ctx)
    retry(values)
    retry.__zkv_settled__(None)  # maybe stored: the same updater may retry it
    store.update(retry)
    assert PNCounter.from_siblings(store.read()[0]).value == 2
    add = ORSet.updater(key, add=["pen"])
    values, ctx = store.read()
    add.__zkv_settled__(True)
    with pytest.raises(ValueError, match="stored already"):
        add([])
    with pytest.raises(ValueError, match="may not contain '#'"):
        PNCounter.updater(key, 1, actor="svc#1")
    assert PNCounter.updater(key, 1, actor="svc") is not None


@pytest.mark.parametrize("sealed", [False, True], ids=["bare", "sealed"])
def test_a_lane_keeps_only_a_returned_context_that_covers_its_write(sealed):
    """put_context's other answer is the context the put was given (its write id listed):
    kept by the lane, a read that had missed that write descended it and was trusted, and
    the next +1 rewrote the totals already issued (an outside run: 957 of 28,305
    acknowledged increments lost). Sealed contexts (a keyed cluster's) alike."""
    key, store = fresh_key(), DvvKey(sealed)
    store.update(PNCounter.updater(key, +1))
    stale_values, stale_ctx = store.read()  # (a replica that will miss the next write)
    second = PNCounter.updater(key, +1)
    second.__zkv_read__(stale_ctx)
    value = second(stale_values)
    store.write(value, stale_ctx)
    second.__zkv_settled__(True, stale_ctx)  # (the fallback: no dot of its own in it)
    third = PNCounter.updater(key, +1)
    third.__zkv_read__(stale_ctx)  # a read of the lagging replica
    late = third(stale_values)
    third.__zkv_settled__(True, store.write(late, stale_ctx))
    assert PNCounter.from_siblings(store.read()[0]).value == 3


def test_a_retry_whose_read_failed_keeps_an_earlier_maybe_stored_write():
    """update(k, up) missed its quorum after its write was stored (settled None); the retry
    update(k, up) failed in its read (nothing written by it: settled False); the next retry
    succeeded. crdt.md: "the retry is applied once, never twice" -- it counted +3 twice (an
    outside run: 6 for one +3, 4 of 4 runs with SIGSTOPped nodes)."""
    key, store = fresh_key(), DvvKey()
    up = PNCounter.updater(key, 3)
    values, ctx = store.read()
    up.__zkv_read__(ctx)
    store.write(up(values), ctx)   # stored on some replicas ...
    up.__zkv_settled__(None)       # ... but the call raised QuorumError
    up.__zkv_settled__(False)      # the retry's read timed out: it wrote nothing
    store.update(up)               # the next retry is stored
    assert PNCounter.from_siblings(store.read()[0]).value == 3
