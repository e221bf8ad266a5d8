"""CPU an idle cluster spends: 3 local nodes, a few thousand keys written, then nothing.

    python benchmarks/bench_idle.py [--seconds 10] [--keys 2000]

Prints the CPU seconds per second (utime + stime from /proc) of the three node processes
summed, measured over `--seconds` after the writes settled. The nodes run the zkv this
process imports (they inherit PYTHONPATH): `PYTHONPATH=OTHER_CHECKOUT python
benchmarks/bench_idle.py` measures another checkout (with its extensions built in place).
What an idle node does: gossip (5 per second), anti-entropy rounds (one root check per peer
per round, 5 rounds per second), the background tick (20 per second).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from zkv.client import Client
from zkv.local import LocalCluster


def node_cpu(cluster: LocalCluster) -> float:
    ticks = 0
    for n in cluster.nodes:
        with open(f"/proc/{n.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / 100.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keys", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cluster = LocalCluster(3, d, base_port=None)
        cluster.start()
        try:
            with Client(cluster.endpoints) as c:
                for i in range(args.keys):
                    c.put(b"idle:%d" % i, b"v" * 100)
            time.sleep(5.0)  # hints, read repairs and the first exchanges settle
            cpu, t = node_cpu(cluster), time.monotonic()
            time.sleep(args.seconds)
            rate = (node_cpu(cluster) - cpu) / (time.monotonic() - t)
            print(f"idle: {rate:.3f} CPU-s/s summed over 3 nodes ({args.keys} keys, "
                  f"{args.seconds:g} s)")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
