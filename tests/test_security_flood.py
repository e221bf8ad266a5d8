"""Issue 13's identity / connection flood against a real node process: many connections with
distinct identities that never read their replies. The node keeps its fds within its
--max-connections cap, serves a normal client during and after the flood, and gives the
memory back once the flood closes (memory is behaviour here; speed is not asserted).

The flood and the measurements are tools/flood_node.py's (also used for RESULTS.md)."""

from __future__ import annotations

import importlib
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAP = 200
CONNECTIONS = 3 * CAP


def _tool(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # flooders are spawned: importable by name
    return importlib.import_module("flood_node")


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_identity_flood_is_capped_served_through_and_freed(tmp_path, monkeypatch):
    flood = _tool(monkeypatch)
    lines: list[str] = []
    r = flood.run(CONNECTIONS, CAP, procs=1, requests=4, hold=4.0, value_size=64 * 1024,
                  directory=str(tmp_path), log=lines.append)
    report = "\n".join(lines)
    assert r["alive"], report
    # fds: at most the cap of connections plus what the node holds anyway, once the node has
    # refused the flood's first burst (libzmq accepts before the node's loop can refuse: on a
    # busy machine a sample inside the first 0.3 s read up to 353), and through the redials
    assert r["held_samples"] >= 5 and r["held_fds"] <= CAP + flood.FD_MARGIN, report
    assert r["peak_fds"] > r["rest_fds"] + CAP // 2, report  # the flood did reach the node
    # a client connected before the flood was served throughout, and after it
    assert r["served_failed"] == 0 and r["served_ok"] >= 25, report
    # every connection's fd is closed once the flood is, and its memory handed back
    assert r["after_fds"] <= r["rest_fds"] + 8, report
    assert r["after_rss_kb"] <= max(1.25 * r["rest_rss_kb"], r["rest_rss_kb"] + 16 * 1024), report
    assert not list(tmp_path.iterdir()), os.listdir(tmp_path)  # the tool cleaned up


# a ZMTP 3.0 greeting (64 bytes) asking for plain text (NULL), as a stranger's dialer sends it
GREETING = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" * 32


def _closed_within(sock, seconds: float) -> float | None:
    """Seconds until the node closed `sock` (reading and dropping what it sends), or None."""
    import time

    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:  # (reset)
            return time.monotonic() - start
    return None


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_a_stranger_s_unfinished_handshake_is_bounded_in_size_and_time(tmp_path):
    """An outside security review: before any key was checked, a connection announcing a
    16 MiB frame was held for libzmq's 30 s handshake timeout with what it sent (100 of them
    took a node from 47 MB to 1.6 GB; the gossip port, which no client key may even use, the
    same). The gossip port now refuses a frame over 64 KiB at once, and any connection that
    has not finished its handshake within HANDSHAKE_MS is dropped."""
    import socket
    import struct

    from ops_helpers import Nodes, free_port, wait_for

    from zkv.node.links import HANDSHAKE_MS

    nodes = Nodes(tmp_path)
    port, gossip = free_port(), free_port()
    try:
        nodes.start("--id", "n1", "--listen", f"tcp://127.0.0.1:{port}", "--gossip",
                    f"tcp://127.0.0.1:{gossip}", "--data-dir", str(tmp_path / "n1"))
        wait_for(lambda: socket.create_connection(("127.0.0.1", gossip), 1).close() or True,
                 timeout=30)
        big = socket.create_connection(("127.0.0.1", gossip))
        big.sendall(GREETING + b"\x06" + struct.pack(">Q", 16 << 20) + b"\0" * 65536)
        took = _closed_within(big, 5.0)
        assert took is not None, "a 16 MiB frame announced to the gossip port was kept"
        big.close()
        mute = socket.create_connection(("127.0.0.1", port))
        mute.sendall(GREETING[:20])  # a greeting never finished
        took = _closed_within(mute, HANDSHAKE_MS / 1000 + 10)
        assert took is not None and took >= HANDSHAKE_MS / 1000 - 1, took
        mute.close()
        assert all(p.poll() is None for p in nodes.procs)
    finally:
        nodes.close()


_AUTO_ID = """
import sys, zmq
from zkv.node.conns import seed_routing_ids
if sys.argv[1] == "seeded":
    assert seed_routing_ids()
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
port = router.bind_to_random_port("tcp://127.0.0.1")
dealer = ctx.socket(zmq.DEALER)  # (sets no routing id: the router names it)
dealer.connect(f"tcp://127.0.0.1:{port}")
dealer.send(b"hi")
print(router.recv_multipart()[0].hex())
ctx.destroy(0)
"""


def test_each_node_names_anonymous_connections_from_its_own_random_start():
    """libzmq names a connection that sends no routing id b"\\x00" + a counter from libc's
    rand(), unseeded: the same start in every process, which let a client squat the names a
    node would give next and crash it (an outside security review). seed_routing_ids (the
    transport calls it before its ROUTER exists) makes each process's start its own."""
    import subprocess
    import sys

    def first(mode: str) -> str:
        out = subprocess.run([sys.executable, "-c", _AUTO_ID, mode], capture_output=True,
                             text=True, timeout=60, check=True)
        return out.stdout.strip()

    plain = {first("plain") for _ in range(2)}
    seeded = {first("seeded") for _ in range(3)}
    assert all(len(x) == 10 and x.startswith("00") for x in plain | seeded)
    assert len(seeded) == 3 and not seeded & plain


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_one_connection_flooding_full_frames_does_not_hold_other_clients(tmp_path):
    """One connection sending frames of 4,096 small puts, never reading its replies: the node
    answered them "busy", but a loop turn took every frame queued (up to 2,000, each of 4,096
    messages) and ran for seconds, and another client's gets timed out for the whole flood (an
    outside security audit). A turn now takes a bounded number of client messages; the other
    client's gets are answered within their timeout all along (no speed is asserted)."""
    import threading
    import time

    import zmq

    import zkv
    from zkv import wire
    from zkv.local import LocalCluster

    cl = LocalCluster(1, str(tmp_path / "c"), base_port=None)
    cl.start()
    stop = threading.Event()
    frame = wire.encode([wire.Put(i, b"fl:%d" % (i % 64), b"x" * 100, w=1)
                         for i in range(wire.MAX_BATCH)])
    sent = [0]

    def flood() -> None:
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.connect(cl.endpoints[0])
        while not stop.is_set():
            if s.poll(100, zmq.POLLOUT):
                s.send(frame)
                sent[0] += 1
        ctx.destroy(0)

    t = threading.Thread(target=flood, daemon=True)
    try:
        with zkv.Client(cl.endpoints, timeout=5.0) as c:
            c.put(b"victim", b"v", w=1)
            t.start()
            deadline = time.monotonic() + 60
            while sent[0] < 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sent[0] >= 100  # (409,600 puts queued on their way)
            for _ in range(10):  # every one answered within its timeout (RequestTimeout else)
                assert c.get(b"victim", r=1).values == [b"v"]
    finally:
        stop.set()
        if t.is_alive():
            t.join(5)
        cl.stop()
