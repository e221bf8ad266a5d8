"""How soon a new cluster's gets take the one-round-trip path (client-coordinated owner reads).

Starts a fresh 3-node local cluster (N=3, R=2) as `zkv local up` does and waits until every
node is ready, puts `--keys` keys, then runs sequential gets from one `zkv.Client` for
`--seconds`, printing per second how many were answered by the key's owners directly (the
rest went through a coordinator: twice the latency) and the get p50. Meanwhile it notes when
no node had partitions left whose copies do not count for a client's own reads (a forming
cluster's joiners gained every partition: verified once the change settled and each was
exchanged with the other owners). Prints both times, counted from "ready".
`--refill-skip 10` runs the client as it was before (a node that said its copies do not
count yet was left out of owner reads for 10 s, not 1).

    python benchmarks/owner_reads_after_start.py [--seconds 20] [--keys 200] [--refill-skip S]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import zkv.client.core as client_core
from zkv.client import Client
from zkv.errors import ZkvError
from zkv.local import LocalCluster

FULL = 0.99  # a second with at least this share of owner reads counts as "back"


def _verified(cluster: LocalCluster) -> bool:
    for n in cluster.nodes:
        try:
            ae = cluster.status_of(n, 1.0).get("antientropy") or {}
        except ZkvError:
            return False
        if ae.get("fresh_partitions_left", 0) or ae.get("refill_partitions_left", 0):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--refill-skip", type=float, default=client_core.REFILL_SKIP)
    args = ap.parse_args(argv)
    client_core.REFILL_SKIP = args.refill_skip
    with tempfile.TemporaryDirectory(prefix="zkv-owner-reads-") as root, \
            LocalCluster(3, root, base_port=None, n=3) as cluster:
        cluster.wait_ready()
        ready = time.monotonic()
        with Client(cluster.endpoints) as c:
            counts = {"owner": 0, "coordinator": 0}
            plan = c.core._owner_read

            def counted(*a, **kw):  # the client's owner-read step, its outcome counted
                got = yield from plan(*a, **kw)
                counts["owner" if got is not None else "coordinator"] += 1
                return got

            c.core._owner_read = counted  # type: ignore[method-assign]
            keys = [b"start%d" % i for i in range(args.keys)]
            for k in keys:
                c.put(k, b"v" * 100)
            verified_at = back_at = None
            second, lat, i = 1, [], 0
            next_check = time.monotonic()
            while time.monotonic() - ready < args.seconds:
                t0 = time.monotonic()
                c.get(keys[i % len(keys)], r=2)
                lat.append(time.monotonic() - t0)
                i += 1
                if verified_at is None and t0 >= next_check:
                    next_check = t0 + 0.25
                    if _verified(cluster):
                        verified_at = time.monotonic() - ready
                if t0 - ready >= second:
                    total = counts["owner"] + counts["coordinator"]
                    share = counts["owner"] / total if total else 0.0
                    lat.sort()
                    print(f"{second:3d} s: {counts['owner']:5d} of {total:5d} gets by owner reads"
                          f"  get p50 {lat[len(lat) // 2] * 1000:.3f} ms")
                    if back_at is None and share >= FULL:
                        back_at = second
                    counts = {"owner": 0, "coordinator": 0}
                    lat, second = [], second + 1
        verified = "never" if verified_at is None else f"{verified_at:.1f} s after ready"
        print(f"verified everywhere: {verified}; owner reads back (>= {FULL:.0%} of a second's "
              f"gets) in the second ending {back_at} s after ready")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
