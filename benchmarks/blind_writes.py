"""What blind writes to one key cost as its siblings pile up, and where --max-siblings stops them.

    python benchmarks/blind_writes.py [--puts 4200] [--value 100] [--max-siblings 100]

Starts a fresh 3-node local cluster (N=3, W=2, R=2) with `--max-siblings` (0: no limit, as
before the limit existed), then one sync client puts --puts values of --value random bytes to
one key, each without a context (a blind write: one more sibling each). At each power of two,
and at the first refusal, it prints that put's latency, then a get's, the sibling count and
the stored version's size. Last, a put with the key's context resolves them all. Run it
against another checkout with PYTHONPATH=<checkout> (and --max-siblings 0 there) to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from zkv.client import Client
from zkv.errors import InvalidRequest
from zkv.local import LocalCluster


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=4200)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--max-siblings", type=int, default=100)
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="zkv-blind-")
    extra = ["--max-siblings", str(args.max_siblings)] if args.max_siblings != 100 else []
    cluster = LocalCluster(3, root, base_port=None, n=3, extra_args=extra)
    now = time.perf_counter
    try:
        cluster.start()
        with Client(cluster.endpoints, timeout=10.0) as c:
            for i in range(args.puts):
                t0 = now()
                try:
                    c.put(b"hot", os.urandom(args.value))
                    refused = ""
                except InvalidRequest as exc:
                    refused = f"  REFUSED: {exc}"
                took = now() - t0
                if i & (i - 1) == 0 or refused:
                    t0 = now()
                    got = c.get(b"hot")
                    size = sum(len(v) for v in got.values)
                    print(f"put {i + 1:5d}: {took * 1e3:6.2f} ms   get {(now() - t0) * 1e3:6.2f} ms"
                          f"   {len(got.values):5d} siblings, {size:8d} value bytes{refused}",
                          flush=True)
                if refused:
                    break
            got = c.get(b"hot")
            t0 = now()
            c.put(b"hot", b"resolved", got.context)
            took = now() - t0
            print(f"a put with the context: {took * 1e3:.2f} ms, then "
                  f"{len(c.get(b'hot').values)} sibling(s)")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
