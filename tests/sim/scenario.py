"""Workloads and checkers for the deterministic simulation, and `run(seed, faults)` tying
them together (used by tests/sim/test_sim.py and tools/simulate.py).

The promises checked (DESIGN.md 3.4):
- carts: concurrent set-adds merged on read; no acknowledged add is ever lost;
- blind puts: every acknowledged blind value is still a sibling at the end (nothing covers it);
- read-your-writes: with R + W > N and no fault in flight, a read that starts after a write
  was acknowledged sees that write (or a later one);
- delete then re-add: once tombstones are reaped, nothing deleted comes back, and the re-add
  is there;
- convergence: after the faults stop, every key's owners hold the same version and no hint
  is left, within a bounded virtual time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.harness import Faults, Sim, SimClient
from zkv._core import dvv


def _items(values: list[bytes]) -> set[bytes]:
    return {x for v in values for x in v.split(b",") if x}


@dataclass
class Report:
    seed: int
    faults: Faults
    violations: list[str] = field(default_factory=list)
    ops: int = 0
    ok_ops: int = 0
    settle_time: float | None = None
    log: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        extra = self.faults.argv()
        return f"python tools/simulate.py --seed {self.seed}" + (f" {extra}" if extra else "")


def run(seed: int, faults: Faults | None = None, *, nodes: int = 5, clients: int = 4,
        ops_per_client: int = 40, settle: float = 30.0) -> Report:
    faults = faults or Faults()
    sim = Sim(seed, nodes, faults=faults)
    rng = sim.rng
    carts = [b"cart:%d" % i for i in range(3)]
    acked_adds: dict[bytes, set[bytes]] = {k: set() for k in carts}
    acked_blind: dict[bytes, set[bytes]] = {}
    deleted: set[bytes] = set()
    readded: set[bytes] = set()

    def cart_writer(c: SimClient):
        for i in range(ops_per_client):
            key = rng.choice(carts)
            item = b"%s-%d" % (c.name.encode(), i)
            res = yield ("get", key, 2)
            if not res.ok:
                continue
            merged = sorted(_items(res.values) | {item})
            res = yield ("put", key, b",".join(merged), res.context, 2)
            if res.ok:
                acked_adds[key].add(item)

    def blind_writer(c: SimClient):
        for i in range(ops_per_client):
            key = b"blind:%d" % rng.randrange(4)
            value = b"%s-%d" % (c.name.encode(), i)
            res = yield ("put", key, value, b"", 2)
            if res.ok:
                acked_blind.setdefault(key, set()).add(value)

    def deleter(c: SimClient):
        for i in range(ops_per_client // 4):
            key = b"del:%s:%d" % (c.name.encode(), i)
            res = yield ("put", key, b"doomed", b"", 2)
            if not res.ok:
                continue
            ctx = res.context
            res = yield ("delete", key, ctx, 2)
            if res.ok:
                deleted.add(key)
        yield ("sleep", sim.settings["tombstone_grace"] * 3)
        for key in sorted(deleted)[::2]:  # re-add half of them after the grace period
            res = yield ("put", key, b"reborn", b"", 2)
            if res.ok:
                readded.add(key)

    kinds = [cart_writer, blind_writer, deleter, cart_writer]
    for i in range(clients):
        SimClient(sim, f"c{i}", kinds[i % len(kinds)])
    sim.schedule_faults()
    sim.run_until(faults.end)
    while not all(c.done for c in sim.clients.values()) and sim.t < faults.end + 120:
        sim.run_until(sim.t + 1.0)

    keys = set(carts) | set(acked_blind) | deleted
    start = sim.t
    settle_time = None
    while sim.t < start + settle:
        sim.run_until(sim.t + 0.5)
        if not sim.replicas_agree(keys) and not sim.hints_pending():
            settle_time = sim.t - start
            break
    rep = Report(seed, faults, log=sim.log, stats=dict(sim.stats), settle_time=settle_time)
    rep.ops = len(sim.history.events)
    rep.ok_ops = sum(1 for e in sim.history.events if e.ok)
    v = rep.violations
    if not all(c.done for c in sim.clients.values()):
        v.append("clients did not finish their workloads")
    if settle_time is None:
        v.append(f"replicas disagree {settle:.0f}s after the faults stopped on "
                 f"{sorted(sim.replicas_agree(keys))[:5]} (hints pending: {sim.hints_pending()})")

    def final(key: bytes) -> list[bytes]:
        merged = None
        for x in sim.owners(key):
            merged = dvv.sync_encoded(merged, sim.held(x, key) or None)
        return dvv.DVVSet.decode(merged).live_values() if merged else []

    for key, items in acked_adds.items():
        lost = items - _items(final(key))
        if lost:
            v.append(f"{key!r}: acknowledged adds lost: {sorted(lost)[:5]}")
    for key, values in acked_blind.items():
        lost = values - set(final(key))
        if lost:
            v.append(f"{key!r}: acknowledged blind writes lost: {sorted(lost)[:5]}")
    for key in deleted:
        got = final(key)
        if key in readded and b"reborn" not in got:
            v.append(f"{key!r}: acknowledged re-add lost")
        if b"doomed" in got:
            v.append(f"{key!r}: deleted value came back")
    return rep


def read_your_writes(seed: int, *, r: int = 2, w: int = 2, nodes: int = 5,
                     writes: int = 60) -> list[str]:
    """No faults: every read that starts after a write was acknowledged sees it or later."""
    sim = Sim(seed, nodes, r=r, w=w)
    acked: list[tuple[float, int]] = []  # (ack time, sequence number)
    reads: list[tuple[float, list[bytes]]] = []

    def writer(c: SimClient):
        ctx = b""
        for i in range(1, writes + 1):
            res = yield ("put", b"ryw", b"%d" % i, ctx, w)
            if res.ok:
                ctx = res.context
                acked.append((sim.t, i))

    def reader(c: SimClient):
        for _ in range(writes * 2):
            start = sim.t
            res = yield ("get", b"ryw", r)
            if res.ok:
                reads.append((start, res.values))

    SimClient(sim, "w", writer)
    SimClient(sim, "r1", reader)
    SimClient(sim, "r2", reader)
    sim.run_until(60.0)
    bad = []
    for start, values in reads:
        before = [i for t, i in acked if t <= start]
        if before and max((int(x) for x in values), default=0) < before[-1]:
            bad.append(f"read at {start:.3f} saw {values} after write {before[-1]} was acked")
    return bad


def load(seed: int = 1, *, nodes: int = 5, clients: int = 8, ops_per_client: int = 4000) -> int:
    """The harness's own throughput: clients doing get-then-put-with-context as fast as the
    simulated cluster answers (no think time). Returns the client operations completed."""
    sim = Sim(seed, nodes)
    done = [0]

    def worker(c: SimClient):
        for i in range(ops_per_client // 2):
            key = b"load:%d" % (i % 500)
            res = yield ("get", key, 2)
            res = yield ("put", key, b"x" * 100, res.context, 2)
            done[0] += 2

    for i in range(clients):
        SimClient(sim, f"c{i}", worker, think=0.0)
    while not all(c.done for c in sim.clients.values()):
        sim.run_until(sim.t + 0.5)
    return done[0]


def gossip_rounds(nodes: int, seed: int = 1) -> float | None:
    """Gossip rounds until every member sees a newly joined node up (None: not in 20 s)."""
    sim = Sim(seed, nodes, q=256, aae_interval=0)
    sim.run_until(1.0)
    sim.add_node("newcomer", seed_of="n1")
    start, step = sim.t, sim.settings["gossip_interval"]
    while sim.t < start + 20:
        sim.run_until(sim.t + step)
        if all(sn.core is not None and sn.core.membership.state("newcomer")[0] == "up"
               and "newcomer" in {m.id for m in sn.core.membership.table()}
               for sn in sim.nodes.values() if sn.id != "newcomer"):
            return round((sim.t - start) / step, 1)
    return None


def ring_stats(nodes: int, q: int = 1024, racks: int = 3) -> dict:
    """Balance and rack spread of a ring of `nodes`, and the partitions whose primary moves
    when one node joins or leaves, against the minimum (the newcomer's / leaver's share)."""
    from zkv._core.ring import Ring

    members = [(f"n{i}", f"rack{i % racks}") for i in range(nodes)]
    ring = Ring(members, q=q, n=3)
    owned = [len(ring.owned(m)) for m, _ in members]
    joined = Ring(members + [(f"n{nodes}", f"rack{nodes % racks}")], q=q, n=3)
    left = Ring(members[:-1], q=q, n=3)
    return {"nodes": nodes, "owned_min": min(owned), "owned_max": max(owned),
            "rack_violations": len(ring.rack_violations),
            "moved_join": round(ring.moved(joined), 4), "min_join": round(1 / (nodes + 1), 4),
            "moved_leave": round(ring.moved(left), 4), "min_leave": round(1 / nodes, 4)}
