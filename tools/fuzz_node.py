"""Fuzz a live node with mutated well-formed frames, then check it still serves and lost nothing.

    python tools/fuzz_node.py [--frames 100000] [--seed 1] [--keys 200] [--dir DIR]
    python tools/fuzz_node.py --amplify      # RSS under read amplification (issue 13)

Starts a 3-node LocalCluster on loopback (free ports), writes `--keys` keys with w=3 (the
acknowledged set), then sends `--frames` frames to node1: each a real encoded message of one
of every wire type (client and peer types alike: RGet, RPut, Forward, Join, TreeLevel,
LeafKeys, RGetHashes, Reap, Repair, Gossip, Keys, Snapshot...) or a batch of them, mutated (bit flips, byte
replacement with msgpack markers, insertions, deletions, truncation, duplication,
splicing two frames). Frames go out from three identities: an anonymous client, a client
identity claiming b"peer:", and a member's peer identity (an authenticated rogue peer in
plain text). Replies are drained as they come, and the node's liveness is checked every
`--check-every` frames. At the end: every node process is alive, answers Status, and every
acknowledged key reads back its value at r=3. Exit status 0 when all of that holds.

Mutated RPuts target keys of their own (b"fuzz:...") so that what is checked is the node's
robustness; a rogue peer's *plausible* forged version of an acknowledged key is the DVV
plausibility check's business (zkv/_core/dvv), not this tool's.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

import _checkout  # noqa: F401  (which zkv: tools/_checkout.py)
import msgspec
import zmq

from zkv import wire
from zkv._core import dvv
from zkv.client import Client
from zkv.local import LocalCluster

MARKERS = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xC0, 0xC2, 0xC3, 0xC4, 0xCC, 0xCF, 0xD0, 0xD3,
           0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF]


def seed_messages(members: list[wire.Member], rng: random.Random) -> list:
    """Realistic messages of every type (peer types included)."""
    key = b"fuzz:%d" % rng.randrange(1000)
    version = dvv.update_encoded(None, b"", b"fuzz-value", "node2")
    ms = members
    now_ms = time.time_ns() // 1_000_000
    fake = wire.Member(f"fuzz{rng.randrange(100)}", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                       "rack-z", now_ms, 1)
    return [
        wire.Get(1, key, 2), wire.Put(2, key, b"v" * rng.randrange(64), b"", 1),
        wire.Delete(3, key, b"", 1), wire.RingInfo(4), wire.Status(5),
        wire.GetOk(6, [b"a"], b"", 1), wire.PutOk(7, b"", 1), wire.Error(8, 1, "x"),
        wire.RingOk(9, 256, 3, 2, 2, ms, []), wire.StatusOk(10, {"a": [1, {"b": 2}]}),
        wire.RGet(11, key), wire.RGet(11, key, "node3"), wire.RPut(12, key, version),
        wire.RPut(12, key, version, "node3"), wire.RGetOk(13, version), wire.RPutOk(14, True),
        wire.Forward(15, wire.Put(0, key, b"v", b"", 1)), wire.Forward(15, wire.Get(0, key)),
        wire.Join(16, fake), wire.Join(16, ms[0]), wire.JoinOk(17, 256, 3, 2, 2, ms),
        wire.TreeLevel(18, rng.randrange(256), rng.randrange(6), [0, 1, 2]),
        wire.TreeLevelOk(19, b"\x01" * 12), wire.LeafKeys(20, rng.randrange(256), [0, 5, 1023]),
        wire.LeafKeysOk(21, b"\x02" * 8, b"\x03" * 8),
        wire.RGetHashes(22, rng.randrange(256), os.urandom(16)),
        wire.RGetHashesOk(23, [key], [version]),
        wire.Reap(24, [key], [os.urandom(16)]), wire.Repair(25, rng.choice([-1, 0, 5])),
        wire.RepairOk(26, {}), wire.Gossip(27, "node2", 256, 3, 2, 2, ms, b""),
        wire.Keys(28, rng.randrange(256), "", rng.choice([0, 2**63, 2**64 - 1]), b"k",
                  rng.choice([1, 10, 10_000]), rng.random() < 0.5),
        wire.KeysOk(29, [key], 5, False, True, [version]),
        wire.Snapshot(30, f"fuzz{rng.randrange(4)}", rng.choice(["take", "list", "remove"])),
        wire.SnapshotOk(31, {}),
        wire.Config(32, rng.choice([{}, {"max_siblings": "7"}, {"n": "1"}, {"log_level": "x"}]),
                    rng.random() < 0.2),
        wire.ConfigOk(33, {}),
        wire.NsCreate(34, f"fz{rng.randrange(4)}", rng.choice([0, 1, 3]), 0, 0,
                      rng.choice(["lww", "siblings"]), rng.choice([0, 1, 60, 2**63 - 1])),
        wire.Forward(35, wire.Put(0, key, b"v", b"", 1, ns=f"fz{rng.randrange(4)}"),
                     rng.choice([0, 1, 2**63, 2**64 - 1])),
        wire.NsAlter(36, rng.choice(["default", "nope"] + [f"fz{i}" for i in range(4)]),
                     rng.choice([-1, 0, 1, 3, 255]), rng.choice([-1, 1, 2]),
                     rng.choice([-1, 0, 1, 60, 2**63 - 1])),
        wire.Put(37, key, b"v", b"", 1, ns=f"fz{rng.randrange(4)}",
                 ttl=rng.choice([0, 1, 59, 60, 2**32, 2**63 - 1])),
        wire.Get(38, key, rng.choice([0, 1, 3]), rng.choice(["", "fz0"]),  # primary quorums
                 rng.choice([0, 1, 2, 3, 4, 255])),
        wire.Put(39, key, b"v", b"", 1, pw=rng.choice([0, 1, 2, 3, 4, 255])),
        wire.Delete(40, key, b"", 1, pw=rng.choice([0, 1, 3, 255])),
        wire.NsCreate(41, f"fz{rng.randrange(4)}", 3, 0, 0, "siblings", 0,
                      rng.choice([0, 2, 3, 4, 255]), rng.choice([0, 2, 3, 4, 255])),
        wire.NsAlter(42, f"fz{rng.randrange(4)}", pr=rng.choice([-1, 0, 2, 4, 255]),
                     pw=rng.choice([-1, 0, 3, 255])),
        wire.NsDrop(43, rng.choice(["default", "nope"] + [f"fz{i}" for i in range(4)]),
                    rng.random() < 0.7, rng.choice([-1, 0, 1, 5, 2**32 - 1])),
        wire.Forward(44, wire.Put(0, key, b"v", b"", 1, ns=f"fz{rng.randrange(4)}"), 0,
                     rng.choice([-1, 0, 1, 2, 2**32 - 1])),
    ]


INTS = [0, 1, -1, 2, 255, 256, 1023, 1024, 65535, 65536, 2**31 - 1, 2**32, 2**62, 2**63 - 1,
        -2**63, 2**64 - 1]


def _field(v, rng: random.Random):
    """A new value for one decoded field: same shape mostly, extreme or wrong sometimes."""
    r = rng.random()
    if r < 0.1:  # a value of another type
        return rng.choice([0, -1, b"", "", [], {}, None, True, 2**64 - 1, b"\xff" * 9, "x" * 70])
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rng.choice(INTS) if r < 0.6 else max(-2**63, min(2**64 - 1, v + rng.randint(-3, 3)))
    if isinstance(v, bytes):
        b = bytearray(v)
        if b and r < 0.5:
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        elif r < 0.8:
            b += os.urandom(rng.randint(1, 16))
        else:
            b = b[: rng.randrange(len(b) + 1)]
        return bytes(b)
    if isinstance(v, str):
        return rng.choice(["", "node1", "node2", "node3", "ghost", "tcp://127.0.0.1:1",
                           "not-an-endpoint", v + "\x00", v * 2, "\u2603" * 10])
    if isinstance(v, list):
        if v and r < 0.5:
            v = list(v)
            i = rng.randrange(len(v))
            v[i] = _field(v[i], rng)
            return v
        return v + v[: rng.randint(0, len(v))] if r < 0.8 else v[: rng.randrange(len(v) + 1)]
    if isinstance(v, dict):
        return {**v, "k": _field(0, rng)}
    return v


def mutate_fields(frame: bytes, rng: random.Random) -> bytes:
    """A well-formed frame whose message fields changed: decodes, and reaches the handlers."""
    doc = msgspec.msgpack.decode(frame)
    msgs = doc[1]
    for _ in range(rng.randint(1, 3)):
        m = msgs[rng.randrange(len(msgs))]
        if len(m) > 1:
            i = rng.randrange(1, len(m))  # keep the tag (mostly): fields, rid included
            m[i] = _field(m[i], rng)
        if rng.random() < 0.05:
            m[0] = rng.choice([1, 2, 3, 4, 5, 6, 20, 21, 24, 25, 27, 29, 30, 32, 33, 99])
    return msgspec.msgpack.encode(doc)


def mutate(frame: bytes, other: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.7:
        return mutate_fields(frame, rng)
    b = bytearray(frame)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(7)
        pos = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos] = rng.choice(MARKERS)
        elif op == 2:
            b[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[pos:pos + rng.randint(1, 8)]
        elif op == 4 and len(b) > 3:
            del b[rng.randrange(3, len(b)):]
        elif op == 5:
            b[pos:pos] = b[pos:pos + rng.randint(1, 32)]
        elif op == 6:
            cut = rng.randrange(len(other)) if other else 0
            b[pos:] = other[cut:]
    return bytes(b)


def status_ok(endpoint: str, timeout: float = 5.0) -> bool:
    try:
        with Client([endpoint], timeout=timeout) as c:
            c.status(endpoint)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means "not serving"
        print(f"status of {endpoint} failed: {exc!r}", file=sys.stderr)
        return False


def fuzz(cluster: LocalCluster, frames: int, seed: int, keys: int, check_every: int) -> int:
    rng = random.Random(seed)
    target = cluster.nodes[0]
    acked = {}
    with Client(cluster.endpoints, timeout=5.0) as c:
        for i in range(keys):
            k, v = b"ack:%05d" % i, b"value-%d" % i
            c.put(k, v, w=3)
            acked[k] = v
        members = c.ring_info().members
    ctx = zmq.Context()
    socks = []
    for ident in (None, b"peer:stranger/fuzz", b"peer:node2/fuzz"):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1000)
        if ident:
            s.setsockopt(zmq.IDENTITY, ident)
        s.connect(target.listen)
        socks.append(s)
    sent = replies = 0
    t0 = time.monotonic()
    seeds = seed_messages(members, rng)
    pool = [wire.encode_one(m) for m in seeds] + [wire.encode(seeds[:8]), wire.encode(seeds[10:])]
    try:
        while sent < frames:
            if sent % 500 == 0:
                seeds = seed_messages(members, rng)
                pool = [wire.encode_one(m) for m in seeds] + [wire.encode(rng.sample(seeds, 6))]
            frame = mutate(rng.choice(pool), rng.choice(pool), rng)
            s = socks[sent % len(socks)]
            try:
                s.send(frame, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                s.poll(100, zmq.POLLOUT)
            for s2 in socks:
                while s2.poll(0):
                    replies += len(wire.decode(s2.recv(), 1 << 31))
            if sent % check_every == 0:
                if not target.alive():
                    print(f"CRASH: {target.id} exited after {sent} frames: "
                          f"{cluster.tail(target)}", file=sys.stderr)
                    return 1
                if not status_ok(target.listen):
                    return 1
                # let the node drain what is queued before the next round
                while any(s2.poll(50) for s2 in socks):
                    for s2 in socks:
                        while s2.poll(0):
                            replies += len(wire.decode(s2.recv(), 1 << 31))
        quiet = time.monotonic() + 10  # the node's answers to the last frames
        while time.monotonic() < quiet and any(s2.poll(200) for s2 in socks):
            for s2 in socks:
                while s2.poll(0):
                    replies += len(wire.decode(s2.recv(), 1 << 31))
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
    elapsed = time.monotonic() - t0
    print(f"sent {sent} mutated frames in {elapsed:.1f}s ({sent / elapsed:.0f}/s), "
          f"{replies} reply messages")
    dead = [n.id for n in cluster.nodes if not n.alive()]
    if dead:
        print(f"CRASH: {dead} exited", file=sys.stderr)
        return 1
    if not all(status_ok(n.listen) for n in cluster.nodes):
        return 1
    lost = []
    with Client(cluster.endpoints, timeout=5.0) as c:
        for k, v in acked.items():
            if v not in c.get(k, r=3).values:
                lost.append(k)
    print(f"crashes: 0, acknowledged keys: {len(acked)}, lost: {len(lost)}")
    return 1 if lost else 0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def amplify(cluster: LocalCluster, rounds: int = 20) -> int:
    """Issue 13's read amplification: 400 RGets of one 8 MiB value per frame, as a peer."""
    target = cluster.nodes[0]
    with Client(cluster.endpoints, timeout=10.0) as c:
        c.put(b"big", b"x" * (8 << 20), w=3)
    time.sleep(0.5)
    before = rss_kb(target.pid)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IDENTITY, b"peer:node2/amplify")
    s.connect(target.listen)
    frame = wire.encode([wire.RGet(i, b"big") for i in range(400)])
    peak = before
    for _ in range(rounds):  # and never read a reply
        s.send(frame)
        time.sleep(0.1)
        peak = max(peak, rss_kb(target.pid))
    s.close(0)
    ctx.term()
    ok = target.alive() and status_ok(target.listen)
    print(f"read amplification: {len(frame)}-byte frame x {rounds}, node RSS {before // 1024} MiB "
          f"at rest -> peak {peak // 1024} MiB; serving afterwards: {ok}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--check-every", type=int, default=2000)
    p.add_argument("--dir", default=None)
    p.add_argument("--amplify", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        cluster = LocalCluster(3, d, base_port=None, sync="none",
                               extra_args=["--gossip-interval", "0.1", "--down-after", "3"])
        cluster.start()
        try:
            if args.amplify:
                return amplify(cluster)
            return fuzz(cluster, args.frames, args.seed, args.keys, args.check_every)
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
