"""Always writable and self-healing (issue 5): failure detection, sloppy quorum, hinted handoff,
Merkle anti-entropy, corrupt-record repair and safe tombstone reaping, on real processes."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time

import pytest
from conftest import FAST, held
from ops_helpers import zkv as zkv_cli

import zkv

pytestmark = pytest.mark.cluster

HEAL = FAST + ["--aae-interval", "0.05", "--ring-size", "16", "--tombstone-grace", "1"]


def status(endpoint: str) -> dict:
    with zkv.Client([endpoint], timeout=3.0) as c:
        return c.status(endpoint)


def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def fully_agreed(endpoint: str) -> bool:
    """Every partition the node holds agreed with every other owner in the last 2 seconds."""
    ae = status(endpoint)["antientropy"]
    return bool(ae["partitions"] and ae["partitions_agreed"] == ae["partitions"]
                and ae["max_seconds_since_agreement"] < 2.0)


def test_paused_node_detected_and_back_on_sigcont(make_cluster):
    cl = make_cluster(3, extra_args=HEAL)
    ep1 = cl.node("node1").listen
    cl.pause("node3")

    def node3_state():
        m = {m["id"]: m for m in status(ep1)["members"]}["node3"]
        return m if m["state"] == "down" else None

    m = wait_for(node3_state, 10, "node3 down")
    assert "heartbeat" in m["reason"]
    cl.resume("node3")
    wait_for(lambda: {m["id"]: m["state"] for m in status(ep1)["members"]}["node3"] == "up", 10,
             "node3 up again")


def test_sloppy_quorum_hints_reach_owners_and_drain(make_cluster):
    cl = make_cluster(5, extra_args=HEAL, racks=["r1", "r2", "r3", "r4", "r5"])
    cl.pause("node4")
    cl.pause("node5")
    cl.wait_converged(expect_up=["node1", "node2", "node3"])
    keys = [b"hk%d" % i for i in range(100)]
    with zkv.Client(cl.endpoints[:3], timeout=5.0) as c:
        for k in keys:
            c.put(k, b"v-" + k, w=3)  # always writable: 3 of 5 nodes alive is enough for W=3
        backlog = sum(status(ep)["hints"]["backlog"] for ep in cl.endpoints[:3])
        assert backlog > 0
        ring = zkv.Client(cl.endpoints[:1])
        info = ring.ring_info()
        ring.close()
    cl.resume("node4")
    cl.resume("node5")
    cl.wait_converged()
    wait_for(lambda: all(status(ep)["hints"]["backlog"] == 0 for ep in cl.endpoints), 30,
             "hint backlog to drain")
    from zkv._core.ring import Ring

    r = Ring([(m.id, m.rack) for m in info.members], q=info.q, n=info.n)
    eps = {n.id: n.listen for n in cl.nodes}
    checked = 0
    for k in keys:
        for owner in r.preflist_for_key(k):
            if owner in ("node4", "node5"):
                assert held(eps[owner], k) == [b"v-" + k], (owner, k)
                checked += 1
    assert checked > 0


def test_wiped_replica_converges_by_antientropy_alone(make_cluster):
    cl = make_cluster(3, extra_args=HEAL)
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(300):
            c.put(b"ae%d" % i, b"x" * 200, w=3)
    def dots() -> list:
        with open(os.path.join(cl.node("node3").data_dir, "cluster.json")) as fh:
            return json.load(fh)["dots"]

    before = dots()
    cl.kill("node3")
    shutil.rmtree(cl.node("node3").data_dir)
    cl.restart("node3")  # rejoins through a seed with an empty store
    ep3 = cl.node("node3").listen
    # it cannot tell it lost its disk: its dots go under a new id, never its old ones
    wait_for(lambda: os.path.exists(os.path.join(cl.node("node3").data_dir, "cluster.json")),
             30, "node3's cluster.json")
    assert dots()[0].startswith("node3~") and dots()[0] != before[0], (before, dots())
    # refilling, its empty reads do not count: R=1 reads it coordinates find every key the
    # others hold (before, it answered "not found" for what it had not pulled yet)
    wait_for(lambda: status(ep3)["antientropy"], 30, "node3 to join")
    with zkv.Client([ep3], timeout=5.0) as c:
        assert [i for i in range(300) if c.get(b"ae%d" % i, r=1).values != [b"x" * 200]] == []
    wait_for(lambda: status(ep3)["antientropy"]["refill_partitions_left"] == 0, 60,
             "node3 to finish refilling")
    wait_for(lambda: all(held(ep3, b"ae%d" % i) == [b"x" * 200] for i in range(0, 300, 10)), 60,
             "node3 to converge")
    wait_for(lambda: all(held(ep3, b"ae%d" % i) for i in range(300)), 60, "every key on node3")
    # a small divergence moves a small fraction of the data set
    sent_before = sum(status(ep)["antientropy"]["bytes_sent"] for ep in cl.endpoints)
    cl.kill("node3")
    cl.wait_converged(expect_up=["node1", "node2"])
    with zkv.Client(cl.endpoints[:2], timeout=5.0) as c:
        for i in range(5):  # no 4th node: no stand-in, no hints; only AAE can heal node3
            c.put(b"ae-new%d" % i, b"y" * 200, w=2)
    cl.restart("node3")
    wait_for(lambda: all(held(ep3, b"ae-new%d" % i) == [b"y" * 200] for i in range(5)), 60,
             "node3 to receive the 5 new keys")
    sent = sum(status(ep)["antientropy"]["bytes_sent"] for ep in cl.endpoints) - sent_before
    data_set = 305 * 200 * 2
    assert sent < data_set * 0.2, (sent, data_set)


def test_a_wiped_node_refills_and_cannot_vouch_until_it_reached_every_owner(make_cluster):
    """node3 loses its disk while node2 is down: it pulls everything from node1 at once, but
    its partitions stay unverified, and its answers uncounted, until node2 is back (status
    and `zkv status` say so; an R=3 read names it); then the refill ends."""
    cl = make_cluster(3, extra_args=HEAL)
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(50):
            c.put(b"rf%d" % i, b"v%d" % i, w=3)
    cl.kill("node2")
    cl.kill("node3")
    shutil.rmtree(cl.node("node3").data_dir)
    cl.restart("node3")  # joins through node1, the only node up
    ep3 = cl.node("node3").listen
    wait_for(lambda: status(ep3)["antientropy"], 30, "node3 to join")
    wait_for(lambda: all(held(ep3, b"rf%d" % i) == [b"v%d" % i] for i in range(50)), 60,
             "node3 to pull every key from node1")
    assert status(ep3)["antientropy"]["refill_partitions_left"] == 16  # all it holds (Q=16)
    out = zkv_cli("status", "--node", ep3)
    assert out.returncode == 0 and "refilling after a lost disk: 16 partition(s)" in out.stdout
    with zkv.Client([ep3], timeout=5.0) as c:
        with pytest.raises(zkv.QuorumError, match="refilling after a lost disk: node3"):
            c.get(b"rf1", r=3)
    cl.restart("node2")
    wait_for(lambda: status(ep3)["antientropy"]["refill_partitions_left"] == 0, 60,
             "node3's refill to end once node2 is back")
    assert "refilling" not in zkv_cli("status", "--node", ep3).stdout
    with zkv.Client([ep3], timeout=5.0) as c:
        assert c.get(b"rf1", r=3).values == [b"v1"]


def test_flipped_bytes_detected_and_repaired_from_replica(make_cluster):
    cl = make_cluster(3, extra_args=HEAL)
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(50):
            c.put(b"cr%d" % i, b"value-%d-" % i + b"z" * 100, w=3)
    assert cl.terminate("node3") == 0
    segs = sorted(glob.glob(os.path.join(cl.node("node3").data_dir, "data", "*.data")))
    assert segs, os.listdir(os.path.join(cl.node("node3").data_dir, "data"))
    size = os.path.getsize(segs[0])
    for off in (size // 3, size // 2, (2 * size) // 3):
        flip_byte(segs[0], off)
    cl.restart("node3")
    ep3 = cl.node("node3").listen
    want = {b"cr%d" % i: [b"value-%d-" % i + b"z" * 100] for i in range(50)}
    wait_for(lambda: all(held(ep3, k) == v for k, v in want.items()), 60,
             "every corrupt record repaired on node3")
    wait_for(lambda: fully_agreed(ep3), 60, "node3's trees to agree with both peers")


def test_corruption_found_while_running_is_repaired_and_trees_agree(make_cluster):
    cl = make_cluster(3, extra_args=HEAL + ["--sync", "always"])
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(40):
            c.put(b"live%d" % i, b"value-%d-" % i + b"q" * 100, w=3)
    ep3 = cl.node("node3").listen
    segs = sorted(glob.glob(os.path.join(cl.node("node3").data_dir, "data", "*.data")))
    # under the running node's feet (its mmap sees it), inside the first records (the
    # active segment may carry a preallocated zero tail)
    flip_byte(segs[0], 120)
    # reading every key through node3 alone finds the bad record; it is never returned
    want = {b"live%d" % i: [b"value-%d-" % i + b"q" * 100] for i in range(40)}
    lost = 0
    for k, v in want.items():
        got = held(ep3, k)
        assert got in (v, None), (k, got)
        lost += got is None
    assert lost == 1  # the flipped record is detected, and only it
    wait_for(lambda: all(held(ep3, k) == v for k, v in want.items()), 60,
             "the corrupt record repaired from a replica")
    wait_for(lambda: fully_agreed(ep3), 60, "node3's trees to agree again")


def test_delete_while_replica_down_never_resurrects(make_cluster):
    cl = make_cluster(3, extra_args=HEAL)
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        c.put(b"dk", b"old", w=3)
        cl.kill("node3")
        cl.wait_converged(expect_up=["node1", "node2"])
        c.delete(b"dk", context=c.get(b"dk", r=2).context, w=2)
        time.sleep(2.5)  # longer than the grace period
        # node3 never agreed: the tombstone must still be held
        assert held(cl.node("node1").listen, b"dk") == [None]
        cl.restart("node3")  # comes back holding the old value
        cl.wait_converged()
        ep = [n.listen for n in cl.nodes]
        # converge, then reap everywhere; the old value never comes back in between
        deadline = time.monotonic() + 60
        def read_all() -> list[bytes]:
            for _ in range(20):  # a replica slow under load is a retry, not a resurrection
                try:
                    return c.get(b"dk", r=3).values
                except zkv.QuorumError:
                    time.sleep(0.1)
            raise AssertionError("no R=3 read succeeded")

        while time.monotonic() < deadline:
            assert read_all() == [], "deleted value came back"
            if all(held(e, b"dk") is None for e in ep):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("tombstone was never reaped")
        for _ in range(10):
            assert read_all() == []
            time.sleep(0.1)
        assert all(held(e, b"dk") is None for e in ep)


def test_concurrent_writes_on_both_sides_of_a_pause_become_siblings(make_cluster):
    cl = make_cluster(3, extra_args=HEAL)
    ep1, ep3 = cl.node("node1").listen, cl.node("node3").listen
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        c.put(b"both", b"v1", w=3)
        ctx = c.get(b"both", r=3).context
    cl.pause("node1")
    cl.pause("node2")
    cl.wait_converged(expect_up=["node3"])
    with zkv.Client([ep3], timeout=5.0) as c3:
        c3.put(b"both", b"side-b", context=ctx, w=1)
    cl.resume("node1")
    cl.resume("node2")
    cl.pause("node3")
    cl.wait_converged(expect_up=["node1", "node2"])
    with zkv.Client([ep1], timeout=5.0) as c1:
        c1.put(b"both", b"side-a", context=ctx, w=2)
    cl.resume("node3")
    cl.wait_converged()
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        wait_for(lambda: sorted(c.get(b"both", r=3).values) == [b"side-a", b"side-b"], 30,
                 "both sides' writes as siblings")


def test_repair_command_runs(make_cluster):
    import subprocess
    import sys

    cl = make_cluster(3, extra_args=HEAL)
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(20):
            c.put(b"rp%d" % i, b"v", w=3)
    out = subprocess.run([sys.executable, "-m", "zkv.cli", "repair", "--node", cl.endpoints[0]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "roots compared first" in out.stdout, out.stdout
    # every pair's roots compared (at least: routine rounds may add theirs), none differing
    pairs = int(re.search(r"repair: (\d+) \(partition, owner\) pair", out.stdout)[1])
    compared = re.search(r"done: (\d+) root comparison\(s\), (\d+) full exchange", out.stdout)
    assert pairs > 0 and compared and int(compared[1]) >= pairs, out.stdout
    agreed = re.search(r"(\d+)/(\d+) partitions in full agreement", out.stdout)
    assert agreed and agreed[1] == agreed[2], out.stdout  # every replica has every write


def test_a_repair_with_an_owner_down_says_it_did_not_compare_with_it(make_cluster):
    """`zkv repair` with one owner down printed "16/16 partitions in full agreement" and
    exited 0, though nothing was compared with that owner (an outside run)."""
    from ops_helpers import wait_for

    cl = make_cluster(3, extra_args=HEAL)
    cl.kill("node3")
    with zkv.Client([cl.endpoints[0]], timeout=5.0) as c:
        wait_for(lambda: any(m["id"] == "node3" and m["state"] == "down"
                             for m in c.status()["members"]), 30, "node3 down at node1")
    out = zkv_cli("repair", "--node", cl.endpoints[0])
    assert out.returncode == 1, out
    assert "not compared with node3 (down): repair again once back" in out.stdout, out.stdout
    assert "key copies repaired" in out.stdout, out.stdout


def test_w3_writes_at_the_moment_two_of_five_freeze_all_succeed(make_cluster):
    """Issue 10: 100 puts at w=3 issued right as 2 of 5 nodes are frozen (SIGSTOP, no notice)
    all succeed; once they resume, every key is readable at r=3 after hints are delivered."""
    import asyncio

    cl = make_cluster(5, extra_args=HEAL)
    live = [n.listen for n in cl.nodes[:3]]
    with zkv.Client(live, timeout=5.0) as c:  # warm: every node has answered recently
        for i in range(20):
            c.put(b"warm%d" % i, b"w", w=3)
    cl.pause("node4")
    cl.pause("node5")

    async def burst():
        async with zkv.AsyncClient(live, timeout=5.0) as c:
            return await asyncio.gather(*(c.put(b"freeze%d" % i, b"v%d" % i, w=3)
                                          for i in range(100)), return_exceptions=True)

    results = asyncio.run(burst())
    assert [r for r in results if isinstance(r, Exception)] == []
    cl.resume("node4")
    cl.resume("node5")
    cl.wait_converged()
    wait_for(lambda: all(status(ep)["hints"]["backlog"] == 0 for ep in cl.endpoints), 60,
             "hints to drain")
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(100):
            assert c.get(b"freeze%d" % i, r=3).values == [b"v%d" % i]


def test_frozen_coordinator_resumed_with_queued_writes_leaves_one_sibling_each(make_cluster):
    """Issue 10: writes queued on a frozen coordinator are retried elsewhere by the client
    (same write ids); when the coordinator resumes it coordinates the queued copies too, and
    every key still reads back as exactly one sibling per written value, on every replica."""
    import asyncio

    from zkv._core.ring import Ring

    cl = make_cluster(3, extra_args=HEAL)
    eps = cl.endpoints
    with zkv.Client(eps, timeout=5.0) as c:
        info = c.ring_info()
        for i in range(20):
            c.put(b"warm%d" % i, b"w")
    ring = Ring([(m.id, m.rack) for m in info.members], q=info.q, n=info.n)
    # each peer's soft timeout (zkv/node/latency.py) is in the status: a floor of 100 ms
    peers = [m for m in status(eps[0])["members"] if m["id"] != "node1"]
    assert peers and all(m["soft_timeout_ms"] >= 100 for m in peers)
    # keys node1 coordinates (first in their preference list: the client's first try)
    keys = [k for k in (b"queued%d" % i for i in range(400))
            if ring.preflist_for_key(k)[0] == "node1"][:30]
    assert len(keys) == 30

    async def writes():
        async with zkv.AsyncClient(eps, timeout=8.0) as c:
            await c.get(keys[0], r=1)  # learn the ring while node1 still answers
            cl.pause("node1")
            return await asyncio.gather(*(c.put(k, b"v-" + k, w=2) for k in keys),
                                        return_exceptions=True)

    results = asyncio.run(writes())
    assert [r for r in results if isinstance(r, Exception)] == []  # failed over, same write ids
    cl.resume("node1")  # now it works through the queued copies of those writes
    cl.wait_converged()
    wait_for(lambda: all(status(ep)["hints"]["backlog"] == 0 for ep in eps), 60,
             "hints to drain")
    wait_for(lambda: all(fully_agreed(ep) for ep in eps), 60, "anti-entropy agreement")
    with zkv.Client(eps, timeout=5.0) as c:
        for k in keys:
            assert c.get(k, r=3).values == [b"v-" + k], k
    for ep in eps:
        for k in keys:
            assert held(ep, k) == [b"v-" + k], (ep, k)


def test_a_node_that_lost_a_tombstone_to_corruption_refills_before_its_reads_count(make_cluster):
    """A key is written and deleted on all three nodes; node3 is killed (its active segment
    has no hints file, so its next start scans it) and the tombstone version's record is
    damaged in its key bytes. node3 starts holding the deleted value again, unable to tell
    which key lost its newest record: it refills (its reads do not count toward R until it
    exchanged every partition; the read side is tests/sim, `skipped_corrupt_records`), R=1
    reads never return the deleted value, and anti-entropy gives node3 the tombstone back."""
    cl = make_cluster(3, extra_args=FAST + ["--ring-size", "16"])
    victim = b"victim-key-7f3a9c"
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        c.put(victim, b"old", w=3)
        c.delete(victim, context=c.get(victim, r=3).context, w=3)
        for i in range(20):  # records after it: damage at the very end is a torn tail
            c.put(b"after%d" % i, b"v" * 50, w=3)
    time.sleep(0.5)  # (the interval syncer has written every record out)
    cl.kill("node3")
    seg = sorted(glob.glob(os.path.join(cl.node("node3").data_dir, "data", "*.data")))[-1]
    with open(seg, "rb") as fh:
        at = fh.read().rindex(victim)  # the newest record of the key: its tombstone version
    flip_byte(seg, at + 3)
    cl.restart("node3")
    ep3 = cl.node("node3").listen

    def skipped() -> list[str]:  # (logged at start, or once a seed let it in if it rejoins)
        with open(cl.node("node3").log_path, errors="replace") as fh:
            return re.findall(r"the store skipped (\d+) corrupt region\(s\) when it opened",
                              fh.read())

    assert int(wait_for(skipped, 30, "node3 refilling after the skipped region")[-1]) >= 1
    with zkv.Client([ep3], timeout=5.0) as only3:
        for _ in range(20):
            assert only3.get(victim, r=1).values == []
    wait_for(lambda: held(ep3, victim) == [None], 60, "node3 holding the tombstone again")
    wait_for(lambda: status(ep3)["antientropy"].get("refill_partitions_left", 0) == 0, 60,
             "node3's refill to end")
