"""Where a client's CPU goes per operation: its Python thread against libzmq's I/O thread.

    python benchmarks/client_threads.py [--ops 4000] [--keys 200]

One local 3-node cluster (loopback, free ports, a temp dir); 1 KiB values. The sync Client
runs sequential gets (R=2, owner reads: two Reads, one per owner) and sequential puts (W=2,
each with the context last seen); one AsyncClient runs a 50/50 mix with 16 and 64
operations in flight. Printed per operation: this process's CPU by thread kind
(`zkv.bench.cpu.thread_seconds`: "main" is the client's own thread, "zmq" libzmq's I/O
thread), from /proc, whose resolution is 10 ms: run enough operations (the default 4000
gives 2.5 us steps).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time

from zkv.bench.cpu import thread_seconds
from zkv.client import AsyncClient, Client
from zkv.local import LocalCluster

VALUE = bytes(range(256)) * 4


def _line(what: str, n: int, before: dict, after: dict, elapsed: float) -> str:
    per = {k: (after[k] - before[k]) / n * 1e6 for k in after}
    return (f"{what:<22} {n / elapsed:8.0f} ops/s  client CPU {sum(per.values()):6.1f} us/op "
            f"(main {per['main']:.1f}, libzmq I/O {per['zmq']:.1f}, other {per['other']:.1f})")


def _sync(endpoints: list[str], ops: int, keys: int) -> list[str]:
    out = []
    with Client(endpoints, timeout=5) as c:
        contexts = {}
        for i in range(keys):
            contexts[i] = c.put(b"k%d" % i, VALUE)
        for mode in ("get", "put"):
            t0, a = time.perf_counter(), thread_seconds([os.getpid()])
            for i in range(ops):
                k = i % keys
                if mode == "get":
                    contexts[k] = c.get(b"k%d" % k, r=2).context
                else:
                    contexts[k] = c.put(b"k%d" % k, VALUE, contexts[k], w=2)
            b, t1 = thread_seconds([os.getpid()]), time.perf_counter()
            assert a is not None and b is not None
            out.append(_line(f"sync {mode}", ops, a, b, t1 - t0))
    return out


async def _async(endpoints: list[str], ops: int, keys: int, inflight: int) -> str:
    rng = random.Random(inflight)
    async with AsyncClient(endpoints, timeout=5) as c:
        contexts = dict(enumerate(await asyncio.gather(
            *(c.put(b"k%d" % i, VALUE) for i in range(keys)))))
        done = [0]

        async def loop() -> None:
            while done[0] < ops:
                done[0] += 1
                k = rng.randrange(keys)
                if rng.random() < 0.5:
                    contexts[k] = (await c.get(b"k%d" % k, r=2)).context
                else:
                    contexts[k] = await c.put(b"k%d" % k, VALUE, contexts[k], w=2)

        t0, a = time.perf_counter(), thread_seconds([os.getpid()])
        await asyncio.gather(*(loop() for _ in range(inflight)))
        b, t1 = thread_seconds([os.getpid()]), time.perf_counter()
    assert a is not None and b is not None
    return _line(f"async 50/50 x {inflight}", done[0], a, b, t1 - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=4000, help="operations per row")
    ap.add_argument("--keys", type=int, default=200)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        cluster = LocalCluster(3, d, base_port=None)
        cluster.start()
        try:
            for line in _sync(cluster.endpoints, args.ops, args.keys):
                print(line, flush=True)
            for inflight in (16, 64):
                print(asyncio.run(_async(cluster.endpoints, args.ops, args.keys, inflight)),
                      flush=True)
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
