"""What a read past the active segment's mapping costs the reading thread, as the segment grows.

    python benchmarks/store_remap.py [--mib 48]

A LogStore (sync="none", 64 MiB segments) takes 1 KiB puts over 2,000 keys, each written
out and followed by two reads (a random key's, then the key just written: the cluster's
read-after-write pattern), until --mib MiB are written. A read of a record past the active
segment's mapping remaps the segment (`LogStore._get_slow`): printed for each remap, the
reading thread's CPU and wall time in it and how much was mapped before; then their count
and total. Run it against another checkout with PYTHONPATH=<checkout> to compare.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

from zkv.storage import logstore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=48, help="MiB written")
    args = ap.parse_args(argv)
    remaps: list[tuple[float, float, int]] = []  # (CPU us, wall us, MiB mapped before)
    slow = logstore.LogStore._get_slow

    def timed(self, key, code):  # the class's: the store binds it when it opens
        mapped = self._kd.mapped_length(self._active.fid) if self._active else 0
        c, w = time.thread_time_ns(), time.perf_counter_ns()
        try:
            return slow(self, key, code)
        finally:
            remaps.append(((time.thread_time_ns() - c) / 1e3,
                           (time.perf_counter_ns() - w) / 1e3, mapped))

    logstore.LogStore._get_slow = timed  # type: ignore[method-assign]
    d = tempfile.mkdtemp(prefix="zkv-remap-")
    try:
        s = logstore.LogStore(d, sync="none")
        rng, value = random.Random(1), os.urandom(1024)
        keys = [b"k%d" % i for i in range(2000)]
        for _ in range(args.mib * 1024):
            key = keys[rng.randrange(len(keys))]
            s.put(key, value)
            s.write_out()
            s.get(keys[rng.randrange(len(keys))])
            if s.get(key) != value:
                raise SystemExit(f"read after write of {key!r} gave something else")
        s.close()
    finally:
        logstore.LogStore._get_slow = slow  # type: ignore[method-assign]
        shutil.rmtree(d, ignore_errors=True)
    for cpu, wall, mapped in remaps:
        print(f"  remap with {mapped / (1 << 20):5.1f} MiB mapped: CPU {cpu:7.1f} us, "
              f"wall {wall:7.1f} us")
    cpu = sum(r[0] for r in remaps)
    print(f"{args.mib} MiB written: {len(remaps)} reads past the mapping, {cpu / 1e3:.2f} ms of "
          f"the reader's CPU in them (largest {max((r[0] for r in remaps), default=0):.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
