"""Where a node's CPU goes per loop turn: a local 3-node cluster under a sequential client,
each node's turn split into its parts by thread CPU time (sitecustomize.py beside this file).

    python benchmarks/turn_profile/run.py [--ops 6000]

The client does 50/50 get/put of 1 KiB values over 200 keys, each put with the key's last
context, one operation at a time (the 1 x 1 cell of `zkv bench --throughput`: a turn then
handles about one frame). Printed per node: CPU per turn and per call of each part, and
the share of the process's CPU (libzmq's I/O thread and the fsync thread are the rest).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ["turn", "poll", "drain_ROUTER", "drain_other", "handle", "conns.tick", "core.tick",
         "flush", "send_frames", "persist"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=6000)
    args = ap.parse_args(argv)
    out = tempfile.mkdtemp(prefix="zkv-turns-")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ["ZKV_TURN_PROFILE"] = out  # the nodes inherit both
    from zkv.client import Client
    from zkv.local import LocalCluster

    value = bytes(1024)
    with tempfile.TemporaryDirectory() as data, LocalCluster(3, data) as cluster, \
            Client(cluster.endpoints, timeout=5.0) as client:
        ctx: dict[bytes, bytes] = {}
        for i in range(args.ops):
            key = b"k%d" % (i % 200)
            if i % 2:
                ctx[key] = client.put(key, value, context=ctx.get(key))
            else:
                client.get(key)
    files = sorted(os.listdir(out))
    print(f"{args.ops} sequential operations (50/50 get/put, 1 KiB); per node, thread CPU:")
    for name in files:
        rows = {}
        with open(os.path.join(out, name)) as f:
            for line in f:
                label, ns, calls = line.split()
                rows[label] = (int(ns), int(calls))
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
    os.rmdir(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
