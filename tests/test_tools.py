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
