"""The two frames a node handles inline (`NodeCore._replica_writes`, a peer's replica
writes; `NodeCore._owner_reads`, a client's reads of its copy) do exactly what handing each
message to `_on_request` does: the same replies in the same order, the same store, hints,
Merkle trees, tombstone clocks, counters and hot-key sketch.

Two simulated 5-node clusters from one seed are identical; node n2 of one gets each frame
through `handle()`, n2 of the other gets the frame's messages one by one through
`_on_request` (`_one_by_one`, what handle() did with every frame before). Hypothesis picks the frames. Replica writes: keys n2
replicates and keys it does not (strays), namespaced keys (N=3, N=3 lww, N=1), empty and
oversized keys, hints for a member and for a stranger, a key whose tombstone n2 reaped
recently (a late copy of the write it deleted, a copy of the tombstone, other versions),
newer, equal, older, concurrent, tombstone, implausible and undecodable versions, and other
requests (RGet, TreeLevel) in between. Reads: keys n2 owns (held or not) and keys it does not, in the
default namespace or another, bad keys, other requests in between, from a client, an admin
and a peer identity, with the connection at its in-flight cap or its turn's reply budget
spent, and while n2 refills after a lost disk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.harness import LIMIT, Sim
from zkv import wire
from zkv._core import dvv
from zkv.node.antientropy import vdigest
from zkv.node.core import ADMIN, CLIENT, MAX_INFLIGHT, PEER, REQUEST
from zkv.wire import Get, Join, Read, RGet, RPut, TreeLevel

PEER_IDENT = b"peer:n1"


def _node() -> tuple:
    """(sim, n2's core) of a joined 5-node simulated cluster, the same from every call."""
    sim = Sim(7, 5)
    sim.run_until(3.0)  # joined, every member up
    return sim, sim.nodes["n2"].core


def _keys(core) -> dict[str, list[bytes]]:
    ring = core.membership.ring()
    mine = [k for k in (b"rw:%d" % i for i in range(200)) if "n2" in ring.preflist_for_key(k)]
    stray = [k for k in (b"rw:%d" % i for i in range(200))
             if "n2" not in ring.preflist_for_key(k)]
    return {"mine": mine[:6], "stray": stray[:2]}


KEYS = _keys(_node()[1])  # (the strategies below draw from them)
# n2 remembers reaping the tombstone of a delete that covered a write with write id w1: a
# late copy of that write is retired on arrival, a copy of the tombstone itself is an echo
REAPED = KEYS["mine"][5]
DELETED = dvv.update_encoded(None, b"", b"old", "n1~a.1", b"w1")
TOMB = dvv.update_encoded(DELETED, dvv.DVVSet.decode(DELETED).context(), None, "n1~a.1", b"w2")


@pytest.fixture(scope="module")
def write_twins() -> list:
    """Two identical nodes that remember reaping REAPED's tombstone (kept across examples:
    each example goes on from the state the previous ones left, alike on both)."""
    twins = [_node(), _node()]
    for _, core in twins:
        core.ae.note_reaped(REAPED, vdigest(TOMB), TOMB)
    return twins

ACTORS = ["n1~a.1", "n3~b.1", "n2~c.1"]


@st.composite
def versions(draw, key: bytes):
    kind = draw(st.sampled_from(["new", "new", "new", "tomb", "ahead", "garbage", "empty"]
                                + (["deleted", "echo"] * 4 if key == REAPED else [])))
    if kind == "deleted":
        return DELETED
    if kind == "echo":
        return TOMB
    if kind == "garbage":
        return draw(st.binary(max_size=12))
    if kind == "empty":
        return dvv.DVVSet().encode()
    actor = draw(st.sampled_from(ACTORS))
    v = None
    for _ in range(draw(st.integers(1, 3))):
        v = dvv.update_encoded(v, b"", draw(st.sampled_from([b"a", b"bb", bytes(300)])), actor,
                               draw(st.binary(min_size=1, max_size=4)))
    if kind == "tomb":
        v = dvv.update_encoded(v, dvv.DVVSet.decode(v).context(), None, actor)
    if kind == "ahead":  # counters far past anything held: implausible
        v = dvv.update_encoded(v, b"\x01\x01\x00" + bytes([len(actor)]) + actor.encode()
                               + (1 << 40).to_bytes(8, "little"), b"x", actor, max_ahead=None)
    return v


@st.composite
def messages(draw):
    what = draw(st.sampled_from(["mine"] * 6 + ["stray", "ns", "bad", "hint", "ghost",
                                                "reaped", "reaped", "rget"]))
    if what in ("mine", "hint", "ghost"):
        key = draw(st.sampled_from(KEYS["mine"][:5]))
    elif what == "stray":
        key = draw(st.sampled_from(KEYS["stray"]))
    elif what == "ns":
        # a namespace's stored key: N=3, N=3 lww, N=1 (its owners follow its own N)
        prefix = draw(st.sampled_from([b"\x00\x03\x00", b"\x00\x03\x01", b"\x00\x01\x00"]))
        key = prefix + b"ns\x00" + draw(st.sampled_from(KEYS["mine"] + KEYS["stray"]))
    elif what == "reaped":
        key = REAPED
    else:
        key = draw(st.sampled_from([b"", bytes(2000)]))
    if what == "rget":  # other requests in between (one without a key)
        return draw(st.sampled_from([RGet(0, key or b"rw:1"), TreeLevel(0, 0, 0, [])]))
    owner = {"hint": "n3", "ghost": "stranger-9"}.get(what, "")
    return RPut(0, key, draw(versions(key)), owner)


def _one_by_one(core, ident: bytes, msgs: list, role: str, plain: bool) -> None:
    """Every message through `_on_request`, as handle() did before the inline paths (a
    plain-text Join may change the identity's role within the frame)."""
    for msg in msgs:
        if plain and role != PEER and type(msg) is Join:
            core._on_request(ident, msg, core._role(ident, msg), True)
            role = core._role(ident, None)
        else:
            core._on_request(ident, msg, role, plain)


def _state(core) -> tuple:
    store = core.store
    held = {k: store.get(k) for k in sorted(store.keys())}
    hints = {k: core.handoff.store.get(k) for k in sorted(core.handoff.store.keys())}
    roots = {p: t.root() for p, t in sorted(core.ae.trees.items())}
    return held, hints, roots, dict(core.ae.tombstones), _malformed(core)


def _malformed(core) -> float:
    return sum(s.value for fam in core.metrics.malformed.collect() for s in fam.samples
               if s.name.endswith("_total"))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(messages(), min_size=1, max_size=8), min_size=1, max_size=6))
def test_frame_of_replica_writes_equals_each_message_handled_alone(write_twins, frames):
    (sim_a, a), (sim_b, b) = write_twins
    rid = 0
    for frame in frames:
        for msg in frame:
            rid += 1
            msg.rid = rid
        # each side decodes its own copy, as a transport would
        a.handle((REQUEST, PEER_IDENT), wire.decode(wire.encode(frame), LIMIT), sim_a.t)
        b.t = sim_b.t  # (handle() sets it: the tombstone clock reads it)
        _one_by_one(b, PEER_IDENT, wire.decode(wire.encode(frame), LIMIT), PEER, True)
        box_a, box_b = a.take_output(), b.take_output()
        out_a, out_b = box_a.clients.get(PEER_IDENT, []), box_b.clients.get(PEER_IDENT, [])
        assert wire.encode(out_a) == wire.encode(out_b)
        assert ({p: wire.encode(m) for p, m in box_a.peers.items()}  # (reaps re-announced)
                == {p: wire.encode(m) for p, m in box_b.peers.items()})
        assert [m.rid for m in out_a] == [m.rid for m in frame]
        assert _state(a) == _state(b)


# ---- reads ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def read_twins() -> list:
    """Two identical nodes holding some of their keys (and one they do not own)."""
    twins = [_node(), _node()]
    for _, core in twins:
        for k in KEYS["mine"][:3] + KEYS["stray"][:1]:
            core.replica.merge(k, dvv.update_encoded(None, b"", b"v" * 40, "n1~a.1"), None)
    return twins


IDENTS = {CLIENT: b"client:7", ADMIN: b"admin-tool", PEER: b"peer:n3"}


@st.composite
def reads(draw):
    what = draw(st.sampled_from(["mine"] * 5 + ["stray"] * 2 + ["ns", "bad", "get"]))
    if what == "get":
        return Get(0, draw(st.sampled_from(KEYS["mine"])))
    if what == "bad":
        return Read(0, draw(st.sampled_from([b"", bytes(70000), b"\x00zz"])))
    key = draw(st.sampled_from(KEYS["mine"] if what != "stray" else KEYS["stray"]))
    return Read(0, key, draw(st.sampled_from(["", "default"])) if what != "ns" else "other")


def _read_state(core) -> tuple:
    return (dict(core.metrics.owner_reads), dict(core.metrics.hot.counts), core.metrics.hot.total,
            dict(core.inflight), dict(core.turn_bytes), _malformed(core))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.lists(reads(), min_size=1, max_size=8),
                          st.sampled_from([CLIENT, ADMIN, PEER]), st.booleans(),
                          st.sampled_from(["", "", "", "cap", "budget", "refill"])),
                min_size=1, max_size=5))
def test_frame_of_reads_equals_each_message_handled_alone(read_twins, frames):
    (sim_a, a), (sim_b, b) = read_twins
    rid = 0
    for frame, role, keyed, limit in frames:
        ident = IDENTS[role]
        for msg in frame:
            rid += 1
            msg.rid = rid
        for core in (a, b):
            core.inflight.pop(ident, None)
            core.refill_since = None
            if limit == "cap":
                core.inflight[ident] = MAX_INFLIGHT[role]
            elif limit == "refill":
                core.refill_since = core.t
            elif limit == "budget":  # this turn already sent the identity its reply budget
                core.turn_bytes[ident] = core.turn_budget
        given_role = role if keyed else None  # with keys the transport names the role
        a.handle((REQUEST, ident), wire.decode(wire.encode(frame), LIMIT), sim_a.t, given_role)
        b.t = sim_b.t
        _one_by_one(b, ident, wire.decode(wire.encode(frame), LIMIT),
                    role if keyed else b._role(ident, None), not keyed)
        box_a, box_b = a.take_output(), b.take_output()
        out_a, out_b = box_a.clients.get(ident, []), box_b.clients.get(ident, [])
        assert wire.encode(out_a) == wire.encode(out_b)
        assert {m.rid for m in frame if type(m) is Read} <= {m.rid for m in out_a}
        assert _read_state(a) == _read_state(b)
