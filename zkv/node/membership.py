"""Membership: who is in the cluster, who is up, and the ring they form. No sockets here.

Each member gossips its table of members (id, endpoints, rack, incarnation, heartbeat) over
PUB/SUB; tables merge entry by entry, the higher (incarnation, heartbeat) winning, so every
node converges on the same member set and therefore on the same ring (the core's claim is
a pure function of the member set). A node restarting bumps its incarnation, so its fresh
heartbeat counter is not mistaken for an old one.

Failure detection is an accrual detector (Hayashibara et al. 2004, "The phi accrual failure
detector") over heartbeat arrivals: phi = elapsed / mean_interval * log10(e) under an
exponential model of inter-arrival times; a member is "suspect" above `phi_suspect`, "down"
above `phi_down` or when silent for `down_after` seconds. Request timeouts add suspicion
(`suspect()`), which a fresh heartbeat clears. The clock is injected (a callable returning
seconds), so every decision replays in tests.

The member table, cluster settings and namespace registry a node saw last are kept in
DATA_DIR/cluster.json (`cluster_doc`, `load_cluster` / `save_cluster`; key "namespaces"), so a
restarted node knows its peers and namespaces before any gossip. The file carries a checksum of
the rest of it (`cluster_checksum`): a changed byte that still parses (an outside run's `"n": 3`
-> `"n": 2` ran a node on an N=2 ring of its own, in split brain, coordinating writes at W=2)
makes it damaged, as one that does not parse is (`read_cluster`, `check_founding`). Each save
keeps the file it replaces (cluster.json.prev), which a load falls back to when the file is
damaged (a power loss after an unsynced save); with no good copy left the node refuses to start.

Trust (issue 13; holds even against a peer that holds the cluster key but is buggy or rogue):
- Every record is checked by `validate_member` before it is merged or saved: id and endpoint
  syntax (config.NODE_ID_RE / ENDPOINT_RE, ports 1-65535), a printable rack, an incarnation
  no later than the wall clock plus MAX_SKEW_MS (incarnations are wall-clock ms at start) and
  a heartbeat no larger than the milliseconds since that incarnation (nobody beats faster
  than once per ms) plus HEARTBEAT_SLACK. So no counter can approach 2**63 and overflow.
- Who may say what about node X. `merge(members, via=...)` names where a table came from:
  `via=X` means the record of X arrived first-hand (X's own gossip, on the socket subscribed
  to X's gossip endpoint, or X's own Join); `via=TRUSTED` is this node's own disk or the seed
  the operator named. A record of a *known* X is taken first-hand only: heartbeats, leaving,
  a new incarnation, moved endpoints. From anyone else (a relay) it changes nothing, except
  that a relay may tell that a member that is down here lives again, and where (a higher
  incarnation, at its old endpoints or others): the node subscribes there, but X stays down
  until X itself is heard there. A relayed record of an *unknown* X makes it a candidate
  only: the node subscribes to X's gossip endpoint, and X enters the table (and the ring,
  and cluster.json) when its own gossip is heard. Fake members that no process answers for
  therefore never reach the ring; candidates are capped (MAX_CANDIDATES) and expire
  (CANDIDATE_TTL).
- `leaving` is taken only first-hand (an admin leave would pass `via=X` explicitly).
- The table is capped at MAX_MEMBERS (wire.MAX_MEMBERS) records.
- `admit(m)` decides a Join: the same id with other endpoints while that member is up is
  refused with a reason (identity hijack); after it is down, it is a restart elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable

import blake3
import msgspec

from zkv._core.ring import Ring
from zkv.config import ENDPOINT_RE, NODE_ID_RE, parse_endpoint
from zkv.node import ownership as own
from zkv.storage.segment import fsync_dir
from zkv.wire import MAX_COUNTER, MAX_MEMBERS, MAX_RACK, Member, clip

LOG10_E = math.log10(math.e)
log = logging.getLogger("zkv.membership")

TRUSTED = None  # `via` for records from this node's own disk or its configured seed
MAX_SKEW_MS = 60_000  # how far ahead of our wall clock another node's clock may be
# the reason of a peer down because its last gossip said it was stopping (zkv cluster
# leave --wait reads it: a frozen node is down too, and it has not handed over yet)
SHUT_DOWN = "it shut down (its last gossip said so)"
HEARTBEAT_SLACK = 100_000  # heartbeats allowed beyond one per ms since the incarnation
MAX_CANDIDATES = 64  # relayed, not yet heard first-hand
CANDIDATE_TTL = 30.0  # seconds a candidate waits to be heard
MAX_INTENTS = 32  # membership changes a claimant watches (NodeCore.Intent), the latest kept
# cluster.json's integrity field: "blake3:" + 64 hex digits (`cluster_checksum`); a version
# before it wrote none, and ignores it (its load_cluster passes keys it does not know)
CHECKSUM = "checksum"
_CHECKSUM_RE = re.compile(r"blake3:[0-9a-f]{64}")
MISMATCH = ("its checksum does not match its content (a byte of it changed since it was "
            "written)")
# the name (cluster.json + PREVIOUS) of the copy a save keeps of the file it replaces
# (`save_cluster`), which `read_cluster` falls back to when cluster.json is damaged
PREVIOUS = ".prev"
_DAMAGED: set[str] = set()  # cluster.json files known damaged whose earlier copy is kept


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def validate_member(m, now_ms: int | None = None) -> str | None:
    """Why this record cannot be accepted, or None. Checks types too (peer input)."""
    if type(m) is not Member:
        return "not a member record"
    if type(m.id) is not str or not NODE_ID_RE.match(m.id):
        return f"bad node id {clip(m.id, 40)}"
    for name in ("listen", "gossip"):
        ep = getattr(m, name)
        if type(ep) is not str or not ENDPOINT_RE.match(ep):
            return f"bad {name} endpoint {clip(ep, 60)}"
        if not 1 <= int(ep.rsplit(":", 1)[1]) <= 65535:
            return f"bad {name} port {clip(ep, 60)}"
    if (type(m.rack) is not str or not 1 <= len(m.rack) <= MAX_RACK
            or not m.rack.isprintable()):
        return f"bad rack {clip(m.rack, 40)}"
    return validate_clock(m, now_ms)


def validate_clock(m, now_ms: int | None = None) -> str | None:
    """The part of `validate_member` that changes from beat to beat: the counters and their
    bounds by the clock (a record whose other fields equal a validated one needs only this)."""
    if type(m.leaving) is not bool:
        return "bad leaving flag"
    inc, beat = m.incarnation, m.heartbeat  # (checked in this order; per beat heard)
    if type(inc) is not int or not 0 <= inc <= MAX_COUNTER:
        return f"bad incarnation {clip(inc, 30)}"
    if type(beat) is not int or not 0 <= beat <= MAX_COUNTER:
        return f"bad heartbeat {clip(beat, 30)}"
    now_ms = wall_ms() if now_ms is None else now_ms
    if inc > now_ms + MAX_SKEW_MS:
        return f"incarnation {inc} is ahead of the clock ({now_ms} ms + skew)"
    if beat > max(0, now_ms + MAX_SKEW_MS - inc) + HEARTBEAT_SLACK:
        return f"heartbeat {beat} implausible for incarnation {inc}"
    return None


class _Peer:
    __slots__ = ("member", "last_beat", "intervals", "mean", "strikes", "reason", "refused_at",
                 "refused_why", "stopped")

    def __init__(self, member: Member, now: float) -> None:
        self.member = member
        self.last_beat = now
        self.intervals: deque[float] = deque(maxlen=100)
        # the mean interval the detector divides by (Membership._phi_after), None until it
        # is asked for after `intervals` changed: a heartbeat changes it, every state() and
        # is_up() (per request, per gossip round) only reads it
        self.mean: float | None = None
        self.strikes = 0  # request timeouts since the last heartbeat
        self.reason = ""
        # its own record last refused here (when, why): a clock too far apart from this one
        # refuses every beat, and the peer is down here for that reason (state() says so)
        self.refused_at = -math.inf
        self.refused_why = ""
        self.stopped = False  # it said it was stopping (its last gossip): down until it beats


class Membership:
    def __init__(
        self,
        me: Member,
        settings: dict,
        clock: Callable[[], float],
        gossip_interval: float = 0.2,
        down_after: float = 2.0,
        phi_suspect: float = 3.0,
        phi_down: float = 8.0,
        wall: Callable[[], int] = wall_ms,
        max_members: int = MAX_MEMBERS,
    ) -> None:
        self.me = me
        self.wall = wall
        self.max_members = max_members
        # relayed records of unknown nodes, waiting to be heard first-hand: id -> (record, until)
        self.candidates: dict[str, tuple[Member, float]] = {}
        self.refused = 0  # records refused (validation, trust rules, caps)
        self._last_refusal_log = -1e18
        self.settings = dict(settings)  # q, n, r, w
        self.clock = clock
        self.gossip_interval = gossip_interval
        self.down_after = down_after
        self.phi_suspect = phi_suspect
        self.phi_down = phi_down
        self.peers: dict[str, _Peer] = {}
        # n -> ((version, q, n) it was built at, member key, ring): one cached ring per N
        self._rings: dict[int, tuple[tuple, tuple, Ring]] = {}
        self.version = 0  # bumps whenever the member set (and so the ring) changes
        # who owns what (issue 11): set by the core (founded, saved, from the seed or gossip);
        # None only while joining, and the ring is then the member table's
        self.cluster: own.ClusterState | None = None
        self._state_rings: dict[int, own.Rings] = {}  # n -> the rings of `cluster`
        self._unreachable: frozenset[str] | None = None
        self._unreachable_at = 0.0
        self._convicted: frozenset[str] = frozenset()  # the down ones among them
        # a later life of this id at another address: (its incarnation, listen, gossip, when
        # first seen, the highest heartbeat seen within down_after of that); `usurped_by` once
        # it beats on past that (a live process: this one was replaced while frozen)
        self._other_life: tuple[int, str, str | None, float, int] | None = None
        self.usurped_by: Member | None = None

    # ---- local state --------------------------------------------------------------------
    def beat(self) -> Member:
        """Advance this node's heartbeat; returns its current member record."""
        self.me.heartbeat += 1
        return self.me

    def table(self) -> list[Member]:
        return [self.me] + [p.member for p in self.peers.values()]

    def get(self, node_id: str) -> Member | None:
        if node_id == self.me.id:
            return self.me
        p = self.peers.get(node_id)
        return p.member if p else None

    # ---- merging gossip -----------------------------------------------------------------
    def _refuse(self, via, m, why: str) -> None:
        self.refused += 1
        now = self.clock()
        mid = getattr(m, "id", None)
        p = self.peers.get(mid) if type(mid) is str and via == mid else None
        if p is not None:  # (first-hand: the peer's own record)
            p.refused_at, p.refused_why = now, why
        if now - self._last_refusal_log >= 1.0:  # at most one line a second, fields clipped
            self._last_refusal_log = now
            log.warning("refused member record %s from %s: %s (%d refused so far)",
                        clip(getattr(m, "id", m), 64), clip(via, 64) if via else "local", why,
                        self.refused)

    def _later_life(self, m: Member, now: float) -> bool:
        """A record of this node's id with a later incarnation at another address: a memory
        of a life started elsewhere (a restart at a new address whose clock was behind), or
        another process running as this id (replaced while it was frozen: an operator's run
        had both serve on for good). Waited on (True) for `down_after`: the highest beat
        relayed by then is the last a dead life made, and a beat past it marks a live one
        (`usurped_by`). A memory is jumped past after that, as before (False)."""
        if (m.listen, m.gossip) == (self.me.listen, self.me.gossip):
            return False
        seen = self._other_life
        key = (m.incarnation, m.listen, m.gossip)
        if seen is None or seen[:3] != key:
            self._other_life = (*key, now, m.heartbeat)
            return True
        if now - seen[3] <= self.down_after:
            if m.heartbeat > seen[4]:
                self._other_life = (*key, seen[3], m.heartbeat)
            return True
        if m.heartbeat > seen[4]:
            self.usurped_by = m
            return True
        return False

    def merge(self, members: list[Member], via: str | None = TRUSTED) -> list[Member]:
        """Fold a table in (see the module docstring for who may say what); returns members
        that are new or whose endpoints, rack or leaving changed (to (re)connect)."""
        now = self.clock()
        now_ms = self.wall()
        added = []
        peers = self.peers
        for m in members:
            p = peers.get(m.id)
            moved = False  # (a known member's endpoints or rack changed)
            if p is None:
                why = validate_member(m, now_ms)
            else:
                was = p.member
                if (m.incarnation, m.heartbeat) <= (was.incarnation, was.heartbeat):
                    continue  # nothing newer (most relayed records): dropped unvalidated
                # a beat of a known member: its names were validated when first taken
                moved = m.listen != was.listen or m.gossip != was.gossip or m.rack != was.rack
                why = validate_member(m, now_ms) if moved else validate_clock(m, now_ms)
            if why:
                self._refuse(via, m, why)
                continue
            if m.id == self.me.id:
                if m.incarnation > self.me.incarnation and not self._later_life(m, now):
                    # someone remembers a later life of ours: jump past it (bounded above)
                    self.me.incarnation = m.incarnation + 1
                continue
            first_hand = via is TRUSTED or via == m.id
            if p is None:
                if first_hand:
                    if len(self.peers) + 1 >= self.max_members:
                        self._refuse(via, m, f"member cap {self.max_members} reached")
                        continue
                    self.candidates.pop(m.id, None)
                    self.peers[m.id] = _Peer(copy_member(m), now)
                    added.append(m)
                else:
                    self._candidate(via, m, now)
                continue
            old = p.member
            if not first_hand:
                # a relay may only say that a member that is down here lives again (a new
                # incarnation), and where: it stays down until its own gossip is heard there.
                # At the same address too: a node that left and was started again on an empty
                # data dir, on the same host, was heard by the seed it joined through only; a
                # member whose link to its old life had closed kept it down, so it kept hints
                # for it that were never delivered (simulate.py --scenario membership-rejoin
                # --seed 623 with faults: acknowledged N=1 writes read back lost)
                if m.incarnation > old.incarnation and not m.leaving and not self.is_up(m.id):
                    self._candidate(via, m, now)
                continue
            if moved or m.leaving != old.leaving:
                added.append(m)  # endpoints moved: reconnect
            if m.incarnation == old.incarnation:
                gap = now - p.last_beat
                # a silence long enough to have made it suspect (frozen, cut off) ends here:
                # it is not a sample of how often this peer beats. Learning it would slow
                # the next detection (one 2 s gap among 30 samples of 0.2 s raises the
                # suspicion time from 1.4 s to 1.9 s); Cassandra's detector likewise drops
                # intervals over its MAX_INTERVAL.
                if self._phi_after(p, gap) <= self.phi_suspect:
                    p.intervals.append(gap)
                    p.mean = None
            else:
                p.intervals.clear()
                p.mean = None
            p.member = copy_member(m)
            p.last_beat = now
            p.strikes = 0
            p.stopped = False
            self.candidates.pop(m.id, None)
            if self._unreachable and m.id in self._unreachable:
                self._unreachable = None  # it is back: route to it again at once
        if added:
            self.version += 1
        return added

    def _candidate(self, via, m: Member, now: float) -> None:
        have = self.candidates.get(m.id)
        if have is not None and (m.incarnation, m.heartbeat) <= (have[0].incarnation,
                                                                 have[0].heartbeat):
            return
        if have is None and len(self.candidates) >= MAX_CANDIDATES:
            self._refuse(via, m, f"{MAX_CANDIDATES} candidates already waiting to be heard")
            return
        rec = copy_member(m)
        rec.leaving = False  # leaving is taken first-hand only
        self.candidates[m.id] = (rec, now + CANDIDATE_TTL)

    def take_candidates(self) -> list[Member]:
        """Candidates to subscribe to (each returned once per record change)."""
        out = []
        for cid, (rec, until) in self.candidates.items():
            if until > 0:
                out.append(rec)
                self.candidates[cid] = (rec, -until)  # negative: handed out, expires at -until
        return out

    def expire_candidates(self) -> list[str]:
        """Candidates never heard within CANDIDATE_TTL: forgotten; returns their ids."""
        now = self.clock()
        gone = [cid for cid, (_, until) in self.candidates.items() if abs(until) <= now]
        for cid in gone:
            del self.candidates[cid]
        return gone

    def admit(self, m: Member) -> str | None:
        """A Join from `m.id` itself: None if it may join (or rejoin), else the reason."""
        why = validate_member(m, self.wall())
        if why:
            return why
        if m.id == self.me.id:
            return f"node id {m.id} is this node's own id"
        p = self.peers.get(m.id)
        if p is None:
            if len(self.peers) + 1 >= self.max_members:
                return f"the cluster has reached its cap of {self.max_members} members"
            return None
        old = p.member
        if (m.listen, m.gossip) != (old.listen, old.gossip) and self.is_up(m.id):
            return (f"node id {m.id} is already in the cluster at {old.listen} and up; "
                    f"refusing a join from {m.listen} (stop it first, or pick another id)")
        return None

    def forget(self, node_id: str) -> None:
        """Drop a member that left the cluster (it is no longer gossiped or saved)."""
        if self.peers.pop(node_id, None) is not None:
            self.version += 1
            self._unreachable = None

    def suspect(self, node_id: str, reason: str) -> None:
        """A request to `node_id` timed out: raise suspicion until its next heartbeat."""
        p = self.peers.get(node_id)
        if p is not None:
            p.strikes += 1
            p.reason = reason
            self._unreachable = None

    # ---- failure detection --------------------------------------------------------------
    def stopped(self, node_id: str) -> None:
        """`node_id` said, first-hand, that it is stopping (a clean shutdown): it is down until
        a later heartbeat of its own (a restart's new incarnation) is heard."""
        p = self.peers.get(node_id)
        if p is not None and not p.stopped:
            p.stopped = True
            self._unreachable = None

    def stood_still(self, gap: float) -> None:
        """This node's own process stood still for `gap` seconds (NodeCore._resumed): the
        heartbeats it did not hear meanwhile were not its peers' silence. Each peer's last
        heartbeat moves forward by the gap, so none is found down (or suspect) for it, as
        Cassandra's detector ignores a local pause; one that did die meanwhile is found down
        `down_after` later, as if it had died now."""
        for p in self.peers.values():
            p.last_beat += gap
        self._unreachable = None

    def _phi_after(self, p: _Peer, elapsed: float) -> float:
        mean = p.mean
        if mean is None:  # (the sum of up to 100 samples, once per change of them)
            mean = sum(p.intervals) / len(p.intervals) if p.intervals else self.gossip_interval
            p.mean = mean = max(mean, self.gossip_interval / 2)
        return elapsed / mean * LOG10_E

    def state(self, node_id: str) -> tuple[str, str]:
        """("up" | "suspect" | "down", reason)."""
        if node_id == self.me.id:
            return "up", ""
        p = self.peers.get(node_id)
        if p is None:
            return "down", "unknown member"
        if p.stopped:
            return "down", SHUT_DOWN
        now = self.clock()
        elapsed = now - p.last_beat
        phi = self._phi_after(p, elapsed)
        if elapsed > self.down_after or phi > self.phi_down:
            if now - p.refused_at < self.down_after:
                why = p.refused_why
                if "clock" in why or "implausible" in why:
                    why += f" (clocks over {MAX_SKEW_MS // 1000} s apart? check NTP on both)"
                return "down", f"its own records are refused here: {why}"
            return "down", f"no heartbeat for {elapsed:.1f}s (phi {phi:.1f})"
        if p.strikes >= 3:
            return "down", f"{p.strikes} request timeouts ({p.reason})"
        if phi > self.phi_suspect or p.strikes:
            why = f"phi {phi:.1f}" if phi > self.phi_suspect else f"request timeout ({p.reason})"
            return "suspect", why
        return "up", ""

    def is_up(self, node_id: str) -> bool:
        return self.state(node_id)[0] != "down"

    def clock_refused(self) -> list[str]:
        """The peers whose own records were refused here within `down_after` for their
        counters running ahead of this node's wall clock (`validate_clock`): when most peers
        are, the clock most likely wrong is this node's (/readyz says so, health.py)."""
        now = self.clock()
        return sorted(nid for nid, p in self.peers.items()
                      if now - p.refused_at < self.down_after
                      and ("clock" in p.refused_why or "implausible" in p.refused_why))

    def down(self) -> set[str]:
        return {nid for nid in self.peers if not self.is_up(nid)}

    def unreachable(self) -> frozenset[str]:
        """Down or suspect: what a coordinator routes around (sloppy quorum) right now.

        Asked on every request, so cached for UNREACHABLE_TTL seconds (a fraction of the gossip
        interval); suspicion from a request timeout invalidates it at once."""
        now = self.clock()
        if self._unreachable is None or now - self._unreachable_at > self.gossip_interval / 4:
            states = {nid: self.state(nid)[0] for nid in self.peers}
            self._unreachable = frozenset(nid for nid, s in states.items() if s != "up")
            self._convicted = frozenset(nid for nid, s in states.items() if s == "down")
            self._unreachable_at = now
        return self._unreachable

    def convicted(self) -> frozenset[str]:
        """The down ones of unreachable() (suspects left out), from the same cached verdicts:
        what a coordinator routes around when routing around the suspects too leaves fewer
        nodes than its quorum (core.py)."""
        self.unreachable()
        return self._convicted

    # ---- ring ---------------------------------------------------------------------------
    def rings(self, n: int | None = None) -> own.Rings | None:
        """The current and next rings of the cluster state with N = `n` (None: the
        cluster's N; a namespace passes its own), None before there is a state."""
        st = self.cluster
        if st is None:
            return None
        n = self.settings["n"] if n is None else n
        got = self._state_rings.get(n)
        if got is None or got.state is not st or got.current.q != self.settings["q"]:
            got = self._state_rings[n] = own.Rings(st, self.settings["q"], n)
        return got

    def ring(self, n: int | None = None) -> Ring:
        """The current ring (reads, W-counting writes) with N = `n` (None: the cluster's N;
        a namespace passes its own, issue 15); asked per request, rebuilt only on change, one
        cached per N. Every ring lookup goes through here."""
        st = self.cluster
        if st is not None:  # `rings(n).current`, its cached case inline (asked per request)
            got = self._state_rings.get(self.settings["n"] if n is None else n)
            if got is not None and got.state is st and got.current.q == self.settings["q"]:
                return got.current
        rings = self.rings(n)
        if rings is not None:
            return rings.current
        n = self.settings["n"] if n is None else n
        stamp = (self.version, self.settings["q"], n)
        cached = self._rings.get(n)
        if cached is None or cached[0] != stamp:
            key = tuple(sorted((m.id, m.rack) for m in self.table() if not m.leaving))
            ring = (cached[2] if cached is not None and cached[1] == key
                    and cached[2].q == self.settings["q"] else
                    Ring(key, q=self.settings["q"], n=n))
            self._rings[n] = cached = (stamp, key, ring)
        return cached[2]


def copy_member(m: Member) -> Member:
    """A private copy (records are mutable structs; tables never share them): every field,
    copied by msgspec in C (per beat heard)."""
    return msgspec.structs.replace(m)


def check_founding(data_dir: str, seeds, new_cluster: bool) -> str | None:
    """Why a node must not start on this data dir (None: it may).

    A cluster.json that is damaged (`read_cluster`: it does not parse, is not an object, or
    fails its checksum) with no good earlier copy refuses every start, with --seed and
    --new-cluster too: only a member (or a node joining one) writes the file, so the node was
    one, and what it held (members, ring, N/R/W, the id its dots go under) is lost. A zero-
    filled or truncated file on a data dir without data used to found a new cluster without a
    word (or, with --seed, join as a node the cluster never saw); the operator restores the
    file, or removes it to rejoin through --seed.

    Without --seed: its data dir holds data (segments) but no cluster state. It was a member
    whose cluster.json was lost: founding a one-node cluster served clients from it, at R=2
    every read failed, and a W=1 write acknowledged there never reached the members (an
    outside durability run). `new_cluster` (--new-cluster): found one anyway (a cluster
    rebuilt from backups)."""
    path = os.path.join(data_dir, "cluster.json")
    doc, damage = read_cluster(path)
    if damage:
        what = ("cannot be trusted" if damage == MISMATCH else "cannot be read")
        return (f"{path} is damaged: {damage}, and no good earlier copy ({path}{PREVIOUS}) is "
                f"left, so the cluster state it held (members, ring, N/R/W) {what}; this node "
                "was a member of a cluster (or joining one): restore cluster.json from a backup, "
                f"or remove it (rm {path}) and start the node with --seed LISTEN of a running "
                "member to rejoin that cluster under its id (it keeps its data and refills what "
                "it lacks), or with --new-cluster to found a new cluster with this data")
    if seeds or new_cluster:
        return None
    rejoin = ("Start it with --seed LISTEN of a running member to rejoin that cluster under its "
              "id (it keeps its data and refills what it lacks), or restore cluster.json from a "
              "backup; to found a new cluster with this data, start it with --new-cluster")
    data = os.path.join(data_dir, "data")
    try:
        held = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
                   if f.startswith("seg-") and f.endswith(".data"))
    except OSError:
        return None  # (no data store yet: a new node)
    if not held or doc.get("cluster"):
        return None
    # (readable, with no cluster state: a version before cluster states wrote it, older than
    # the oldest a rolling upgrade to this one supports, README "Upgrading")
    state = ("holds no cluster state (a copy written while it was joining, or an older zkv "
             "wrote it, one a rolling upgrade to this version does not support: README, "
             "Upgrading)" if doc else "is missing")
    return (f"{data_dir} holds data ({held} bytes of segments) but its cluster state ({path}) "
            f"{state}: this node was a member of a cluster. {rejoin}")


def check_advertised_seed(cfg, saved: dict, new_cluster: bool) -> str | None:
    """Why a new node must not found a cluster of its own because its only seeds are its
    --advertise address (None: it may). A seed that is the node itself is dropped (a seed list
    shared by every node names it too), and a node left with no seed founds a cluster. When
    --advertise differs from a specific --listen, that address may be another machine's: an
    --advertise copied from the seed's own config made a node found a separate one-node
    cluster under another node's address, without a word, and its clients' writes went there
    (an outside run). A founder behind NAT (--advertise its public address, seeded by itself)
    starts without --seed, or with --new-cluster."""
    if new_cluster or not cfg.seed or saved.get("cluster") or cfg.advertise is None:
        return None
    from zkv.config import is_wildcard

    if cfg.advertise == cfg.listen or is_wildcard(cfg.listen) or cfg.advertise not in cfg.seed:
        return None
    if any(s not in (cfg.listen, cfg.advertised_listen) for s in cfg.seed):
        return None  # (another seed is left: it joins through that)
    return (f"--advertise {cfg.advertise} is this node's only --seed, but the node binds "
            f"{cfg.listen}: it would found a new cluster of its own under that address. "
            "--advertise must be the address peers and clients reach THIS node at; to join a "
            "cluster, --seed names a running member; to found a new cluster here, start "
            "without --seed (or with --new-cluster)")


def cluster_checksum(doc: dict) -> str:
    """cluster.json's "checksum": BLAKE3 of the canonical JSON (keys sorted, no spaces, ASCII)
    of every other field of `doc`, as `json.load` gives the file back."""
    body = {k: v for k, v in doc.items() if k != CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "blake3:" + blake3.blake3(text.encode()).hexdigest()


def load_cluster(path: str) -> dict:
    """The saved cluster document ({} when there is none or it cannot be read or trusted:
    `read_cluster`)."""
    return read_cluster(path)[0]


def read_cluster(path: str) -> tuple[dict, str]:
    """The saved cluster document and "", or {} and why the file is damaged ({} and "" when
    there is none). Damaged: it does not parse, or is not a JSON object, or fails its
    checksum (MISMATCH; a file without one, of an older version, is not checked), or holds a
    checksum under another name (one changed bit of "checksum": unchecked, that file would
    pass). Member rows that are not four strings or fail validation are dropped (a file
    written by an older version could hold poisoned records; they must not stop the node from
    starting). The "checksum" field is not part of the document returned.

    A damaged file whose earlier copy (PREVIOUS, kept by `save_cluster`) is good gives that
    copy, with a warning, and the copy is put back in its place: the saves of a running node
    are not synced, and a power loss can leave the last one renamed over the file while its
    bytes never reached the disk (an empty or zero-filled file); the state before it is what
    gossip then brings up to date, as for a save lost whole."""
    doc, damage = _read_one(path)
    if doc is None:
        return {}, ""
    if not damage:
        return doc, ""
    older, hurt = _read_one(path + PREVIOUS)
    if older is None or hurt:
        log.error("%s is damaged: %s; no good earlier copy (%s%s) is left, so the node refuses "
                  "to start: restore the file from a backup, or remove it and start the node "
                  "with --seed of a running member to rejoin that cluster", path, damage, path,
                  PREVIOUS)
        return {}, damage
    log.warning("%s is damaged: %s; starting from the copy saved before its last write, %s%s "
                "(what changed since comes back by gossip)", path, damage, path, PREVIOUS)
    _put_back(path)
    return older, ""


def _read_one(path: str) -> tuple[dict | None, str]:
    """One file of `read_cluster`: (None, "") when there is none."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return {}, f"unreadable: {exc}"
    if not isinstance(doc, dict):
        return {}, "not a JSON object"
    stated = doc.pop(CHECKSUM, None)
    renamed = stated is None and any(
        type(v) is str and _CHECKSUM_RE.fullmatch(v) for v in doc.values())
    if renamed or (stated is not None and stated != cluster_checksum(doc)):
        return {}, MISMATCH
    return _checked(path, doc), ""


def _put_back(path: str) -> None:
    """Copy the good earlier copy over a damaged cluster.json, synced (temp file + rename): the
    next save keeps the file it replaces as the earlier copy, which must not be the damaged
    one. A copy that fails (a full disk) leaves `path` damaged: the saves keep the earlier
    copy as it is until one of them replaced it (_DAMAGED)."""
    tmp = path + ".tmp"
    try:
        with open(path + PREVIOUS, "rb") as src:
            raw = src.read()
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        discard_tmp(tmp)
        _DAMAGED.add(os.path.abspath(path))
        log.warning("could not put %s%s back in place of %s: %s", path, PREVIOUS, path, exc)


def _checked(path: str, doc: dict) -> dict:
    """`doc` with the member rows, features, intents and seeds that fail validation dropped."""
    rows = doc.get("members")
    good = []
    for row in rows if isinstance(rows, list) else []:
        if (isinstance(row, list) and len(row) == 4 and all(type(x) is str for x in row)
                and validate_member(Member(row[0], row[1], row[2], row[3], 0, 0)) is None):
            good.append(row)
        else:
            log.warning("%s: dropping an invalid member record %s", path, clip(row, 120))
    doc["members"] = good[:MAX_MEMBERS]
    features = doc.get("features")
    if features is not None:
        ids = {row[0] for row in doc["members"]}
        kept = {k: v for k, v in features.items() if k in ids and type(v) is int
                and 0 <= v <= MAX_COUNTER} if isinstance(features, dict) else {}
        if not isinstance(features, dict) or len(kept) != len(features):
            log.warning("%s: ignoring invalid member features %s", path, clip(features, 120))
        doc["features"] = kept
    intents = doc.get("intents")
    if intents is not None and not _intents_ok(intents):
        log.warning("%s: ignoring an invalid list of watched changes %s", path,
                    clip(intents, 120))
        del doc["intents"]
    seeds = doc.get("joining")
    if seeds is not None:
        ok = isinstance(seeds, list) and 0 < len(seeds) <= MAX_MEMBERS and all(
            type(x) is str and _endpoint_ok(x) for x in seeds)
        if not ok:
            log.warning("%s: ignoring an invalid list of join seeds %s", path, clip(seeds, 120))
            del doc["joining"]
    return doc


def _intents_ok(intents) -> bool:
    """cluster.json's "intents": at most MAX_INTENTS [action, node, other, epoch, committed]
    rows of an operator's leave, replace or force-remove, or a change of a commit (rows of
    four: an older version's, not committed; a join is watched only committed)."""
    return isinstance(intents, list) and len(intents) <= MAX_INTENTS and all(
        isinstance(row, list) and len(row) in (4, 5) and row[4:] in ([], [True], [False])
        and row[0] in own.ACTIONS and (row[0] != "join" or row[4:] == [True])
        and type(row[1]) is str and NODE_ID_RE.match(row[1]) is not None
        and type(row[2]) is str and (row[2] == "" or NODE_ID_RE.match(row[2]) is not None)
        and type(row[3]) is int and 0 <= row[3] <= MAX_COUNTER for row in intents)


def _endpoint_ok(endpoint: str) -> bool:
    try:
        parse_endpoint(endpoint)
    except ValueError:
        return False
    return True


def cluster_doc(membership: Membership, namespaces: list | None = None,
                dots: list | None = None, joining: list[str] | None = None,
                unsettled: list[str] | None = None, fresh: list | None = None,
                intents: list | None = None) -> dict:
    """cluster.json's content: settings, the other members, the namespace registry (issue 15:
    a list of dicts, `Registry.to_builtins()`; validated on load by the node), the id this
    node's dots go under (`dots`: [id, since], replica.py), while its join has not completed,
    the seeds it joins through (`joining`: a start without --seed joins through them again)
    and, until the last change settled and this node verified what it gained, the states
    before it (`unsettled`: hex of each, oldest first) and the partitions still unverified
    (`fresh`: [N, p] pairs; both NodeCore._restore_unsettled). Only member records that pass
    validation are written; `features` keeps the FEATURE_* bits each member last gossiped (a
    separate key: a member row stays four strings, as older versions read it), so a node
    restarted while a member is down still knows what that member's version serves;
    `intents`: the membership changes this node made as the claimant and still watches
    ([action, node, other, epoch, committed], NodeCore.Intent: a claimant restarted after a partition
    healed still makes a lost one again)."""
    me, now_ms = membership.me.id, membership.wall()  # (the simulator's clock is virtual)
    others = [m for m in membership.table() if m.id != me and validate_member(m, now_ms) is None]
    doc: dict[str, object] = {
        "settings": membership.settings,
        "cluster": own.encode(membership.cluster).hex() if membership.cluster else None,
        "members": [[m.id, m.listen, m.gossip, m.rack] for m in others],
        "features": {m.id: m.features for m in others if m.features},
    }
    if namespaces is not None:
        doc["namespaces"] = namespaces
    if dots is not None:
        doc["dots"] = dots
    if joining:
        doc["joining"] = joining
    if unsettled:
        doc["unsettled"] = unsettled
    if fresh:
        doc["fresh"] = fresh
    if intents:
        doc["intents"] = intents
    return doc


def save_cluster(path: str, doc: dict, durable: bool = False) -> None:
    """Write `doc` (`cluster_doc`) to `path` atomically (temp file + rename), with its
    checksum (`cluster_checksum`, of the document as a load gives it back: lists, string
    keys). `durable`: the file's bytes and the rename are on disk (fsync of both, then of the
    directory) before this returns, so a power loss right after cannot bring back the file
    before it, or an empty one (a rename is not ordered after the data it renames on every
    file system)."""
    body = json.loads(json.dumps(doc))
    body.pop(CHECKSUM, None)
    body[CHECKSUM] = cluster_checksum(body)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(body, fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        _keep_previous(path)
        os.replace(tmp, path)
    except OSError:
        discard_tmp(tmp)
        raise
    _DAMAGED.discard(os.path.abspath(path))
    if durable:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def _keep_previous(path: str) -> None:
    """Keep the file a save is about to replace as `path` + PREVIOUS (a hard link: no copy),
    unless it is known damaged (_DAMAGED: the earlier copy stays). Best effort: a file system
    without hard links keeps none, and a damaged cluster.json then refuses the start."""
    if os.path.abspath(path) in _DAMAGED:
        return
    prev = path + PREVIOUS
    try:
        os.unlink(prev)
    except OSError:
        pass
    try:
        os.link(path, prev)
    except OSError:
        pass  # (no file yet, or no hard links here)


def discard_tmp(tmp: str) -> None:
    """Remove the temp file of a write that failed (a full disk left empty .tmp files)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass
