"""The zkv-node server: sockets, the reactor loop, dispatch. One thread, no thread per request.

Sockets:
- ROUTER bound on --listen: client requests, and requests from peers (their DEALERs).
- one DEALER per peer, connected to the peer's --listen, for our requests to it; the peer's
  replies come back on it. ZMQ_IMMEDIATE keeps messages from queueing for dead peers.
- PUB bound on --gossip; SUB connected to every member's gossip endpoint.

Each loop turn drains every ready socket without blocking (bounded per socket, so one busy
peer cannot starve the rest), runs the handlers, fires due timers, then flushes: with
sync="always" one fsync covers every write of the turn (group commit) before any
acknowledgement leaves, and all messages for one destination go out as one frame.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import signal
import struct
import time

import zmq

from zkv import wire
from zkv._core import dvv
from zkv._core.ring import partition_of
from zkv.config import NodeConfig
from zkv.errors import ZkvError
from zkv.node.antientropy import (
    AntiEntropy,
    Exchange,
    children,
    leaf_keys,
    pack_hashes,
    pack_listing,
    vdigest,
)
from zkv.node.background import ExchangeOp, FetchRepairOp, HandoffOp
from zkv.node.coordinator import ForwardOp, GetOp, Op, WriteOp
from zkv.node.handoff import Hints
from zkv.node.membership import Membership
from zkv.node.metrics import NodeMetrics
from zkv.node.replica import Replica
from zkv.storage import LogStore
from zkv.wire import (
    E_INVALID,
    E_UNAVAILABLE,
    Delete,
    Error,
    Forward,
    Get,
    Gossip,
    Join,
    JoinOk,
    LeafKeys,
    LeafKeysOk,
    Member,
    Put,
    Reap,
    Repair,
    RepairOk,
    RGet,
    RGetHashes,
    RGetHashesOk,
    RGetOk,
    RingInfo,
    RingOk,
    RPut,
    RPutOk,
    Status,
    StatusOk,
    TreeLevel,
    TreeLevelOk,
)

log = logging.getLogger("zkv.node")

DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn
JOIN_TIMEOUT = 60.0


class Node:
    def __init__(self, cfg: NodeConfig, clock=time.monotonic) -> None:
        self.cfg = cfg
        self.me = cfg.id
        self.clock = clock
        os.makedirs(cfg.data_dir, exist_ok=True)
        self.store = LogStore(
            os.path.join(cfg.data_dir, "data"),
            sync="interval" if cfg.sync == "interval" else "none",
            sync_interval_ms=cfg.sync_interval_ms,
            max_key_size=cfg.max_key_size,
            max_value_size=cfg.max_value_size,
        )
        self.hints = Hints(os.path.join(cfg.data_dir, "hints"), lambda: time.time_ns() // 1_000_000,
                           sync="interval" if cfg.sync == "interval" else "none")
        # the cluster never deletes through the engine except to reap, and the engine keeps
        # release marks in memory only: re-release what earlier lives reaped
        self.store.release_tombstones(self.store.tombstones())
        self.replica = Replica(cfg.id, self.store, self.hints, cfg.sibling_warn)
        self.metrics = NodeMetrics()
        self.replica.on_siblings = self._on_siblings
        self.limit = wire.frame_limit(cfg.max_key_size, cfg.max_value_size)

        saved = self._load_cluster()
        settings = saved.get("settings") or {"q": cfg.ring_size, "n": cfg.n, "r": cfg.r, "w": cfg.w}
        # wall-clock milliseconds: a restart always outranks the previous life, even with a wiped
        # data dir (heartbeats restart from zero)
        incarnation = time.time_ns() // 1_000_000
        me = Member(cfg.id, cfg.advertised_listen, cfg.advertised_gossip, cfg.rack, incarnation, 0)
        self.membership = Membership(
            me, settings, clock, gossip_interval=cfg.gossip_interval, down_after=cfg.down_after
        )

        self.zctx = zmq.Context()
        self.zctx.setsockopt(zmq.IPV6, 1)  # IPv6 literals (tcp://[::1]:7001) bind and connect
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.limit)
        self.router.bind(cfg.listen)
        self.pub = self.zctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(cfg.gossip)
        self.sub = self.zctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.MAXMSGSIZE, self.limit)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.sub, zmq.POLLIN)
        self.dealers: dict[str, zmq.Socket] = {}
        self.dealer_ep: dict[str, str] = {}
        self.dealer_owner: dict[zmq.Socket, str] = {}
        self.sub_eps: set[str] = set()

        self.rids = itertools.count(1)
        self.peer_rids: dict[int, tuple[Op, str]] = {}
        self.op_rids: dict[int, list[int]] = {}  # id(op) -> peer rids
        self.live_ops: dict[int, Op] = {}
        self.timers: list[tuple[float, int, Op]] = []  # (deadline, tiebreak, op)
        self.timer_seq = itertools.count()
        self.out_peer: dict[str, list] = {}
        self.out_router: dict[bytes, list] = {}
        self.running = False
        self.malformed_logged: set = set()
        self.next_gossip = 0.0
        self.next_background = 0.0
        self.next_reap = 0.0
        self.next_aae = 0.0
        self.started = clock()
        self._metric_children: dict[tuple, tuple] = {}
        # set by LocalCluster (tests, `zkv local up`): stop when that process is gone
        self.parent_pid = int(os.environ.get("ZKV_EXIT_WITH_PARENT", "0") or 0)
        self.ae: AntiEntropy | None = None  # set up in run(), once the ring size is settled
        self.ae_setup = False
        self.exchange_queue: list[tuple[int, str]] = []
        self.exchange_cursor = 0
        self.exchanges_running = 0
        self.handoff_running: set[str] = set()
        self.repair_running: set[bytes] = set()
        self.corrupt_seen: set[bytes] = set()  # corrupt keys whose partition tree was rebuilt

        for m in saved.get("members", []):
            self.membership.merge([Member(m[0], m[1], m[2], m[3], 0, 0)])
        for m in self.membership.table():
            self._connect(m)
        if cfg.metrics_port:
            self.metrics.serve(cfg.metrics_port, cfg.metrics_host)

    # ---- cluster state on disk ------------------------------------------------------------
    @property
    def _cluster_path(self) -> str:
        return os.path.join(self.cfg.data_dir, "cluster.json")

    def _load_cluster(self) -> dict:
        try:
            with open(self._cluster_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._cluster_path, exc)
            return {}

    def _save_cluster(self) -> None:
        doc = {
            "settings": self.membership.settings,
            "members": [
                [m.id, m.listen, m.gossip, m.rack] for m in self.membership.table() if m.id != self.me
            ],
        }
        tmp = self._cluster_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self._cluster_path)

    # ---- connections ------------------------------------------------------------------------
    def _connect(self, m: Member) -> None:
        if m.gossip not in self.sub_eps and m.id != self.me:
            self.sub.connect(m.gossip)
            self.sub_eps.add(m.gossip)
        if m.id == self.me:
            return
        if self.dealer_ep.get(m.id) == m.listen:
            return
        old = self.dealers.pop(m.id, None)
        if old is not None:
            self.poller.unregister(old)
            self.dealer_owner.pop(old, None)
            old.close(0)
        d = self.zctx.socket(zmq.DEALER)
        d.setsockopt(zmq.IDENTITY, b"peer:" + self.me.encode())
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.IMMEDIATE, 1)
        d.setsockopt(zmq.SNDHWM, 100_000)
        d.setsockopt(zmq.MAXMSGSIZE, self.limit)
        d.connect(m.listen)
        self.dealers[m.id] = d
        self.dealer_ep[m.id] = m.listen
        self.dealer_owner[d] = m.id
        self.poller.register(d, zmq.POLLIN)

    def join(self, seeds: tuple[str, ...], should_stop=lambda: False) -> None:
        """Ask seed nodes to let us in; adopt the cluster's settings and member table."""
        deadline = self.clock() + JOIN_TIMEOUT
        rid = next(self.rids)
        while self.clock() < deadline and not should_stop():
            for seed in seeds:
                if seed == self.cfg.listen:
                    continue
                s = self.zctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                try:
                    s.connect(seed)
                    s.send(wire.encode_one(Join(rid, self.membership.me)))
                    if s.poll(1000, zmq.POLLIN):
                        for msg in wire.decode(s.recv(), self.limit):
                            if isinstance(msg, JoinOk):
                                self.membership.settings = {
                                    "q": msg.q, "n": msg.n, "r": msg.r, "w": msg.w
                                }
                                for m in self.membership.merge(msg.members):
                                    self._connect(m)
                                self._save_cluster()
                                log.info("joined the cluster through %s (%d members)", seed,
                                         len(self.membership.table()))
                                return
                except (zmq.ZMQError, wire.WireError) as exc:
                    log.warning("join through %s failed: %s", seed, exc)
                finally:
                    s.close(0)
            log.info("waiting for a seed to answer: %s", ", ".join(seeds))
        if should_stop():
            return
        raise ZkvError(f"no seed answered within {JOIN_TIMEOUT:.0f}s: {', '.join(seeds)}")

    # ---- the loop -----------------------------------------------------------------------------
    def setup_antientropy(self) -> None:
        self.ae_setup = True
        if self.cfg.aae_interval <= 0:
            log.warning("anti-entropy is off (aae_interval 0): no Merkle trees, no exchanges, "
                        "and tombstones are never reaped")
            return
        q_bits = self.membership.settings["q"].bit_length() - 1
        ae = AntiEntropy(q_bits, self.clock, grace=self.cfg.tombstone_grace)
        t = time.perf_counter()
        n = ae.rebuild(self.store.items())
        log.info("Merkle trees rebuilt over %d keys in %.2fs", n, time.perf_counter() - t)
        self.ae = ae
        self.replica.on_change.append(ae.on_change)
        self.replica.ignore = ae.is_reaped_echo

    def run(self) -> None:
        self.running = True
        if not self.ae_setup:
            self.setup_antientropy()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (tests embedding a node)
                pass
        log.info("node %s serving on %s (gossip %s)", self.me, self.cfg.listen, self.cfg.gossip)
        try:
            while self.running:
                try:
                    self.turn()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception:  # a bug in one handler must not take the node down
                    self.metrics.internal_errors.inc()
                    log.exception("error in the reactor loop; continuing")
                    time.sleep(0.01)
        finally:
            self.shutdown()

    def _on_signal(self, signum, frame) -> None:
        log.info("signal %d: draining and stopping", signum)
        self.running = False

    def turn(self, max_wait: float | None = None) -> None:
        now = self.clock()
        wait = self.next_gossip - now
        if self.timers:
            wait = min(wait, self.timers[0][0] - now)
        if max_wait is not None:
            wait = min(wait, max_wait)
        events = self.poller.poll(max(0, int(wait * 1000) + 1)) if wait > 0 else self.poller.poll(0)
        for sock, _ in events:
            if sock is self.router:
                self._drain_router()
            elif sock is self.sub:
                self._drain_sub()
            else:
                self._drain_dealer(sock)
        now = self.clock()
        while self.timers and self.timers[0][0] <= now:
            deadline, _, op = heapq.heappop(self.timers)
            if id(op) in self.live_ops and op.deadline <= now:
                op.on_timeout()
        if now >= self.next_gossip:
            self._gossip(now)
        if now >= self.next_background:
            self._background(now)
        self.flush()

    def _drain_router(self) -> None:
        router = self.router
        for _ in range(DRAIN_LIMIT):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self._malformed(frames[0] if frames else b"?", f"{len(frames)} frames")
                continue
            ident, payload = frames
            try:
                msgs = wire.decode(payload, self.limit)
            except wire.WireError as exc:
                self._malformed(ident, str(exc))
                continue
            for msg in msgs:
                try:
                    self._on_request(ident, msg)
                except ZkvError as exc:
                    self._queue_router(ident, Error(msg.rid, E_INVALID, str(exc)))
                except Exception:  # a handler bug must not kill the node
                    log.exception("error handling %s from %r", type(msg).__name__, ident)
                    self._queue_router(ident, Error(msg.rid, wire.E_INTERNAL, "internal error"))

    def _drain_dealer(self, sock) -> None:
        node_id = self.dealer_owner.get(sock)
        for _ in range(DRAIN_LIMIT):
            try:
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msgs = wire.decode(payload, self.limit)
            except wire.WireError as exc:
                self._malformed(f"peer:{node_id}", str(exc))
                continue
            for msg in msgs:
                entry = self.peer_rids.pop(msg.rid, None)
                if entry is None:
                    continue  # late answer to a finished op, or fire-and-forget ack
                op, target = entry
                if target == node_id and id(op) in self.live_ops:
                    op.on_reply(node_id, msg)

    def _drain_sub(self) -> None:
        for _ in range(DRAIN_LIMIT):
            try:
                payload = self.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msgs = wire.decode(payload, self.limit)
            except wire.WireError as exc:
                self._malformed("gossip", str(exc))
                continue
            for msg in msgs:
                if isinstance(msg, Gossip):
                    self._on_gossip(msg)
                else:
                    self._malformed("gossip", f"unexpected {type(msg).__name__}")

    def _malformed(self, source, why: str) -> None:
        kind = "peer" if isinstance(source, str) or bytes(source).startswith(b"peer:") else "client"
        self.metrics.malformed.labels(kind).inc()
        if source not in self.malformed_logged and len(self.malformed_logged) < 10_000:
            self.malformed_logged.add(source)
            log.warning("dropped malformed frame from %r: %s (logged once per source)", source, why)

    # ---- requests -----------------------------------------------------------------------------
    def _on_request(self, ident: bytes, msg) -> None:
        t = type(msg)
        if t is RGet:
            self._queue_router(ident, RGetOk(msg.rid, self.replica.read(msg.key, msg.hint)))
        elif t is RPut:
            try:
                wire.check_key(msg.key, self.cfg.max_key_size)
                self.replica.merge(msg.key, msg.dvv, msg.hint)
            except (ValueError, ZkvError) as exc:
                self._malformed(ident, f"bad version for {msg.key[:32]!r}: {exc}")
                self._queue_router(ident, RPutOk(msg.rid, False))
                return
            self._queue_router(ident, RPutOk(msg.rid, True))
        elif t is Get or t is Put or t is Delete:
            self._on_client(ident, msg, msg.rid, forwarded=False)
        elif t is Forward:
            self._on_client(ident, msg.inner, msg.rid, forwarded=True)
        elif t is RingInfo:
            self._queue_router(ident, self._ring_info(msg.rid))
        elif t is Status:
            self._queue_router(ident, StatusOk(msg.rid, self.status()))
        elif t is Join:
            self._on_join(ident, msg)
        elif t is TreeLevel:
            tree = self.ae.tree(msg.partition) if self._valid_partition(msg.partition) else None
            try:
                hashes = (pack_hashes(tree.level_hashes(msg.level,
                                                        children(tree, msg.level, msg.parents)))
                          if tree else b"")
            except ValueError:
                hashes = b""
            self._queue_router(ident, TreeLevelOk(msg.rid, hashes))
        elif t is LeafKeys:
            listing = (self._leaf_keys(msg.partition, msg.leaves)
                       if self._valid_partition(msg.partition) else {})
            self._queue_router(ident, LeafKeysOk(msg.rid, *pack_listing(listing)))
        elif t is RGetHashes:
            self._queue_router(ident, self._versions_by_hash(msg))
        elif t is Reap:
            self._on_reap(msg)
            self._queue_router(ident, RPutOk(msg.rid, True))
        elif t is Repair:
            self._queue_router(ident, RepairOk(msg.rid, self._on_repair(msg.partition)))
        else:
            self._malformed(ident, f"unexpected {t.__name__} on the request socket")

    def _on_client(self, ident: bytes, msg, rid: int, forwarded: bool) -> None:
        cfg = self.cfg
        settings = self.membership.settings
        n = settings["n"]
        origin = (ident, rid)
        try:
            wire.check_key(msg.key, cfg.max_key_size)
            if type(msg) is Get:
                wire.check_quorum("r", msg.r or None, n)
            else:
                wire.check_quorum("w", msg.w or None, n)
                wire.check_context(msg.context)
                if msg.context:
                    dvv.validate_context(msg.context)
                if type(msg) is Put:
                    wire.check_value(msg.value, cfg.max_value_size)
        except (ZkvError, ValueError) as exc:
            self._queue_router(ident, Error(rid, E_INVALID, str(exc)))
            return
        ring = self.membership.ring()
        preflist = ring.preflist_for_key(msg.key)
        now = self.clock()
        if self.me not in preflist and not forwarded:
            down = self.membership.unreachable()
            candidates = [x for x in preflist if x not in down]
            if candidates:
                self.metrics.forwards.inc()
                op = ForwardOp(self, origin, msg.key, now, msg, candidates,
                               per_try=2 * cfg.replica_timeout + 0.25)
                self._start(op, now)
                return
        self._coordinate(origin, msg, ring, now)

    def coordinate_here(self, origin, inner) -> None:
        """Coordinate a request locally although this node is not an owner (no owner answered)."""
        self._coordinate(origin, inner, self.membership.ring(), self.clock())

    def _coordinate(self, origin, msg, ring, now: float) -> None:
        cfg = self.cfg
        settings = self.membership.settings
        n = settings["n"]
        p = ring.partition(msg.key)
        self.metrics.observe_key(msg.key)
        # sloppy quorum: the first N reachable nodes of the extended preference list; a
        # stand-in is paired with the owner it keeps a hint for
        targets = ring.sloppy_preflist(p, self.membership.unreachable())
        if self.me not in [x for x, _ in targets]:
            # coordinating without being chosen (forwarded under another ring view, or no
            # owner answered a forward): stand in for an owner missing from the targets, in
            # place of whichever node stood in for it
            present = {x for x, _ in targets}
            missing = [o for o in ring.preflist(p) if o not in present]
            hint = missing[0] if missing else None
            rest = [t for t in targets if hint is None or t[1] != hint]
            targets = [(self.me, hint)] + rest[: n - 1]
        deadline = now + cfg.replica_timeout
        if type(msg) is Get:
            op = GetOp(self, origin, msg.key, deadline, targets, msg.r or settings["r"])
        else:
            value = msg.value if type(msg) is Put else None
            op = WriteOp(self, origin, msg.key, deadline, targets, msg.w or settings["w"],
                         msg.context, value)
        self._start(op, now)

    # ---- background: handoff, anti-entropy, reaping, corrupt-record repair -----------------------
    def _valid_partition(self, p: int) -> bool:
        return self.ae is not None and 0 <= p < self.membership.settings["q"]

    def _leaf_keys(self, p: int, leaves: list[int]) -> dict[int, tuple[bytes, bytes]]:
        """{key hash: (key, digest)} of the keys this node holds in those leaves of partition p."""
        lo, hi = self.membership.ring().partition_range(p)
        return leaf_keys(self.store, self.ae.tree(p), lo, hi, leaves)

    def _versions_by_hash(self, msg: RGetHashes) -> RGetHashesOk:
        if not self._valid_partition(msg.partition) or len(msg.hashes) % 8:
            return RGetHashesOk(msg.rid, [], [])
        want = set(struct.unpack(f"<{len(msg.hashes) // 8}Q", msg.hashes))
        lo, hi = self.membership.ring().partition_range(msg.partition)
        keys, dvvs = [], []
        for key, h in self.store.key_hashes(lo, hi):
            if h in want:
                value = self.store.get(key)
                if value:
                    keys.append(key)
                    dvvs.append(value)
        return RGetHashesOk(msg.rid, keys, dvvs)

    def _background(self, now: float) -> None:
        cfg = self.cfg
        self.next_background = now + cfg.background_interval
        ring = self.membership.ring()
        # hinted handoff: one throttled batch per owner that gossip shows up
        for owner in self.hints.owners():
            if owner in self.handoff_running or self.membership.state(owner)[0] != "up":
                continue
            batch = self.hints.batch(owner, cfg.handoff_batch)
            if batch:
                self.handoff_running.add(owner)
                self._start(HandoffOp(self, owner, batch, now + 2 * cfg.replica_timeout), now)
        if now >= self.next_reap:
            self.next_reap = now + 1.0
            self._repair_corrupt(ring, now)
            if self.ae is not None:
                self._reap(ring)
        if self.ae is None:
            return  # anti-entropy off: no exchanges
        # anti-entropy: keep a bounded number of exchanges going
        if not self.exchange_queue and now >= self.next_aae:
            self.next_aae = now + cfg.aae_interval
            self._plan_exchanges(ring)
        while self.exchange_queue and self.exchanges_running < cfg.aae_concurrency:
            p, peer = self.exchange_queue.pop(0)
            if not self.membership.is_up(peer) or peer not in ring.preflist(p):
                continue
            ex = Exchange(self.ae.tree(p), p, peer, now, lambda leaves, p=p: self._leaf_keys(p, leaves))
            self.exchanges_running += 1
            self._start(ExchangeOp(self, self.ae, ex, 2 * cfg.replica_timeout, cfg.aae_max_keys), now)

    def _plan_exchanges(self, ring) -> None:
        """Queue the next few (partition, peer) pairs, round robin over what this node holds."""
        mine = ring.replicas_of(self.me)
        if not mine:
            return
        for _ in range(min(len(mine), 8)):
            p = mine[self.exchange_cursor % len(mine)]
            self.exchange_cursor += 1
            for peer in ring.preflist(p):
                if peer != self.me:
                    self.exchange_queue.append((p, peer))

    def _reap(self, ring) -> None:
        self.ae.forget_old_reaps()
        keys = self.ae.reapable(ring.preflist, self.me)[:1000]
        by_peer: dict[str, tuple[list, list]] = {}
        for key in keys:
            old = self.replica.reap(key)
            if old is None:
                continue
            digest = vdigest(old)
            self.ae.note_reaped(key, digest)
            for peer in ring.preflist_for_key(key):
                if peer != self.me:
                    ks, ds = by_peer.setdefault(peer, ([], []))
                    ks.append(key)
                    ds.append(digest)
        for peer, (ks, ds) in by_peer.items():
            self.ask(peer, Reap(0, ks, ds), None)

    def _on_reap(self, msg: Reap) -> None:
        if self.ae is None or len(msg.keys) != len(msg.digests):
            return
        for key, digest in zip(msg.keys, msg.digests, strict=True):
            cur = self.store.get(key)
            if cur and vdigest(cur) == digest and dvv.is_tombstone_encoded(cur):
                self.replica.reap(key)
                self.ae.note_reaped(key, digest)

    def _repair_corrupt(self, ring, now: float) -> None:
        corrupt = self.store.corrupt_keys()
        fresh = [k for k in corrupt if k not in self.corrupt_seen]
        if fresh and self.ae is not None:
            # the trees still count the digests of the lost versions: rebuild those partitions
            # from what is readable, so the repairs below (and AAE) land on a consistent tree
            self.corrupt_seen.update(fresh)
            q_bits = self.ae.q_bits
            for p in {partition_of(k, q_bits) for k in fresh}:
                lo, hi = ring.partition_range(p)
                items = ((k, v) for k, _ in self.store.key_hashes(lo, hi)
                         if (v := self.store.get(k)))
                self.ae.rebuild_partition(p, items)
                log.warning("rebuilt the Merkle tree of partition %d after corrupt records", p)
        self.corrupt_seen.intersection_update(corrupt)
        for key in corrupt[:100]:
            if key in self.repair_running:
                continue
            owners = [x for x in ring.preflist_for_key(key) if x != self.me and self.membership.is_up(x)]
            if owners:
                self.repair_running.add(key)
                self._start(FetchRepairOp(self, key, owners, now + 2 * self.cfg.replica_timeout), now)

    def _on_repair(self, partition: int) -> dict:
        """`zkv repair`: queue exchanges of one or every partition with every other owner now."""
        if self.ae is None:
            raise ZkvError(f"anti-entropy is off on {self.me} (aae_interval 0)")
        ring = self.membership.ring()
        parts = ring.replicas_of(self.me) if partition < 0 else [partition]
        if partition >= ring.q:
            raise ZkvError(f"partition {partition} out of range (ring has {ring.q})")
        queued = [(p, peer) for p in parts for peer in ring.preflist(p) if peer != self.me]
        self.exchange_queue[:0] = queued
        return {"queued": len(queued), "partitions": len(parts)}

    def _start(self, op: Op, now: float) -> None:
        op.started = now
        self.live_ops[id(op)] = op
        heapq.heappush(self.timers, (op.deadline, next(self.timer_seq), op))
        op.start()

    def _ring_info(self, rid: int) -> RingOk:
        s = self.membership.settings
        return RingOk(rid, s["q"], s["n"], s["r"], s["w"], self.membership.table(),
                      sorted(self.membership.down()))

    def _on_join(self, ident: bytes, msg: Join) -> None:
        m = msg.member
        for added in self.membership.merge([m]):
            self._connect(added)
            log.info("member %s joined (%s, rack %s)", added.id, added.listen, added.rack)
        self._save_cluster()
        s = self.membership.settings
        self._queue_router(ident, JoinOk(msg.rid, s["q"], s["n"], s["r"], s["w"],
                                         self.membership.table()))

    # ---- Context protocol used by the coordinator's ops -------------------------------------
    def now(self) -> float:
        return self.clock()

    def ask(self, node_id: str, msg, op: Op | None) -> None:
        rid = next(self.rids)
        msg.rid = rid
        if op is not None:
            self.peer_rids[rid] = (op, node_id)
            self.op_rids.setdefault(id(op), []).append(rid)
        self.out_peer.setdefault(node_id, []).append(msg)

    def respond(self, origin, msg) -> None:
        ident, rid = origin
        msg.rid = rid
        self._queue_router(ident, msg)

    def done(self, op: Op) -> None:
        if self.live_ops.pop(id(op), None) is None:
            return
        kind = op.kind
        if kind == "exchange":
            self.exchanges_running -= 1
        elif kind == "handoff":
            self.handoff_running.discard(op.owner)
            self.metrics.handoffs.inc(op.delivered)
        elif kind == "repair":
            self.repair_running.discard(op.key)
        for rid in self.op_rids.pop(id(op), ()):
            self.peer_rids.pop(rid, None)

    def reschedule(self, op: Op) -> None:
        heapq.heappush(self.timers, (op.deadline, next(self.timer_seq), op))

    def observe(self, op: Op, ok: bool) -> None:
        elapsed = self.clock() - getattr(op, "started", self.clock())
        kind = op.kind
        if kind == "forward":
            kind = type(op.inner).__name__.lower()
        # label lookups cost more than the updates: keep the children per (op, quorum, result)
        key = (kind, op.required, ok)
        children = self._metric_children.get(key)
        if children is None:
            m = self.metrics
            q = str(op.required)
            children = self._metric_children[key] = (
                m.requests.labels(kind), m.latency.labels(kind),
                m.latency_quorum.labels(kind, q) if op.required else None,
                m.quorum.labels(kind, q, "ok" if ok else "fail") if op.required else None,
            )
        requests, latency, latency_quorum, quorum = children
        requests.inc()
        latency.observe(elapsed)
        if latency_quorum is not None:
            latency_quorum.observe(elapsed)
            quorum.inc()

    def repaired(self) -> None:
        self.metrics.read_repairs.inc()

    def suspect(self, node_id: str, reason: str) -> None:
        self.membership.suspect(node_id, reason)

    def _on_siblings(self, key: bytes, count: int, write: bool) -> None:
        self.metrics.siblings.observe(count)
        if write:
            self.metrics.sibling_writes.inc()
        if count > self.cfg.sibling_warn:
            self.metrics.sibling_warnings.inc()

    # ---- gossip ---------------------------------------------------------------------------------
    def _gossip(self, now: float) -> None:
        self.next_gossip = now + self.cfg.gossip_interval
        if self.parent_pid and os.getppid() != self.parent_pid:
            log.warning("the process that started this node (pid %d) is gone: stopping",
                        self.parent_pid)
            self.running = False
        self.membership.beat()
        s = self.membership.settings
        ring = self.membership.ring()
        msg = Gossip(0, self.me, s["q"], s["n"], s["r"], s["w"], self.membership.table(),
                     ring.fingerprint())
        try:
            self.pub.send(wire.encode_one(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass
        states = {"up": 0, "suspect": 0, "down": 0}
        for nid in self.membership.peers:
            states[self.membership.state(nid)[0]] += 1
        for k, v in states.items():
            self.metrics.peers.labels(k).set(v)
        self._export_background_metrics(ring, now)

    def _export_background_metrics(self, ring, now: float) -> None:
        m = self.metrics
        for nid in self.membership.peers:
            state = self.membership.state(nid)[0]
            m.member_state.labels(nid).set({"up": 1.0, "suspect": 0.5}.get(state, 0.0))
        backlog = self.hints.backlog()
        for owner in set(backlog) | {o for o in self.hints.index}:
            b = backlog.get(owner, {"count": 0, "bytes": 0, "oldest_age_s": 0})
            m.hint_count.labels(owner).set(b["count"])
            m.hint_bytes.labels(owner).set(b["bytes"])
            m.hint_age.labels(owner).set(b["oldest_age_s"])
        if self.ae is not None:
            for k, v in self.ae.stats.items():
                m.aae.labels(k).set(v)
            if now - getattr(self, "_lag_exported", -1e9) > 5:
                self._lag_exported = now
                for p in ring.replicas_of(self.me):
                    t = self.ae.last_full_agreement(
                        p, [x for x in ring.preflist(p) if x != self.me])
                    m.aae_lag.labels(str(p)).set(-1 if t is None else now - t)
        m.keys.set(len(self.store))
        m.observe_cluster(self.membership, ring, now)

    def _on_gossip(self, msg: Gossip) -> None:
        self.metrics.observe_gossip(msg.sender, msg.fingerprint)
        s = self.membership.settings
        if (msg.q, msg.n) != (s["q"], s["n"]) and msg.sender not in self.malformed_logged:
            self.malformed_logged.add(msg.sender)
            log.error("member %s gossips q=%d n=%d but this cluster has q=%d n=%d: ignoring it",
                      msg.sender, msg.q, msg.n, s["q"], s["n"])
            return
        added = self.membership.merge(msg.members)
        if added:
            for m in added:
                self._connect(m)
                log.info("member %s is in the cluster (%s, rack %s)", m.id, m.listen, m.rack)
            self._save_cluster()

    # ---- output -----------------------------------------------------------------------------
    def _queue_router(self, ident: bytes, msg) -> None:
        self.out_router.setdefault(ident, []).append(msg)

    def flush(self) -> None:
        # every write of this turn reaches the OS before any ack leaves (a crash loses nothing);
        # with sync="always" one fsync covers them all (group commit)
        self.replica.flush(durable=self.cfg.sync == "always")
        out_peer, self.out_peer = self.out_peer, {}
        for node_id, msgs in out_peer.items():
            sock = self.dealers.get(node_id)
            if sock is None:
                continue
            for payload in self._frames(msgs):
                try:
                    sock.send(payload, zmq.NOBLOCK)
                except zmq.Again:
                    break  # peer unreachable or flooded: its ops time out
        out_router, self.out_router = self.out_router, {}
        for ident, msgs in out_router.items():
            for payload in self._frames(msgs):
                try:
                    self.router.send_multipart([ident, payload], zmq.NOBLOCK)
                except zmq.ZMQError:
                    break

    def _frames(self, msgs: list) -> list[bytes]:
        """Encode msgs as few frames as fit under the frame limit (usually exactly one)."""
        out = []
        stack = [msgs]
        while stack:
            chunk = stack.pop()
            if len(chunk) > wire.MAX_BATCH:
                half = len(chunk) // 2
                stack += [chunk[half:], chunk[:half]]
                continue
            payload = wire.encode(chunk)
            if len(payload) > self.limit and len(chunk) > 1:
                half = len(chunk) // 2
                stack += [chunk[half:], chunk[:half]]
                continue
            out.append(payload)
        return out

    # ---- status and shutdown --------------------------------------------------------------------
    def status(self) -> dict:
        ring = self.membership.ring()
        members = []
        for m in sorted(self.membership.table(), key=lambda m: m.id):
            state, reason = self.membership.state(m.id)
            members.append({
                "id": m.id, "listen": m.listen, "gossip": m.gossip, "rack": m.rack,
                "state": "up" if state != "down" else "down", "detail": state, "reason": reason,
                "partitions": len(ring.owned(m.id)), "replicas": len(ring.replicas_of(m.id)),
                "incarnation": m.incarnation, "heartbeat": m.heartbeat,
            })
        s = self.membership.settings
        st = self.store.stats()
        return {
            "node": self.me,
            "members": members,
            "ring": {"q": s["q"], "n": s["n"], "r": s["r"], "w": s["w"],
                     "fingerprint": ring.fingerprint().hex(),
                     "rack_violations": len(ring.rack_violations)},
            "keys": st.get("keys", len(self.store)),
            "hints": self._hint_status(),
            "antientropy": self._ae_status(ring),
            "uptime": round(self.clock() - self.started, 3),
            "metrics": self.metrics.summary(),
        }

    def _hint_status(self) -> dict:
        by_owner = self.hints.backlog()
        return {"backlog": sum(v["count"] for v in by_owner.values()),
                "bytes": sum(v["bytes"] for v in by_owner.values()), "by_owner": by_owner}

    def _ae_status(self, ring) -> dict:
        if self.ae is None:
            return {}
        now = self.clock()
        ages = []
        for p in ring.replicas_of(self.me):
            t = self.ae.last_full_agreement(p, [x for x in ring.preflist(p) if x != self.me])
            ages.append(None if t is None else now - t)
        known = [a for a in ages if a is not None]
        return {**self.ae.stats, "queued": len(self.exchange_queue),
                "running": self.exchanges_running, "tombstones": len(self.ae.tombstones),
                "partitions": len(ages), "partitions_agreed": len(known),
                "max_seconds_since_agreement": round(max(known), 3) if known else None}

    def shutdown(self) -> None:
        for op in list(self.live_ops.values()):
            if not op.replied and op.origin is not None:
                op.reply(Error(0, E_UNAVAILABLE, f"node {self.me} is shutting down"), ok=False)
            self.done(op)
        try:
            self.flush()
        except zmq.ZMQError:
            pass
        self.replica.flush()
        self.store.close()
        self.hints.close()
        for s in [self.router, self.pub, self.sub, *self.dealers.values()]:
            s.close(0)
        self.zctx.term()
        log.info("node %s stopped", self.me)
