"""The cost of security (issue 13): workload-A throughput of a 3-node cluster with CurveZMQ on
every socket (`--keys`) against the same cluster in plain text, in one run.

Each round is 2,000 operations (50/50 get/put of 1 KiB values over 200 keys) from one
AsyncClient with 32 requests in flight. Goal (group "security"): the keyed round's median
time <= 1/0.7 of the plain one's, i.e. throughput with CurveZMQ >= 0.7x plain.
"""

from __future__ import annotations

import asyncio
import os

import pytest

import zkv
from zkv.local import LocalCluster
from zkv.security import keygen

OPS = 2000
IN_FLIGHT = 32
KEYS = [b"sec:%d" % i for i in range(200)]
VALUE = os.urandom(1024)
ROUNDS = {"rounds": 3, "iterations": 1, "warmup_rounds": 1}


async def _workload(endpoints: list[str], keys_path: str | None) -> None:
    async with zkv.AsyncClient(endpoints, timeout=5.0, keys=keys_path) as c:
        sem = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with sem:
                key = KEYS[i % len(KEYS)]
                if i % 2:
                    await c.get(key, r=2)
                else:
                    await c.put(key, VALUE, w=2)

        await asyncio.gather(*(one(i) for i in range(OPS)))


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench-security")
    keys = str(base / "keys")
    keygen(keys)
    plain = LocalCluster(3, str(base / "plain"), base_port=None, sync="none")
    keyed = LocalCluster(3, str(base / "keyed"), base_port=None, sync="none", keys=keys)
    plain.start()
    keyed.start()
    yield plain, keyed
    plain.stop()
    keyed.stop()


@pytest.mark.benchmark(group="security")
def test_workload_a_plain_baseline(benchmark, clusters):
    plain, _ = clusters
    benchmark.pedantic(lambda: asyncio.run(_workload(plain.endpoints, None)), **ROUNDS)
    benchmark.extra_info["ops_per_round"] = OPS


@pytest.mark.benchmark(group="security")
def test_workload_a_curvezmq(benchmark, clusters):
    _, keyed = clusters
    benchmark.extra_info["goal"] = round(1 / 0.7, 2)
    benchmark.pedantic(lambda: asyncio.run(_workload(keyed.endpoints, keyed.client_keys)),
                       **ROUNDS)
    benchmark.extra_info["ops_per_round"] = OPS
