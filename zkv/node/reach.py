"""Reach: whether the peers can reach this node, judged from what their gossip says of it.

A node whose advertised addresses (--advertise, --advertise-gossip) nobody can dial still
works from its own side: it connects out to its peers, subscribes to their gossip, joins
through a seed and pulls partitions. Its peers dial it at the addresses it advertises, hear
none of its gossip, and hold it down for good: transfers to it queue and hints for it pile
up. Its own log said it had joined, and nothing more (an outside deployer's run, a typo in
--advertise: 62 transfers queued for over 60 s).

What this node knows of its peers' view of it is its own member record as their gossip
relays it. A peer's table holds the highest heartbeat of this node's that it heard
first-hand (membership.py: only this node's own gossip or its Join sets it; relays cannot),
and every peer gossips its whole table every few rounds (core.TABLE_EVERY). So while peers
hear this node, the heartbeat of its current incarnation that their tables show trails its
own by a few rounds; when none hears it, the heartbeat they show stays where its Join (or
its previous life) left it. `Reach` keeps, per peer whose gossip is heard here, the
heartbeat its last table showed (-1: an older life, other addresses, or no record of this
node in a whole table), and calls this node unreached when every peer heard within the
last `rounds` gossip rounds shows one more than `rounds` behind, and that lasted `rounds`
rounds more (right after a partition heals, the first tables heard are from before it;
after a join or a restart, the peers' tables take a round or two to catch up). Counted in
this node's rounds (beats), not seconds: a process that stood still does not beat either,
so a stall is no false alarm. It never fires on a node that hears no peer (alone in its
cluster, or cut off from everyone: nothing is known of their view then), nor while any
heard peer shows a fresh heartbeat.

That misses a wrong --advertise whose --advertise-gossip is right: the peers hear this
node's gossip and hold it up, while every request they send it is lost (their writes,
exchanges and transfers to it time out). Only the peers see that, so each peer keeps, per
member, since when its requests to it have gone unanswered (`timed_out`: an op timed out
waiting for it; `answered`: any reply from it, late ones too), and gossips the members that
answered none for `rounds` of its rounds while their heartbeats still come in
(`unanswered`: a member down is not listed). This node reads itself in those lists (`told`)
and says so when more than half of the peers it heard lately list it: a node overloaded or
paused answers late or beats late, so it is not listed. A peer that gets no answer from
more than half of the up members it asks lists none of them: the fault is then most likely
its own (its outgoing requests are lost: an outbound firewall), and with "at least half" one
such node, or one buggy peer, made both healthy members of a 3-node cluster unready while
it stayed ready (a review: real processes, iptables). Two members cannot tell whose fault it
is, so a 2-node cluster never says it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from zkv.wire import Member

REACH_ROUNDS = 40  # rounds a heartbeat may trail, and then stay stale (8 s each at 0.2 s)
REACH_LOG_EVERY = 60.0  # seconds between the ERROR lines while it lasts
STALE = -1  # the heartbeat noted for a table that shows no current record of this node


class Reach:
    def __init__(self) -> None:
        # peer -> (when its table was heard, this node's heartbeat it showed or STALE)
        self.shown: dict[str, tuple[float, int]] = {}
        # this node's heartbeat when every heard peer first showed a stale one (None: some
        # peer shows a fresh one, or none is heard): it must stay so for `rounds` more
        self.stale_from: int | None = None
        self.problem: str | None = None  # why peers cannot reach this node (None: they can)
        self.unreached_at = 0.0  # since when (about) no heard peer showed a fresh heartbeat
        self.next_log = 0.0
        # peer -> (when its gossip was heard, whether it listed this node as unanswered)
        self.listed: dict[str, tuple[float, bool]] = {}
        # (this node as a peer of others) member -> when its requests began to go unanswered
        self.unanswered_since: dict[str, float] = {}

    def timed_out(self, peer: str, now: float) -> None:
        """A request to `peer` went unanswered past its op's deadline."""
        self.unanswered_since.setdefault(peer, now)

    def answered(self, peer: str) -> None:
        """A reply came from `peer` (to any request, however late)."""
        if self.unanswered_since:
            self.unanswered_since.pop(peer, None)

    def unanswered(self, now: float, window: float, up: Callable[[str], bool],
                   peers: Iterable[str]) -> list[str]:
        """The members this node's requests got no answer from for `window` seconds while
        they are up (their heartbeats heard): gossiped (Gossip.unanswered). None when that
        is more than half of its up `peers` (its own requests are lost, most likely)."""
        if not self.unanswered_since:
            return []
        for p in [p for p in self.unanswered_since if not up(p)]:
            del self.unanswered_since[p]  # (down: the failure detector says it; a fresh start)
        out = sorted(p for p, t in self.unanswered_since.items() if now - t >= window)
        if out and 2 * len(out) > sum(1 for p in peers if up(p)):
            return []
        return out

    def told(self, peer: str, now: float, me: str, unanswered: Iterable[str]) -> None:
        """`peer`'s gossip listed (or not) this node among the members it gets no answer
        from."""
        self.listed[peer] = (now, me in unanswered)

    def heard(self, peer: str, now: float, me: Member, members: Iterable[Member],
              whole: bool) -> None:
        """A table `peer` gossiped (`whole`: its whole table, not a delta of a few records)."""
        for m in members:
            if m.id == me.id:
                current = (m.incarnation == me.incarnation and m.listen == me.listen
                           and m.gossip == me.gossip)
                self.shown[peer] = (now, m.heartbeat if current else STALE)
                return
        if whole:
            self.shown[peer] = (now, STALE)

    def check(self, now: float, me: Member, interval: float, rounds: int,
              members: Iterable[str]) -> tuple[bool, str | None]:
        """Once per gossip round of a member: (changed, `problem`). `rounds`: how far a
        heartbeat shown may trail this node's before it is stale; `members`: the peers in
        the table now."""
        known = set(members)
        window = rounds * interval
        heard = {p: b for p, (t, b) in self.shown.items() if p in known and now - t <= window}
        for p in [p for p in self.shown if p not in known]:
            del self.shown[p]
        floor = me.heartbeat - rounds
        stale = bool(heard) and all(b < floor for b in heard.values())
        if not stale:
            self.stale_from = None
        elif self.stale_from is None:
            # (stale: nothing fresh shown for `rounds` rounds before now already)
            self.stale_from, self.unreached_at = me.heartbeat, now - window
        if self.stale_from is None or me.heartbeat - self.stale_from < rounds:
            return self._requests(now, me, window, known)
        best = max(heard.values())
        shown = (f"heartbeat {best} of this life at best, {me.heartbeat - best} rounds behind "
                 f"its own {me.heartbeat}" if best >= 0 else "no heartbeat of this life")
        names = ", ".join(sorted(heard)[:8]) + (" ..." if len(heard) > 8 else "")
        changed = self.problem is None
        self.problem = (
            f"peers cannot reach this node at its advertised addresses {me.listen} (requests) "
            f"and {me.gossip} (gossip): the gossip of the {len(heard)} peer(s) it hears "
            f"({names}) shows {shown}, so they hold it down (transfers to it wait, hints for "
            f"it pile up). Check --advertise / --advertise-gossip (the addresses peers dial) "
            f"and the firewalls between the peers and this node")
        return changed, self.problem

    def due_log(self, now: float) -> bool:
        """Whether the ERROR line is due now (at the start, then every REACH_LOG_EVERY)."""
        if self.problem is None or now < self.next_log:
            return False
        self.next_log = now + REACH_LOG_EVERY
        return True

    def _requests(self, now: float, me: Member, window: float, known: set[str]
                  ) -> tuple[bool, str | None]:
        """`check` once the peers hear this node's gossip: whether they get answers to their
        requests (more than half of the peers heard in `window` list it: the problem)."""
        for p in [p for p in self.listed if p not in known]:
            del self.listed[p]
        heard = [p for p, (t, _) in self.listed.items() if now - t <= window]
        listing = sorted(p for p in heard if self.listed[p][1])
        if not listing or 2 * len(listing) <= len(heard):
            changed = self.problem is not None
            self.problem = None
            return changed, None
        names = ", ".join(listing[:8]) + (" ..." if len(listing) > 8 else "")
        changed = self.problem is None
        if changed:
            self.unreached_at = now - window
        self.problem = (
            f"peers cannot reach this node at its advertised address {me.listen} (requests): "
            f"{len(listing)} of the {len(heard)} peer(s) it hears ({names}) hear its gossip at "
            f"{me.gossip} but get no answer to their requests sent to {me.listen}, so their "
            "writes, reads and transfers to it time out. Check --advertise (the address peers "
            "dial for requests) and the firewalls between the peers and this node")
        return changed, self.problem
