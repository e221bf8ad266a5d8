"""What listing a namespace's keys costs (`zkv keys`, Client.keys), against a full LMDB cursor
scan of the same keys in the same run.

Starts a local 3-node cluster (N=3, sync=none), blind-writes `--keys` keys of ~20 bytes with
100-byte values (put_many), then times `--runs` listings through `Client.keys()` (every ring
partition paged from one owner, each key's value read there to leave out tombstones) and as
many full scans of an LMDB environment holding the same keys and values (a cursor over keys and
values in one process: the floor of any listing that reads what it lists). The ratio is
keys/s of the cluster's listing over LMDB's; nothing is asserted.

Each run also times, on the same keys: `keys(r=2)` (each partition on two owners, unioned),
`items(r=1)` and `items()` (the values too, in one pass: the namespace's R, 2, merging two
owners' copies), and the two passes `zkv dump` made before items existed: `keys()` then
`get_many` at R of every 500 keys.

    python benchmarks/keys_listing.py [--keys 200000] [--runs 3] [--page 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lmdb

from zkv.client import Client
from zkv.local import LocalCluster

VALUE = b"v" * 100


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--page", type=int, default=1000)
    args = ap.parse_args(argv)
    keys = [b"listing:%012d" % i for i in range(args.keys)]
    with tempfile.TemporaryDirectory(prefix="zkv-keys-listing-") as root:
        env = lmdb.open(f"{root}/lmdb", map_size=4 << 30, sync=False, writemap=True)
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(k, VALUE)
        with LocalCluster(3, f"{root}/cluster", base_port=None, n=3, sync="none") as cluster:
            cluster.wait_ready()
            cluster.wait_changes_settled()  # (listings at r=2 need two owners that vouch)
            with Client(cluster.endpoints, timeout=10) as c:
                for i in range(0, len(keys), 1000):
                    c.put_many([(k, VALUE) for k in keys[i:i + 1000]], w=3)
                modes = {
                    "keys": lambda: sum(1 for _ in c.keys(page=args.page)),
                    "keys(r=2)": lambda: sum(1 for _ in c.keys(page=args.page, r=2)),
                    "items(r=1)": lambda: sum(1 for _ in c.items(page=args.page, r=1)),
                    "items() (r=2)": lambda: sum(1 for _ in c.items(page=args.page)),
                    "keys + get_many": lambda: _keys_then_get_many(c, args.page),
                }
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    with env.begin() as txn:
                        n_lmdb = sum(1 for _k, v in txn.cursor() if v)
                    lmdb_rate = n_lmdb / (time.perf_counter() - t0)
                    for name, run in modes.items():
                        t0 = time.perf_counter()
                        n_zkv = run()
                        zkv_s = time.perf_counter() - t0
                        assert n_zkv == n_lmdb == len(keys), (name, n_zkv, n_lmdb)
                        print(f"zkv {name:>16}: {n_zkv} keys in {zkv_s:.3f} s = "
                              f"{n_zkv / zkv_s:>9,.0f} keys/s  |  LMDB cursor scan: "
                              f"{lmdb_rate:,.0f} keys/s  |  ratio "
                              f"{(n_zkv / zkv_s) / lmdb_rate:.3f}x")
        env.close()
    return 0


def _keys_then_get_many(c: Client, page: int) -> int:
    """What `zkv dump` did before items(): list, then read every 500 keys with get_many."""
    found, batch = 0, []
    for key in c.keys(page=page):
        batch.append(key)
        if len(batch) == 500:
            found += sum(1 for r in c.get_many(batch) if r.found)
            batch = []
    return found + (sum(1 for r in c.get_many(batch) if r.found) if batch else 0)


if __name__ == "__main__":
    raise SystemExit(main())
