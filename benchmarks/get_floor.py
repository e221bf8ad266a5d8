"""Where a sequential get's latency goes: the nodes' part against the client's, beside an echo.

Starts a fresh 3-node local cluster (N=3, R=2), puts `--keys` keys of one `--value`-byte value
each, then from one process runs `--blocks` rounds of `--per-block` samples of each, in turn:

- echo: a raw pyzmq DEALER round trip to an echo ROUTER in another process (the baseline of
  issue 12's "sequential get p50 vs raw echo p50");
- get:  `zkv.Client.get(key)` (R=2: two owner reads, zkv.client.core);
- raw2: a Read to each of the key's first two owners on plain DEALERs, both answers awaited
  (what the nodes do for a get, with no client logic);
- raw1: a Read to its first owner only.

The first two rounds warm up and are not counted. Prints each p50 and its ratio to the echo's;
get - raw2 is the client's share of a get.

    python benchmarks/get_floor.py [--keys 200] [--value 1024] [--blocks 12] [--per-block 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import zmq

from zkv import wire
from zkv.bench.baselines import EchoServer
from zkv.client import Client
from zkv.local import LocalCluster

WARM_BLOCKS = 2
SETTLE = 5.0  # seconds between loading the keys and the first sample


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--value", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--per-block", type=int, default=200)
    args = ap.parse_args(argv)
    if args.blocks <= WARM_BLOCKS or args.per_block < 1:
        ap.error(f"--blocks above {WARM_BLOCKS} (the first {WARM_BLOCKS} warm up and are not "
                 "kept) and --per-block at least 1")
    root = tempfile.mkdtemp(prefix="zkv-get-floor-")
    cluster = LocalCluster(3, root, base_port=None, n=3)
    ctx = zmq.Context()
    try:
        cluster.start()
        with Client(cluster.endpoints) as c, EchoServer() as es:
            keys = [b"floor%d" % i for i in range(args.keys)]
            for k in keys:
                c.put(k, os.urandom(args.value))
            ring, endpoint_of = c.core.ring, c.core.endpoints
            echo = ctx.socket(zmq.DEALER)
            echo.connect(es.endpoint)
            socks = {ep: ctx.socket(zmq.DEALER) for ep in cluster.endpoints}
            for ep, s in socks.items():
                s.connect(ep)
            poller = zmq.Poller()
            for s in socks.values():
                poller.register(s, zmq.POLLIN)
            time.sleep(SETTLE)  # (the new cluster's first exchanges and handoffs run meanwhile)
            owners = {k: [socks[endpoint_of[m]] for m in ring.preflist(ring.partition(k))[:2]]
                      for k in keys}
            reads = {k: wire.encode_one(wire.Read(1, k, "")) for k in keys}
            payload = os.urandom(args.value + 64)

            def do_echo(_k: bytes) -> None:
                echo.send(payload)
                echo.recv()

            def raw2(k: bytes) -> None:
                for s in owners[k]:
                    s.send(reads[k])
                got = 0
                while got < 2:
                    for s, _ in poller.poll(2000):
                        s.recv()
                        got += 1

            def raw1(k: bytes) -> None:
                s = owners[k][0]
                s.send(reads[k])
                s.recv()

            kinds = {"echo": do_echo, "get": c.get, "raw2": raw2, "raw1": raw1}
            samples: dict[str, list[float]] = {k: [] for k in kinds}
            now = time.perf_counter
            for b in range(args.blocks):
                for name, fn in kinds.items():
                    for j in range(args.per_block):
                        k = keys[j % len(keys)]
                        t0 = now()
                        fn(k)
                        if b >= WARM_BLOCKS:
                            samples[name].append(now() - t0)
            p50 = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
            print("  ".join(f"{k} p50 {v * 1000:.3f} ms" for k, v in p50.items()) + "   " +
                  " ".join(f"{k}/echo {p50[k] / p50['echo']:.2f}" for k in ("get", "raw2", "raw1")))
    finally:
        ctx.destroy(0)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
