"""What one node's Python spends per message on the hot paths, with nothing else running.

One `NodeCore` of a 3-node simulated cluster (tests/sim: no sockets, no faults, its store the
simulator's in-memory one) is handed frames as its transport would hand them, and
`take_output()` is called after each frame as at the end of a loop turn. Measured per
operation, best of `--rounds` passes over `--keys` keys the node owns, 1 KiB values:

- replica write: a frame of RPut (a peer coordinator's fan-out), each a newer version;
- coordinated put: a client's Put with the context of the key's last write (the local write,
  two RPuts out), then its two acknowledgements (RPutOk from each peer, the client's reply);
- owner read: a client's Read (client-coordinated get).

Each in frames of 1 and of `--batch` operations. The figures are the node's own Python and
the C it calls (DVV, Merkle, wire structs), without ZeroMQ, the kernel or other processes:
the part of a real node's CPU per operation that a C per-operation path would replace.
Compare two checkouts by running it with each first on sys.path (PYTHONPATH=checkout).
`--engine logstore`: the measured node's store is a real LogStore in a temporary directory,
opened as a node opens it (`zkv/node/stores.py`), instead of the simulator's in-memory one.

    python benchmarks/node_paths.py [--rounds 5] [--keys 2000] [--batch 8] [--engine logstore]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from sim import harness  # noqa: E402
from sim.harness import Sim  # noqa: E402

from zkv._core import dvv  # noqa: E402
from zkv.node.core import REPLY, REQUEST  # noqa: E402
from zkv.wire import Put, PutOk, Read, ReadOk, RPut, RPutOk  # noqa: E402

VALUE = bytes(range(256)) * 4
PEER, CLIENT = b"peer:n1", b"client:bench"


class Bench:
    def __init__(self, keys: int) -> None:
        self.sim = Sim(1, 3)
        self.sim.run_until(3.0)  # joined, every member up
        self.core = self.sim.nodes["n2"].core
        ring = self.core.membership.ring()
        self.keys = [k for k in (b"bench:%d" % i for i in range(20 * keys))
                     if "n2" in ring.preflist_for_key(k)][:keys]
        self.remote = {k: dvv.update_encoded(None, b"", VALUE, "n1~bench.1") for k in self.keys}
        self.ctx: dict[bytes, bytes] = {}
        self.rid = 0

    def _frames(self, msgs: list, batch: int) -> list[list]:
        return [msgs[i:i + batch] for i in range(0, len(msgs), batch)]

    def _feed(self, who: bytes, msgs: list, batch: int) -> tuple[float, list]:
        """Hand `msgs` from `who` to the node in frames of `batch`, each turn's output taken:
        us per message, and every reply to `who`."""
        core, t = self.core, self.sim.t
        frames = self._frames(msgs, batch)
        replies: list = []
        start = time.perf_counter_ns()
        for frame in frames:
            core.handle((REQUEST, who), frame, t)
            replies += core.take_output().clients.get(who, [])
        took = time.perf_counter_ns() - start
        return took / len(msgs) / 1000, replies

    def _rid(self) -> int:
        self.rid += 1
        return self.rid

    def replica_writes(self, batch: int) -> float:
        msgs = []
        for k in self.keys:  # a newer version of each key, as a coordinator's fan-out
            old = self.remote[k]
            self.remote[k] = dvv.update_encoded(old, dvv.DVVSet.decode(old).context(), VALUE,
                                                "n1~bench.1")
            msgs.append(RPut(self._rid(), k, self.remote[k], ""))
        took, replies = self._feed(PEER, msgs, batch)
        assert len(replies) == len(msgs) and all(type(m) is RPutOk and m.ok for m in replies)
        return took

    def coordinated_puts(self, batch: int) -> tuple[float, float]:
        core, t = self.core, self.sim.t
        put_ns = ack_ns = 0
        for frame in self._frames(self.keys, batch):
            msgs = [Put(self._rid(), k, VALUE, self.ctx.get(k, b""), 2) for k in frame]
            start = time.perf_counter_ns()
            core.handle((REQUEST, CLIENT), msgs, t)
            out = core.take_output()
            put_ns += time.perf_counter_ns() - start
            acks = {peer: [RPutOk(m.rid, True) for m in sent if type(m) is RPut]
                    for peer, sent in out.peers.items()}
            replies = []
            start = time.perf_counter_ns()
            for peer, frame_acks in acks.items():
                core.handle((REPLY, peer), frame_acks, t)
                replies += core.take_output().clients.get(CLIENT, [])
            ack_ns += time.perf_counter_ns() - start
            assert len(replies) == len(msgs) and all(type(r) is PutOk for r in replies)
            for msg, reply in zip(msgs, sorted(replies, key=lambda r: r.rid), strict=True):
                self.ctx[msg.key] = reply.context
        return put_ns / len(self.keys) / 1000, ack_ns / len(self.keys) / 1000

    def owner_reads(self, batch: int) -> float:
        took, replies = self._feed(CLIENT, [Read(self._rid(), k) for k in self.keys], batch)
        assert len(replies) == len(self.keys)
        assert all(type(m) is ReadOk and m.owner for m in replies)
        return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--engine", choices=["memory", "logstore"], default="memory")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.engine == "logstore":
            _logstore_for("n2", tmp)
        bench = Bench(args.keys)
        _run(bench, args)
        bench.core.close_stores()  # (before its directory goes)
    return 0


def _logstore_for(node_id: str, tmp: str) -> None:
    """The simulated node `node_id` gets a real LogStore under `tmp` (as a node opens it)."""
    from zkv.node.stores import open_stores

    plain = harness.SimNode.__init__

    def init(self, cfg) -> None:
        plain(self, cfg)
        if cfg.id == node_id:
            self.store, _ = open_stores(dataclasses.replace(cfg, data_dir=tmp))

    harness.SimNode.__init__ = init  # type: ignore[method-assign]


def _run(b: Bench, args: argparse.Namespace) -> None:
    for size in (1, args.batch):
        rw, cp, ack, rd = [], [], [], []
        for _ in range(args.rounds):
            rw.append(b.replica_writes(size))
            put, acks = b.coordinated_puts(size)
            cp.append(put)
            ack.append(acks)
            rd.append(b.owner_reads(size))
        print(f"frames of {size:2d}: replica write {min(rw):5.2f} us  coordinated put "
              f"{min(cp):5.2f} us + its two acks {min(ack):5.2f} us  owner read {min(rd):5.2f} us"
              f"  (best of {args.rounds}, {len(b.keys)} keys, {args.engine})")


if __name__ == "__main__":
    sys.exit(main())
