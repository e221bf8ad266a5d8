"""Namespaces under deterministic simulation (issue 15): seeded message loss, a pause and a
partition; afterwards every namespaced key is held by exactly its namespace's N owners
(hints delivered, anti-entropy exchanged only within its N), lww keys hold one version that
is the same everywhere, and no acknowledged value of a siblings namespace is missing."""

from __future__ import annotations

import pytest

from sim.harness import Faults, Sim, SimClient
from zkv import hlc
from zkv._core import dvv
from zkv.node import namespaces as nss
from zkv.node.core import REQUEST
from zkv.node.status import status
from zkv.wire import NsCreate, Put

SPACES = {"one": (1, "siblings"), "five": (5, "siblings"), "last": (3, "lww")}


class NsClient(SimClient):
    """A SimClient whose requests name a namespace."""

    def __init__(self, sim: Sim, name: str, workload, namespace: str) -> None:
        super().__init__(sim, name, workload, namespace=namespace)


def writes(prefix: bytes, count: int):
    def workload(client: SimClient):
        for i in range(count):
            yield ("put", prefix + b"%d" % (i % 4), b"%s-%d" % (client.name.encode(), i))
    return workload


@pytest.mark.parametrize("seed", range(3))
def test_namespaces_place_n_replicas_and_lww_converges(seed):
    sim = Sim(seed, nodes=5, faults=Faults(loss=0.02, dup=0.01, partitions=1, pauses=1,
                                           start=1.5, end=6.0))
    admin = sim.nodes["n1"].core
    for i, (name, (n, mode)) in enumerate(SPACES.items()):
        admin.handle((REQUEST, b"admin"), [NsCreate(i + 1, name, n, 0, 0, mode)], sim.t)
    sim._after_turn(sim.nodes["n1"])
    sim.run_until(1.0)  # gossip spreads the registry
    for sn in sim.nodes.values():
        assert set(SPACES) <= set(sn.core.namespaces.names()), sn.id
    sim.schedule_faults()
    clients = [NsClient(sim, f"c{j}-{name}", writes(b"k", 12), name)
               for name in SPACES for j in range(2)]
    sim.run_until(8.0)
    sim.heal()
    sim.run_until(25.0)  # hints delivered, anti-entropy rounds, nothing in flight
    assert all(c.done for c in clients)
    assert sim.hints_pending() == 0
    acked: dict[tuple[str, bytes], set[bytes]] = {}
    tried: dict[tuple[str, bytes], set[bytes]] = {}  # acknowledged or not (a timed-out put
    # may have reached a replica and, stamped last, rightly win the lww key: seed 0)
    for ev in sim.history.events:
        if ev.op == "put":
            ns = ev.client.split("-", 1)[1]
            tried.setdefault((ns, ev.key), set()).add(ev.value)
            if ev.ok:
                acked.setdefault((ns, ev.key), set()).add(ev.value)
    assert acked
    reg = sim.nodes["n1"].core.namespaces
    for (name, key), values in sorted(acked.items()):
        ns = reg.get(name)
        skey = nss.storage_key(ns, key)
        holders = [x for x in sim.nodes if sim.held(x, skey)]
        ring = sim.nodes["n1"].core.membership.ring(ns.n)
        assert sorted(holders) == sorted(ring.preflist_for_key(skey)), (name, key, holders)
        versions = {sim.held(x, skey) for x in holders}
        assert len(versions) == 1, (name, key)  # the owners agree
        live = dvv.DVVSet.decode(versions.pop()).live_values()
        if ns.lww:
            assert len(live) == 1 and live[0][ns.head:] in tried[(name, key)], (key, live)
        else:
            assert values <= set(live), (name, key, values - set(live))
    # status shows the anti-entropy trees of every N in use, each agreed after the faults
    for sn in sim.nodes.values():
        by_n = status(sn.core)["antientropy"]["by_n"]
        assert {"1", "3", "5"} <= set(by_n), by_n
        for n, ae in by_n.items():
            assert ae["partitions"] >= 1 and ae["partitions_agreed"] >= 1, (sn.id, n, ae)


@pytest.mark.parametrize("floor", [True, False])
def test_lww_a_clients_later_write_wins_on_a_coordinator_whose_clock_is_behind(floor):
    """A client writes v1 through n1, then v2 through n2, whose wall clock runs 20 s behind
    and which never saw v1 (n1 -> n2 is cut). The client's put carries the highest stamp it
    has seen, so n2 stamps v2 after v1 and v2 is what every replica keeps. (Without the
    floor the later write loses: the test shows that the floor is what orders it.)"""
    sim = Sim(5, nodes=3)
    admin = sim.nodes["n1"].core
    admin.handle((REQUEST, b"admin"), [NsCreate(1, "last", 3, 0, 0, "lww")], sim.t)
    sim._after_turn(sim.nodes["n1"])
    sim.run_until(22.0)  # the virtual wall clock starts near 0: leave room to run behind
    n2 = sim.nodes["n2"].core
    n2.hlc = hlc.HLC(lambda: n2.handoff.wall_ms() - 20_000, skew="clamp")
    sim.partition(["n1"], ["n2"], one_way=True)
    seen = []

    def workload(client: SimClient):
        client.nodes = ["n1"]
        seen.append((yield ("put", b"k", b"v1", b"", 2)))
        if not floor:
            client.stamp_floor = 0
        client.nodes = ["n2"]
        seen.append((yield ("put", b"k", b"v2", b"", 2)))

    c = NsClient(sim, "c", workload, "last")
    sim.run_until(25.0)
    assert c.done and all(r.ok for r in seen), [r.error for r in seen]
    sim.heal()
    sim.run_until(45.0)  # hints delivered, anti-entropy
    key = sim.nodes["n1"].core._storage_key(sim.nodes["n1"].core.namespaces.get("last"), b"k")
    head = nss.head_of_key(key)
    held = {nid: [v[head:] for v in dvv.DVVSet.decode(sn.core.replica.read(key)).live_values()]
            for nid, sn in sim.nodes.items()}
    expect = [b"v2"] if floor else [b"v1"]
    assert all(v == expect for v in held.values()), held


def _lww_namespace(sim: Sim):
    """`sim` with an lww namespace "last" (N=3) known everywhere: (sim, it, its ring)."""
    admin = sim.nodes["n1"].core
    admin.handle((REQUEST, b"admin"), [NsCreate(1, "last", 3, 0, 0, "lww")], sim.t)
    sim._after_turn(sim.nodes["n1"])
    sim.run_until(1.0)
    return sim, admin.namespaces.get("last"), admin.membership.ring(3)


def test_lww_a_forward_that_lands_late_keeps_the_stamp_it_got_on_receipt():
    """A client's put reaches a node that owns no copy; that node's forward to its first
    candidate is lost (a one-way cut), so the client retries through an owner (acknowledged)
    and then writes again. The first forward lands on the next candidate seconds later: it
    carries the stamp the forwarding node gave the write when the client sent it, so it loses
    to the client's later write, which every replica keeps. (Stamped on arrival, the late copy
    overwrote it: tests/sim/test_sim_ttl.py found it, seed 17.)"""
    sim, ns, ring = _lww_namespace(Sim(3, nodes=5))
    key = next(b"k%d" % i for i in range(100)
               if "n1" not in ring.preflist_for_key(nss.storage_key(ns, b"k%d" % i)))
    skey = nss.storage_key(ns, key)
    owners = ring.preflist_for_key(skey)
    sim.partition(["n1"], [owners[0]], one_way=True)
    seen = []

    def workload(client: SimClient):
        client.nodes = ["n1"]
        seen.append((yield ("put", key, b"v1", b"", 2)))
        client.nodes = [owners[1]]
        seen.append((yield ("put", key, b"v2", b"", 2)))

    c = NsClient(sim, "c", workload, "last")
    sim.at(sim.t + 0.5, lambda: setattr(c, "nodes", ["n1", owners[1]]))  # the retry's way
    forwards = []
    target = sim.nodes[owners[1]].core
    on_client = target._on_client

    def watched(ident, msg, rid=None, forwarded=False, stamp=0, gen=-1):
        if forwarded:
            forwards.append(sim.t)
        on_client(ident, msg, rid, forwarded, stamp, gen)

    target._on_client = watched
    sim.run_until(sim.t + 8.0)
    assert c.done and all(r.ok for r in seen), [r.error for r in seen]
    assert forwards, "the first forward never reached the second candidate"
    written = max(ev.end for ev in sim.history.events if ev.op == "put")
    assert forwards[0] > written  # it landed after both writes were acknowledged
    sim.heal()
    sim.run_until(sim.t + 20.0)
    held = {x: [v[ns.head:] for v in dvv.DVVSet.decode(sim.held(x, skey)).live_values()]
            for x in owners}
    assert all(v == [b"v2"] for v in held.values()), held


def test_lww_a_put_that_waited_in_a_stopped_node_loses_to_the_clients_later_writes():
    """A client's put reaches an owner that stands still (SIGSTOP) with it in its socket; the
    client gives up on it, retries through another owner (acknowledged) and writes again.
    When the stopped node resumes it coordinates the put that waited: stamped as of when the
    node stopped, it loses to the client's later write on every replica. (Stamped on
    resuming, it overwrote it: a known limit of the stop before.)"""
    sim, ns, ring = _lww_namespace(Sim(5, nodes=4))
    key = b"cart"
    skey = nss.storage_key(ns, key)
    owners = ring.preflist_for_key(skey)
    stopped = owners[0]
    seen = []

    def workload(client: SimClient):
        client.nodes = [stopped]
        seen.append((yield ("put", key, b"v1", b"", 2)))
        client.nodes = [owners[1]]
        seen.append((yield ("put", key, b"v2", b"", 2)))

    sim.pause(stopped)
    c = NsClient(sim, "c", workload, "last")
    sim.at(sim.t + 0.5, lambda: setattr(c, "nodes", [stopped, owners[1]]))  # the retry's way
    sim.run_until(sim.t + 6.0)
    assert c.done and all(r.ok for r in seen), [r.error for r in seen]
    assert any(item[0] == "c" for item in sim.nodes[stopped].backlog)  # the put that waited
    sim.resume(stopped)
    sim.run_until(sim.t + 20.0)
    held = {x: [v[ns.head:] for v in dvv.DVVSet.decode(sim.held(x, skey)).live_values()]
            for x in owners}
    assert all(v == [b"v2"] for v in held.values()), held
    # and the stopped node's clock did not go back: its next stamp is after every one it saw
    core = sim.nodes[stopped].core
    stamps = [int.from_bytes(v[:8], "big")
              for v in dvv.DVVSet.decode(sim.held(stopped, skey)).live_values()]
    assert core.hlc.now() > max(stamps)


class OneWidClient(NsClient):
    """An NsClient whose puts of `value` all carry one write id (the application's own,
    kept across its retries: README "Retrying a write"); its other puts get fresh ones."""

    def __init__(self, sim: Sim, name: str, workload, namespace: str, value: bytes,
                 wid: bytes) -> None:
        self.fixed = (value, wid)
        super().__init__(sim, name, workload, namespace)

    def _try(self, ev, msg, deadline, tried):
        if type(msg) is Put and msg.value == self.fixed[0]:
            msg.wid = self.fixed[1]
        super()._try(ev, msg, deadline, tried)


def _lww_values(sim: Sim, ns, skey: bytes, nodes) -> dict[str, list[bytes]]:
    return {x: [v[ns.head:] for v in dvv.DVVSet.decode(sim.held(x, skey)).live_values()]
            for x in nodes}


@pytest.mark.parametrize("retry_via", ["n1", "n2", "n3"])
def test_lww_a_late_retry_of_a_write_a_blind_write_replaced_is_not_brought_back(retry_via):
    """put(k, A, write_id=W) through n1, a blind put(k, B) through n2 (lww puts are blind),
    then put(k, A, write_id=W) again (a late retry; `zkv load --resume`): B stays, whichever
    coordinator takes the retry (n1 made A, n2 made B, n3 holds both by fan-out). The
    collapse retired A without B listing W, so the retry got a fresh dot stamped after B
    and won (an outside run: 6 of 6)."""
    sim, ns, ring = _lww_namespace(Sim(7, nodes=3))
    skey = nss.storage_key(ns, b"k")
    seen = []

    def workload(client: SimClient):
        for via, value in (("n1", b"A"), ("n2", b"B"), (retry_via, b"A")):
            client.nodes = [via]
            seen.append((yield ("put", b"k", value, b"", 3)))

    c = OneWidClient(sim, "c", workload, "last", b"A", b"W" * 16)
    sim.run_until(sim.t + 5.0)
    assert c.done and all(r.ok for r in seen), [r.error for r in seen]
    sim.run_until(sim.t + 20.0)  # anti-entropy: nothing else to bring
    assert _lww_values(sim, ns, skey, sim.nodes) == {x: [b"B"] for x in sim.nodes}


def test_lww_a_late_copy_of_a_retry_made_where_the_blind_write_had_not_arrived_loses():
    """As above, but the retry reaches n3 before B has (n1, n2 -> n3 cut one way): n3 makes a
    new copy of A stamped after B (the client's floor) and acknowledges it (w=1). Wherever
    that copy meets B -- its fan-out to n1 and n2, B reaching n3 after the heal -- B lists W
    and retires it: every replica keeps B."""
    sim, ns, ring = _lww_namespace(Sim(8, nodes=3))
    skey = nss.storage_key(ns, b"k")
    seen = []

    def workload(client: SimClient):
        client.nodes = ["n1"]
        seen.append((yield ("put", b"k", b"A", b"", 3)))
        sim.partition(["n1", "n2"], ["n3"], one_way=True)
        client.nodes = ["n2"]
        seen.append((yield ("put", b"k", b"B", b"", 2)))
        client.nodes = ["n3"]
        seen.append((yield ("put", b"k", b"A", b"", 1)))

    c = OneWidClient(sim, "c", workload, "last", b"A", b"W" * 16)
    sim.run_until(sim.t + 5.0)
    assert c.done and all(r.ok for r in seen), [r.error for r in seen]
    assert _lww_values(sim, ns, skey, ["n3"]) == {"n3": [b"A"]}  # B has not arrived there
    stamp = {x: dvv.DVVSet.decode(sim.held(x, skey)).live_values()[0][:8] for x in sim.nodes}
    assert stamp["n3"] > stamp["n1"] == stamp["n2"]  # the new copy, stamped after B
    sim.heal()
    sim.run_until(sim.t + 20.0)  # hints delivered, anti-entropy
    assert _lww_values(sim, ns, skey, sim.nodes) == {x: [b"B"] for x in sim.nodes}
