"""The engine with the keys of one node's share of the ring: puts, gets and a partition walk.

A node of an N-node cluster (N=3 replicas, Q=256) holds the keys of its preference lists'
partitions only. Before 055c625 the keydir's home slots were the hash's partition bits, so
those keys filled only that share of the slots and linear probing ran long clusters (puts
10x slower at 5 nodes, 50-60x at 8-12; RESULTS.md). Prints, per cluster size: puts/s, get
of a present key (us), the longest run of occupied slots, and key_hashes over every
partition (ms).

    python benchmarks/keydir_share.py [KEYS] [NODES,...]      # default 500000 3,5,8,12
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time

from zkv._core.ring import Ring
from zkv.storage.logstore import LogStore


def run(keys: int, nodes: int) -> str:
    ring = Ring([(f"n{i}", f"r{i % 3}") for i in range(nodes)], q=256, n=3)
    held = {p for p in range(256) if "n0" in ring.preflist(p)}
    mine, i = [], 0
    while len(mine) < keys:
        k = b"k%09d" % i
        i += 1
        if ring.partition(k) in held:
            mine.append(k)
    path = tempfile.mkdtemp(prefix="keydir-share-")
    try:
        s = LogStore(path, sync="none", compact_dead_ratio=None)
        t = time.perf_counter()
        for j in range(0, keys, 1000):
            s.put_many([(k, b"v" * 40) for k in mine[j:j + 1000]])
        put = keys / (time.perf_counter() - t)
        t = time.perf_counter()
        for k in mine[:20000]:
            s.get(k)
        get = (time.perf_counter() - t) / min(20000, keys) * 1e6
        t = time.perf_counter()
        walked = sum(len(s.key_hashes(*ring.partition_range(p))) for p in range(256))
        walk = (time.perf_counter() - t) * 1000
        run_len = s._kd.longest_run() if hasattr(s._kd, "longest_run") else "n/a"
        s.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert walked == keys
    return (f"{nodes:>2} nodes, {len(held):>3}/256 partitions held, {keys} keys: put "
            f"{put:>10,.0f}/s  get {get:.2f} us  longest run {run_len}  walk {walk:.0f} ms")


def main() -> None:
    keys = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    sizes = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [3, 5, 8, 12]
    for n in sizes:
        print(run(keys, n), flush=True)


if __name__ == "__main__":
    main()
