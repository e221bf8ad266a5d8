"""Namespaces under deterministic simulation (issue 15): seeded message loss, a pause and a
partition; afterwards every namespaced key is held by exactly its namespace's N owners
(hints delivered, anti-entropy exchanged only within its N), lww keys hold one version that
is the same everywhere, and no acknowledged value of a siblings namespace is missing."""

from __future__ import annotations

import pytest

from sim.harness import Faults, Sim, SimClient
from zkv._core import dvv
from zkv.node import namespaces as nss
from zkv.node.core import REQUEST
from zkv.wire import NsCreate

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
    for ev in sim.history.events:
        if ev.ok and ev.op == "put":
            ns = ev.client.split("-", 1)[1]
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
            assert len(live) == 1 and live[0][8:] in values, (key, live)
        else:
            assert values <= set(live), (name, key, values - set(live))
