"""The transport's per-frame socket calls: zkv._core.zsock against pyzmq (the baseline), the
same sockets in the same run. A ROUTER over loopback TCP holds queued [identity, 1,088-byte
payload] messages; each round drains 500 of them, taking each whole as the node's transport
does (its parts, the connection's fd, the User-Id), then asking ZMQ_EVENTS (as the drain
loop did before zsock).

    python -m pytest benchmarks/bench_sockcalls.py --benchmark-only -q
"""

from __future__ import annotations

import time

import pytest
import zmq

from zkv import sockcalls
from zkv._core import zsock

PAYLOAD = b"x" * 1088  # a 1 KiB put as the wire carries it
QUEUED = 500  # messages queued per round (under the default HWM of 1000)


@pytest.fixture(scope="module")
def pair():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close(0)
    dealer.close(0)
    ctx.term()


def _setup(pair, take):
    """Untimed: queue QUEUED messages at the ROUTER (loopback delivers them well within the
    wait; a round that finds fewer fails)."""
    router, dealer = pair
    for _ in range(QUEUED):
        dealer.send(PAYLOAD)
    time.sleep(0.2)
    return (router, take), {}


def _drain(router, take) -> None:
    got = 0
    while take(router):
        got += 1
    assert got == QUEUED


def _pyzmq_take(router) -> bool:
    try:
        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return False
    [f.bytes for f in frames]
    frames[-1].get(zmq.SRCFD)
    int(router.get(zmq.EVENTS))
    return True


def _zsock_take(router) -> bool:
    if zsock.recv(router, True) is None:
        return False
    zsock.events(router)
    return True


@pytest.mark.benchmark(group="socket-recv")
def test_recv_pyzmq_baseline(benchmark, pair):
    benchmark.pedantic(_drain, setup=lambda: _setup(pair, _pyzmq_take), rounds=20)


@pytest.mark.benchmark(group="socket-recv")
@pytest.mark.skipif(not sockcalls.FAST, reason="libzmq not found: zsock unavailable here")
def test_recv_zsock(benchmark, pair, ratio_note):
    ratio_note(0.5)
    benchmark.pedantic(_drain, setup=lambda: _setup(pair, _zsock_take), rounds=20)
