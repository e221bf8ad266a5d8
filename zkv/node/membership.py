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

The member table and cluster settings a node saw last are kept in DATA_DIR/cluster.json
(`load_cluster` / `save_cluster`), so a restarted node knows its peers before any gossip.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable

from zkv._core.ring import Ring
from zkv.wire import Member

LOG10_E = math.log10(math.e)
log = logging.getLogger("zkv.membership")


class _Peer:
    __slots__ = ("member", "last_beat", "intervals", "strikes", "reason")

    def __init__(self, member: Member, now: float) -> None:
        self.member = member
        self.last_beat = now
        self.intervals: deque[float] = deque(maxlen=100)
        self.strikes = 0  # request timeouts since the last heartbeat
        self.reason = ""


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
    ) -> None:
        self.me = me
        self.settings = dict(settings)  # q, n, r, w
        self.clock = clock
        self.gossip_interval = gossip_interval
        self.down_after = down_after
        self.phi_suspect = phi_suspect
        self.phi_down = phi_down
        self.peers: dict[str, _Peer] = {}
        self._ring: Ring | None = None
        self._ring_key: tuple | None = None
        self._ring_stamp: tuple | None = None  # (version, q, n) the cached ring was built at
        self.version = 0  # bumps whenever the member set (and so the ring) changes
        self._unreachable: frozenset[str] | None = None
        self._unreachable_at = 0.0

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
    def merge(self, members: list[Member]) -> list[Member]:
        """Fold a gossiped table in; returns members that are new (or came back as new)."""
        now = self.clock()
        added = []
        for m in members:
            if m.id == self.me.id:
                if m.incarnation > self.me.incarnation:
                    # someone remembers a later life of ours: jump past it
                    self.me.incarnation = m.incarnation + 1
                continue
            p = self.peers.get(m.id)
            if p is None:
                self.peers[m.id] = _Peer(_copy(m), now)
                added.append(m)
                continue
            old = p.member
            if (m.incarnation, m.heartbeat) > (old.incarnation, old.heartbeat):
                if (m.listen, m.gossip, m.rack, m.leaving) != (old.listen, old.gossip, old.rack,
                                                               old.leaving):
                    added.append(m)  # endpoints moved: reconnect
                if m.incarnation == old.incarnation:
                    p.intervals.append(now - p.last_beat)
                else:
                    p.intervals.clear()
                p.member = _copy(m)
                p.last_beat = now
                p.strikes = 0
                if self._unreachable and m.id in self._unreachable:
                    self._unreachable = None  # it is back: route to it again at once
        if added:
            self.version += 1
        return added

    def suspect(self, node_id: str, reason: str) -> None:
        """A request to `node_id` timed out: raise suspicion until its next heartbeat."""
        p = self.peers.get(node_id)
        if p is not None:
            p.strikes += 1
            p.reason = reason
            self._unreachable = None

    # ---- failure detection --------------------------------------------------------------
    def phi(self, node_id: str) -> float:
        p = self.peers.get(node_id)
        if p is None:
            return 0.0
        elapsed = self.clock() - p.last_beat
        mean = sum(p.intervals) / len(p.intervals) if p.intervals else self.gossip_interval
        mean = max(mean, self.gossip_interval / 2)
        return elapsed / mean * LOG10_E

    def state(self, node_id: str) -> tuple[str, str]:
        """("up" | "suspect" | "down", reason)."""
        if node_id == self.me.id:
            return "up", ""
        p = self.peers.get(node_id)
        if p is None:
            return "down", "unknown member"
        elapsed = self.clock() - p.last_beat
        phi = self.phi(node_id)
        if elapsed > self.down_after or phi > self.phi_down:
            return "down", f"no heartbeat for {elapsed:.1f}s (phi {phi:.1f})"
        if p.strikes >= 3:
            return "down", f"{p.strikes} request timeouts ({p.reason})"
        if phi > self.phi_suspect or p.strikes:
            why = f"phi {phi:.1f}" if phi > self.phi_suspect else f"request timeout ({p.reason})"
            return "suspect", why
        return "up", ""

    def is_up(self, node_id: str) -> bool:
        return self.state(node_id)[0] != "down"

    def down(self) -> set[str]:
        return {nid for nid in self.peers if not self.is_up(nid)}

    def unreachable(self) -> set[str]:
        """Down or suspect: what a coordinator routes around (sloppy quorum) right now.

        Asked on every request, so cached for UNREACHABLE_TTL seconds (a fraction of the gossip
        interval); suspicion from a request timeout invalidates it at once."""
        now = self.clock()
        if self._unreachable is None or now - self._unreachable_at > self.gossip_interval / 4:
            self._unreachable = frozenset(
                nid for nid in self.peers if self.state(nid)[0] != "up")
            self._unreachable_at = now
        return self._unreachable

    # ---- ring ---------------------------------------------------------------------------
    def ring(self) -> Ring:
        """The ring of the current member set; asked per request, rebuilt only on change."""
        stamp = (self.version, self.settings["q"], self.settings["n"])
        if stamp != self._ring_stamp:
            key = tuple(sorted((m.id, m.rack) for m in self.table() if not m.leaving))
            if key != self._ring_key:
                self._ring = Ring(key, q=self.settings["q"], n=self.settings["n"])
                self._ring_key = key
            self._ring_stamp = stamp
        return self._ring


def _copy(m: Member) -> Member:
    return Member(m.id, m.listen, m.gossip, m.rack, m.incarnation, m.heartbeat, m.leaving)


def load_cluster(path: str) -> dict:
    """The saved cluster document ({} when there is none or it cannot be read)."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return doc if isinstance(doc, dict) else {}


def save_cluster(path: str, membership: Membership) -> None:
    """Write settings and the other members atomically (temp file + rename)."""
    me = membership.me.id
    doc = {
        "settings": membership.settings,
        "members": [[m.id, m.listen, m.gossip, m.rack] for m in membership.table() if m.id != me],
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)
