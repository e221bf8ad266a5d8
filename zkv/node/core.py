"""NodeCore: the whole node as a state machine, with no sockets, no clock and no threads.

Everything a node decides happens here or in the modules it calls; the transport
(`transport.py`, ZeroMQ) and the simulator (`tests/sim`) only move bytes and time:

    out = core.handle(source, messages, now)   # one decoded frame from `source`
    out = core.tick(now)                       # timers, gossip, background work
    out = core.take_output(durable)            # end of a turn: flush the engine, then send
                                               # (or take_output(persist=False), send
                                               # out.peers, core.persist(), send the rest)
    core.next_deadline()                       # when tick() wants to run next

`source` is one of
    (REQUEST, identity)   a request on the listening socket (clients and peers' requests)
    (REPLY, node_id)      an answer on this node's link to a peer (replies to `ask`)
    (GOSSIP, node_id)     a message on the gossip channel subscribed to that member (None:
                          unknown, the sender named in the message is believed)
    (SEED, endpoint)      an answer from a seed endpoint while joining
and, for REQUEST, `role` (what the transport authenticated; see `ROLE_MESSAGES`):
    PEER    holds the cluster key (CurveZMQ: ZAP User-Id "peer")
    ADMIN   holds an admin client key ("admin:NAME")
    CLIENT  holds a client key ("client:NAME")
    None    plain-text mode: a request whose identity is b"peer:<id>" of a current member is
            a peer's (the node that joins, for its Join), anything else an admin's (no keys:
            development only, the transport warns at start)
Messages a role may not send are answered with an Error and counted as malformed. Peer
identity (the id a peer request speaks for) always comes from the b"peer:<id>" identity,
which, with keys, the ZAP handler lets only cluster-key holders claim.
and the `Outbox` holds what to send: messages per peer, replies per request identity,
messages per raw endpoint (joining), gossip to broadcast, and members to (re)connect.

Every write a turn makes reaches the engine before `take_output` returns the turn's
messages (or, with `persist=False`, before any but the requests to peers are sent), so no
acknowledgement leaves before its write (with sync="always", after one fsync
for the whole turn: group commit).

Operations in flight are `Op`s (op.py): client requests (coordinator.py) and background work
(background.py). Anti-entropy answers and reaping live in antientropy.py, hint storage in
handoff.py, membership and cluster.json in membership.py, status and metrics in status.py,
a page of a partition's keys (Keys) in listing.py, snapshots of the stores in snapshots.py.

Namespaces (issue 15, DESIGN.md 2.6): `self.namespaces` is the registry (namespaces.py),
built from the cluster settings, saved in cluster.json, merged from gossip and JoinOk, and
grown by the admin's NsCreate. A client request names its namespace; the coordinator stores
the key under `namespaces.storage_key` (the stored key names N and the conflict mode) and
routes it with `self.membership.ring(ns.n)`. Everything after coordination (replicas, hints,
read repair, anti-entropy, reaping) sees only stored keys and takes N from them (`_n_of`):
anti-entropy keeps one `AntiEntropy` per N (`ae_for`; the cluster's N is `self.ae`), so a
partition's keys are exchanged, and reaped, with exactly the owners of their namespace's N.
In `lww` namespaces the coordinator prefixes each value with its HLC stamp (8 bytes
big-endian, zkv.hlc) and every replica keeps only the greatest version (`dvv.lww`).
"""

from __future__ import annotations

import datetime
import functools
import heapq
import itertools
import logging
import math
import os
import zlib
from collections import deque
from collections.abc import Callable
from heapq import heappush
from typing import Any, NoReturn

from zkv import hlc as hlcs
from zkv import wire
from zkv._core import dvv
from zkv._core.ring import Ring
from zkv.config import NodeConfig
from zkv.errors import InvalidRequest, StorageFull, ZkvError
from zkv.node import antientropy as aen
from zkv.node import expiry, health, latefile, settings, snapshots
from zkv.node import namespaces as nss
from zkv.node import ownership as own
from zkv.node.antientropy import AntiEntropy
from zkv.node.background import Background
from zkv.node.coordinator import BUSY, ForwardOp, GetOp, JointWriteOp, WriteOp, stored_wid
from zkv.node.handoff import HandoffStore
from zkv.node.latefile import LateFile
from zkv.node.latency import REFRESH, PeerLatency
from zkv.node.listing import answer_keys
from zkv.node.membership import MAX_INTENTS, Membership, cluster_doc, save_cluster
from zkv.node.metrics import NodeMetrics, label_secret
from zkv.node.namespaces import Namespace, Registry
from zkv.node.op import Op
from zkv.node.quorum import answer_context
from zkv.node.reach import REACH_ROUNDS, Reach
from zkv.node.replica import Replica, b36
from zkv.node.seal import Sealer
from zkv.node.status import MetricsExport, status
from zkv.node.transfer import Handover, Transfers, answer_fetch, drop_pass
from zkv.storage import LogStore
from zkv.wire import (
    E_INTERNAL,
    E_INVALID,
    E_UNAVAILABLE,
    Cluster,
    ClusterOk,
    Config,
    ConfigOk,
    Delete,
    Error,
    Fetch,
    Forward,
    Get,
    GetOk,
    Gossip,
    Join,
    JoinOk,
    Keys,
    KeysOk,
    LeafKeys,
    LeafKeysOk,
    Member,
    NsAlter,
    NsCreate,
    NsDrop,
    NsList,
    NsOk,
    Put,
    PutOk,
    Read,
    ReadOk,
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
    Snapshot,
    SnapshotOk,
    Status,
    StatusOk,
    TreeLevel,
)

log = logging.getLogger("zkv.node")

REQUEST, REPLY, GOSSIP, SEED = "request", "reply", "gossip", "seed"
JOIN_TIMEOUT = 60.0  # seconds a joining node keeps asking its seeds
JOIN_RETRY = 1.0
JOIN_LOG_EVERY = 10.0  # seconds between a joining node's log lines about unanswered seeds
TELL_INTERVAL = 3.0  # seconds between Joins re-sent to a member whose gossip does not know us
MAX_LOGGED_SOURCES = 10_000  # sources whose malformed frames were logged (once each)


def _utc(wall_ms: int) -> str:
    """A wall-clock time (ms since the epoch) in words, for a message."""
    return datetime.datetime.fromtimestamp(wall_ms / 1000, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _nothing_to_say(endpoint: str) -> str:  # NodeCore.seed_state when no transport sets it
    return ""


# ---- trust boundary (issue 13): roles and resource bounds ---------------------------------
PEER, ADMIN, CLIENT = "peer", "admin", "client"
CLIENT_MESSAGES = frozenset({Get, Put, Delete, Status, RingInfo, NsList, Read, Keys})
PEER_ONLY = frozenset({RGet, RPut, Forward, Join, TreeLevel, LeafKeys, RGetHashes, Reap,
                       Fetch})
# what an admin-only request does, in a refusal's words (a client key read "NsCreate is
# accepted from an admin key only": an outside run)
ADMIN_WHAT: dict[type, str] = {
    Repair: "a repair", Snapshot: "a snapshot", Cluster: "a cluster change",
    NsCreate: "creating a namespace", NsAlter: "altering a namespace",
    NsDrop: "dropping or truncating a namespace", Config: "a config change"}
ROLE_MESSAGES = {
    CLIENT: CLIENT_MESSAGES,
    # cluster changes, repair, snapshots, namespaces
    ADMIN: CLIENT_MESSAGES | {Repair, Snapshot, Cluster, NsCreate, NsAlter, NsDrop,
                     Config},
    PEER: CLIENT_MESSAGES | PEER_ONLY | {Cluster, NsCreate},  # relayed to the claimant / creator
}
# reply bytes one identity may be sent per loop turn: one largest value always fits; beyond
# it the turn answers "busy, retry" (a frame of reads of a large value cannot pile up memory)
TURN_BYTES_SLACK = 256 * 1024
TURN_BYTES_TOTAL_FACTOR = 4  # all identities together: this many per-identity budgets
MAX_INFLIGHT = {CLIENT: 256, ADMIN: 256, PEER: 4096}  # client ops in flight per identity
# request bytes (a write's value and context) its ops in flight hold, per identity, and over
# all client and admin identities together (peers' forwards have their own, per peer); one
# request is always taken when its connection has none in flight. 256 puts of 16 MiB on one
# connection made a node hold 4 GiB (README "Known limits" said so; Cassandra's
# native_transport_max_concurrent_requests_in_bytes[_per_ip] is the model)
MAX_INFLIGHT_BYTES = {CLIENT: 64 << 20, ADMIN: 64 << 20, PEER: 256 << 20}
MAX_INFLIGHT_BYTES_CLIENTS = 512 << 20
# requests that cost milliseconds each and are answered at once (no op in flight counts
# them): at most HEAVY_PER_TURN per identity and HEAVY_PER_TURN_TOTAL in all per loop turn,
# the rest answered "busy, retry" unread (a security review: one 20 KB frame of 4,096 Status
# held a node's loop 7-10 s, and 4,096 Keys with values drove one to 9.7 GB)
HEAVY = frozenset({Status, Keys, RingInfo, NsList, Repair, Snapshot, Config})
HEAVY_PER_TURN = 8
HEAVY_PER_TURN_TOTAL = 64
MALFORMED_LOGS_PER_MINUTE = 20  # "dropped malformed frame" lines, all sources together
# seconds past both the last call into the core and the deadline it asked to be called by
# (`next_deadline`): its process stood still meanwhile (SIGSTOP, a VM frozen, a machine
# starved of CPU). What it takes in the STALL_AFTER seconds after may have waited that long
# (`_resumed`: the I/O thread, stopped too, hands over what the kernel queued in the first
# moments after; the first turn may even find nothing yet)
STALL_GAP = 1.0
STALL_AFTER = 0.5
TWIN_GRACE = 5.0  # s: two open connections naming one member are judged this long after
# a peer's clock offset (health.clock_skew) is the largest of the offsets its last
# CLOCK_SAMPLES gossip messages of the last CLOCK_WINDOW seconds gave
CLOCK_SAMPLES = 8
CLOCK_WINDOW = 10.0
# the FEATURE_* bits a member's version needs for some namespace setting (_version_unfit)
UNFIT_BITS = wire.FEATURE_TTL | wire.FEATURE_WRITE_TTL | wire.FEATURE_DROP | wire.FEATURE_PRIMARY
MAX_IDENTITIES = 10_000  # identities with requests in flight (at most cfg.max_connections)
MAX_HINTS_PER_OWNER = 200_000  # hinted keys kept for one absent owner
HINT_TTL_MS = 24 * 3600 * 1000  # a hint older than this is dropped (its owner was gone a day)
HINT_SWEEP_INTERVAL = 10.0  # seconds between sweeps of expired / ownerless hints
HINT_SWEEP_BATCH = 5000  # hints dropped per sweep at most
# Gossip carries the sender's own record every round, the records that changed here since
# the last round (a member heard first-hand for the first time, moved, leaving), and the whole
# member table every max(TABLE_EVERY, members / TABLE_PER) rounds (staggered by node id),
# which repairs a delta lost everywhere (every member relays a change once, so one lost frame
# hides nothing). Every member hears every other first-hand (one PUB each, every member
# subscribed) and relayed records only make candidates (membership.py), so the whole table
# on every round cost N^2 record merges per node per round for nothing; with the period
# growing with N a node merges O(N) records per round (tools/simulate.py --scale).
TABLE_EVERY = 10
TABLE_PER = 5
MAX_UNSETTLED = 8  # states before changes not yet settled that gets also read (_joint)
LEAVE_HINT_WAIT = 60.0  # seconds a node that left waits for its hints to be delivered or passed
# an operator's leave, replace or force-remove this claimant made, and every change of a
# commit it made, is made again when a concurrent state without it wins (ownership.fate), if
# that state is at most one epoch past the last one that held it (further on, the cluster
# went on without it: a node that left may have joined again since) and within INTENT_TTL
# seconds of it; else a warning says to run it again
INTENT_TTL = 300.0
_WRITE_ACKS = frozenset({PutOk, RPutOk})  # replies that say a write was stored (RPutOk: if ok)


class Outbox:
    """What one turn sends, read by the transport (or simulator) after `take_output`; one
    left empty stays the core's for the next turn, so a caller must not keep it."""

    __slots__ = ("peers", "clients", "endpoints", "gossip", "connect", "subscribe", "drop")

    def __init__(self) -> None:
        self.peers: dict[str, list] = {}  # node id -> messages on this node's link to it
        self.clients: dict[bytes, list] = {}  # request identity -> replies
        self.endpoints: dict[str, list] = {}  # raw endpoint -> messages (join through seeds)
        self.gossip: list = []  # broadcast on the gossip channel
        self.connect: list[Member] = []  # members whose links must be made or remade
        self.subscribe: list[Member] = []  # candidates: listen to their gossip only
        self.drop: list[str] = []  # candidates never heard: close what was opened for them

    def __bool__(self) -> bool:
        return bool(self.peers or self.clients or self.endpoints or self.gossip or self.connect
                    or self.subscribe or self.drop)


class Intent:
    """A membership change this node made as the claimant (`zkv cluster leave|replace|
    force-remove`, or one of the changes of a `zkv cluster commit`), watched until it is done:
    `committed`, it was committed (auto-commit, or the commit: made again, it is committed
    again; else staged again), `epoch`, the last state that held it, `since`, when this node
    last saw it held, `relaying`, asked of another claimant now, `handed`, staged at that
    claimant (uncommitted: its staged changes, not gossiped, wait for the operator's commit
    there, which `zkv cluster plan` shows through any member)."""

    __slots__ = ("action", "node", "other", "committed", "epoch", "since", "relaying",
                 "handed")

    def __init__(self, action: str, node: str, other: str, committed: bool, epoch: int,
                 since: float) -> None:
        self.action, self.node, self.other, self.committed = action, node, other, committed
        self.epoch, self.since, self.relaying, self.handed = epoch, since, False, False

    @property
    def change(self) -> tuple[str, str, str]:
        return (self.action, self.node, self.other)

    def __repr__(self) -> str:
        return f"{self.action} {self.node}" + (f" {self.other}" if self.other else "")


class RelayOp(Op):
    """An admin request this node is not the claimant for: ask the claimant, relay its answer."""

    kind = "relay"

    def __init__(self, ctx, origin, claimant: str, msg, deadline: float) -> None:
        super().__init__(ctx, origin, b"", deadline)
        self.claimant = claimant
        self.msg = msg

    def start(self) -> None:
        self.pending = {self.claimant}
        self.ctx.ask(self.claimant, Cluster(0, self.msg.action, self.msg.node, self.msg.other),
                     self)

    def on_reply(self, node_id: str, msg) -> None:
        self.reply(msg, ok=not isinstance(msg, Error))
        self.finish()

    def on_timeout(self) -> None:
        self.reply(Error(0, E_UNAVAILABLE, f"the claimant {self.claimant} did not answer"),
                   ok=False)
        super().on_timeout()


class IntentRelayOp(RelayOp):
    """A lost change of this node's (an Intent), asked again of the claimant it is not, one
    request after the other (stage it, then commit it): no one waits on the answers (the
    next gossip round judges the state). A refusal is logged, unless the next request
    succeeds (a change still staged there refuses to be staged again). An uncommitted
    change staged there (or found staged) is handed to that claimant (Intent.handed)."""

    kind = "intent"

    def __init__(self, ctx, claimant: str, intent: Intent, asks: list,
                 deadline: float) -> None:
        super().__init__(ctx, None, claimant, asks[0], deadline)
        self.intent, self.asks, self.refused = intent, asks[1:], ""

    def on_reply(self, node_id: str, msg) -> None:
        if (not self.intent.committed and not isinstance(msg, Error)) or (
                not self.asks and "already has a staged change" in getattr(msg, "message", "")):
            self.intent.handed = True  # (staged there: that claimant's plan holds it now)
        if isinstance(msg, Error):
            self.refused += f"{'; ' if self.refused else ''}{msg.message}"
        elif not self.asks:
            self.refused = ""
        if self.asks:
            self.msg = self.asks.pop(0)
            self.start()
            return
        if self.refused:
            log.warning("the claimant %s refused to make %r again: %s", node_id, self.intent,
                        self.refused)
        self.finish()

    def on_timeout(self) -> None:
        Op.on_timeout(self)


def _dots_base(me: str, incarnation: int, saved, store) -> tuple[str, int]:
    """The id this node's dots continue under, and the incarnation it was taken at (replica.py,
    "Dots never repeat"): the saved one after a clean shutdown, else a new one: after an
    unclean shutdown (its dots may have been lost with the unsynced tail), and when nothing
    was saved. A new data dir cannot tell a new node from one whose disk was lost (it comes
    back under its old id): continuing the ids it had, it reissued the dots of writes only
    another replica still held, and they were dropped as already seen (the simulator,
    `Sim.wipe`: an acknowledged write lost). The node id alone is never a base."""
    ok = (isinstance(saved, list) and len(saved) == 2 and isinstance(saved[0], str)
          and (saved[0] == me or saved[0].startswith(me + "~")) and len(saved[0]) <= 128
          and type(saved[1]) is int and 0 <= saved[1] <= incarnation)
    new = f"{me}~{b36(incarnation)}"
    if not store.closed_cleanly:
        log.warning("the store was not closed cleanly: this node's new dots go under %s", new)
    elif ok:
        return saved[0], saved[1]
    elif len(store):
        log.info("no saved dot id for a store holding data: this node's new dots go under %s",
                 new)
    return new, incarnation


def _data_dir_owner(dots) -> str | None:
    """The node id a data dir's cluster.json says its dots go under ("node3" of "node3~k2x"),
    or None when it says none (a new data dir, an older version's file)."""
    if not (isinstance(dots, list) and dots and isinstance(dots[0], str) and dots[0]):
        return None
    base = dots[0]
    return base.rsplit("~", 1)[0] if "~" in base else base


LEAD_SLACK_MS = 1000  # (_unstampable: what observed stamps add past max_skew_ms)


class NodeCore:
    def __init__(self, cfg: NodeConfig, store: LogStore, handoff: HandoffStore, *,
                 incarnation: int, now: float, saved: dict | None = None,
                 cluster_path: str | None = None, metrics: NodeMetrics | None = None,
                 seal_key: bytes | None = None, flags: dict | None = None) -> None:
        self.cfg = cfg
        self.started_cfg = cfg  # (what `zkv status` compares runtime changes with)
        # the command line's settings (None: not given), which win over the --config file at a
        # restart (settings.py: SIGHUP, Config.save); None: a node embedded without one
        self.flags = flags
        # the next lww stamp in the moments after a stall, until then (`_resumed`); the stamp
        # of the moment it resumed, and the stamps issued since (a floor among them, or past
        # the first: the write was sent after the resume, `_stamp`)
        self.stall_stamp = 0
        self.stall_until = 0.0
        self.stall_end = -math.inf  # when the last stall ended (`_resumed`; stood_still_since)
        # after a stall, until the end of the first turn that took requests (at most until
        # stall_until): the writes taken may have waited through it (`_refuse_stale`)
        self.stall_backlog = False
        self.stall_took = False  # ... a request frame was handled since the stall
        # writes stored under BLAKE3(write id, value) once every serving member can (_gossip;
        # during a rolling upgrade from an older version: under the id as it came)
        self.hash_wids = False
        self.clock_seen: dict[str, deque[tuple[float, int]]] = {}  # peer -> (t, clock offset)
        self.resumed_stamp = 0
        self.stall_issued: set[int] = set()
        self.quiet_until = now  # the deadline the last tick asked for (next_deadline)
        self.stalls = (0, 0.0)  # stalls since start, the longest (s)
        # called with the new settings after a runtime change (settings.reconfigure): the
        # parts outside the core holding one (the transport's connection cap)
        self.settings_hooks: list[Callable[[NodeConfig], None]] = []
        # contexts given to clients are sealed, and a client write's must be (seal.py; the
        # cluster's key: None without --keys)
        self.seal = Sealer(seal_key, cfg.context_seals)
        self.me = cfg.id
        self.t = now
        self.started = now
        self.store = store
        # LogStore.is_corrupt, or None for a store without one (`_lost`)
        self._is_corrupt: Callable[[bytes], bool] | None = getattr(store, "is_corrupt", None)
        self.handoff = handoff
        owner = _data_dir_owner((saved or {}).get("dots"))
        if owner is not None and owner != cfg.id:
            self._refuse(f"the data dir {cfg.data_dir} holds the data of node {owner!r} (its "
                         f"cluster.json), but this node was started with --id {cfg.id!r}: "
                         f"start it with --id {owner!r}, or give {cfg.id!r} an empty data dir")
        # the cluster never deletes through the engine except to reap and to drop keys this
        # node no longer holds (transfer.drop_pass), and the engine keeps release marks in
        # memory only: re-release what earlier lives reaped or dropped
        store.release_tombstones(store.tombstones())
        self.dots_base = _dots_base(cfg.id, incarnation, (saved or {}).get("dots"), store)
        self.replica = Replica(cfg.id, store, handoff, cfg.sibling_warn, incarnation,
                               self.dots_base, cfg.max_siblings)
        self.metrics = metrics if metrics is not None else NodeMetrics()
        if cfg.keys is not None:  # (the metrics port is plain HTTP: no key names there)
            self.metrics.key_secret = label_secret(seal_key or os.urandom(32))
        self._observe_op = self.metrics.ops.observe  # per coordinated op (observe)
        self.replica.on_siblings = self._on_siblings
        self.replica.on_refused = self.metrics.note_sibling_refusal
        self.replica.expired = self.expired
        self.replica.dead = self.namespaces_dead
        self.cluster_path = cluster_path
        # the replica's memory of overwritten writes, kept across restarts in the data dir
        # (latefile.py: loaded now, written by the background scheduler and at a clean stop)
        self.late_file = LateFile(os.path.join(os.path.dirname(cluster_path), latefile.NAME)
                                  if cluster_path else None, self.replica.retired)
        self.late_file.load()
        self.out = Outbox()

        saved = saved or {}
        fixed = saved.get("settings") or {"q": cfg.ring_size, "n": cfg.n, "r": cfg.r,
                                          "w": cfg.w}
        me = Member(cfg.id, cfg.advertised_listen, cfg.advertised_gossip or cfg.gossip, cfg.rack,
                    incarnation, 0, features=wire.FEATURES)
        # (the wall clock is the handoff store's, the node's one: its default, the process's
        # clock, would put real time into a simulated node's cluster state)
        self.membership = Membership(me, fixed, self.now, gossip_interval=cfg.gossip_interval,
                                     down_after=cfg.down_after, wall=handoff.wall_ms)
        features = saved.get("features") or {}  # (as each member last gossiped them)
        for m in saved.get("members", []):
            self.membership.merge([Member(m[0], m[1], m[2], m[3], 0, 0,
                                          features=features.get(m[0], 0))])
        self.out.connect.extend(m for m in self.membership.table() if m.id != self.me)
        # namespaces (issue 15): the registry, and the clock that stamps lww writes
        self.hlc = hlcs.HLC(handoff.wall_ms, skew="clamp")
        self.namespaces = self._registry(saved.get("namespaces"))
        self._ns_encoded = self.namespaces.encode()
        self.ae_groups: dict[int, AntiEntropy] = {}  # N -> trees of keys with that N (not ours)
        # NsCreate answers held until every up member's gossip shows the namespace:
        # [identity, rid, name, members still to show it, answer anyway at]
        self.ns_waits: list[list] = []

        self.rids = itertools.count(1)
        self.peer_rids: dict[int, tuple[Op, str, float]] = {}  # rid -> (op, node, sent at)
        self.live_ops: dict[int, Op] = {}  # op.serial -> op, until it is done
        # (when, tiebreak, op.serial): a finished op is referenced by nothing, so the values
        # it read are freed at completion, not at its deadline; entries of finished ops are
        # skipped, and compacted away once they are half the heap
        self.timers: list[tuple[float, int, int]] = []
        self.timer_seq = itertools.count()
        self.op_serials = itertools.count(1)
        self.dead_timers = 0  # ops finished since the last compaction (each left >= 1 entry)
        self.latency = PeerLatency()
        # Context.replica_timeout(node_id, remaining): asked per replica request, so the
        # latency table's own method (no call through a NodeCore method)
        self.replica_timeout: Callable[[str, float], float] = self.latency.budget
        self.next_gossip = now
        self.gossip_round = 0
        self.table_offset = zlib.crc32(self.me.encode())  # staggers the full-table rounds
        self.gossip_delta: set[str] = set()  # members whose record changed since last round
        self.states_seen: dict[bytes, own.ClusterState] = {}  # peers' cluster states, decoded
        self.ae: AntiEntropy | None = None
        # set when this node came back as a member with an empty store (its disk lost): until
        # each partition it holds was exchanged with every other owner (AntiEntropy.unsure),
        # its reads of the partition do not count toward R (RGetOk.unsure)
        self.refill_since: float | None = None
        # cluster.json says this node's store held keys once (cluster_doc): only such a store,
        # found empty at a start, was lost or emptied (one that never held any, restarted
        # while another owner was down, refilled until it came back: every R=2 read of a
        # 3-node cluster failed meanwhile, a review)
        self.held_data = bool(saved.get("held_data"))
        # partitions (N, p) this node gained at the last ownership change (it owns them in the
        # current ring, not in the previous one): its reads of them do not count toward R
        # until the cluster settled (None) and then, from that time on (a float), every other
        # owner not down was exchanged with to the end (`_fresh_unsure`). A write coordinated
        # under the previous ring is counted on the old owners and reaches this node only as
        # an uncounted copy, which may still be in flight, or dropped, when a read routed
        # by the new ring asks it (the R=1 miss of the rejoin test under load).
        self.fresh: dict[tuple[int, int], float | None] = {}
        self.background = Background(self)
        self.export = MetricsExport(self)
        self.malformed_logged: set = set()
        # members whose own gossip says their version cannot serve this cluster: id ->
        # (its incarnation, why), logged once each (`_check_version`; `zkv status`)
        self.unfit: dict[str, tuple[int, str]] = {}
        self.malformed_window = (-1e9, 0, 0)  # (since, lines logged, lines left out)
        # with keys: the ZAP User-Id ("client:NAME", "admin:NAME") of the client frame being
        # handled, and how to name its key in a log line (the transport sets both)
        self.frame_user: str | None = None
        self.describe_user: Callable[[str], str] = lambda user: f"key {user}"
        self.turn_budget = cfg.max_value_size + wire.MAX_CONTEXT + TURN_BYTES_SLACK
        self.turn_bytes: dict[bytes, int] = {}  # reply bytes per identity this turn
        self.turn_total = 0
        self.turn_heavy: dict[bytes, int] = {}  # HEAVY requests per identity this turn
        self.inflight: dict[bytes, int] = {}  # client ops in flight per identity
        # the request bytes they hold (Op.size), per identity and over client identities
        self.inflight_bytes: dict[bytes, int] = {}
        self.client_bytes = 0
        self.max_identities = min(MAX_IDENTITIES, cfg.max_connections)
        self.next_hint_sweep = now + HINT_SWEEP_INTERVAL
        # why this node takes no writes now (None: it does): an engine refuses them (its disk
        # is full, under the reserve, or a write-out failed). Looked at every gossip round.
        self.write_stop: str | None = None
        # cluster.json could not take this life's new dot base (`_save_cluster(must=True)`: a
        # full disk at start): why; the node takes no writes, minting no dot, until it does
        self.dots_unsaved: str | None = None
        self.no_writes: set[str] = set()  # peers whose gossip says they take no writes now
        self.self_ident = b"peer:" + self.me.encode()
        self._self_prefix = self.self_ident + b"/"
        # a peer request identity (b"peer:<id>[/...]") -> the member id it names, for the
        # identities of current peers only (bounded by the member table): asked per frame
        self._peer_names: dict[bytes, str] = {}
        self._twin_checks: list[tuple[float, str, bytes, bytes]] = []  # (_peer_name)
        # the older connections of those checks that have sent nothing since: a process
        # killed while this node stood still (SIGSTOP) left its connection open here for a
        # moment after the resume, beside its restart's, and was logged as a second process
        # running (an outside run); one that sends nothing is not running
        self._twin_quiet: set[bytes] = set()
        self._durable = cfg.sync == "always"
        # joining: a node started with seeds and no known peers asks the seeds to let it in.
        # A seed list shared by every node (a config file, a StatefulSet) names this node
        # too: joining through oneself never answers; a node that is its only seed founds
        seeds = cfg.seed
        if not seeds and not saved.get("cluster") and not self.membership.peers \
                and saved.get("joining"):
            # a join that never completed (the process stopped first), started again without
            # --seed (a machine back at a new address, a config that lost the flag): founding
            # a cluster of its own would split it from the one it meant to join, where its id
            # may already be a member; it joins through the seeds it was given
            seeds = tuple(saved["joining"])
            log.warning("this node's join through %s did not complete before it stopped: "
                        "joining through them again (to found a new cluster instead, start "
                        "it on an empty data dir)", ", ".join(seeds))
        self.seeds = tuple(x for x in seeds if x not in (cfg.listen, cfg.advertised_listen))
        # (a saved member table without a cluster state, e.g. the join-time cluster.json.prev
        # a damaged file fell back to, is no membership: join through the seeds given)
        self.joining = bool(self.seeds) and (not self.membership.peers
                                             or not saved.get("cluster"))
        self.asking_seeds = False  # a member that hears no other member asks its seeds too
        self.heard_member = False  # a member's gossip was heard in this life (_seed_tick)
        self.join_started = now
        self.join_deadline = now + JOIN_TIMEOUT
        self.next_join = now
        self.next_join_log = -math.inf  # when to say again that the join has not completed
        self.seed_said: dict[str, str] = dict.fromkeys(self.seeds, "")  # a seed's last Error
        # what the transport's link to a seed has seen, in words ("" if nothing to say): set
        # by the transport (the simulator has no connections to describe)
        self.seed_state: Callable[[str], str] = _nothing_to_say
        self.told: dict[str, float] = {}  # member -> when it was last sent our Join (_tell)
        self.join_error: str | None = None
        # ownership (issue 11): the cluster state, transfers in, peers' epochs and progress
        self.peer_epochs: dict[str, tuple[int, str]] = {}
        self.progress: dict[str, tuple[int, list]] = {}
        # the states before each change since the cluster last settled (`prev_state` the
        # last: writes also reach its owners), at most MAX_UNSETTLED, and their rings per
        # (index, N): gets are read quorums of their owners too (`_joint`)
        self.unsettled: list[own.ClusterState] = []
        self._unsettled_rings: dict[tuple[int, int], own.Rings] = {}
        self.agreed_since: float | None = None
        self.need_drop = True  # look for partitions this node no longer holds (once settled)
        self.handover = Handover(self)  # ... and hand them over to their owners first
        self.left_at: float | None = None  # this node left the cluster (leave / replace)
        # whether the peers reach this node, by the heartbeat of it their gossip shows (reach.py:
        # an --advertise nobody can dial kept a joined node down everywhere, and silent here)
        self.reach = Reach()
        # membership changes made here, until done (kept in cluster.json)
        self.intents = [Intent(row[0], row[1], row[2], len(row) > 4 and row[4], row[3], now)
                        for row in saved.get("intents", [])]
        self.passing: set[str] = set()  # owners whose hints are being handed to stand-ins
        self.exit_requested = False  # the transport stops and the process exits 0
        self.handed_before = False  # it left before this start: no handover to wait for
        self.cluster_bytes = b""
        self.cluster_unsaved = False  # the last cluster.json write failed: retried per round
        self.transfers = Transfers(self, os.path.join(os.path.dirname(cluster_path),
                                                      "transfers.json") if cluster_path else None)
        st = None
        if saved.get("cluster"):
            try:
                st = own.decode(bytes.fromhex(saved["cluster"]))
            except (ValueError, TypeError) as exc:
                log.warning("ignoring the saved cluster state: %s", exc)
        # started on the data dir of a member (its cluster.json names it, a member or gone):
        # it takes up where it was, unless the cluster went on without it. Until the state
        # it holds is confirmed (or a newer one names it), its record says leaving, so no
        # claimant stages a join for it (ownership.joinable), and a state without it ends its
        # process: it left, or was removed, while it was down. To add it again, an operator
        # starts it on an empty data dir (a new node joining through --seed).
        self.resumed = st is not None and (self.me in st.members or self.me in st.gone)
        why = self._rack_conflict(st) if st is not None else None
        if why:
            self._refuse(why)
        if self.joining and st is not None and st.members.keys() <= {self.me}:
            # its data dir holds a cluster of its own (started once without --seed by
            # mistake): joining with it took the keys written there into the seeds' cluster,
            # and its gossip, of a state founded at another moment, was ignored (_foreign),
            # so its join never completed and no command removed it (an operator's run)
            self._refuse(
                f"the data dir {cfg.data_dir} holds a cluster of this node's own (founded "
                f"{'at ' + _utc(st.founded) if st.founded else 'earlier'}, "
                f"{len(self.store)} key(s)), not a member of the cluster of --seed "
                f"{', '.join(self.seeds)}: to join that cluster, start this node on an empty "
                f"data dir (`zkv dump` its keys first if they matter); to serve its own, start "
                f"it without --seed")
        self.membership.me.leaving = self.resumed
        if st is None and not self.joining:
            # (founded now only by a node that knows no member: a saved member table of a
            # version without states makes the state of a cluster that exists already)
            others = [(m.id, m.rack) for m in self.membership.table() if m.id != self.me]
            st = own.founding(self.me, cfg.rack, others,
                              founded=0 if others else self.handoff.wall_ms())
            st.auto_commit = cfg.auto_commit
        if st is not None:
            self._adopt(st, save=False)
        if saved.get("settings"):  # (after the state: auto_commit is the state's)
            settings.warn_ignored(self)  # (given on a restart: the cluster's are kept)
        self._handlers: dict[type, Callable[[bytes, Any], None]] = {
            RGet: self._on_rget, RPut: self._on_rput, Get: self._on_client,
            Put: self._on_client, Delete: self._on_client, Forward: self._on_forward,
            RingInfo: self._on_ring_info, Status: self._on_status, Join: self._on_join,
            TreeLevel: self._on_tree_level, LeafKeys: self._on_leaf_keys,
            RGetHashes: self._on_versions, Reap: self._on_reap, Repair: self._on_repair,
            Snapshot: self._on_snapshot, Keys: self._on_keys, Config: self._on_config,
            Cluster: self._on_cluster, Fetch: self._on_fetch,
            NsCreate: self._on_ns_create, NsAlter: self._on_ns_alter, NsDrop: self._on_ns_drop,
            NsList: self._on_ns_list, Read: self._on_read,
        }
        self._saved_unsettled = (0, 0)  # (states, fresh partitions) cluster.json holds
        if st is not None:
            self._restore_unsettled(saved)
        if saved.get("dots") != list(self.dots_base):  # before this node issues a dot
            self._save_cluster(must=True)
            self._set_write_stop(self.dots_unsaved)

    def _restore_unsettled(self, saved: dict) -> None:
        """A restart while a change had not settled (or before this node's fresh partitions
        were verified) takes up where it was: the states before the change (gets and puts stay
        joint quorums of their owners until settled again, `_joint`) and the partitions still
        unverified (answered unsure until verified, `fresh`), both saved in cluster.json by
        `_save_cluster`. Without them a node restarted inside the window read and wrote by the
        new ring alone, and vouched for partitions it may lack an old owner's write of. What
        does not decode, or does not fit the cluster state it was saved with, is dropped."""
        states, marks = saved.get("unsettled"), saved.get("fresh")
        cur = self.membership.cluster
        assert cur is not None
        if isinstance(states, list) and 0 < len(states) <= MAX_UNSETTLED:
            try:
                back = [own.decode(bytes.fromhex(x)) for x in states]
            except (ValueError, TypeError) as exc:
                log.warning("ignoring the saved states before the last change: %s", exc)
                back = []
            if back and all(own.newer(b, cur) for b in back):  # (each before it)
                self.unsettled = back
        elif states is not None:
            log.warning("ignoring the saved states before the last change: not a list of at "
                        "most %d", MAX_UNSETTLED)
        groups, q = self.groups(), self.membership.settings["q"]
        if isinstance(marks, list) and len(marks) <= len(groups) * q:
            for mark in marks:
                if (isinstance(mark, list) and len(mark) == 2 and type(mark[0]) is int
                        and type(mark[1]) is int and mark[0] in groups and 0 <= mark[1] < q
                        and self.me in self.membership.ring(mark[0]).preflist(mark[1])):
                    self.fresh[(mark[0], mark[1])] = None  # verified again once settled
        elif marks is not None:
            log.warning("ignoring the saved unverified partitions: not a list of at most %d",
                        len(groups) * q)
        if self.cluster_path:  # (what the file holds: nothing without one, as in the simulator)
            self._saved_unsettled = (len(self.unsettled), len(self.fresh))
        if self.unsettled or self.fresh:
            log.info("restarted before the last change settled: %d state(s) before it still "
                     "read and written, %d gained partition(s) still to verify",
                     len(self.unsettled), len(self.fresh))

    def _refuse(self, why: str) -> NoReturn:
        """Refuse to start (a wrong --id or --rack for this data dir), so that a start with the
        right flags goes on as if this one never happened: engines found closed cleanly are
        closed cleanly again (nothing was written). After an unclean stop the store is left
        as found: a clean close now would hide that its unsynced tail, and the dots in it, may
        be lost, and the next start would issue those dots again (`_dots_base`)."""
        if self.store.closed_cleanly:
            self.store.close()
            self.handoff.close()
        raise ZkvError(why)

    # ---- the state machine's interface ------------------------------------------------------
    def now(self) -> float:
        return self.t

    def wall_ms(self) -> int:
        return self.handoff.wall_ms()

    def start_ended(self, now: float) -> None:
        """The start's own work (`start`: a read of every key) ended at `now`: the time it
        took is no stand-still of the process (a start over 500,000 keys logged "this node
        stood still for 10.8 s", counted in zkv_stood_still_total: an outside run)."""
        self.t = max(self.t, now)

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
        self.ae = ae
        default, others = self.membership.settings["n"], set()

        def ours(items):  # the cluster's N; one more pass per other N found
            for k, v in items:
                kn = self._n_of(k)
                if kn is None or kn == default:
                    yield k, v
                else:
                    others.add(kn)

        n = ae.rebuild(ours(self.store.items()))
        for gn in sorted(others):
            group = self.ae_for(gn)
            assert group is not None
            n += group.rebuild((k, v) for k, v in self.store.items() if self._n_of(k) == gn)
        log.info("Merkle trees rebuilt over %d keys", n)
        ae.journal = self.handoff
        now_ms = self.handoff.wall_ms()
        kept = sum(self._ae_key(key).restore_reap(key, digest, (now_ms - ms) / 1000, version)
                   for key, ms, digest, version in self.handoff.reaps())
        if kept:
            log.info("%d reaped tombstone(s) remembered from before the restart", kept)
        self.replica.on_change.append(self._ae_on_change)
        self.replica.ignore = lambda k, v: self._ae_key(k).is_reaped_echo(k, v)
        self.replica.on_echo = self._reannounce_reap
        self.replica.on_retired = self._push_reaped
        self.replica.reaped_past = lambda k: self._ae_key(k).reaped_past(k)
        self.replica.reaped_version = lambda k: self._ae_key(k).reaped_version(k)
        st = self.membership.cluster
        damaged = getattr(self.store, "damaged_regions", 0)
        if damaged and st is not None and self.me in st.members:
            # the engine skipped corrupt records: a key whose newest record was among them
            # (and whose key bytes were too) reads as its version before, a deleted value
            # back; nothing says which keys. Its reads do not count until every partition
            # was exchanged with the other owners, which also repairs them.
            self._begin_refill(f"the store skipped {damaged} corrupt region(s) when it "
                               "opened, so some keys may read as an older version")
        elif (self.resumed and self.held_data and st is not None and self.me in st.members
              and len(st.members) > 1 and not len(self.store) and not self.store.tombstones()):
            # started as a member (its cluster.json names it) with empty stores: they were
            # lost or emptied (an operator following the old-snapshot refusal, a data volume
            # replaced; a drill's R=1 reads answered 330-445 of 3,000 keys not found): its
            # reads must not count toward R until it has refilled, as after a rejoin through
            # a seed (_on_joined). (Only a store that held keys: held_data.)
            self._begin_refill()

    # ---- anti-entropy per N (issue 15) ------------------------------------------------------
    @staticmethod
    def _n_of(key: bytes) -> int | None:
        """The N a stored key's namespace fixed; None for the default namespace's keys."""
        ks = nss.key_settings(key)
        return ks[0] if ks is not None else None

    def ae_for(self, n: int | None) -> AntiEntropy | None:
        """The trees of the keys whose N is `n` (None / 0: the cluster's N); None when
        anti-entropy is off. At most MAX_N groups, made on first use."""
        if self.ae is None or not n or n == self.membership.settings["n"]:
            return self.ae
        ae = self.ae_groups.get(n)
        if ae is None:
            ae = self.ae_groups[n] = AntiEntropy(self.ae.q_bits, self.now,
                                                 grace=self.cfg.tombstone_grace)
            ae.journal = self.handoff
        return ae

    def ae_groups_all(self) -> list[tuple[int, AntiEntropy]]:
        """(N, trees) for the cluster's N and every other N a namespace or a key uses."""
        if self.ae is None:
            return []
        for ns in self.namespaces:
            self.ae_for(ns.n)
        return [(self.membership.settings["n"], self.ae)] + sorted(self.ae_groups.items())

    def in_group(self, n: int | None):
        """Predicate: does a stored key belong to the N-group `n` (None / 0: the cluster's)?"""
        default = self.membership.settings["n"]
        want = n or default

        def accept(key: bytes) -> bool:
            kn = self._n_of(key)
            return (kn or default) == want
        return accept

    def _ae_key(self, key: bytes) -> AntiEntropy:
        # a default-namespace key (no namespace prefix, which starts with a zero byte): the
        # cluster's N, without parsing the key (asked per replica write and per read repair)
        ae = self.ae if key[:1] != b"\x00" else self.ae_for(self._n_of(key))
        assert ae is not None
        return ae

    def _ae_on_change(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        # (_ae_key inline: called on every local write)
        ae = self.ae if key[:1] != b"\x00" else self.ae_for(self._n_of(key))
        assert ae is not None
        ae.on_change(key, old, new)

    def _reannounce_reap(self, key: bytes, version: bytes) -> None:
        """An owner that missed our Reap (lost, or it was down) keeps pushing the tombstone
        back: tell every other owner again, so it reaps too instead of disagreeing for the
        whole echo window (the simulator found this, seed 3)."""
        digest = aen.vdigest(version)
        for peer in self.membership.ring(self._n_of(key)).preflist_for_key(key):
            if peer != self.me:
                self.ask(peer, Reap(0, [key], [digest]), None)

    def _push_reaped(self, key: bytes, tombstone: bytes) -> None:
        """A late copy of a write a reaped tombstone deleted came in: its sender lost the
        tombstone and the reap memory (a power loss under sync=none loses a node's whole
        unsynced state) and serves the deleted value again, which this node refuses while
        the sender's exchanges keep offering it. Send the other owners the tombstone: it
        retires the copy there (rule R), and they reap it again once they agree. (The
        simulator: replicas disagreeing, then the deleted value back once the reap memory
        expired; --client core --loss 0.05 --dup 0.02 --partitions 4 --pauses 2 --crashes 2
        --power-losses 1, seeds 477, 559, 586.)"""
        for peer in self.membership.ring(self._n_of(key)).preflist_for_key(key):
            if peer != self.me:
                self.ask(peer, RPut(0, key, tombstone), None)

    def handle(self, source: tuple[str, object], msgs: list, now: float,
               role: str | None = None) -> Outbox:
        if now - self.t > STALL_GAP and now - self.quiet_until > STALL_GAP:
            self._resumed(now)
        self.t = now
        kind, who = source
        if self.stall_backlog and kind == REQUEST:
            self.stall_took = True
        if kind == REPLY:
            self._on_replies(who, msgs, now)
        elif kind == REQUEST:
            ident = who if isinstance(who, bytes) else b""
            if (ident == self.self_ident or ident.startswith(self._self_prefix)) and (
                    role is None or role == PEER):  # (a client key's identity proves nothing:
                # its "peer:<this node>/x" got an operator told to check the addresses)
                self._refuse_self(ident, msgs)
                return self.out
            plain = role is None  # plain text: the role is the identity's (with keys: the
            # transport's), asked once per frame; an identity not b"peer:..." is an admin's
            # (_role, without the call)
            if self._twin_quiet:
                self._twin_quiet.discard(ident)  # (it sent a frame: a live process's)
            if role is not None:
                as_role = role
                if role == PEER and ident not in self._peer_names:
                    self._peer_name(ident)
            elif ident.startswith(b"peer:"):
                # a member's identity (_role's first case, without its three calls: asked per
                # peer frame), else _role says; the id it names parsed once per identity
                peers = self.membership.peers
                name = self._peer_names.get(ident)
                if name is None:
                    name = self._peer_name(ident)
                p = peers.get(name)
                as_role = PEER if p and p.member is not None else self._role(ident, None)
            else:
                as_role = ADMIN
            if as_role == PEER and msgs and type(msgs[0]) is RPut and not self.joining:
                self._replica_writes(ident, msgs, plain)  # a coordinator's fan-out
            else:
                self._requests(ident, msgs, as_role, plain)
        elif kind == GOSSIP:
            for msg in msgs:
                if type(msg) is Gossip and (who is None or msg.sender == who):
                    self._on_gossip(msg)
                else:
                    self.malformed("gossip", f"unexpected {type(msg).__name__} on the gossip "
                                   f"of {wire.clip(who, 64)}")
        elif kind == SEED:
            for msg in msgs:
                if type(msg) is JoinOk:
                    self._on_join_ok(str(who), msg)
                elif type(msg) is Error and self.joining:
                    if msg.message.startswith("join refused"):
                        self.join_error = (f"{wire.clip(who, 80)} refused: "
                                           f"{wire.clip(msg.message, 300)}")
                    elif who in self.seed_said:  # (one entry per seed: bounded)
                        self.seed_said[who] = wire.clip(msg.message, 200)  # (said in the log)
        return self.out

    def tick(self, now: float) -> Outbox:
        if now - self.t > STALL_GAP and now - self.quiet_until > STALL_GAP:
            self._resumed(now)
        self.t = now
        if self.stall_backlog and (self.stall_took or now >= self.stall_until):
            self.stall_backlog = False  # (what the first turn took was the backlog)
        self._tick(now)
        self.quiet_until = self.next_deadline()
        return self.out

    def _tick(self, now: float) -> None:
        timers = self.timers
        live = self.live_ops
        while timers and timers[0][0] <= now:
            op = live.get(heapq.heappop(timers)[2])
            if op is not None:
                try:
                    if now >= op.deadline:
                        if op.pending and self.stall_until <= now:  # (reach.py; a stall's
                            for node_id in op.pending:  # timeouts are no peer's silence)
                                self.reach.timed_out(node_id, now)
                        op.on_timeout()
                    else:
                        op.on_timer()
                except (StorageFull, OSError) as exc:  # (a write it made: ends at its deadline)
                    self.storage_refused(exc)
        if self.joining:
            self._join_tick(now)
            return
        if self.membership.usurped_by is not None and self.join_error is None:
            other = self.membership.usurped_by
            self.join_error = (
                f"another process runs as {self.me} at {wire.clip(other.listen, 80)}, started "
                "later: this node was replaced while it was stopped or frozen, and stops now. "
                "Its data dir holds what it had then: do not start it on that dir again "
                "(deletes made since would come back); empty it first")
            log.error("%s", self.join_error)  # (the transport stops with it: exit 1)
            return
        if now >= self.next_gossip:
            self._gossip(now)
            if now >= self.next_join:
                self._seed_tick(now)
            self._check_space()
        if self.ns_waits:
            self._ns_waits_check(now)
        if self._twin_checks:
            self._check_twins()
        if self.write_stop is not None:
            return  # background work writes (hints, repairs, transfers): not now
        if now >= self.next_hint_sweep:
            self.next_hint_sweep = now + HINT_SWEEP_INTERVAL
            self._sweep_hints()
        self.background.tick(now)
        if self.transfers.parts:
            self.transfers.tick(now)

    def next_deadline(self) -> float:
        if self.joining:
            t = self.next_join
        else:
            t = self.next_gossip
            due = self.background.next_run  # Background.next_due(), without the call
            if due < t and self.write_stop is None:  # (paused while writes are refused)
                t = due
        timers = self.timers
        if timers and timers[0][0] < t:
            t = timers[0][0]
        return t

    def take_output(self, durable: bool | None = None, persist: bool = True) -> Outbox:
        """End of a turn: every write reaches the engine (and with `durable` the disk), then
        the turn's messages are handed over. With `persist=False` the caller persists
        (`persist()`) once it has sent `out.peers` and before anything else. A turn that sends
        nothing hands over an empty Outbox that stays the core's (`out is core.out`): a caller
        may skip it."""
        if persist and (self.replica.dirty or self.transfers.dirty):
            self.persist(self.out, durable)
        if self.membership.candidates:
            self.out.subscribe.extend(self.membership.take_candidates())
        if self.turn_bytes:  # (only replies over 4 KiB are counted)
            self.turn_bytes.clear()
        if self.turn_heavy:
            self.turn_heavy.clear()
        self.turn_total = 0
        out = self.out
        # most turns send nothing (a gossip heard, a tick with nothing due, a late replica's
        # answer): their Outbox, still empty, is handed over and kept for the next turn
        if out:  # (Outbox.__bool__: every field it has)
            self.out = Outbox()
        return out

    def persist(self, out: Outbox | None = None, durable: bool | None = None) -> None:
        """The writes of the turn whose messages are `out` (None: the turn still in the
        making, `self.out`) reach the engine (with `durable`,
        the disk: one fsync for them all), then the transfers' progress file. Must precede
        every message of the turn but `out.peers`: those are only requests (this node's own
        RPuts, RGets, fetches), which acknowledge nothing, so the transport sends them first
        and the replicas' work overlaps this node's write (and fsync). If the writes do not
        reach the files, `out` acknowledges none of them (`_turn_unwritten`)."""
        try:
            self.replica.flush(durable=self._durable if durable is None else durable)
            if self.transfers.dirty and self.write_stop is None:
                # (not while writes are refused: a cursor saved past merges still buffered
                # in the engine would skip them after a crash)
                self.transfers.checkpoint(self.t)
        except (StorageFull, OSError) as exc:
            self._turn_unwritten(self.out if out is None else out, exc)

    # ---- a disk that takes no writes ---------------------------------------------------------
    def _check_space(self) -> None:
        """Once a gossip round: do the engines take writes (LogStore.check_space: the free-space
        reserve, and a failed write-out retried)? While one does not, this node refuses writes
        up front (E_UNAVAILABLE: clients and coordinators go to other owners, stand-ins keep
        hints for it), still answers reads, and pauses its background work."""
        why = self.store.check_space()
        hints = self.handoff.store
        if why is None and hints is not None:
            why = hints.check_space()
        if why is None and self.dots_unsaved:
            self._save_cluster(must=True)
            why = self.dots_unsaved
        self._set_write_stop(why)
        if self.cluster_unsaved or (not self.held_data and len(self.store)):
            self._save_cluster()  # (again; or once the store holds keys: held_data)

    def _set_write_stop(self, why: str | None) -> None:
        was = self.write_stop
        if why == was:
            return
        self.write_stop = why
        self.metrics.write_stop.set(0 if why is None else 1)
        if why is None:
            log.info("%s takes writes again", self.me)  # (good news: no WARNING)
        elif was is None:
            log.error("%s takes no writes: %s. It still answers reads; writes go to the key's "
                      "other owners (and hints for it to stand-ins) until it takes them again "
                      "(within a gossip round of the cause going away)", self.me, why)

    def storage_refused(self, exc: Exception) -> None:
        """An engine refused a write (StorageFull) or failed one (OSError): no writes until
        the engines say they take them again (`_check_space`)."""
        self.metrics.writes_refused.inc()
        if isinstance(exc, StorageFull):
            why = str(exc)
        else:  # the engine's own reason, where it has one (a failed fsync's says what to do)
            hints = self.handoff.store
            why = (self.store.write_error or (hints.write_error if hints is not None else None)
                   or f"writing to disk failed: {exc}")
        self._set_write_stop(why)

    def _turn_unwritten(self, out: Outbox, exc: Exception) -> None:
        """The turn's writes did not reach the files (a full disk, an I/O error). They stay in
        the engine's buffer, readable, and are written out once there is room (check_space);
        until then nothing acknowledges them: the turn's replica acknowledgements become
        refusals (the coordinator asks a stand-in), its clients' write replies and those of
        every write still in flight (their local copy is among the unwritten) errors they
        retry elsewhere, with the same write id. Reads go out as they are."""
        self.storage_refused(exc)
        why = self.write_stop
        log.error("%s: the turn's writes did not reach the disk (%s); not acknowledging them",
                  self.me, why)
        self.replica.dirty = False  # (the engine keeps them; check_space writes them out)
        text = f"{self.me} could not store the write: {why}"[:wire.MAX_ERROR_TEXT]
        for msgs in out.clients.values():
            for i, m in enumerate(msgs):
                if type(m) in _WRITE_ACKS and (type(m) is not RPutOk or m.ok):
                    msgs[i] = Error(m.rid, E_UNAVAILABLE, text)
        saved, self.out = self.out, out  # the in-flight writes' errors go out with this turn
        try:
            for op in list(self.live_ops.values()):
                if type(op) is WriteOp and not op.replied and op.origin is not None:
                    op.reply(Error(0, E_UNAVAILABLE, text), ok=False)
        finally:
            if saved is not out:
                self.out = saved

    def shutdown(self) -> Outbox:
        """Fail every client request in flight (the client retries elsewhere)."""
        for wait in self.ns_waits:  # created here already; the rest learn it by gossip
            self._reply(wait[0], NsOk(wait[1], self._ns_encoded, wait[2]))
        self.ns_waits = []
        for op in list(self.live_ops.values()):
            if not op.replied and op.origin is not None:
                op.reply(Error(0, E_UNAVAILABLE, f"node {self.me} is shutting down"), ok=False)
            self.done(op)
        self.transfers.next_save = 0.0  # the progress file too, at this last flush
        if self.membership.peers:
            # a goodbye: the peers count this node down at once, routing its replicas' writes
            # to stand-ins and keeping hints for it, rather than sending it requests until
            # their detectors convict its silence seconds later (a restart beats again)
            self.out.gossip.append(self._gossip_message([self.membership.beat()],
                                                        self.transfers.report(), True))
        return self.take_output()

    def close_stores(self) -> None:
        """At exit, after `shutdown`: the engines write out what they buffer and close. On a
        disk that takes no writes, what cannot be written out goes with the process (it was
        never acknowledged: `_turn_unwritten`), and the next start sees an unclean stop; that
        is logged, not raised, so the rest of the shutdown runs."""
        for what, close in (("the turn's writes", self.replica.flush),
                            ("the memory of overwritten writes", self.late_file.save),
                            ("the data engine", self.store.close),
                            ("the handoff engine", self.handoff.close)):
            try:
                close()
            except (StorageFull, OSError) as exc:
                log.error("%s at exit: writing out %s failed (%s); what it could not write "
                          "was never acknowledged to a client", self.me, what, exc)

    def _peer_name(self, ident: bytes) -> str:
        """The member id a peer identity (b"peer:<id>/<nonce>", one per process) names, kept
        for a current member's. A second connected identity naming one member is a second
        process running as it (a copy of its data dir started with its --id served clients
        for minutes unnoticed: an outside run); logged, once per identity."""
        name = ident[5:].split(b"/", 1)[0].decode("utf-8", "replace")
        if name in self.membership.peers and len(self._peer_names) < len(
                self.membership.peers) + 64:
            twins = [other for other, who in self._peer_names.items() if who == name]
            if twins and len(self._twin_checks) < 64:
                # judged TWIN_GRACE later: a member that makes its link again (a clock jump, a
                # peer seen down then up) opens the new connection before this node sees the
                # old one close, and was logged as two processes (an outside clock-skew run)
                self._twin_checks.append((self.t + TWIN_GRACE, name, twins[0], ident))
                self._twin_quiet.add(twins[0])
            self._peer_names[ident] = name
        return name

    def _check_twins(self) -> None:
        """Log the twin connections (`_peer_name`) whose grace has passed with both still
        open here: two processes run as one member."""
        due = [x for x in self._twin_checks if x[0] <= self.t]
        self._twin_checks = [x for x in self._twin_checks if x[0] > self.t]
        for _, name, first, second in due:
            quiet = first in self._twin_quiet
            self._twin_quiet.discard(first)
            if first in self._peer_names and second in self._peer_names and not quiet:
                log.error("two processes run as %s: its connections %s and %s are both open "
                          "here (a copy of its data dir started with its --id, or a process "
                          "frozen while another replaced it): stop one", wire.clip(name, 64),
                          wire.clip(first, 80), wire.clip(second, 80))

    def forget_identity(self, ident: bytes) -> None:
        """The connection of `ident` closed (the transport saw it go): drop everything kept
        for it. Its operations in flight still finish (a write still reaches its replicas);
        their replies fail at the socket at once (ZMQ_ROUTER_MANDATORY), and their completion
        finds no in-flight count to decrement. (Not a scan of live_ops per close: a flood's
        closes would make that quadratic.)"""
        self.turn_bytes.pop(ident, None)
        self._peer_names.pop(ident, None)
        self.out.clients.pop(ident, None)
        self.malformed_logged.discard(ident)
        self.inflight.pop(ident, None)
        self.inflight_bytes.pop(ident, None)  # (client_bytes keeps them until the ops end)
        if self.ns_waits:
            self.ns_waits = [w for w in self.ns_waits if w[0] != ident]

    def refuse_frame(self, ident: bytes, why: str) -> None:
        """A request frame that does not decode (wire.WireError): counted as malformed, and
        answered with an Error of rid 0 (its own rids are unreadable; no request has rid 0),
        so its sender learns why at once instead of waiting out its timeout. One small reply
        per refused frame, under the reply budget like any other."""
        self.malformed(ident, why)
        self._reply(ident, Error(0, E_INVALID, f"frame refused by {self.me}: "
                                 f"{wire.clip(why, 300)}"))

    def refuse_unauthorised(self, ident: bytes, why: str, reason: str,
                            user: str | None = None) -> None:
        """A request frame whose connection's key may no longer send anything (`reason`
        "key_removed": its key file was removed since it connected; `user`: its ZAP User-Id):
        refused for authorisation, not as malformed, and answered with an Error of rid 0."""
        self.unauthorised(ident, why, reason, user)
        self._reply(ident, Error(0, E_INVALID, f"frame refused by {self.me}: "
                                 f"{wire.clip(why, 300)}"))

    def unauthorised(self, source: bytes, why: str, reason: str,
                     user: str | None = None) -> None:
        """A request its connection's key is not allowed to make (reason: "key_removed",
        "admin_only", "peer_only"): counted in zkv_unauthorised_requests_total{reason} and
        logged as malformed frames are (once per source, at most MALFORMED_LOGS_PER_MINUTE
        lines a minute), naming the key when it is known."""
        self.metrics.unauthorised.labels(reason).inc()
        who = wire.clip(source, 80)
        if user is not None:
            who = f"{self.describe_user(user)}, connection {who}"
        self._log_limited(source, "refused a request of %s for authorisation: %s", who,
                          wire.clip(why, 200))

    def malformed(self, source, why: str) -> None:
        """A frame or message that could not be accepted: count it, log once per source, and
        at most MALFORMED_LOGS_PER_MINUTE lines a minute in all (a security review: a new
        connection per bad frame wrote a line each, 2,458 lines in 3.8 s); the lines left out
        are counted in the next one."""
        kind = "peer" if isinstance(source, str) or bytes(source).startswith(b"peer:") else "client"
        self.metrics.malformed.labels(kind).inc()
        self._log_limited(source, "dropped malformed frame from %s: %s", wire.clip(source, 80),
                          wire.clip(why, 200))

    def _log_limited(self, source, fmt: str, *args) -> None:
        """A WARNING about `source`: once per source, at most MALFORMED_LOGS_PER_MINUTE lines a
        minute in all (malformed frames and refused requests together)."""
        if source not in self.malformed_logged and len(self.malformed_logged) < MAX_LOGGED_SOURCES:
            self.malformed_logged.add(source)
            start, logged, left_out = self.malformed_window
            if self.t - start >= 60.0:
                start, logged = self.t, 0
            if logged >= MALFORMED_LOGS_PER_MINUTE:
                self.malformed_window = (start, logged, left_out + 1)
                return
            self.malformed_window = (start, logged + 1, 0)
            log.warning(fmt + " (logged once per source%s)", *args,
                        f"; {left_out} more in the last minute not logged" if left_out else "")

    # ---- joining --------------------------------------------------------------------------
    def _join_tick(self, now: float) -> None:
        if now >= self.join_deadline:
            self.join_error = (f"no seed let this node join within {JOIN_TIMEOUT:.0f} s: "
                               f"{self._seeds_described()}")
            return
        if now >= self.next_join:
            self.next_join = now + JOIN_RETRY
            self._ask_seeds()
            if now >= self.next_join_log:  # (asked every JOIN_RETRY, said every JOIN_LOG_EVERY)
                first = self.next_join_log == -math.inf
                self.next_join_log = now + JOIN_LOG_EVERY
                if first:
                    log.info("asking seeds to join: %s", ", ".join(self.seeds))
                else:
                    log.warning("not joined after %.0f s (this node gives up after %.0f s): %s",
                                now - self.join_started, JOIN_TIMEOUT,
                                self._seeds_described())

    def seed_seen(self, seed: str) -> str:
        """What is known of why `seed` has not let this node join: its last error answer, else
        what its link saw (`seed_state`); "" if nothing."""
        said = self.seed_said.get(seed)
        return f"it answered: {said}" if said else self.seed_state(seed)

    def _seeds_described(self) -> str:
        said = []
        for seed in self.seeds:
            why = self.seed_seen(seed)
            said.append(f"{seed} ({why})" if why else seed)
        return ", ".join(said)

    def _ask_seeds(self) -> None:
        """This node's Join to every seed (answered by a JoinOk on the seed's link)."""
        for seed in self.seeds:
            self.out.endpoints.setdefault(seed, []).append(
                Join(next(self.rids), self.membership.me))

    def _seed_tick(self, now: float) -> None:
        """A member (not joining) that hears no other member asks its seeds too, every
        JOIN_RETRY: a whole cluster started again at new addresses knows only the old ones
        from its cluster.json, so nobody hears anybody until a Join through a seed (its new
        address, named by the operator) tells that seed where this node is, and the seed's
        JoinOk tells it where the members are now (`_on_join_ok`). Checked once per JOIN_RETRY
        (peers read from cluster.json count as up for `down_after` after the start)."""
        self.next_join = now + JOIN_RETRY
        ms = self.membership
        was, self.asking_seeds = self.asking_seeds, (
            self.left_at is None and not any(ms.is_up(p) for p in ms.peers))
        if self.asking_seeds:
            self._ask_seeds()
            if was:  # (once per while alone: a long partition would say it every second)
                return
            if self.seeds:
                log.info("no member heard: asking seeds where the members are: %s",
                         ", ".join(self.seeds))
            elif ms.peers and not self.heard_member:  # (no seed to ask: a whole cluster
                # started at new addresses stayed apart, each node ready and alone, and nothing
                # said what to do: an outside run. Not once one was heard: an outage then)
                log.warning("no member heard since this node started: they are down, cut off, "
                            "or at new addresses (then start this node again with --seed "
                            "naming one member's new address)")

    def _tell(self, msg: Gossip) -> None:
        """A member whose member table (a gossip round carries the whole table every few
        rounds) does not know this node gets this node's Join again, at most every
        TELL_INTERVAL: nobody subscribes to the gossip of a node it does not know, so a node
        that only forgotten nodes knew stays unknown for good. The simulator had it twice
        with a lost disk: a joiner whose seed lost its disk before its gossip got out, never
        a member (membership seeds 43, 53, --wipes 1), and a joining member whose record
        only the wiped claimant had, so its join never completed (replace seed 57). A Join
        to a member that knows it changes nothing (and its JoinOk is ignored here).

        A table that has this node at other endpoints counts as not knowing it: a member
        started again on its data dir at a new address (no --seed needed) is heard by nobody,
        since the others listen to its gossip at the old one, until a Join tells them where it
        is now. They take it once this node is down at the old address (membership.admit)."""
        if self.joining or self.left_at is not None or len(msg.members) < 2:
            return  # (a round with only the sender's own record says nothing of the table)
        me = self.membership.me
        if any(m.id == self.me and m.listen == me.listen and m.gossip == me.gossip
               for m in msg.members):
            return
        st = self.membership.cluster
        if st is not None and len(msg.members) < (len(st.members) + 1) // 2:
            return  # a delta of a few records, not the table
        if self.t - self.told.get(msg.sender, -1e9) >= TELL_INTERVAL:
            self.told[msg.sender] = self.t
            self.ask(msg.sender, Join(0, self.membership.me), None)

    def _on_join_ok(self, seed: str, msg: JoinOk) -> None:
        if not self.joining:
            if self.asking_seeds:  # (_seed_tick) where the members it knows are now, from a
                # seed the operator named: trusted, as when joining. Only those: a seed of
                # another cluster (a wrong --seed) must not bring its members into this one
                ms = self.membership
                self._merge_members([m for m in msg.members if ms.get(m.id) is not None])
            return
        st = None
        if msg.cluster:
            try:
                st = own.decode(msg.cluster)
            except ValueError as exc:
                log.warning("the seed's cluster state is unusable (%s): deriving it", exc)
        why = self._rack_conflict(st) if st is not None else None
        if why:  # (a lost disk, its node back under another --rack): nothing taken
            self.join_error = why  # the transport stops the node with it
            return
        self.membership.settings = {"q": msg.q, "n": msg.n, "r": msg.r, "w": msg.w}
        try:  # the default namespace follows the cluster's settings
            self.namespaces = self._registry(self.namespaces.to_builtins())
        except ZkvError as exc:
            log.error("the cluster's settings make no default namespace: %s", exc)
        self._ns_encoded = self.namespaces.encode()
        self._merge_namespaces(msg.namespaces, seed)
        self._merge_members(msg.members)  # the seed the operator named: trusted
        if st is None:  # a seed of a version without cluster states
            st = own.founding(self.me, self.cfg.rack, [(m.id, m.rack) for m in msg.members
                                                       if m.id != self.me])
        was_member = self.me in st.members
        self._adopt(st)
        self.joining = False
        log.info("joined the cluster through %s (%d members)", seed,
                 len(self.membership.table()))
        settings.warn_ignored(self)
        self.start(self.t)
        if (was_member and not len(self.store) and self.ae is not None
                and self.refill_since is None):
            self._begin_refill()

    def _rack_conflict(self, st: own.ClusterState) -> str | None:
        """Why this node may not run in `st` with its --rack, or None. The ring places replicas
        by the racks in the cluster state, fixed when a node joins: a --rack that differs would
        only be shown (status, member table), never used, while the operator believes the
        copies spread over the new racks."""
        placed = st.members[self.me][1] if self.me in st.members else None
        if placed is None or placed == self.cfg.rack:
            return None
        return (f"{self.me} is in rack {placed!r} in the cluster state (replicas are placed "
                f"by it), but was started with --rack {self.cfg.rack!r}. A member's rack "
                f"cannot change in place: start it with --rack {placed!r}, or put a new node "
                f"in {self.cfg.rack!r} in its place (zkv cluster replace {self.me} NEW)")

    def _begin_refill(self, why: str = "this node is a member but holds no data (a lost "
                      "disk?)") -> None:
        """Back as a member with nothing stored: the disk was lost (or never written). Exchange
        every partition with every other owner at once; meanwhile its reads do not count
        toward R: it holds nothing, or what it pulled from the owners it exchanged with so far,
        which may be older than a write only it and an owner not exchanged with yet held.
        (Without this, an R=1 read routed here answered "not found" for keys the other owners
        held, and an R=2 read pairing it with a replica that missed a W=2 write answered
        "none" or the value before it.)"""
        self.refill_since = self.t
        self.background.queue_repair(-1)
        log.warning("%s: refilling from the other owners; until then its reads do not count "
                    "toward R", why)

    def refilling(self, key: bytes) -> bool:
        """May a local read of `key` lack a write this node lost (see `_begin_refill`; or the
        store found its newest record corrupt and no write repaired it yet: `_lost`)?"""
        if self._lost(key):
            return True
        since = self.refill_since
        if since is None:
            return False
        n = self._n_of(key)
        ae = self.ae_for(n)
        if ae is None:
            return False
        ring = self.membership.ring(n)
        return self._unverified(ae, ring, ring.partition(key), since)

    def unsure(self, key: bytes) -> bool:
        """Should a client coordinating a read itself not count this node's copy of `key`: it
        refills after a lost disk, or gained the key's partition at an ownership change not
        verified yet (`fresh`)? (A get this node coordinates is a read quorum of the old and
        the new owners until the change settled instead: `_joint`.)"""
        if not self.fresh and self.refill_since is None:
            return False
        n = self._n_of(key)
        return self.unsure_partition(n, self.membership.ring(n).partition(key))

    def unsure_partition(self, n: int | None, p: int) -> bool:
        """`unsure` of every key of partition p of the namespaces whose N is `n` (None: the
        default namespace's); Keys asks it of a whole partition."""
        ring = self.membership.ring(n)
        if self.fresh and self._fresh_unsure(n or self.membership.settings["n"], p, ring):
            return True
        since = self.refill_since
        if since is None:
            return False
        ae = self.ae_for(n)
        return ae is not None and self._unverified(ae, ring, p, since)

    def _previous_rings(self, p: int, n: int) -> list[Ring]:
        """The current ring (N = `n`) of each state before a change since the cluster last
        settled here, where partition p's owners differ from the current ones."""
        now = self.membership.ring(n).preflist(p)
        found = []
        for i in range(len(self.unsettled)):
            ring = self._rings_before(i, n).current
            if ring.preflist(p) != now:
                found.append(ring)
        return found

    def _joint(self, p: int, n: int, r: int, down, targets) -> tuple[list, dict] | None:
        """A get of partition `p` (N = `n`) needing R = `r` while a change is not settled: for
        each previous ring where p's owners differ (`_previous_rings`), the nodes a get
        under it would ask (its owners, a stand-in for each one in `down`) and the answers
        it needs from them, min(r, their number) (GetQuorum.also); and those nodes -> the
        owner each stands in for (None: an owner), the ones not asked anyway being the
        get's substitutes. (A force-removed owner's writes since it died are hints at its
        stand-ins.) A node the get asks in another role (`targets`: an owner now, a stand-in
        then, or the reverse) is left out: its answer is not the one the previous ring reads.
        None if there is no such ring."""
        also: list[tuple[frozenset[str], int]] = []
        asked: dict[str, str | None] = {}
        roles = dict(targets)
        for ring in self._previous_rings(p, n):
            old = [(x, owner) for x, owner in ring.sloppy_preflist(p, down)
                   if roles.get(x, owner) == owner]
            if old:
                also.append((frozenset(x for x, _ in old), min(r, len(old))))
                for x, owner in old:
                    asked.setdefault(x, owner)
        return (also, asked) if also else None

    def _joint_write(self, p: int, n: int, w: int) -> list[tuple[frozenset[str], int]] | None:
        """A write of partition `p` (N = `n`) needing W = `w` while a change is not settled:
        for each previous ring where p's owners differ, its owners that are up here and the
        acknowledgements the write needs from them, min(w, their number) (JointWriteOp): a
        node that has not heard of the change yet reads by that ring. None if none."""
        also = []
        for ring in self._previous_rings(p, n):
            live = frozenset(x for x in ring.preflist(p)
                             if x == self.me or self.membership.is_up(x))
            if live:
                also.append((live, min(w, len(live))))
        return also or None

    def _mark_fresh(self, before: own.ClusterState) -> None:
        """The cluster state changed from `before`: note the partitions this node owns now and
        did not own under it, for every N in use (see `fresh`)."""
        q = self.membership.settings["q"]
        for n in self.groups():
            rings = self.membership.rings(n)
            assert rings is not None
            old = own.Rings(before, q, n).current
            for p in rings.current.replicas_of(self.me):
                if self.me not in old.preflist(p):
                    self.fresh[(n, p)] = None

    def _verify_fresh(self, now: float) -> None:
        """The cluster settled on the change: compare each fresh partition's root with its
        other owners' (one round trip per owner for all of them), and exchange in full, ahead
        of the routine rounds, those that differ; it counts toward R again once every other
        owner agreed or was exchanged with to the end."""
        pairs = []
        for (n, p), since in self.fresh.items():
            if since is None:
                self.fresh[(n, p)] = now
                ring = self.membership.ring(n)
                pairs += [(p, x, n) for x in ring.preflist(p) if x != self.me]
        if pairs and self.ae is not None:
            self.background.check_roots(pairs, now)

    def _fresh_unsure(self, n: int, p: int, ring: Ring) -> bool:
        """Is fresh partition p (of N `n`) still unverified? Forgets it once verified."""
        if (n, p) not in self.fresh:
            return False
        since = self.fresh[(n, p)]
        if since is None:
            return True  # not settled: a copy sent under the previous ring may be on its way
        ae = self.ae_for(n)
        if ae is not None and self.me in ring.preflist(p) and not ae.exchanged_since(
                p, [x for x in ring.preflist(p) if x != self.me
                    and self.membership.state(x)[0] != "down"], since):
            return True
        del self.fresh[(n, p)]  # verified (or no longer ours, or no trees to verify with)
        return False

    def fresh_left(self) -> int:
        """Fresh partitions (over every N in use) still unverified; forgets verified ones."""
        return sum(self._fresh_unsure(n, p, self.membership.ring(n)) for n, p in list(self.fresh))

    def refill_left(self) -> int:
        """Partitions (over every N in use) not yet verified since the refill began; ends the
        refill when none is left. 0 when not refilling."""
        since = self.refill_since
        if since is None:
            return 0
        left = 0
        for n, ae in self.ae_groups_all():
            ring = self.membership.ring(n)
            left += sum(1 for p in ring.replicas_of(self.me)
                        if self._unverified(ae, ring, p, since))
        if not left:
            self.refill_since = None
            log.info("refilled: every partition exchanged with every other owner")
            if getattr(self.store, "damaged_regions", 0) and hasattr(self.store,
                                                                      "compact_async"):
                # the damaged segments are rewritten without their damage: left as they
                # were, every start rescanned them, took a new dot id and refilled again
                # until compaction came by (an outside run)
                log.info("compacting the store: its damaged segments are rewritten, so the "
                         "next start neither rescans them nor refills")
                self.store.compact_async()
        return left

    def _unverified(self, ae: AntiEntropy, ring: Ring, p: int, since: float) -> bool:
        return ae.unsure(p, [x for x in ring.preflist(p) if x != self.me], since)

    # ---- requests -----------------------------------------------------------------------
    def _role(self, ident: bytes, msg) -> str:
        """Plain text (no keys): the role a request's identity gives it (`msg`: the request,
        None for any but a Join)."""
        peer = _peer_of(ident)
        if peer is not None:  # plain text: a current member's identity (or a joiner's)
            st = self.membership.cluster
            if (self.membership.get(peer) is not None or peer in self.membership.candidates
                    or (st is not None and peer in st.members)
                    or (type(msg) is Join and msg.member.id == peer)):
                # a joiner this node has heard of only second-hand (a candidate, or a member
                # of the cluster state) is a peer too: its first Fetches arrive before its
                # own gossip does
                return PEER
            return CLIENT
        return ADMIN

    def _refuse_self(self, ident: bytes, msgs: list) -> None:
        """One of our own links reached this node: its answers must never count as another
        replica's (an address that points back here, e.g. 0.0.0.0 advertised)."""
        if ident not in self.malformed_logged:
            self.malformed_logged.add(ident)
            log.error("refusing requests from this node itself: a peer address this node "
                      "connects to reaches itself (check --listen / advertised addresses)")
        for msg in msgs:
            self._reply(ident, Error(msg.rid, E_INVALID, f"{self.me} will not answer itself"))

    def _on_request(self, ident: bytes, msg, role: str, plain: bool) -> None:
        """One request of a frame from `ident`, whose role (`_role`) the caller established;
        `plain`: no keys, the role came from the identity."""
        t = type(msg)
        handler = self._handlers.get(t)
        if handler is None:
            self.malformed(ident, f"unexpected {t.__name__} on the request socket")
            return
        if t not in ROLE_MESSAGES.get(role, ()) and not (
                plain and t is Forward and _peer_of(ident) is not None):
            # (a Forward from a peer identity not heard of yet -- a node that just joined
            # and learned the ring before this node learned of it -- is served: it wraps a
            # Get/Put/Delete, which any client may send; refusing it failed the request)
            if self.joining and plain and t in PEER_ONLY and _peer_of(ident) is not None:
                # a member's request reaching this node before its join completed (restarted
                # on a lost disk, or mid-join): it does not know the members yet, which is no
                # fault of the frame; unavailable until joined (a coordinator stands in at once)
                self._reply(ident, Error(msg.rid, E_UNAVAILABLE,
                                         f"{self.me} has not joined the cluster yet"))
                return
            need = "cluster peers" if type(msg) in PEER_ONLY else "an admin key"
            if plain and _peer_of(ident) is not None:  # a peer's, not a member's here
                self.malformed(ident, f"{type(msg).__name__} of a node that is not a member "
                               "here (left, removed, restarted on another cluster, or not "
                               "heard of yet)")
            else:  # the key (with keys; else the identity) may not: not a malformed frame
                self.unauthorised(ident, f"{type(msg).__name__} refused from "
                                  f"{'an' if role[0] in 'aeiou' else 'a'} {role} connection "
                                  f"(accepted from {need} only)",
                                  "peer_only" if type(msg) in PEER_ONLY else "admin_only",
                                  None if plain else self.frame_user)
            what = ADMIN_WHAT.get(type(msg), type(msg).__name__)  # (the operator's words)
            self._reply(ident, Error(msg.rid, E_INVALID, f"{what} is accepted from {need} "
                                     "only" + (" (this key is a client key: `zkv keygen DIR "
                                               "--client NAME --admin` makes an admin one)"
                                               if role == CLIENT else "")))
            return
        if t in CLIENT_MESSAGES or t is Forward:
            n = self.inflight.get(ident, 0)
            if n >= MAX_INFLIGHT[role] or (not n and len(self.inflight) >= self.max_identities):
                self.metrics.busy.inc()
                self._reply(ident, Error(msg.rid, E_UNAVAILABLE, f"{BUSY}: {n} requests in "
                                         f"flight on this connection"))
                return
            if (t is Put or t is Forward or t is Get) and (n or ident in self.inflight_bytes) \
                    and self._bytes_refused(ident, msg, role):  # (answered ops' copies count)
                return
        if t in HEAVY:
            heavy = self.turn_heavy
            k = heavy.get(ident, 0)
            total = heavy.get(b"", 0)  # (b"": all identities; no connection has it)
            if k >= HEAVY_PER_TURN or total >= HEAVY_PER_TURN_TOTAL:
                self.metrics.busy.inc()
                self._reply(ident, Error(msg.rid, E_UNAVAILABLE, f"{BUSY}: {t.__name__} "
                                         "requests of this turn spent"))
                return
            heavy[ident] = k + 1
            heavy[b""] = total + 1
        if self.joining and t is not Status:
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, f"{self.me} {wire.STILL_JOINING}"))
            return
        try:
            handler(ident, msg)
        except (StorageFull, OSError) as exc:  # an engine refused (or failed) a write it made
            self.storage_refused(exc)
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, self._no_writes()))
        except ZkvError as exc:
            self._reply(ident, Error(msg.rid, E_INVALID, str(exc)))
        except Exception:  # a handler bug must not kill the node
            self.metrics.internal_errors.inc()
            log.exception("error handling %s from %r", type(msg).__name__, ident[:80])
            self._reply(ident, Error(msg.rid, E_INTERNAL, "internal error"))

    def _bytes_refused(self, ident: bytes, msg, role: str) -> bool:
        """A request that would take its connection's (or all clients') request bytes in
        flight past MAX_INFLIGHT_BYTES is answered "busy, retry" (True). A get's own bytes
        are few; the large values its op holds count (GetOp charges them): 40 connections of
        256 gets of a 16 MiB value each drove a node past 11 GB (an outside security run)."""
        size = wire.request_size(msg)
        held = self.inflight_bytes.get(ident, 0)
        what = "reads and writes" if type(msg) is Get else "writes"
        if held + size > MAX_INFLIGHT_BYTES[role]:
            why = f"{held >> 20} MiB of {what} in flight on this connection"
        elif role != PEER and self.client_bytes + size > MAX_INFLIGHT_BYTES_CLIENTS:
            why = f"{self.client_bytes >> 20} MiB of client {what} in flight on this node"
        else:
            return False
        self.metrics.busy.inc()
        self._reply(ident, Error(msg.rid, E_UNAVAILABLE, f"{BUSY}: {why}"))
        return True

    def _reply(self, ident: bytes, msg) -> None:
        sizer = _REPLY_SIZE.get(type(msg))
        size = sizer(msg) if sizer is not None else 0
        if size > 4096:  # reply-byte budget per identity and for the whole turn
            spent = self.turn_bytes.get(ident, 0)
            if spent and (spent + size > self.turn_budget or self.turn_total + size >
                          TURN_BYTES_TOTAL_FACTOR * self.turn_budget):
                self.metrics.busy.inc()
                if spent + size > self.turn_budget:  # this identity's budget is spent: its
                    spent = self.turn_budget          # next reads are refused unread (_on_rget)
                msg = Error(msg.rid, E_UNAVAILABLE, f"{BUSY}: reply budget of this turn spent")
                size = 64
            self.turn_bytes[ident] = spent + size
            self.turn_total += size
        box = self.out.clients.get(ident)
        if box is None:
            box = self.out.clients[ident] = []
        box.append(msg)

    def _owner(self, owner: str) -> str | None:
        """The absent owner a peer asks us to stand in for (none when it names us)."""
        return owner if owner and owner != self.me else None

    def _budget_spent(self, ident: bytes, rid: int) -> bool:
        """The turn's reply budget for `ident` is spent: say so before reading (a frame of
        400 reads of one 8 MiB value cost 400 reads, ~3 s of a turn, only to refuse 398)."""
        if self.turn_bytes.get(ident, 0) < self.turn_budget:
            return False
        self.metrics.busy.inc()
        self._reply(ident, Error(rid, E_UNAVAILABLE, f"{BUSY}: reply budget of this turn spent"))
        return True

    def _on_rget(self, ident: bytes, msg: RGet) -> None:
        if self._budget_spent(ident, msg.rid):
            return
        held = self.replica.read(msg.key, self._owner(msg.owner))  # (first: it finds a CRC
        self._reply(ident, RGetOk(msg.rid, held, not msg.owner and (  # failure, `_lost`)
            (not held and self._lost(msg.key))
            or (self.refill_since is not None and self.refilling(msg.key)))))

    def _lost(self, key: bytes) -> bool:
        """Did the store find `key`'s newest record corrupt (a CRC failure on a read, a
        record its open found damaged or lost: LogStore.is_corrupt) with no write repairing
        it since? It then reads as nothing, which is no "absent": such a copy is answered
        unsure, as a refilling node's, never counted toward R (10 of 10 damaged keys read
        found=False at R=1 with every node up: an outside audit). Read repair or an
        exchange writes the key, and it counts again."""
        is_corrupt = self._is_corrupt
        return is_corrupt is not None and is_corrupt(key)

    def _lost_in(self, ring: Ring, p: int) -> bool:
        """Does partition `p` hold a key `_lost` here? Its listing would leave the key out
        (`zkv dump --r 1` did, exit 0): another owner lists the partition instead."""
        if self._is_corrupt is None:
            return False
        corrupt_in = getattr(self.store, "corrupt_in", None)
        if corrupt_in is not None:  # (that partition's keys: LogStore's index by partition;
            return bool(corrupt_in(p, ring.q_bits))  # a scan of them all per
            # page took 0.16 s at 200,000 corrupt keys)
        return any(ring.partition(k) == p for k in self.store.corrupt_keys())

    def _on_read(self, ident: bytes, msg: Read) -> None:
        """A client coordinating a get itself asks for this node's copy (zkv.client.core,
        "Client-coordinated reads"). Answered only as one of the key's N owners in this
        node's ring whose copy counts toward R (not `unsure`: refilling, or fresh); otherwise
        `owner` is False, nothing is read, and the client asks a coordinator instead. Nothing
        is forwarded or fanned out, so a stranger's Read costs one local lookup."""
        if self._budget_spent(ident, msg.rid):
            return
        wire.check_key(msg.key, self.cfg.max_key_size)  # (ZkvError: answered by _on_request)
        ns, skey = self._resolve(msg)
        if msg.ns_ver and msg.ns_ver != self.namespaces.tags.get(ns.name):
            self._reply(ident, ReadOk(msg.rid, b"", False, False, ns_changed=True))
            return
        owner = self.me in self.membership.ring(ns.n).preflist_for_key(skey)
        unsure = owner and self.unsure(skey)
        value = self.replica.read(skey, None) if owner and not unsure else b""
        if not value and owner and not unsure and self._lost(skey):
            unsure = True  # (corrupt here: the client asks a coordinator, which asks others)
        self.metrics.owner_reads[owner and not unsure] += 1
        if owner and not unsure:
            self.metrics.observe_key(msg.key)  # the hot-keys sketch, as a coordinated get
            self._reply(ident, ReadOk(msg.rid, value, True, False,
                                      self._read_seal(skey, value, ns.head)))
        else:
            self._reply(ident, ReadOk(msg.rid, b"", False, unsure))

    def _read_seal(self, skey: bytes, value: bytes, lww: int) -> bytes:
        """ReadOk.seal: what sealing the context the client derives from `value` puts before
        it (b"": not sealed here, or `value` is no valid version and the client will not use
        it)."""
        if not self.seal.issue:
            return b""
        try:
            return self.seal.prefix(skey, answer_context(value, lww))
        except ValueError:
            return b""

    def _no_writes(self) -> str:
        return f"{self.me} {wire.NO_WRITES}: {self.write_stop}"[:wire.MAX_ERROR_TEXT]

    def _on_rput(self, ident: bytes, msg: RPut) -> None:
        if self.write_stop is not None:  # (the coordinator asks a stand-in in its place)
            self.metrics.writes_refused.inc()
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, self._no_writes()))
            return
        if msg.owner:
            why = self._hint_refusal(msg.owner)
            if why:
                self.malformed(ident, why)
                self._reply(ident, RPutOk(msg.rid, False))
                return
        try:
            wire.check_key(msg.key, self.cfg.max_key_size)
            owners = None if msg.owner else self._stray(msg.key)
            if owners:
                # not ours (any more, or the sender's ring is stale): pass it on to the owners
                # as hints instead of keeping a copy that the next drop pass would lose
                for o in owners:
                    self.replica.merge(msg.key, msg.dvv, o)
                if self._owned_before(msg.key):
                    self.replica.merge(msg.key, msg.dvv)
            else:
                owner = self._owner(msg.owner)
                self.replica.merge(msg.key, msg.dvv, owner)
                if owner is not None and self._receiving(msg.key):
                    # a stand-in that is also a pending owner of the key keeps its own copy
                    # too (the coordinator's uncounted copy to it may be lost: then its own
                    # copy, which reads ask after the flip, lacked a write it held as a hint)
                    self.replica.merge(msg.key, msg.dvv)
            if nss.is_lww(msg.key):
                self._observe(msg.dvv)  # a replica's HLC follows the lww stamps it stores
        except (StorageFull, OSError) as exc:
            self.storage_refused(exc)
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, self._no_writes()))
            return
        except (ValueError, ZkvError) as exc:
            self.malformed(ident, f"bad version for {msg.key[:32]!r}: {exc}")
            self._reply(ident, RPutOk(msg.rid, False))
            return
        self._reply(ident, RPutOk(msg.rid, True))

    def _requests(self, ident: bytes, msgs: list, role: str, plain: bool) -> None:
        """Each request of a frame in turn (`_on_request`), a Read's common case inline
        (`_owner_read`). Plain text: the role may change within the frame (a joiner's Join
        makes it a candidate)."""
        # the default namespace's ring for inline reads, looked up at a Read, again after any
        # other request (it may change the ring); `inline` False: not now (unsure, joining)
        ring: Ring | None = None
        inline, cap = True, 0
        for msg in msgs:
            t = type(msg)
            if t is Read:
                if ring is None and inline:
                    cap = MAX_INFLIGHT.get(role, 0)
                    inline = (bool(cap) and self.refill_since is None and not self.fresh
                              and not self.joining)
                    if inline:
                        ring = self.membership.ring(self.namespaces.get(nss.DEFAULT).n)
                if ring is not None and self._owner_read(ident, msg, ring, cap):
                    continue
            elif plain and role != PEER and t is Join:
                self._on_request(ident, msg, self._role(ident, msg), True)
                role = self._role(ident, None)
                ring, inline = None, True
                continue
            self._on_request(ident, msg, role, plain)
            ring, inline = None, True

    def _owner_read(self, ident: bytes, msg: Read, ring: Ring, cap: int) -> bool:
        """What `_on_request` and `_on_read` do with a client-coordinated read, in its common
        case: a default-namespace key, this node not unsure of any, the connection under its
        in-flight cap (`cap`) and its turn's reply budget. False (nothing done) otherwise."""
        key = msg.key
        if (msg.ns and msg.ns != nss.DEFAULT) or key.__class__ is not bytes \
                or not 0 < len(key) <= self.cfg.max_key_size or key[0] == 0:
            return False
        inflight, turn_bytes = self.inflight, self.turn_bytes
        n = inflight.get(ident, 0)
        if (n >= cap or (not n and len(inflight) >= self.max_identities)
                or (turn_bytes and turn_bytes.get(ident, 0) >= self.turn_budget)):
            return False  # refused: the usual way says why
        if self.me in ring.preflist_for_key(key):
            try:
                value = self.store.get(key) or b""
            except Exception:
                return False  # (nothing changed: the usual way answers it)
            if not value and self._lost(key):
                return False  # (corrupt here: the usual way answers it unsure)
            metrics = self.metrics
            metrics.owner_reads[True] += 1
            hot = metrics.hot  # the hot-keys sketch (metrics.observe_key); a key it counts
            counts = hot.counts  # already (most reads): TopK.add's first case inline
            if key in counts:
                counts[key] += 1
                hot.total += 1
            else:
                hot.add(key)
            reply = ReadOk(msg.rid, value, True)
            if self.seal.issue:  # (with keys only: no call without)
                reply.seal = self._read_seal(key, value, False)
            if len(value) > 4096:  # under the reply budget (_reply); else _reply's box inline
                self._reply(ident, reply)
                return True
        else:
            self.metrics.owner_reads[False] += 1
            reply = ReadOk(msg.rid, b"", False, False)
        box = self.out.clients.get(ident)
        if box is None:
            box = self.out.clients[ident] = []
        box.append(reply)
        return True

    def _replica_writes(self, ident: bytes, msgs: list, plain: bool) -> None:
        """A peer's frame of replica writes (a coordinator's fan-out, read repairs): what
        `_on_request` would do with each message, the common case of `_on_rput` inline. That
        case is a write of a default-namespace key this node replicates (not a stray, not a
        hint for another owner) with no reaped tombstone remembered for it: checked against
        the version held, merged into the store (the trees told), acknowledged. Any other
        message of the frame takes `_on_request`'s way in its place. (The dispatch, `_on_rput`
        and `Replica.merge` calls per message were ~20% of a replica write's Python:
        benchmarks/node_paths.py, 5.2-5.4 -> 4.1-4.3 us.)"""
        store, replica, ae, me = self.store, self.replica, self.ae, self.me
        if ae is None or self.write_stop is not None:  # (refused: _on_rput says why)
            self._requests(ident, msgs, PEER, plain)
            return
        max_key, reaped = self.cfg.max_key_size, ae.recently_reaped
        sync_plausible, on_change = dvv.sync_plausible, replica.on_change
        strip, note = replica.retired.strip, replica.retired.note
        box = self.out.clients.get(ident)
        if box is None:
            box = self.out.clients[ident] = []
        rings = None  # looked up again after any message taken the usual way (it may change them)
        for msg in msgs:
            if type(msg) is RPut and not msg.owner:
                if rings is None:
                    rings = self.membership.rings(None)
                    if rings is not None:
                        stray, partition = rings.stray, rings.current.partition
                key = msg.key
                if (rings is not None and key.__class__ is bytes and 0 < len(key) <= max_key
                        and key[0] != 0 and key not in reaped
                        and stray(partition(key), me) is None):
                    incoming = msg.dvv
                    old = store.get(key)
                    try:  # check_plausible, then sync_encoded (one decode of each)
                        new = sync_plausible(old, incoming)
                    except ValueError:
                        new = None  # nothing stored: the usual way says what was wrong
                    if new is not None:
                        if new != old:  # (Replica.merge's strip inline)
                            kept = strip(key, new)
                            if kept is not new:
                                replica.late_retired += 1
                                new = kept
                        if new != old:
                            try:  # (replica._store inline)
                                store.put(key, new)
                                replica.dirty = True
                                note(key, new)
                                for fn in on_change:
                                    fn(key, old, new)
                            except (StorageFull, OSError) as exc:  # as _on_rput answers
                                self.storage_refused(exc)
                                box.append(Error(msg.rid, E_UNAVAILABLE, self._no_writes()))
                                continue
                            except (ValueError, ZkvError) as exc:  # as _on_rput answers
                                self.malformed(ident, f"bad version for {key[:32]!r}: {exc}")
                                box.append(RPutOk(msg.rid, False))
                                continue
                            except Exception:  # as _on_request answers
                                self.metrics.internal_errors.inc()
                                log.exception("error handling RPut from %r", ident[:80])
                                box.append(Error(msg.rid, E_INTERNAL, "internal error"))
                                continue
                        box.append(RPutOk(msg.rid, True))
                        continue
            self._on_request(ident, msg, PEER, plain)
            rings = None

    def _on_forward(self, ident: bytes, msg: Forward) -> None:
        self._on_client(ident, msg.inner, msg.rid, forwarded=True, stamp=msg.stamp, gen=msg.gen)

    def _on_ring_info(self, ident: bytes, msg: RingInfo) -> None:
        s = self.membership.settings
        ring = self.membership.ring()
        self._reply(ident, RingOk(msg.rid, s["q"], s["n"], s["r"], s["w"],
                                  self.membership.table(), sorted(self.membership.down()),
                                  list(ring.members), ring.tokens,
                                  zlib.crc32(self._ns_encoded)))

    def _on_status(self, ident: bytes, msg: Status) -> None:
        self._reply(ident, StatusOk(msg.rid, self.status()))

    def _on_tree_level(self, ident: bytes, msg: TreeLevel) -> None:
        self._reply(ident, aen.answer_tree_level(self.ae_for(msg.n),
                                                 self.membership.ring(msg.n or None), msg))

    def _on_leaf_keys(self, ident: bytes, msg: LeafKeys) -> None:
        self._reply(ident, aen.answer_leaf_keys(self.ae_for(msg.n), self.store,
                                                self.membership.ring(msg.n or None), msg,
                                                self.in_group(msg.n)))

    def _on_versions(self, ident: bytes, msg: RGetHashes) -> None:
        ok = aen.answer_versions(self.ae_for(msg.n), self.store,
                                 self.membership.ring(msg.n or None), msg, self.in_group(msg.n),
                                 self.replica.read)
        room = self.turn_budget - self.turn_bytes.get(ident, 0)
        total = 0
        for i, v in enumerate(ok.dvvs):  # a partial answer: the puller fetches the rest later
            total += len(v) + len(ok.keys[i])
            if total > room and i:
                del ok.keys[i:], ok.dvvs[i:]
                break
        self._reply(ident, ok)

    def _on_reap(self, ident: bytes, msg: Reap) -> None:
        # only an owner of a key's partition may announce that every owner agreed on it
        peer = _peer_of(ident)
        ms = self.membership
        if len(msg.keys) != len(msg.digests):  # (a traceback, and no owner check, before)
            self.malformed(ident, f"Reap of {len(msg.keys)} key(s) with {len(msg.digests)} "
                           "digest(s)")
            return
        keep = [i for i, k in enumerate(msg.keys)
                if type(k) is bytes and k and peer in ms.ring(self._n_of(k)).preflist_for_key(k)]
        if len(keep) != len(msg.keys):  # (a ring change one of the two has not seen:
            # not a malformed frame, and not counted as one)
            if ("reap", peer) not in self.malformed_logged:
                self.malformed_logged.add(("reap", peer))
                log.info("ignored a Reap of %d key(s) from %s, which does not own their "
                         "partition in this node's ring (a ring change one of the two has "
                         "not seen yet; logged once per peer)", len(msg.keys) - len(keep),
                         wire.clip(peer, 64))
            msg.keys = [msg.keys[i] for i in keep]
            msg.digests = [msg.digests[i] for i in keep]
        for n, ae in self.ae_groups_all():  # each tombstone's own N-group notes its reap
            accept = self.in_group(n)
            idx = [i for i, k in enumerate(msg.keys) if accept(k)]
            if idx:
                aen.apply_reap(ae, self.replica, Reap(msg.rid, [msg.keys[i] for i in idx],
                                                      [msg.digests[i] for i in idx]))
        self._reply(ident, RPutOk(msg.rid, True))

    def _on_repair(self, ident: bytes, msg: Repair) -> None:
        self._reply(ident, RepairOk(msg.rid, self.background.queue_repair(msg.partition)))

    def _on_keys(self, ident: bytes, msg: Keys) -> None:
        """A page of a partition's live keys of a namespace (listing.py), if this node is an
        owner of the partition whose copy counts (not `unsure` of it); else owner False, and
        the client asks another owner."""
        if self._budget_spent(ident, msg.rid):  # (pages with values: large, as reads)
            return
        ns = self.namespaces.get(msg.ns or nss.DEFAULT)  # (InvalidRequest: says why)
        if msg.ns_ver and msg.ns_ver != self.namespaces.tags.get(ns.name):
            self._reply(ident, KeysOk(msg.rid, [], msg.cursor, False, False, ns_changed=True))
            return
        default = ns.name == nss.DEFAULT
        n = None if default else ns.n
        ring = self.membership.ring(n)
        if msg.partition >= ring.q:
            raise InvalidRequest(f"partition {msg.partition}: the ring has {ring.q}")
        if self.me not in ring.preflist(msg.partition) or self.unsure_partition(
                n, msg.partition) or self._lost_in(ring, msg.partition):
            self._reply(ident, KeysOk(msg.rid, [], msg.cursor, False, False))
            return
        hidden = None
        if ns.write_ttl:  # (keys whose write outlived its own ttl: left out)
            now_ms = self.handoff.wall_ms()

            def hidden(v: bytes) -> bool:
                return expiry.hidden(v, now_ms)
        self._reply(ident, answer_keys(self.store, ring, msg, nss.prefix(ns), default,
                                       self.expired if ns.expires else None, hidden))

    def expired(self, skey: bytes, encoded: bytes) -> bool:
        """Has this version of a stored key expired (its namespace's ttl, expiry.py), or is
        the key dead (its namespace dropped or truncated: namespaces.py)?"""
        if self.namespaces.dead_gens and self.namespaces.is_dead(skey):
            return True
        rule = self.namespaces.expiry_of(skey)
        return rule is not None and expiry.expired(encoded, rule[0], self.handoff.wall_ms(),
                                                   rule[1])

    def _on_config(self, ident: bytes, msg: Config) -> None:
        """An admin reads this node's settings, or changes runtime ones (settings.py)."""
        self._reply(ident, ConfigOk(msg.rid, settings.change(self, msg.changes, msg.save)))

    def _on_snapshot(self, ident: bytes, msg: Snapshot) -> None:
        """Take (both stores hard-linked under DATA_DIR/snapshots/NAME), list or remove this
        node's snapshots (snapshots.py). One that fails says why, to the client and in this
        node's log (WARNING), and leaves nothing; it never stops this node's writes (an
        OSError here is the snapshot's, not the store's)."""
        data_dir = self.cfg.data_dir
        try:
            if msg.action == "list":
                info: dict = {"snapshots": snapshots.listing(data_dir)}
            elif msg.action == "remove":
                info = snapshots.remove(data_dir, msg.name, self.me)
                log.info("snapshot %r removed (%d bytes freed)", msg.name, info["freed"])
            else:
                info = snapshots.take(data_dir, msg.name, self.me,
                                      {"data": self.store, "handoff": self.handoff.store},
                                      self.handoff.wall_ms(), self.namespaces.to_builtins())
                log.info("snapshot %r taken: %s (%d bytes)", msg.name, info["path"],
                         info["bytes"])
        except (StorageFull, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            said = f"snapshot {msg.action} {msg.name!r} on {self.me} failed: {why}"
            log.warning("%s", said)  # (here too, not only to the client: as taken ones are)
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, said))
            return
        self._reply(ident, SnapshotOk(msg.rid, info))

    def _version_unfit(self, features: int) -> str:
        """Why a member whose version serves `features` (its FEATURE_* bits) cannot serve
        this cluster as it is ("" if it can): a join of it is refused, and a member that
        gossips it (restarted on an older version: a downgrade) is logged as an ERROR."""
        why = []
        if not features & wire.FEATURE_WRITE_TTL:
            # (it would store and route their keys as another namespace's: mode 2 unknown)
            names = [ns.name for ns in self.namespaces if ns.write_ttl]
            if names:
                why.append(f"its zkv version cannot store per-write ttls, which namespace(s) "
                           f"{', '.join(names[:8])} keep")
        if not features & wire.FEATURE_TTL:  # (it would serve, and keep, expired values)
            names = [ns.name for ns in self.namespaces if ns.expires]
            if names:
                why.append(f"its zkv version does not expire values, which namespace(s) "
                           f"{', '.join(names[:8])} expire")
        if not features & wire.FEATURE_DROP:
            # (it would keep, serve and spread the keys of namespaces dropped or truncated)
            names = sorted(k.decode("ascii") for k in self.namespaces.dead_gens)
            if names:
                why.append(f"its zkv version cannot drop namespaces, and namespace(s) "
                           f"{', '.join(names[:8])} were dropped or truncated")
        if not features & wire.FEATURE_PRIMARY:
            # (it would coordinate their requests without the primary quorums they ask for)
            names = [ns.name for ns in self.namespaces if ns.pr or ns.pw]
            if names:
                why.append(f"its zkv version has no primary quorums, which namespace(s) "
                           f"{', '.join(names[:8])} ask for")
        return "; ".join(why) + ": upgrade it first" if why else ""

    def _check_version(self, member: Member) -> None:
        """A member's own gossip: an ERROR once (per incarnation and reason) when its version
        cannot serve this cluster (`_version_unfit`), as a node restarted on an older version
        over its data dir (a downgrade) is. Joins check this; a member's restart does not
        join, and its peers cannot stop it, so the operator is told (`zkv status` too)."""
        # (no features: a version before 2026-12-02, whose nodes cannot read the versions
        # and contexts this one writes, and drop its frames)
        why = self._version_unfit(member.features) if member.features else (
            "its zkv version is older than any a rolling upgrade to this one supports (it "
            "announces no features)")
        said = self.unfit.get(member.id)
        if not why:
            if said is not None:
                del self.unfit[member.id]
                log.info("member %s now runs a version that serves this cluster", member.id)
            return
        if said is None or said[0] != member.incarnation or said[1] != why:
            self.unfit[member.id] = (member.incarnation, why)
            log.error("member %s runs a zkv version that cannot serve this cluster: %s "
                      "(downgrades are not supported: README, Upgrading)", member.id, why)

    def _on_join(self, ident: bytes, msg: Join) -> None:
        # a node joins as itself: the member record must be the requester's own
        if _peer_of(ident) != msg.member.id:
            raise ZkvError(f"a Join must come from the joining node itself (identity "
                           f"{wire.clip(ident, 40)}, member {wire.clip(msg.member.id, 40)})")
        why = self.membership.admit(msg.member) or self._version_unfit(msg.member.features)
        if why:
            log.warning("refused a join of %s: %s", wire.clip(msg.member.id, 64), why)
            raise ZkvError(f"join refused: {why}")
        self._merge_members([msg.member], via=msg.member.id)
        s = self.membership.settings
        self._reply(ident, JoinOk(msg.rid, s["q"], s["n"], s["r"], s["w"],
                                  self.membership.table(), self.cluster_bytes,
                                  self._ns_encoded))

    def _merge_members(self, members: list[Member], via: str | None = None) -> None:
        known = {}  # id -> (listen, gossip, rack) of each member already in the table
        for m in members:
            had = self.membership.get(m.id)
            if had is not None:
                known[m.id] = (had.listen, had.gossip, had.rack)
        added = self.membership.merge(members, via=via)
        if added:
            self.gossip_delta.update(m.id for m in added)
            for m in added:
                self.out.connect.append(m)
                # (merge also returns a known member whose leaving flag changed, as `zkv
                # cluster leave` and a restart on its data dir make it: "in the cluster" was
                # logged again each time; an operator read a second join)
                was = known.get(m.id)
                if was is None:
                    log.info("member %s is in the cluster (%s, rack %s)", m.id, m.listen,
                             m.rack)
                elif was != (m.listen, m.gossip, m.rack):
                    log.info("member %s moved: now at %s (gossip %s, rack %s)", m.id, m.listen,
                             m.gossip, m.rack)
            self._save_cluster()

    def join_seeds(self) -> list[str] | None:
        """The seeds cluster.json keeps while this node's join has not completed (a start
        without --seed joins through them again), else None."""
        return list(self.seeds) if self.joining and self.membership.cluster is None else None

    def cluster_doc(self) -> dict:
        """What cluster.json holds for this node now (membership.cluster_doc), and whether its
        store held keys (`held_data`)."""
        if not self.held_data and len(self.store):
            self.held_data = True
        doc = cluster_doc(self.membership, self.namespaces.to_builtins(), list(self.dots_base),
                          self.join_seeds(), [own.encode(x).hex() for x in self.unsettled],
                          sorted([n, p] for n, p in self.fresh),
                          [[x.action, x.node, x.other, x.epoch, x.committed]
                           for x in self.intents])
        if self.held_data:
            doc["held_data"] = True
        return doc

    def _save_cluster(self, must: bool = False) -> None:
        """cluster.json, again. A failed write (a full disk) is logged and retried each gossip
        round (`_check_space`) while the state lives on in memory. A `must` write (at start,
        before this node issues a dot under a new id) that fails leaves the node taking no
        writes (`dots_unsaved`), retried each round likewise: it refused to start on a full
        disk, and a node refusing writes still serves reads (an outside run). It used to
        raise out of whatever handled the change (a gossip round's adoption of a cluster
        state, a namespace) and leave that half done.

        `must` writes are synced (file and directory) before a dot is issued: a power loss
        after a clean stop (the store says "closed cleanly") that brought back the file from
        before would continue the dots of a base whose last dots were lost with an earlier
        unsynced tail, and reissue them (`_dots_base`). The others are atomic but not synced,
        off the request path's fsyncs: one lost to a power loss is the state before it, which
        gossip brings up to date (the unsettled window's states aside: restored or not, as
        before they were saved)."""
        if not self.cluster_path:
            return
        try:
            save_cluster(self.cluster_path, self.cluster_doc(), durable=must)
        except OSError as exc:
            if must:
                if not self.dots_unsaved:
                    log.error("could not save %s (%s) with this start's new write-id base: "
                              "taking no writes until it can", self.cluster_path, exc)
                self.dots_unsaved = (f"could not save {self.cluster_path} ({exc.strerror or exc})"
                                     " with this start's new write-id base")
                return
            if not self.cluster_unsaved:
                log.error("could not save %s: %s. The cluster state lives on in memory and is "
                          "saved once the disk takes it (a restart before that starts from "
                          "the last saved one)", self.cluster_path, exc)
            self.cluster_unsaved = True
            return
        self._saved_unsettled = (len(self.unsettled), len(self.fresh))
        if must and self.dots_unsaved:
            self.dots_unsaved = None
            log.warning("saved %s with this start's write-id base", self.cluster_path)
        if self.cluster_unsaved:
            self.cluster_unsaved = False
            log.warning("saved %s again", self.cluster_path)

    # ---- namespaces (issue 15) --------------------------------------------------------------
    def _registry(self, saved: object) -> Registry:
        """The cluster settings' default namespace plus the saved ones (a bad saved list is
        logged and ignored: gossip brings the namespaces back)."""
        s = self.membership.settings
        reg = Registry.for_cluster(s["n"], s["r"], s["w"])
        if saved:
            try:
                reg.merge([ns for ns in Registry.from_builtins(saved).versions()
                           if ns.name != nss.DEFAULT])
            except ValueError as exc:
                log.warning("ignoring the saved namespaces: %s", wire.clip(str(exc), 300))
        return reg

    def _merge_namespaces(self, data: bytes, source: str) -> None:
        """Fold in a registry a peer sent (gossip, JoinOk); save it when something changed."""
        if not data or data == self._ns_encoded:
            return
        try:
            other = Registry.decode(data)
        except ValueError as exc:
            self.malformed(source, f"bad namespace registry: {exc}")
            return
        # the default namespace is each node's own (from the cluster settings); an alter
        # stamped beyond our clock's skew bound would outrank every later one for good
        limit = self.hlc.limit()
        if any(max(ns.changed, ns.dropped) > limit for ns in other.versions()):
            self.malformed(source, "a namespace altered or dropped in the future (beyond the "
                                   "clock skew allowed)")
            return
        dead = self.namespaces.dead_gens
        for c in self.namespaces.merge([ns for ns in other.versions() if ns.name != nss.DEFAULT]):
            log.warning("concurrent creation resolved: %s", c)
        enc = self.namespaces.encode()
        if enc != self._ns_encoded:
            self._ns_encoded = enc
            log.info("namespaces now: %s", ", ".join(self.namespaces.names()))
            self._save_cluster()
            self._replan()  # a new N in use: its keys' transfers
            self._dead_changed(dead)

    def _lacking(self, bit: int) -> list[str]:
        """The members that serve (in the ring, or up) with a version without FEATURE `bit`."""
        ms = self.membership
        serving = set(ms.ring().members) | {p for p in ms.peers if ms.is_up(p)}
        return sorted(m.id for m in ms.table() if m.id in serving and not m.features & bit)

    def _require_feature(self, bit: int, what: str, lacking: str) -> None:
        """InvalidRequest "`what`: node(s) ... run a zkv version `lacking`" if a member that
        serves (in the ring, or up) runs a version without FEATURE `bit`."""
        old = self._lacking(bit)
        if old:
            # (a member this node has not heard from since it started, and whose version its
            # cluster.json does not know: one saved by an older version)
            unknown = {m.id for m in self.membership.table()
                       if m.id in old and not m.incarnation and not m.features}
            known = [x for x in old if x not in unknown]
            why = []
            if known:
                why.append(f"node(s) {', '.join(known[:8])} run a zkv version {lacking} "
                           f"(upgrade every node first)")
            if unknown:
                why.append(f"the version of node(s) {', '.join(sorted(unknown)[:8])} is not "
                           f"known here: not heard from since {self.me} started (try once "
                           f"they are up)")
            raise InvalidRequest(f"{what}: " + "; ".join(why))

    def _on_ns_create(self, ident: bytes, msg: NsCreate) -> None:
        members = len(self.membership.ring().members)
        if msg.ttl:  # a node that does not expire would serve (and keep) expired values
            self._require_feature(wire.FEATURE_TTL, f"cannot create namespace {msg.name!r} "
                                  f"with a ttl", "without expiry")
        # (its values have room for a write's own ttl once every member can store them so)
        if msg.pr or msg.pw:  # (a node without them would answer from stand-ins)
            self._require_feature(wire.FEATURE_PRIMARY, f"cannot create namespace "
                                  f"{msg.name!r} with pr/pw", "without primary quorums")
        ns = self.namespaces.create(msg.name, msg.n or None, msg.r or None, msg.w or None,
                                    msg.conflicts, members=members, created=self.hlc.now(),
                                    creator=self.me, ttl=msg.ttl,
                                    write_ttl=not self._lacking(wire.FEATURE_WRITE_TTL),
                                    pr=msg.pr, pw=msg.pw)
        self._namespace_done(ident, msg.rid, ns, "created")

    def _on_ns_alter(self, ident: bytes, msg: NsAlter) -> None:
        # (an older node would keep the version it has: the registries would not converge)
        self._require_feature(wire.FEATURE_NS_ALTER, f"cannot alter namespace {msg.name!r}",
                              "without namespace alter")
        if msg.pr > 0 or msg.pw > 0:
            self._require_feature(wire.FEATURE_PRIMARY, f"cannot alter namespace "
                                  f"{msg.name!r} to pr/pw", "without primary quorums")
        current = self.namespaces.find(msg.name)
        if current is not None and current.changed:  # (an alter made where the clock runs
            self.hlc.observe(current.changed)         # ahead: this one must still follow it)
        ns = self.namespaces.alter(msg.name, None if msg.r < 0 else msg.r,
                                   None if msg.w < 0 else msg.w,
                                   None if msg.ttl < 0 else msg.ttl, changed=self.hlc.now(),
                                   now_ms=self.handoff.wall_ms(),
                                   pr=None if msg.pr < 0 else msg.pr,
                                   pw=None if msg.pw < 0 else msg.pw)
        self._namespace_done(ident, msg.rid, ns, "altered")

    def _on_ns_drop(self, ident: bytes, msg: NsDrop) -> None:
        """Drop a namespace, or truncate it (namespaces.py): every member must purge its dead
        keys, so every member must serve FEATURE_DROP."""
        what = "truncate" if msg.truncate else "drop"
        self._require_feature(wire.FEATURE_DROP, f"cannot {what} namespace {msg.name!r}",
                              "without namespace drop")
        dead = self.namespaces.dead_gens
        current = self.namespaces.version_of(msg.name)
        if current is not None and 0 <= msg.gen < current.gen + (current.dropped > 0):
            self._namespace_done(ident, msg.rid, current, what)  # (ended already: a retry)
            return
        if current is not None and msg.gen > current.gen:  # (not now: another node may know)
            self._reply(ident, Error(msg.rid, E_UNAVAILABLE, f"cannot {what} namespace "
                                     f"{msg.name!r}: {self.me} has not heard of its "
                                     f"generation {msg.gen} yet (try again)"))
            return
        if current is not None:  # (stamped after what a clock running ahead stamped there)
            self.hlc.observe(max(current.created, current.changed, current.dropped))
        if msg.truncate:
            ns = self.namespaces.truncate(msg.name, created=self.hlc.now(), creator=self.me,
                                          write_ttl=not self._lacking(wire.FEATURE_WRITE_TTL))
        else:
            ns = self.namespaces.drop(msg.name, dropped=self.hlc.now())
        self._namespace_done(ident, msg.rid, ns, "truncated" if msg.truncate else "dropped")
        self._dead_changed(dead)

    def _dead_changed(self, before: dict[bytes, int]) -> None:
        """Did a generation end (a drop or truncate made here or learned)? Then the sweep
        purges this node's store of its keys (Background.purge_again). A create after a
        drop ends nothing more."""
        after = self.namespaces.dead_gens
        ended = sorted(k.decode("ascii") for k, v in after.items() if v > before.get(k, 0))
        if not ended:
            return
        log.info("namespace(s) %s dropped or truncated: their dead keys are purged from this "
                 "node's stores in the background", ", ".join(ended))
        self.background.purge_again()

    def namespaces_dead(self, skey: bytes) -> bool:
        """Is this stored key of a dropped namespace or an ended generation (namespaces.py)?"""
        return self.namespaces.is_dead(skey)

    def _namespace_done(self, ident: bytes, rid: int, ns: Namespace, how: str) -> None:
        """A namespace was created, altered, dropped or truncated here (or found as asked):
        save and gossip the registry at once if it changed, and answer once every member
        that is up shows this version (or a later one) in its gossip, so the caller's next
        request finds it wherever it lands (bounded: members that stay silent learn later)."""
        enc = self.namespaces.encode()
        if enc != self._ns_encoded:
            self._ns_encoded = enc
            log.info("%s namespace %s: %s", how, ns.name, ns.describe())
            self._save_cluster()
            self._replan()
            self.next_gossip = self.t  # tell the cluster at once
        # (members of the cluster only: a node that just left and exited still looks up for
        # a few seconds, and the answer waited out the bound for it; `zkv namespace truncate`
        # right after `zkv local remove` timed out in the CLI)
        ms, st = self.membership, self.membership.cluster
        waiting = {m for m in ms.peers if ms.is_up(m) and (st is None or m in st.members)}
        until = self.t + self.cfg.replica_timeout + 5 * self.cfg.gossip_interval
        self.ns_waits.append([ident, rid, ns.name, _ns_mark(ns), waiting, until])
        self._ns_waits_check(self.t)

    def _ns_waits_check(self, now: float, sender: str | None = None,
                        registry: bytes = b"") -> None:
        # the sender's namespaces -> how far each got (_ns_mark)
        have: dict[str, tuple[int, bool, int]] | None = None
        if sender is not None:
            if registry == self._ns_encoded:
                have = {ns.name: _ns_mark(ns) for ns in self.namespaces.versions()}
            else:
                try:
                    have = ({ns.name: _ns_mark(ns) for ns in Registry.decode(registry).versions()}
                            if registry else {})
                except ValueError:
                    have = {}
        keep = []
        for wait in self.ns_waits:
            ident, rid, name, mark, waiting, until = wait
            if have is not None and have.get(name, (-1, False, -1)) >= mark:
                waiting.discard(sender)
            if waiting and now < until:
                keep.append(wait)
            else:
                self._reply(ident, NsOk(rid, self._ns_encoded, name))
        self.ns_waits = keep

    def _on_ns_list(self, ident: bytes, msg: NsList) -> None:
        self._reply(ident, NsOk(msg.rid, self._ns_encoded))

    def _storage_key(self, ns: Namespace, key: bytes) -> bytes:
        if ns.name == nss.DEFAULT:
            if key[:1] == b"\x00":
                raise InvalidRequest("keys of the default namespace may not begin with byte "
                                     "0x00 (reserved for namespaced keys)")
            return key
        skey = nss.storage_key(ns, key)
        if len(skey) > self.cfg.max_key_size:
            raise InvalidRequest(f"key of {len(key)} bytes is too long for namespace "
                                 f"{ns.name!r} (at most {self.cfg.max_key_size - len(skey) + len(key)})")
        return skey

    def _resolve(self, msg) -> tuple[Namespace, bytes]:
        ns = self.namespaces.get(msg.ns or nss.DEFAULT)
        return ns, self._storage_key(ns, msg.key)

    def _resumed(self, now: float) -> None:
        """The first call, at `now`, after a stall (STALL_GAP): this process stood still, and
        the frames it takes in the next STALL_AFTER seconds may have waited in its sockets
        since its last call. Its failure detector does not blame its peers for the heartbeats
        it missed (`Membership.stood_still`: a node resumed after a SIGSTOP found every peer
        down and failed the writes that waited in its socket, W=2 of N=3 with none to stand
        in). An lww write among them is stamped as of when the node stopped (`_stamp`), not now:
        sent then, it must not be ordered after what was written elsewhere meanwhile, such
        as its client's retry through another node and that client's later writes (stamped
        on arrival, the queued copy overwrote them). The node's own clock never goes back:
        the stamp is after every one it issued or saw before it stopped."""
        since = now - self.t  # (self.t: the last call before it)
        self.stall_stamp = max((self.handoff.wall_ms() - int(since * 1000))
                               << hlcs.LOGICAL_BITS, self.hlc.last + 1)
        self.stall_until = now + STALL_AFTER
        self.stall_end = now
        self.stall_backlog, self.stall_took = True, False
        self.resumed_stamp = self.handoff.wall_ms() << hlcs.LOGICAL_BITS
        self.stall_issued = set()
        deaf = now - max(self.t, self.quiet_until)  # (until then it slept: it would have heard)
        self.membership.stood_still(deaf)  # (its peers were not silent: it did not listen)
        self.stalls = (self.stalls[0] + 1, max(self.stalls[1], deaf))  # (zkv status)
        self.metrics.stood_still.inc()
        self.metrics.turns.stood_still(now - deaf, now)  # (no slow turn for it as well)
        # (blocked between turns looks the same from here: an outside run's node, its log
        # written to a pipe nobody read, was named "stopped" -- the log's causes name it)
        log.info("this node stood still for %.1f s (stopped, starved of CPU, or blocked: "
                 "writing its log to a pipe or disk that did not take it): its peers' "
                 "missed heartbeats are not held against them, and the lww writes that "
                 "waited meanwhile are stamped as of when it stopped", deaf)

    def _refuse_stale(self, ident: bytes, rid: int) -> None:
        """A write taken in the first turn that takes requests after a stall (`_resumed`;
        at most STALL_AFTER after it) may have waited in this node's socket all along: its
        client may have retried it through another node since (the same write id), and
        written over that with a later put whose context covered it. Coordinated now, it
        would take a new dot that no context covers, and the value its client overwrote came
        back as a sibling (an outside run: a writer's chain of puts, one node SIGSTOPped 8 s).
        It is answered "busy, retry": a client still waiting for it asks another node or
        this one again, with its write id; one that gave up never hears of it. Only that
        first turn's: a node starved of CPU stands still again and again, and refusing every
        write for STALL_AFTER after each stall refused them all (a review). (An lww write is
        stamped as of the stop instead: `_stamp`.)"""
        self.metrics.busy.inc()
        self._reply(ident, Error(rid, E_UNAVAILABLE, f"{BUSY}: this node has just resumed from "
                                 "standing still (stopped, or starved of CPU), and this write "
                                 "may have waited for it all along"))

    def _unstampable(self) -> str | None:
        """Why this node must not stamp lww writes now (None: it may; a reason is counted in
        zkv_lww_writes_refused_total, as the write it refuses). A node whose wall
        clock runs ahead of its peers' (health.clock_skew), or whose hybrid clock runs ahead
        of its own wall clock by more than an observed stamp can put it (its clock ran ahead
        and was set back: hybrid clocks never go back), stamps writes that win over the
        writes other nodes stamp after them: an outside run's node stepped an hour ahead and
        back stamped a client's write so, and that client's four later blind writes, each
        acknowledged through another owner, were never served (nor a rewrite, the README's
        advice, from a fresh client after the clock was fixed); a write that waited in its
        socket while it was paused overwrote another client's later one. Refused, a write is
        retried on another node by the clients."""
        skew = self.metrics.clock_skew
        lead = self.hlc.lead_ms()
        if skew is not None and skew.endswith(health.AHEAD):
            why = (f"{self.me}'s wall clock is {skew}: it stamps no lww write (its stamps "
                   "would win over later writes); ask another node, and check NTP there")
        # an observed stamp clamped to the bound leaves the clock at bound + 1 ms (the
        # clamp's logical 0xFFFF carries on +1), and logical carries add more: only a
        # lead well past the bound is this clock's own
        elif lead > self.hlc.max_skew_ms + LEAD_SLACK_MS:
            why = (f"{self.me}'s hybrid clock runs {snapshots.span(lead / 1000)} ahead of its "
                   "wall clock (the clock was set back): it stamps no lww write until its wall "
                   "clock catches up, or it restarts; ask another node")
        else:
            return None
        self.metrics.lww_refused.inc()
        return why

    def _stamp(self, skey: bytes, floor: int) -> int:
        """An lww write's HLC stamp: after the client's floor (every value it has seen;
        clamped if far ahead) and every stamp this node holds for the key. In the moments
        after a stall (`_resumed`), a write that may have waited: as of when the node stopped,
        after the floor, and regardless of what it learned since (the copies that reached it
        meanwhile may be the newer writes this one must not overtake). A write whose floor is
        one of the stamps this node issued since it resumed, or later than that moment, was
        sent after it resumed: stamped as any. (Its client's earlier write, stamped so here
        and acknowledged, may have a later stamp elsewhere, given where a retry of it entered
        the cluster during the stall: stamped as of the stop too, the client's next write lost
        to it, tests/sim/test_sim_ttl.py seeds 1139, 1208 of tools/sweep_ttl.py.)"""
        if floor:
            self.hlc.observe(floor)
        if (self.stall_until > self.t and floor < self.resumed_stamp
                and floor not in self.stall_issued):
            stamp = max(self.stall_stamp, min(floor, self.hlc.limit()) + 1)
            self.stall_stamp = stamp + 1  # (each such write its own stamp)
            self.stall_issued.add(stamp)
            self.hlc.observe(stamp)  # (so every stamp issued later is greater)
            return stamp
        if self.stall_issued and self.stall_until <= self.t:
            self.stall_issued.clear()  # (the moments after the stall are over)
        self._observe(self.replica.read(skey))
        return self.hlc.now()

    def _observe(self, encoded: bytes | None) -> None:
        """Advance the HLC past the stamps of an lww version (held, or arriving from a peer),
        so a write this node coordinates later is ordered after them."""
        if encoded:
            try:
                for v in dvv.DVVSet.decode(encoded).live_values():
                    if len(v) >= 8:
                        self.hlc.observe(hlcs.unpack(v[:8]))  # clamped if far ahead
            except ValueError:
                pass

    # ---- coordinating client requests -------------------------------------------------------
    def _on_client(self, ident: bytes, msg, rid: int | None = None,
                   forwarded: bool = False, stamp: int = 0, gen: int = -1) -> None:
        """A client's Get/Put/Delete (the handler itself: `rid` None, the message's), or one
        a peer forwarded (`_on_forward`: the Forward's rid)."""
        if rid is None:
            rid = msg.rid
        cfg = self.cfg
        key = msg.key
        try:
            # each wire check runs only where its test (inline: per request) fails, to raise
            # saying why; the order of the checks, and so the error reported, is theirs
            if key.__class__ is not bytes or not 0 < len(key) <= cfg.max_key_size:
                wire.check_key(key, cfg.max_key_size)
            name = msg.ns or nss.DEFAULT  # (_resolve inline; Registry.get's case of a
            ns = self.namespaces.find(name) if name.__class__ is str else None  # known name)
            if ns is None:
                ns = self.namespaces.get(name)  # (InvalidRequest: says why)
            # (_storage_key of a default-namespace key: the key itself, if it may be one)
            skey = key if ns.name == nss.DEFAULT and key[0] != 0 else self._storage_key(ns, key)
            n = ns.n
            if type(msg) is Get:
                if msg.r:  # (0: the namespace's R, nothing to check)
                    wire.check_quorum("r", msg.r, n)
                if msg.pr:
                    wire.check_quorum("pr", msg.pr, n)
            else:
                if msg.w:
                    wire.check_quorum("w", msg.w, n)
                if msg.pw:
                    wire.check_quorum("pw", msg.pw, n)
                context = msg.context
                if context is not None and (context.__class__ is not bytes
                                            or len(context) > wire.MAX_CONTEXT):
                    wire.check_context(context)
                if context:
                    if not forwarded:  # opened where it enters (a peer forwards it bare)
                        try:
                            context = msg.context = self.seal.open(skey, context)
                        except InvalidRequest:
                            self.metrics.contexts_refused.inc()
                            raise
                    dvv.validate_context(context)
                if type(msg) is Put:
                    value = msg.value
                    if value.__class__ is not bytes or len(value) > cfg.max_value_size:
                        try:
                            wire.check_value(value, cfg.max_value_size)
                        except InvalidRequest as exc:  # (whose limit: not the client's own)
                            raise InvalidRequest(f"{exc} of this node (zkv-node "
                                                 f"--max-value-size)") from None
                    if msg.ttl:
                        ns.check_write_ttl(msg.ttl)
        except (ZkvError, ValueError) as exc:
            self._reply(ident, Error(rid, E_INVALID, str(exc)[:wire.MAX_ERROR_TEXT]))
            return
        if self.stall_backlog and type(msg) is not Get and ns.conflicts != "lww":
            self._refuse_stale(ident, rid)
            return
        origin = (ident, rid)
        ring = self.membership.ring(ns.n)
        p = ring.partition(skey)  # (hashed once: _coordinate uses it too)
        # A write is coordinated by an owner of its key: its coordinator puts the new
        # version's dot in the key's clock under its own id, so a clock names the owners
        # only (about N entries). One this node owns no copy of, or one taken while this
        # node takes no writes (its disk), goes to one that does; one forwarded, or with no
        # such node, is coordinated here (and the engine refuses it: E_UNAVAILABLE).
        # A get this node owns no copy of is coordinated here while every owner is
        # reachable, as riak_kv's get FSM is (Dynamo forwards it): it asks the N owners a
        # forward's coordinator would, without the hop there and back (a client behind a
        # load balancer, routing="any": 0.4 of its gets at 5 nodes). With an owner
        # unreachable it is forwarded as before, so an owner's own copy answers first: here,
        # the first answer could be a stand-in's copy, which holds only the writes taken
        # since the owner went (gets at R=1 answered empty: the simulator, --scenario
        # remove, seed 0). Only a node that is a valid (or leaving) member does this: the
        # owners refuse replica reads from a node they have not heard of yet, which a node
        # that joined a moment ago can be (every get of a client of n4 failed at once for
        # 0.15 s after its join: --scenario membership-rejoin, seed 1); a Forward any node
        # serves.
        preflist = ring.preflist(p)
        if type(msg) is Get:
            stopped = False
            here = (forwarded or self.me in preflist or (
                self.membership.unreachable().isdisjoint(preflist)
                and (st := self.membership.cluster) is not None
                and st.status(self.me) in (own.VALID, own.LEAVING)))
        else:
            stopped = self.write_stop is not None
            here = forwarded or not (stopped or self.me not in preflist)
        if not here:
            down = self.membership.unreachable()
            if self.no_writes and type(msg) is not Get:
                down = down | self.no_writes
            if stopped:
                self.metrics.writes_refused.inc()
                down = down | {self.me}
            candidates = [x for x in preflist if x not in down]
            if not candidates:
                # no owner is reachable: the first reachable nodes of the key's walk stand in
                # (Dynamo's sloppy quorum), so every coordinator's writes and reads of the key
                # meet there. Standing in itself, each node that got the request kept a hint
                # of its own: with N=1, reads at R=1 missed writes another node had taken
                # (simulate.py --scenario remove, the dead node's N=1 keys)
                sloppy = [x for x, _ in ring.sloppy_preflist(p, down)]
                candidates = [] if self.me in sloppy else sloppy
            if candidates:
                self.metrics.forwards.inc()
                # an lww write is stamped where it enters the cluster: a forward that lands
                # late (its first candidate lost it, and the client's retry through another
                # node was acknowledged meanwhile) must not be stamped after the writes the
                # client made since (the simulator: such a late copy of a put overwrote the
                # same client's two later ones, tests/sim/test_sim_ttl.py, seed 17)
                given = 0
                if type(msg) is Put and ns.lww:
                    why = self._unstampable()
                    if why is not None:
                        self._reply(ident, Error(rid, E_UNAVAILABLE, why))
                        return
                    given = self._stamp(skey, msg.floor)
                self.start_op(ForwardOp(self, origin, skey, self.t, msg, candidates,
                                        per_try=2 * cfg.replica_timeout + 0.25,
                                        stamp=given, gen=ns.gen), self.t)
                return
        if gen >= 0 and gen != ns.gen and type(msg) is not Get:  # (a newer one: not now)
            self._reply(ident, Error(rid, E_INVALID if gen < ns.gen else E_UNAVAILABLE,
                                     _other_generation(ns, gen)))
            return
        self._coordinate(origin, msg, ring, ns, skey, p, stamp)

    def coordinate_here(self, origin, inner, stamp: int = 0, gen: int = -1) -> None:
        """Coordinate a request locally although this node is not an owner (no owner
        answered); a write only in the generation of its namespace it was forwarded in."""
        try:
            ns, skey = self._resolve(inner)
            if gen >= 0 and gen != ns.gen and type(inner) is not Get:
                raise InvalidRequest(_other_generation(ns, gen))
        except ZkvError as exc:
            self.respond(origin, Error(0, E_INVALID, str(exc)[:wire.MAX_ERROR_TEXT]))
            return
        self._coordinate(origin, inner, self.membership.ring(ns.n), ns, skey, None, stamp)

    def _coordinate(self, origin, msg, ring, ns: Namespace, skey: bytes,
                    p: int | None = None, given: int = 0) -> None:
        """Start the op that coordinates a client request here. `given`: an lww Put's stamp
        from the node that forwarded it (Forward.stamp), bounded by this node's clock skew."""
        if self.dots_unsaved and type(msg) is not Get:  # (no dot under an unsaved base)
            self.metrics.writes_refused.inc()
            self._reply(origin[0], Error(origin[1], E_UNAVAILABLE, self._no_writes()))
            return
        n = ns.n
        if p is None:  # (the caller's, when it had the key's partition in `ring` at hand)
            p = ring.partition(skey)
        hot, key = self.metrics.hot, msg.key  # the hot-keys sketch (metrics.observe_key);
        counts = hot.counts  # a key it counts already: TopK.add's first case inline
        if key in counts:
            counts[key] += 1
            hot.total += 1
        else:
            hot.add(key)
        # sloppy quorum: the first N reachable nodes of the extended preference list; a
        # stand-in is paired with the owner it keeps a hint for
        down = self.membership.unreachable()
        if self.no_writes and type(msg) is not Get:  # writes go around peers that take none
            down = down | self.no_writes  # (stand-ins keep hints for them, as if down)
        targets = ring.sloppy_preflist(p, down)
        if type(msg) is Get:
            need, strict = msg.r or ns.r, msg.pr or ns.pr
        else:
            need, strict = msg.w or ns.w, msg.pw or ns.pw
        owners: frozenset[str] = frozenset()
        if strict:  # a primary quorum: at least `strict` of the counted answers are owners'
            owners = frozenset(ring.preflist(p))
            if strict > need:
                need = strict
        if down and (len(targets) < need or (strict and len(_primaries(targets, owners)) < strict)):
            # too few reachable for the quorum: the suspect (not down) nodes are asked too
            # rather than the request failing at once. A node restarted a moment ago is
            # suspect until the others hear its first heartbeat, and a quorum of all N then
            # failed in no time although every node answers (Cassandra's Unavailable, too,
            # counts only the nodes its detector convicts). A frozen one costs the timeout.
            down = self.membership.convicted()
            if self.no_writes and type(msg) is not Get:
                down = down | self.no_writes
            targets = ring.sloppy_preflist(p, down)
        if type(msg) is not Get and (self.me, None) not in targets \
                and self.me not in [x for x, _ in targets]:
            # a write coordinated without being chosen (forwarded under another ring view, or
            # no owner answered a forward): stand in for an owner missing from the targets,
            # in place of whichever node stood in for it (a get asks the targets only: this
            # node's copy, if any, is no owner's or stand-in's and must not count toward R)
            present = {x for x, _ in targets}
            missing = [o for o in ring.preflist(p) if o not in present]
            owner = missing[0] if missing else None
            rest = [t for t in targets if owner is None or t[1] != owner]
            if owner is None and len(rest) >= n:
                # every owner is present: this node takes the last target's place, so it keeps
                # a hint for the owner that target stood for (with N=1 it would otherwise hold
                # the only copy, as a non-owner, and drop it after the next change)
                owner = rest[n - 1][1] or rest[n - 1][0]
            targets = [(self.me, owner)] + rest[: n - 1]
        if strict and len(up := _primaries(targets, owners)) < strict:
            # fewer owners reachable than the primary quorum needs: refused at once, as riak_kv
            # refuses pr/pw it cannot meet, rather than a stand-in's answer counting for one
            self.metrics.primary_refused.inc()
            kind = "get" if type(msg) is Get else ("put" if type(msg) is Put else "delete")
            self.respond(origin, Error(
                0, E_UNAVAILABLE,
                f"{kind}: {'pr' if type(msg) is Get else 'pw'}={strict} needs {strict} of the "
                f"key's owners ({', '.join(sorted(owners))}) and {len(up)} "
                f"{'is' if len(up) == 1 else 'are'} reachable from {self.me}"
                f"{' (' + ', '.join(up) + ')' if up else ''}; {wire.PRIMARY_SHORT}"))
            return
        deadline = self.t + self.cfg.replica_timeout
        op: Op
        if type(msg) is Get:
            op = GetOp(self, origin, skey, deadline, targets, need, ns.head,
                       self._joint(p, n, need, down, targets) if self.unsettled else None,
                       ns.ttl * 1000, strict, owners)
        else:
            value = msg.value if type(msg) is Put else None
            wid = stored_wid(msg.wid, value) if self.hash_wids else msg.wid
            stamp = b""
            if value is not None and ns.conflicts == "lww":  # (ns.lww without its call)
                if given:  # stamped on receipt where it entered (no later than our clock's
                    self.hlc.observe(given)  # skew bound allows)
                    stamp = hlcs.pack(min(given, self.hlc.limit()))
                else:
                    why = self._unstampable()
                    if why is not None:
                        self.respond(origin, Error(0, E_UNAVAILABLE, why))
                        return
                    stamp = hlcs.pack(self._stamp(skey, msg.floor))
                # (namespaces.py, "Stored values": a write_ttl namespace's own-ttl field)
                value = (stamp + msg.ttl.to_bytes(nss.TTL_BYTES, "big") + value
                         if ns.write_ttl else stamp + value)
            rings = self.membership.rings(n)  # (_extra_targets' common case inline)
            extra = ([] if rings is None or (not rings.moving and not self.unsettled)
                     else self._extra_targets(p, targets, n))
            also = self._joint_write(p, n, need) if self.unsettled else None
            if also is None:
                op = WriteOp(self, origin, skey, deadline, targets, need, msg.context, value,
                             wid, extra, int.from_bytes(stamp, "big") if stamp else 0,
                             strict, owners)
            else:  # (every previous owner it needs acknowledgements from is sent a copy)
                have = {x for x, _ in targets}
                extra = list(dict.fromkeys(extra + [x for nodes, _ in also
                                                    for x in sorted(nodes) if x not in have]))
                op = JointWriteOp(self, origin, skey, deadline, targets, need, msg.context,
                                  value, wid, extra,
                                  int.from_bytes(stamp, "big") if stamp else 0, strict, owners,
                                  also=also)
        self.start_op(op, self.t)

    # ---- the Context operations use (see op.py) ----------------------------------------------
    def start_op(self, op: Op, now: float) -> None:
        op.started = now
        if op.origin is not None:
            ident = op.origin[0]
            self.inflight[ident] = self.inflight.get(ident, 0) + 1
            op.holds_slot = True
            if op.size:
                self.inflight_bytes[ident] = self.inflight_bytes.get(ident, 0) + op.size
                if _peer_of(ident) is None:
                    self.client_bytes += op.size
        op.serial = serial = next(self.op_serials)
        self.live_ops[serial] = op
        heappush(self.timers, (op.deadline, next(self.timer_seq), serial))
        op.start()

    def ask(self, node_id: str, msg, op: Op | None) -> None:
        rid = next(self.rids)
        msg.rid = rid
        if op is not None:
            self.peer_rids[rid] = (op, node_id, self.t)
            op.rids.append(rid)
        box = self.out.peers.get(node_id)
        if box is None:
            box = self.out.peers[node_id] = []
        box.append(msg)

    def respond(self, origin, msg) -> None:
        ident, rid = origin
        msg.rid = rid
        if type(msg) in _REPLY_SIZE:  # a reply that may be large: under the reply budget
            self._reply(ident, msg)
            return
        # (_reply's case of a reply of no counted size inline: a put's PutOk, an Error)
        box = self.out.clients.get(ident)
        if box is None:
            box = self.out.clients[ident] = []
        box.append(msg)

    def done(self, op: Op) -> None:
        if self.live_ops.pop(op.serial, None) is None:
            return
        self.dead_timers += 1
        if 2 * self.dead_timers >= len(self.timers):  # amortized O(1) per op
            live = self.live_ops
            self.timers[:] = [t for t in self.timers if t[2] in live]  # in place: tick()
            heapq.heapify(self.timers)  # may be iterating it
            self.dead_timers = 0
        if op.holds_slot:  # (most were released when answered)
            self.release(op)
        if op.copies:
            self._count_bytes(op.origin[0], -op.copies)
        peer_rids = self.peer_rids
        rids = op.rids
        for rid in rids:
            peer_rids.pop(rid, None)
        rids.clear()
        op.on_done()

    def release(self, op: Op) -> None:
        """The op's client has its answer (or the op ended): it stops counting against the
        connection's in-flight cap. An answered op may still wait for a slow or silent replica
        until its deadline; counting it would refuse a client that only ever waits for its
        quorum ('busy') whenever a replica is silent."""
        if op.holds_slot:
            op.holds_slot = False
            ident = op.origin[0]
            n = self.inflight.get(ident, 0) - 1
            if n > 0:
                self.inflight[ident] = n
            else:
                self.inflight.pop(ident, None)
            if op.size:
                self._count_bytes(ident, -op.size)

    def charge(self, op: Op, size: int) -> None:
        """`op` (a client's) sent its replicas copies of `size` bytes, or holds a version of
        that size (a get; negative: it holds that much less now): they count against its
        connection's and all clients' request bytes in flight until the op is done (every
        replica answered, or its deadline), past its answer; later requests over the cap are
        answered "busy, retry" (_bytes_refused)."""
        op.copies += size
        self._count_bytes(op.origin[0], size)

    def _count_bytes(self, ident: bytes, size: int) -> None:
        """`size` more (or, negative, fewer) request bytes in flight on connection `ident`."""
        left = self.inflight_bytes.get(ident, 0) + size
        if left > 0:
            self.inflight_bytes[ident] = left
        else:
            self.inflight_bytes.pop(ident, None)
        if _peer_of(ident) is None:
            self.client_bytes += size

    def wake(self, op: Op, at: float) -> None:
        heappush(self.timers, (at, next(self.timer_seq), op.serial))

    def standins(self, key: bytes, exclude: set[str]) -> list[str]:
        ring = self.membership.ring(self._n_of(key))
        unreachable = self.membership.unreachable()
        if self.no_writes:  # (a stand-in must take the write it is asked to keep)
            unreachable = unreachable | self.no_writes
        return [x for x in ring.walk(ring.partition(key))
                if x not in exclude and x not in unreachable]

    def is_up(self, node_id: str) -> bool:
        return self.membership.is_up(node_id)

    def suspect(self, node_id: str, reason: str) -> None:
        if self.stall_until > self.t:  # (a request timed out through this node's own stall:
            return  # the answer may wait in its socket; a resumed node found 27 "timeouts")
        self.membership.suspect(node_id, reason)

    def stood_still_since(self, t: float) -> bool:
        """This node stood still (`_resumed`) at some moment after `t`."""
        return self.stall_end > t

    def spend_io(self, nbytes: int) -> None:
        self.transfers.budget.charge(nbytes)

    def repaired(self) -> None:
        self.metrics.read_repairs.inc()

    def observe(self, op: Op, ok: bool) -> None:
        kind = op.kind
        if isinstance(op, ForwardOp):
            kind = type(op.inner).__name__.lower()
        self._observe_op(kind, op.required, ok, self.t - op.started)

    def _on_siblings(self, key: bytes, count: int, write: bool) -> None:
        self.metrics.note_siblings(count, write, count > self.cfg.sibling_warn)

    def _on_replies(self, node_id, msgs: list, now: float) -> None:
        self.reach.answered(node_id)  # (reach.py: its requests' answers come back)
        peer_rids, live, latency = self.peer_rids, self.live_ops, self.latency
        samples, seen = latency.samples, latency.seen
        for msg in msgs:
            entry = peer_rids.pop(msg.rid, None)
            if entry is None:
                continue  # late answer to a finished op, or a fire-and-forget ack
            op, target, sent = entry
            if target == node_id and live.get(op.serial) is op:
                # latency.observe's common case inline (a peer it has samples of, no refresh
                # of its percentile due: per answer), else the call
                d = samples.get(node_id)
                n = seen.get(node_id, 0) + 1
                if d is not None and n > 4 and n % REFRESH:
                    d.append(now - sent)
                    seen[node_id] = n
                else:
                    latency.observe(node_id, now - sent)
                try:
                    op.on_reply(node_id, msg)
                except (StorageFull, OSError) as exc:  # (a write it made: ends at its deadline)
                    self.storage_refused(exc)

    # ---- gossip ---------------------------------------------------------------------------
    def _gossip(self, now: float) -> None:
        self.next_gossip = now + self.cfg.gossip_interval
        # (per round: a member's version is known from its record, and may change)
        self.hash_wids = not self._lacking(wire.FEATURE_HASHED_WIDS)
        self.out.drop.extend(self.membership.expire_candidates())  # per round, not per turn
        self.membership.beat()
        # the failure detector's verdict on each peer, once per round for every use of it in
        # the round (the claimant, settling, the health export each asked it per member)
        ms = self.membership
        states = {nid: ms.state(nid)[0] for nid in ms.peers}
        if self.intents:
            self._intents_tick(now, states)
        self._claimant_tick(now, states)
        self._settle_tick(now, states)
        if self.left_at is not None:
            self._pass_hints(now)
        report = self.transfers.report()
        self.gossip_round += 1
        every = max(TABLE_EVERY, len(ms.peers) // TABLE_PER)
        if self.gossip_round % every == self.table_offset % every:
            members = ms.table()
        else:
            members = [ms.me] + [m for m in (ms.get(x) for x in sorted(self.gossip_delta))
                                 if m is not None and m is not ms.me]
        self.gossip_delta.clear()
        self.out.gossip.append(self._gossip_message(members, report))
        self._check_reach(now, every)
        self.export.export(now, states)

    def _check_reach(self, now: float, every: int) -> None:
        """Once per round: say (ERROR, again every REACH_LOG_EVERY while it lasts) when the
        peers heard here show no recent heartbeat of this node: they cannot reach it at the
        addresses it advertises (reach.py). A peer's whole table comes every `every` rounds."""
        reach, ms = self.reach, self.membership
        if self.left_at is not None:
            reach.problem = None
            return
        changed, problem = reach.check(now, ms.me, self.cfg.gossip_interval,
                                       max(REACH_ROUNDS, 2 * every + 5), ms.peers)
        if problem is not None:
            if reach.due_log(now):
                log.error("%s (for about %.0f s; /readyz answers 503 until they hear it)",
                          problem, now - reach.unreached_at)
        elif changed:
            log.warning("peers hear this node again at %s (gossip %s)", ms.me.listen,
                        ms.me.gossip)

    def _gossip_message(self, members: list[Member], report: list,
                        stopping: bool = False) -> Gossip:
        """This node's gossip: `members`' records, and its cluster state, namespaces,
        incoming transfers (`report`), write stop and wall clock, as each round sends them."""
        s = self.membership.settings
        return Gossip(0, self.me, s["q"], s["n"], s["r"], s["w"], members,
                      self.membership.ring().fingerprint(), self.cluster_bytes,
                      self.transfers.epoch, [x[1:] for x in report if x[0] == s["n"]],
                      self._ns_encoded, [x for x in report if x[0] != s["n"]],
                      self.write_stop is not None, self.handoff.wall_ms(), stopping,
                      self.reach.unanswered(self.t, REACH_ROUNDS * self.cfg.gossip_interval,
                                            self.membership.is_up, self.membership.peers))

    def _on_gossip(self, msg: Gossip) -> None:
        self.metrics.observe_gossip(msg.sender, msg.fingerprint)
        s = self.membership.settings
        if (msg.q, msg.n) != (s["q"], s["n"]):
            if msg.sender not in self.malformed_logged:
                self.malformed_logged.add(msg.sender)
                log.error("member %s gossips q=%s n=%s but this cluster has q=%d n=%d: "
                          "ignoring it", wire.clip(msg.sender, 64), wire.clip(msg.q, 20),
                          wire.clip(msg.n, 20), s["q"], s["n"])
            return
        if msg.cluster and msg.cluster != self.cluster_bytes and self._foreign(msg):
            return
        # the transport tied the message to the member whose gossip socket it came on: records
        # of the sender are first-hand, the others relayed (membership.py: who may say what)
        self._merge_members(msg.members, via=msg.sender)
        self._merge_namespaces(msg.namespaces, msg.sender)
        if self.ns_waits:
            self._ns_waits_check(self.t, msg.sender, msg.namespaces)
        sender = self.membership.get(msg.sender)
        if sender is None:
            return
        # (its table's record of this node: how fresh a heartbeat of ours it heard, reach.py)
        self.reach.heard(msg.sender, self.t, self.membership.me, msg.members,
                         len(msg.members) >= max(2, (len(self.membership.peers) + 2) // 2))
        self.reach.told(msg.sender, self.t, self.me, msg.unanswered)
        if sender.features & UNFIT_BITS != UNFIT_BITS or sender.id in self.unfit:
            self._check_version(sender)
        self.heard_member = True
        if msg.wall_ms and self.stall_until <= self.t:  # (what waited through a stall: no)
            self._clock_offset(msg.sender, msg.wall_ms - self.handoff.wall_ms())
        self._tell(msg)
        if msg.stopping:
            self.membership.stopped(msg.sender)
        if msg.no_writes:
            self.no_writes.add(msg.sender)
        elif self.no_writes:
            self.no_writes.discard(msg.sender)
        self.progress[msg.sender] = (msg.progress_epoch,
                                     [(s["n"], *x) for x in msg.progress] + list(msg.progress_n))
        if msg.cluster and msg.cluster == self.cluster_bytes:  # the state we hold: no decode
            st = self.membership.cluster
            if st is not None:
                self.peer_epochs[msg.sender] = st.rank()
                if (self.resumed and self.me in st.members
                        and (msg.sender == st.author or st.author == self.me
                             or self._author_gone(st.author))):
                    self.resumed = False  # its author still holds the state it started with
                    self._say_leaving(st)  # (or, with the author down, a member does)
        elif msg.cluster:
            st = self._state_of(msg)
            if st is None:
                return
            self.peer_epochs[msg.sender] = st.rank()
            # a state is taken from its author (the claimant that made it), or relayed by
            # anyone when the author is not up here (it may have died right after)
            # (a newer state authored by this node itself is one it lost, a cluster.json
            # fallen back to an older copy: it is never gossiped first-hand to its author)
            if own.newer(self.membership.cluster, st) and (
                    msg.sender == st.author or st.author == self.me
                    or not self.membership.is_up(st.author)
                    or self.membership.get(st.author) is None):
                self._adopt(st)

    def _clock_offset(self, peer: str, offset: int) -> None:
        """A peer's wall clock minus ours (ms), as one of its gossip messages said (the
        message's delay on the way counts against the peer: `clock_offsets` keeps the largest
        of the recent ones)."""
        seen = self.clock_seen.get(peer)
        if seen is None:
            seen = self.clock_seen[peer] = deque(maxlen=CLOCK_SAMPLES)
        seen.append((self.t, offset))

    def clock_offsets(self, now: float) -> list[int]:
        """Each peer's wall clock minus ours (ms): the largest of its offsets of the last
        CLOCK_WINDOW seconds, for the peers that are members and heard in that time."""
        out, since = [], now - CLOCK_WINDOW
        for peer in list(self.clock_seen):
            recent = [o for t, o in self.clock_seen[peer] if t >= since]
            if not recent or self.membership.get(peer) is None:
                del self.clock_seen[peer]  # (gone quiet, or removed: bounded by the members)
                continue
            out.append(max(recent))
        return out

    def _state_of(self, msg: Gossip) -> own.ClusterState | None:
        """The cluster state `msg` carries, decoded once per distinct state (not once per
        sender); None, said, for one that does not decode."""
        st = self.states_seen.get(msg.cluster)
        if st is None:
            try:
                st = own.decode(msg.cluster)
            except ValueError as exc:
                self.malformed(msg.sender, f"cluster state: {exc}")
                return None
            if len(self.states_seen) >= 4:
                self.states_seen.clear()
            self.states_seen[msg.cluster] = st
        return st

    def _foreign(self, msg: Gossip) -> bool:
        """Whether `msg` comes from a node of another cluster (its state founded at another
        moment) at a member's gossip address: ignored whole, its heartbeat included, so the
        members count that member down and stand-ins take its keys' writes. (An operator's
        run: the first node, restarted on an empty disk with its usual command line, no
        --seed, founded a cluster of its own at its address, and the members kept it up:
        reads of its keys failed, hints for it piled up.) Said once per sender."""
        mine = self.membership.cluster
        if mine is None or not mine.founded:
            return False
        st = self._state_of(msg)
        if st is None or not st.founded or st.founded == mine.founded:
            return False  # (one that does not decode is said, and dropped, later)
        if ("foreign", msg.sender) not in self.malformed_logged:
            self.malformed_logged.add(("foreign", msg.sender))
            log.error("%s gossips the state of another cluster (founded at %d by %s, this one "
                      "at %d by its first node): ignoring it, it counts as down. A member "
                      "restarted without --seed on an empty data dir (or with --new-cluster) "
                      "founds a cluster of its own: stop it; if it took writes since, `zkv "
                      "dump` them; empty its data dir, start it with --seed of a member",
                      wire.clip(msg.sender, 64), st.founded, wire.clip(st.author, 64),
                      mine.founded)
        return True

    # ---- ownership: the cluster state, the claimant, transfers (issue 11; ownership.py) -----
    def _adopt(self, st: own.ClusterState, save: bool = True) -> None:
        """Take a (newer) cluster state: rings, transfers to receive, cluster.json."""
        old = self.membership.rings()
        self.membership.cluster = st
        if save and self.resumed and self.me in st.members:  # a newer state names it
            self.resumed = False
        self._say_leaving(st)
        rings = self.membership.rings()
        assert rings is not None
        if old is not None and old.current.fingerprint() != rings.current.fingerprint():
            # keep writing to the old owners too until all agree (for every N)
            self.unsettled = self.unsettled[-(MAX_UNSETTLED - 1):] + [old.state]
            self._unsettled_rings = {}
            self.agreed_since = None
            self._mark_fresh(old.state)
        self.membership.version += 1
        self.cluster_bytes = own.encode(st)
        self._replan()
        if save:  # (at start-up readiness says "starting" until the first tick)
            self.export.state_changed(self.t)
        self.need_drop = True
        self.handover.reset()
        if self.handoff.index:
            self._hints_of_removed(st)
        if save:  # (not at start-up: a node that then fails to bind says one line only)
            self._save_cluster()
            log.info("cluster epoch %d by %s: %s%s", st.epoch, st.author,
                     ", ".join(f"{i} {s}" for i, (s, _) in sorted(st.members.items())),
                     f"; staged: {st.staged}" if st.staged else "")
        # it left: the change completed after this incarnation started, or it was leaving
        # (or started again on a member's data dir, not yet confirmed: `resumed`)
        if (self.me not in st.members and self.left_at is None and self.me in st.gone
                and (st.gone[self.me] >= self.membership.me.incarnation
                     or self.membership.me.leaving)):
            self.left_at = self.t
            if st.gone[self.me] < self.membership.me.incarnation:
                # nothing to hand over: the change completed without this process (the
                # members, which no longer take a former member's exchanges, fetched its
                # partitions from the other replicas, or from it before it stopped)
                self.handed_before = True
                log.warning("%s left the cluster (or was removed from it) before this start: "
                            "it stays out and exits. To add it again, start it on an empty "
                            "data dir with --seed", self.me)
            else:
                log.info("%s has left the cluster: delivering its hints, then exiting", self.me)

    def _author_gone(self, author: str) -> bool:
        """A state's author has been down (or never heard of) here for longer than the failure
        detector's horizon since this process started: a member that holds the state this node
        resumed with may confirm it instead (as anyone may relay a state while its author is
        not up). Before that horizon, an author merely not heard from *yet* could hold a newer
        state without this node."""
        return (self.t - self.started > self.membership.down_after
                and not self.membership.is_up(author))

    def _say_leaving(self, st: own.ClusterState) -> None:
        """This node's own record says leaving while `st` does (or while `resumed`): a
        claimant never stages a join for a node that says so (ownership.joinable)."""
        if not self.resumed and self.me in st.members:
            self.membership.me.leaving = st.status(self.me) == own.LEAVING

    def groups(self) -> list[int]:
        """Every N in use: the cluster's, then each namespace's (issue 15), ascending."""
        default = self.membership.settings["n"]
        return [default] + sorted({ns.n for ns in self.namespaces} - {default})

    def _replan(self) -> None:
        """Transfers to receive, per N in use (the cluster state or the namespaces changed)."""
        if self.membership.cluster is None:
            return
        groups = {}
        for n in self.groups():
            rings = self.membership.rings(n)
            assert rings is not None
            groups[n] = rings
        self.transfers.replan(groups, self.membership.settings["n"])

    def forget_previous(self) -> None:
        """Every member has had the cluster state for `settle` seconds: writes no longer also
        go to the previous owners, nor gets ask them."""
        self.unsettled = []
        self._unsettled_rings = {}

    @property
    def prev_state(self) -> own.ClusterState | None:
        """The state before the last change, until every member has the new one and `settle`
        passed; None when settled."""
        return self.unsettled[-1] if self.unsettled else None

    def _rings_before(self, i: int, n: int) -> own.Rings:
        """The rings (N = `n`) of `unsettled[i]`, built once per change."""
        rings = self._unsettled_rings.get((i, n))
        if rings is None:
            rings = self._unsettled_rings[(i, n)] = own.Rings(
                self.unsettled[i], self.membership.settings["q"], n)
        return rings

    def prev_rings(self, n: int | None = None) -> own.Rings | None:
        """The rings (for N = `n`, None: the cluster's) of `prev_state`; None when settled."""
        if not self.unsettled:
            return None
        return self._rings_before(len(self.unsettled) - 1,
                                  self.membership.settings["n"] if n is None else n)

    def _stray(self, key: bytes) -> tuple[str, ...] | None:
        """The owners of a key this node neither replicates nor receives (None: it is ours)."""
        ks = nss.key_settings(key)  # a namespaced key's owners follow its own N
        rings = self.membership.rings(ks[0] if ks else None)
        if rings is None:
            return None
        return rings.stray(rings.current.partition(key), self.me)

    def _receiving(self, key: bytes) -> bool:
        """Is this node a pending owner of `key` (a change moves its partition here)?"""
        rings = self.membership.rings(self._n_of(key))
        return rings is not None and rings.moving and self.me in rings.pending(
            rings.current.partition(key))

    def _owned_before(self, key: bytes) -> bool:
        """Does this node own `key` under a previous ring of a change not settled here? Then
        it keeps a copy of a write it no longer owns too: a node that has not heard of the
        change reads it here (JointWriteOp counts on it); the drop pass drops it once
        settled."""
        if not self.unsettled:
            return False
        n = self._n_of(key) or self.membership.settings["n"]
        p = self.membership.ring(n).partition(key)
        return any(self.me in ring.preflist(p) for ring in self._previous_rings(p, n))

    def _extra_targets(self, p: int, targets, n: int | None = None) -> list[str]:
        """Nodes a write also goes to, uncounted: pending owners of p (a transfer is running)
        and, until every member has the latest ring, p's owners under the previous one
        (`n`: the namespace's N). A node that is a target only as a stand-in keeps a hint,
        not a copy of its own: if it is such an owner it is an extra too (this node included:
        the coordinator then also stores the version as its own; the simulator lost an N=1
        write acknowledged by the pending owner standing in for the old one, whose hint was
        delivered to the old owner that then left)."""
        rings = self.membership.rings(n)
        if rings is None or (not rings.moving and not self.unsettled):
            return []  # the common case: nothing moving, every member has the latest ring
        have = {x for x, owner in targets if owner is None}
        extra = [x for x in rings.pending(p) if x not in have]
        prev = self.prev_rings(n)
        if prev is not None:
            for x in prev.current.preflist(p) + prev.pending(p):
                if x not in have and x not in extra and self.membership.get(x) is not None:
                    extra.append(x)
        return extra

    def members_behind(self, epoch: int) -> list[str]:
        """The other members, not down, that have not reported (by gossip) a cluster epoch of
        at least `epoch`; once none is left, each member coordinates writes by that plan or a
        later one. [this node] while it holds no cluster state."""
        st = self.membership.cluster
        if st is None:
            return [self.me]
        state, epochs = self.membership.state, self.peer_epochs
        behind = []
        for nid in sorted(st.members):
            if nid != self.me:
                rank = epochs.get(nid)
                if (rank is None or rank[0] < epoch) and state(nid)[0] != "down":
                    behind.append(nid)
        return behind

    def _received(self, st: own.ClusterState) -> bool:
        """Has every pending owner reported each partition of this plan received, for every
        N in use?"""
        epoch = st.epoch
        done: dict[str, set[tuple[int, int]]] = {}
        q = self.membership.settings["q"]
        for n in self.groups():
            rings = self.membership.rings(n) if st is self.membership.cluster else \
                own.Rings(st, q, n)
            assert rings is not None
            for p, r, _ in rings.transfers():
                if r not in done:
                    if r == self.me:
                        if self.transfers.epoch != epoch:
                            return False
                        done[r] = {(gn, gp) for gn, gp, _, _, ph in self.transfers.report()
                                   if ph == 2}
                    else:
                        rep = self.progress.get(r)
                        if rep is None or rep[0] != epoch:
                            return False
                        done[r] = {(gn, gp) for gn, gp, _, _, ph in rep[1] if ph == 2}
                if (n, p) not in done[r]:
                    return False
        return True

    def _claimant_tick(self, now: float, states: dict[str, str]) -> None:
        """Once per gossip round, on the claimant only: stage joins of new members, commit
        when auto_commit is on, finalize a change whose transfers all completed. `states`:
        each peer's "up" | "suspect" | "down" this round."""
        st = self.membership.cluster
        ms = self.membership
        if st is None or self.left_at is not None:
            return
        up = [self.me] + [nid for nid, state in states.items() if state == "up"]
        if own.claimant(st, up) != self.me:
            return
        new = st
        fresh = own.joinable(st, [(m.id, m.incarnation) for m in ms.table()
                                  if m.id != self.me and m.id in up and not m.leaving])
        for nid in fresh:
            try:
                new = own.stage(new, "join", nid, known={nid})
            except own.ChangeError as exc:
                log.info("not staging the join of %s: %s", nid, exc)
        if new.staged and new.auto_commit:
            new = own.commit(new, self.me, {m.id: m.rack for m in ms.table()},
                             now_ms=ms.wall())
        elif new.moving() and self._received(new):  # (changes staged meanwhile, auto-commit
            # off, wait for the operator's commit, not the change under way: a node started
            # during a leave, its join staged, held the leaver in its process for good)
            new = own.finalize(new, self.me, ms.wall())
        if new is not st:
            self._adopt(new)

    def _settle_tick(self, now: float, states: dict[str, str]) -> None:
        """Once every up member reports our cluster epoch for `settle` seconds: stop writing
        to the previous owners and drop the partitions this node no longer holds. `states`:
        each peer's "up" | "suspect" | "down" this round."""
        st = self.membership.cluster
        if st is None:
            return
        ms = self.membership
        rank, epochs, members = st.rank(), self.peer_epochs, st.members
        agreed = all(epochs.get(nid) == rank for nid, state in states.items()
                     if state != "down" and nid in members)
        if not agreed:
            self.agreed_since = None
            return
        if self.agreed_since is None:
            self.agreed_since = now
        if now - self.agreed_since < self.cfg.settle:
            return
        self.forget_previous()
        if self.fresh:
            self._verify_fresh(now)
        if self._saved_unsettled != (0, 0) and self._saved_unsettled != (0, self.fresh_left()):
            self._save_cluster()  # (settled, or partitions verified since: a restart goes on)
        rings = ms.rings()
        assert rings is not None
        for nid in [i for i in ms.peers if i in st.gone and i not in st.members
                    and not ms.is_up(i)]:
            ms.forget(nid)  # left or removed, and gone: no longer in the table or cluster.json
            self.unfit.pop(nid, None)
            self._save_cluster()
        if self.need_drop and not rings.moving and self.left_at is None \
                and self.write_stop is None:
            keep = set(rings.current.replicas_of(self.me))
            try:
                if self.handover.done(now) and drop_pass(self, keep) == 0:
                    self.need_drop = False
            except (StorageFull, OSError) as exc:
                # a drop deletes (the engine writes a tombstone record): on a full disk it
                # raised out of the gossip round before its Gossip was sent, every round, so
                # the node fell silent and peers took it for down, and the space check after
                # the round never ran (simulate.py --scenario remove-rejoin --seed 1307 with
                # every fault kind). The drop waits for the disk like every background write.
                self.storage_refused(exc)
        if self.left_at is not None and not self.exit_requested:
            # hints for owners that are down were handed to stand-ins (_pass_hints); the wait
            # is for the case where no node that could keep them (or an owner to hand data
            # over to) is up
            handed = self.handed_before or self.handover.done(now, member=False)
            if (handed and not self.handoff.owners()) or now - self.left_at > LEAVE_HINT_WAIT:
                left = sum(len(v) for v in self.handoff.index.values())
                if left:
                    log.warning("exiting with %d hints undelivered (no node up to keep them; "
                                "kept in the data dir)", left)
                if not handed:
                    log.warning("exiting before %d partition(s) were handed over (their owners "
                                "are down; anti-entropy among them refills them)",
                                len(self.handover.todo or ()))
                self.exit_requested = True

    def _pass_hints(self, now: float) -> None:
        """This node left: hints for owners that are down go, as hints naming the owner, to
        a node of the key's walk that is up (an owner or the next stand-in), which delivers
        them when the owner is back. Hints for owners that are up are delivered as usual.
        So a leaving node takes nothing with it (it used to wait 60 s, then exit with them)."""
        from zkv.node.background import HandoffOp

        ms = self.membership
        for owner in self.handoff.owners():
            if owner in self.passing or ms.is_up(owner):
                continue
            by_node: dict[str, list[tuple[bytes, bytes]]] = {}
            for key, version in self.handoff.batch(owner, self.cfg.handoff_batch):
                ring = ms.ring(self._n_of(key))
                to = next((x for x in ring.walk(ring.partition(key))
                           if x not in (self.me, owner) and ms.is_up(x)), None)
                if to is not None:
                    by_node.setdefault(to, []).append((key, version))
            for to, batch in by_node.items():
                self.passing.add(owner)
                op = HandoffOp(self, owner, batch, now + 2 * self.cfg.replica_timeout, via=to)
                op.on_finish = lambda op, owner=owner: self.passing.discard(owner)
                self.start_op(op, now)
                break  # one batch per owner at a time

    def _on_fetch(self, ident: bytes, msg: Fetch) -> None:
        room = max(4096, self.turn_budget - self.turn_bytes.get(ident, 0))
        ok = answer_fetch(self.store, self.membership.ring(), msg, room, self.in_group(msg.n),
                          self.replica.read)
        self.transfers.served(ok)
        self._reply(ident, ok)

    def _on_cluster(self, ident: bytes, msg: Cluster) -> None:
        st = self.membership.cluster
        if st is None:
            raise ZkvError(f"{self.me} has not joined a cluster yet")
        ms = self.membership
        if msg.action not in ("plan", "leave", "replace", "force-remove", "commit",
                              "auto_commit"):
            raise ZkvError(f"unknown cluster action {wire.clip(msg.action, 20)}")
        up = [m.id for m in ms.table() if ms.state(m.id)[0] == "up"]
        boss = own.claimant(st, up)
        if msg.action == "plan" and (boss in (self.me, None) or _peer_of(ident) is not None):
            # (asked of another node, the claimant's: only it holds the staged changes)
            self._reply(ident, ClusterOk(msg.rid, self._plan(st)))
            return
        if boss != self.me:
            if boss is None:
                raise ZkvError("no claimant is up (no valid member is reachable)")
            if _peer_of(ident) is not None:
                raise ZkvError(f"{self.me} is not the claimant ({boss} is)")
            self.start_op(RelayOp(self, (ident, msg.rid), boss, msg,
                                  self.t + 2 * self.cfg.replica_timeout + 1.0), self.t)
            return
        try:
            if msg.action == "commit":  # (a node named: only its staged change, as
                # _intents_tick asks the claimant to commit a lost one again)
                new = own.commit(st, self.me, {m.id: m.rack for m in ms.table()}, msg.node,
                                 now_ms=ms.wall())
                self._watch([c for c in st.staged if c not in new.staged], new.epoch, True)
            elif msg.action == "auto_commit":
                if msg.node not in ("true", "false"):
                    raise own.ChangeError("auto_commit takes true or false")
                new = own.set_auto_commit(st, self.me, msg.node == "true")
            else:
                new = self._change(st, msg.action, msg.node, msg.other, up)
                self._watch([(msg.action, msg.node, msg.other)], new.epoch, st.auto_commit)
        except own.ChangeError as exc:
            raise ZkvError(str(exc)) from None
        self._adopt(new)
        self.next_gossip = self.t  # tell everyone now
        self._reply(ident, ClusterOk(msg.rid, self._plan(new)))

    def _change(self, st: own.ClusterState, action: str, node: str, other: str,
                up: list[str], committed: bool = False) -> own.ClusterState:
        """`st` with a change staged and committed under auto_commit, or committed alone if
        `committed` (a lost commit made again: staged first unless it still is), as the
        claimant makes it; ChangeError if it cannot be."""
        ms = self.membership
        new = st
        if not committed or (action, node, other) not in st.staged:
            new = own.stage(st, action, node, other, known=set(up), down=ms.down(),
                            n=max(self.groups()))
        if committed or new.auto_commit:
            new = own.commit(new, self.me, {m.id: m.rack for m in ms.table()},
                             node if committed else "", now_ms=ms.wall())
        return new

    def _watch(self, changes: list, epoch: int, committed: bool) -> None:
        """Watch the changes this claimant just made (Intent), the latest MAX_INTENTS."""
        nodes = {node for _, node, _ in changes}
        self.intents = ([x for x in self.intents if x.node not in nodes]
                        + [Intent(a, n, o, committed, epoch, self.t) for a, n, o in changes]
                        )[-MAX_INTENTS:]

    def _intents_tick(self, now: float, states: dict[str, str]) -> None:
        """Once per gossip round while this node watches changes it made (Intent): forget
        those done; make one again that a concurrent state lost (during a partition each
        side's claimant made an epoch, and the other side's won), or ask the claimant to, if
        this node no longer is it. A lost change's reason is logged either way."""
        st = self.membership.cluster
        if st is None:
            return
        up = [self.me] + [nid for nid, state in states.items() if state == "up"]
        boss = own.claimant(st, up)
        keep = []
        for it in self.intents:
            fate = own.fate(st, *it.change, it.committed)
            if fate == own.DONE:
                continue
            if it.handed and fate == own.LOST and not it.committed:
                log.info("the change %r made here is staged at the claimant: its plan shows it, "
                         "and a commit there applies it", it)
                continue
            if fate == own.CARRIED:
                it.epoch, it.since = st.epoch, now
            elif st.epoch > it.epoch + 1 or now - it.since > INTENT_TTL:
                log.warning("the change %r made here was lost to a concurrent cluster state "
                            "(epoch %d by %s) and the cluster has gone on since: not made "
                            "again (run it again if it is still wanted)", it, st.epoch,
                            st.author)
                continue
            elif boss == self.me:
                try:
                    st = self._change(st, *it.change, up, it.committed)
                except own.ChangeError as exc:
                    log.warning("the change %r made here was lost to a concurrent cluster "
                                "state (epoch %d by %s) and cannot be made again: %s", it,
                                st.epoch, st.author, exc)
                    continue
                log.warning("the change %r made here was lost to a concurrent cluster state; "
                            "made again (epoch %d)", it, st.epoch)
                it.epoch, it.since = st.epoch, now
                self._adopt(st)  # (this round's gossip carries it)
            elif boss is not None and not it.relaying and (it.committed
                                                           or it.action != "join"):
                log.warning("the change %r made here was lost to a concurrent cluster state; "
                            "asking the claimant %s to make it again", it, boss)
                it.relaying = True
                # a committed change is staged again, then committed alone (a join: only
                # committed, the claimant stages it by itself: no operator's command)
                asks = [Cluster(0, *it.change)] if it.action != "join" else []
                if it.committed:
                    asks.append(Cluster(0, "commit", it.node))
                op = IntentRelayOp(self, boss, it, asks,
                                   now + 2 * self.cfg.replica_timeout + 1.0)
                op.on_finish = lambda op, it=it: setattr(it, "relaying", False)
                self.start_op(op, now)
            keep.append(it)
        self.intents = keep

    def _plan(self, st: own.ClusterState) -> dict:
        s = self.membership.settings
        ring = self.membership.ring()
        # every partition this node owns counts, the empty ones at 0: the others are
        # estimated at the mean of these, and a mean over the non-empty ones only put one
        # big key's size on every partition (an outside run: 162 MB planned, 106 bytes moved)
        sizes: dict[int, int] = dict.fromkeys(ring.replicas_of(self.me), 0)
        other_sizes: dict[tuple[int, int], int] = {
            (kn, p): 0 for kn in self.groups()[1:] for p in self.membership.ring(kn).replicas_of(
                self.me)}
        by_partition = getattr(self.store, "partition_bytes", None)
        if by_partition is not None:  # (one pass in C; a namespace's keys apart)
            totals, apart = by_partition(ring.q_bits)
            for p, size in enumerate(totals):
                if size:
                    sizes[p] = sizes.get(p, 0) + size
        else:
            apart = [(key, self.store.record_size(key)) for key in self.store.keys()]
        for key, size in apart:
            p = ring.partition(key)
            kn = self._n_of(key)
            if kn is None or kn == s["n"]:
                sizes[p] = sizes.get(p, 0) + size
            else:
                other_sizes[(kn, p)] = other_sizes.get((kn, p), 0) + size
        out = own.plan(st, s["q"], s["n"], sizes, others=self.groups()[1:],
                       other_sizes=other_sizes,
                       known_racks={m.id: m.rack for m in self.membership.table()})
        out["claimant"] = own.claimant(st, [m.id for m in self.membership.table()
                                            if self.membership.is_up(m.id)])
        return out

    # ---- hints: current members only, with a quota and a TTL ---------------------------------
    def _hint_refusal(self, owner: str) -> str | None:
        if owner == self.me or self.membership.get(owner) is None:
            return f"hint for {wire.clip(owner, 64)}, which is not a member"
        if len(self.handoff.index.get(owner, ())) >= MAX_HINTS_PER_OWNER:
            return f"hint quota of {MAX_HINTS_PER_OWNER} keys for {owner} reached"
        return None

    def _sweep_hints(self) -> None:
        """Drop hints past HINT_TTL_MS, hints for nodes that are no longer members and hints
        of dead keys (a dropped or truncated namespace's)."""
        handoff = self.handoff
        dead = self.namespaces.is_dead if self.namespaces.dead_gens else None
        horizon = handoff.wall_ms() - HINT_TTL_MS
        budget = HINT_SWEEP_BATCH
        st = self.membership.cluster
        for owner in list(handoff.index):
            gone = self.membership.get(owner) is None or owner == self.me or (
                st is not None and owner in st.gone and owner not in st.members)
            if gone and self.unsettled and st is not None and owner in st.gone:
                continue  # a get asks this stand-in until the change settled (`_joint`)
            for key, (created, _) in list(handoff.index.get(owner, {}).items()):
                if budget <= 0:
                    return
                if dead is not None and dead(key):
                    handoff.delivered(owner, key, handoff.get(owner, key))
                    budget -= 1
                elif gone or created < horizon:
                    version = handoff.get(owner, key)
                    if gone and version:
                        self._rehome_hint(owner, key, version)
                    handoff.delivered(owner, key, version)
                    budget -= 1
            if not handoff.index.get(owner):
                handoff.index.pop(owner, None)

    def _rehome_hint(self, owner: str, key: bytes, version: bytes) -> None:
        """The hint's owner left or was force-removed: the key's other owners get the version
        instead, the pending ones too while a change moves the key (as hints for them, or
        into this node's own store when it is one)."""
        n = self._n_of(key)
        ring = self.membership.ring(n)
        targets = list(ring.preflist_for_key(key))
        rings = self.membership.rings(n)
        if rings is not None:
            targets += rings.pending(ring.partition(key))
        for o in dict.fromkeys(targets):
            try:
                if o == self.me:
                    self.replica.merge(key, version)
                elif o != owner:
                    self.replica.merge(key, version, o)
            except ValueError as exc:
                # a hint that cannot merge with what is held (a dot naming two writes: a
                # forged or corrupt version, dvv.pyx) is refused as a peer's would be; raised,
                # it stopped every sweep at that hint, and a force-remove's adoption before
                # cluster.json was saved (a review)
                self.malformed(owner, f"its hint for {wire.clip(key, 60)}: {exc}")

    def _hints_of_removed(self, st: own.ClusterState) -> None:
        """A force-remove committed: hints for the removed node reach the key's other and
        pending owners now (they are kept too, for reads through this stand-in until the
        change completes; the sweep drops them once the node is gone). Left for the sweep,
        an N=1 key written to a stand-in after its owner died read empty on the new owner
        for up to HINT_SWEEP_INTERVAL (simulate.py --scenario remove). While this node takes
        no writes (a full disk) the sweep does it once they resume: a refused write here
        raised out of the adoption of the cluster state, before cluster.json was saved
        (remove seed 75013 with --full-disks)."""
        if self.write_stop is None:
            try:
                for owner in self.handoff.owners():
                    if st.status(owner) == own.REMOVED:
                        for key, version in self.handoff.batch(owner, HINT_SWEEP_BATCH):
                            self._rehome_hint(owner, key, version)
            except (StorageFull, OSError) as exc:  # (the hints stay: the sweep's, later)
                self.storage_refused(exc)
        self.next_hint_sweep = self.t  # and the gone ones at the next tick

    # ---- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        return status(self)


def _other_generation(ns: Namespace, gen: int) -> str:
    """Why a forwarded write is refused: its namespace changed generation on the way."""
    if gen < ns.gen:
        return (f"namespace {ns.name!r} was truncated (or dropped and made again) while this "
                f"write was on its way: nothing was written")
    return (f"{ns.name!r}: this node has not heard of the namespace's generation {gen} yet "
            f"(it holds {ns.gen}): nothing was written; try again")


def _ns_mark(ns: Namespace) -> tuple[int, bool, int]:
    """How far a namespace's versions went (generation, dropped, last alter): a member whose
    version has at least the mark of the one made here has it, or a later one."""
    return ns.gen, bool(ns.dropped), ns.changed


def _primaries(targets: list[tuple[str, str | None]], owners: frozenset[str]) -> list[str]:
    """The nodes of `targets` (node, owner it stands in for) that are owners asked for their
    own copies, sorted: those whose answers can count toward a primary quorum."""
    return sorted(x for x, o in targets if o is None and x in owners)


@functools.lru_cache(maxsize=4096)  # asked for every request in plain-text mode (_role)
def _peer_of(ident: bytes) -> str | None:
    """The member a peer request speaks for: its identity is b"peer:<id>" or
    b"peer:<id>/<nonce>" (the transport's links add a random nonce); None for a client."""
    if not ident.startswith(b"peer:"):
        return None
    return ident[5:].split(b"/", 1)[0].decode("utf-8", "replace")


# bytes a reply carries, roughly (its large fields); replies of other types count as 0, without
# a call (most replies: RPutOk, PutOk, Error...)
_REPLY_SIZE: dict[type, Callable[[Any], int]] = {
    RGetOk: lambda m: len(m.dvv),
    ReadOk: lambda m: len(m.dvv),
    GetOk: lambda m: sum(len(v) for v in m.values) + len(m.context),
    RGetHashesOk: lambda m: sum(len(v) for v in m.dvvs) + sum(len(k) for k in m.keys),
    LeafKeysOk: lambda m: len(m.hashes) + len(m.digests),
    KeysOk: lambda m: sum(len(k) for k in m.keys) + sum(len(c) for c in m.copies),
}
