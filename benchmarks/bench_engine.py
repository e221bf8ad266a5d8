"""Storage engine benchmark: LogStore beside LMDB, LevelDB (plyvel) and sqlite3, in one run.

Run:  python -m pytest benchmarks/bench_engine.py --benchmark-only -q
      ZKV_BENCH_KEYS=100000 python -m pytest benchmarks/bench_engine.py --benchmark-only -q

Workload (issue 3): ZKV_BENCH_KEYS keys (default 1M) of 16 B with 100 B values. Each load is
one round (``benchmark.pedantic(rounds=1)``), so the conftest's ratio table compares single
timed runs made in the same process on the same machine.
Groups and goals (ratio = time / baseline time, lower is better):
- engine-put:     bulk put in random key order, baseline LMDB in one write txn; LogStore
                  goal <= 1.0
- engine-put-seq: bulk put in ascending key order (LMDB's best case: every insert lands on
                  the rightmost B-tree page), baseline LMDB in one write txn; LogStore goal
                  <= 1.0 (issue 12: put rate >= 1.0x LMDB's); put_many (one call per batch
                  of PUT_BATCH pairs) shown beside it
- engine-get:     random gets of every key, baseline LMDB (one read txn); LogStore goal <= 1.0
- engine-durable: ZKV_BENCH_DURABLE writes (default 2000) from 8 threads that each return
                  only once durable; baseline sqlite3 WAL synchronous=FULL, one commit per
                  write; LogStore sync="always" (group commit) goal <= 0.1; LMDB sync=True
                  per commit shown for reference
- engine-big:     ZKV_BENCH_BIG documents (default 20000) of ~8 KiB JSON-like text (values
                  over the 4 KiB compression threshold), each put then every one read in
                  random order; baseline LMDB (one write txn, one read txn); LogStore stores
                  them zstd-compressed (no goal: shown so a context per call does not return)
- engine-reopen / engine-compact: reopen from hints (extra_info keys_per_s, goal >= 2M/s),
  keydir bytes per key (goal <= 64 + key length), compaction MB/s.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import threading

import lmdb
import pytest

try:
    import plyvel
except ImportError:  # (the test extra installs it below Python 3.13 only: no cp313 wheel)
    plyvel = None

from zkv.storage import LogStore

N = int(os.environ.get("ZKV_BENCH_KEYS", "1000000"))
N_DURABLE = int(os.environ.get("ZKV_BENCH_DURABLE", "2000"))
THREADS = 8
PUT_BATCH = 1000
N_BIG = int(os.environ.get("ZKV_BENCH_BIG", "20000"))
_BASE: dict[str, float] = {}  # group -> baseline median seconds (baselines run first)
KEYS = [b"%016d" % i for i in range(N)]
VALUE = bytes(range(100))
ORDER = list(range(N))
random.Random(42).shuffle(ORDER)
RKEYS = [KEYS[i] for i in ORDER]


def _rate_vs_baseline(benchmark, group):
    """extra_info rate_vs_baseline: this test's put rate over the baseline's, same run (the
    goal of issue 12 is stated as a rate: LogStore puts/s >= 1.0x LMDB's)."""
    base = _BASE.get(group)
    if base:
        benchmark.extra_info["rate_vs_baseline"] = round(base / benchmark.stats.stats.median, 2)


@pytest.fixture
def tmpdir_():
    d = tempfile.mkdtemp(prefix="zkv-bench-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ put
def _lmdb_env(d, **kw):
    return lmdb.open(d, map_size=max(1 << 30, N * 400), **kw)


@pytest.mark.benchmark(group="engine-put")
def test_put_lmdb_baseline(benchmark, tmpdir_):
    env = _lmdb_env(tmpdir_, sync=False)

    def run():
        with env.begin(write=True) as txn:
            put = txn.put
            for k in RKEYS:
                put(k, VALUE)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _BASE["engine-put"] = benchmark.stats.stats.median
    env.close()


@pytest.mark.benchmark(group="engine-put")
def test_put_logstore(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)

    def run():
        put = s.put
        for k in RKEYS:
            put(k, VALUE)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["goal"] = 1.0
    _rate_vs_baseline(benchmark, "engine-put")
    s.close()


@pytest.mark.benchmark(group="engine-put")
def test_put_leveldb(benchmark, tmpdir_):
    if plyvel is None:
        pytest.skip("plyvel (LevelDB) is not installed: it has no wheel for this Python")
    db = plyvel.DB(tmpdir_, create_if_missing=True)

    def run():
        with db.write_batch() as wb:
            put = wb.put
            for k in RKEYS:
                put(k, VALUE)

    benchmark.pedantic(run, rounds=1, iterations=1)
    db.close()


# ------------------------------------------------------------------ put, sequential keys
@pytest.mark.benchmark(group="engine-put-seq")
def test_put_seq_lmdb_baseline(benchmark, tmpdir_):
    env = _lmdb_env(tmpdir_, sync=False)

    def run():
        with env.begin(write=True) as txn:
            put = txn.put
            for k in KEYS:
                put(k, VALUE)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _BASE["engine-put-seq"] = benchmark.stats.stats.median
    env.close()


@pytest.mark.benchmark(group="engine-put-seq")
def test_put_seq_logstore(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)

    def run():
        put = s.put
        for k in KEYS:
            put(k, VALUE)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["goal"] = 1.0
    _rate_vs_baseline(benchmark, "engine-put-seq")
    s.close()


@pytest.mark.benchmark(group="engine-put-seq")
def test_put_seq_logstore_put_many(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)

    def run():
        put_many = s.put_many
        for i in range(0, N, PUT_BATCH):
            put_many([(k, VALUE) for k in KEYS[i:i + PUT_BATCH]])

    benchmark.pedantic(run, rounds=1, iterations=1)
    _rate_vs_baseline(benchmark, "engine-put-seq")
    s.close()


# ------------------------------------------------------------------ get
@pytest.mark.benchmark(group="engine-get")
def test_get_lmdb_baseline(benchmark, tmpdir_):
    env = _lmdb_env(tmpdir_, sync=False)
    with env.begin(write=True) as txn:
        for k in KEYS:
            txn.put(k, VALUE)

    def run():
        with env.begin() as txn:
            get = txn.get
            for k in RKEYS:
                get(k)

    benchmark.pedantic(run, rounds=1, iterations=1)
    env.close()


@pytest.mark.benchmark(group="engine-get")
def test_get_logstore(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)
    for k in KEYS:
        s.put(k, VALUE)
    s.flush()
    assert s.get(RKEYS[0]) == VALUE

    def run():
        get = s.get
        for k in RKEYS:
            get(k)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["goal"] = 1.0
    s.close()


@pytest.mark.benchmark(group="engine-get")
def test_get_leveldb(benchmark, tmpdir_):
    if plyvel is None:
        pytest.skip("plyvel (LevelDB) is not installed: it has no wheel for this Python")
    db = plyvel.DB(tmpdir_, create_if_missing=True)
    with db.write_batch() as wb:
        for k in KEYS:
            wb.put(k, VALUE)

    def run():
        get = db.get
        for k in RKEYS:
            get(k)

    benchmark.pedantic(run, rounds=1, iterations=1)
    db.close()


# ------------------------------------------------------------------ compressible documents
def _doc(i: int) -> bytes:
    rows = b",".join(b'{"id": %d, "user": "user-%d", "tags": ["a", "b"], "n": %d}' % (j, i, i * j)
                     for j in range(120))
    return b"[" + rows + b"]"


BIG_KEYS = [b"doc-%08d" % i for i in random.Random(7).sample(range(N_BIG), N_BIG)]


@pytest.mark.benchmark(group="engine-big")
def test_big_lmdb_baseline(benchmark, tmpdir_):
    env = lmdb.open(tmpdir_, map_size=max(1 << 30, N_BIG * 20000), sync=False)
    docs = [_doc(i) for i in range(N_BIG)]

    def run():
        with env.begin(write=True) as txn:
            for i, d in enumerate(docs):
                txn.put(b"doc-%08d" % i, d)
        with env.begin() as txn:
            get = txn.get
            for k in BIG_KEYS:
                get(k)

    benchmark.pedantic(run, rounds=1, iterations=1)
    env.close()


@pytest.mark.benchmark(group="engine-big")
def test_big_logstore(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)
    docs = [_doc(i) for i in range(N_BIG)]

    def run():
        put, get = s.put, s.get
        for i, d in enumerate(docs):
            put(b"doc-%08d" % i, d)
        for k in BIG_KEYS:
            get(k)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert s.get(b"doc-%08d" % (N_BIG - 1)) == docs[-1]
    benchmark.extra_info["stored_bytes_per_doc"] = round(s.stats()["total_bytes"] / N_BIG)
    benchmark.extra_info["doc_bytes"] = len(docs[0])
    s.close()


# ------------------------------------------------------------------ durable writes, 8 threads
def _threads(work):
    per = N_DURABLE // THREADS
    ts = [threading.Thread(target=work, args=(t, per)) for t in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


@pytest.mark.benchmark(group="engine-durable")
def test_durable_sqlite_wal_full_baseline(benchmark, tmpdir_):
    path = os.path.join(tmpdir_, "db.sqlite")
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB)")
    c.commit()
    c.close()

    def work(t, per):
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        for i in range(per):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (KEYS[t * per + i], VALUE))
            conn.execute("COMMIT")
        conn.close()

    benchmark.pedantic(_threads, args=(work,), rounds=1, iterations=1)


@pytest.mark.benchmark(group="engine-durable")
def test_durable_logstore_group_commit(benchmark, tmpdir_):
    s = LogStore(tmpdir_, sync="always", compact_dead_ratio=None)

    def work(t, per):
        for i in range(per):
            s.put(KEYS[t * per + i], VALUE)

    benchmark.pedantic(_threads, args=(work,), rounds=1, iterations=1)
    benchmark.extra_info["goal"] = 0.1
    s.close()


@pytest.mark.benchmark(group="engine-durable")
def test_durable_lmdb_sync_per_commit(benchmark, tmpdir_):
    env = _lmdb_env(tmpdir_, sync=True)

    def work(t, per):
        for i in range(per):
            with env.begin(write=True) as txn:
                txn.put(KEYS[t * per + i], VALUE)

    benchmark.pedantic(_threads, args=(work,), rounds=1, iterations=1)
    env.close()


# ------------------------------------------------------------------ reopen, keydir, compaction
@pytest.mark.benchmark(group="engine-reopen")
def test_reopen_from_hints(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)
    for k in KEYS:
        s.put(k, VALUE)
    s.close()
    box = {}

    def run():
        box["s"] = LogStore(tmpdir_, compact_dead_ratio=None)

    benchmark.pedantic(run, rounds=1, iterations=1)
    s = box["s"]
    st = s.stats()
    assert st["keys"] == N
    secs = benchmark.stats.stats.median
    benchmark.extra_info["keys_per_s"] = round(N / secs)
    benchmark.extra_info["reopen_goal_2M_per_s"] = "MET" if N / secs >= 2e6 else "SHORT"
    per_key = st["keydir_bytes"] / N
    benchmark.extra_info["keydir_bytes_per_key"] = round(per_key, 1)
    benchmark.extra_info["keydir_goal_64_plus_16"] = "MET" if per_key <= 64 + 16 else "SHORT"
    s.close()


@pytest.mark.benchmark(group="engine-compact")
def test_compaction_throughput(benchmark, tmpdir_):
    s = LogStore(tmpdir_, compact_dead_ratio=None)
    for k in KEYS:
        s.put(k, VALUE)
    for k in KEYS[: N // 2]:  # half the data dead
        s.put(k, VALUE)
    s.flush()
    box = {}

    def run():
        box["st"] = s.compact()

    benchmark.pedantic(run, rounds=1, iterations=1)
    st = box["st"]
    benchmark.extra_info["MB_per_s_read"] = round(st["bytes_before"] / st["seconds"] / 1e6, 1)
    benchmark.extra_info["MB_per_s_written"] = round(st["bytes_after"] / st["seconds"] / 1e6, 1)
    assert s.get(KEYS[0]) == VALUE and len(s) == N
    s.close()
