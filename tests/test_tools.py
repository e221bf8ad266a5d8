"""tools/faults.py against a real local cluster: list, pause (with automatic resume), kill."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import zkv

pytestmark = pytest.mark.cluster

FAULTS = str(Path(__file__).resolve().parent.parent / "tools" / "faults.py")


def _faults(directory, *args, timeout=30):
    return subprocess.run([sys.executable, FAULTS, "--dir", directory, *args],
                          capture_output=True, text=True, timeout=timeout)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_faults_tool_pauses_resumes_and_kills_real_nodes(make_cluster):
    cl = make_cluster(3)
    d = cl.dir
    out = _faults(d, "list")
    assert out.returncode == 0
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == ["node1", "node2", "node3"]
    pid3 = cl.node("node3").pid
    proc = subprocess.Popen([sys.executable, FAULTS, "--dir", d, "pause", "node3", "--for", "1.5"])
    try:
        deadline = time.monotonic() + 5
        while _state(pid3) != "T":
            assert time.monotonic() < deadline, "node3 never stopped"
            time.sleep(0.05)
        with zkv.Client(cl.endpoints[:2], timeout=5.0) as c:  # the cluster still serves
            c.put(b"f", b"v", w=2)
    finally:
        assert proc.wait(30) == 0
    assert _state(pid3) != "T"  # resumed by the tool
    assert _faults(d, "kill", "node2").returncode == 0
    cl.node("node2").proc.wait(10)
    assert _faults(d, "pause", "node2").returncode == 2  # gone: a clear error, no signal sent
    assert "no live node" in _faults(d, "resume", "nope").stderr


def test_chaos_always_resumes_and_cluster_keeps_serving(make_cluster):
    cl = make_cluster(3)
    proc = subprocess.Popen([sys.executable, FAULTS, "--dir", cl.dir, "chaos", "--duration", "3",
                             "--max-pause", "0.7", "--seed", "7"], stdout=subprocess.PIPE,
                            text=True)
    ok = failed = 0
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        while proc.poll() is None:
            try:  # W=2 of 3 with one node paused at a time: a write fails only when a pause
                c.put(b"chaos%d" % ok, b"v", w=2)  # catches it mid-flight (replica timeout)
                ok += 1
            except zkv.QuorumError:
                failed += 1
    assert proc.returncode == 0 and "pause node" in proc.stdout.read()
    assert ok > 0 and ok >= 4 * failed, (ok, failed)
    assert all(_state(n.pid) != "T" for n in cl.nodes)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("keys", [False, True], ids=["plain", "keyed"])
def test_chaos_check_runs_joins_a_leave_and_faults_and_finds_every_acknowledged_add(tmp_path,
                                                                                   keys):
    """tools/chaos_check.py, short: 3 nodes, one joins, node2 leaves, pauses and kills in
    between; every acknowledged add is read back and every node accounted for (exit 0).
    Plain: node2 then starts again on an empty data dir and joins again (--rejoin). Keyed:
    CurveZMQ handshakes through every restart, the writers with the admin key."""
    tool = str(Path(__file__).resolve().parent.parent / "tools" / "chaos_check.py")
    out = subprocess.run([sys.executable, tool, "--seed", "3", "--nodes", "3", "--joins", "1",
                          "--duration", "12", "--writers", "2", "--carts", "8",
                          "--dir", str(tmp_path / "c"), *(["--keys"] if keys else ["--rejoin"])],
                         capture_output=True, text=True, timeout=380)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "node4 joins" in out.stdout and "node2 exited with status 0" in out.stdout
    assert "seed 3: every acknowledged add is there" in out.stdout
    assert keys or "node2 is a valid member again" in out.stdout
    adds = int(out.stdout.split("writers: ")[1].split()[0])
    assert adds > 0


def test_compact_a_node_data_dir_compacts_data_and_handoff(tmp_path):
    """`zkv compact --data-dir` on a stopped node's directory covers both of its stores."""
    import subprocess

    from zkv._core import dvv
    from zkv.config import NodeConfig
    from zkv.node.stores import open_stores

    cfg = NodeConfig(id="n", listen="tcp://127.0.0.1:1", gossip="tcp://127.0.0.1:2",
                     data_dir=str(tmp_path / "n"))
    store, handoff = open_stores(cfg)
    v = dvv.update_encoded(None, b"", b"v", "n")
    for i in range(50):
        store.put(b"k%d" % i, v)
        handoff.merge("absent", b"k%d" % i, v)
    store.close()
    handoff.close()
    (tmp_path / "n" / "cluster.json").write_text('{"settings": null, "members": []}')
    out = subprocess.run(["zkv", "compact", "--data-dir", str(tmp_path / "n"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "n" / "data") in out.stdout
    assert str(tmp_path / "n" / "handoff") in out.stdout
