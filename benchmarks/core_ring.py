"""Ring lookup speed against a bare mmh3 call, measured in the same run (see conftest.py).

Goals: one lookup from Python (ring.partition, partition_of) <= 1.5x ``mmh3.hash64(key)``;
batch lookup (ring.partitions over a list of 16-byte keys) >= 10 million keys/s.
"""

from __future__ import annotations

import random

import mmh3
import pytest

from zkv._core.ring import Ring, partition_of

KEY = b"user:0000042:crt"  # 16 bytes
# one-lookup calls take ~50-200 ns: time them all with the same rounds x iterations so timer
# overhead and calibration do not differ between the baseline and the candidates
ONE = {"rounds": 300, "iterations": 2000, "warmup_rounds": 20}
BATCH = 100_000
BATCH_GOAL_KEYS_PER_S = 10_000_000


@pytest.fixture(scope="module")
def ring():
    return Ring([(f"node{i}", f"rack{i % 3}") for i in range(12)], q=256, n=3)


@pytest.fixture(scope="module")
def keys():
    rng = random.Random(42)
    return [rng.randbytes(16) for _ in range(BATCH)]


@pytest.mark.benchmark(group="ring-lookup-one")
def test_one_baseline_mmh3_hash64(benchmark):
    benchmark.pedantic(mmh3.hash64, args=(KEY,), **ONE)


@pytest.mark.benchmark(group="ring-lookup-one")
def test_one_ring_partition(benchmark, ring):
    benchmark.extra_info["goal"] = 1.5
    assert benchmark.pedantic(ring.partition, args=(KEY,), **ONE) == partition_of(KEY, 8)


@pytest.mark.benchmark(group="ring-lookup-one")
def test_one_partition_of(benchmark):
    benchmark.extra_info["goal"] = 1.5
    benchmark.pedantic(partition_of, args=(KEY, 8), **ONE)


@pytest.mark.benchmark(group="ring-lookup-one")
def test_one_preflist_for_key(benchmark, ring):
    benchmark.pedantic(ring.preflist_for_key, args=(KEY,), **ONE)


def _loop_mmh3(keys):
    h = mmh3.hash64
    return [h(k, signed=False)[0] >> 56 for k in keys]


@pytest.mark.benchmark(group="ring-lookup-batch")
def test_batch_baseline_python_loop_mmh3(benchmark, keys):
    benchmark(_loop_mmh3, keys)


def _keys_per_s(benchmark, n):
    rate = n / benchmark.stats.stats.median
    benchmark.extra_info["keys_per_s"] = f"{rate / 1e6:.1f}M"
    return rate


@pytest.mark.benchmark(group="ring-lookup-batch")
def test_batch_ring_partitions(benchmark, ring, keys):
    out = benchmark(ring.partitions, keys)
    assert len(out) == BATCH
    rate = _keys_per_s(benchmark, BATCH)
    benchmark.extra_info["goal_10M_keys_per_s"] = "MET" if rate >= BATCH_GOAL_KEYS_PER_S else "SHORT"


@pytest.mark.benchmark(group="ring-lookup-batch")
def test_batch_ring_hashes(benchmark, ring, keys):
    benchmark(ring.hashes, keys)
    _keys_per_s(benchmark, BATCH)


@pytest.mark.benchmark(group="ring-build")
def test_build_baseline_ring_12_nodes_q256(benchmark):
    members = [(f"node{i}", f"rack{i % 3}") for i in range(12)]
    benchmark(Ring, members, 256, 3)


@pytest.mark.benchmark(group="ring-build")
def test_build_ring_64_nodes_q4096(benchmark):
    members = [(f"node{i}", f"rack{i % 4}") for i in range(64)]
    benchmark.pedantic(Ring, args=(members, 4096, 3), rounds=3, iterations=1)
