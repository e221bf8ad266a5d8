"""Random schedules of one lww namespace's writes on three real Replicas: what lww loses.

    python tools/lww_model.py --seeds 3000                 # seeds 0..2999, no message loss
    python tools/lww_model.py --seeds 3000 --loss 0.2      # 20% of fan-out copies lost
    python tools/lww_model.py --seed 1200 --first 1000     # one schedule (replay)

Three replicas (zkv.node.replica.Replica over LogStores in a temp dir) of two keys of an
`lww` namespace. Three clients write blind (60%) or on the context of a read of two
replicas; the coordinator stamps a write max(its skewed clock, the client's floor, what it
holds) + 1, as zkv.hlc does. 40% of writes are retried through other coordinators (same
write id; stamped anew, or with the first stamp: a late forward); copies fan out with random
delays, duplicates and (--loss) losses; reads and anti-entropy between two replicas mix in.
At the end one replica gathers every other's version and gives its own back, three times.

The oracle: the final value must be the same on every replica, and it must be the greatest
(stamp, node, counter) among acknowledged copies of writes nobody replaced (a client's
context covered it, or a coordinator's collapse kept a later write over a copy it held).
Counted per schedule: `resurrected` (the final value is a replaced write: a late retry
stamped anew won), `lost` (a lower value than expected won), `lost-all` (no value at all on
any replica), `diverged` (replicas differ after the gathers). Prints the first three seeds of
each and the totals; exit status 1 when any key lost every value or replicas diverged (the
other two are known limits, README "Last writer wins").
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import sys
import tempfile

from zkv._core import dvv
from zkv.node import namespaces as nsm
from zkv.node.replica import Replica
from zkv.storage import LogStore

NODES = "abc"
NS = nsm.Registry.for_cluster(3, 2, 2).create("last", 3, conflicts="lww", members=3,
                                              created=1, creator="n1")
KEYS = [nsm.storage_key(NS, k) for k in (b"k1", b"k2")]
# a read's merge, as a get's; before dvv.lww_sync (bba31d8 and older, to compare with
# PYTHONPATH=<an older checkout, built>) it was lww(sync(a, b))
JOIN = getattr(dvv, "lww_sync_encoded", None) or (
    lambda a, b: dvv.lww_encoded(dvv.sync_encoded(a, b)))


def _stamps(enc: bytes | None) -> list[int]:
    return [int.from_bytes(v[:8], "big") for v in dvv.DVVSet.decode(enc).live_values()] \
        if enc else []


def _order(node: str, counter: int, value: bytes) -> tuple[bytes, bytes, int]:
    return value[:8], node.encode(), counter  # lww's order on values


def run(seed: int, loss: float, workdir: str) -> dict:
    """One schedule; returns its counts and the first problem of each kind."""
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(dir=workdir)
    reps = {n: Replica(n, LogStore(os.path.join(tmp, n), sync="none")) for n in NODES}
    skew = {n: rng.choice([0, 0, 0, 5, -5, 30]) for n in NODES}
    pending: list[tuple] = []
    copies: dict[tuple[bytes, bytes], list] = collections.defaultdict(list)
    replaced: set[bytes] = set()
    clients = [dict(ctx={k: b"" for k in KEYS}, knows={k: set() for k in KEYS}, floor=0)
               for _ in range(3)]
    t = seq = writes = 0

    def later(delay: int, kind: str, *args) -> None:
        nonlocal seq
        seq += 1
        pending.append((t + delay, seq, kind, args))

    def coordinate(node, key, ctx, payload, wid, knows, client, floor, given) -> int:
        nonlocal writes
        writes += 1
        r = reps[node]
        held = r.read(key)
        stamp = given or max([t * 10 + skew[node], floor] + _stamps(held)) + 1
        value = stamp.to_bytes(8, "big") + b"\0" * (NS.head - 8) + payload
        new, written = r.coordinate_set(key, ctx, value, None, wid)
        mine = [(n, c, v) for (n, c, v, w) in dvv.DVVSet.decode(new).siblings() if w == wid]
        replaced.update(knows)
        held_dots = {(n, c) for (n, c, _, _) in dvv.DVVSet.decode(held).siblings()} \
            if held else set()
        if mine and mine[0][2] == value and (mine[0][0], mine[0][1]) not in held_dots:
            n, c, v = mine[0]  # a new dot, kept: acknowledged, and it replaced what was held
            copies[(key, wid)].append((_order(n, c, v), payload))
            if held:
                replaced.update(w for (_, _, _, w) in dvv.DVVSet.decode(held).siblings()
                                if w and w != wid)
        for other in NODES:
            if other != node:
                later(rng.choice([0, 1, 2, 5, 20, 60]), "deliver", other, key, new)
                if rng.random() < 0.1:
                    later(rng.randint(0, 80), "deliver", other, key, new)
        if client is not None:
            client["ctx"][key] = dvv.put_context(written if written is not None else new,
                                                 ctx, wid)
            client["knows"][key] = set(knows) | {wid}
            client["floor"] = max([client["floor"]] + _stamps(new))
        return stamp

    def due(lossy: bool) -> None:
        ready = [p for p in pending if p[0] <= t]
        rng.shuffle(ready)
        for p in ready:
            pending.remove(p)
            if lossy and rng.random() < 0.3 and p[0] + 3 > t:
                pending.append((t + rng.randint(1, 3), p[1], p[2], p[3]))  # reordered
                continue
            if p[2] == "deliver":
                if not (lossy and rng.random() < loss):
                    reps[p[3][0]].merge(p[3][1], p[3][2])
            else:
                coordinate(*p[3])

    for _ in range(rng.randint(20, 80)):
        t += 1
        due(True)
        op, client, key = rng.random(), rng.choice(clients), rng.choice(KEYS)
        if op < 0.2:  # a read of two replicas (and, half the time, its read repair)
            asked = rng.sample(NODES, 2)
            merged = None
            for n in asked:
                v = reps[n].read(key)
                if v:
                    merged = v if merged is None else JOIN(merged, v)
            if merged is None:
                continue
            s = dvv.DVVSet.decode(merged)
            client["ctx"][key] = s.context()
            client["knows"][key] = {w for (_, _, _, w) in s.siblings() if w}
            client["floor"] = max([client["floor"]] + _stamps(merged))
            if rng.random() < 0.5:
                for n in asked:
                    reps[n].merge(key, merged)
            continue
        if op < 0.25:  # anti-entropy between two replicas, both ways
            x, y = rng.sample(NODES, 2)
            for k in KEYS:
                if vx := reps[x].read(k):
                    reps[y].merge(k, vx)
                if vy := reps[y].read(k):
                    reps[x].merge(k, vy)
            continue
        wid = rng.randbytes(16)
        blind = rng.random() < 0.6
        ctx = b"" if blind else client["ctx"][key]
        knows = set() if blind else set(client["knows"][key])
        payload = b"v%d" % seq
        seq += 1
        coords = rng.sample(NODES, len(NODES))
        stamp = coordinate(coords[0], key, ctx, payload, wid, knows, client, client["floor"], 0)
        if rng.random() < 0.4:  # retried (stamped anew) or a late forward (its first stamp)
            for c in coords[1:]:
                given = stamp if rng.random() < 0.3 else 0
                delay = rng.choice([0, 1, 3, 10, 30, 60])
                floor = client["floor"] + (rng.randint(0, 20) if rng.random() < 0.5 else 0)
                later(delay, "hedge", c, key, ctx, payload, wid, knows, None, floor, given)
                if rng.random() < 0.5:
                    break
    while pending:
        t += 1
        due(False)
    g = rng.choice(NODES)
    for _ in range(3):  # (lww_sync is not associative: a second round can be needed)
        for k in KEYS:
            for n in NODES:
                if n != g and (v := reps[n].read(k)):
                    reps[g].merge(k, v)
            if gv := reps[g].read(k):
                for n in NODES:
                    if n != g:
                        reps[n].merge(k, gv)
    found = collections.Counter(writes=writes)
    first: dict[str, tuple] = {}
    for k in KEYS:
        if len({reps[n].read(k) for n in NODES}) > 1:
            found["diverged"] += 1
            first.setdefault("diverged", (k,))
        final = reps[g].read(k)
        sibs = [x for x in dvv.DVVSet.decode(final).siblings() if x[2] is not None] \
            if final else []
        candidates = [(o, p) for (kk, w), cs in copies.items() if kk == k and w not in replaced
                      for (o, p) in cs]
        expected = max(candidates) if candidates else None
        kind = None
        if sibs:
            node, counter, value, wid = sibs[0]
            if wid in replaced:
                kind = "resurrected"
            elif expected and _order(node, counter, value) < expected[0]:
                kind = "lost"
        elif expected:
            kind = "lost-all"
        if kind:
            found[kind] += 1
            first.setdefault(kind, (k, expected and expected[1]))
    for r in reps.values():
        r.store.close()
    shutil.rmtree(tmp)
    return {"counts": found, "first": first}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=300, help="schedules to run (default 300)")
    ap.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--seed", type=int, help="run this one seed only")
    ap.add_argument("--loss", type=float, default=0.0, help="fraction of copies lost")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first,
                                                            args.first + args.seeds)
    total: collections.Counter = collections.Counter()
    shown: collections.Counter = collections.Counter()
    workdir = tempfile.mkdtemp(prefix="zkv-lww-model-")
    try:
        for seed in seeds:
            got = run(seed, args.loss, workdir)
            total["schedules"] += 1
            total.update(got["counts"])
            for kind, what in got["first"].items():
                shown[kind] += 1
                if shown[kind] <= 3:
                    print(f"{kind} seed {seed}: {what}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(" ".join(f"{k}={total[k]}" for k in ("schedules", "writes", "resurrected", "lost",
                                                "lost-all", "diverged")))
    return 1 if total["lost-all"] or total["diverged"] else 0


if __name__ == "__main__":
    sys.exit(main())
