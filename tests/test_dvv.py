"""Behaviour of zkv._core.dvv: the DVV-set algebra against a dot-level model, codecs, scenarios."""

from __future__ import annotations

import pickle

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv._core import dvv
from zkv._core.dvv import (
    EMPTY,
    DVVSet,
    descends,
    merge_contexts,
    prune,
    sync,
    sync_encoded,
    sync_many,
    update,
    update_encoded,
    validate_context,
)

# "nœud" sorts after the ASCII ids bytewise; "b" < "ba" exercises prefix ordering.
NODES = ["a", "b", "ba", "nœud"]
PROPS = settings(max_examples=120, deadline=None)


# ---------------------------------------------------------------------------
# a dot-level reference model: (version vector, {dot: value})


def dots(s: DVVSet) -> dict[tuple[str, int], bytes | None]:
    out = {}
    for node, n, vals in s.entries():
        for k, v in enumerate(vals):
            out[(node, n - k)] = v
    return out


def covered(vv: dict[str, int], dot: tuple[str, int]) -> bool:
    return vv.get(dot[0], 0) >= dot[1]


def join(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, 0), v)
    return out


def model_update(m, ctx_vv, value, node):
    vv, ds = m
    kept = {d: v for d, v in ds.items() if not covered(ctx_vv, d)}
    vv = join(vv, ctx_vv)
    n = vv.get(node, 0) + 1
    vv[node] = n
    kept[(node, n)] = value
    return vv, kept


def model_sync(a, b):
    (va, da), (vb, db) = a, b
    ds = {d: v for d, v in da.items() if d in db or not covered(vb, d)}
    ds.update({d: v for d, v in db.items() if d in da or not covered(va, d)})
    return join(va, vb), ds


def model_of(s: DVVSet):
    return s.vector(), dots(s)


# ---------------------------------------------------------------------------
# realistic histories: each replica only coordinates writes under its own id, on its own
# current set; contexts come from any earlier state (clients read then write later).

op_st = st.one_of(
    st.tuples(
        st.just("put"),
        st.integers(0, len(NODES) - 1),
        st.one_of(st.none(), st.integers(0, 10_000)),  # context source (None = blind)
        st.booleans(),  # delete?
    ),
    st.tuples(st.just("sync"), st.integers(0, len(NODES) - 1), st.integers(0, len(NODES) - 1)),
)
history_st = st.lists(op_st, min_size=1, max_size=25)


def run_history(ops, check_model=True):
    """Replay ops; return every state seen. Checks each step against the model."""
    reps = {n: EMPTY for n in NODES}
    models = {n: ({}, {}) for n in NODES}
    seen = [EMPTY]
    seen_models = [({}, {})]
    for i, op in enumerate(ops):
        if op[0] == "put":
            _, r, src, delete = op
            node = NODES[r]
            if src is None:
                ctx, ctx_vv = b"", {}
            else:
                c = seen[src % len(seen)]
                ctx, ctx_vv = c.context(), c.vector()
            value = None if delete else f"v{i}".encode()
            reps[node] = update(reps[node], ctx, value, node)
            models[node] = model_update(models[node], ctx_vv, value, node)
            seen.append(reps[node])
            seen_models.append(models[node])
        else:
            _, r1, r2 = op
            n1, n2 = NODES[r1], NODES[r2]
            reps[n1] = sync(reps[n1], reps[n2])
            models[n1] = model_sync(models[n1], models[n2])
            seen.append(reps[n1])
            seen_models.append(models[n1])
        if check_model:
            assert model_of(seen[-1]) == seen_models[-1]
    return seen


states_st = history_st.map(lambda ops: run_history(ops, check_model=False))


@PROPS
@given(history_st)
def test_history_matches_dot_model(ops):
    # update retires exactly the covered siblings, sync keeps exactly the unseen/common dots
    run_history(ops)


@PROPS
@given(states_st, st.data())
def test_sync_commutative_associative_idempotent(seen, data):
    pick = st.sampled_from(seen)
    a, b, c = data.draw(pick), data.draw(pick), data.draw(pick)
    assert sync(a, b) == sync(b, a)
    assert sync(a, b).encode() == sync(b, a).encode()
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert sync(a, a) == a
    assert sync(a, sync(a, b)) == sync(a, b)
    assert sync(a, None) is a and sync(None, a) is a
    assert sync_many([a, None, b, c]) == sync(sync(a, b), c)


@PROPS
@given(states_st, st.data())
def test_descends_consistent_with_sync(seen, data):
    pick = st.sampled_from(seen)
    a, b = data.draw(pick), data.draw(pick)
    m = sync(a, b)
    assert descends(m, a) and descends(m, b)
    assert descends(a, b) == (sync(a, b) == a)
    if descends(b, a):  # b is a descendant of a
        assert sync(a, b) == b
        assert sync(b, a) == b
    assert descends(a, EMPTY) and descends(a, a)


@PROPS
@given(states_st, st.data())
def test_update_retires_exactly_the_covered_siblings(seen, data):
    pick = st.sampled_from(seen)
    server, ctx_src = data.draw(pick), data.draw(pick)
    node = data.draw(st.sampled_from(NODES))
    ctx_vv = ctx_src.vector()
    out = update(server, ctx_src.context(), b"new", node)
    expect = {d: v for d, v in dots(server).items() if not covered(ctx_vv, d)}
    n = max(server.vector().get(node, 0), ctx_vv.get(node, 0)) + 1
    expect[(node, n)] = b"new"
    assert dots(out) == expect
    assert out.vector() == {**join(server.vector(), ctx_vv), node: n}


@PROPS
@given(states_st, st.data())
def test_same_context_concurrent_updates_both_survive(seen, data):
    pick = st.sampled_from(seen)
    server, ctx_src = data.draw(pick), data.draw(pick)
    ctx = ctx_src.context()
    # through the same coordinator
    u1 = update(server, ctx, b"one", "a")
    u2 = update(u1, ctx, b"two", "a")
    assert b"one" in u2.values() and b"two" in u2.values()
    # through two coordinators, then healed
    healed = sync(update(server, ctx, b"one", "a"), update(server, ctx, b"two", "b"))
    assert b"one" in healed.values() and b"two" in healed.values()


@PROPS
@given(states_st, st.data())
def test_blind_write_retires_nothing(seen, data):
    server = data.draw(st.sampled_from(seen))
    out = update(server, b"", b"blind", data.draw(st.sampled_from(NODES)))
    assert out.size() == server.size() + 1
    assert set(dots(server).items()) <= set(dots(out).items())
    assert b"blind" in out.values()


@PROPS
@given(states_st)
def test_encode_decode_round_trip_and_canonical(seen):
    for s in seen:
        enc = s.encode()
        assert enc[0] == 1
        d = DVVSet.decode(enc)
        assert d == s and hash(d) == hash(s)
        assert d.encode() == enc
        assert d.values() == s.values() and d.vector() == s.vector()
        assert DVVSet.decode(bytearray(enc)) == s
        assert s.digest() == mmh3.hash_bytes(enc) and len(s.digest()) == 16
        ctx = s.context()
        validate_context(ctx)
        assert merge_contexts(ctx, b"") == ctx
        assert pickle.loads(pickle.dumps(s)) == s
    # the same set reached through different paths has one encoding
    a, b = seen[-1], seen[len(seen) // 2]
    assert sync(a, b).encode() == sync(b, a).encode() == sync_encoded(b.encode(), a.encode())


@PROPS
@given(states_st, st.data())
def test_encoded_forms_agree(seen, data):
    pick = st.sampled_from(seen)
    a, b, c = data.draw(pick), data.draw(pick), data.draw(pick)
    assert sync_encoded(a.encode(), b.encode()) == sync(a, b).encode()
    assert sync_encoded(None, b.encode()) == b.encode()
    assert sync_encoded(a.encode(), None) == a.encode()
    value = data.draw(st.one_of(st.none(), st.binary(max_size=20)))
    assert (
        update_encoded(a.encode(), c.context(), value, "b")
        == update(a, c.context(), value, "b").encode()
    )
    assert merge_contexts(a.context(), b.context()) == sync(a, b).context()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_decode_never_crashes_on_random_bytes(data):
    for raw in (data, b"\x01" + data, b"\x01\x01\x00" + data):
        try:
            s = DVVSet.decode(raw)
        except ValueError:
            pass
        else:
            assert s.encode() == raw  # whatever is accepted is canonical
        try:
            validate_context(raw)
        except ValueError:
            pass
        else:
            assert raw == b"" or merge_contexts(raw, raw) == raw


@PROPS
@given(states_st, st.data())
def test_decode_rejects_damaged_encodings(seen, data):
    enc = data.draw(st.sampled_from(seen)).encode()
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(ValueError):
        DVVSet.decode(enc[:cut])  # every proper prefix is truncated
    with pytest.raises(ValueError):
        DVVSet.decode(enc + b"\x00")
    pos = data.draw(st.integers(0, len(enc) - 1))
    flipped = enc[:pos] + bytes([enc[pos] ^ data.draw(st.integers(1, 255))]) + enc[pos + 1 :]
    try:
        s = DVVSet.decode(flipped)
    except ValueError:
        pass
    else:
        assert s.encode() == flipped


# ---------------------------------------------------------------------------
# scenarios


def test_partition_scenario_from_the_seed():
    # key written at node A and replicated to B
    a = update(None, b"", b"cart with []", "A")
    b = sync(None, a)
    ctx = a.context()
    # partition: client 1 writes through A, client 2 through B, both with the same context
    a = update(a, ctx, b"cart with [book]", "A")
    b = update(b, ctx, b"cart with [pen]", "B")
    assert a.live_values() == [b"cart with [book]"]
    assert b.live_values() == [b"cart with [pen]"]
    # heal: anti-entropy syncs both ways
    a2, b2 = sync(a, b), sync(b, a)
    assert a2 == b2
    # a read (sync of both replicas' answers) shows both values as siblings
    read = sync_many([a2, b2])
    assert sorted(read.live_values()) == [b"cart with [book]", b"cart with [pen]"]
    assert not descends(a, b) and not descends(b, a)
    # the client merges and writes with the merged context: both retire, one value remains
    merged = update(a2, read.context(), b"cart with [book, pen]", "A")
    assert merged.values() == [b"cart with [book, pen]"]
    assert merged.vector() == {"A": 3, "B": 1}
    # B learns it by anti-entropy; its own old sibling is gone there too
    assert sync(b2, merged) == merged
    assert descends(merged, a2) and descends(merged, b2)


def test_delete_with_full_context_is_a_tombstone():
    s = update(None, b"", b"x", "a")
    s = sync(s, update(None, b"", b"y", "b"))
    assert s.size() == 2
    t = update(s, s.context(), None, "a")
    assert t.is_tombstone()
    assert t.values() == [None] and t.live_values() == []
    assert len(t) == 1
    assert DVVSet.decode(t.encode()) == t
    # a later write with the tombstone's context replaces it
    u = update(t, t.context(), b"again", "b")
    assert u.values() == [b"again"] and not u.is_tombstone()


def test_delete_concurrent_with_put_keeps_the_put():
    s = update(None, b"", b"old", "a")
    ctx = s.context()
    deleted = update(s, ctx, None, "a")
    put = update(sync(None, s), ctx, b"new", "b")
    healed = sync(deleted, put)
    assert not healed.is_tombstone()
    assert healed.live_values() == [b"new"]
    assert healed.values() == [None, b"new"]
    # the tombstone is a sibling until a write covering it
    assert update(healed, healed.context(), b"final", "a").values() == [b"final"]


def test_empty_and_basic_accessors():
    assert EMPTY.size() == 0 and len(EMPTY) == 0 and not EMPTY.is_tombstone()
    assert EMPTY.values() == [] and EMPTY.vector() == {} and DVVSet() == EMPTY
    assert DVVSet.decode(EMPTY.encode()) == EMPTY
    assert sync(None, None) == EMPTY and sync_many([]) == EMPTY
    assert update(None, b"", b"", "n").values() == [b""]  # empty value is not a tombstone
    assert EMPTY.context() == b"\x01\x00\x00"
    validate_context(b"")
    assert "DVVSet" in repr(update(None, b"", b"v" * 100, "n"))
    assert EMPTY != 1 and (EMPTY == 1) is False


def test_sync_returns_existing_object_when_it_is_the_result():
    a = update(None, b"", b"x", "a")
    b = update(a, a.context(), b"y", "a")
    assert sync(a, b) is b and sync(b, a) is b
    twin = DVVSet.decode(b.encode())
    assert sync(b, twin) is b  # equal: no new object


def test_many_entries_and_siblings_use_heap_storage():
    s = EMPTY
    for i in range(12):
        node = f"node-{i:02d}"
        s = sync(s, update(None, b"", f"v{i}".encode() * 3, node))
        s = sync(s, update(s, b"", f"w{i}".encode(), node))
    assert s.size() == 24 and len(s.vector()) == 12
    assert DVVSet.decode(s.encode()) == s
    t = update(s, s.context(), b"one", "node-05")
    assert t.values() == [b"one"] and len(t.vector()) == 12


def test_prune_drops_valueless_entries_smallest_counter_first():
    s = update(None, b"", b"x", "a")
    for node, n in (("b", 5), ("c", 2), ("d", 9)):
        for _ in range(n):
            s = update(s, s.context(), b"t", node)
    s = update(s, s.context(), b"keep", "a")  # siblings only at "a" now
    assert [e[0] for e in s.entries()] == ["a", "b", "c", "d"]
    assert prune(s, 10) is s
    p = prune(s, 2)
    assert p.vector() == {"a": 2, "d": 9}
    assert p.values() == s.values()
    # entries with siblings are never dropped
    conc = sync(update(None, b"", b"1", "x"), update(None, b"", b"2", "y"))
    assert prune(conc, 1) == conc
    with pytest.raises(ValueError):
        prune(s, -1)


def test_bad_input_is_rejected_cleanly():
    s = update(None, b"", b"x", "a")
    for bad_node in ("", "x" * 256, "\ud800"):
        with pytest.raises(ValueError):
            update(s, b"", b"v", bad_node)
    with pytest.raises(TypeError):
        update(s, b"", "str value", "a")
    with pytest.raises(TypeError):
        update(s, b"", b"v", 7)
    with pytest.raises(TypeError):
        sync(s, b"bytes")
    with pytest.raises(TypeError):
        DVVSet.decode("text")
    with pytest.raises(TypeError):  # (not read as the empty set)
        DVVSet(s.encode())
    with pytest.raises(TypeError, match="limits must be a mapping"):
        dvv.check_plausible(s, limits=5)
    with pytest.raises(ValueError, match="above its ceiling 0"):
        dvv.check_plausible(s, limits={"a": 0})
    assert all(isinstance(x, dvv.Sibling) for x in s.siblings())  # (a name at runtime too)
    for bad_ctx in (b"\x02\x00\x00", b"\x01", b"\x01\x01\x00", s.encode(), b"\x01\x00\x00\x00"):
        with pytest.raises(ValueError):
            validate_context(bad_ctx)
        with pytest.raises(ValueError):
            update(s, bad_ctx, b"v", "a")
    with pytest.raises(ValueError):
        DVVSet.decode(b"\x02" + s.encode()[1:])  # wrong version
    # unsorted ids, counter 0, more siblings than counter, huge declared counts
    pair = lambda n, c: bytes([len(n)]) + n + c.to_bytes(8, "little")  # noqa: E731
    with pytest.raises(ValueError):
        validate_context(b"\x01\x02\x00" + pair(b"b", 1) + pair(b"a", 1))
    with pytest.raises(ValueError):
        validate_context(b"\x01\x01\x00" + pair(b"a", 0))
    with pytest.raises(ValueError):
        validate_context(b"\x01\x01\x00" + pair(b"\xff", 1))  # not UTF-8
    with pytest.raises(ValueError):
        DVVSet.decode(b"\x01\x01\x00" + pair(b"a", 1) + (2).to_bytes(4, "little") + b"\x00" * 10)
    with pytest.raises(ValueError):
        DVVSet.decode(b"\x01\xff\xff" + b"\x00" * 20)
    with pytest.raises(ValueError):
        DVVSet.decode(
            b"\x01\x01\x00" + pair(b"a", 2**40) + (0xFFFFFFFF).to_bytes(4, "little") + b"\x00" * 5
        )


def test_counter_overflow_is_a_clean_error():
    top = b"\x01\x01\x00\x01a" + (2**63 - 1).to_bytes(8, "little")
    validate_context(top)
    # a context that far ahead of the server's set is refused (issue 13): it never gets stored
    for node in ("a", "b"):
        with pytest.raises(ValueError, match="ahead"):
            update(None, top, b"v", node)
    # without the bound (max_ahead=None) the arithmetic limit is still a clean error
    with pytest.raises(ValueError, match="overflow"):
        update(None, top, b"v", "a", max_ahead=None)
    assert update(None, top, b"v", "b", max_ahead=None).vector() == {"a": 2**63 - 1, "b": 1}
    with pytest.raises(ValueError):
        validate_context(b"\x01\x01\x00\x01a" + (2**63).to_bytes(8, "little"))


def test_module_has_the_contract_names():
    for name in (
        "DVVSet EMPTY update sync sync_many descends merge_contexts validate_context prune "
        "sync_encoded update_encoded"
    ).split():
        assert hasattr(dvv, name)


FORGED_AHEAD = b"\x01\x01\x00" + bytes([1]) + b"a" + (2**40).to_bytes(8, "big") + b"\x00\x00"


def _outcome(fn):
    try:
        return fn()
    except ValueError as exc:
        return ("ValueError", str(exc))


@PROPS
@given(states_st, st.data())
def test_sync_plausible_is_check_plausible_then_sync_encoded(seen, data):
    """The replica write path's fused call answers exactly as the two calls it replaces, on
    realistic versions (either side absent, equal, concurrent, descending), a corrupt
    incoming or base version and a forged one (a counter far ahead): the same bytes, or
    the same ValueError."""
    pick = st.one_of(st.none(), st.sampled_from([s.encode() for s in seen]))
    base = data.draw(pick, label="base")
    incoming = data.draw(st.one_of(
        st.sampled_from([s.encode() for s in seen]),
        st.sampled_from([s.encode()[:-1] for s in seen if s.encode()]) if len(seen) > 1
        else st.just(b"\x01"),
        st.just(FORGED_AHEAD)), label="incoming")
    if base is not None and data.draw(st.booleans(), label="corrupt base"):
        base = base[:-2] + b"\xff"
    ahead = data.draw(st.sampled_from([dvv.MAX_AHEAD, 3, None]), label="max_ahead")

    def separate():
        dvv.check_plausible(incoming, base=base, max_ahead=ahead)
        return dvv.sync_encoded(base, incoming)

    assert _outcome(lambda: dvv.sync_plausible(base, incoming, max_ahead=ahead)) == \
        _outcome(separate)


def test_out_of_range_integers_get_the_documented_errors_not_overflow():
    """An index past Py_ssize_t given to retain, or a ceiling past int64 (either way) given
    to check_plausible, raised OverflowError, where the stubs name IndexError and ValueError
    (a fuzzer of the Cython core)."""
    s = update(None, b"", b"v", "a")
    for bad in (2**63, 2**70, -(2**70)):
        with pytest.raises(IndexError, match="out of range"):
            dvv.retain(s, [bad])
    with pytest.raises(ValueError, match=r"above its ceiling -\d+"):
        dvv.check_plausible(s.encode(), limits={"a": -(2**80)})
    dvv.check_plausible(s.encode(), limits={"a": 2**80})  # (no ceiling it reaches)
