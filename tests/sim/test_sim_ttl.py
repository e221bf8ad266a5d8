"""Namespaces with a ttl under deterministic simulation (zkv/node/expiry.py): values are
readable until they expire, then no read, listing or replica serves them, every replica's
sweep drops them, nothing an exchange, hint or late copy brings back stores them again, and
a key written again after it expired holds the new value. Seeded loss, duplication,
a partition and a pause run while the values are written."""

from __future__ import annotations

import msgspec
import pytest

from sim.harness import CoreClient, Faults, Sim, SimClient
from zkv import wire
from zkv._core import dvv
from zkv.node import expiry
from zkv.node import namespaces as nss
from zkv.node.core import REQUEST
from zkv.node.status import status
from zkv.wire import NsCreate

TTL = 6  # seconds


def _create(sim: Sim, name: str = "sess", ttl: int = TTL, conflicts: str = "lww",
            node: str = "n1") -> list:
    core = sim.nodes[node].core
    out = core.handle((REQUEST, b"admin"), [NsCreate(1, name, 3, 0, 0, conflicts, ttl)], sim.t)
    answers = list(out.clients.get(b"admin", []))
    sim._after_turn(sim.nodes[node])
    return answers


def _skey(sim: Sim, key: bytes, name: str = "sess") -> bytes:
    return nss.storage_key(sim.nodes["n1"].core.namespaces.get(name), key)


def _reads(sim: Sim, keys: list[bytes], r: int, name: str = "sess",
           client=SimClient, starts: dict[bytes, float] | None = None
           ) -> dict[bytes, list[bytes]]:
    """Each key read at `r` by a fresh client (its values; a read failing 5 times raises);
    `starts`, if given, gets when each key's last read began."""
    got: dict[bytes, list[bytes]] = {}

    def workload(c):
        if isinstance(c, SimClient):  # (through the nodes that run: not one that left)
            c.nodes = [x for x, sn in sim.nodes.items() if sn.core is not None]
        for k in keys:
            for _ in range(5):  # (the network keeps losing 3% of the frames: a read may time
                if starts is not None:  # out; asked again, as an application would)
                    starts[k] = sim.t
                res = yield ("get", k, r)
                if res.ok:
                    break
            assert res.ok, res.error
            got[k] = list(res.values)

    c = client(sim, f"reader{sim.t:.0f}{client.__name__}", workload, namespace=name)
    end = sim.t + 30
    while not c.done and sim.t < end:
        sim.run_until(sim.t + 0.25)
    assert c.done
    return got


@pytest.mark.parametrize("seed", range(3))
def test_values_expire_everywhere_and_stay_gone(seed):
    sim = Sim(seed, nodes=5, faults=Faults(loss=0.03, dup=0.02, partitions=1, pauses=1,
                                           start=1.5, end=5.0))
    _create(sim)
    sim.run_until(1.0)  # gossip spreads the registry
    for sn in sim.nodes.values():
        assert sn.core.namespaces.get("sess").ttl == TTL, sn.id
    sim.schedule_faults()
    keys = [b"s%d" % i for i in range(12)]

    def writer(c):
        for i in range(40):
            yield ("put", keys[i % len(keys)], b"v%d" % i, b"", 2)
        yield ("sleep", 0.5)

    keep = [True]

    def keeper(c):  # one key written all along (until told to stop): it never expires
        i = 0
        while keep[0]:
            yield ("put", b"live", b"%d" % i, b"", 2)
            yield ("sleep", 0.5)
            i += 1

    writers = [SimClient(sim, f"w{j}", writer, namespace="sess") for j in range(2)]
    keeping = SimClient(sim, "keeper", keeper, namespace="sess")
    while not all(w.done for w in writers) and sim.t < 40.0:
        sim.run_until(sim.t + 0.5)
    assert all(w.done for w in writers)
    last_write = max(ev.end for ev in sim.history.events if ev.op == "put"
                     and ev.key != b"live" and ev.end is not None)
    acked = {ev.key for ev in sim.history.events if ev.op == "put" and ev.ok
             and ev.key != b"live"}
    assert acked
    sim.heal()
    sim.run_until(sim.t + 0.5)
    # before expiry: every key acknowledged less than TTL - 2 s before its read began reads
    # a value (stamped at most 2 s before the acknowledgement: the client's timeout)
    began: dict[bytes, float] = {}
    before = _reads(sim, sorted(acked), 2, starts=began)
    recent = [k for k in acked if any(ev.op == "put" and ev.ok and ev.key == k
                                      and ev.end > began[k] - (TTL - 2)
                                      for ev in sim.history.events)]
    assert recent
    assert all(before[k] for k in recent), {k: before[k] for k in recent}
    # once the last write expired plus one sweep period: gone everywhere, on disk too
    sim.run_until(last_write + TTL + TTL + 2.0)
    for r in (1, 2, 3):
        after = _reads(sim, sorted(acked), r)
        assert all(v == [] for v in after.values()), (r, after)
    assert _reads(sim, sorted(acked), 2, client=CoreClient) == {k: [] for k in acked}
    skeys = [_skey(sim, k) for k in keys]
    held = {(nid, k) for nid in sim.nodes for k in skeys if sim.held(nid, k)}
    assert not held, sorted(held)
    assert sum(sn.core.replica.expired_drops for sn in sim.nodes.values()) > 0
    # the key written all along reads its newest value; listings hold it alone
    newest = max(int(ev.value) for ev in sim.history.events
                 if ev.op == "put" and ev.ok and ev.key == b"live")
    # (the network still loses 3% of the frames: a get whose owner's answer was lost can be
    # completed by stand-ins that hold nothing, Dynamo's sloppy read; asked three times)
    lives = [_reads(sim, [b"live"], 2)[b"live"] for _ in range(3)]
    assert any(v and int(v[0]) >= newest for v in lives), (lives, newest)
    assert sim.list_keys("sess") == [b"live"]
    items = sim.list_keys("sess", op="items", r=None)
    assert [k for k, _ in items] == [b"live"], items
    # a key written again after it expired holds the new value
    again = []

    def rewriter(c):
        for _ in range(5):  # (asked again after a timeout: the network still loses frames)
            again.append((yield ("put", keys[0], b"again", b"", 2)))
            if again[-1].ok:
                break

    SimClient(sim, "again", rewriter, namespace="sess")
    while not (again and again[-1].ok) and len(again) < 5:
        sim.run_until(sim.t + 1.0)
    assert again and again[-1].ok
    assert any(_reads(sim, [keys[0]], 2)[keys[0]] == [b"again"] for _ in range(3))
    skey0 = _skey(sim, keys[0])  # and at least two owners hold it
    held = [dvv.DVVSet.decode(v).live_values() for x in sim.owners(skey0)
            if (v := sim.held(x, skey0))]
    head = nss.head_of_key(skey0)
    assert sum(1 for v in held if [x[head:] for x in v] == [b"again"]) >= 2, held
    keep[0] = False
    while not keeping.done:
        sim.run_until(sim.t + 1.0)
    sim.run_until(sim.t + TTL + 2 * TTL + 1.0)  # everything expired, then swept
    assert not any(sim.held(nid, _skey(sim, k)) for nid in sim.nodes for k in keys + [b"live"])
    # the trees agree: the drops were made on every replica alike
    for sn in sim.nodes.values():
        by_n = status(sn.core)["antientropy"]["by_n"]
        assert all(ae["partitions"] == ae["partitions_agreed"] for ae in by_n.values()), \
            (sn.id, by_n)


def test_a_copy_held_by_a_paused_node_never_comes_back():
    """n3 is paused holding a value; meanwhile the value expires and the others drop it.
    When n3 resumes, its copy is not served (R=1 reads through it find nothing), its exchanges
    and read repairs store nothing elsewhere, and its own sweep drops it."""
    sim = Sim(11, nodes=3)
    _create(sim)
    sim.run_until(1.0)
    done = []

    def writer(c):
        done.append((yield ("put", b"k", b"v", b"", 3)))

    SimClient(sim, "w", writer, namespace="sess")
    sim.run_until(2.0)
    assert done and done[0].ok
    skey = _skey(sim, b"k")
    assert all(sim.held(nid, skey) for nid in sim.nodes)
    sim.pause("n3")
    sim.run_until(2.0 + TTL + TTL + 1.0)
    assert not sim.held("n1", skey) and not sim.held("n2", skey)
    assert sim.held("n3", skey)  # paused: its sweep did not run
    sim.resume("n3")
    seen = []

    def reader(c):
        c.nodes = ["n3"]
        seen.append((yield ("get", b"k", 1)))

    SimClient(sim, "r", reader, namespace="sess")
    sim.run_until(sim.t + 0.3)
    assert seen and seen[0].ok and seen[0].values == []
    sim.run_until(sim.t + 30.0)  # exchanges, the sweep
    assert not any(sim.held(nid, skey) for nid in sim.nodes)
    assert sim.nodes["n3"].core.replica.expired_drops == 1  # (read through it: on access)


def test_ttl_needs_lww_and_an_upgraded_cluster():
    sim = Sim(1, nodes=3)
    [err] = _create(sim, "bad", conflicts="siblings")
    assert "needs conflicts=lww" in err.message
    # a member whose version does not expire: refused, naming it
    n2 = sim.nodes["n1"].core.membership.get("n2")
    sim.nodes["n1"].core.membership.peers["n2"].member = type(n2)(
        **{f: getattr(n2, f) for f in n2.__struct_fields__ if f != "features"})
    [err] = _create(sim, "s2")
    assert "n2" in err.message and "upgrade every node" in err.message
    assert _create(sim, "plain", ttl=0) == []  # (answered once the others show it)
    sim.run_until(sim.t + 2.0)
    assert "plain" in sim.nodes["n1"].core.namespaces
    assert "s2" not in sim.nodes["n1"].core.namespaces


@pytest.mark.parametrize("seed", range(3))
def test_expired_values_leave_no_copy_through_joins_a_leave_and_faults(seed):
    """3 -> 5 -> 4 nodes (two join, n2 leaves: transfers, handoffs, hints) while clients write
    a namespace with a ttl under loss, a crash and a pause. Once writes stopped and their ttl
    and two sweep periods passed: no node holds a version of the namespace (store or hint),
    reads and listings find nothing, and every copy of the keys written last before that
    expired is there until then."""
    from sim.scenario import _Admin
    from zkv.wire import Cluster

    sim = Sim(seed, nodes=3, faults=Faults(loss=0.02, crashes=1, pauses=1, start=2.0,
                                           end=14.0))
    _create(sim, ttl=8)
    sim.run_until(1.0)
    stop = [False]

    def writer(c):
        i = 0
        while not stop[0]:
            yield ("put", b"k%d" % (i % 30), b"%s-%d" % (c.name.encode(), i), b"", 2)
            i += 1
            yield ("sleep", 0.05)

    for j in range(2):
        SimClient(sim, f"w{j}", writer, namespace="sess")
    sim.schedule_faults()
    sim.run_until(3.0)
    sim.add_node("n4", seed_of="n1")
    sim.add_node("n5", seed_of="n3")
    sim.run_until(10.0)
    admin = _Admin(sim)
    for _ in range(10):  # again after a lost relay, as an operator would
        admin.answers.clear()
        admin.send(next(x for x in ("n3", "n4", "n5", "n1") if sim.nodes[x].core is not None),
                   Cluster(1, "leave", "n2"))
        sim.run_until(sim.t + 2.0)
        if any(type(a).__name__ == "ClusterOk" for a in admin.answers) or \
                "leaving" in str(admin.answers):
            break
    sim.run_until(20.0)
    stop[0] = True
    sim.run_until(21.0)
    last = max(ev.end for ev in sim.history.events if ev.op == "put" and ev.ok)
    began: dict[bytes, float] = {}
    live = _reads(sim, [b"k%d" % i for i in range(30)], 2, starts=began)
    fresh = [k for k in live if any(  # acknowledged less than 5 s before its read began:
        ev.op == "put" and ev.ok and ev.key == k and ev.end > began[k] - 5 for ev in
        sim.history.events)]  # (stamped at most 2 s before: the client's timeout)
    assert len(fresh) >= 5, (fresh, began)  # (something to check, also under heavy faults)
    assert all(live[k] for k in fresh), {k: live[k] for k in fresh}
    sim.run_until(last + 8 + 2 * 8 + 10)
    while sim.nodes["n2"].core is not None and sim.t < 200:  # (its leave ends: it exits)
        sim.run_until(sim.t + 1.0)
    nodes = [sn for sn in sim.nodes.values() if sn.core is not None]
    prefix = nss.prefix(nodes[0].core.namespaces.get("sess"))
    left = [(sn.id, k) for sn in nodes for k in sn.store.keys()  # (a node that exited keeps
            if k.startswith(prefix) and sn.store.get(k)]            # its data dir as it was)
    assert not left, left
    assert sim.hints_pending() == 0
    assert all(v == [] for v in _reads(sim, [b"k%d" % i for i in range(30)], 1).values())
    assert sim.list_keys("sess") == []


def test_the_sweep_tool_runs_seeds_with_extra_faults():
    """tools/sweep_ttl.py (RESULTS.md's sweeps of these tests): two seeds with a crash added,
    then a field that Faults does not have, refused."""
    import os
    import subprocess
    import sys

    tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "sweep_ttl.py")
    out = subprocess.run([sys.executable, tool, "5", "7", "crashes=1"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("{'crashes': 1}: 2 seeds x 4 test(s): 0 failed")
    out = subprocess.run([sys.executable, tool, "5", "6", "bogus=1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "'bogus' is no Faults field" in out.stderr


def _alter(sim: Sim, name: str = "sess", r: int = -1, ttl: int = -1, node: str = "n1") -> None:
    """An admin's NsAlter to `node`, as an admin would: to another running node, half a
    second later, if it is down or refuses (a sweep's extra faults may have crashed it, or a
    power loss cost it the registry it had not synced yet, gossip bringing it back)."""
    from zkv.wire import Error, NsAlter

    for attempt in range(10):
        sn = [x for x in [sim.nodes[node], *sim.nodes.values()]
              if x.core is not None and not x.paused][attempt % len(sim.nodes)]
        out = sn.core.handle((REQUEST, b"admin"), [NsAlter(2, name, r, -1, ttl)], sim.t)
        refused = [m for m in out.clients.get(b"admin", []) if type(m) is Error]
        sim._after_turn(sn)
        if not refused:
            return
        sim.run_until(sim.t + 0.5)
    raise AssertionError(f"every node refused the alter: {refused}")


def _running(sim: Sim) -> list:
    return [sn for sn in sim.nodes.values() if sn.core is not None]


@pytest.mark.parametrize("seed", range(3))
def test_an_alter_reaches_every_node_and_never_brings_an_expired_value_back(seed):
    """`zkv namespace alter` under loss, duplication, a partition and a pause: every node
    takes the last alter. A lowered ttl expires what is older than it at once; one raised
    right after (the expired copies still on the replicas, their sweeps not there yet)
    brings none of them back on any replica, while a value written after it lives the new
    ttl."""
    sim = Sim(seed, nodes=5, faults=Faults(loss=0.03, dup=0.02, partitions=1, pauses=1,
                                           start=1.2, end=3.5))
    _create(sim, ttl=3600)
    sim.run_until(1.0)
    sim.schedule_faults()
    keys = [b"a%d" % i for i in range(8)]

    def writer(c):
        for i, k in enumerate(keys):
            yield ("put", k, b"v%d" % i, b"", 3)

    w = CoreClient(sim, "w", writer, namespace="sess")
    while not w.done and sim.t < 20:
        sim.run_until(sim.t + 0.25)
    assert w.done
    written = sim.t
    _alter(sim, r=1, ttl=4)  # lowered: the values expire 4 s after their writes
    sim.run_until(max(written + 4.3, 4.0))
    # (a write's stamp may be later than its acknowledgement: a copy that waited in a node
    # paused for less than a stall, stamped when it resumed; every one must have expired)
    newest = max((expiry.stamp_ms(v) for k in keys for sn in _running(sim)
                  for v in dvv.DVVSet.decode(sn.core.store.get(_skey(sim, k)) or
                                             dvv.EMPTY.encode()).values() if v),
                 default=0)
    sim.run_until(max(sim.t, (newest - sim.wall_ms()) / 1000 + sim.t + 4.3))
    assert all(sn.core.namespaces.get("sess").ttl == 4 for sn in _running(sim))
    assert all(sn.core.namespaces.get("sess").r == 1 for sn in _running(sim))
    on_disk = sum(1 for k in keys for sn in _running(sim)
                  if sn.core.store.get(_skey(sim, k)))
    assert on_disk  # (the sweeps have not dropped every copy yet: some could come back)
    _alter(sim, ttl=3600, node="n2")  # raised: none of them comes back
    sim.run_until(sim.t + 2.0)
    assert all(sn.core.namespaces.get("sess").ttl == 3600 for sn in _running(sim))
    assert _reads(sim, keys, 2) == {k: [] for k in keys}  # (and each replica, below)
    for k in keys:
        skey = _skey(sim, k)
        for sn in _running(sim):
            assert not sn.core.replica.read(skey), (sn.id, k)  # no copy served anywhere

    def later(c):
        yield ("put", b"fresh", b"new", b"", 2)

    f = CoreClient(sim, "f", later, namespace="sess")
    while not f.done and sim.t < 60:
        sim.run_until(sim.t + 0.25)
    sim.run_until(sim.t + 6.0)  # (longer than the old ttl of 4 s)
    assert _reads(sim, [b"fresh"], 2) == {b"fresh": [b"new"]}


# ---- a write's own ttl (put(..., ttl=): expiry.served) ------------------------------------------
def _write(sim: Sim, key: bytes, value: bytes, w: int, ttl: int | None = None,
           nodes: list[str] | None = None) -> None:
    done = []

    def writer(c):
        c.ttl = ttl
        done.append((yield ("put", key, value, b"", w)))

    c = CoreClient(sim, f"w{sim.t:.2f}", writer, namespace="sess")
    if nodes is not None:
        c.core.seeds = [sim.nodes[x].cfg.listen for x in nodes]
    while not c.done:
        sim.run_until(sim.t + 0.1)
    assert done[0].ok, done[0].error


@pytest.mark.parametrize("seed", range(3))
def test_a_write_past_its_own_ttl_still_hides_the_older_value_a_lagging_replica_holds(seed):
    """`old` (no ttl of its own) is on every owner; n3 is cut off while `new` is written with
    a ttl of 3 s (W=2: n1 and n2). Past those 3 s the partition heals: every read at R=2 finds
    the key absent, whichever owners answer, n3's `old` included (merged, the expired `new`
    is still the newest write: a copy dropped when it expired would have let `old` back).
    The copies stay until the namespace's ttl (20 s) expires them, then every owner drops
    them, n3's `old` too. Keys listings leave the key out as soon as its own ttl is over."""
    sim = Sim(40 + seed, nodes=3)
    _create(sim, ttl=20)
    sim.run_until(1.0)
    ns = sim.nodes["n1"].core.namespaces.get("sess")
    assert ns.write_ttl and ns.head == 12
    skey = _skey(sim, b"k")
    _write(sim, b"k", b"old", 3)
    assert all(sim.held(x, skey) for x in sim.nodes)
    sim.partition(["n1", "n2"], ["n3"])
    _write(sim, b"k", b"new", 2, ttl=3, nodes=["n1", "n2"])
    written = sim.t
    for x in ("n1", "n2"):  # its hint for n3 lost (as in a crash with sync=none)
        h = sim.nodes[x].core.handoff
        if h.get("n3", skey):
            h.delivered("n3", skey, h.get("n3", skey))
    assert _reads(sim, [b"k"], 2, client=CoreClient) == {b"k": [b"new"]}
    sim.run_until(written + 3.5)
    sim.heal()
    while not all(sim.nodes[x].core.membership.is_up(y) for x in sim.nodes for y in sim.nodes
                  if x != y):
        sim.run_until(sim.t + 0.1)
    assert dvv.DVVSet.decode(sim.held("n3", skey)).live_values()[0][12:] == b"old"
    got: list = []

    def reader(c):  # R=2 coordinated by n3: its `old` meets the expired `new`
        c.nodes = ["n3"]
        got.append((yield ("get", b"k", 2)))

    SimClient(sim, "r3", reader, namespace="sess")
    while not got:
        sim.run_until(sim.t + 0.05)
    assert got[0].ok and got[0].values == [], got[0]
    assert _reads(sim, [b"k"], 3, client=CoreClient) == {b"k": []}
    sim.run_until(written + 12.0)  # read repair, exchanges: every owner holds the newest
    held = {x: dvv.DVVSet.decode(sim.held(x, skey)).live_values() for x in sim.nodes}
    assert all(len(v) == 1 and v[0][12:] == b"new" for v in held.values()), held
    assert all(expiry.own_ttl_over(v[0], sim.wall_ms()) for v in held.values())
    listed: list = []

    def lister(c):
        for r in (1, 2):
            listed.append((yield ("keys", b"sess", r)))
            listed.append((yield ("items", b"sess", r)))

    CoreClient(sim, "lister", lister, namespace="sess")
    sim.run_until(sim.t + 3.0)
    assert len(listed) == 4 and all(x.ok and x.values == [] for x in listed), listed
    sim.run_until(written + 20.0 + expiry.period(20_000) + 2.0)  # the namespace's ttl, a pass
    assert not any(sim.held(x, skey) for x in sim.nodes)


def test_a_write_with_its_own_ttl_is_served_until_then_and_a_rewrite_without_one_lives_on():
    sim = Sim(7, nodes=3)
    _create(sim, ttl=30)
    sim.run_until(1.0)
    _write(sim, b"a", b"a1", 2, ttl=2)
    _write(sim, b"b", b"b1", 2, ttl=2)
    assert _reads(sim, [b"a", b"b"], 2, client=CoreClient) == {b"a": [b"a1"], b"b": [b"b1"]}
    _write(sim, b"b", b"b2", 2)  # rewritten without a ttl of its own: the namespace's
    sim.run_until(sim.t + 2.5)
    assert _reads(sim, [b"a", b"b"], 2, client=CoreClient) == {b"a": [], b"b": [b"b2"]}
    assert _reads(sim, [b"a", b"b"], 2) == {b"a": [], b"b": [b"b2"]}  # (coordinated)
    _write(sim, b"a", b"a2", 2, ttl=30)  # a write after it serves again
    assert _reads(sim, [b"a"], 1, client=CoreClient) == {b"a": [b"a2"]}


def test_a_write_ttl_is_refused_where_the_namespace_cannot_keep_it():
    """Longer than the namespace's own ttl, in a namespace without one or keeping siblings,
    or in one created while a member ran a version without per-write ttls: each refused,
    saying why; nothing is written."""
    sim = Sim(3, nodes=3)
    _create(sim, ttl=10)
    _create(sim, "forever", ttl=0)
    _create(sim, "sib", ttl=0, conflicts="siblings")
    n2 = sim.nodes["n1"].core.membership.get("n2")  # n2 runs a version without it
    sim.nodes["n1"].core.membership.peers["n2"].member = msgspec.structs.replace(
        n2, features=n2.features & ~wire.FEATURE_WRITE_TTL)
    _create(sim, "old", ttl=10)
    sim.run_until(2.0)
    reg = sim.nodes["n1"].core.namespaces
    assert reg.get("sess").write_ttl and not reg.get("old").write_ttl
    assert reg.get("old").head == 8 and reg.get("sib").head == 0
    results = {}
    for name, ttl in (("sess", 11), ("forever", 5), ("sib", 5), ("old", 5), ("sess", 10)):
        out: list = []

        def writer(c, ttl=ttl, out=out):
            c.ttl = ttl
            out.append((yield ("put", b"k", b"v", b"", 2)))

        SimClient(sim, f"w{name}{ttl}", writer, namespace=name)
        sim.run_until(sim.t + 2.0)
        results[(name, ttl)] = out[0]
    assert "keeps a write at most its own ttl (10s)" in results[("sess", 11)].error
    assert "has no ttl, so its writes carry none" in results[("forever", 5)].error
    assert "needs an lww namespace" in results[("sib", 5)].error
    assert "without per-write ttls" in results[("old", 5)].error
    assert results[("sess", 10)].ok
    for name in ("forever", "sib", "old"):
        skey = nss.storage_key(reg.get(name), b"k")
        assert not any(sim.held(x, skey) for x in sim.nodes), name


@pytest.mark.parametrize("seed", range(3))
def test_writes_past_their_own_ttl_never_let_an_older_value_back_under_faults(seed):
    """Under loss, duplication, a partition and a pause, every key is written without a ttl
    of its own (`base`), then overwritten with one of 2 s (`short`). Once the faults end and
    2 s pass, a key whose short write was acknowledged reads absent at R=2 (either client),
    and once exchanges ran at R=1 too: never its base value. Past the namespace's ttl and a
    sweep pass, no copy of any key is left. (Here hints and read repair reach the replicas
    that missed a short write before it expires; the lagging replica the shadow rule is for
    is built by the test above.)"""
    ttl = 12
    sim = Sim(60 + seed, nodes=5, faults=Faults(loss=0.03, dup=0.02, partitions=1, pauses=1,
                                                start=1.5, end=6.0))
    _create(sim, ttl=ttl)
    sim.run_until(1.0)
    sim.schedule_faults()
    keys = [b"k%d" % i for i in range(10)]

    def writer(c):
        for k in keys:
            c.ttl = 0
            yield ("put", k, b"base", b"", 2)
            c.ttl = 2
            yield ("put", k, b"short", b"", 2)

    w = SimClient(sim, "w", writer, namespace="sess")
    while not w.done and sim.t < 40.0:
        sim.run_until(sim.t + 0.5)
    assert w.done
    shorts = [ev for ev in sim.history.events if ev.op == "put" and ev.value == b"short"]
    # (judged where the base write was acknowledged too: one that timed out may still land,
    # and after a stall with a later stamp than the short write that waited in a stopped
    # node, stamped as of its stop: README, "Known limits"; seeds 8017, 8080 with 3 pauses)
    based = {ev.key for ev in sim.history.events if ev.op == "put" and ev.value == b"base"
             and ev.ok}
    gone = sorted(ev.key for ev in shorts if ev.ok and ev.key in based)
    assert len(gone) >= 5, shorts  # (enough to judge)
    sim.heal()
    sim.run_until(max(sim.t, 6.0, max(ev.end for ev in shorts)) + 2.5)
    for client in (SimClient, CoreClient):
        got = _reads(sim, gone, 2, client=client)
        assert all(v == [] for v in got.values()), (client.__name__, got)
    sim.run_until(sim.t + 8.0)  # exchanges: every owner holds the newest write
    got = _reads(sim, gone, 1)
    assert all(v == [] for v in got.values()), got
    last = max(ev.end for ev in sim.history.events if ev.op == "put")
    sim.run_until(last + ttl + expiry.period(ttl * 1000) + 2.0)
    assert not any(sim.held(x, _skey(sim, k)) for x in sim.nodes for k in keys)
