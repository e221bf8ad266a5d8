"""NodeCore: the whole node as a state machine, with no sockets, no clock and no threads.

Everything a node decides happens here or in the modules it calls; the transport
(`transport.py`, ZeroMQ) and the simulator (`tests/sim`) only move bytes and time:

    out = core.handle(source, messages, now)   # one decoded frame from `source`
    out = core.tick(now)                       # timers, gossip, background work
    out = core.take_output(durable)            # end of a turn: flush the engine, then send
    core.next_deadline()                       # when tick() wants to run next

`source` is one of
    (REQUEST, identity)   a request on the listening socket (clients and peers' requests)
    (REPLY, node_id)      an answer on this node's link to a peer (replies to `ask`)
    (GOSSIP, None)        a message on the gossip channel
    (SEED, endpoint)      an answer from a seed endpoint while joining
and the `Outbox` holds what to send: messages per peer, replies per request identity,
messages per raw endpoint (joining), gossip to broadcast, and members to (re)connect.

Every write a turn makes reaches the engine before `take_output` returns the turn's
messages, so no acknowledgement leaves before its write (with sync="always", after one fsync
for the whole turn: group commit).

Operations in flight are `Op`s (op.py): client requests (coordinator.py) and background work
(background.py). Anti-entropy answers and reaping live in antientropy.py, hint storage in
handoff.py, membership and cluster.json in membership.py, status and metrics in status.py.
"""

from __future__ import annotations

import heapq
import itertools
import logging

from zkv import wire
from zkv._core import dvv
from zkv.config import NodeConfig
from zkv.errors import ZkvError
from zkv.node import antientropy as aen
from zkv.node.antientropy import AntiEntropy
from zkv.node.background import Background
from zkv.node.coordinator import ForwardOp, GetOp, WriteOp
from zkv.node.handoff import HandoffStore
from zkv.node.latency import PeerLatency
from zkv.node.membership import Membership, save_cluster
from zkv.node.metrics import NodeMetrics
from zkv.node.op import Op
from zkv.node.replica import Replica
from zkv.node.status import MetricsExport, status
from zkv.storage import LogStore
from zkv.wire import (
    E_INTERNAL,
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
    Member,
    Put,
    Reap,
    Repair,
    RepairOk,
    RGet,
    RGetHashes,
    RGetOk,
    RingInfo,
    RingOk,
    RPut,
    RPutOk,
    Status,
    StatusOk,
    TreeLevel,
)

log = logging.getLogger("zkv.node")

REQUEST, REPLY, GOSSIP, SEED = "request", "reply", "gossip", "seed"
JOIN_TIMEOUT = 60.0  # seconds a joining node keeps asking its seeds
JOIN_RETRY = 1.0
MAX_LOGGED_SOURCES = 10_000  # sources whose malformed frames were logged (once each)


class Outbox:
    """What one turn sends. The transport (or simulator) empties it after `take_output`."""

    __slots__ = ("peers", "clients", "endpoints", "gossip", "connect")

    def __init__(self) -> None:
        self.peers: dict[str, list] = {}  # node id -> messages on this node's link to it
        self.clients: dict[bytes, list] = {}  # request identity -> replies
        self.endpoints: dict[str, list] = {}  # raw endpoint -> messages (join through seeds)
        self.gossip: list = []  # broadcast on the gossip channel
        self.connect: list[Member] = []  # members whose links must be made or remade

    def __bool__(self) -> bool:
        return bool(self.peers or self.clients or self.endpoints or self.gossip or self.connect)


class NodeCore:
    def __init__(self, cfg: NodeConfig, store: LogStore, handoff: HandoffStore, *,
                 incarnation: int, now: float, saved: dict | None = None,
                 cluster_path: str | None = None, metrics: NodeMetrics | None = None) -> None:
        self.cfg = cfg
        self.me = cfg.id
        self.t = now
        self.started = now
        self.store = store
        self.handoff = handoff
        # the cluster never deletes through the engine except to reap, and the engine keeps
        # release marks in memory only: re-release what earlier lives reaped
        store.release_tombstones(store.tombstones())
        self.replica = Replica(cfg.id, store, handoff, cfg.sibling_warn)
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.replica.on_siblings = self._on_siblings
        self.cluster_path = cluster_path
        self.out = Outbox()

        saved = saved or {}
        settings = saved.get("settings") or {"q": cfg.ring_size, "n": cfg.n, "r": cfg.r,
                                             "w": cfg.w}
        me = Member(cfg.id, cfg.listen, cfg.gossip, cfg.rack, incarnation, 0)
        self.membership = Membership(me, settings, self.now, gossip_interval=cfg.gossip_interval,
                                     down_after=cfg.down_after)
        for m in saved.get("members", []):
            self.membership.merge([Member(m[0], m[1], m[2], m[3], 0, 0)])
        self.out.connect.extend(m for m in self.membership.table() if m.id != self.me)

        self.rids = itertools.count(1)
        self.peer_rids: dict[int, tuple[Op, str, float]] = {}  # rid -> (op, node, sent at)
        self.op_rids: dict[int, list[int]] = {}  # id(op) -> its rids
        self.live_ops: dict[int, Op] = {}
        self.timers: list[tuple[float, int, Op]] = []  # (when, tiebreak, op)
        self.timer_seq = itertools.count()
        self.latency = PeerLatency()
        self.next_gossip = now
        self.ae: AntiEntropy | None = None
        self.background = Background(self)
        self.export = MetricsExport(self)
        self.malformed_logged: set = set()
        self.self_ident = b"peer:" + self.me.encode()
        self._metric_children: dict[tuple, tuple] = {}
        # joining: a node started with seeds and no known peers asks the seeds to let it in
        self.joining = bool(cfg.seed) and not self.membership.peers
        self.join_deadline = now + JOIN_TIMEOUT
        self.next_join = now
        self.join_error: str | None = None
        self._handlers = {
            RGet: self._on_rget, RPut: self._on_rput, Get: self._on_client_msg,
            Put: self._on_client_msg, Delete: self._on_client_msg, Forward: self._on_forward,
            RingInfo: self._on_ring_info, Status: self._on_status, Join: self._on_join,
            TreeLevel: self._on_tree_level, LeafKeys: self._on_leaf_keys,
            RGetHashes: self._on_versions, Reap: self._on_reap, Repair: self._on_repair,
        }

    # ---- the state machine's interface ------------------------------------------------------
    def now(self) -> float:
        return self.t

    def start(self, now: float) -> None:
        """Build what needs the cluster settings (the Merkle trees: one read of the store).
        A joining node does this once a seed let it in."""
        self.t = now
        if self.joining or self.ae is not None:
            return
        if self.cfg.aae_interval <= 0:
            log.warning("anti-entropy is off (aae_interval 0): no Merkle trees, no exchanges, "
                        "and tombstones are never reaped")
            return
        q_bits = self.membership.settings["q"].bit_length() - 1
        ae = AntiEntropy(q_bits, self.now, grace=self.cfg.tombstone_grace)
        n = ae.rebuild(self.store.items())
        log.info("Merkle trees rebuilt over %d keys", n)
        self.ae = ae
        self.replica.on_change.append(ae.on_change)
        self.replica.ignore = ae.is_reaped_echo
        self.replica.on_echo = self._reannounce_reap
        self.replica.reaped_past = ae.reaped_past

    def _reannounce_reap(self, key: bytes, version: bytes) -> None:
        """An owner that missed our Reap (lost, or it was down) keeps pushing the tombstone
        back: tell every other owner again, so it reaps too instead of disagreeing for the
        whole echo window (the simulator found this, seed 3)."""
        digest = aen.vdigest(version)
        for peer in self.membership.ring().preflist_for_key(key):
            if peer != self.me:
                self.ask(peer, Reap(0, [key], [digest]), None)

    def handle(self, source: tuple[str, object], msgs: list, now: float) -> Outbox:
        self.t = now
        kind, who = source
        if kind == REPLY:
            self._on_replies(who, msgs, now)
        elif kind == REQUEST:
            for msg in msgs:
                self._on_request(who, msg)
        elif kind == GOSSIP:
            for msg in msgs:
                if type(msg) is Gossip:
                    self._on_gossip(msg)
                else:
                    self.malformed("gossip", f"unexpected {type(msg).__name__}")
        elif kind == SEED:
            for msg in msgs:
                if type(msg) is JoinOk:
                    self._on_join_ok(str(who), msg)
        return self.out

    def tick(self, now: float) -> Outbox:
        self.t = now
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, op = heapq.heappop(timers)
            if id(op) in self.live_ops:
                if now >= op.deadline:
                    op.on_timeout()
                else:
                    op.on_timer()
        if self.joining:
            self._join_tick(now)
            return self.out
        if now >= self.next_gossip:
            self._gossip(now)
        self.background.tick(now)
        return self.out

    def next_deadline(self) -> float:
        t = self.next_join if self.joining else min(self.next_gossip, self.background.next_due())
        if self.timers:
            t = min(t, self.timers[0][0])
        return t

    def take_output(self, durable: bool | None = None) -> Outbox:
        """End of a turn: every write reaches the engine (and with `durable` the disk), then
        the turn's messages are handed over."""
        self.replica.flush(durable=self.cfg.sync == "always" if durable is None else durable)
        out, self.out = self.out, Outbox()
        return out

    def shutdown(self) -> Outbox:
        """Fail every client request in flight (the client retries elsewhere)."""
        for op in list(self.live_ops.values()):
            if not op.replied and op.origin is not None:
                op.reply(Error(0, E_UNAVAILABLE, f"node {self.me} is shutting down"), ok=False)
            self.done(op)
        return self.take_output()

    def malformed(self, source, why: str) -> None:
        """A frame or message that could not be accepted: count it, log once per source."""
        kind = "peer" if isinstance(source, str) or bytes(source).startswith(b"peer:") else "client"
        self.metrics.malformed.labels(kind).inc()
        if source not in self.malformed_logged and len(self.malformed_logged) < MAX_LOGGED_SOURCES:
            self.malformed_logged.add(source)
            log.warning("dropped malformed frame from %r: %s (logged once per source)",
                        source if not isinstance(source, bytes) else source[:80], why[:200])

    # ---- joining --------------------------------------------------------------------------
    def _join_tick(self, now: float) -> None:
        if now >= self.join_deadline:
            self.join_error = (f"no seed answered within {JOIN_TIMEOUT:.0f}s: "
                               f"{', '.join(self.cfg.seed)}")
            return
        if now >= self.next_join:
            self.next_join = now + JOIN_RETRY
            for seed in self.cfg.seed:
                if seed != self.cfg.listen:
                    self.out.endpoints.setdefault(seed, []).append(
                        Join(next(self.rids), self.membership.me))
            log.info("asking seeds to join: %s", ", ".join(self.cfg.seed))

    def _on_join_ok(self, seed: str, msg: JoinOk) -> None:
        if not self.joining:
            return
        self.membership.settings = {"q": msg.q, "n": msg.n, "r": msg.r, "w": msg.w}
        self._merge_members(msg.members)
        self.joining = False
        log.info("joined the cluster through %s (%d members)", seed,
                 len(self.membership.table()))
        self.start(self.t)

    # ---- requests -----------------------------------------------------------------------
    def _on_request(self, ident: bytes, msg) -> None:
        if ident == self.self_ident:
            # one of our own links reached this node: its answers must never count as another
            # replica's (an address that points back here, e.g. 0.0.0.0 advertised)
            if ident not in self.malformed_logged:
                self.malformed_logged.add(ident)
                log.error("refusing requests from this node itself: a peer address this node "
                          "connects to reaches itself (check --listen / advertised addresses)")
            self._reply(ident, Error(msg.rid, E_INVALID, f"{self.me} will not answer itself"))
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            self.malformed(ident, f"unexpected {type(msg).__name__} on the request socket")
            return
        if self.joining and type(msg) is not Status:
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, f"{self.me} is still joining"))
            return
        try:
            handler(ident, msg)
        except ZkvError as exc:
            self._reply(ident, Error(msg.rid, E_INVALID, str(exc)))
        except Exception:  # a handler bug must not kill the node
            self.metrics.internal_errors.inc()
            log.exception("error handling %s from %r", type(msg).__name__, ident[:80])
            self._reply(ident, Error(msg.rid, E_INTERNAL, "internal error"))

    def _reply(self, ident: bytes, msg) -> None:
        box = self.out.clients.get(ident)
        if box is None:
            box = self.out.clients[ident] = []
        box.append(msg)

    def _owner(self, hint: str) -> str | None:
        """The absent owner a peer asks us to stand in for (none when it names us)."""
        return hint if hint and hint != self.me else None

    def _on_rget(self, ident: bytes, msg: RGet) -> None:
        self._reply(ident, RGetOk(msg.rid, self.replica.read(msg.key, self._owner(msg.hint))))

    def _on_rput(self, ident: bytes, msg: RPut) -> None:
        try:
            wire.check_key(msg.key, self.cfg.max_key_size)
            self.replica.merge(msg.key, msg.dvv, self._owner(msg.hint))
        except (ValueError, ZkvError) as exc:
            self.malformed(ident, f"bad version for {msg.key[:32]!r}: {exc}")
            self._reply(ident, RPutOk(msg.rid, False))
            return
        self._reply(ident, RPutOk(msg.rid, True))

    def _on_client_msg(self, ident: bytes, msg) -> None:
        self._on_client(ident, msg, msg.rid, forwarded=False)

    def _on_forward(self, ident: bytes, msg: Forward) -> None:
        self._on_client(ident, msg.inner, msg.rid, forwarded=True)

    def _on_ring_info(self, ident: bytes, msg: RingInfo) -> None:
        s = self.membership.settings
        self._reply(ident, RingOk(msg.rid, s["q"], s["n"], s["r"], s["w"],
                                  self.membership.table(), sorted(self.membership.down())))

    def _on_status(self, ident: bytes, msg: Status) -> None:
        self._reply(ident, StatusOk(msg.rid, self.status()))

    def _on_tree_level(self, ident: bytes, msg: TreeLevel) -> None:
        self._reply(ident, aen.answer_tree_level(self.ae, self.membership.ring(), msg))

    def _on_leaf_keys(self, ident: bytes, msg: LeafKeys) -> None:
        self._reply(ident, aen.answer_leaf_keys(self.ae, self.store, self.membership.ring(), msg))

    def _on_versions(self, ident: bytes, msg: RGetHashes) -> None:
        self._reply(ident, aen.answer_versions(self.ae, self.store, self.membership.ring(), msg))

    def _on_reap(self, ident: bytes, msg: Reap) -> None:
        aen.apply_reap(self.ae, self.replica, msg)
        self._reply(ident, RPutOk(msg.rid, True))

    def _on_repair(self, ident: bytes, msg: Repair) -> None:
        self._reply(ident, RepairOk(msg.rid, self.background.queue_repair(msg.partition)))

    def _on_join(self, ident: bytes, msg: Join) -> None:
        self._merge_members([msg.member])
        s = self.membership.settings
        self._reply(ident, JoinOk(msg.rid, s["q"], s["n"], s["r"], s["w"],
                                  self.membership.table()))

    def _merge_members(self, members: list[Member]) -> None:
        added = self.membership.merge(members)
        if added:
            for m in added:
                self.out.connect.append(m)
                log.info("member %s is in the cluster (%s, rack %s)", m.id, m.listen, m.rack)
            self._save_cluster()

    def _save_cluster(self) -> None:
        if self.cluster_path:
            save_cluster(self.cluster_path, self.membership)

    # ---- coordinating client requests -------------------------------------------------------
    def _on_client(self, ident: bytes, msg, rid: int, forwarded: bool) -> None:
        cfg = self.cfg
        n = self.membership.settings["n"]
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
            self._reply(ident, Error(rid, E_INVALID, str(exc)))
            return
        origin = (ident, rid)
        ring = self.membership.ring()
        preflist = ring.preflist_for_key(msg.key)
        if self.me not in preflist and not forwarded:
            down = self.membership.unreachable()
            candidates = [x for x in preflist if x not in down]
            if candidates:
                self.metrics.forwards.inc()
                self.start_op(ForwardOp(self, origin, msg.key, self.t, msg, candidates,
                                        per_try=2 * cfg.replica_timeout + 0.25), self.t)
                return
        self._coordinate(origin, msg, ring)

    def coordinate_here(self, origin, inner) -> None:
        """Coordinate a request locally although this node is not an owner (no owner answered)."""
        self._coordinate(origin, inner, self.membership.ring())

    def _coordinate(self, origin, msg, ring) -> None:
        settings = self.membership.settings
        n = settings["n"]
        p = ring.partition(msg.key)
        # sloppy quorum: the first N reachable nodes of the extended preference list; a
        # stand-in is paired with the owner it keeps a hint for
        targets = ring.sloppy_preflist(p, self.membership.unreachable())
        if self.me not in [x for x, _ in targets]:
            # coordinating without being chosen (forwarded under another ring view, or no
            # owner answered a forward): stand in for an owner missing from the targets, in
            # place of whichever node stood in for it
            present = {x for x, _ in targets}
            missing = [o for o in ring.preflist(p) if o not in present]
            owner = missing[0] if missing else None
            rest = [t for t in targets if owner is None or t[1] != owner]
            targets = [(self.me, owner)] + rest[: n - 1]
        deadline = self.t + self.cfg.replica_timeout
        op: Op
        if type(msg) is Get:
            op = GetOp(self, origin, msg.key, deadline, targets, msg.r or settings["r"])
        else:
            value = msg.value if type(msg) is Put else None
            op = WriteOp(self, origin, msg.key, deadline, targets, msg.w or settings["w"],
                         msg.context, value, msg.wid)
        self.start_op(op, self.t)

    # ---- the Context operations use (see op.py) ----------------------------------------------
    def start_op(self, op: Op, now: float) -> None:
        op.started = now
        self.live_ops[id(op)] = op
        heapq.heappush(self.timers, (op.deadline, next(self.timer_seq), op))
        op.start()

    def ask(self, node_id: str, msg, op: Op | None) -> None:
        rid = next(self.rids)
        msg.rid = rid
        if op is not None:
            self.peer_rids[rid] = (op, node_id, self.t)
            rids = self.op_rids.get(id(op))
            if rids is None:
                self.op_rids[id(op)] = [rid]
            else:
                rids.append(rid)
        box = self.out.peers.get(node_id)
        if box is None:
            box = self.out.peers[node_id] = []
        box.append(msg)

    def respond(self, origin, msg) -> None:
        ident, rid = origin
        msg.rid = rid
        self._reply(ident, msg)

    def done(self, op: Op) -> None:
        if self.live_ops.pop(id(op), None) is None:
            return
        for rid in self.op_rids.pop(id(op), ()):
            self.peer_rids.pop(rid, None)
        op.on_done()

    def wake(self, op: Op, at: float) -> None:
        heapq.heappush(self.timers, (at, next(self.timer_seq), op))

    def replica_timeout(self, node_id: str, remaining: float) -> float:
        return self.latency.budget(node_id, remaining)

    def standins(self, key: bytes, exclude: set[str]) -> list[str]:
        ring = self.membership.ring()
        unreachable = self.membership.unreachable()
        return [x for x in ring.walk(ring.partition(key))
                if x not in exclude and x not in unreachable]

    def suspect(self, node_id: str, reason: str) -> None:
        self.membership.suspect(node_id, reason)

    def repaired(self) -> None:
        self.metrics.read_repairs.inc()

    def observe(self, op: Op, ok: bool) -> None:
        elapsed = self.t - op.started
        kind = op.kind
        if isinstance(op, ForwardOp):
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

    def _on_siblings(self, key: bytes, count: int, write: bool) -> None:
        self.metrics.siblings.observe(count)
        if write:
            self.metrics.sibling_writes.inc()
        if count > self.cfg.sibling_warn:
            self.metrics.sibling_warnings.inc()

    def _on_replies(self, node_id, msgs: list, now: float) -> None:
        peer_rids = self.peer_rids
        for msg in msgs:
            entry = peer_rids.pop(msg.rid, None)
            if entry is None:
                continue  # late answer to a finished op, or a fire-and-forget ack
            op, target, sent = entry
            if target == node_id and id(op) in self.live_ops:
                self.latency.observe(node_id, now - sent)
                op.on_reply(node_id, msg)

    # ---- gossip ---------------------------------------------------------------------------
    def _gossip(self, now: float) -> None:
        self.next_gossip = now + self.cfg.gossip_interval
        self.membership.beat()
        s = self.membership.settings
        ring = self.membership.ring()
        self.out.gossip.append(Gossip(0, self.me, s["q"], s["n"], s["r"], s["w"],
                                      self.membership.table(), ring.fingerprint()))
        self.export.export(now)

    def _on_gossip(self, msg: Gossip) -> None:
        s = self.membership.settings
        if (msg.q, msg.n) != (s["q"], s["n"]):
            if msg.sender not in self.malformed_logged:
                self.malformed_logged.add(msg.sender[:64])
                log.error("member %s gossips q=%d n=%d but this cluster has q=%d n=%d: ignoring it",
                          msg.sender[:64], msg.q, msg.n, s["q"], s["n"])
            return
        self._merge_members(msg.members)

    # ---- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        return status(self)

