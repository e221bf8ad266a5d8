"""A node its peers cannot reach says so (reach.py): an --advertise nobody can dial joined,
pulled partitions and said nothing while every member held it down (an outside deployer's
run). It must say so in its log, `zkv status` and /readyz, and never on a healthy cluster,
during a normal join, alone, or cut off from everyone."""

from __future__ import annotations

import logging

import pytest

from sim.harness import Sim, SimClient
from sim.test_sim import _cli
from zkv.cli import not_ready_words
from zkv.node.core import REQUEST
from zkv.node.status import status

SAID = "peers cannot reach this node"


def _problems(sim: Sim) -> dict[str, str]:
    return {sn.id: sn.core.reach.problem for sn in sim.nodes.values()
            if sn.core is not None and sn.core.reach.problem}


def _run_watching(sim: Sim, until: float, step: float = 0.5) -> dict[str, str]:
    """Run to `until`, collecting every node's problem seen at any step."""
    seen: dict[str, str] = {}
    while sim.t < until:
        sim.run_until(sim.t + step)
        seen.update(_problems(sim))
    return seen


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.ERROR and SAID in r.getMessage()]

def _joiner_cut_off(caplog, cut: str, until: float):
    """A 5-node sim that n6 joins (through n2) while `cut` (Sim.undialable: no peer dials
    it; Sim.undialable_requests: only its requests address) names it, run to `until`."""
    sim = Sim(3, 5)
    sim.run_until(2.0)
    getattr(sim, cut).add("n6")
    caplog.set_level(logging.ERROR, logger="zkv.node.core")
    sim.add_node("n6", seed_of="n2")
    sim.run_until(until)
    return sim, sim.nodes["n6"].core


def test_a_joiner_no_peer_can_dial_says_so_in_its_log_status_and_readiness(caplog, monkeypatch,
                                                                           capsys):
    sim, core = _joiner_cut_off(caplog, "undialable", 8.0)
    assert not core.joining and core.join_error is None  # it joined, as in the outside run
    assert all(sn.core.membership.state("n6")[0] == "down"
               for sn in sim.nodes.values() if sn.id != "n6")  # ... and is down everywhere
    seen = _run_watching(sim, 85.0)
    assert set(seen) == {"n6"}, seen  # nobody else is blamed
    why = core.reach.problem
    assert why and core.membership.me.listen in why and core.membership.me.gossip in why
    assert "--advertise" in why
    said = _said(caplog)
    assert len(said) == 2, said  # once when found, again a minute later: not per turn
    doc = status(core)
    assert doc["unreached_by_peers"] == why
    ready, reason = core.metrics.health.ready()
    assert not ready and reason["unreached_by_peers"] == why
    assert "cannot reach it" in not_ready_words(reason)
    printed = _cli(monkeypatch, capsys, sim, sim.nodes["n6"], ["status"])
    assert f"PEERS CANNOT REACH this node at its advertised addresses {core.membership.me.listen}" \
        in printed
    assert "its peers cannot reach it at its advertised addresses" in printed  # (ready: NO)
    # reachable again (the operator fixed the firewall): it says so, and is ready again
    sim.undialable.clear()
    sim.run_until(sim.t + 15.0)
    assert core.reach.problem is None
    assert "unreached_by_peers" not in core.metrics.health.ready()[1]


def test_a_member_whose_outgoing_links_are_cut_one_way_says_so_and_clears_after_heal():
    sim = Sim(5, 5)
    sim.run_until(3.0)
    others = [x for x in sim.nodes if x != "n3"]
    sim.partition(["n3"], others, one_way=True)  # n3 hears them; they hear nothing of n3
    sim.run_until(8.0)
    assert not _problems(sim)  # a few rounds: not yet
    seen = _run_watching(sim, 25.0)
    assert set(seen) == {"n3"}, seen
    sim.heal()
    sim.run_until(sim.t + 5.0)
    assert not _problems(sim)


def test_a_healthy_cluster_and_a_normal_join_never_say_it():
    sim = Sim(7, 5)
    seen = _run_watching(sim, 10.0)
    sim.add_node("n6", seed_of="n4")
    seen.update(_run_watching(sim, 40.0))
    assert not sim.nodes["n6"].core.joining
    assert not seen, seen


def test_a_node_cut_off_from_everyone_or_alone_never_says_it():
    sim = Sim(9, 5)
    sim.run_until(3.0)
    others = [x for x in sim.nodes if x != "n2"]
    sim.partition(["n2"], others)  # both ways: it hears nobody either
    seen = _run_watching(sim, 40.0)
    sim.heal()
    seen.update(_run_watching(sim, 50.0))
    assert not seen, seen
    alone = Sim(1, 1)
    assert not _run_watching(alone, 30.0)


def test_a_member_restarted_is_not_blamed_while_peers_take_its_new_life():
    sim = Sim(13, 5)
    sim.run_until(3.0)
    sim.crash("n4")
    sim.run_until(6.0)
    sim.restart("n4")
    assert not _run_watching(sim, 30.0)


def test_a_node_whose_request_address_no_peer_can_dial_says_so(caplog, monkeypatch, capsys):
    """A wrong --advertise with a right --advertise-gossip: the peers hear its gossip, so
    they hold it up, and every request they send it is lost (their writes and exchanges time
    out). Nothing said so. Each peer now gossips the members its requests get no answer from
    while their heartbeats come in; the node reads itself there and says so in its log,
    `zkv status` and /readyz, and stops once they hear it again."""
    sim, core = _joiner_cut_off(caplog, "undialable_requests", 10.0)
    assert not core.joining and core.join_error is None
    assert all(sn.core.membership.state("n6")[0] == "up"
               for sn in sim.nodes.values() if sn.id != "n6")  # ... and is up everywhere
    seen = _run_watching(sim, 85.0)
    assert set(seen) == {"n6"}, seen  # nobody else is blamed
    why = core.reach.problem
    assert why and core.membership.me.listen in why and "--advertise" in why, why
    assert "no answer to their requests" in why, why
    said = _said(caplog)
    assert len(said) == 2, said  # once when found, again a minute later
    assert status(core)["unreached_by_peers"] == why
    ready, reason = core.metrics.health.ready()
    assert not ready and reason["unreached_by_peers"] == why
    printed = _cli(monkeypatch, capsys, sim, sim.nodes["n6"], ["status"])
    assert f"PEERS CANNOT REACH this node at its advertised address {core.membership.me.listen}" \
        in printed, printed
    sim.undialable_requests.clear()  # the operator fixed it
    sim.run_until(sim.t + 20.0)
    assert core.reach.problem is None
    assert "unreached_by_peers" not in core.metrics.health.ready()[1]


def _egress_cut(sim: Sim, bad: str) -> None:
    """`bad`'s requests to its peers are lost (an outbound firewall on it); its gossip, the
    peers' requests to it and its answers go through."""
    deliver = sim._deliver

    def cut(src, dst, kind, who, payload):
        if kind == REQUEST and src == bad and dst in sim.nodes and dst != bad:
            sim.stats["lost"] += 1
            return
        deliver(src, dst, kind, who, payload)

    sim._deliver = cut  # type: ignore[method-assign]


@pytest.mark.parametrize("nodes", [3, 5])
def test_a_node_whose_own_requests_are_lost_blames_no_healthy_peer(nodes):
    """A node whose outgoing requests are lost gets no answer from any peer, and listed them
    all: with "at least half", its one list made both healthy members of a 3-node cluster
    say peers cannot reach them and answer /readyz 503, while it stayed ready (a review, real
    processes behind iptables). It now lists nobody (most of its peers silent: its fault)."""
    sim = Sim(3, nodes)
    sim.run_until(2.0)
    _egress_cut(sim, f"n{nodes}")
    seen = _run_watching(sim, 40.0)
    assert not set(seen) - {f"n{nodes}"}, seen
    assert all(sn.core.metrics.health.ready()[0]
               for sn in sim.nodes.values() if sn.id != f"n{nodes}")


def test_one_peer_listing_everyone_makes_no_member_unready():
    """A buggy (or hostile) peer gossiping every member as unanswered is one voice: a node
    says peers cannot reach it only when more than half of those it hears list it."""
    sim = Sim(5, 3)
    sim.run_until(2.0)
    sim.nodes["n3"].core.reach.unanswered = (  # type: ignore[method-assign]
        lambda now, window, up, peers: sorted(x for x in sim.nodes if x != "n3"))
    assert not set(_run_watching(sim, 20.0)) - {"n3"}


def test_a_wrong_request_address_is_still_found_in_a_3_node_cluster():
    sim = Sim(3, 2)
    sim.run_until(2.0)
    sim.undialable_requests.add("n3")
    sim.add_node("n3", seed_of="n2")
    assert set(_run_watching(sim, 60.0)) == {"n3"}


@pytest.mark.parametrize("nodes,pause", [(3, 60.0), (5, 60.0), (3, 1.5)])
def test_a_paused_member_is_no_false_alarm(nodes, pause):
    sim = Sim(11, nodes)
    sim.run_until(2.0)

    def writer(c):
        i = 0
        while True:
            i += 1
            yield ("put", b"k%d" % (i % 50), b"v", b"", 2)
            yield ("sleep", 0.05)

    SimClient(sim, "w", writer)
    sim.run_until(4.0)
    sim.pause("n2")
    seen = _run_watching(sim, 4.0 + pause)
    sim.resume("n2")
    seen.update(_run_watching(sim, sim.t + 40.0))
    assert not seen, seen
