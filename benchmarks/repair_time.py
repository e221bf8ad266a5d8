"""How long `zkv repair` takes on a cluster whose replicas agree: the whole command, as an
operator waits for it.

Starts a fresh local cluster (`--nodes`, N=3) as `zkv local up` does, waits until every node
is ready, puts `--keys` keys at W=3, then runs `zkv repair` (every partition of the first
node) `--runs` times, each timed from the command's start to its return, and prints each
time with the command's last line. Run it with an older checkout first on PYTHONPATH to time
that code the same way.

    python benchmarks/repair_time.py [--nodes 3] [--keys 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

from zkv.cli import main as cli
from zkv.client import Client
from zkv.local import LocalCluster


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zkv-repair-time-") as root, \
            LocalCluster(args.nodes, root, base_port=None, n=3) as cluster:
        cluster.wait_ready()
        with Client(cluster.endpoints) as c:
            for i in range(args.keys):
                c.put(b"repair%d" % i, b"v" * 100, w=3)
        for _ in range(args.runs):
            out = io.StringIO()
            t0 = time.monotonic()
            with contextlib.redirect_stdout(out):
                rc = cli(["repair", "--node", cluster.endpoints[0]])
            took = time.monotonic() - t0
            last = out.getvalue().strip().splitlines()[-1]
            print(f"zkv repair: {took:.2f} s (exit {rc})  {last}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
