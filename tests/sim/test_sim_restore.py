"""A member started on an older or partial copy of its own state: a cluster.json fallen back
to its earlier copy (cluster.json.prev: membership.read_cluster), its stores emptied with the
file kept. A disaster-recovery drill found each leaving the cluster split or a read short:
the claimant back on an older state it had authored never took its own newer one from the
others (a state is taken from its author), a copy written while the node was joining made it
found a state of its own though it was given --seed, and a member whose stores were emptied
(as the old-snapshot refusal says) counted its empty reads toward R."""

from __future__ import annotations

import dataclasses

from sim.harness import Sim, SimClient, _cluster_json


def _fingerprints(sim: Sim) -> set[str]:
    return {sn.core.membership.ring().fingerprint() for sn in sim.nodes.values()
            if sn.core is not None}


def _settle(sim: Sim, until: float) -> None:
    while sim.t < until and len(_fingerprints(sim)) > 1:
        sim.run_until(sim.t + 0.5)


def test_a_claimant_back_on_an_older_state_it_authored_takes_its_newer_one():
    sim = Sim(21, 4)
    sim.run_until(3.0)
    author = sim.nodes["n1"].core.membership.cluster.author
    old = _cluster_json(sim.nodes[author].core)  # (before the join below: epoch older)
    sim.add_node("n5", seed_of="n2")
    sim.run_until(30.0)
    assert sim.nodes["n2"].core.membership.cluster.author == author
    assert len(_fingerprints(sim)) == 1
    sim.crash(author)
    sim.nodes[author].saved = old  # its cluster.json damaged, the earlier copy taken
    sim.restart(author)
    _settle(sim, sim.t + 30.0)
    assert len(_fingerprints(sim)) == 1, "the ring stays split"
    assert "n5" in sim.nodes[author].core.membership.cluster.members


def test_the_claimant_back_on_its_join_time_copy_joins_through_its_seed():
    """(The claimant, lowest id, founded a state of its own: a split ring, every /readyz 503.)"""
    sim = Sim(22, 4)
    sim.run_until(3.0)
    sim.crash("n1")
    saved = sim.nodes["n1"].saved
    saved.pop("cluster", None)  # a copy written while it was joining: peers, no state
    saved["joining"] = [sim.nodes["n2"].cfg.listen]
    sim.nodes["n1"].cfg = dataclasses.replace(sim.nodes["n1"].cfg,
                                              seed=(sim.nodes["n2"].cfg.listen,))
    sim.restart("n1")
    sim.run_until(sim.t + 15.0)
    mine, theirs = (sim.nodes[x].core.membership.cluster for x in ("n1", "n2"))
    assert mine is not None and (mine.rank(), mine.founded) == (theirs.rank(), theirs.founded), \
        "it founded a state of its own"
    assert len(_fingerprints(sim)) == 1


def test_a_member_whose_stores_were_emptied_refills_before_its_reads_count():
    sim = Sim(23, 3)
    sim.run_until(3.0)

    def writer(c):
        for i in range(60):
            yield ("put", b"k%d" % i, b"v", b"", 3)

    SimClient(sim, "w", writer)
    sim.run_until(8.0)
    sim.crash("n2")
    sim.nodes["n2"].store.data.clear()  # the operator emptied its data dir, kept the file
    sim.nodes["n2"].store.tomb.clear()
    sim.restart("n2")
    core = sim.nodes["n2"].core
    assert core.refill_since is not None  # its reads do not count toward R meanwhile
    assert core.refilling(b"k1")
    sim.run_until(sim.t + 30.0)
    assert core.refill_since is None and len(core.store) == 60  # refilled, then counted


def test_a_member_whose_store_never_held_keys_does_not_refill_at_a_restart():
    """A store found empty at a start was lost only if it held keys once (cluster.json's
    held_data): one that never did (nothing written yet), restarted while another owner was
    down, refilled until that owner came back, and every R=2 read of the 3-node cluster
    failed meanwhile (150 of 150 over 40 s: a review)."""
    sim = Sim(1, 3)
    sim.run_until(3.0)
    sim.crash("n3")  # stays down
    sim.run_until(sim.t + 5.0)
    sim.crash("n1")
    sim.restart("n1")
    assert sim.nodes["n1"].core.refill_since is None
    got = []

    def work(c):
        for i in range(20):
            r = yield ("put", b"k%d" % i, b"v", b"", 0)
            got.append(r.ok)
            r = yield ("get", b"k%d" % i)
            got.append(r.ok and r.values == [b"v"])

    SimClient(sim, "c", work, nodes=["n1", "n2"])
    sim.run_until(sim.t + 20.0)
    assert len(got) == 40 and all(got), got
