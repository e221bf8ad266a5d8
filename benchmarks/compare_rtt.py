"""Sequential round trip of this code against another checkout, interleaved op by op.

Issue 9's goal is "bench_cluster.py within 5% of before, in the same run". On a shared 2-core
VM, two bench_cluster runs a minute apart differ by 30% or more, so an old-vs-new pair of
runs cannot resolve 5%. Here both clusters run at once, each with its own code and its own
sync client in a process of its own, and the driver alternates single operations between
them (in a random order per round): whatever load the machine has at a given moment falls on
both alike. Reported: p50 of each side, and the median of the per-round ratios new/old.

    python benchmarks/compare_rtt.py --old-python /path/to/old/venv/bin/python \\
        --old-src /path/to/old/checkout [--rounds 3000] [--nodes 5 --routing any]

Each side starts a 3-node (`--nodes`) LocalCluster (N=3; loopback, free ports) from its own
checkout (its
nodes import zkv from the checkout when its extensions are built there, e.g. an editable
install; else from what that python has installed), writes
the key at W=3, and then answers the driver's commands on stdin: "g" (a get at R=2) or "p"
(a put at W=2 carrying the previous put's context), one line each, with the elapsed
nanoseconds. The same 1 KiB value and 16-byte key as bench_cluster.py. `--routing any`: the
client sends each request to a random node, as behind a load balancer (with more nodes than
N, some of them own no copy of the key).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from zkv.client import Client
from zkv.local import LocalCluster
KEY = b"bench:cluster:01"
VALUE = bytes(range(256)) * 4
with tempfile.TemporaryDirectory() as d:
    c = LocalCluster(int(sys.argv[2]), d, base_port=None, n=3)
    c.start()
    try:
        c.wait_converged(60)
        with Client(c.endpoints, timeout=2.0, routing=sys.argv[3]) as cl:
            ctx = cl.put(KEY, VALUE, w=3)
            for _ in range(200):
                cl.get(KEY, r=2)
                ctx = cl.put(KEY, VALUE, context=ctx, w=2)
            print("ready", flush=True)
            for line in sys.stdin:
                t = time.perf_counter_ns()
                if line[0] == "g":
                    cl.get(KEY, r=2)
                else:
                    ctx = cl.put(KEY, VALUE, context=ctx, w=2)
                print(time.perf_counter_ns() - t, flush=True)
    finally:
        c.stop()
"""


def side_env(src: str) -> dict[str, str]:
    """The environment of a side's process (benchmarks/compare_load.py uses it too)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if glob.glob(os.path.join(src, "zkv", "_core", "*.so")):
        # a checkout with its extensions built in place: its nodes (started by LocalCluster
        # as `python -P -m zkv.node`) run its code too, not whatever zkv `python` has installed
        env["PYTHONPATH"] = src
    return env


def _side(python: str, src: str, nodes: int, routing: str) -> subprocess.Popen:
    env = side_env(src)
    p = subprocess.Popen([python, "-P", "-c", CHILD, src, str(nodes), routing],
                         stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise SystemExit(f"{python} ({src}): the cluster did not start")
    return p


def _op(p: subprocess.Popen, cmd: str) -> float:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(cmd + "\n")
    p.stdin.flush()
    return int(p.stdout.readline()) / 1000.0  # us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-python", required=True)
    ap.add_argument("--old-src", required=True, help="checkout the old side imports zkv from")
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=3, help="nodes per side's cluster (N=3)")
    ap.add_argument("--routing", choices=["token", "any"], default="token",
                    help="the client's routing: token (to the key's owners) or any")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"old": _side(args.old_python, os.path.abspath(args.old_src), args.nodes,
                          args.routing),
             "new": _side(sys.executable, here, args.nodes, args.routing)}
    rng = random.Random(args.seed)
    try:
        for cmd, name in (("g", "get r=2"), ("p", "put w=2")):
            times: dict[str, list[float]] = {"old": [], "new": []}
            ratios = []
            for _ in range(args.rounds):
                order = ["old", "new"]
                rng.shuffle(order)
                got = {s: _op(sides[s], cmd) for s in order}
                for s in got:
                    times[s].append(got[s])
                ratios.append(got["new"] / got["old"])
            old_p50 = statistics.median(times["old"])
            new_p50 = statistics.median(times["new"])
            old_p90 = statistics.quantiles(times["old"], n=10)[-1]
            new_p90 = statistics.quantiles(times["new"], n=10)[-1]
            print(f"{name}: p50 old {old_p50:.0f} us, new {new_p50:.0f} us, new/old of the p50s "
                  f"{new_p50 / old_p50:.3f}, median of the per-round ratios "
                  f"{statistics.median(ratios):.3f}; p90 old {old_p90:.0f} us, new "
                  f"{new_p90:.0f} us, mean old {statistics.fmean(times['old']):.0f} us, new "
                  f"{statistics.fmean(times['new']):.0f} us ({args.rounds} rounds)")
    finally:
        for p in sides.values():
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=60)


if __name__ == "__main__":
    main()
