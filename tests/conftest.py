"""Shared fixtures: real zkv-node processes on loopback, cleaned up afterwards."""

from __future__ import annotations

import os

import pytest
import zmq
from hypothesis import settings

from zkv import wire
from zkv._core import dvv
from zkv.local import PORTS_ENV, LocalCluster, port_span


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`, as .ci/run runs the suite: most tests wait on real
    processes, so two workers nearly halve the wall time on two cores), each worker, and every
    node and `zkv local` process it starts, picks ports from its own share of the range, so
    two workers never take the same port between a pick and its bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... (unset without -n)
    if not worker or os.environ.get(PORTS_ENV):
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    first, end = port_span()
    width, i = (end - first) // count, int(worker[2:])
    os.environ[PORTS_ENV] = f"{first + i * width}-{first + (i + 1) * width}"

# Hypothesis's per-example deadline (200 ms) is a wall-clock assertion: on a loaded machine (a CI
# rehearsal beside other work took 3x its usual time) four model tests failed it with nothing
# wrong. Tests assert behaviour; speed is the benchmarks' (benchmarks/).
settings.register_profile("zkv", deadline=None)
settings.load_profile("zkv")

# fast failure detection so fault tests stay short
FAST = ["--gossip-interval", "0.1", "--down-after", "1.0", "--replica-timeout", "1.0"]


@pytest.fixture
def make_cluster(tmp_path):
    made: list[LocalCluster] = []

    def make(nodes: int = 3, **kw) -> LocalCluster:
        kw.setdefault("extra_args", FAST)
        c = LocalCluster(nodes, str(tmp_path / f"cluster{len(made)}"), base_port=None, **kw)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory):
    c = LocalCluster(3, str(tmp_path_factory.mktemp("c3")), base_port=None, extra_args=FAST)
    c.start()
    yield c
    c.stop()


def peer_identity(ctx, endpoint: str) -> bytes:
    """A routing identity of another member: replica reads are accepted from peers only."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(wire.encode_one(wire.RingInfo(1)))
    if not s.poll(3000):
        raise TimeoutError(endpoint)
    (ring,) = wire.decode(s.recv(), 1 << 30)
    s.close(0)
    others = [m.id for m in getattr(ring, "members", []) if m.listen != endpoint]
    return b"peer:" + (others[0] if others else "test").encode() + b"/test"


def held(endpoint: str, key: bytes, owner: str = "") -> list[bytes | None] | None:
    """What one node itself stores for key (asked directly, bypassing coordination)."""
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, peer_identity(ctx, endpoint))
        s.connect(endpoint)
        s.send(wire.encode_one(wire.RGet(1, key, owner)))
        if not s.poll(3000):
            raise TimeoutError(endpoint)
        (reply,) = wire.decode(s.recv(), 1 << 30)
        if isinstance(reply, wire.Error) or not reply.dvv:  # Error: still joining
            return None
        return dvv.DVVSet.decode(reply.dvv).values()
    finally:
        ctx.destroy(0)
