"""What `LogStore.snapshot` (`zkv snapshot`) costs: the time a snapshot holds the store (and
so a node's loop, which takes it synchronously) against the number of segments it links.

Fills a LogStore with `--keys` keys of 1000-byte values in segments of `--segment-mib`, waits
for the sealer, then times `--runs` snapshots of it, each into a new directory. No baseline:
the figure is a time per segment linked, reported in README's "Backups".

    python benchmarks/snapshot_cost.py [--keys 1000000] [--segment-mib 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from zkv.storage import LogStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--segment-mib", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    value = b"x" * 1000
    with tempfile.TemporaryDirectory(prefix="zkv-snapshot-cost-") as root:
        store = LogStore(f"{root}/store", segment_bytes=args.segment_mib << 20,
                         compact_dead_ratio=None)
        for i in range(args.keys):
            store.put(b"k%d" % i, value)
        time.sleep(1)  # (the sealer's hints files for the last segments)
        segs = sum(1 for f in os.listdir(f"{root}/store") if f.endswith(".data"))
        for i in range(args.runs):
            t0 = time.perf_counter()
            info = store.snapshot(f"{root}/snap{i}")
            took = time.perf_counter() - t0
            print(f"{segs} segments, {info['bytes'] / 1e6:.0f} MB: snapshot in {took * 1000:.1f} "
                  f"ms ({info['files']} files linked, {took / max(segs, 1) * 1e6:.0f} us a "
                  f"segment)")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
