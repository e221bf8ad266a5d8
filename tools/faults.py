"""Fault injection for a local cluster (`zkv local up`, LocalCluster): pause, resume or kill its
nodes with real signals, or run a seeded chaos loop of pauses. Every node is found through the
`NODE.pid` file LocalCluster writes beside its log, and checked to really be that zkv-node
before it is signalled.

    python tools/faults.py [--dir ./zkv-data] list
    python tools/faults.py pause node2 [--for 5]      # SIGSTOP (and SIGCONT after 5 s)
    python tools/faults.py resume node2               # SIGCONT
    python tools/faults.py kill node2                 # SIGKILL
    python tools/faults.py chaos --duration 60 [--max-pause 5] [--seed 1]
        # one node at a time, chosen by a seeded RNG, paused for a random while, always resumed
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import signal
import sys
import time


def nodes(directory: str) -> dict[str, int]:
    """{node id: pid} of the live zkv-node processes of the cluster in `directory`."""
    out = {}
    under = os.fsencode(os.path.join(os.path.abspath(directory), ""))
    for path in sorted(glob.glob(os.path.join(directory, "*.pid"))):
        node_id = os.path.basename(path)[:-4]
        try:
            with open(path) as fh:
                pid = int(fh.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except (OSError, ValueError):
            continue  # gone, or not ours any more
        # (its data dir under `directory` too: other clusters name their nodes node1.. as
        # well, and a stale pid file may name one of theirs once pids wrap)
        if b"zkv.node" in argv and node_id.encode() in argv and any(
                a.startswith(under) for a in argv):
            out[node_id] = pid
    return out


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def send(directory: str, node_id: str, sig: int) -> int:
    pids = nodes(directory)
    if node_id not in pids:
        print(f"faults: no live node {node_id!r} under {directory} (have: "
              f"{', '.join(pids) or 'none'})", file=sys.stderr)
        return 2
    os.kill(pids[node_id], sig)
    return 0


def chaos(directory: str, duration: float, max_pause: float, rng: random.Random) -> int:
    end = time.monotonic() + duration
    while time.monotonic() < end:
        pids = nodes(directory)
        if not pids:
            print("faults: no live nodes", file=sys.stderr)
            return 2
        node_id = rng.choice(sorted(pids))
        pause = min(rng.uniform(0.5, max_pause), max(0.0, end - time.monotonic()))
        print(f"pause {node_id} for {pause:.1f}s", flush=True)
        os.kill(pids[node_id], signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(pids[node_id], signal.SIGCONT)
        time.sleep(min(rng.uniform(0.5, max_pause), max(0.0, end - time.monotonic())))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="./zkv-data", help="the cluster's directory")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    for name in ("pause", "resume", "kill"):
        sp = sub.add_parser(name)
        sp.add_argument("node")
        if name == "pause":
            sp.add_argument("--for", dest="seconds", type=float, default=None)
    c = sub.add_parser("chaos")
    c.add_argument("--duration", type=float, default=60.0)
    c.add_argument("--max-pause", type=float, default=5.0)
    c.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    if args.cmd == "list":
        if not os.path.isdir(args.dir):
            print(f"faults: no cluster directory {args.dir} (--dir: a `zkv local up` one)",
                  file=sys.stderr)
            return 1
        for node_id, pid in nodes(args.dir).items():
            print(f"{node_id}\tpid {pid}\tstate {state(pid)}")
        return 0
    if args.cmd == "pause":
        rc = send(args.dir, args.node, signal.SIGSTOP)
        if rc == 0 and args.seconds is not None:
            try:
                time.sleep(args.seconds)
            finally:
                rc = send(args.dir, args.node, signal.SIGCONT)
        return rc
    if args.cmd == "resume":
        return send(args.dir, args.node, signal.SIGCONT)
    if args.cmd == "kill":
        return send(args.dir, args.node, signal.SIGKILL)
    return chaos(args.dir, args.duration, args.max_pause, random.Random(args.seed))


if __name__ == "__main__":
    sys.exit(main())
