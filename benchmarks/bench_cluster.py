"""One client's round trip through a 3-node cluster against the raw pyzmq round trip.

A sequential ``Client`` at R=W=2 on a local 3-node cluster (real zkv-node processes on
loopback): a get of a 1 KiB value and a put of one (with the context of the previous put, so
no siblings pile up), beside the same-run baseline: a raw pyzmq ROUTER/DEALER echo, in its own
process, of the put request's encoded bytes. Goal (group "cluster-rtt"): median <= 2.5x the
echo's. p50 and p99 (microseconds) are printed beside each figure.
"""

from __future__ import annotations

import os

import pytest

from zkv import wire
from zkv.bench.baselines import EchoServer, zmq_round_trips
from zkv.bench.stats import percentile
from zkv.client import Client
from zkv.local import LocalCluster

KEY = b"bench:cluster:01"  # 16 bytes
VALUE = os.urandom(1024)
PAYLOAD = wire.encode_one(wire.Put(1, KEY, VALUE, b"", 2))  # what a put puts on the wire
ROUNDS = {"rounds": 2000, "iterations": 1, "warmup_rounds": 100}
GOAL = 2.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(3, str(tmp_path_factory.mktemp("bench-cluster")), base_port=None)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster.endpoints, timeout=2.0) as c:
        c.put(KEY, VALUE, w=3)
        yield c


def _note_percentiles(benchmark) -> None:
    data = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["p50_us"] = round(percentile(data, 50) * 1e6, 1)
    benchmark.extra_info["p99_us"] = round(percentile(data, 99) * 1e6, 1)


@pytest.mark.benchmark(group="cluster-rtt")
def test_rtt_baseline_pyzmq_echo(benchmark):
    import zmq

    with EchoServer() as srv:
        zmq_round_trips(srv.endpoint, PAYLOAD, 200)  # the echo answers before timing starts
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(srv.endpoint)

        def rtt():
            s.send(PAYLOAD)
            return s.recv()

        try:
            assert benchmark.pedantic(rtt, **ROUNDS) == PAYLOAD
        finally:
            s.close(0)
            ctx.term()
    benchmark.extra_info["payload_bytes"] = len(PAYLOAD)
    _note_percentiles(benchmark)


@pytest.mark.benchmark(group="cluster-rtt")
def test_rtt_cluster_get_r2(benchmark, client):
    benchmark.extra_info["goal"] = GOAL
    res = benchmark.pedantic(client.get, args=(KEY,), kwargs={"r": 2}, **ROUNDS)
    assert res.values == [VALUE]
    _note_percentiles(benchmark)


@pytest.mark.benchmark(group="cluster-rtt")
def test_rtt_cluster_put_w2(benchmark, client):
    benchmark.extra_info["goal"] = GOAL
    state = {"ctx": client.get(KEY, r=2).context}

    def put():
        state["ctx"] = client.put(KEY, VALUE, context=state["ctx"], w=2)

    benchmark.pedantic(put, **ROUNDS)
    assert client.get(KEY, r=3).values == [VALUE]  # each put replaced the last: no siblings
    _note_percentiles(benchmark)
