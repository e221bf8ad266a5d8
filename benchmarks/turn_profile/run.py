"""Where a node's CPU goes per loop turn: a local 3-node cluster under a client, each node's
turn split into its parts by thread CPU time (sitecustomize.py beside this file), and its
longest turns on the wall clock against their CPU.

    python benchmarks/turn_profile/run.py [--ops 6000]
    python benchmarks/turn_profile/run.py --inflight 64 --rate 3000 [--seconds 15]

The client does 50/50 get/put of 1 KiB values, each put with the key's last context. By
default one operation at a time over 200 keys (the 1 x 1 cell of `zkv bench --throughput`: a
turn then handles about one frame). With --inflight K and --rate R: an AsyncClient with K
operations in flight over 2,000 keys, started on a schedule of R per second (`zkv bench`'s
paced cell), and the client's latency printed from the schedule and from the send, with its
CPU per operation; the nodes' figures are then the paced phase's (SIGUSR1 resets them once
the keys are written). Printed per node: CPU per turn and per call of each part, the share of
the process's CPU (libzmq's I/O thread and the fsync thread are the rest; "gc" is the
collector's passes, within any part), how long turns were busy on the wall clock, and the
longest turns' wall time against their CPU and what that CPU went to (a turn blocks only in
its poll, which is left out: the rest is time the node waited for a core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ["turn", "poll", "drain_ROUTER", "drain_other", "handle", "conns.tick", "core.tick",
         "flush", "send_frames", "persist", "gossip", "export", "background", "hint_sweep",
         "transfers", "gc"]
VALUE = bytes(1024)


def _sequential(endpoints: list[str], ops: int) -> str:
    from zkv.client import Client

    ctx: dict[bytes, bytes] = {}
    with Client(endpoints, timeout=5.0) as client:
        for i in range(ops):
            key = b"k%d" % (i % 200)
            if i % 2:
                ctx[key] = client.put(key, VALUE, context=ctx.get(key))
            else:
                client.get(key)
    return f"{ops} sequential operations (50/50 get/put, 1 KiB)"


async def _paced(endpoints: list[str], pids: list[int], inflight: int, rate: float,
                 seconds: float, keys: int = 2000) -> str:
    from zkv.client import AsyncClient

    async with AsyncClient(endpoints, timeout=5.0) as c:
        ctx: dict[int, bytes] = {}
        for lo in range(0, keys, 100):  # every key written once, before the clock starts
            got = await asyncio.gather(*(c.put(b"k%d" % k, VALUE) for k in range(lo, lo + 100)))
            ctx.update(zip(range(lo, lo + 100), got, strict=True))
        for pid in pids:  # the nodes' figures from here on (sitecustomize.py)
            os.kill(pid, signal.SIGUSR1)
        total = int(rate * seconds)
        start = time.monotonic() + 0.1
        nxt = [0]
        scheduled: list[float] = []  # latency from the operation's slot in the schedule
        sent: list[float] = []  # from its actual send (without the client's own lag)

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while nxt[0] < total:
                at = start + nxt[0] / rate
                nxt[0] += 1
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                t = time.monotonic()
                k = rng.randrange(keys)
                if rng.random() < 0.5:
                    ctx[k] = (await c.get(b"k%d" % k)).context
                else:
                    ctx[k] = await c.put(b"k%d" % k, VALUE, ctx[k])
                end = time.monotonic()
                scheduled.append(end - at)
                sent.append(end - t)

        cpu = time.process_time()
        await asyncio.gather(*(worker(i) for i in range(inflight)))
        cpu = time.process_time() - cpu
        elapsed = time.monotonic() - start
    q, qs = statistics.quantiles(scheduled, n=1000), statistics.quantiles(sent, n=1000)
    return (f"{total} operations paced at {rate:.0f}/s ({total / elapsed:.0f}/s done), "
            f"{inflight} in flight (50/50 get/put, 1 KiB): latency from the schedule p50 "
            f"{q[499] * 1e3:.2f} p99 {q[989] * 1e3:.2f} ms, from the send p50 "
            f"{qs[499] * 1e3:.2f} p99 {qs[989] * 1e3:.2f} p99.9 {qs[998] * 1e3:.2f} ms; "
            f"client CPU {cpu / total * 1e6:.0f} us/op")


def _report(out: str) -> None:
    for name in sorted(os.listdir(out)):
        rows, busy, longest = {}, [], []
        with open(os.path.join(out, name)) as f:
            for line in f:
                label, *nums = line.split()
                if label == "busy":
                    busy = [int(x) for x in nums]
                elif label == "longest":
                    parts = [kv.split("=") for kv in nums[2].split(",")] if len(nums) > 2 else []
                    longest.append((int(nums[0]), int(nums[1]),
                                    sorted(((int(v), k) for k, v in parts), reverse=True)))
                else:
                    rows[label] = (int(nums[0]), int(nums[1]))
        os.unlink(os.path.join(out, name))
        turns = rows["turn"][1]
        proc = rows["process"][0]
        print(f"node pid {name[:-4]}: {turns} turns, {proc / 1e6:.0f} ms of process CPU, "
              f"{rows['turn'][0] / proc:.0%} of it in turns")
        for label in PARTS:
            ns, calls = rows.get(label, (0, 0))
            if calls:
                print(f"  {label:13s} {ns / turns / 1000:6.1f} us per turn  "
                      f"{ns / calls / 1000:6.1f} us per call  {calls:7d} calls")
        edges = ["<50us"] + [f"<{50 << i}us" if 50 << i < 1000 else f"<{(50 << i) / 1000:g}ms"
                             for i in range(1, len(busy) - 1)] + ["longer"]
        print("  busy (wall)   " + "  ".join(f"{e} {n}" for e, n in zip(edges, busy, strict=True)
                                             if n))
        print("  longest turns (ms)")
        for w, c, parts in longest:
            spent = ", ".join(f"{k} {v / 1e6:.2f}" for v, k in parts)
            print(f"    {w / 1e6:6.2f} (CPU {c / 1e6:.2f}: {spent})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=6000, help="sequential operations")
    ap.add_argument("--inflight", type=int, default=0,
                    help="an AsyncClient with this many operations in flight, paced at --rate")
    ap.add_argument("--rate", type=float, default=3000.0, help="with --inflight: operations/s")
    ap.add_argument("--seconds", type=float, default=15.0, help="with --inflight: how long")
    args = ap.parse_args(argv)
    out = tempfile.mkdtemp(prefix="zkv-turns-")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ["ZKV_TURN_PROFILE"] = out  # the nodes inherit both
    from zkv.local import LocalCluster

    with tempfile.TemporaryDirectory() as data, LocalCluster(3, data, base_port=None) as cluster:
        if args.inflight:
            pids = [n.process.pid for n in cluster.nodes]
            what = asyncio.run(_paced(cluster.endpoints, pids, args.inflight, args.rate,
                                      args.seconds))
        else:
            what = _sequential(cluster.endpoints, args.ops)
    print(f"{what}; per node, thread CPU:")
    _report(out)
    os.rmdir(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
