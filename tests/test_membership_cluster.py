"""Growing and shrinking a cluster that holds data (issue 11, DESIGN.md 2.4), on real zkv-node
processes on loopback: joins, leave, replace, force-remove, plan/commit, a receiver killed
with SIGKILL mid-transfer, and a tombstone written during a transfer.

The node logic is covered first in deterministic simulation (tests/sim, `membership`)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

import zkv
from zkv.errors import InvalidRequest, ZkvError
from zkv.local import LocalCluster

FAST = ["--gossip-interval", "0.1", "--down-after", "1.0"]


def _config(tmp_path, **settings) -> list[str]:
    path = tmp_path / "settle.toml"
    lines = [f"{k} = {v!r}" for k, v in settings.items()]
    path.write_text("\n".join(["settle = 1.0", *lines]) + "\n")
    return ["--config", str(path)]


@pytest.fixture
def make_cluster(tmp_path):
    made = []

    def make(nodes=3, extra=(), **kw):
        c = LocalCluster(nodes, str(tmp_path / f"c{len(made)}"), base_port=None,
                         extra_args=[*FAST, *_config(tmp_path), *extra], **kw)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.stop()


def _load(c: LocalCluster, count: int, prefix: str = "k", size: int = 100) -> dict[bytes, bytes]:
    data = {}
    with zkv.Client(c.endpoints, timeout=5.0) as cl:
        for i in range(count):
            key, value = b"%s%d" % (prefix.encode(), i), os.urandom(size // 2).hex().encode()
            cl.put(key, value, w=2)
            data[key] = value
    return data


class Workload:
    """Writers at W=3 and readers at R=1 running all along; records every miss.

    W=3 (every current owner acknowledges) so that a miss can only be what DESIGN.md 2.4
    rules out, a read routed to a node without the key's partition: at W=2 an R=1 read has
    no quorum overlap with the write (R + W = N) and a lagging owner's own copy may answer.
    At W=3 the rejoin test missed once under two CPU hogs (`b'w0:151' read empty at R=1
    (0.299 s after its last acknowledged write; at R=3 then: found)`) before gets and puts
    were joint quorums of the old and new owners until a change settles (README design
    notes; the simulator's --lost-extras showed the same miss)."""

    def __init__(self, endpoints: list[str], base: dict[bytes, bytes]) -> None:
        self.endpoints = endpoints
        self.acked: dict[bytes, tuple[float, bytes]] = {k: (0.0, v) for k, v in base.items()}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.misses: list[str] = []
        self.reads = self.writes = self.errors = 0
        self.threads = [threading.Thread(target=self._writer, args=(i,), daemon=True)
                        for i in range(2)]
        self.threads += [threading.Thread(target=self._reader, daemon=True) for _ in range(2)]

    def __enter__(self) -> Workload:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _writer(self, i: int) -> None:
        rng = random.Random(i)
        ctx: dict[bytes, bytes] = {}
        with zkv.Client(self.endpoints, timeout=5.0) as c:
            n = 0
            while not self.stop.is_set():
                key = b"w%d:%d" % (i, rng.randrange(200))
                value = b"v%d-%d" % (i, n)
                n += 1
                try:
                    ctx[key] = c.put(key, value, context=ctx.get(key), w=3)
                except ZkvError:
                    self.errors += 1
                    ctx.pop(key, None)
                    with self.lock:  # it may have been stored: either value may be there now
                        self.acked.pop(key, None)
                    continue
                with self.lock:
                    self.acked[key] = (time.monotonic(), value)
                    self.writes += 1

    def _reader(self) -> None:
        rng = random.Random()
        with zkv.Client(self.endpoints, timeout=5.0) as c:
            while not self.stop.is_set():
                with self.lock:
                    if not self.acked:
                        continue
                    key = rng.choice(list(self.acked))
                    when, _ = self.acked[key]
                start = time.monotonic()
                try:
                    got = c.get(key, r=1)
                except ZkvError:
                    self.errors += 1
                    continue
                self.reads += 1
                if not got.found and when < start:
                    # (what a read of every owner says right after: the copy missed, or lost)
                    try:
                        again = "found" if c.get(key, r=3).found else "empty"
                    except ZkvError as exc:
                        again = type(exc).__name__
                    since = (f"{start - when:.3f} s after its last acknowledged write" if when
                             else "loaded before")
                    self.misses.append(f"{key!r} read empty at R=1 ({since}; at R=3 then: "
                                       f"{again})")

    def check_all(self, endpoints: list[str]) -> list[bytes]:
        """Keys whose last acknowledged value cannot be read back at r=2."""
        bad = []
        with zkv.Client(endpoints, timeout=5.0) as c:
            for key, (_, value) in sorted(self.acked.items()):
                if value not in c.get(key, r=2).values:
                    bad.append(key)
        return bad


def _status(c: LocalCluster, node_id: str) -> dict:
    with zkv.Client([c.node(node_id).listen], timeout=2.0) as cl:
        return cl.status(c.node(node_id).listen)


def test_grow_3_to_5_then_one_leaves_under_load(make_cluster):
    c = make_cluster(3)
    base = _load(c, 300)
    with Workload(c.endpoints, base) as wl:
        c.add_node()
        c.add_node()
        c.wait_settled(90)
        doc = _status(c, "node1")
        assert {m["id"]: m["status"] for m in doc["members"]} == {
            f"node{i}": "valid" for i in range(1, 6)}
        assert doc["transfers"] == []
        assert c.remove_node("node2", timeout=90) == 0  # handed off, left, exited 0
        c.wait_settled(90)
        time.sleep(1.0)
    assert wl.writes > 50 and wl.reads > 50
    assert wl.misses == []
    live = [n.listen for n in c.nodes if n.alive()]
    assert wl.check_all(live) == []
    doc = _status(c, "node1")
    statuses = {m["id"]: m["status"] for m in doc["members"]}
    assert "node2" not in statuses or statuses["node2"] == "left"
    with zkv.Client(live, timeout=2.0) as cl:
        ring = cl.ring_info()
        assert "node2" not in {m.id for m in ring.members} or all(
            "node2" not in row["preflist"] for row in _ring_rows(c))


def test_cluster_leave_wait_returns_once_the_node_has_left(make_cluster):
    """`zkv cluster leave` printed "leave: done" at the commit, before any data moved, and
    the runbook said to wait for that line: an operator stopped the pod while its handoff
    ran (an outside run). It says "committed" now, and with --wait it returns once the node
    has handed everything off and left, nothing moving or settling."""
    import subprocess
    import sys

    c = make_cluster(4)
    _load(c, 200)
    ep = c.node("node1").listen
    out = subprocess.run([sys.executable, "-m", "zkv.cli", "cluster", "leave", "node4",
                          "--node", ep, "--wait"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "leave: committed (the data moves now" in out.stdout, out.stdout
    assert out.stdout.rstrip().endswith("leave: complete"), out.stdout
    doc = _status(c, "node1")
    statuses = {m["id"]: m["status"] for m in doc["members"]}
    assert statuses.get("node4", "left") == "left", statuses
    assert doc["transfers"] == [] and not doc["cluster"]["unsettled_changes"]
    with open(c.node("node4").log_path) as fh:  # its last copies handed over by then
        assert "node node4 left the cluster: stopping" in fh.read()
    assert c.node("node4").process.wait(60) == 0


def _ring_rows(c: LocalCluster) -> list[dict]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "zkv.cli", "ring", "--json", "--node",
                          c.node("node1").listen], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)["partitions"]


def test_receiver_killed_mid_transfer_resumes(make_cluster, tmp_path):
    # a slow budget so the transfer is still running when the receiver dies
    c = make_cluster(3, extra=["--transfer-rate", "150000", "--transfer-concurrency", "1"])
    data = _load(c, 1500, size=400)
    new = c.add_node()
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline:
        tr = [t for t in _status(c, new.id)["transfers"] if t["to"] == new.id]
        done = sum(t["bytes_done"] for t in tr)
        if done > 100_000:
            break
        time.sleep(0.2)
    assert done > 100_000, "the transfer never got going"
    c.kill(new.id)  # SIGKILL
    saved = (tmp_path / "c0" / new.id / "transfers.json").read_text()
    assert '"partitions"' in saved
    c.restart(new.id)
    first = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and first is None:
        try:
            tr = [t for t in _status(c, new.id)["transfers"] if t["to"] == new.id]
            first = sum(t["bytes_done"] for t in tr)
        except ZkvError:
            time.sleep(0.2)
    # resumed where it stopped (at most the batch in flight per partition is fetched again)
    assert first is not None and first >= done - 2 * 256 * 1024
    assert "resuming the transfer" in open(new.log_path).read()
    c.wait_settled(120)
    with zkv.Client([n.listen for n in c.nodes], timeout=5.0) as cl:
        for key, value in list(data.items())[::7]:
            assert cl.get(key, r=1).values == [value]


def test_replace_a_killed_node(make_cluster):
    c = make_cluster(4)
    data = _load(c, 200)
    c.kill("node2")
    new = c.add_node()  # joins by itself (auto-commit)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and new.id not in {
            m["id"] for m in _status(c, "node1")["members"] if m["state"] == "up"}:
        time.sleep(0.2)
    with zkv.Client([c.node("node1").listen], timeout=5.0) as cl:
        plan = cl.cluster("replace", "node2", new.id)
    assert plan["members"]["node2"] == "leaving"
    c.wait_settled(120)
    doc = _status(c, "node1")
    assert "node2" not in {m["id"] for m in doc["members"] if m["status"] != "left"}
    live = [n.listen for n in c.nodes if n.alive()]
    with zkv.Client(live, timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]  # three live replicas of every key


def _kill_and_see_down(c: LocalCluster, node_id: str) -> None:
    """SIGKILL `node_id`, then wait until node1 sees it down (force-remove needs that)."""
    c.kill(node_id)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = {m["id"]: m["state"] for m in _status(c, "node1")["members"]}
        if states[node_id] == "down":
            break
        time.sleep(0.2)


def test_force_remove_refills_from_survivors(make_cluster):
    c = make_cluster(4)
    data = _load(c, 200)
    with zkv.Client([c.node("node1").listen], timeout=5.0) as cl:
        with pytest.raises(InvalidRequest, match="is up"):
            cl.cluster("force-remove", "node4")
    _kill_and_see_down(c, "node4")
    with zkv.Client([c.node("node1").listen], timeout=5.0) as cl:
        plan = cl.cluster("force-remove", "node4")
        assert plan["warnings"] == []  # every partition had another replica
    c.wait_settled(120)
    live = [n.listen for n in c.nodes if n.alive()]
    with zkv.Client(live, timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]


def test_force_remove_of_the_only_replica_of_some_partitions_completes(make_cluster):
    """An N=1 namespace: the removed node held the only copy of its partitions. The plan
    warns that they are lost; the change still completes (it used to wait forever for a
    source), the surviving keys stay readable and the lost partitions take writes again."""
    c = make_cluster(4)
    with zkv.Client(c.endpoints, timeout=5.0) as cl:
        cl.namespace_create("solo", n=1)
        data = {}
        for i in range(200):
            key = b"s%d" % i
            cl.put(key, b"v%d" % i, w=1, namespace="solo")
            data[key] = b"v%d" % i
    _kill_and_see_down(c, "node4")
    with zkv.Client([c.node("node1").listen], timeout=5.0) as cl:
        plan = cl.cluster("force-remove", "node4")
    assert plan["warnings"] and all("N=1" in w and "lost" in w for w in plan["warnings"])
    c.wait_settled(120)
    # and every hint handed on: a put that a loaded node4 was slow to take went to a
    # stand-in as a hint too, which reached the partition's new owner after `kept` was read
    # (a full run beside two busy loops: a key read as lost then showed its value beside
    # the new one)
    from ops_helpers import wait_for
    wait_for(lambda: all(_status(c, n.id)["hints"]["backlog"] == 0 for n in c.nodes
                         if n.alive()), 120, "every hint handed on")
    live = [n.listen for n in c.nodes if n.alive()]
    with zkv.Client(live, timeout=5.0) as cl:
        kept = [k for k, v in data.items() if cl.get(k, r=1, namespace="solo").values == [v]]
        # node4 owned about a quarter of the partitions: the rest of the keys are all there
        # (and node4's too when they were written while its join had not settled: they also
        # went to the partitions' previous owners, which keep them until it settles)
        assert 0.5 * len(data) < len(kept) <= len(data)
        for key in data:  # every partition takes writes again, lost ones included
            cl.put(key, b"again", w=1, namespace="solo")  # blind: a sibling of a kept value
            want = [b"again", data[key]] if key in kept else [b"again"]
            assert sorted(cl.get(key, r=1, namespace="solo").values) == sorted(want)


def test_plan_and_commit_with_auto_commit_off(make_cluster, capsys):
    from zkv.cli import main

    c = make_cluster(3)
    _load(c, 100)
    ep = c.node("node1").listen
    assert main(["cluster", "auto-commit", "off", "--node", ep]) == 0
    with zkv.Client([ep], timeout=2.0) as cl:
        with pytest.raises(InvalidRequest, match="nothing staged"):
            cl.cluster("commit")
    new = c.add_node()
    deadline = time.monotonic() + 20
    plan: dict = {}
    while time.monotonic() < deadline:
        with zkv.Client([ep], timeout=2.0) as cl:
            plan = cl.cluster("plan")
        if plan["staged"]:
            break
        time.sleep(0.2)
    # the join is staged, not applied: the plan shows what would move, nothing moves yet
    assert plan["auto_commit"] is False
    assert plan["staged"] == [{"action": "join", "node": new.id, "other": ""}]
    assert plan["transfers"] and all(t["to"] == new.id for t in plan["transfers"])
    assert 0 < plan["moved_fraction"] <= 2 * plan["minimum_fraction"]
    doc = _status(c, "node1")
    assert {m["id"]: m["status"] for m in doc["members"]}[new.id] == "joining"
    assert doc["transfers"] == []
    # conflicting / bad changes are refused with a reason
    with zkv.Client([ep], timeout=2.0) as cl:
        with pytest.raises(InvalidRequest, match="not a member"):
            cl.cluster("leave", "nosuchnode")
        capsys.readouterr()
        # (--wait: nothing to wait for until the commit; said, exit 1)
        assert main(["cluster", "leave", "node3", "--node", ep, "--wait"]) == 1
        said = capsys.readouterr()
        assert "leave: staged, not applied: `zkv cluster commit` applies it" in said.out
        assert "--wait: the change is staged" in said.err
        with pytest.raises(InvalidRequest, match="already has a staged change"):
            cl.cluster("leave", "node3")
    assert main(["cluster", "plan", "--node", ep]) == 0
    out = capsys.readouterr().out
    assert "leave node3" in out and "transfers" in out
    assert main(["cluster", "commit", "--node", ep]) == 0
    assert c.node("node3").process.wait(90) == 0
    c.wait_settled(90)


def test_tombstone_written_during_a_transfer_stays(make_cluster):
    c = make_cluster(3, extra=["--transfer-rate", "100000", "--transfer-concurrency", "1",
                               "--tombstone-grace", "1"])
    data = _load(c, 800, size=400)
    doomed = list(data)[:100]
    c.add_node()
    with zkv.Client(c.endpoints[:3], timeout=5.0) as cl:
        for key in doomed:
            got = cl.get(key, r=2)
            cl.delete(key, context=got.context, w=2)
    c.wait_settled(120)
    time.sleep(3.0)  # reaping and anti-entropy rounds
    with zkv.Client([n.listen for n in c.nodes], timeout=5.0) as cl:
        for key in doomed:
            assert cl.get(key, r=3).values == []
        for key in list(data)[100::9]:
            assert cl.get(key, r=3).values == [data[key]]


def test_cli_local_add_and_remove(tmp_path):
    import json
    import subprocess
    import sys

    from ops_helpers import free_base_port, sigint_default

    d, base = tmp_path / "local", free_base_port()
    up = subprocess.Popen([sys.executable, "-m", "zkv.cli", "local", "up", "--nodes", "3",
                           "--dir", str(d), "--base-port", str(base), "--no-demo"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts three nodes slowly
        while not (d / "local.json").exists() and time.monotonic() < deadline:
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            time.sleep(0.2)
        add = subprocess.run([sys.executable, "-m", "zkv.cli", "local", "add", "--dir", str(d)],
                             capture_output=True, text=True, timeout=180)
        assert add.returncode == 0, add.stderr
        assert "node4" in add.stdout and "settled" in add.stdout
        for port in range(base, base + 4):  # "settled": every node ready (/readyz)
            said = subprocess.run([sys.executable, "-m", "zkv.cli", "status", "--json",
                                   "--node", f"tcp://127.0.0.1:{port}"],
                                  capture_output=True, text=True, timeout=30)
            doc = json.loads(said.stdout)
            summary = doc["metrics"]
            assert summary["ready"] is True, (port, summary["ready_reason"])
            # and no change still settling (`zkv status` said "settling:" right after "settled")
            assert not doc["cluster"].get("unsettled_changes"), (port, doc["cluster"])
            # and the partitions each node gained count for reads again (verified)
            assert doc["antientropy"]["fresh_partitions_left"] == 0, (port, doc["antientropy"])
        listed = subprocess.run([sys.executable, "-m", "zkv.cli", "keys", "--r", "2", "--node",
                                 f"tcp://127.0.0.1:{base + 3}"], capture_output=True, text=True,
                                timeout=60)
        assert listed.returncode == 0, listed.stderr  # every partition: two owners vouch
        rm = subprocess.run([sys.executable, "-m", "zkv.cli", "local", "remove", "node2", "--dir",
                             str(d)], capture_output=True, text=True, timeout=300)
        assert rm.returncode == 0, rm.stderr
        assert "left the cluster" in rm.stdout
        st = subprocess.run([sys.executable, "-m", "zkv.cli", "status", "--json", "--node",
                             f"tcp://127.0.0.1:{base}"], capture_output=True, text=True, timeout=30)
        doc = json.loads(st.stdout)
        ids = {m["id"]: m["status"] for m in doc["members"]}
        assert ids.get("node4") == "valid" and ids.get("node2", "left") == "left"
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(30)


def test_cli_local_up_again_starts_the_members_the_cluster_has(tmp_path):
    """`zkv local up`, `zkv local add` (node4), `zkv local remove node2`, Ctrl-C, then `zkv
    local up` again on the same data dir: it starts node1, node3 and node4. (It once started
    three, and node4 stayed down for good, its hints piling up; then it started node2 too,
    which stayed out as a node that left, and the cluster never looked whole: exit 1.) A
    `zkv local add` then starts node5: node2's data dir is kept, and node4 is taken."""
    import json
    import subprocess
    import sys

    from ops_helpers import free_base_port, sigint_default, wait_for

    d, base = tmp_path / "local", free_base_port()

    def up() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "zkv.cli", "local", "up", "--dir", str(d),
                                 "--base-port", str(base), "--no-demo"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=sigint_default)

    def local(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "zkv.cli", "local", *argv, "--dir", str(d)],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def members() -> dict:
        said = subprocess.run([sys.executable, "-m", "zkv.cli", "status", "--json", "--node",
                               f"tcp://127.0.0.1:{base}"], capture_output=True, text=True,
                              timeout=30)
        return {m["id"]: m["state"] for m in json.loads(said.stdout)["members"]}

    first = up()
    try:
        wait_for(lambda: (d / "local.json").exists(), 180, "the first local up")
        assert "node4" in local("add")
        assert "node2 left the cluster" in local("remove", "node2")
    finally:
        first.send_signal(signal.SIGINT)
        out = first.communicate(timeout=60)[0]
    assert "all nodes stopped" in out and "node2 exited" not in out, out  # (no restart hint)
    (d / "local.json").unlink()  # (written again by the next up once its nodes start)
    again = up()
    try:
        wait_for(lambda: (d / "local.json").exists(), 180, "the second local up")
        wait_for(lambda: members() == dict.fromkeys(["node1", "node3", "node4"], "up"),
                 60, "every member up")
        assert "node5" in local("add")
        wait_for(lambda: members() == dict.fromkeys(["node1", "node3", "node4", "node5"], "up"),
                 60, "the new node up")
    finally:
        again.send_signal(signal.SIGINT)
        out = again.communicate(timeout=60)[0]
    assert ("holds a cluster of 3 node(s) from an earlier run (added by `zkv local add`; node2 "
            "left it): starting node1, node3, node4") in out, out
    assert "3 node(s) up" in out and "all nodes stopped" in out


def test_cli_local_up_again_after_a_run_stopped_before_its_nodes_joined(tmp_path):
    """A first `zkv local up` stopped within its first second leaves node1 with a one-node
    cluster and node2, node3 with data dirs but no cluster state (they never joined). Every
    later run started node1 alone, and each write at W=2 failed (a newcomer's run). A node
    whose data dir holds no cluster state is started again and joins."""
    import json
    import subprocess
    import sys

    from ops_helpers import free_base_port, sigint_default, wait_for

    d, base = tmp_path / "local", free_base_port()

    def up(nodes: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "zkv.cli", "local", "up", "--dir", str(d),
                                 "--base-port", str(base), "--no-demo", "--nodes", str(nodes)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=sigint_default)

    def members() -> dict:
        said = subprocess.run([sys.executable, "-m", "zkv.cli", "status", "--json", "--node",
                               f"tcp://127.0.0.1:{base}"], capture_output=True, text=True,
                              timeout=30)
        return {m["id"]: m["state"] for m in json.loads(said.stdout)["members"]}

    first = up(1)  # (node1 alone, as the interrupted run left it)
    try:
        wait_for(lambda: (d / "local.json").exists(), 180, "the first local up")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    for k in (2, 3):
        (d / f"node{k}" / "data").mkdir(parents=True)
    (d / "local.json").unlink()
    again = up(3)
    try:
        wait_for(lambda: (d / "local.json").exists(), 180, "the second local up")
        wait_for(lambda: members() == dict.fromkeys(["node1", "node2", "node3"], "up"),
                 60, "every node up")
        put = subprocess.run([sys.executable, "-m", "zkv.cli", "put", "k", "v", "--w", "2",
                              "--node", f"tcp://127.0.0.1:{base}"], capture_output=True,
                             text=True, timeout=30)
        assert put.returncode == 0, put.stderr
    finally:
        again.send_signal(signal.SIGINT)
        out = again.communicate(timeout=60)[0]
    assert "3 node(s) up" in out and "holds a cluster of" not in out, out


def test_cli_local_restart_brings_a_killed_node_back_and_local_up_stops_it(tmp_path):
    """`zkv local restart NODE` on a running `zkv local up`: a SIGKILLed node starts again on
    its data dir and is up in the others' view when the command returns; a running one is
    stopped with SIGTERM first; and Ctrl-C of `zkv local up` stops the restarted process
    too (another command started it)."""
    import subprocess
    import sys

    from ops_helpers import free_base_port, sigint_default, wait_for

    d, base = tmp_path / "local", free_base_port()
    up = subprocess.Popen([sys.executable, "-m", "zkv.cli", "local", "up", "--nodes", "3",
                           "--dir", str(d), "--base-port", str(base), "--no-demo"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=sigint_default)

    def restart() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zkv.cli", "local", "restart", "node3",
                               "--dir", str(d)], capture_output=True, text=True, timeout=120)

    try:
        deadline = time.monotonic() + 180
        while not (d / "local.json").exists() and time.monotonic() < deadline:
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            time.sleep(0.2)
        cluster = LocalCluster.attach(str(d))
        node3 = cluster.node("node3")
        first = cluster.running_pid(node3)
        with zkv.Client([f"tcp://127.0.0.1:{base}"], timeout=5.0) as c:
            c.put(b"before", b"v", w=3)
            os.kill(first, signal.SIGKILL)
            wait_for(lambda: cluster.running_pid(node3) != first, 10)
            c.put(b"while-dead", b"v", w=2)
            out = restart()
            assert out.returncode == 0, out.stderr
            assert f"node3 is running again at tcp://127.0.0.1:{base + 2}" in out.stdout, out.stdout
            second = cluster.running_pid(node3)
            assert second and second != first
            seen = {m["id"]: m["state"] for m in c.status(f"tcp://127.0.0.1:{base}")["members"]}
            assert seen["node3"] == "up", seen
            with zkv.Client([f"tcp://127.0.0.1:{base + 2}"], timeout=5.0, routing="any") as c3:
                assert c3.get(b"before", r=1).values == [b"v"]  # its data dir, kept
        out = restart()  # a running node: SIGTERM first, then started again
        assert out.returncode == 0 and f"stopping node3 (pid {second})" in out.stdout, out
        third = cluster.running_pid(node3)
        assert third and third != second
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    said = up.stdout.read() if up.stdout else ""
    assert f"node3 exited with code -9; see {node3.log_path} (to start it again: zkv local " \
        f"restart node3 --dir {d})" in said, said
    assert "exited with code 0" not in said, said  # (the restart's own stop: not a failure)
    assert "all nodes stopped" in said, said
    # stopped by `zkv local up` itself (gone, or a zombie its parent's parent reaps later)
    assert cluster.running_pid(node3) == 0


def test_namespace_keys_move_by_their_own_n(make_cluster):
    """Keys of namespaces whose N (2, 1) is not the cluster's (3) are streamed to their own new
    owners: reads at R=1 never miss while a node joins and another leaves, and afterwards."""
    c = make_cluster(3)
    spaces = {"pairs": 2, "single": 1}
    data: dict[tuple[str, bytes], bytes] = {}
    with zkv.Client(c.endpoints, timeout=5.0) as cl:
        for name, n in spaces.items():
            cl.namespace_create(name, n=n)
        for name, n in spaces.items():
            for i in range(300):
                key, value = b"%s:%d" % (name.encode(), i), os.urandom(50).hex().encode()
                cl.put(key, value, w=n, namespace=name)
                data[(name, key)] = value
    misses: list[str] = []
    stop = threading.Event()
    reads = [0]

    def reader() -> None:
        rng = random.Random(7)
        items = sorted(data)
        with zkv.Client(c.endpoints, timeout=5.0) as cl:
            while not stop.is_set():
                name, key = rng.choice(items)
                try:
                    got = cl.get(key, r=1, namespace=name)
                except ZkvError:
                    continue
                reads[0] += 1
                if data[(name, key)] not in got.values:
                    misses.append(f"{name}/{key!r}: {got.values}")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        c.add_node()
        c.wait_settled(90)
        assert c.remove_node("node2", timeout=90) == 0
        c.wait_settled(90)
    finally:
        stop.set()
        t.join(30)
    assert reads[0] > 50
    assert misses == []
    live = [n.listen for n in c.nodes if n.alive()]
    with zkv.Client(live, timeout=5.0) as cl:
        for (name, key), value in data.items():
            assert cl.get(key, r=1, namespace=name).values == [value], (name, key)


def test_replace_moves_exactly_the_old_nodes_partitions(make_cluster):
    """The new node is placed where the old one was (same rack): the plan moves exactly the
    old node's partitions, all to the new node; the old node hands off and exits 0."""
    from zkv.cli import main

    c = make_cluster(4)
    data = _load(c, 200)
    ep = c.node("node1").listen
    assert main(["cluster", "auto-commit", "off", "--node", ep]) == 0
    old_rows = _ring_rows(c)
    theirs = {row["partition"] for row in old_rows if "node2" in row["preflist"]}
    new = c.add_node(rack=c.node("node2").rack)
    deadline = time.monotonic() + 20
    with zkv.Client([ep], timeout=5.0) as cl:
        while time.monotonic() < deadline:  # the claimant stages the newcomer's join
            if cl.cluster("plan")["staged"]:
                break
            time.sleep(0.2)
        plan = cl.cluster("replace", "node2", new.id)
        assert plan["staged"] == [{"action": "replace", "node": "node2", "other": new.id}]
        assert {t["to"] for t in plan["transfers"]} == {new.id}
        assert sum(t["partitions"] for t in plan["transfers"]) == len(theirs)
        cl.cluster("commit")
    assert c.node("node2").process.wait(120) == 0
    c.wait_settled(120)
    rows = _ring_rows(c)
    assert {row["partition"] for row in rows if new.id in row["preflist"]} == theirs
    live = [n.listen for n in c.nodes if n.alive()]
    with zkv.Client(live, timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]


def test_a_node_that_left_stays_out_until_started_on_an_empty_data_dir(make_cluster):
    """node4 leaves (hands its data off, exits 0). Started again on the data dir it left
    behind (as a supervisor that restarts whatever exits would), it exits 0 by itself, says
    why in its log, and is not joined again. Started on an empty data dir, it joins as a new
    node: a valid owner again, no R=1 miss meanwhile, every acknowledged write reads back at
    r=2 (the simulator's test of the same name, with real processes and files)."""
    import shutil

    c = make_cluster(4)
    base = _load(c, 200)
    assert c.remove_node("node4", timeout=90) == 0
    c.wait_settled(90)
    node4 = c.node("node4")
    try:
        c.restart("node4")
    except ZkvError:
        pass  # it exited before its port was seen open
    assert node4.process.wait(60) == 0
    assert "it stays out and exits" in c.tail(node4, 20)
    statuses = {m["id"]: m["status"] for m in _status(c, "node1")["members"]}
    assert statuses.get("node4", "left") == "left", statuses
    shutil.rmtree(node4.data_dir)
    with Workload([n.listen for n in c.nodes if n.alive()], base) as wl:
        c.restart("node4")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:  # (node1, busy handing off under the workload, may miss one ask's 2 s)
                statuses = {m["id"]: m["status"] for m in _status(c, "node1")["members"]}
            except ZkvError:
                continue
            if statuses.get("node4") == "valid":
                break
            time.sleep(0.3)
        assert statuses.get("node4") == "valid", statuses
        c.wait_settled(90)
    assert wl.writes > 20 and wl.misses == []
    assert _status(c, "node4")["transfers"] == []
    with zkv.Client([node4.listen], timeout=2.0) as cl:
        assert "node4" in cl.ring_info().owners
    assert wl.check_all([n.listen for n in c.nodes]) == []


def test_a_member_restarted_at_new_addresses_is_found_there(make_cluster):
    """node3 stops and starts again on its data dir at other ports (a machine that came back
    with a new address), with no --seed: it finds the members from its saved cluster state,
    they take its new endpoints from its own gossip, and writes at W=3 through the others
    reach it there. Nothing it held is lost and no change of ownership is staged."""
    from zkv.local import free_ports

    c = make_cluster(3)
    data = _load(c, 150)
    node3 = c.node("node3")
    assert c.terminate("node3") == 0
    old = node3.listen
    listen, gossip = free_ports(2)
    node3.listen, node3.gossip = f"tcp://127.0.0.1:{listen}", f"tcp://127.0.0.1:{gossip}"
    c._spawn(node3, None)  # (as an operator would: the node's flags, no --seed)
    c._wait_port(node3, 30)

    def seen() -> dict[str, tuple[str, str]]:
        return {n.id: next((m["listen"], m["state"]) for m in _status(c, n.id)["members"]
                           if m["id"] == "node3") for n in c.nodes}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(seen().values()) != {(node3.listen, "up")}:
        time.sleep(0.2)
    assert set(seen().values()) == {(node3.listen, "up")}, seen()
    with zkv.Client([c.node("node1").listen], timeout=5.0) as cl:
        for i in range(30):
            cl.put(b"moved%d" % i, b"v", w=3)  # every owner acknowledges: node3 too
    with zkv.Client([node3.listen], timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]
        for i in range(30):
            assert cl.get(b"moved%d" % i, r=1).values == [b"v"]
        st = cl.status(node3.listen)
        assert [m["status"] for m in st["members"]] == ["valid"] * 3
        assert old not in [m["listen"] for m in st["members"]]
    assert _status(c, "node1")["transfers"] == []


def test_a_whole_cluster_started_again_at_new_addresses_finds_itself_through_a_seed(
        make_cluster):
    """Every node stops and starts again on its data dir at new ports (the cluster's machines
    came back with new addresses): node1 with no --seed, the others with --seed naming node1's
    new address, as an operator would. Their cluster.json names only the old addresses; a
    member that hears no other member asks its seeds, so all find each other, and every write
    of before reads back at R=3 from the new addresses."""
    from zkv.local import free_ports

    c = make_cluster(3)
    data = _load(c, 150)
    for n in c.nodes:
        assert c.terminate(n.id) == 0
    ports = free_ports(6)
    for i, n in enumerate(c.nodes):
        n.listen = f"tcp://127.0.0.1:{ports[2 * i]}"
        n.gossip = f"tcp://127.0.0.1:{ports[2 * i + 1]}"
    seed = c.nodes[0].listen
    for n in c.nodes:
        c._spawn(n, None if n.listen == seed else seed)
        c._wait_port(n, 30)

    def views() -> set[tuple[str, str, str, str]]:
        return {(n.id, m["id"], m["listen"], m["state"]) for n in c.nodes
                for m in _status(c, n.id)["members"] if m["id"] != n.id}

    want = {(n.id, m.id, m.listen, "up") for n in c.nodes for m in c.nodes if m is not n}
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and views() != want:
        time.sleep(0.3)
    assert views() == want, sorted(views() - want)
    with zkv.Client(c.endpoints, timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]
        cl.put(b"after", b"v", w=3)
    assert "asking seeds where the members are" in c.tail(c.nodes[1], 200)


def test_a_member_started_with_another_rack_refuses_and_says_what_to_do(make_cluster):
    """node3 restarted on its data dir with another --rack exits 1 and says why (replicas are
    placed by the rack it joined with) and what to do; started again with its rack, it comes
    back with its store closed cleanly (no "not closed cleanly": its dot id continues) and
    everything it held."""
    c = make_cluster(3)
    data = _load(c, 50)
    node3 = c.node("node3")
    rack = node3.rack
    assert c.terminate("node3") == 0
    node3.rack = "rack-elsewhere"
    c._spawn(node3, None)
    assert node3.process.wait(30) == 1
    said = c.tail(node3, 5)
    assert (f"node3 is in rack '{rack}' in the cluster state" in said
            and f"start it with --rack '{rack}'" in said), said
    node3.rack = rack
    c.restart("node3")
    c.wait_converged(30)
    assert "not closed cleanly" not in c.tail(node3, 400)
    with zkv.Client([node3.listen], timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]


def test_a_data_dir_started_under_another_node_id_exits_and_says_whose_it_is(make_cluster):
    """A zkv-node started with --id node9 on node3's data dir exits 1, naming node3; node3 then
    starts on it as before, with everything it held."""
    c = make_cluster(3)
    data = _load(c, 30)
    node3 = c.node("node3")
    assert c.terminate("node3") == 0
    node3.id = "node9"
    c._spawn(node3, None)
    assert node3.process.wait(30) == 1
    said = c.tail(node3, 5)
    assert "holds the data of node 'node3'" in said and "--id 'node9'" in said, said
    node3.id = "node3"
    c.restart("node3")
    c.wait_converged(30)
    with zkv.Client([node3.listen], timeout=5.0) as cl:
        for key, value in data.items():
            assert cl.get(key, r=3).values == [value]


def test_a_node_stopped_before_its_join_completed_joins_again_without_its_seed(tmp_path):
    """node2 is started with --seed naming node1 before node1 is up and is killed (SIGKILL)
    while still asking; started again on its data dir at a new address with no --seed (a
    machine back with another IP, a unit that lost the flag), it joins through the seed its
    cluster.json kept instead of founding a cluster of its own, where writes would part from
    node1's for good. Once it is a member, cluster.json no longer names seeds."""
    import json

    from ops_helpers import Nodes, free_port, raw_status, wait_for

    nodes = Nodes(tmp_path)
    try:
        ep = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("l1", "g1", "l2", "g2", "l3")}
        d1, d2 = str(tmp_path / "d1"), str(tmp_path / "d2")
        saved = os.path.join(d2, "cluster.json")

        def cluster_json() -> dict:
            with open(saved) as fh:
                return json.load(fh)

        first = nodes.start("--id", "node2", "--listen", ep["l2"], "--gossip", ep["g2"],
                            "--data-dir", d2, "--seed", ep["l1"])
        wait_for(lambda: os.path.exists(saved) and cluster_json().get("joining"), 30,
                 "node2's cluster.json naming its seed")
        assert cluster_json()["joining"] == [ep["l1"]] and cluster_json()["cluster"] is None
        nodes.stop(first, signal.SIGKILL)
        nodes.start("--id", "node1", "--listen", ep["l1"], "--gossip", ep["g1"],
                    "--data-dir", d1)
        wait_for(lambda: raw_status(ep["l1"]), 30, "node1 up")
        again = nodes.start("--id", "node2", "--listen", ep["l3"], "--gossip", ep["g2"],
                            "--data-dir", d2)

        def members(endpoint: str) -> set[str]:
            return {m["id"] for m in raw_status(endpoint)["members"] if m["state"] == "up"}

        wait_for(lambda: members(ep["l1"]) == members(ep["l3"]) == {"node1", "node2"}, 45,
                 "node2 a member of node1's cluster")
        assert "joining through them again" in nodes.log(again)
        wait_for(lambda: "joining" not in cluster_json(), 15, "cluster.json without seeds")
        def put() -> bool:  # (W=2 once both hold the ring's partitions: the join settles)
            with zkv.Client([ep["l3"]], timeout=5.0) as cl:
                try:
                    cl.put(b"k", b"v", w=2)
                except ZkvError:
                    return False
            return True

        wait_for(put, 30, "a write at W=2 through node2")
        with zkv.Client([ep["l1"]], timeout=5.0) as cl:
            assert set(cl.get(b"k", r=2).values) == {b"v"}  # (a failed try: a sibling)
    finally:
        nodes.close()


def test_a_join_no_seed_answers_says_what_each_seed_s_connection_did(tmp_path):
    """A node asked to join through a port nobody listens on and a listener that takes TCP
    connections but never speaks ZeroMQ (a seed stopped with SIGSTOP looks so) says once that
    it asks, then after JOIN_LOG_EVERY how long it has not joined, each seed with what its
    connection saw, instead of a line a second that said only which seeds it asked."""
    import re
    import socket
    import subprocess
    import sys

    from ops_helpers import Nodes, free_port, wait_for

    from zkv.node.core import JOIN_LOG_EVERY

    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(8)  # the kernel accepts; nobody answers the ZeroMQ greeting
    nodes = Nodes(tmp_path)
    try:
        stuck = f"tcp://127.0.0.1:{frozen.getsockname()[1]}"
        nobody = f"tcp://127.0.0.1:{free_port()}"
        listen = f"tcp://127.0.0.1:{free_port()}"
        p = nodes.start("--id", "node9", "--listen", listen,
                        "--gossip", f"tcp://127.0.0.1:{free_port()}", "--data-dir",
                        str(tmp_path / "d9"), "--seed", nobody, "--seed", stuck)
        wait_for(lambda: "not joined after" in nodes.log(p), JOIN_LOG_EVERY + 15,
                 "the first line about unanswered seeds")
        said = nodes.log(p)
        assert said.count("asking seeds to join") == 1, said
        shown = subprocess.run([sys.executable, "-m", "zkv.cli", "status", "--node", listen],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"JOINING for \d+ s \(gives up after 60 s\) through "
                         + re.escape(f"{nobody} (no TCP connection: down, or not listening "
                                     f"there), {stuck} (it accepted the TCP connection"),
                         shown.stdout), shown.stdout
        assert (f"not joined after {JOIN_LOG_EVERY:.0f} s (this node gives up after "
                f"60 s): {nobody} (no TCP connection: down, or not listening there), {stuck} "
                "(it accepted the TCP connection but did not complete the ZeroMQ handshake: "
                "paused (SIGSTOP), overloaded, on a slow link, or not a zkv node)") in said, said
        assert nodes.stop(p) == 0
    finally:
        nodes.close()
        frozen.close()


def test_a_node_restarted_before_a_join_settled_still_uses_the_previous_owners(tmp_path):
    """With `settle` at 60 s the join of node4 stays unsettled after its transfers are done:
    `zkv status` says so, and node1, stopped with SIGTERM and started again inside that window,
    still reads and writes the previous owners too (its cluster.json kept the states before
    the change) and says so again; reads and writes go on. (The node logic: test_node_logic's
    test_a_node_restarted_before_a_change_settled_still_reads_and_writes_the_old_owners.)"""
    import json
    import subprocess
    import sys

    conf = tmp_path / "settle60.toml"
    conf.write_text("settle = 60.0\n")
    c = LocalCluster(3, str(tmp_path / "c"), base_port=None,
                     extra_args=[*FAST, "--config", str(conf)])
    try:
        c.start()
        c.wait_ready(60)
        c.add_node()
        c.wait_settled(90)
        node1 = c.node("node1")

        def status(*flags: str) -> str:
            out = subprocess.run([sys.executable, "-m", "zkv.cli", "status", *flags, "--node",
                                  node1.listen], capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            return out.stdout

        before = json.loads(status("--json"))["cluster"]
        assert before["unsettled_changes"] >= 1 and before["settle_seconds"] == 60.0
        assert "settling: " in status()
        saved = json.load(open(os.path.join(node1.data_dir, "cluster.json")))
        assert len(saved["unsettled"]) == before["unsettled_changes"]
        assert c.terminate("node1") == 0
        c.restart("node1")
        c.wait_ready(60)
        after = json.loads(status("--json"))["cluster"]
        assert after["unsettled_changes"] == before["unsettled_changes"]
        assert "settling: " in status()
        top = subprocess.run([sys.executable, "-m", "zkv.cli", "top", "--once", "--node",
                              node1.listen], capture_output=True, text=True, timeout=60)
        row1 = [line for line in top.stdout.splitlines() if line.lstrip("│ ").startswith("node1 ")]
        assert row1 and "settling" in row1[0], top.stdout
        with zkv.Client([node1.listen], timeout=5.0, routing="any") as cl:
            for i in range(50):
                cl.put(b"after-restart:%d" % i, b"v%d" % i, w=3)
            assert all(cl.get(b"after-restart:%d" % i, r=3).values == [b"v%d" % i]
                       for i in range(50))
    finally:
        c.stop()


@pytest.mark.cluster
def test_a_frozen_node_replaced_under_its_id_stops_when_it_resumes(make_cluster, tmp_path):
    """node4 is frozen (SIGSTOP), and, as the runbook's replacement of a dead machine says, a
    new node4 starts at another address on an empty data dir. The old process, resumed, ran
    on beside it for good, serving what it held (an operator's run; a later restart on its
    data dir brought 778 deleted keys back). It now hears its id beating on at the other
    address and stops with exit 1, saying why; the replacement stays."""
    import subprocess

    from conftest import FAST

    from zkv.local import NODE_COMMAND, free_ports

    c = make_cluster(4)
    with zkv.Client(c.endpoints, timeout=5.0) as cl:
        cl.put_many([(b"z:%d" % i, b"v") for i in range(50)], w=2)
    old = c.node("node4")
    c.pause("node4")
    deadline = time.monotonic() + 60
    while True:  # the runbook's first step: down in the members' view (else its join is refused)
        with zkv.Client(c.endpoints[:1], timeout=3.0) as cl:
            if "node4" in cl.ring_info().down:
                break
        assert time.monotonic() < deadline, "node4 never seen down"
        time.sleep(0.3)
    port, gport = free_ports(2)
    log_path = tmp_path / "new-node4.log"
    with open(log_path, "wb") as log:
        new = subprocess.Popen(
            [*NODE_COMMAND, "--id", "node4", "--listen", f"tcp://127.0.0.1:{port}", "--gossip",
             f"tcp://127.0.0.1:{gport}", "--data-dir", str(tmp_path / "new-node4"), "--rack",
             old.rack, "--seed", c.endpoints[0], *FAST], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the members take the replacement's record (the old one is down)
            with zkv.Client(c.endpoints[:1], timeout=3.0) as cl:
                eps = {m.id: m.listen for m in cl.ring_info().members}
            if eps.get("node4") == f"tcp://127.0.0.1:{port}":
                break
            assert time.monotonic() < deadline, eps
            time.sleep(0.5)
        c.resume("node4")
        assert old.process.wait(30) == 1
        said = c.tail(old)
        assert "another process runs as node4 at tcp://127.0.0.1:" in said, said
        assert new.poll() is None  # the replacement runs on
        with zkv.Client(c.endpoints[:3], timeout=5.0) as cl:
            assert all(r.values == [b"v"] for r in cl.get_many([b"z:%d" % i for i in range(50)],
                                                                 r=2))
    finally:
        new.terminate()
        new.wait(15)


@pytest.mark.cluster
def test_a_member_that_lost_its_cluster_state_refuses_to_found_one_and_rejoins_with_seed(
        tmp_path):
    """The founding node restarted (without --seed, its usual command line) after its
    cluster.json was lost or damaged founded a one-node cluster on its data: it served
    clients, every R=2 read through it failed, and a W=1 write it acknowledged never reached
    the members (an outside durability run). It now refuses to start, saying what to do;
    started with --seed of a member as told, it rejoins under its id with its data;
    --new-cluster founds one anyway (a cluster rebuilt from backups)."""
    from ops_helpers import Nodes, free_port, wait_for

    nodes = Nodes(tmp_path)
    ports = [free_port() for _ in range(6)]
    eps = [f"tcp://127.0.0.1:{p}" for p in ports[:3]]

    def start(i, *extra):
        return nodes.start("--id", f"n{i + 1}", "--listen", eps[i], "--gossip",
                           f"tcp://127.0.0.1:{ports[3 + i]}", "--data-dir",
                           str(tmp_path / f"d{i + 1}"), *extra)

    def read_back() -> bool:
        try:
            with zkv.Client(eps, timeout=2.0) as c:
                # (a set: _keys_written retried is a blind put made twice)
                return all(set(c.get(b"k%d" % i, r=3).values) == {b"v%d" % i}
                           for i in range(0, 100, 10)) and bool(c.put(b"after", b"x", w=3))
        except ZkvError:
            return False

    try:
        first = start(0)
        time.sleep(0.5)
        start(1, "--seed", eps[0])
        start(2, "--seed", eps[0])
        wait_for(lambda: _keys_written(eps), timeout=60)
        nodes.stop(first)
        cluster_json = tmp_path / "d1" / "cluster.json"
        for damage in ("missing", "damaged"):
            if damage == "missing":
                saved = cluster_json.read_bytes()
                cluster_json.unlink()
            else:  # (and its earlier copy, which a start would fall back to)
                cluster_json.write_bytes(saved[:200])
                cluster_json.with_name("cluster.json.prev").write_bytes(saved[:200])
            p = start(0)
            assert p.wait(30) == 1
            said = nodes.log(p)
            assert (f"cluster state ({cluster_json}) is missing" if damage == "missing" else
                    f"{cluster_json} is damaged: unreadable") in said, said
            assert "--seed LISTEN of a running member" in said and "--new-cluster" in said
        cluster_json.unlink()  # as the refusal says (a damaged one refuses --seed too)
        start(0, "--seed", eps[1])
        wait_for(read_back, timeout=90)
    finally:
        nodes.close()
    # --new-cluster: founds one on that data anyway (its members' data, alone)
    nodes = Nodes(tmp_path)
    try:
        (tmp_path / "d1" / "cluster.json").unlink()
        start(0, "--new-cluster")
        with zkv.Client([eps[0]], timeout=2.0) as c:
            wait_for(lambda: set(c.get(b"k0", r=1).values) == {b"v0"}, timeout=30)
            assert [m["id"] for m in c.status(eps[0])["members"]] == ["n1"]
    finally:
        nodes.close()


def _keys_written(eps: list[str]) -> bool:
    """100 keys written at W=3 once the three nodes take them (False until then)."""
    try:
        with zkv.Client(eps, timeout=2.0) as c:
            for i in range(100):
                c.put(b"k%d" % i, b"v%d" % i, w=3)
        return True
    except ZkvError:
        return False
