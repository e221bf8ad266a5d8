"""Node and client CPU per operation under load, this code against another checkout, alternating.

`zkv bench --throughput` measures one code on a machine whose speed drifts by tens of percent
within a session; comparing two of its runs says more about the machine than the code.
Here each round starts a fresh 3-node cluster of one side, loads it with one AsyncClient
keeping `--inflight` operations in flight (50/50 get/put of 1 KiB values over 64 keys per
worker, each put carrying the context of its key's last put, N3 R2 W2), then the other
side; the order alternates per round. Reported per run: ops/s, the nodes' CPU per operation
(utime + stime of the three node processes from /proc, summed) and the client's
(time.process_time of its process, libzmq's I/O thread included).

    python benchmarks/compare_load.py --old-python OLD/venv/bin/python --old-src OLD \\
        [--rounds 3] [--inflight 64] [--ops 200]

Each side runs in a child process of its own python with its checkout first on sys.path and,
when the checkout has its extensions built in place, on its nodes' PYTHONPATH (as
benchmarks/compare_rtt.py does), so its nodes and client are that checkout's code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from compare_rtt import side_env

CHILD = r"""
import asyncio, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from zkv.client import AsyncClient
from zkv.local import LocalCluster
INFLIGHT, OPS = int(sys.argv[2]), int(sys.argv[3])
VALUE = bytes(range(256)) * 4

def node_ticks(c):
    t = 0
    for n in c.nodes:
        with open(f"/proc/{n.proc.pid}/stat") as f:
            p = f.read().rsplit(")", 1)[1].split()
        t += int(p[11]) + int(p[12])
    return t

async def main(c):
    async with AsyncClient(c.endpoints, timeout=5.0) as cl:
        ctxs, fails = {}, [0]
        async def worker(w, n):
            for i in range(n):
                k = b"k:%d:%d" % (w, i % 64)
                try:
                    if i % 2:
                        ctxs[k] = await cl.put(k, VALUE, context=ctxs.get(k), w=2)
                    else:
                        await cl.get(k, r=2)
                except Exception:
                    fails[0] += 1
        await asyncio.gather(*(worker(w, 20) for w in range(INFLIGHT)))  # warm-up
        n0, c0, t = node_ticks(c), time.process_time(), time.monotonic()
        await asyncio.gather(*(worker(w, OPS) for w in range(INFLIGHT)))
        el, ops = time.monotonic() - t, INFLIGHT * OPS
        tick = os.sysconf("SC_CLK_TCK")
        print(f"{ops / el:6.0f} ops/s  node CPU {1e6 * (node_ticks(c) - n0) / tick / ops:5.0f} us/op"
              f"  client CPU {1e6 * (time.process_time() - c0) / ops:4.0f} us/op  failed {fails[0]}")

with tempfile.TemporaryDirectory() as d:
    c = LocalCluster(3, d, base_port=None)
    c.start()
    try:
        asyncio.run(main(c))
    finally:
        c.stop()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-python", required=True)
    ap.add_argument("--old-src", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--ops", type=int, default=200, help="operations per worker per run")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = [("old", args.old_python, os.path.abspath(args.old_src)),
             ("new", sys.executable, here)]
    for rnd in range(args.rounds):
        for name, python, src in sides[::1 if rnd % 2 else -1]:
            out = subprocess.run([python, "-P", "-c", CHILD, src, str(args.inflight),
                                  str(args.ops)], capture_output=True, text=True,
                                 env=side_env(src), cwd=tempfile.gettempdir(), check=True)
            print(f"{name}  {out.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
