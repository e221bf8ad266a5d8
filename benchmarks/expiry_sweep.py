"""What the expiry sweep (zkv/node/expiry.py) costs a node, against a full LMDB cursor scan of
the same keys and values in the same run.

One LogStore (sync=none) holds `--keys` keys: half in the default namespace, half in an lww
namespace with a ttl (a quarter of all keys expired, a quarter not yet), each an lww version of
a ~100-byte value as a node stores it. A full pass of `Sweep.step` (the rounds one ttl takes)
is timed over it; it reads and judges every namespaced key, drops the expired ones through
`Replica.drop_expired` (the engine's delete, the observers told) and skips the default namespace's
keys with one byte compare each. Reported: keys examined per second over LMDB's cursor rate
(keys and values of the same store contents), and the expired versions dropped per second.
Also the read path: `Replica.read` of a key of the ttl namespace against one of an lww
namespace without a ttl (the verdict's cost per read). Nothing is asserted.

    python benchmarks/expiry_sweep.py [--keys 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lmdb

from zkv import hlc
from zkv._core import dvv
from zkv.node import expiry
from zkv.node import namespaces as nsm
from zkv.node.replica import Replica
from zkv.storage import LogStore

T0 = 1_800_000_000_000  # ms: the bench's wall clock at the sweep
TTL_S = 60


def _version(stamp_ms: int) -> bytes:
    return dvv.update(None, b"", hlc.pack(stamp_ms << 16) + b"v" * 100, "n1").encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    reg = nsm.Registry.for_cluster(3, 2, 2)
    sess = reg.create("sess", 3, conflicts="lww", ttl=TTL_S, members=3, created=1,
                      creator="n1")
    last = reg.create("last", 3, conflicts="lww", members=3, created=1, creator="n1")
    old, new = _version(T0 - 2 * TTL_S * 1000), _version(T0 - 1000)
    half = args.keys // 2
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="zkv-expiry-") as root:
            store = LogStore(f"{root}/store", sync="none")
            env = lmdb.open(f"{root}/lmdb", map_size=4 << 30, sync=False, writemap=True)
            items = [(b"plain:%012d" % i, new) for i in range(half)]
            items += [(nsm.storage_key(sess, b"s:%012d" % i), old if i % 2 else new)
                      for i in range(args.keys - half)]
            store.put_many(items)
            with env.begin(write=True) as txn:
                for k, v in items:
                    txn.put(k, v)
            replica = Replica("n1", store)
            t0 = time.perf_counter()
            with env.begin() as txn:
                n_lmdb = sum(1 for _k, v in txn.cursor() if v)
            lmdb_rate = n_lmdb / (time.perf_counter() - t0)
            sweep = expiry.Sweep()
            t0 = time.perf_counter()
            while sweep.passes == 0:
                sweep.step(store, reg.expiry_of, T0, replica.drop_expired, 1.0, TTL_S * 1000)
            took = time.perf_counter() - t0
            dropped = replica.expired_drops
            assert dropped == (args.keys - half) // 2, dropped
            rate = args.keys / took
            print(f"run {run + 1}: sweep pass over {args.keys:,} keys ({dropped:,} "
                  f"dropped) in {took:.3f} s: {rate:,.0f} keys/s examined, "
                  f"{dropped / took:,.0f} drops/s  |  LMDB cursor {lmdb_rate:,.0f} "
                  f"keys/s  |  ratio {rate / lmdb_rate:.3f}x")
            replica.expired = lambda key, enc: reg.expiry_of(key) is not None and \
                expiry.expired(enc, TTL_S * 1000, T0)
            with_ttl = [nsm.storage_key(sess, b"s:%012d" % i)  # (the live ones: even i)
                        for i in range(0, min(20_000, args.keys - half), 2)]
            without = [nsm.storage_key(last, b"l:%012d" % i) for i in range(10_000)]
            store.put_many([(k, new) for k in without])
            timings = {}
            for name, ks in (("ttl", with_ttl), ("no ttl", without)):
                t0 = time.perf_counter()
                for k in ks:
                    assert replica.read(k)
                timings[name] = (time.perf_counter() - t0) / len(ks) * 1e6
            print(f"       Replica.read: {timings['ttl']:.2f} us in the ttl namespace, "
                  f"{timings['no ttl']:.2f} us in an lww one without ttl "
                  f"(+{timings['ttl'] - timings['no ttl']:.2f} us for the verdict)")
            store.close()
            env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
