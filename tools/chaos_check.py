"""A chaos check on real processes: a local cluster under cart workloads while nodes join,
one leaves, and others are paused (SIGSTOP), killed (SIGKILL) or stopped (SIGTERM) and started
again; then every acknowledged add is read back at R=3 and listed by items() at R=3, and every
node is accounted for.

The counterpart of tools/simulate.py where the simulator cannot look: libzmq, the kernel's
sockets, signals, the engine's files (it found a node aborted by libzmq, RESULTS.md). Choices
come from --seed, timing is real: a failing seed does not replay exactly, so the cluster's
directory (its logs) is kept when something fails.

    python tools/chaos_check.py [--seed 1] [--nodes 4] [--joins 2] [--duration 60]
                                [--writers 4] [--carts 40] [--sync none] [--dir DIR] [--keys]
                                [--rejoin]

Each writer thread adds its own items to random carts: get, union of the siblings' items plus
one new item, put with the get's context (half the writers route by token, half send to any
node). Faults hit one node at a time and never the one leaving. `--keys`: a keyed cluster
(`zkv keygen`: CurveZMQ on every connection, sealed contexts), the writers with the admin key.
`--rejoin`: once the leaver has exited, it is started again on an empty data dir under its old
id (a machine reinstalled) and joins again while the faults and writers go on; the check waits
for it to be a valid member. Exit status 0 when every acknowledged add is there, no node died
that was not killed, the leaver exited 0 (and with --rejoin is valid again); else 1, with
what failed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time

from zkv import security
from zkv.client import Client
from zkv.errors import ZkvError
from zkv.local import LocalCluster

SETTLE = 180.0  # seconds to wait, after the faults, for every acknowledged add to be readable


def items(values: list[bytes]) -> set[bytes]:
    """The items of a cart: the union of its siblings' comma-separated items."""
    out: set[bytes] = set()
    for v in values:
        out.update(x for x in v.split(b",") if x)
    return out


class Writers:
    """Threads adding items to carts; `acked` holds each cart's acknowledged items."""

    def __init__(self, cluster: LocalCluster, n: int, carts: list[bytes], seed: int) -> None:
        self.keys = cluster.client_keys
        self.acked: dict[bytes, set[bytes]] = {c: set() for c in carts}
        self.ok = self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True,
                                          args=(cluster.endpoints, carts, seed * 100 + w,
                                                "token" if w % 2 == 0 else "any", w))
                         for w in range(n)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:  # (started)
                t.join()

    def _run(self, endpoints: list[str], carts: list[bytes], seed: int, routing: str,
             w: int) -> None:
        rng = random.Random(seed)
        with Client(endpoints, timeout=2.0, routing=routing, keys=self.keys) as c:
            i = 0
            while not self._stop.is_set():
                cart, item = rng.choice(carts), b"w%d-%d" % (w, i)
                i += 1
                try:
                    got = c.get(cart)
                    c.put(cart, b",".join(sorted(items(got.values) | {item})), got.context)
                except ZkvError:
                    with self._lock:
                        self.failed += 1
                    continue
                with self._lock:
                    self.acked[cart].add(item)
                    self.ok += 1


class Chaos:
    """One fault at a time on a random live node (never one in `spare`), logged."""

    def __init__(self, cluster: LocalCluster, rng: random.Random) -> None:
        self.cluster, self.rng = cluster, rng
        self.log: list[str] = []
        self.t0 = time.monotonic()
        self.spare: set[str] = set()

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:7.1f}s {what}"
        self.log.append(line)
        print(line, flush=True)

    def run(self, seconds: float) -> None:
        cl, rng = self.cluster, self.rng
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 2.0))
            live = [n.id for n in cl.nodes if n.alive() and n.id not in self.spare]
            if not live:
                continue
            node, act = rng.choice(live), rng.choice(["pause", "kill", "term"])
            if act == "pause":
                hold = rng.uniform(0.3, 3.0)
                self.note(f"pause {node} for {hold:.1f}s")
                cl.pause(node)
                time.sleep(hold)
                cl.resume(node)
            else:
                down = rng.uniform(0.2, 2.0)
                self.note(f"{'SIGKILL' if act == 'kill' else 'SIGTERM'} {node}, "
                          f"start it again {down:.1f}s later")
                if act == "kill":
                    cl.kill(node)
                else:
                    cl.terminate(node)
                time.sleep(down)
                cl.restart(node, 60)
            self.check_alive()

    def check_alive(self) -> None:
        """A node not being faulted that is gone died by itself: the check fails."""
        for n in self.cluster.nodes:
            if n.proc is not None and not n.alive() and n.id not in self.spare:
                raise SystemExit(f"{n.id} died by itself (exit status {n.proc.returncode}):\n"
                                 f"{self.cluster.tail(n)}")


def wait_valid(cluster: LocalCluster, node_id: str, timeout: float) -> bool:
    """Whether every live node's status shows `node_id` valid within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(next((m["status"] for m in cluster.status_of(n, 2.0)["members"]
                         if m["id"] == node_id), None) == "valid"
                   for n in cluster.nodes if n.alive()):
                return True
        except ZkvError:
            pass
        time.sleep(0.5)
    return False


def check(cluster: LocalCluster, acked: dict[bytes, set[bytes]]) -> dict[bytes, object]:
    """Every cart read at R=3, then listed with its values (Client.items at R=3), until all
    its acknowledged items are there both ways (SETTLE seconds at most); what is still
    missing (or the last error) per cart."""
    live = [n.listen for n in cluster.nodes if n.alive()]
    deadline = time.monotonic() + SETTLE
    missing: dict[bytes, object] = {}
    with Client(live, timeout=5.0, keys=cluster.client_keys) as c:
        while True:
            missing = {}
            for cart, want in acked.items():
                try:
                    lost = want - items(c.get(cart, r=3).values)
                except ZkvError as exc:
                    missing[cart] = f"{type(exc).__name__}: {exc}"
                    continue
                if lost:
                    missing[cart] = sorted(lost)
            if not missing:  # and a listing with the values (items() at R=3) has them too
                try:
                    listed = dict(c.items(r=3))
                except ZkvError as exc:
                    missing[b"(items listing)"] = f"{type(exc).__name__}: {exc}"
                else:
                    for cart, want in acked.items():
                        lost = want - items(listed.get(cart, []))
                        if lost:
                            missing[cart] = f"not in the items() listing: {sorted(lost)}"
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=4, help="nodes at the start (N=3)")
    ap.add_argument("--joins", type=int, default=2, help="nodes that join during the run")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of faults in all")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--carts", type=int, default=40)
    ap.add_argument("--sync", default="none", choices=["none", "interval", "always"])
    ap.add_argument("--dir", help="the cluster's directory (default: a new temporary one)")
    ap.add_argument("--rejoin", action="store_true", help="the leaver starts again on an empty "
                    "data dir and joins again under its old id")
    ap.add_argument("--keys", action="store_true", help="a keyed cluster (zkv keygen in the "
                    "cluster's directory)")
    args = ap.parse_args(argv)
    if args.nodes < 3:
        ap.error("--nodes: at least 3 (N=3, and one of them leaves)")
    root = args.dir or tempfile.mkdtemp(prefix="zkv-chaos-")
    os.makedirs(root, exist_ok=True)
    keys = None
    if args.keys:
        keys = os.path.join(root, "keys")
        security.keygen(keys)
    cluster = LocalCluster(args.nodes, root, base_port=None, n=3, sync=args.sync, keys=keys)
    chaos = Chaos(cluster, random.Random(args.seed))
    writers = Writers(cluster, args.writers, [b"cart%d" % i for i in range(args.carts)],
                      args.seed)
    ok = False
    try:
        cluster.start()
        cluster.wait_converged(60)
        writers.start()
        phase = args.duration / (args.joins + 2)
        chaos.run(phase)
        for _ in range(args.joins):
            n = cluster.add_node(60)
            chaos.note(f"{n.id} joins")
            chaos.spare = {n.id}  # (not faulted while it joins)
            chaos.run(phase)
            chaos.spare = set()
        leaver = cluster.nodes[1].id
        chaos.spare = {leaver}
        left: list[int | None] = []
        chaos.note(f"{leaver} leaves")
        t = threading.Thread(target=lambda: left.append(cluster.remove_node(leaver, 300)),
                             daemon=True)
        t.start()
        chaos.run(phase)
        t.join(300)
        chaos.note(f"{leaver} exited with status {left[0] if left else 'none (still there)'}")
        chaos.check_alive()
        rejoined = True
        if args.rejoin and left == [0]:
            node = cluster.node(leaver)
            shutil.rmtree(node.data_dir)
            chaos.note(f"{leaver} starts again on an empty data dir")
            cluster.restart(leaver, 60)
            chaos.run(phase)
            rejoined = wait_valid(cluster, leaver, SETTLE)
            chaos.note(f"{leaver} is {'a valid member again' if rejoined else 'NOT a member'}")
            chaos.check_alive()
        writers.stop()
        chaos.note(f"writers: {writers.ok} adds acknowledged, {writers.failed} failed")
        missing = check(cluster, writers.acked)
        ok = not missing and left == [0] and rejoined
        if missing:
            for cart, what in sorted(missing.items()):
                print(f"MISSING {cart!r}: {what}")
        print(f"seed {args.seed}: " + ("every acknowledged add is there, every node accounted "
                                       "for" if ok else "FAILED"))
    finally:
        writers.stop()
        cluster.stop()
        if ok and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            print(f"the cluster's directory (logs) is kept: {root}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
