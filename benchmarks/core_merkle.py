"""Merkle tree micro-benchmarks: per-write leaf update, 1M-key rebuild, 0.1%-divergent diff.

Goals (ratios to a same-run baseline, see conftest.py):
- merkle-update: ``insert`` <= 1.5x one ``mmh3.hash128`` of a 16-byte key.
- merkle-rebuild: clear + ``insert_many`` of 1M (16-byte key, 16-byte digest) + ``root()``
  <= 2x one ``blake3`` pass over the same 32 MB concatenated.
- merkle-diff: no goal; reports remote calls and hashes fetched against the leaf count, with
  fetching the whole leaf level as the baseline.
"""

from __future__ import annotations

import os
import random

import blake3
import mmh3
import pytest

from zkv._core.merkle import MerkleTree

N = 1_000_000
# per-call benchmarks: same rounds x iterations for the baseline and the tests, so timer
# overhead is amortised identically (pytest-benchmark's calibration may pick 1 vs 100)
PER_CALL = {"rounds": 300, "iterations": 1000, "warmup_rounds": 10}
KEY = b"k" * 16
VD = b"v" * 16


@pytest.fixture(scope="module")
def million():
    raw = os.urandom(32 * N)
    keys = [raw[i : i + 16] for i in range(0, 16 * N, 16)]
    digests = [raw[i : i + 16] for i in range(16 * N, 32 * N, 16)]
    blob = b"".join(k + d for k, d in zip(keys, digests, strict=True))
    return keys, digests, blob


# -- merkle-update ---------------------------------------------------------------------------


@pytest.mark.benchmark(group="merkle-update")
def test_update_baseline_mmh3_hash128(benchmark):
    benchmark.pedantic(mmh3.hash128, args=(KEY,), **PER_CALL)


@pytest.mark.benchmark(group="merkle-update")
def test_update_insert(benchmark):
    t = MerkleTree()
    benchmark.extra_info["goal"] = 1.5
    benchmark.pedantic(t.insert, args=(KEY, VD), **PER_CALL)


@pytest.mark.benchmark(group="merkle-update")
def test_update_replace(benchmark):
    t = MerkleTree()
    benchmark.pedantic(t.replace, args=(KEY, VD, VD), **PER_CALL)


# -- merkle-rebuild --------------------------------------------------------------------------


@pytest.mark.benchmark(group="merkle-rebuild")
def test_rebuild_baseline_blake3_32mb(benchmark, million):
    _, _, blob = million
    benchmark.pedantic(lambda: blake3.blake3(blob).digest(), rounds=10, iterations=1)


@pytest.mark.benchmark(group="merkle-rebuild")
def test_rebuild_insert_many_1m(benchmark, million):
    keys, digests, _ = million
    t = MerkleTree()

    def rebuild():
        t.clear()
        t.insert_many(keys, digests)
        return t.root()

    benchmark.extra_info["goal"] = 2.0
    benchmark.pedantic(rebuild, rounds=10, iterations=1)
    assert t.count() == N


# -- merkle-diff -----------------------------------------------------------------------------
# 1000 of 1M keys changed. With the default 1024 leaves most leaves differ (~640), so the walk
# cannot beat fetching the leaf level; with 64 Ki leaves it fetches a fraction of them.


def _divergent(million, leaf_bits):
    keys, digests, _ = million
    a = MerkleTree(8, leaf_bits, 4)
    a.insert_many(keys, digests)
    b = MerkleTree(8, leaf_bits, 4)
    b.insert_many(keys, digests)
    rng = random.Random(7)
    changed = rng.sample(range(N), N // 1000)
    for i in changed:
        b.replace(keys[i], digests[i], rng.randbytes(16))
    truth = sorted({a.leaf_of(keys[i]) for i in changed})
    a.root(), b.root()
    return a, b, truth


@pytest.fixture(scope="module")
def divergent_1k(million):
    return _divergent(million, 10)


@pytest.fixture(scope="module")
def divergent_64k(million):
    return _divergent(million, 16)


def _bench_fetch_all(benchmark, divergent):
    a, b, truth = divergent
    leaves = list(range(a.leaves))

    def naive():
        theirs = MerkleTree.decode_level(b.encode_level(b.depth, leaves))
        mine = a.level_hashes(a.depth, leaves)
        return [i for i in leaves if mine[i] != theirs[i]]

    assert benchmark(naive) == truth


def _bench_walk(benchmark, divergent):
    a, b, truth = divergent
    stats = {"calls": 0, "hashes": 0}

    def remote(level, indices):
        stats["calls"] += 1
        stats["hashes"] += len(indices)
        return MerkleTree.decode_level(b.encode_level(level, indices))

    assert a.diff(remote) == truth
    benchmark.extra_info.update(
        remote_calls=stats["calls"],
        hashes_fetched=stats["hashes"],
        leaves=a.leaves,
        differing_leaves=len(truth),
    )
    benchmark(a.diff, remote)


@pytest.mark.benchmark(group="merkle-diff-1k-leaves")
def test_diff_1k_baseline_fetch_all_leaves(benchmark, divergent_1k):
    _bench_fetch_all(benchmark, divergent_1k)


@pytest.mark.benchmark(group="merkle-diff-1k-leaves")
def test_diff_1k_walk_1m_keys_0p1pct(benchmark, divergent_1k):
    _bench_walk(benchmark, divergent_1k)


@pytest.mark.benchmark(group="merkle-diff-64k-leaves")
def test_diff_64k_baseline_fetch_all_leaves(benchmark, divergent_64k):
    _bench_fetch_all(benchmark, divergent_64k)


@pytest.mark.benchmark(group="merkle-diff-64k-leaves")
def test_diff_64k_walk_1m_keys_0p1pct(benchmark, divergent_64k):
    _bench_walk(benchmark, divergent_64k)
