"""Who owns what, and how ownership changes: the cluster state, staged changes, the plan of
transfers. Pure: no sockets, no clock, no disk (contract: DESIGN.md 2.4, issue 11).

The ring is a pure function of a member set (ring.pyx), so ownership is a pure function of
the *cluster state*, one small document every node holds:

    ClusterState = [epoch, author, members, staged, auto_commit, gone, tokens]
        epoch:   u64, +1 per change the claimant makes (commit, finalize, setting)
        author:  the claimant that made this epoch (ties between two claimants of one epoch
                 during a partition resolve by author id: the higher (epoch, author) wins)
        members: {node id: [status, rack]}, status one of
                 "joining"  a pending owner: receives its partitions, serves no reads yet
                 "valid"    an owner
                 "leaving"  still an owner until its partitions have moved (leave, replace)
                 "removed"  force-removed: down for good; still in the current ring (routed
                            around as down) until its partitions are refilled
        staged:  [[action, node, other], ...] changes not yet committed (auto_commit off)
        auto_commit: bool (default true)
        gone:    {node id: wall-clock ms} when nodes left or were removed; a node whose
                 incarnation (its start time, wall-clock ms) is later, i.e. the operator
                 started it again after that, joins again
        tokens:  {node id: placement token} for members placed by something other than their
                 id (absent in states written before it: every member placed by its id). A
                 replacement inherits the token of the node it replaces, so with the same
                 rack it takes exactly that node's place in every preference list and only
                 that node's partitions move (`zkv cluster replace`). A node joining under an
                 id still in use as a token gets a fresh token ("<id>:<epoch>").

From it, two rings (for the cluster's q and each N in use; members placed by their tokens):
    current = Ring(members with status valid, leaving or removed)   reads and W-counting writes
    next    = Ring(members with status valid or joining)            where ownership is going
When they differ the cluster is *moving*: for every partition p, each node of
next.preflist(p) that is not in current.preflist(p) is a pending owner of p and receives p
(a transfer), from a source in current.preflist(p) (the node losing p first: the one leaving
or replaced, when it is alive). Writes go to current.preflist(p) and, uncounted, to the
pending owners, so a transfer never misses what is written while it runs. When every
pending owner has reported its transfers complete, the claimant finalizes: joining -> valid,
leaving/removed -> gone, epoch + 1; current becomes next everywhere gossip reaches.

The claimant is the lowest id among valid members that are up in this node's view; only it
stages, commits and finalizes. A node not the claimant relays admin requests to it.

A change can be lost: during a partition each side's claimant may make an epoch, and when
they meet the lower (epoch, author) is dropped whole. The claimant that made an operator's
leave, replace or force-remove therefore watches it (`fate`: carried by the state it holds,
done, or lost) and makes it again on the state that won (NodeCore's "intents").

Encoding: msgpack via msgspec (array-like structs), at most MAX_STATE_BYTES, validated on
decode (statuses, ids, ranks, counts) before it is believed.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from zkv._core.ring import Ring
from zkv.config import NODE_ID_RE
from zkv.wire import MAX_MEMBERS, MAX_RACK

JOINING, VALID, LEAVING, REMOVED = "joining", "valid", "leaving", "removed"
STATUSES = (JOINING, VALID, LEAVING, REMOVED)
CURRENT = frozenset({VALID, LEAVING, REMOVED})
NEXT = frozenset({VALID, JOINING})
ACTIONS = ("join", "leave", "replace", "force-remove")
MAX_STATE_BYTES = 256 * 1024
MAX_GONE = 1024
MAX_EPOCH_JUMP = 1_000_000  # an epoch further ahead than this is refused (forged or corrupt)


class ChangeError(ValueError):
    """A staged change refused, with the reason (shown to the operator)."""


class ClusterState(msgspec.Struct, array_like=True):
    epoch: int
    author: str
    members: dict[str, tuple[str, str]]  # id -> (status, rack)
    staged: list[tuple[str, str, str]] = []
    auto_commit: bool = True
    gone: dict[str, int] = {}
    tokens: dict[str, str] = {}  # id -> placement token, only where it is not the id
    # wall ms the cluster was founded at (its identity: every state of it keeps it; 0: a
    # state of a version without it): gossip of a state founded otherwise comes from a node
    # of another cluster at a member's address (NodeCore._foreign)
    founded: int = 0

    def rank(self) -> tuple[int, str]:
        return (self.epoch, self.author)

    def status(self, node_id: str) -> str | None:
        entry = self.members.get(node_id)
        return entry[0] if entry else None

    def ids(self, statuses: frozenset[str]) -> list[str]:
        return sorted(i for i, (s, _) in self.members.items() if s in statuses)

    def token(self, node_id: str) -> str:
        """The token a member is placed by: its id unless it inherited another's."""
        return self.tokens.get(node_id, node_id)

    def moving(self) -> bool:
        return any(s != VALID for s, _ in self.members.values())

    def copy(self) -> ClusterState:
        return msgspec.msgpack.decode(encode(self), type=ClusterState)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ClusterState)


def encode(state: ClusterState) -> bytes:
    return _encoder.encode(state)


def decode(data: bytes) -> ClusterState:
    """A state from the network or disk; ValueError naming what is wrong."""
    if type(data) is not bytes or not data or len(data) > MAX_STATE_BYTES:
        raise ValueError("cluster state missing or too large")
    try:
        st = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise ValueError(f"undecodable cluster state: {str(exc)[:200]}") from None
    why = validate(st)
    if why:
        raise ValueError(why)
    return st


def validate(st: ClusterState) -> str | None:
    if not 0 <= st.epoch < 1 << 63:
        return "bad epoch"
    if st.author and not NODE_ID_RE.match(st.author):
        return "bad author"
    if not st.members or len(st.members) > MAX_MEMBERS or len(st.gone) > MAX_GONE:
        return "bad member count"
    for nid, (status, rack) in st.members.items():
        if not NODE_ID_RE.match(nid):
            return "bad member id"
        if status not in STATUSES:
            return f"bad status for {nid}"
        if not 1 <= len(rack) <= MAX_RACK or not rack.isprintable():
            return f"bad rack for {nid}"
    if not st.ids(CURRENT):
        return "no current owner"
    if len(st.staged) > MAX_MEMBERS or any(a not in ACTIONS for a, _, _ in st.staged):
        return "bad staged change"
    for nid, inc in st.gone.items():
        if not NODE_ID_RE.match(nid) or not 0 <= inc < 1 << 63:
            return "bad gone record"
    if len(st.tokens) > MAX_MEMBERS:
        return "bad token count"
    for nid, tok in st.tokens.items():
        if nid not in st.members or not NODE_ID_RE.match(tok):
            return f"bad token for {nid}"
    for statuses in (CURRENT, NEXT):  # each ring places every member by a distinct token
        ids = st.ids(statuses)
        if len({st.token(i) for i in ids}) != len(ids):
            return "two members share a placement token"
    return None


def founding(me: str, rack: str, members: Iterable[tuple[str, str]] = (),
             founded: int = 0) -> ClusterState:
    """The state of a new cluster (or of one saved by a version without states): every known
    member valid; `founded`: the wall ms it is founded at (0: not a new cluster)."""
    ms = {me: (VALID, rack)}
    for nid, r in members:
        ms[nid] = (VALID, r)
    return ClusterState(1, me, ms, founded=founded)


def newer(a: ClusterState | None, b: ClusterState) -> bool:
    """Is b a later state than a (and plausibly so)?"""
    if a is None:
        return True
    if b.epoch > a.epoch + MAX_EPOCH_JUMP:
        return False
    return b.rank() > a.rank()


# ---- rings --------------------------------------------------------------------------------
class Rings:
    """The current and next rings of one state (built once per state; lookups are O(1))."""

    def __init__(self, st: ClusterState, q: int, n: int) -> None:
        self.state = st
        tokens = st.tokens or None
        cur = [(i, st.members[i][1]) for i in st.ids(CURRENT)]
        self.current = Ring(cur, q=q, n=n, tokens=tokens)
        nxt = [(i, st.members[i][1]) for i in st.ids(NEXT)]
        self.next = Ring(nxt, q=q, n=n, tokens=tokens) if nxt and set(st.ids(NEXT)) != set(
            st.ids(CURRENT)) else self.current
        self.moving = self.next is not self.current
        self._pending: dict[int, tuple[str, ...]] = {}
        self._stray: dict[tuple[int, str], tuple[str, ...] | None] = {}
        if self.moving:
            for p in range(q):
                have = self.current.preflist(p)
                extra = tuple(x for x in self.next.preflist(p) if x not in have)
                if extra:
                    self._pending[p] = extra

    def pending(self, p: int) -> tuple[str, ...]:
        """Pending owners of p (receive writes, serve no reads): () when p is not moving."""
        return self._pending.get(p, ())

    def stray(self, p: int, me: str) -> tuple[str, ...] | None:
        """p's owners when `me` neither owns p nor receives it (now or in the next ring);
        None when it does. Asked per replica write, so remembered per partition."""
        try:
            return self._stray[(p, me)]
        except KeyError:
            pass
        owners = self.current.preflist(p)
        got = None if me in owners or me in self.pending(p) or (
            self.moving and me in self.next.preflist(p)) else owners
        self._stray[(p, me)] = got
        return got

    def transfers(self) -> list[tuple[int, str, list[str]]]:
        """(partition, receiver, sources in preference order) for every transfer of the plan."""
        st = self.state
        out = []
        for p, receivers in sorted(self._pending.items()):
            have = self.current.preflist(p)
            # the node losing p first (it is leaving, or being removed and hence down), then
            # the other current owners
            losing = [x for x in have if x not in self.next.preflist(p)]
            sources = losing + [x for x in have if x not in losing]
            sources = [x for x in sources if st.status(x) != REMOVED] or sources
            for r in receivers:
                out.append((p, r, sources))
        return out

    def incoming(self, me: str) -> dict[int, list[str]]:
        """Partitions `me` must receive -> their sources."""
        return {p: srcs for p, r, srcs in self.transfers() if r == me}

    def lost_partitions(self) -> list[int]:
        """Partitions whose every current owner is removed: no replica left to refill them."""
        st = self.state
        return [p for p in self._pending
                if all(st.status(x) == REMOVED for x in self.current.preflist(p))]


# ---- the claimant's operations (each returns a new state, or raises ChangeError) -----------
def claimant(st: ClusterState, up: Iterable[str]) -> str | None:
    """Lowest id among valid members that are up (None if none is)."""
    alive = set(up)
    valid = [i for i in st.ids(frozenset({VALID})) if i in alive]
    return valid[0] if valid else None


def _staged_nodes(st: ClusterState) -> set[str]:
    out = set()
    for _, a, b in st.staged:
        out.add(a)
        if b:
            out.add(b)
    return out


def _members_after_one_leaves(st: ClusterState) -> int:
    """Members once one more leaves and every staged change is committed."""
    return (len(st.ids(NEXT)) - 1 + sum(1 for a, _, _ in st.staged if a == "join")
            - sum(1 for a, _, _ in st.staged if a in ("leave", "force-remove")))


def stage(st: ClusterState, action: str, node: str, other: str = "", *, known=(),
          down=(), n: int = 1) -> ClusterState:
    """Stage one change. `known`: ids in the member table (a join or replacement must be
    running); `down`: ids this node sees down; `n`: the cluster's N."""
    if action not in ACTIONS:
        raise ChangeError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if not NODE_ID_RE.match(node or "") or (other and not NODE_ID_RE.match(other)):
        raise ChangeError("bad node id")
    if action == "replace" and ("join", other, "") in st.staged:
        # the claimant staged the new node's join by itself (auto-commit off): the replace
        # takes its place, so the new node is placed where the old one was
        st = st.copy()
        st.staged.remove(("join", other, ""))
    busy = _staged_nodes(st)
    for x in (node, other):
        if x and x in busy:
            raise ChangeError(f"{x} already has a staged change; commit it first")
    status = st.status(node)
    if action == "join":
        if status is not None:
            raise ChangeError(f"{node} is already a member ({status})")
        if node not in known:
            raise ChangeError(f"{node} is not running in the cluster: start it with --seed "
                              f"(just started: wait until `zkv status` lists it, a few "
                              f"seconds, and ask again)")
    elif action == "leave":
        if status != VALID:
            raise ChangeError(f"{node} cannot leave: it is {status or 'not a member'}")
        remaining = _members_after_one_leaves(st)
        if remaining < 1:
            raise ChangeError(f"{node} is the last member; it cannot leave")
        if remaining < n:
            raise ChangeError(f"leaving {node} would keep {remaining} member(s) for N={n}: "
                              f"add a node first")
    elif action == "replace":
        if status != VALID:
            raise ChangeError(f"{node} cannot be replaced: it is {status or 'not a member'}")
        if not other:
            raise ChangeError("replace needs the new node's id")
        if other == node:
            raise ChangeError(f"{node} cannot replace itself (a node restarted on an empty "
                              f"disk under its own id refills by itself)")
        if st.status(other) not in (None, JOINING, VALID):
            raise ChangeError(f"{other} cannot take {node}'s place: it is {st.status(other)}")
        if other not in known and st.status(other) is None:
            raise ChangeError(f"{other} is not running in the cluster: start it with --seed "
                              f"(just started: wait until `zkv status` lists it, a few "
                              f"seconds, and ask again)")
        if st.status(other) is not None:  # a member already: the replace is a leave of node
            remaining = _members_after_one_leaves(st)
            if remaining < n:
                raise ChangeError(f"{other} is a member already, so replacing {node} by it "
                                  f"would keep {remaining} member(s) for N={n}: add a node "
                                  "first")
    elif action == "force-remove":
        if status is None or status == REMOVED:
            raise ChangeError(f"{node} is {status or 'not a member'}")
        if node not in down:
            raise ChangeError(f"{node} is up; use `zkv cluster leave {node}` to move its data "
                              f"off it (force-remove is for nodes gone for good; one stopped "
                              f"a moment ago is seen down within seconds: `zkv status`)")
        if len(st.ids(NEXT) ) - (1 if status in NEXT else 0) < 1:
            raise ChangeError(f"{node} is the last member")
    out = st.copy()
    out.staged.append((action, node, other))
    return out


CARRIED, DONE, LOST = "carried", "done", "lost"


def fate(st: ClusterState, action: str, node: str, other: str = "",
         committed: bool = False) -> str:
    """What became of an operator's change (leave, replace or force-remove of `node`, or
    any change of a `commit`: `committed`) in state `st`: DONE once it took effect for good
    (`node` no longer a member: it left or was removed, finalized, or a joining node
    force-removed; a committed join: `node` a member), CARRIED while `st` holds it (`node`
    leaving or removed, by this change or another one that moves its data off the same way;
    staged, unless the change was committed: staged again in a state that lost the commit,
    it waits for one that may never come), else LOST (a state without it won over the one
    that had it)."""
    status = st.status(node)
    if action == "join":
        return DONE if status is not None else (
            CARRIED if not committed and (action, node, other) in st.staged else LOST)
    if status is None:
        return DONE
    if status == REMOVED or (status == LEAVING and action != "force-remove") or (
            not committed and (action, node, other) in st.staged):
        return CARRIED
    return LOST


def commit(st: ClusterState, author: str, racks: dict[str, str],
           only: str = "", now_ms: int = 0) -> ClusterState:
    """Apply every staged change (racks: the member table's racks of joining nodes), or only
    the ones naming node `only` (the others stay staged: a lost commit made again). A joining
    node force-removed is gone as of `now_ms` (wall ms), as a leaver is once its change
    completes: its record, left in the member tables while it is down, is not staged to join
    again (`joinable`) unless it starts again, a later incarnation."""
    todo = [c for c in st.staged if not only or only in (c[1], c[2])]
    if not todo:
        raise ChangeError(f"nothing staged for {only}" if only else "nothing staged")
    out = st.copy()
    for action, node, other in todo:
        if action == "join":
            out.members[node] = (JOINING, racks.get(node, "default"))
            _fresh_token(out, node)
        elif action == "leave":
            out.members[node] = (LEAVING, out.members[node][1])
        elif action == "replace":
            # the new node takes the old one's place: it is placed by the old one's token, so
            # exactly the old one's partitions move (from it, or from the other replicas when
            # it is dead). With auto-commit the new node may already be joining under its own
            # token: it is re-placed (the partitions of its own share it was receiving are
            # forgotten); if its join already completed (valid), it keeps its own place and
            # the old one just leaves.
            out.members[node] = (LEAVING, out.members[node][1])
            if out.status(other) in (None, JOINING):
                rack = out.members[other][1] if other in out.members else "default"
                out.members[other] = (JOINING, racks.get(other, rack))
                out.tokens[other] = out.token(node)
                if out.tokens[other] == other:
                    del out.tokens[other]
        elif action == "force-remove":
            if out.members[node][0] == JOINING:
                del out.members[node]  # never owned anything
                if now_ms:
                    out.gone[node] = now_ms
                    while len(out.gone) > MAX_GONE:
                        out.gone.pop(next(iter(out.gone)))
            else:
                out.members[node] = (REMOVED, out.members[node][1])
    out.staged = [c for c in out.staged if c not in todo]
    out.epoch += 1
    out.author = author
    return out


def finalize(st: ClusterState, author: str, now_ms: int) -> ClusterState:
    """Every transfer is complete: pending owners become owners, leavers are gone."""
    out = st.copy()
    for nid, (status, rack) in list(out.members.items()):
        if status == JOINING:
            out.members[nid] = (VALID, rack)
        elif status in (LEAVING, REMOVED):
            del out.members[nid]
            out.tokens.pop(nid, None)
            out.gone[nid] = now_ms
    while len(out.gone) > MAX_GONE:
        out.gone.pop(next(iter(out.gone)))
    out.epoch += 1
    out.author = author
    return out


def _fresh_token(st: ClusterState, node: str) -> None:
    """A joining node whose id another member is placed by (it replaced this id's earlier
    life) gets a token of its own."""
    used = {st.token(i) for i in st.members if i != node}
    if st.token(node) in used:
        tok = f"{node[:40]}:{st.epoch}"
        k = 0
        while tok in used:
            k += 1
            tok = f"{node[:40]}:{st.epoch}.{k}"
        st.tokens[node] = tok


def set_auto_commit(st: ClusterState, author: str, value: bool) -> ClusterState:
    out = st.copy()
    out.auto_commit = value
    out.epoch += 1
    out.author = author
    return out


def joinable(st: ClusterState, table: Iterable[tuple[str, int]]) -> list[str]:
    """Members of the table (id, incarnation) to stage a join for: not in the state, not
    already staged, and not gone (unless started again after it left: a later incarnation;
    a node started on the data dir it left behind says it is leaving, and is not listed)."""
    busy = _staged_nodes(st)
    out = []
    for nid, inc in table:
        if nid in st.members or nid in busy:
            continue
        if nid in st.gone and inc <= st.gone[nid]:
            continue
        out.append(nid)
    return sorted(out)


def plan(st: ClusterState, q: int, n: int, sizes: dict[int, int] | None = None, *,
         others: Iterable[int] = (),
         other_sizes: dict[tuple[int, int], int] | None = None,
         known_racks: dict[str, str] | None = None) -> dict:
    """What committing the staged changes would do (or what the running change does, when
    nothing is staged): ownership after, transfers per pair of nodes, moved fraction.

    `n`: the cluster's N; `others`: every other N a namespace uses (issue 15): each N has its
    own preference lists, so its keys move on their own (the rows of `transfers` say which N).
    `sizes`: bytes per partition of the cluster's N as far as the asking node knows (its own
    replicas), `other_sizes` the same per (N, partition); partitions it does not hold are
    estimated at the mean of those it holds (per N). `known_racks`: racks of nodes a staged
    change adds (the member table's; "default" for one it does not know)."""
    racks = {**(known_racks or {}), **{nid: rack for nid, (_, rack) in st.members.items()}}
    target = st
    if st.staged:
        known = {x for _, a, b in st.staged for x in (a, b) if x}
        for x in known:
            racks.setdefault(x, "default")
        target = commit(st, st.author, racks)
    groups = [n] + sorted(set(others) - {n})
    rings = Rings(target, q, n)
    pairs: dict[tuple[str, str, int], list[int]] = {}
    group_sizes: dict[int, dict[int, int]] = {n: dict(sizes or {})}
    for (gn, p), size in (other_sizes or {}).items():
        group_sizes.setdefault(gn, {})[p] = size
    warnings = []
    for gn in groups:
        grings = rings if gn == n else Rings(target, q, gn)
        for p, r, srcs in grings.transfers():
            pairs.setdefault((srcs[0], r, gn), []).append(p)
        warnings += [f"partition {p}{'' if gn == n else f' (namespaces with N={gn})'} has no "
                     f"replica outside the removed node(s): its data is lost (it starts empty "
                     f"on its new owners, with what other nodes still hold of it)"
                     for p in grings.lost_partitions()]
    transfers = []
    for (a, b, gn), ps in sorted(pairs.items()):
        gs = group_sizes.get(gn, {})
        mean = (sum(gs.values()) // len(gs)) if gs else 0
        transfers.append({"from": a, "to": b, "n": gn, "partitions": len(ps),
                          "bytes": sum(gs.get(p, mean) for p in ps)})
    owned = {nid: len(rings.next.owned(nid)) for nid in rings.next.members}
    cur_members = set(rings.current.members)
    nxt_members = set(rings.next.members)
    changed = len(cur_members ^ nxt_members)
    moved = rings.current.moved(rings.next) if rings.moving else 0.0
    minimum = 0.0
    if changed:
        # the least a change can move: the joiners' fair share, or the leavers' whole share
        joins = len(nxt_members - cur_members)
        leaves = len(cur_members - nxt_members)
        minimum = max(joins / max(1, len(nxt_members)), leaves / max(1, len(cur_members)))
    return {
        "epoch": st.epoch, "auto_commit": st.auto_commit,
        "staged": [{"action": a, "node": b, "other": c} for a, b, c in st.staged],
        "members": {nid: s for nid, (s, _) in sorted(target.members.items())},
        "owned_after": owned,
        "transfers": transfers,
        "moved_fraction": round(moved, 4), "minimum_fraction": round(minimum, 4),
        "warnings": warnings,
    }
