"""What purging a dropped or truncated namespace (zkv/node/namespaces.py, "drop") costs a node,
against a full LMDB cursor scan of the same keys and values in the same run.

One LogStore (sync=none) holds `--keys` keys: half in the default namespace, a quarter in a
namespace's generation 0 (then truncated: dead) and a quarter in its generation 1 (live),
each a version of a ~100-byte value as a node stores it. A full pass of `Sweep.step` with the
registry's `is_dead` (as Background runs it while purging) is timed over it: it judges every
namespaced key by its prefix alone and drops the dead ones through `Replica.drop_expired`
(the engine's delete, the observers told). Reported: keys examined per second over LMDB's
cursor rate, and dead versions purged per second. Also the read path: `Replica.read` of a live
namespaced key with the node's `expired` hook (NodeCore.expired) in a registry that never
dropped anything, and in one where that namespace was truncated (each read asks is_dead
first). Nothing is asserted but the counts.

    python benchmarks/purge_sweep.py [--keys 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lmdb

from zkv._core import dvv
from zkv.node import expiry
from zkv.node import namespaces as nsm
from zkv.node.replica import Replica
from zkv.storage import LogStore

VALUE = dvv.update(None, b"", b"v" * 100, "n1").encode()


def _hook(reg: nsm.Registry):
    """NodeCore.expired over `reg`, as the node builds it."""
    def expired(skey: bytes, encoded: bytes) -> bool:
        if reg.dead_gens and reg.is_dead(skey):
            return True
        rule = reg.expiry_of(skey)
        return rule is not None and expiry.expired(encoded, rule[0], 0, rule[1])
    return expired


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    quarter = args.keys // 4
    for run in range(args.runs):
        reg = nsm.Registry.for_cluster(3, 2, 2)
        old = reg.create("carts", 3, members=3, created=1, creator="n1")
        new = reg.truncate("carts", created=2, creator="n1")
        with tempfile.TemporaryDirectory(prefix="zkv-purge-") as root:
            store = LogStore(f"{root}/store", sync="none")
            env = lmdb.open(f"{root}/lmdb", map_size=4 << 30, sync=False, writemap=True)
            items = [(b"plain:%012d" % i, VALUE) for i in range(args.keys - 2 * quarter)]
            items += [(nsm.storage_key(old, b"c:%012d" % i), VALUE) for i in range(quarter)]
            items += [(nsm.storage_key(new, b"c:%012d" % i), VALUE) for i in range(quarter)]
            store.put_many(items)
            with env.begin(write=True) as txn:
                for k, v in items:
                    txn.put(k, v)
            replica = Replica("n1", store)
            replica.dead = reg.is_dead
            t0 = time.perf_counter()
            with env.begin() as txn:
                n_lmdb = sum(1 for _k, v in txn.cursor() if v)
            lmdb_rate = n_lmdb / (time.perf_counter() - t0)
            sweep = expiry.Sweep()
            t0 = time.perf_counter()
            while sweep.passes == 0:
                sweep.step(store, reg.expiry_of, 0, replica.drop_expired, 1.0, 0, reg.is_dead)
            took = time.perf_counter() - t0
            assert replica.purged == quarter and len(store) == args.keys - quarter
            rate = args.keys / took
            print(f"run {run + 1}: purge pass over {args.keys:,} keys ({replica.purged:,} dead "
                  f"purged) in {took:.3f} s: {rate:,.0f} keys/s examined, "
                  f"{replica.purged / took:,.0f} purges/s  |  LMDB cursor {lmdb_rate:,.0f} "
                  f"keys/s  |  ratio {rate / lmdb_rate:.3f}x")
            live = [nsm.storage_key(new, b"c:%012d" % i) for i in range(min(20_000, quarter))]
            # the same live keys, judged by a registry that never dropped anything (a cluster
            # without drops: no dead-key check) and by the truncated one
            timings = {}
            for name, r in (("never dropped", nsm.Registry.for_cluster(3, 2, 2)),
                            ("truncated", reg)):
                replica.expired = _hook(r)
                t0 = time.perf_counter()
                for k in live:
                    assert replica.read(k)
                timings[name] = (time.perf_counter() - t0) / len(live) * 1e6
            print(f"       Replica.read of a live key: {timings['never dropped']:.2f} us in a "
                  f"cluster that never dropped, {timings['truncated']:.2f} us in the truncated "
                  f"namespace (+{timings['truncated'] - timings['never dropped']:.2f} us for "
                  f"the dead-key check)")
            store.close()
            env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
