"""The longest puts while a store writes several segments: what a segment rotation costs the
writer's thread, beside LMDB's longest puts in the same run.

    python benchmarks/store_rotation.py [--mib 256] [--value 1024]
    python benchmarks/store_rotation.py --mib 512 --keys 20000 --mbps 50   # with compactions

A LogStore (sync="none", 64 MiB segments) and an LMDB environment (sync=False, its usual
bulk setting) each take --mib MiB of --value-byte puts, over fresh keys or (--keys) over that
many keys again and again, which makes the LogStore compact in the background; --mbps paces
the writes (0: flat out). Each zkv put is followed by the `write_out()` a node does every loop
turn. Printed for each: puts per second, the p50, p99.9 and longest put on the wall clock and
on the writer thread's CPU clock, and how many puts took over 5 ms. A put that fills a
segment rotates it; the old segment's fsync and hints file (a walk of the whole 64 MiB) ran
inside that put before the sealer thread (`zkv/storage/logstore.py`, `_Sealer`). Run it
against another checkout with PYTHONPATH=<checkout> to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import lmdb

from zkv.storage import LogStore


def _report(name: str, walls: list[float], cpus: list[float], seconds: float) -> None:
    walls, cpus = sorted(walls), sorted(cpus)
    n = len(walls)

    def q(xs: list[float], p: float) -> float:
        return xs[min(n - 1, int(p * n))] * 1000

    print(f"{name:6} {n / seconds:9,.0f} puts/s  wall p50 {q(walls, .5):.3f} p99.9 "
          f"{q(walls, .999):.3f} max {walls[-1] * 1000:.1f} ms  CPU max {cpus[-1] * 1000:.1f} ms"
          f"  puts over 5 ms: {sum(1 for w in walls if w > 0.005)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB written to each store")
    ap.add_argument("--value", type=int, default=1024, help="bytes per value")
    ap.add_argument("--keys", type=int, default=0, help="distinct keys (0: every put a new one)")
    ap.add_argument("--mbps", type=float, default=0, help="MB/s written at most (0: flat out)")
    args = ap.parse_args(argv)
    count = (args.mib << 20) // (args.value + 32)
    value = os.urandom(args.value)
    keys = [b"key:%012d" % (i % args.keys if args.keys else i) for i in range(count)]
    wall, cpu = time.perf_counter, time.thread_time
    per_s = args.mbps * 1e6 / (args.value + 32) if args.mbps else 0.0

    def pace(i: int, t0: float) -> None:  # every 500 puts: wait until their time has come
        if per_s and i % 500 == 0:
            ahead = t0 + i / per_s - wall()
            if ahead > 0:
                time.sleep(ahead)
    root = tempfile.mkdtemp(prefix="zkv-rotation-")
    try:
        store = LogStore(os.path.join(root, "zkv"), sync="none")
        put, write_out = store.put, store.write_out
        walls, cpus = [], []
        t0 = wall()
        for i, k in enumerate(keys):
            pace(i, t0)
            w, c = wall(), cpu()
            put(k, value)
            write_out()
            walls.append(wall() - w)
            cpus.append(cpu() - c)
        seconds = wall() - t0
        stats = store.stats()
        store.close()
        _report("zkv", walls, cpus, seconds)
        print(f"       ({stats['segments']} segments at the end, {stats['compactions']} "
              "compactions)")
        env = lmdb.open(os.path.join(root, "lmdb"), map_size=4 * (args.mib << 20), sync=False,
                        writemap=True)
        walls, cpus = [], []
        t0 = wall()
        for i, k in enumerate(keys):
            pace(i, t0)
            w, c = wall(), cpu()
            with env.begin(write=True) as txn:
                txn.put(k, value)
            walls.append(wall() - w)
            cpus.append(cpu() - c)
        seconds = wall() - t0
        env.close()
        _report("lmdb", walls, cpus, seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
