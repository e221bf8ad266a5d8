"""What sealed contexts cost a keyed cluster (zkv/node/seal.py): sequential get and put p50.

One keyed 3-node local cluster (`zkv keygen` keys, loopback), one sync Client with the admin
key, 200 keys of 1 KiB; each round is 2000 x (get, then put with the context the get returned),
as a read-modify-write does. Run it with each mode and compare, alternating (the machine
drifts):

    python benchmarks/seal_cost.py --context-seals off
    python benchmarks/seal_cost.py --context-seals require      # the default
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import zkv
from zkv import security
from zkv.local import LocalCluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context-seals", default="require", choices=["require", "accept", "off"])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="zkv-seal-cost-")
    keys = os.path.join(d, "keys")
    security.keygen(keys)
    cl = LocalCluster(3, os.path.join(d, "c"), base_port=None, keys=keys,
                      extra_args=["--context-seals", args.context_seals])
    cl.start()
    try:
        admin = os.path.join(keys, "clients", "admin")
        with zkv.Client(cl.endpoints, timeout=5.0, keys=admin) as c:
            for i in range(200):
                c.put(b"k%d" % i, b"v" * 1024, w=2)
            for _ in range(args.rounds):
                gets, puts = [], []
                for j in range(2000):
                    key = b"k%d" % (j % 200)
                    t = time.perf_counter()
                    got = c.get(key)
                    gets.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    c.put(key, b"w" * 1024, got.context, w=2)
                    puts.append(time.perf_counter() - t)
                print(f"{args.context_seals:8s} get p50 {statistics.median(gets) * 1e6:6.1f} us"
                      f"  put p50 {statistics.median(puts) * 1e6:6.1f} us"
                      f"  context {len(got.context)} B", flush=True)
    finally:
        cl.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
