"""Deterministic simulation of a zkv cluster: many real `NodeCore`s over an in-memory network,
driven by a virtual clock and one seeded RNG. Same seed, same run, bit for bit.

What is real: the node's whole decision logic (`zkv.node.core.NodeCore` and everything it
calls), the wire codec (every message is encoded and decoded, so nodes never share objects),
the DVV algebra, the Merkle trees, the handoff store. What is simulated: the engine
(`MemStore`, LogStore's interface in memory, with a durable point so a power loss drops the
unsynced tail), sockets (`Sim._send`), time (`Sim.t`), and faults:

- per message: delay (base + jitter, so reordering), loss, duplication; the loss of an
  uncounted write copy to a pending or previous owner only (`lost_extras`, a full send
  queue's drop);
- partitions: blocked directed links (halves, one node isolated, one-way, flapping);
- a node no peer can dial (`Sim.undialable`: a wrong --advertise): it dials out, nobody in;
- nodes: pause (SIGSTOP: messages queue, timers stop), crash (kill -9) and restart, power
  loss (crash losing the engine's unsynced tail), a stale view (its gossip arrives without
  cluster states: it keeps serving under the ownership plan it holds, as a lagging node), a
  move (crash, then a start on its data dir at a new address: `Sim.move`).

Links follow the transport: a node reaches a peer only after it "connected" to it (the
core's `Outbox.connect`), and it hears a peer's gossip only while subscribed to it, at the
address it subscribed to (a node that moved is not heard at the old one).
Clients run workloads written as generators that yield requests and receive results; every
outcome goes into a `History` the checkers (scenario.py) read. Two kinds: `SimClient` (a
node picked by the RNG, failover on silence or "not now") and `CoreClient`, zkv.client's own
`ClientCore` driven on the virtual clock (ring routing, hedged tries): the client's logic is
simulated too.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import math
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import NoReturn

import msgspec

from zkv import wire
from zkv._core import dvv
from zkv._core.ring import hash64
from zkv.client.core import SLOW, UNREACHABLE, Batch, ClientCore, GetResult
from zkv.config import NodeConfig
from zkv.errors import QuorumError, RequestTimeout, StorageFull, Unavailable, ZkvError
from zkv.node import ownership as own
from zkv.node.core import GOSSIP, REPLY, REQUEST, SEED, NodeCore
from zkv.node.handoff import HINT_HEAD, REAP_HEAD, REAPED, HandoffStore
from zkv.node.membership import copy_member
from zkv.node.namespaces import key_settings
from zkv.wire import Delete, Error, Get, GetOk, JoinOk, Put, PutOk, RPut

LIMIT = 1 << 30
JOURNAL = REAPED.encode() + b"\x00"  # handoff-store keys of the reap journal, not hints
POSTHUMOUS = "posthumous"  # a paused node's queued frame from a node since gone for good


class MemStore:
    """LogStore's interface in memory. `flush()` is a durable point; `power_loss()` goes back
    to the last one (sync="none": the OS never wrote the tail out)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        # keys deleted (a dict as an ordered set: tombstones() in the order they were made,
        # as LogStore's, never in an order PYTHONHASHSEED picks)
        self.tomb: dict[bytes, None] = {}
        self.undo: list[tuple[bytes, bytes | None, bool]] = []  # since the last durable point
        self.written = 0  # of `undo`, the records written out (the rest: a failed write-out's)
        self.full = False  # the disk is full (Sim.fill_disk): write-outs fail
        self.write_error: str | None = None  # set by a failed write-out: writes are refused
        self.closed_cleanly = True  # LogStore's: False once the node crashed (set by the sim)
        self._hash: dict[bytes, int] = {}
        # get(key) is the dict's own (a C call: a node reads its store for every request)
        self.get: Callable[[bytes], bytes | None] = self.data.get

    def _note(self, key: bytes) -> None:
        self.undo.append((key, self.data.get(key), key in self.tomb))

    def put(self, key: bytes, value: bytes) -> None:
        if self.write_error is not None:
            raise StorageFull(self.write_error)
        data, tomb = self.data, self.tomb
        was_tomb = key in tomb
        self.undo.append((key, data.get(key), was_tomb))  # (_note, inline)
        data[key] = value
        if was_tomb:
            del tomb[key]

    def delete(self, key: bytes) -> None:
        if self.write_error is not None:
            raise StorageFull(self.write_error)
        data, tomb = self.data, self.tomb
        self.undo.append((key, data.get(key), key in tomb))  # (_note, inline)
        data.pop(key, None)
        tomb[key] = None

    def __len__(self) -> int:
        return len(self.data)

    def items(self):
        return list(self.data.items())

    def key_hashes(self, lo: int = 0, hi: int = 2**64 - 1) -> list[tuple[bytes, int]]:
        out = []
        for k in self.data:
            h = self._hash.get(k)
            if h is None:
                h = self._hash[k] = hash64(k)
            if lo <= h <= hi:
                out.append((k, h))
        return out

    def keys(self):
        return iter(list(self.data))

    def record_size(self, key: bytes) -> int:
        v = self.data.get(key)
        return len(key) + len(v) if v is not None else 0

    def tombstones(self) -> list[bytes]:
        return list(self.tomb)

    def release_tombstones(self, keys) -> int:
        return sum(1 for k in keys if k in self.tomb)

    def corrupt_keys(self) -> list[bytes]:
        return []

    def stats(self) -> dict:
        return {"keys": len(self.data)}

    def write_out(self) -> None:
        # in the OS's hands: survives a process crash, not a power loss
        if self.full and len(self.undo) > self.written:
            self._fail()
        self.written = len(self.undo)

    def flush(self) -> None:
        self.write_out()
        self.undo.clear()
        self.written = 0

    # a full disk (Faults.full_disks): LogStore's refusal, as the engine makes it
    def _fail(self) -> NoReturn:
        self.write_error = "writing failed: No space left on device (simulated)"
        raise StorageFull(self.write_error)

    def check_space(self) -> str | None:
        if self.write_error is not None and not self.full:
            self.write_error = None  # room again: the buffered tail is written out
            self.written = len(self.undo)
        return self.write_error

    def crash(self) -> int:
        """The process is gone: records it never wrote out (a write-out failed) go with it.
        (Records put after a write-out that worked count as written: the model leaves the
        engine's user-space buffer out, as before full disks were simulated.)"""
        if self.write_error is None:
            return 0
        lost = len(self.undo) - self.written
        self._undo_to(self.written)
        self.write_error = None  # (a new process: nothing buffered, nothing refused yet)
        return lost

    def power_loss(self) -> int:
        lost = len(self.undo)
        self._undo_to(0)
        return lost

    def _undo_to(self, n: int) -> None:
        for key, value, was_tomb in reversed(self.undo[n:]):
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
            if was_tomb:
                self.tomb[key] = None
            else:
                self.tomb.pop(key, None)
        del self.undo[n:]
        self.written = min(self.written, n)

    def close(self) -> None:
        self.closed_cleanly = True  # (as LogStore's: a clean close writes the newest hints)


@dataclass
class Faults:
    """Fault intensities; `schedule()` turns them into timed events with the sim's RNG."""

    latency: float = 0.0005  # base one-way delay (s)
    jitter: float = 0.002  # + uniform [0, jitter): reorders messages
    loss: float = 0.0  # per message
    dup: float = 0.0  # per message
    partitions: int = 0  # how many partition episodes
    pauses: int = 0
    crashes: int = 0
    power_losses: int = 0
    wipes: int = 0  # a node's disk is lost: it comes back empty under its id (Sim.wipe)
    # a node's gossip arrives without cluster states for a while (Sim.stale_view): its view of
    # ownership lags while it keeps serving and coordinating
    stale_views: int = 0
    # a node crashes and is started again on its data dir at a new address (Sim.move)
    moves: int = 0
    # a node's disk is full for a while (Sim.fill_disk): its write-outs fail, its engines
    # refuse writes until there is room again
    full_disks: int = 0
    # per message: an uncounted copy of a write (an RPut, not a hint, to a node that does not
    # own the key in the sender's ring: a pending or previous owner during an ownership
    # change, or a read repair of one) is lost, as a full send queue drops it (in the faults'
    # time window, like every fault)
    lost_extras: float = 0.0
    start: float = 2.0  # faults happen in [start, end)
    end: float = 12.0

    def argv(self) -> str:
        d = Faults()
        return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(self).items()
                        if v != getattr(d, k))


@dataclass(slots=True)
class Result:
    ok: bool
    values: list[bytes] = field(default_factory=list)
    context: bytes = b""
    error: str = ""


def _cluster_json(core: NodeCore) -> dict:
    """What a node's cluster.json holds when its process stops: its content now, as the file
    would give it back (JSON: lists, not tuples). (The real node writes it at each change and
    settle; the snapshot at the stop may hold fewer unverified partitions than the last
    write did: the restarted node verifies fewer again, never misses one.)"""
    return json.loads(json.dumps(core.cluster_doc()))


class SimNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.ident = b"peer:" + cfg.id.encode()  # its identity in the requests it sends peers
        self.store = MemStore()
        self.handoff_mem = MemStore()
        self.core: NodeCore | None = None
        self.saved: dict = {}
        self.paused = False
        self.backlog: list[tuple] = []
        self.tick_at = float("inf")
        # peers this node connected to (and hears gossip from), and candidates whose gossip
        # only it listens to: id -> the gossip endpoint it connected to. A peer is heard only
        # while it is still there (Sim.move: a node started again at a new address)
        self.links: dict[str, str] = {}
        self.subs: dict[str, str] = {}
        self.incarnation = 0  # of its last start (the virtual wall clock's ms then)
        self.exited: NodeCore | None = None  # its core, once it left the cluster and stopped
        self.dead = False  # gone for good (Sim.kill): never restarted
        # after a wipe: the seed its next start joins through ("": any member up then)
        self.rejoin_through: str | None = None


class Sim:
    def __init__(self, seed: int, nodes: int = 5, *, n: int = 3, r: int = 2, w: int = 2,
                 q: int = 16, racks: int = 3, faults: Faults | None = None,
                 gossip_interval: float = 0.2, aae_interval: float = 0.5,
                 tombstone_grace: float = 2.0, sync: str = "none",
                 max_siblings: int = 100, seal_key: bytes | None = None) -> None:
        self.seed = seed
        self.seal_key = seal_key  # every node's, as --keys gives them (None: no keys)
        self.rng = random.Random(seed)
        self.t = 0.0
        self.faults = faults or Faults()
        self.events: list = []
        self.seq = itertools.count(1)  # events at the same time run in the order scheduled
        self.blocked: set[tuple[str, str]] = set()
        # nodes whose advertised addresses no peer can dial (a wrong --advertise): their gossip
        # reaches nobody and peers' requests to them are lost, while what they dial works
        # (their requests and the answers, the peers' gossip they subscribe to, their Join)
        self.undialable: set[str] = set()
        # ... whose --advertise (requests) no peer can dial while --advertise-gossip is right:
        # their gossip is heard, peers' requests to them are lost
        self.undialable_requests: set[str] = set()
        # nodes whose gossip arrives without its cluster state and transfer progress (heartbeats,
        # member records, namespaces only): they stay at the ownership plan they hold, as a
        # node whose gossip lags does
        self.stale_view: set[str] = set()
        self.nodes: dict[str, SimNode] = {}
        self.node_ids: list[str] = []  # every node id, sorted
        self.by_endpoint: dict[str, str] = {}
        self.by_ident: dict[bytes, str] = {}  # a node's request identity (SimNode.ident) -> id
        self.clients: dict[bytes, SimClient] = {}
        self.history = History()
        self.stats = {"delivered": 0, "lost": 0, "duplicated": 0, "frames": 0}
        # stored key -> values a power loss (sync="none"), a wipe or a death took from the
        # only node holding them: losses the checkers excuse (_only_copies)
        self.lost_with_holder: dict[bytes, set[bytes]] = {}
        # stored keys whose deletion (a tombstone no surviving copy descends from) went the
        # same way: a deleted value coming back there is that loss, excused likewise
        self.lost_deletes: set[bytes] = set()
        # node gone for good (kill) -> {stored key: the values it held then}
        self.dead_held: dict[str, dict[bytes, set[bytes]]] = {}
        self.log: list[str] = []
        self.settings = dict(n=n, r=r, w=w, ring_size=q, gossip_interval=gossip_interval,
                             down_after=10 * gossip_interval, aae_interval=aae_interval,
                             tombstone_grace=tombstone_grace, sync=sync, replica_timeout=1.0,
                             background_interval=0.05, max_siblings=max_siblings)
        self.racks = racks
        self.moves = 0  # nodes started again at a new address (Sim.move)
        for i in range(nodes):
            self.add_node(f"n{i + 1}")
        founded = own.founding("n1", self.nodes["n1"].cfg.rack,
                               [(x.id, x.cfg.rack) for x in self.nodes.values()],
                               founded=self.wall_ms()) if nodes else None
        for sn in self.nodes.values():
            sn.links = {x.id: x.cfg.gossip for x in self.nodes.values() if x is not sn}
            if sn.core is not None:  # a fully formed cluster: everyone knows everyone
                for other in self.nodes.values():
                    if other is not sn:
                        sn.core.membership.merge([copy_member(other.core.membership.me)])
                assert founded is not None
                sn.core._adopt(founded.copy())  # and every member owns its share already
                # ... and has settled: the one-node cluster each booted as is no previous
                # owner to keep writing to (else every write of a run's first `settle`
                # seconds looked for extra targets; the membership scenarios change the
                # ring for real and keep that path)
                sn.core.forget_previous()
                sn.core.fresh.clear()
                sn.core.out.connect.clear()

    # ---- nodes --------------------------------------------------------------------------
    def add_node(self, node_id: str, seed_of: str | None = None, rack: str | None = None) -> str:
        """A new node; with `seed_of` it joins through that node, else it forms a cluster."""
        i = len(self.nodes)
        cfg = NodeConfig(id=node_id, listen=f"tcp://10.0.0.{i + 1}:7001",
                         gossip=f"tcp://10.0.0.{i + 1}:8001", data_dir=f"/sim/{node_id}",
                         rack=rack or f"rack{i % self.racks}",
                         seed=(self.nodes[seed_of].cfg.listen,) if seed_of else (),
                         **self.settings)
        sn = SimNode(cfg)
        self.nodes[node_id] = sn
        self.node_ids = sorted(self.nodes)  # (clients pick a node per request)
        self.by_endpoint[cfg.listen] = node_id
        self.by_ident[sn.ident] = node_id
        self._boot(sn)
        return node_id

    def _boot(self, sn: SimNode) -> None:
        # a node's incarnation is its wall clock at start (as transport.py's), later than any
        # earlier one of the same node; the wall clock is the virtual one, for the node's
        # handoff store, HLC and membership alike
        sn.incarnation = max(self.wall_ms(), sn.incarnation + 1)
        handoff = HandoffStore("", self.wall_ms, store=sn.handoff_mem)
        sn.core = NodeCore(sn.cfg, sn.store, handoff, incarnation=sn.incarnation, now=self.t,
                           saved=sn.saved, seal_key=self.seal_key)
        sn.core.start(self.t)
        sn.tick_at = float("inf")
        self._after_turn(sn)

    def crash(self, node_id: str, power_loss: bool = False) -> None:
        sn = self.nodes[node_id]
        if sn.core is None:
            return
        sn.saved = _cluster_json(sn.core)
        sn.store.closed_cleanly = False  # the next start sees an unclean shutdown
        if power_loss:
            self._power_loss(sn)
        else:
            unwritten = sn.store.crash() + sn.handoff_mem.crash()
            self.note(f"{node_id} crashes" + (f" ({unwritten} writes never written out go "
                                               "with it)" if unwritten else ""))
        self._stopped(sn)

    def _stopped(self, sn: SimNode) -> None:
        """The node's process is gone (crash, exit): no core, no queued frames, no links."""
        sn.core = None
        sn.paused = False
        sn.backlog.clear()
        sn.links.clear()
        sn.subs.clear()

    def _power_loss(self, sn: SimNode) -> None:
        """The node's engines lose their unsynced tail. A value that only this node held (in
        its store or as a hint) is then gone for good: the documented durability of
        sync="none" (and "interval"), not a broken promise. Such values are recorded in
        `lost_with_holder`, which the checkers excuse; any other loss stays a violation."""
        keys = {k for k, *_ in sn.store.undo}
        keys |= {k.partition(b"\x00")[2] for k, *_ in sn.handoff_mem.undo}
        before = {k: self._versions_on(sn, k) for k in keys}
        lost = sn.store.power_loss() + sn.handoff_mem.power_loss()
        gone = self._only_copies(sn, before)
        self.note(f"{sn.id} loses power ({lost} unsynced writes gone, {gone} values held "
                  "nowhere else)")

    def kill(self, node_id: str) -> None:
        """The node is gone for good, disk and all (what `zkv cluster force-remove` is for):
        values only it held are lost, and recorded in `lost_with_holder` like a power loss's."""
        sn = self.nodes[node_id]
        gone = self._disk_lost(sn)
        self.dead_held[node_id] = {
            k: {v for version in self._versions_on(sn, k) for v in version.live_values()}
            for k in sn.store.data}
        self.crash(node_id)
        sn.dead = True
        self.note(f"{node_id} is gone for good ({gone} values held nowhere else)")
        # the frames it sent before it died still arrive (_deliver_posthumous)
        events = self.events
        for i, (when, seq, fn, args) in enumerate(events):
            if fn == self._deliver and args[0] == node_id:
                events[i] = (when, seq, self._deliver_posthumous, args)  # (order unchanged)
        for other in self.nodes.values():
            other.backlog = [(POSTHUMOUS, item) if item[0] == node_id else item
                             for item in other.backlog]

    def _deliver_posthumous(self, src: str, dst, kind: str, who, payload: bytes) -> None:
        """A frame a node gone for good sent before it died. The values it held then whose
        last other copy this frame retires (a hint for it dropped on its late acknowledgment
        of the hint's delivery) are lost with it, as those it alone held when it died.
        (Counted at its death instead, n1 still held the hint of an N=1 value n2 had
        acknowledged: --scenario remove, seed 300024 and its replay flags.)"""
        target = self.nodes.get(dst) if isinstance(dst, str) else None
        if target is not None and target.paused and target.core is not None:
            target.backlog.append((POSTHUMOUS, (src, dst, kind, who, payload)))
            return
        held = self.dead_held[src]
        before = {k: self._held_alive(k) for k in held}
        self._deliver(src, dst, kind, who, payload)
        for k, had in held.items():
            gone = (had & before[k]) - self._held_alive(k)
            if gone:
                self.lost_with_holder.setdefault(k, set()).update(gone)

    def _held_alive(self, key: bytes) -> set[bytes]:
        """The values of `key` some node not gone for good holds (up or down)."""
        return {v for sn in self.nodes.values() if not sn.dead
                for version in self._versions_on(sn, key) for v in version.live_values()}

    def fill_disk(self, node_id: str, full: bool = True) -> None:
        """The node's disk fills up (`full`), or gets room again: while full, writing out
        fails (MemStore.write_out) and the engines refuse writes until the node's space check
        finds room (NodeCore._check_space)."""
        sn = self.nodes[node_id]
        if sn.store.full == full:
            return
        sn.store.full = sn.handoff_mem.full = full
        self.note(f"{node_id}'s disk {'is full' if full else 'has room again'}")

    def wipe(self, node_id: str, seed: str | None = None) -> None:
        """The node's disk is lost (reformatted, replaced): it crashes, and the next restart
        starts it with an empty data dir under the same id, joining through another node (as
        an operator restarts it with --seed). Values only it held are recorded as lost."""
        sn = self.nodes[node_id]
        if sn.core is None or sn.dead or sn.exited is not None:
            return
        gone = self._disk_lost(sn)
        self.crash(node_id)
        self._empty_disk(sn)
        sn.rejoin_through = seed or ""
        self.note(f"{node_id} loses its disk ({gone} values held nowhere else)")

    def _empty_disk(self, sn: SimNode, seed_of: str | None = None, moved: bool = False) -> None:
        """`sn` (down) starts next on an empty data dir; with `seed_of`, joining through that
        node (its --seed); `moved`: on another host, at a new address."""
        if moved:
            self.note(f"{sn.id} is on a new host ({self._readdress(sn)})")
        sn.store, sn.handoff_mem, sn.saved = MemStore(), MemStore(), {}
        if seed_of is not None:
            sn.cfg = dataclasses.replace(sn.cfg, seed=(self.nodes[seed_of].cfg.listen,))

    def _disk_lost(self, sn: SimNode) -> int:
        """Record the values only `sn` holds (store and hints) as lost; their count."""
        keys = set(sn.store.data) | {k.partition(b"\x00")[2] for k in sn.handoff_mem.data}
        return self._only_copies(sn, {k: self._versions_on(sn, k) for k in keys}, dead=True)

    def _only_copies(self, sn: SimNode, before: dict[bytes, list[dvv.DVVSet]],
                     dead: bool = False) -> int:
        """Record in `lost_with_holder` the values of `before` (versions `sn` held) that neither
        `sn` (unless `dead`) nor any other node holds now, and in `lost_deletes` the keys of
        its tombstones that no version held now descends from; the count of values."""
        gone = 0
        for k, versions in before.items():
            had = {v for version in versions for v in version.live_values()}
            tombs = [version for version in versions if version.is_tombstone()]
            held = [] if dead else self._versions_on(sn, k)
            for other in self.nodes.values():
                if other is not sn and not other.dead:
                    held += self._versions_on(other, k)
            for version in held:
                had.difference_update(version.live_values())
            if had:
                self.lost_with_holder.setdefault(k, set()).update(had)
                gone += len(had)
            if any(not any(dvv.descends(h, t) for h in held) for t in tombs):
                self.lost_deletes.add(k)
        return gone

    @staticmethod
    def _versions_on(sn: SimNode, key: bytes) -> list[dvv.DVVSet]:
        """The versions of `key` in the node's store, its hints and its reap journal (the
        tombstone a reap remembers: the deletion lives on there) (up or down)."""
        raws = [sn.store.data.get(key)]
        suffix = b"\x00" + key
        raws += [raw[REAP_HEAD if k.startswith(JOURNAL) else HINT_HEAD:]
                 for k, raw in sn.handoff_mem.data.items()
                 if k.endswith(suffix) and k.partition(b"\x00")[2] == key]
        out: list[dvv.DVVSet] = []
        for raw in raws:
            if raw:
                try:
                    out.append(dvv.DVVSet.decode(raw))
                except ValueError:
                    pass
        return out

    def restart(self, node_id: str) -> None:
        sn = self.nodes[node_id]
        if sn.core is None and sn.exited is None and not sn.dead:  # left or dead: stays gone
            if sn.rejoin_through is not None:  # its disk was lost: it joins through a seed,
                # one that is up and a member now, as an operator would pick (two wiped nodes
                # each naming the other wait for each other until their join times out)
                seed = sn.rejoin_through or next(
                    (x for x in self.node_ids if x != node_id and self.nodes[x].core is not None
                     and not self.nodes[x].core.joining), None)
                if seed is None:  # no member is up to join through: try again in a second
                    self.at(self.t + 1.0, self.restart, node_id)
                    return
                sn.rejoin_through = None
                sn.cfg = dataclasses.replace(sn.cfg, seed=(self.nodes[seed].cfg.listen,))
                self.note(f"{node_id} restarts empty, joining through {seed}")
                self._boot(sn)
                return
            self.note(f"{node_id} restarts")
            self._boot(sn)

    def move(self, node_id: str, seed_of: str | None = None) -> None:
        """A member that crashed is started again on its data dir at a new address (its
        machine came back with another IP): new --listen and --gossip, no --seed (or
        `seed_of`'s address now). Nobody hears it at the old address any more; it must tell
        the members where it is now."""
        sn = self.nodes[node_id]
        assert sn.core is None and sn.exited is None and not sn.dead, f"{node_id} is not down"
        host = self._readdress(sn)
        sn.cfg = dataclasses.replace(
            sn.cfg, seed=(self.nodes[seed_of].cfg.listen,) if seed_of else ())
        self.note(f"{node_id} restarts at a new address ({host})")
        self._boot(sn)

    def _readdress(self, sn: SimNode) -> str:
        """New --listen and --gossip for a node that is down (another host); the host."""
        self.moves += 1
        del self.by_endpoint[sn.cfg.listen]
        host = f"10.{self.moves}.0.{self.node_ids.index(sn.id) + 1}"
        sn.cfg = dataclasses.replace(sn.cfg, listen=f"tcp://{host}:7001",
                                     gossip=f"tcp://{host}:8001")
        self.by_endpoint[sn.cfg.listen] = sn.id
        return host

    def _move_if_down(self, node_id: str) -> None:
        """Faults.moves: a crashed node comes back at a new address (unless another fault's
        restart brought it back already, or it is gone for good)."""
        sn = self.nodes[node_id]
        if sn.core is None and sn.exited is None and not sn.dead and sn.rejoin_through is None:
            self.move(node_id)

    def start_again(self, node_id: str, seed_of: str | None = None, moved: bool = False) -> None:
        """An operator starts a node that left the cluster (and exited) again: on the data
        dir it left behind, or with `seed_of` on an empty one, joining through that node
        (`moved`: on another host, at a new address)."""
        sn = self.nodes[node_id]
        assert sn.exited is not None and sn.core is None, f"{node_id} did not leave"
        if seed_of is None:
            if moved:
                self.note(f"{node_id} is on a new host ({self._readdress(sn)})")
            sn.saved = _cluster_json(sn.exited)
            self.note(f"{node_id} is started again after it left")
        else:
            self._disk_lost(sn)
            self._empty_disk(sn, seed_of, moved)
            self.note(f"{node_id} is started again after it left, empty, through {seed_of}")
        sn.exited = None
        self._boot(sn)

    def rebuild(self, node_id: str, seed_of: str, moved: bool = False) -> None:
        """A node gone for good (`kill`) comes back: its machine rebuilt, started on an empty
        data dir under its old id, joining through `seed_of` (after the operator's
        `zkv cluster force-remove`; `moved`: on another host, at a new address)."""
        sn = self.nodes[node_id]
        assert sn.dead and sn.core is None, f"{node_id} is not gone for good"
        sn.dead = False
        self._empty_disk(sn, seed_of, moved)
        self.note(f"{node_id} is rebuilt: started on an empty data dir, through {seed_of}")
        self._boot(sn)

    def pause(self, node_id: str) -> None:
        self.nodes[node_id].paused = True
        self.note(f"{node_id} paused")

    def resume(self, node_id: str) -> None:
        sn = self.nodes[node_id]
        if not sn.paused:
            return
        sn.paused = False
        self.note(f"{node_id} resumed ({len(sn.backlog)} frames queued)")
        backlog, sn.backlog = sn.backlog, []
        for item in backlog:
            if item[0] is POSTHUMOUS:
                self._deliver_posthumous(*item[1])
            else:
                self._deliver(*item)
        if sn.core is not None:
            sn.tick_at = float("inf")
            self._tick_event(node_id, self.t)

    def partition(self, side_a: list[str], side_b: list[str], one_way: bool = False) -> None:
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))
        self.note(f"partition {sorted(side_a)} {'->' if one_way else '|'} {sorted(side_b)}")

    def heal(self) -> None:
        if self.blocked:
            self.note("partitions healed")
        self.blocked.clear()

    def note(self, what: str) -> None:
        self.log.append(f"{self.t:9.3f} {what}")

    def wall_ms(self) -> int:
        return 1_800_000_000_000 + int(self.t * 1000)  # a virtual wall clock (2027)

    # ---- events -------------------------------------------------------------------------
    def at(self, when: float, fn: Callable, *args) -> None:
        heapq.heappush(self.events, (when, next(self.seq), fn, args))

    def run_until(self, t_end: float) -> None:
        events, pop = self.events, heapq.heappop
        while events:
            when, seq, fn, args = pop(events)
            if when > t_end:  # (not due yet: back where it was in the order)
                heapq.heappush(events, (when, seq, fn, args))
                break
            self.t = when
            fn(*args)
        self.t = max(self.t, t_end)

    def _tick_event(self, node_id: str, when: float) -> None:
        sn = self.nodes[node_id]
        if when < sn.tick_at:
            sn.tick_at = when
            self.at(when, self._tick, node_id, when)

    def _tick(self, node_id: str, when: float) -> None:
        sn = self.nodes[node_id]
        if sn.tick_at != when or sn.core is None or sn.paused:
            return
        sn.tick_at = float("inf")
        sn.core.tick(self.t)
        self._after_turn(sn)

    def _after_turn(self, sn: SimNode) -> None:
        core = sn.core
        assert core is not None
        out = core.take_output()
        if out is not core.out:  # (else nothing to send: the empty box stayed the core's)
            self._send_out(sn, out)
        when = core.next_deadline()
        if when < sn.tick_at:  # (else the tick queued already comes first)
            floor = self.t + 1e-6
            if when < floor:
                when = floor
            if when < sn.tick_at:  # _tick_event, inline: this runs once per delivered frame
                sn.tick_at = when
                heapq.heappush(self.events, (when, next(self.seq), self._tick, (sn.id, when)))
        if core.exit_requested:
            self._exit(sn)
        elif core.join_error:
            self._join_failed(sn, core.join_error)

    def _join_failed(self, sn: SimNode, why: str) -> None:
        """The node's join failed (no seed answered within JOIN_TIMEOUT, a seed refused it): its
        transport stops it with that error, and the operator starts it again a second later
        through a member that is up (its seed may have moved to another address meanwhile:
        remove seed 70004 with --moves, a wiped node joining through a node that came back
        at a new address). Its data dir is kept (empty: it never joined)."""
        self.note(f"{sn.id} stops: {why}")
        self.crash(sn.id)
        sn.rejoin_through = ""
        self.at(self.t + 1.0, self.restart, sn.id)

    def _exit(self, sn: SimNode) -> None:
        """The node left the cluster: like its transport (transport.py), it stops at the end
        of the turn that decided it, failing what it still had in flight, and takes nothing
        after that. (Stopping it later let it take a write as the only stand-in after it had
        checked that no hint was left: seed 9 of the membership scenario with namespaces and
        a power loss.)"""
        core = sn.core
        assert core is not None
        self._send_out(sn, core.shutdown())
        self.note(f"{sn.id} exits (it left the cluster)")
        sn.exited = core
        self._stopped(sn)
        for other in self.nodes.values():
            other.links.pop(sn.id, None)

    def _send_out(self, sn: SimNode, out) -> None:
        src = sn.id
        nodes = self.nodes
        if out.connect:
            for m in out.connect:
                if m.id != src and m.id in nodes:
                    sn.links[m.id] = m.gossip
        if out.subscribe:
            for m in out.subscribe:
                if m.id != src and m.id in nodes:
                    sn.subs[m.id] = m.gossip
        if out.drop:
            for node_id in out.drop:
                sn.subs.pop(node_id, None)
        send = self._send_frame
        encode = wire.encode
        if out.peers:
            links, me = sn.links, sn.ident
            for node_id, msgs in out.peers.items():
                at = links.get(node_id)
                if at is not None and at == nodes[node_id].cfg.gossip:  # (not moved since)
                    if self.faults.lost_extras and self.faults.start <= self.t < self.faults.end:
                        msgs = self._lose_extras(sn, node_id, msgs)
                    send(src, node_id, REQUEST, me, encode(msgs))
        if out.clients:
            clients, by_ident = self.clients, self.by_ident
            for ident, msgs in out.clients.items():
                if ident in clients:  # a client's replies (the common case, first)
                    send(src, ident, "client", src, encode(msgs))
                elif ident in by_ident:  # a peer's request identity (b"peer:" + its id)
                    dst = by_ident[ident]
                    target = nodes.get(dst)
                    core = target.core if target is not None else None
                    if core is not None and core.joining:
                        send(src, dst, SEED, sn.cfg.listen, encode(msgs))
                    elif core is not None and core.asking_seeds:  # a member asking seeds:
                        # JoinOks on its seed link, the rest on its link to this member
                        seed = [m for m in msgs if type(m) is JoinOk]
                        if seed:
                            send(src, dst, SEED, sn.cfg.listen, encode(seed))
                        if len(seed) < len(msgs):
                            send(src, dst, REPLY, src,
                                 encode([m for m in msgs if type(m) is not JoinOk]))
                    else:
                        send(src, dst, REPLY, src, encode(msgs))
        if out.endpoints:
            for endpoint, msgs in out.endpoints.items():
                dst = self.by_endpoint.get(endpoint)
                if dst is not None:
                    send(src, dst, REQUEST, sn.ident, encode(msgs))
        if out.gossip:
            at = sn.cfg.gossip
            for msg in out.gossip:  # one PUB frame, delivered to every subscriber
                payload = encode([msg])
                for other in nodes.values():  # (subscribed to where it is now)
                    if (other.links.get(src) == at or other.subs.get(src) == at) \
                            and other is not sn:
                        send(src, other.id, GOSSIP, None, payload)

    def _lose_extras(self, sn: SimNode, dst: str, msgs: list) -> list:
        """`msgs` to `dst` without the uncounted write copies Faults.lost_extras loses."""
        core, rng, p = sn.core, self.rng, self.faults.lost_extras
        assert core is not None
        kept = []
        for m in msgs:
            if type(m) is RPut and not m.owner and rng.random() < p:
                ks = key_settings(m.key)
                if dst not in core.membership.ring(ks[0] if ks else None).preflist_for_key(
                        m.key):
                    self.stats["lost"] += 1
                    continue
            kept.append(m)
        return kept

    def _send_frame(self, src: str, dst, kind: str, who, payload: bytes) -> None:
        f = self.faults
        stats = self.stats
        stats["frames"] += 1
        rng = self.rng
        if f.loss and rng.random() < f.loss:
            stats["lost"] += 1
            return
        frame = (src, dst, kind, who, payload)
        if f.dup and rng.random() < f.dup:
            stats["duplicated"] += 1
            heapq.heappush(self.events, (self.t + (f.latency + rng.random() * f.jitter),
                                         next(self.seq), self._deliver, frame))
        heapq.heappush(self.events, (self.t + (f.latency + rng.random() * f.jitter),
                                     next(self.seq), self._deliver, frame))

    def client_request(self, name: str, ident: bytes, node: str, payload: bytes) -> None:
        """A client's request frame reaches `node` (queued while it is paused)."""
        sn = self.nodes[node]
        if sn.core is None:
            return
        if sn.paused:
            sn.backlog.append((name, node, REQUEST, ident, payload))
            return
        sn.core.handle((REQUEST, ident), wire.decode(payload, LIMIT, requests=True), self.t)
        self._after_turn(sn)

    def _deliver(self, src: str, dst, kind: str, who, payload: bytes) -> None:
        if self.blocked and (src, dst) in self.blocked:
            self.stats["lost"] += 1
            return
        if self.undialable and ((kind == GOSSIP and src in self.undialable) or (
                kind == REQUEST and dst in self.undialable and src in self.nodes)):
            self.stats["lost"] += 1
            return
        if (self.undialable_requests and kind == REQUEST and dst in self.undialable_requests
                and src in self.nodes):
            self.stats["lost"] += 1
            return
        if kind == "client":
            client = self.clients.get(dst)
            if client is None:  # (a lister gone since: Sim.list_keys; as a closed socket)
                self.stats["lost"] += 1
                return
            client.on_frame(src, wire.decode(payload, LIMIT))
            return
        sn = self.nodes[dst]
        core = sn.core
        if core is None:
            self.stats["lost"] += 1
            return
        if sn.paused:
            sn.backlog.append((src, dst, kind, who, payload))
            return
        self.stats["delivered"] += 1
        msgs = wire.decode(payload, LIMIT, requests=kind == REQUEST)
        if kind == GOSSIP and dst in self.stale_view:
            msgs = [msgspec.structs.replace(m, cluster=b"", progress_epoch=0, progress=[],
                                            progress_n=[])
                    if type(m) is wire.Gossip else m for m in msgs]
        core.handle((kind, who), msgs, self.t)
        self._after_turn(sn)

    # ---- faults -------------------------------------------------------------------------
    def schedule_faults(self) -> None:
        """Turn the fault intensities into timed events (from this sim's RNG)."""
        f, rng, ids = self.faults, self.rng, sorted(self.nodes)

        def when(length: float) -> tuple[float, float]:
            start = f.start + rng.random() * max(0.0, f.end - f.start - length)
            return start, min(f.end, start + length)

        for _ in range(f.partitions):
            start, stop = when(1.0 + rng.random() * 3)
            kind = rng.choice(["halves", "isolate", "one-way", "flap"])
            shuffled = ids[:]
            rng.shuffle(shuffled)
            if kind == "halves":
                cut = rng.randint(1, len(ids) - 1)
                a, b = shuffled[:cut], shuffled[cut:]
            else:
                a, b = shuffled[:1], shuffled[1:]
            if kind == "flap":
                t = start
                while t < stop:
                    self.at(t, self.partition, a, b)
                    self.at(t + 0.3, self.heal)
                    t += 0.6
            else:
                self.at(start, self.partition, a, b, kind == "one-way")
                self.at(stop, self.heal)
        for _ in range(f.pauses):
            start, stop = when(0.5 + rng.random() * 3)
            node = rng.choice(ids)
            self.at(start, self.pause, node)
            self.at(stop, self.resume, node)
        crashes = [(False, i) for i in range(f.crashes)] + [(True, i) for i in range(f.power_losses)]
        for power, _ in crashes:
            start, stop = when(0.5 + rng.random() * 2)
            node = rng.choice(ids)
            self.at(start, self.crash, node, power)
            self.at(stop, self.restart, node)
        for _ in range(f.wipes):
            start, stop = when(0.5 + rng.random() * 2)
            node = rng.choice(ids)
            self.at(start, self.wipe, node)
            self.at(stop, self.restart, node)
        for _ in range(f.stale_views):
            start, stop = when(1.0 + rng.random() * 3)
            node = rng.choice(ids)
            self.at(start, self.stale_view.add, node)
            self.at(stop, self.stale_view.discard, node)
        for _ in range(f.moves):
            start, stop = when(0.5 + rng.random() * 2)
            node = rng.choice(ids)
            self.at(start, self.crash, node)
            self.at(stop, self._move_if_down, node)
        for _ in range(f.full_disks):
            start, stop = when(1.0 + rng.random() * 3)
            node = rng.choice(ids)
            self.at(start, self.fill_disk, node)
            self.at(stop, self.fill_disk, node, False)
        # at the end of the fault window everything is repaired
        self.at(f.end, self.heal)
        for node in ids if f.full_disks else ():
            self.at(f.end, self.fill_disk, node, False)
        if f.stale_views:
            self.at(f.end, self.stale_view.clear)
        for node in ids:
            self.at(f.end, self.resume, node)
            self.at(f.end, self.restart, node)

    # ---- inspection ---------------------------------------------------------------------
    def held(self, node_id: str, key: bytes) -> bytes:
        """The version a node stores itself for key (b"" when none)."""
        return self.nodes[node_id].store.get(key) or b""

    def owners(self, key: bytes) -> tuple[str, ...]:
        """The owners of a stored key (a namespaced key's follow its namespace's N)."""
        cores = [sn.core for sn in self.nodes.values() if sn.core is not None]
        # (a node still joining, e.g. back after a wipe, knows no ring yet)
        core = next((c for c in cores if not c.joining), cores[0])
        ks = key_settings(key)
        return core.membership.ring(ks[0] if ks else None).preflist_for_key(key)

    def replicas_agree(self, keys) -> list[bytes]:
        """Keys whose owners do not all hold the same version (and hints still pending)."""
        bad = []
        for key in keys:
            held = {self.held(x, key) for x in self.owners(key)}
            if len(held) != 1:
                bad.append(key)
        return bad

    def list_keys(self, ns: str = "", op: str = "keys", r: int | None = 1,
                  limit: float = 120.0) -> list | str:
        """A listing of namespace `ns` (""/"default" or a name) by zkv.client's own ClientCore
        (`op` "keys": list_keys, "items": list_items; at `r`; pages of 7) over the simulated
        network, run on the virtual clock until it ends: its keys or (key, values) items, or
        why it failed. Its requests are no workload's: not in the history."""
        got: list[Result] = []

        def workload(c):
            got.append((yield (op, (ns or "default").encode(), r)))

        client = CoreClient(self, f"lister{next(self.seq)}", workload, timeout=5.0)
        add, self.history.add = self.history.add, lambda ev: None
        try:
            end = self.t + limit
            while not client.done and self.t < end:
                self.run_until(self.t + 0.5)
        finally:
            self.history.add = add
            del self.clients[client.ident]
        if not got:
            return f"the listing did not end within {limit:.0f} s"
        return got[0].values if got[0].ok else got[0].error

    def hints_pending(self) -> int:
        """Hints not yet delivered (the handoff store's reap journal is not one), also on a
        node that is down (not on one gone for good: its hints went with it)."""
        return sum(1 for sn in self.nodes.values() if not sn.dead for k in sn.handoff_mem.data
                   if not k.startswith(JOURNAL))



# ---- clients and history --------------------------------------------------------------------
@dataclass(slots=True)
class Event:
    client: str
    op: str
    key: bytes
    value: bytes | None
    start: float
    end: float = 0.0
    ok: bool = False
    result: Result | None = None


class History:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.add: Callable[[Event], None] = self.events.append  # (a C call per operation)


Workload = Generator[tuple, Result, None]


class _Alarm:
    """A client's one timer (its try's end, its step's nearest end): `set` replaces the one
    set before, `clear` drops it, and it fires exactly when an event of its own would have
    (its place in the order is taken when it is set). Most are moot before they are due: a
    try is answered first. Rather than an event each (popped for nothing later), one event
    stays in the queue at or before the wanted time, and when it comes it fires the alarm
    or waits on for the later one set since."""

    __slots__ = ("sim", "wanted", "armed")

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.wanted: tuple[tuple[float, int], Callable, tuple] | None = None
        self.armed: tuple[float, int] | None = None  # (time, seq) of the event waited on

    def set(self, when: float, fn: Callable, *args) -> None:
        key = (when, next(self.sim.seq))
        self.wanted = (key, fn, args)
        armed = self.armed
        if armed is None or key < armed:
            self.armed = key
            heapq.heappush(self.sim.events, (when, key[1], self._ring, (key,)))

    def clear(self) -> None:
        self.wanted = None

    def _ring(self, key: tuple[float, int]) -> None:
        if key != self.armed:
            return  # an earlier alarm was set after this event was queued
        self.armed = None
        wanted = self.wanted
        if wanted is None:
            return
        if wanted[0] == key:
            self.wanted = None
            wanted[1](*wanted[2])
        else:  # set since, for later: wait on for it (it sorts after everything run so far)
            self.armed = key = wanted[0]
            heapq.heappush(self.sim.events, (key[0], key[1], self._ring, (key,)))


def _workload_step(client, result: Result | None) -> tuple[tuple, Event] | None:
    """Advance `client`'s workload with `result`: its next request as (op, key, a, b, c),
    the optional arguments None when not given, and its history event; or None when it has
    finished (`client.done`) or asked to sleep (it is resumed later with an ok Result)."""
    try:
        req = client.gen.send(result) if result is not None else next(client.gen)
    except StopIteration:
        client.done = True
        return None
    op = req[0]
    if op == "sleep":
        client.sim.at(client.sim.t + req[1], client._next, Result(True))
        return None
    ev = Event(client.name, op, req[1], req[2] if op == "put" else None, client.sim.t)
    if len(req) != 5:  # (a put's request is already in shape)
        req = (tuple(req) + (None,) * 5)[:5]
    return req, ev


class SimClient:
    """A client driving one workload: each request goes to a node chosen by the sim's RNG
    (like a client behind a load balancer), fails over to another node after `per_try` or at
    once on a "not now" answer (E_UNAVAILABLE, as zkv.client does), and gives up after
    `timeout`. Retries of a write carry the same write id."""

    def __init__(self, sim: Sim, name: str, workload: Callable[[SimClient], Workload],
                 timeout: float = 2.0, per_try: float = 1.0, think: float = 0.01,
                 nodes: list[str] | None = None, namespace: str = "") -> None:
        self.sim = sim
        self.namespace = namespace  # every request names it ("": the default namespace)
        self.nodes = nodes  # coordinators this client talks to (default: every node)
        self.name = name
        self.ident = b"client:" + name.encode()
        sim.clients[self.ident] = self
        self.timeout = timeout
        self.per_try = per_try
        self.think = think
        self.rid = 0
        self.suspect_until: dict[str, float] = {}
        self.current: tuple | None = None  # (rid, event, request, deadline, tried)
        self.gen = workload(self)
        self.done = False
        self.stamp_floor = 0  # as the real client: the highest lww stamp a reply carried
        self.ttl = 0  # every put's own ttl (Put.ttl; 0: none): a workload may set it
        self.pr = self.pw = 0  # every get's and write's primary quorum (0: none), likewise
        self.alarm = _Alarm(sim)  # the try's end
        sim.at(sim.t, self._next, None)

    def _next(self, result: Result | None) -> None:
        step = _workload_step(self, result)
        if step is None:
            return
        (op, key, a, b, c), ev = step
        wid = self.sim.rng.randbytes(16)
        if op == "get":
            msg = Get(0, key, a or 0)
            msg.pr = self.pr
        elif op == "put":
            msg = Put(0, key, a, b or b"", c or 0)
            msg.wid = wid
            msg.floor = self.stamp_floor
            msg.ttl = self.ttl
            msg.pw = self.pw
        else:
            msg = Delete(0, key, a or b"", b or 0, wid)
            msg.pw = self.pw
        self._try(ev, msg, self.sim.t + self.timeout, set())

    def _try(self, ev: Event, msg, deadline: float, tried: set[str]) -> None:
        sim = self.sim
        pool = self.nodes or sim.node_ids
        live = ([x for x in pool if x not in tried] or pool) if tried else pool
        until = self.suspect_until
        trusted = [x for x in live if until.get(x, -1.0) <= sim.t] if until else live
        rng = sim.rng
        node = rng.choice(trusted or live)
        tried.add(node)
        rid = self.rid = self.rid + 1
        msg.rid = rid
        if self.namespace:
            msg.ns = self.namespace
        self.current = (rid, ev, msg, deadline, tried)
        payload = wire.encode([msg])
        delay = sim.faults.latency + rng.random() * sim.faults.jitter
        t = sim.t
        heapq.heappush(sim.events, (t + delay, next(sim.seq), sim.client_request,
                                    (self.name, self.ident, node, payload)))  # (Sim.at, inline)
        self.alarm.set(min(deadline, t + self.per_try), self._expire, rid)

    def _expire(self, rid: int) -> None:
        if self.current is None or self.current[0] != rid:
            return
        _, ev, msg, deadline, tried = self.current
        for node in tried:  # like the real client: a node that missed a try is tried last
            self.suspect_until[node] = self.sim.t + 3.0
        if self.sim.t >= deadline:
            self._finish(ev, Result(False, error="timeout"))
        else:
            self._try(ev, msg, deadline, tried)

    def on_frame(self, node: str, msgs: list) -> None:
        for msg in msgs:
            if self.current is None or msg.rid != self.current[0]:
                continue  # a late answer to an abandoned try
            ev = self.current[1]
            t = type(msg)  # (message structs have no subclasses)
            if t is GetOk or t is PutOk:
                if msg.stamp > self.stamp_floor:
                    self.stamp_floor = msg.stamp
            if t is GetOk:
                self._finish(ev, Result(True, list(msg.values), msg.context))
            elif t is PutOk:
                self._finish(ev, Result(True, [], msg.context))
            elif t is Error:
                if msg.code == wire.E_UNAVAILABLE and self._another():
                    return
                self._finish(ev, Result(False, error=msg.message))

    def _another(self) -> bool:
        """A "not now" answer (busy, still joining, shutting down): as the real client, ask a
        node not tried yet, with the same request (and write id). False: none is left."""
        assert self.current is not None
        _, ev, req, deadline, tried = self.current
        if self.sim.t >= deadline or all(x in tried for x in (self.nodes or self.sim.node_ids)):
            return False
        self._try(ev, req, deadline, tried)
        return True

    def _finish(self, ev: Event, res: Result) -> None:
        self.current = None
        self.alarm.clear()
        sim = self.sim
        ev.end = sim.t
        ev.ok = res.ok
        ev.result = res
        sim.history.add(ev)
        heapq.heappush(sim.events, (sim.t + self.think * sim.rng.random(), next(sim.seq),
                                    self._next, (res,)))  # (Sim.at, inline: per operation)


class _Step:
    """One Batch step of a ClientCore plan on the simulated network: each node's share of the
    step goes out as one frame; each try's answer is the first reply with its rid (or an
    `also` rid), else SLOW at `soft`, else None at `until` (UNREACHABLE, after the network
    delay, for a crashed node); `resume` gets the list once every try has its answer."""

    __slots__ = ("sim", "alarm", "resume", "live", "results", "left", "by_rid", "ends")

    def __init__(self, sim: Sim, client, sends: list, resume: Callable[[list], None]) -> None:
        self.sim = sim
        self.alarm: _Alarm = client.alarm  # (the client's: one step at a time)
        self.resume = resume
        self.live = True
        self.results = [_PENDING] * len(sends)
        self.left = len(sends)  # tries still without an answer
        by_rid: dict[int, int] = {}
        self.by_rid = by_rid
        # per try waiting on the clock: (when, what it hears then); one event at the nearest
        # (an event per try cost more than the rest of the step: most are answered first)
        ends: list[tuple[float, object] | None] = [None] * len(sends)
        self.ends = ends
        frames: dict[str, list] = {}
        nodes, by_endpoint, faults, rng = sim.nodes, sim.by_endpoint, sim.faults, sim.rng
        nearest = math.inf
        for i, send in enumerate(sends):
            if send.also:
                for _, rid in send.also:
                    by_rid[rid] = i
            msg = send.msg
            if msg is not None:
                by_rid[msg.rid] = i
                node = by_endpoint.get(send.endpoint)
                if node is None or nodes[node].core is None:
                    delay = faults.latency + rng.random() * faults.jitter
                    sim.at(sim.t + delay, self._answer, i, UNREACHABLE)
                    continue
                box = frames.get(node)
                if box is None:
                    frames[node] = [msg]
                else:
                    box.append(msg)
            soft, until = send.soft, send.until
            if soft is not None and soft < until:
                ends[i] = (soft, SLOW)
                if soft < nearest:
                    nearest = soft
            else:
                ends[i] = (until, None)
                if until < nearest:
                    nearest = until
        if nearest < math.inf:  # (every try is still unanswered: _arm's nearest end)
            self.alarm.set(nearest, self._expire)
        if frames:  # (Sim.at, inline: an event per node the step reaches)
            events, push, t = sim.events, heapq.heappush, sim.t
            request, name, ident = sim.client_request, client.name, client.ident
            for node, msgs in frames.items():  # each node's share of the step in one frame
                delay = faults.latency + rng.random() * faults.jitter
                push(events, (t + delay, next(sim.seq), request,
                              (name, ident, node, wire.encode(msgs))))

    def _arm(self) -> None:
        results = self.results
        due = [end[0] for i, end in enumerate(self.ends)
               if end is not None and results[i] is _PENDING]
        if due:
            self.alarm.set(min(due), self._expire)

    def _expire(self) -> None:
        """The nearest end is due: each try still unanswered whose end has come hears what
        it does then (in try order), and the next end is waited for."""
        if not self.live:
            return
        now = self.sim.t
        for i, end in enumerate(self.ends):
            if end is not None and end[0] <= now and self.results[i] is _PENDING:
                self._answer(i, end[1])
                if not self.live:
                    return
        self._arm()

    def _answer(self, i: int, answer) -> None:
        if self.live and self.results[i] is _PENDING:
            self.results[i] = answer
            self.left -= 1
            if not self.left:
                self.live = False
                self.resume(self.results)

    def on_frame(self, msgs: list) -> None:
        # (_answer, inline: a try still pending means the step is live, and the last answer
        # ends it, so nothing after it in the frame counts)
        by_rid, results, left = self.by_rid, self.results, self.left
        for msg in msgs:
            i = by_rid.get(msg.rid)
            if i is not None and results[i] is _PENDING:
                results[i] = msg
                left -= 1
                if not left:
                    self.left = 0
                    self.live = False
                    self.resume(results)
                    return
        self.left = left


def _all_pages(listing, tries: int = 5) -> Generator:
    """The plan of a whole listing (KeyListing): its pages' plans one after the other, a page
    that failed (the simulated network loses messages at random, which TCP does not) asked
    again from where the listing stands, up to `tries` times in all."""
    got: list = []
    failures = 0
    while (plan := listing.next_page()) is not None:
        try:
            got += yield from plan
        except (Unavailable, RequestTimeout, QuorumError):
            failures += 1
            if failures >= tries:
                raise
    return got


class AdminClient:
    """An admin connection (namespace create, alter, drop, truncate): `request` sends one
    message to a node that is up, sends it again each `retry` seconds until an answer comes
    (a frame may be lost; send only idempotent requests: an NsDrop naming its generation),
    and calls `done(reply)` with it, or with None after `give_up` seconds. Its requests are
    no workload's: not in the history."""

    def __init__(self, sim: Sim, name: str = "admin") -> None:
        self.sim = sim
        self.name = name
        self.ident = b"client:" + name.encode()
        sim.clients[self.ident] = self  # type: ignore[assignment]  # (its replies come here)
        self.replies: dict[int, object] = {}
        self.rid = 0
        self.done = True  # (never a workload still running: Sim's "all clients done")

    def on_frame(self, node: str, msgs: list) -> None:
        for m in msgs:
            self.replies.setdefault(m.rid, m)

    def send(self, node: str, msg) -> None:
        """One frame to `node` now (if it is up, not paused)."""
        sn = self.sim.nodes[node]
        if sn.core is None or sn.paused:
            return
        sn.core.handle((REQUEST, self.ident), [msg], self.sim.t)
        self.sim._after_turn(sn)

    def request(self, msg, done: Callable[[object], None] | None = None,
                node: str | None = None, retry: float = 1.0, give_up: float = 15.0) -> int:
        """Send `msg` (its rid set here) to `node` (None: one up, picked by the sim's RNG)."""
        self.rid += 1
        msg.rid = self.rid
        end = self.sim.t + give_up

        def attempt() -> None:
            if msg.rid in self.replies:
                if done is not None:
                    done(self.replies[msg.rid])
                return
            if self.sim.t >= end:
                if done is not None:
                    done(None)
                return
            up = [x for x in self.sim.node_ids if self.sim.nodes[x].core is not None
                  and not self.sim.nodes[x].paused]
            if node is not None or up:
                self.send(node or self.sim.rng.choice(up), msg)
            self.sim.at(self.sim.t + retry, attempt)
        attempt()
        return msg.rid


class CoreClient:
    """zkv.client's own ClientCore over the simulated network, on the virtual clock: a third
    driver of its plans beside the sync and async ones, so the real client's routing (by the
    ring it fetches), failover, suspicion, hedged tries, "not now" retries and write ids meet
    the simulated faults. Same workload protocol and history as SimClient.

    What a Send becomes: the message reaches the node behind the endpoint after the network's
    latency (a crashed node refuses the connection: UNREACHABLE); the plan is resumed with the
    first reply whose rid is the try's or one of `also`'s, else SLOW at `soft`, else None at
    `until`."""

    def __init__(self, sim: Sim, name: str, workload: Callable[[CoreClient], Workload],
                 timeout: float = 2.0, think: float = 0.01, namespace: str = "") -> None:
        self.sim = sim
        self.name = name
        self.namespace = namespace  # every request names it ("": the default namespace)
        self.ident = b"client:" + name.encode()
        sim.clients[self.ident] = self
        self.think = think
        self.core = ClientCore([sim.nodes[n].cfg.listen for n in sim.node_ids], timeout,
                               clock=lambda: sim.t, rng=random.Random(sim.rng.random()),
                               wall_ms=sim.wall_ms)
        self.ttl: int | None = None  # every put's own ttl (None: none): a workload may set it
        self.pr: int | None = None  # every get's primary quorum (None: none), likewise
        self.pw: int | None = None  # every write's
        self.gen = workload(self)
        self.done = False
        self.plan: Generator | None = None
        self.ev: Event | None = None
        self.rids: set[int] | frozenset[int] = _NO_RIDS  # the answers the plan waits for
        self.step: _Step | None = None  # the Batch the plan waits for
        self.alarm = _Alarm(sim)  # the Send's end (or its step's): a newer one replaces it
        sim.at(sim.t, self._next, None)

    def _next(self, result: Result | None) -> None:
        step = _workload_step(self, result)
        if step is None:
            return
        (op, key, a, b, c), self.ev = step
        core, ns = self.core, self.namespace or "default"
        if op == "get":
            self.plan = core.get(key, a, namespace=ns, pr=self.pr)
        elif op == "put":
            self.plan = core.put(key, a, b, c, namespace=ns, ttl=self.ttl, pw=self.pw)
        elif op in ("keys", "items"):  # (key: the namespace; a: r; pages of 7)
            listing = (core.list_items(key.decode(), page=7, r=a) if op == "items"
                       else core.list_keys(key.decode(), page=7, r=a))
            self.plan = _all_pages(listing)
        else:
            self.plan = core.delete(key, a, b, namespace=ns, pw=self.pw)
        self._resume(None, first=True)

    def _resume(self, answer, first: bool = False) -> None:
        assert self.plan is not None
        self.rids = _NO_RIDS
        self.step = None
        self.alarm.clear()
        try:
            send = next(self.plan) if first else self.plan.send(answer)
        except StopIteration as stop:
            value = stop.value
            if isinstance(value, GetResult):
                self._finish(Result(True, list(value.values), value.context))
            elif isinstance(value, list):  # a listing's keys or items
                self._finish(Result(True, value))
            else:
                self._finish(Result(True, [], value))
            return
        except ZkvError as exc:
            self._finish(Result(False, error=str(exc)))
            return
        sim = self.sim
        if type(send) is Batch:  # a get asking R owners itself (client-coordinated read)
            self.step = _Step(sim, self, send.sends, self._resume)
            return
        rids = self.rids = {rid for _, rid in send.also} if send.also else set()
        msg = send.msg
        if msg is not None:
            rids.add(msg.rid)
            node = sim.by_endpoint.get(send.endpoint)
            faults = sim.faults
            delay = faults.latency + sim.rng.random() * faults.jitter
            if node is None or sim.nodes[node].core is None:
                self.alarm.set(sim.t + delay, self._resume, UNREACHABLE)
                return
            heapq.heappush(sim.events, (sim.t + delay, next(sim.seq), sim.client_request,
                                        (self.name, self.ident, node, wire.encode([msg]))))
        soft, until = send.soft, send.until
        if soft is not None and soft < until:
            self.alarm.set(soft, self._resume, SLOW)
        else:
            self.alarm.set(until, self._resume, None)

    def on_frame(self, node: str, msgs: list) -> None:
        if self.step is not None:
            self.step.on_frame(msgs)
            return
        rids = self.rids
        for msg in msgs:
            if msg.rid in rids and self.plan is not None:
                self._resume(msg)
                return

    def _finish(self, res: Result) -> None:
        self.plan = None
        ev = self.ev
        assert ev is not None
        sim = self.sim
        ev.end = sim.t
        ev.ok = res.ok
        ev.result = res
        sim.history.add(ev)
        heapq.heappush(sim.events, (sim.t + self.think * sim.rng.random(), next(sim.seq),
                                    self._next, (res,)))  # (Sim.at, inline: per operation)


class _User:
    """One workload of a ManyClient: what `_workload_step` needs of a client."""

    def __init__(self, owner: ManyClient, name: str, workload: Callable) -> None:
        self.owner, self.sim, self.name = owner, owner.sim, name
        self.namespace = owner.namespace
        self.done = False
        self.gen = workload(self)

    def _next(self, result: Result | None) -> None:  # back from a "sleep"
        self.owner.ready(self, result)


class ManyClient:
    """Several workloads ("users") sharing one zkv.client ClientCore through its batch calls:
    each round takes every user's next request (get, put or delete, mixed), runs them as one
    `ClientCore.many` plan (each request keeps its own routing, failover, hedging and write
    id), and hands each user its result. A Batch step reaches each node as one frame; each
    try's answer is the first reply with its rid (or an `also` rid), else SLOW at `soft`,
    else None at `until`, and the plan resumes when every try of the step has its answer."""

    def __init__(self, sim: Sim, name: str, workloads: list[Callable], timeout: float = 2.0,
                 think: float = 0.01, namespace: str = "") -> None:
        self.sim = sim
        self.name = name
        self.namespace = namespace
        self.ident = b"client:" + name.encode()
        sim.clients[self.ident] = self
        self.think = think
        self.core = ClientCore([sim.nodes[n].cfg.listen for n in sim.node_ids], timeout,
                               clock=lambda: sim.t, rng=random.Random(sim.rng.random()),
                               wall_ms=sim.wall_ms)
        self.pr: int | None = None  # every get's primary quorum (None: none), as CoreClient's
        self.pw: int | None = None  # every write's
        self.users = [_User(self, f"{name}.{i}", w) for i, w in enumerate(workloads)]
        self.queued: list[tuple[_User, tuple, Event]] = []  # users' next requests
        self.round: list[tuple[_User, tuple, Event]] | None = None
        self.plan: Generator | None = None
        self.step: _Step | None = None  # the Batch the plan waits for
        self.alarm = _Alarm(sim)  # the step's nearest end
        self.starting = False
        for u in self.users:
            sim.at(sim.t, u._next, None)

    @property
    def done(self) -> bool:
        return all(u.done for u in self.users)

    def ready(self, user: _User, result: Result | None) -> None:
        step = _workload_step(user, result)
        if step is not None:
            req, ev = step
            self.queued.append((user, req, ev))
        # (also when this user is done: requests queued during the round that just ended
        # wait for a start; seed 70040 of the all-faults sweep stranded three that way)
        if self.queued and self.round is None and not self.starting:
            self.starting = True
            self.sim.at(self.sim.t + self.think * self.sim.rng.random(), self._start)

    def _start(self) -> None:
        self.starting = False
        self.round, self.queued = self.queued, []
        core, ns = self.core, self.namespace or "default"
        get, put, pr, pw = core.get, core.put, self.pr, self.pw
        plans = []
        for _, (op, key, a, b, c), _ev in self.round:
            if op == "get":
                plans.append(get(key, a, namespace=ns, pr=pr))
            elif op == "put":
                plans.append(put(key, a, b, c, namespace=ns, pw=pw))
            else:
                plans.append(core.delete(key, a, b, namespace=ns, pw=pw))
        self.plan = core.many(plans, return_exceptions=True)
        self._resume(None, first=True)

    def _resume(self, answer, first: bool = False) -> None:
        assert self.plan is not None and self.round is not None
        self.alarm.clear()  # (the step it was waiting on has every answer)
        try:
            batch = next(self.plan) if first else self.plan.send(answer)
        except StopIteration as stop:
            self.step = None
            self._finish(stop.value)
            return
        self.step = _Step(self.sim, self, batch.sends, self._resume)

    def on_frame(self, node: str, msgs: list) -> None:
        if self.plan is not None and self.step is not None:
            self.step.on_frame(msgs)

    def _finish(self, values: list) -> None:
        done, self.round, self.plan = self.round, None, None
        assert done is not None
        t, add, ready = self.sim.t, self.sim.history.add, self.ready
        for (user, _, ev), value in zip(done, values, strict=True):
            kind = type(value)  # (the two common kinds first: neither is a ZkvError)
            if kind is GetResult:
                res = Result(True, list(value.values), value.context)
            elif kind is bytes:
                res = Result(True, [], value)
            elif isinstance(value, ZkvError):
                res = Result(False, error=str(value))
            elif isinstance(value, GetResult):
                res = Result(True, list(value.values), value.context)
            else:
                res = Result(True, [], value)
            ev.end, ev.ok, ev.result = t, res.ok, res
            add(ev)
            ready(user, res)


_PENDING = object()
_NO_RIDS: frozenset[int] = frozenset()  # (CoreClient.rids between a try and the next)


def live_values(encoded: bytes) -> list[bytes]:
    return dvv.DVVSet.decode(encoded).live_values() if encoded else []
