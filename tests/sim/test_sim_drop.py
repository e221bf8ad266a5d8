"""Dropping and truncating a namespace under deterministic simulation: a node cut off (or
crashed) through the drop still holds the dropped keys, and hints for it wait on stand-ins;
once it is back every node has purged every key of the ended generation from its store and
its hint store, none comes back through hints, read repair or anti-entropy, and the name
made again (a create after the drop, or the truncate's own next generation) holds exactly
what was written to it since."""

from __future__ import annotations

import pytest

from sim import scenario
from sim.harness import AdminClient, Faults, Sim, SimClient
from sim.scenario import drops
from zkv._core import dvv
from zkv.node import namespaces as nss
from zkv.wire import Cluster, NsCreate, NsDrop, NsOk


class Admin(AdminClient):
    """The harness's admin connection, with calls that wait on the virtual clock."""

    def reply(self, rid: int):
        return self.replies.get(rid)

    def call(self, node: str, msg, within: float = 10.0):
        """Send `msg` and run the sim until its reply, sending it again each second as a
        client retries (a frame may be lost; every admin call here is idempotent)."""
        end = self.sim.t + within
        while self.reply(msg.rid) is None and self.sim.t < end:
            self.send(node, msg)
            self.sim.run_until(self.sim.t + 1.0)
        return self.reply(msg.rid)


def writer(keys: list[bytes], tag: bytes, rounds: int = 3, w: int = 2):
    def workload(client: SimClient):
        for i in range(rounds):
            for k in keys:
                yield ("put", k, b"%s-%s-%d" % (tag, k, i), b"", w)
    return workload


def dead_keys(sim: Sim, name: bytes, gens: range) -> list[tuple[str, str, bytes]]:
    """(node, where, stored key) of every key of namespace `name` of a generation in `gens`
    still held in a store or a hint store."""
    found = []
    for nid, sn in sim.nodes.items():
        assert sn.core is not None
        held = [("store", k) for k in sn.store.keys()]
        held += [(f"hint for {owner}", k) for owner, idx in sn.core.handoff.index.items()
                 for k in idx]
        for where, k in held:
            g = nss.generation(k)
            if g is not None and g[0] == name and g[1] in gens:
                found.append((nid, where, k))
    return found


def acked_since(sim: Sim, ns: str, since: float, ended: float) -> tuple[dict, dict]:
    """Per user key: the values acknowledged by puts of clients of namespace `ns` that
    started at or after `since`, and every value tried by one still in flight at `ended` (the
    drop or truncate) or later: a write racing it may land in the new generation."""
    acked: dict[bytes, set[bytes]] = {}
    tried: dict[bytes, set[bytes]] = {}
    for ev in sim.history.events:
        if ev.op == "put" and ev.client.startswith(ns) and (ev.end >= ended or not ev.end):
            tried.setdefault(ev.key, set()).add(ev.value)
            if ev.ok and ev.start >= since:
                acked.setdefault(ev.key, set()).add(ev.value)
    return acked, tried


def check_generation(sim: Sim, ns: nss.Namespace, since: float, ended: float) -> None:
    """Every key of `ns` written since `since` is held by exactly its owners, who agree, with
    every value acknowledged since and nothing but values of writes in flight at `ended` or
    later."""
    acked, tried = acked_since(sim, ns.name, since, ended)
    assert acked, "nothing was acknowledged in the namespace's new generation"
    for key, values in sorted(acked.items()):
        skey = nss.storage_key(ns, key)
        owners = sim.owners(skey)
        held = {sim.held(x, skey) for x in owners}
        assert len(held) == 1, (key, "owners disagree")
        live = set(dvv.DVVSet.decode(held.pop()).live_values())
        assert values <= live, (key, values - live)
        assert live <= tried[key], (key, "an older generation's value came back",
                                    live - tried[key])


@pytest.mark.parametrize("seed", range(3))
def test_a_drop_while_a_node_is_cut_off_is_purged_everywhere_and_the_name_starts_empty(seed):
    sim = Sim(seed, nodes=5, faults=Faults(loss=0.01, dup=0.01, start=0.5, end=30.0))
    admin = Admin(sim)
    admin.send("n1", NsCreate(1, "carts", 3, 0, 0, "siblings"))
    admin.send("n1", NsCreate(2, "keep", 3, 0, 0, "lww"))
    sim.run_until(1.0)
    keys = [b"c%d" % i for i in range(12)]
    clients = [SimClient(sim, f"carts-{j}", writer(keys, b"old%d" % j), namespace="carts")
               for j in range(2)]
    kept = SimClient(sim, "keep-0", writer(keys, b"keep"), namespace="keep")
    sim.run_until(2.5)
    sim.partition(["n5"], ["n1", "n2", "n3", "n4"])
    # a client next to n5 keeps writing there: n5 stores them and keeps hints, unaware
    SimClient(sim, "carts-cut", writer(keys[:6], b"cut", rounds=2, w=1), namespace="carts",
              nodes=["n5"])
    sim.run_until(3.5)
    admin.send("n1", NsDrop(3, "carts", False, 0))
    sim.run_until(4.0)
    late = SimClient(sim, "carts-late", writer(keys[:3], b"late", rounds=1), namespace="carts",
                     nodes=["n1", "n2", "n3", "n4"])
    sim.run_until(6.0)
    # (answered once every member that is up has it; sent again if the answer was lost)
    assert type(admin.call("n1", NsDrop(3, "carts", False, 0))) is NsOk
    # requests in the dropped namespace are refused, saying why
    assert late.done and [ev.result.error for ev in sim.history.events
                          if ev.client == "carts-late"] == [
        "namespace 'carts' was dropped (`zkv namespace create` makes it again, empty)"] * 3
    assert dead_keys(sim, b"carts", range(1)), "n5 held nothing of the dropped namespace"
    sim.heal()
    sim.run_until(20.0)
    assert all(c.done for c in clients + [kept])
    regs = [sn.core.namespaces for sn in sim.nodes.values() if sn.core is not None]
    assert all(r == regs[0] for r in regs) and "carts" not in regs[0]
    assert dead_keys(sim, b"carts", range(1)) == []
    assert sim.nodes["n5"].core.replica.purged > 0
    # the other namespace is whole: every key held by its owners, who agree
    keep = regs[0].get("keep")
    skeys = [nss.storage_key(keep, k) for k in keys]
    assert sim.replicas_agree(skeys) == [] and all(sim.held(sim.owners(k)[0], k) for k in skeys)
    # the name made again starts empty, and no old value joins the new ones
    created = sim.t
    admin.send("n2", NsCreate(4, "carts", 3, 0, 0, "siblings"))
    sim.run_until(21.0)
    again = sim.nodes["n3"].core.namespaces.get("carts")
    assert again.gen == 1
    listed = sim.list_keys("carts")
    assert listed == [], listed
    since = sim.t
    SimClient(sim, "carts-new", writer(keys, b"new", rounds=1), namespace="carts")
    sim.run_until(40.0)
    check_generation(sim, again, since, created)
    assert dead_keys(sim, b"carts", range(1)) == []


@pytest.mark.parametrize("seed", range(3))
def test_a_truncate_while_an_owner_is_crashed_keeps_only_what_was_written_after_it(seed):
    sim = Sim(seed, nodes=5, faults=Faults(loss=0.01, dup=0.01, start=0.5, end=30.0))
    admin = Admin(sim)
    admin.send("n1", NsCreate(1, "carts", 3, 0, 0, "siblings"))
    sim.run_until(1.0)
    keys = [b"c%d" % i for i in range(12)]
    SimClient(sim, "carts-a", writer(keys, b"a"), namespace="carts")
    sim.run_until(2.0)
    sim.crash("n3")  # it holds a share of the keys; stand-ins keep hints for it
    sim.run_until(3.0)
    old = sim.nodes["n1"].core.namespaces.get("carts")
    truncated = sim.t
    admin.send("n1", NsDrop(2, "carts", True, 0))
    sim.run_until(3.2)
    new = sim.nodes["n1"].core.namespaces.get("carts")
    assert (new.gen, new.settings()) == (1, old.settings())
    since = sim.t
    SimClient(sim, "carts-b", writer(keys, b"b", rounds=2), namespace="carts")
    sim.run_until(6.0)
    assert type(admin.call("n1", NsDrop(2, "carts", True, 0))) is NsOk
    sim.restart("n3")  # with its saved registry: it learns of the truncate by gossip
    sim.run_until(30.0)
    assert sim.nodes["n3"].core.namespaces.get("carts") == new
    assert dead_keys(sim, b"carts", range(1)) == []
    assert sim.nodes["n3"].core.replica.purged > 0
    check_generation(sim, new, since, truncated)
    listed = sim.list_keys("carts", r=2)
    assert isinstance(listed, list) and sorted(listed) == sorted(
        acked_since(sim, "carts", since, truncated)[0]), listed


FAULTS = dict(loss=0.02, dup=0.01, partitions=2, pauses=1, crashes=1)


@pytest.mark.parametrize("seed,client", [(0, "sim"), (7, "sim"), (19, "core")])
def test_the_drops_scenario_under_faults(seed, client):
    """Truncates, and drops followed by creates, of a siblings and an lww namespace at random
    moments while writers write and partitions, a pause and a crash run: every node purges
    every ended generation and nothing of one comes back (sim.scenario.drops)."""
    rep = drops(seed, Faults(**FAULTS), client=client)
    assert rep.violations == [], rep.command
    assert sum("admin" in line for line in rep.log) >= 3 and rep.ok_ops > 150


@pytest.mark.parametrize("change,seed,client", [("join", 1, "sim"), ("leave", 2, "core"),
                                                ("replace", 3, "sim"), ("remove", 4, "core")])
def test_drops_through_an_ownership_change(change, seed, client):
    """The drops scenario while n6 joins, n2 leaves, n2 is replaced by n6, or n2 dies for
    good and is force-removed, under the same faults: the change completes, and the
    partitions moved carry nothing of an ended generation to their new owners (150 seeds of
    each change and client ran clean when this was written: RESULTS.md)."""
    rep = drops(seed, Faults(**FAULTS), client=client, change=change)
    assert rep.violations == [], rep.command
    assert f"--change {change}" in rep.command
    assert any(f"change: {change} begins" in line for line in rep.log)
    if change != "join":
        assert any("accepted" in line for line in rep.log), rep.log
    assert sum("admin" in line for line in rep.log) >= 3 and rep.ok_ops > 150


@pytest.mark.parametrize("change,seed,client", [("join", 5, "core"), ("replace", 3, "sim")])
def test_drops_through_a_change_committed_by_hand(change, seed, client):
    """`--manual`: auto-commit off, the operator stages the change and commits it, reading
    the plan (relayed to the claimant, the one holding staged changes) after each step; the
    change completes under the same faults and the drops' checks hold."""
    rep = drops(seed, Faults(**FAULTS), client=client, change=change, manual=True)
    assert rep.violations == [], rep.command
    assert f"--change {change} --manual" in rep.command
    assert any(f"change: {change} committed (auto-commit off)" in line for line in rep.log)


def test_a_node_restarted_while_a_member_dies_still_takes_drops(monkeypatch):
    """Seed 1003 of `--change remove` (core client): n4 crashes and starts again while n2 is
    dying, so it never hears n2's gossip again; a drop sent to it must not be refused as if
    n2 ran an older version (the checker fails a run on such a refusal: on the node code
    before, which saved no "features", seeds 1003, 1085 and 1127 failed so). With a
    cluster.json without the key (an older version's), n4 refuses, naming n2's version as
    unknown to it, which the checker accepts."""
    rep = drops(1003, Faults(**FAULTS), client="core", change="remove")
    assert rep.violations == [], rep.command
    from zkv.node import core as core_mod

    def without_features(*args, **kw):
        doc = real(*args, **kw)
        del doc["features"]
        return doc
    real = core_mod.cluster_doc
    monkeypatch.setattr(core_mod, "cluster_doc", without_features)
    rep = drops(1003, Faults(**FAULTS), client="core", change="remove")
    assert rep.violations == [], rep.command
    assert any("the version of node(s) n2 is not known here: not heard from since n4 started"
               in line for line in rep.log)


def test_the_drops_checker_sees_a_change_that_never_completes(monkeypatch):
    """The completion check's teeth: with the operator's `zkv cluster leave` never reaching a
    node, the run fails saying so."""
    monkeypatch.setattr(scenario._Admin, "send", lambda self, node, msg: None)
    rep = drops(2, Faults(**FAULTS), change="leave")
    assert "the change (leave) did not complete" in rep.violations


@pytest.mark.parametrize("argv,said", [
    (["--seeds", "0"], "--seeds 0: at least 1"), (["--nodes", "1"], "--nodes 1: at least 3"),
    (["--loss", "1.5"], "--loss 1.5: a probability"), (["--crashes", "-1"], "not negative"),
    (["--scale", "5,x"], "comma-separated cluster sizes"), (["--scale", "0"], "at least 2"),
    (["--scale", "5", "--out", "/nonexistent-dir/x.png"], "no such directory"),
    (["--seed", "3", "--seeds", "2"], "not both")])
def test_simulate_cli_refuses_what_cannot_run_in_one_line(capsys, simulate_cli, argv, said):
    """(--seeds 0 divided by zero; --scale 5,x, --nodes 0 and --out into a missing directory
    ended in tracebacks, the last after the whole sweep; --loss 1.5 ran and "found" a bug.)"""
    with pytest.raises(SystemExit) as done:
        simulate_cli.main(argv)
    assert done.value.code == 2 and said in capsys.readouterr().err


def test_the_drops_checker_sees_a_purge_that_never_happens(monkeypatch):
    """The checker's teeth: with the nodes' dead-key rule switched off (no key is ever judged
    dead: nothing purged, nothing refused), the same run fails, naming the keys left."""
    monkeypatch.setattr(nss.Registry, "is_dead", lambda self, skey: False)
    rep = drops(7, Faults(**FAULTS))
    assert any("of an ended generation" in v for v in rep.violations), rep.violations[:3]


def test_simulate_cli_runs_the_drops_scenario(capsys, simulate_cli):
    argv = ["--loss", "0.02", "--dup", "0.01", "--partitions", "2", "--pauses", "1",
            "--crashes", "1"]
    assert simulate_cli.main(["--scenario", "drops", "--seed", "7", *argv]) == 0
    out = capsys.readouterr().out
    assert "admin truncates" in out and "1 seed(s), 0 failed" in out
    for bad in (["--client", "many"], ["--power-losses", "1"]):
        with pytest.raises(SystemExit):
            simulate_cli.main(["--scenario", "drops", "--seed", "7", *bad])
    assert simulate_cli.main(["--scenario", "drops", "--change", "leave", "--seed", "2",
                              *argv]) == 0
    out = capsys.readouterr().out
    assert "change: leave accepted" in out and "n2 exits" in out
    with pytest.raises(SystemExit):
        simulate_cli.main(["--change", "leave", "--seed", "2"])
    assert "--change applies to --scenario drops" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        simulate_cli.main(["--scenario", "drops", "--manual", "--seed", "2"])
    assert "--manual applies to --scenario drops --change" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1])
def test_a_truncate_while_a_node_joins(seed):
    """A node joins (partitions moving to it) while the namespace is truncated: the transfers
    carry no key of the ended generation, every node purges it, the joiner holds its share of
    the new one, and the new generation holds only what was written since (80 seeds of this
    ran clean while it was written)."""
    sim = Sim(seed, nodes=4, faults=Faults(loss=0.01, dup=0.01, start=0.5, end=20.0))
    admin = AdminClient(sim)
    admin.request(NsCreate(0, "carts", 3, 0, 0, "siblings"), node="n1")
    sim.run_until(1.0)
    keys = [b"c%d" % i for i in range(12)]
    SimClient(sim, "carts-a", writer(keys, b"a", rounds=4), namespace="carts")
    sim.run_until(2.0)
    sim.add_node("n5", seed_of="n1")
    sim.run_until(2.6)
    truncated = sim.t
    answers: list = []
    admin.request(NsDrop(0, "carts", True, 0), answers.append)
    sim.run_until(3.2)
    since = sim.t
    SimClient(sim, "carts-b", writer(keys, b"b", rounds=2), namespace="carts")
    sim.run_until(45.0)
    assert [type(a) for a in answers] == [NsOk]
    new = sim.nodes["n1"].core.namespaces.get("carts")
    assert new.gen == 1 and dead_keys(sim, b"carts", range(1)) == []
    assert not any(sn.core.need_drop for sn in sim.nodes.values())  # (the change completed)
    assert any(nss.generation(k) == (b"carts", 1) for k in sim.nodes["n5"].store.keys())
    check_generation(sim, new, since, truncated)


def test_a_truncate_right_after_a_node_left_is_answered_without_waiting_for_it():
    """n4 left and exited a moment ago, its goodbye gossip lost on the way, so the others
    still see it up for a few seconds. A truncate waits only for the cluster's members to
    show it, not for n4, and is answered within a gossip round or two. It used to wait out its bound (replica_timeout + 5 gossip
    rounds, 2 s by default: the CLI's own timeout), and `zkv namespace truncate` right after
    `zkv local remove` timed out."""
    from sim.scenario import _Admin

    sim = Sim(1, nodes=4)
    admin = AdminClient(sim)
    admin.request(NsCreate(0, "carts", 3, 0, 0, "siblings"), node="n1")
    sim.run_until(2.0)
    core4 = sim.nodes["n4"].core
    shutdown = core4.shutdown

    def goodbye_lost():  # (else the others hold it down at once: NodeCore.shutdown)
        out = shutdown()
        out.gossip.clear()
        return out

    core4.shutdown = goodbye_lost
    _Admin(sim).send("n1", Cluster(1, "leave", "n4"))
    while sim.nodes["n4"].exited is None and sim.t < 40:
        sim.run_until(sim.t + 0.05)
    assert sim.nodes["n4"].exited is not None
    assert sim.nodes["n1"].core.membership.is_up("n4")  # (not yet found down)
    sent = sim.t
    rid = admin.request(NsDrop(0, "carts", True, 0), node="n1", retry=5.0)
    while rid not in admin.replies and sim.t < sent + 3.0:
        sim.run_until(sim.t + 0.05)
    assert type(admin.replies.get(rid)) is NsOk
    assert sim.t - sent < 1.0, sim.t - sent
