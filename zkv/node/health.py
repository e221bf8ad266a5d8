"""Readiness and gossip convergence of one node, as pure bookkeeping (no sockets, no clock).

/readyz (DESIGN.md 2.7) answers 200 when the node has joined, agrees with every peer it sees
up on the ring, has no partition pending transfer to it, its wall clock is not behind most
of its peers', and the peers it hears hear it too (reach.py: an --advertise nobody can dial);
else 503 with the reason. A clock behind its peers' by more than the skew bound
(membership.MAX_SKEW_MS) refuses their records, so they are down here: the node still took
requests and said only that its peers were down (an outside run stepped a clock back 90 s).
When more than half the known peers (two at least) are refused so, the clock at fault is
most likely this node's (one peer's clock running ahead refuses that peer alone). The
state is computed on the reactor thread (`Health.update`, each gossip tick) and only read by
the HTTP thread (`Health.ready`), so the HTTP thread never walks live node structures.

Gossip convergence time: when this node's ring changes (a member joined, left or moved) a
clock starts; it stops when every up peer gossips the same ring fingerprint. That interval is
how long the change took to reach every node, as seen from here (each node measures its own;
the cluster's figure is the maximum over nodes).
"""

from __future__ import annotations

from collections.abc import Iterable

from zkv.node.snapshots import span


def clock_behind(clock_refused: list[str], peers: int) -> bool:
    """This node's clock is most likely the wrong one: more than half of its `peers` known
    peers, and two at least, have their records refused as ahead of it (`clock_refused`).
    (With one peer there is no telling whose clock is wrong: the one behind is not named.)"""
    return len(clock_refused) >= 2 and 2 * len(clock_refused) > peers


CLOCK_SKEW_MS = 10_000  # a wall clock this far from most peers' is named, and not ready
AHEAD = "ahead of its peers'"  # (the end of clock_skew's answer for a clock ahead)


def clock_skew(offsets: Iterable[int], limit_ms: int = CLOCK_SKEW_MS) -> str | None:
    """How this node's wall clock stands against its peers' (`offsets`: each heard peer's
    clock minus ours, ms), when more than half of them, and two at least, put it more than
    `limit_ms` off on one side: "12 s behind its peers'" or "1.0 h ahead of its peers'";
    None otherwise. (With one peer there is no telling whose clock is wrong.) A peer's
    offset is the largest of its recent ones: a message that waited makes it look behind,
    never ahead."""
    got = sorted(offsets)
    if len(got) < 2:
        return None
    median = got[len(got) // 2]
    behind = sum(1 for x in got if x > limit_ms)  # (their clocks ahead of ours)
    ahead = sum(1 for x in got if x < -limit_ms)
    if 2 * behind > len(got):
        return f"{span(median / 1000)} behind its peers'"
    if 2 * ahead > len(got):
        return f"{span(-median / 1000)} {AHEAD}"
    return None


def readiness(*, joined: bool, fingerprint: bytes, peer_fingerprints: dict[str, bytes],
              up_peers: Iterable[str], pending_in: int, clock_refused: list[str] | None = None,
              peers: int = 0, skew: str | None = None,
              unreached: str | None = None) -> tuple[bool, dict]:
    """(ready, reason): the pure rule behind /readyz. `unreached`: why the peers cannot
    reach this node (reach.py), None while they hear it."""
    up = sorted(up_peers)
    unheard = [p for p in up if p not in peer_fingerprints]
    disagree = [p for p in up if p in peer_fingerprints and peer_fingerprints[p] != fingerprint]
    agreed = not unheard and not disagree
    reason = {
        "joined": joined,
        "ring_agreed": agreed,
        "ring": fingerprint.hex()[:12],
        "peers_disagreeing": disagree,
        "peers_not_heard": unheard,
        "pending_transfers_in": pending_in,
    }
    behind = clock_behind(clock_refused or [], peers)
    if clock_refused:
        reason["peers_refused_as_ahead_of_clock"] = list(clock_refused)
    if behind:
        reason["clock_behind_peers"] = True
    if skew:
        reason["clock_skewed"] = skew
    if unreached:
        reason["unreached_by_peers"] = unreached
    ready = joined and agreed and pending_in == 0 and not behind and not skew and not unreached
    return ready, reason


class Health:
    def __init__(self) -> None:
        self.peer_fingerprints: dict[str, bytes] = {}
        self.fingerprint = b""
        self.changed_at: float | None = None  # when our ring last changed, until all agree
        self._state: tuple[bool, dict] = (False, {"joined": False, "reason": "starting"})

    def on_gossip(self, sender: str, fingerprint: bytes) -> None:
        self.peer_fingerprints[sender] = fingerprint

    def update(self, *, fingerprint: bytes, up_peers: Iterable[str], now: float,
               joined: bool = True, pending_in: int = 0, clock_refused: list[str] | None = None,
               peers: int = 0, skew: str | None = None,
               unreached: str | None = None) -> tuple[bool, float | None]:
        """Recompute readiness; returns (ring changed here, convergence seconds or None).

        The convergence time is returned once, when the last up peer catches up."""
        up = list(up_peers)
        rebalanced = bool(self.fingerprint) and fingerprint != self.fingerprint  # not the first
        if rebalanced:
            self.changed_at = now
        self.fingerprint = fingerprint
        state = readiness(joined=joined, fingerprint=fingerprint,
                          peer_fingerprints=self.peer_fingerprints, up_peers=up,
                          pending_in=pending_in, clock_refused=clock_refused, peers=peers,
                          skew=skew, unreached=unreached)
        self._state = state
        converged = None
        if self.changed_at is not None and state[1]["ring_agreed"]:
            converged = max(0.0, now - self.changed_at)
            self.changed_at = None
        return rebalanced, converged

    def ready(self) -> tuple[bool, dict]:
        """The /readyz callback: the state as of the last update (safe from any thread)."""
        return self._state
