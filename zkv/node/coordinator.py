"""Coordinator: the get / put / delete state machines (fan-out, quorum, stand-ins, read repair,
forwarding), as `Op`s (see `op.py`) driven by the node core.

The quorum arithmetic lives in `quorum.py`; these classes decide whom to ask and when. The
reply to the client goes out as soon as R (get) or W (put/delete) distinct replicas answered.

Stand-ins on silence (the seed's sloppy quorum at the moment of failure, not only once a node
is known down): every replica asked gets its own *soft* timeout, from what the node observed
of that peer's latency (`Context.replica_timeout`). A replica silent past it does not fail the
request: while the quorum is still short, the request also goes to the next two reachable
nodes of the key's walk (STANDINS_PER_SILENCE), which stand in for the silent owner (keep a
hint naming it, for writes; for reads, answer with what they hold for that owner). Whichever replicas answer first count; a
late answer from the silent one still counts (it is a distinct replica) and is otherwise
harmless (versions merge). A request is refused only at the deadline, naming the replicas that
never answered and how long it waited.

Answers arriving after the reply still count: a get's late answers feed read repair, which
runs once every replica answered or the deadline passed, after the client has its reply.

A request with a primary quorum (`pr`/`pw`, quorum.py) waits for that many answers from the
key's owners asked for their own copies; stand-ins still take the copies of silent owners
(hints), but their answers count toward R or W only. The node core refuses one at once when
fewer owners than that are reachable (`NodeCore._coordinate`).
"""

from __future__ import annotations

import blake3

from zkv._core import dvv
from zkv.errors import InvalidRequest, StorageFull, TooManySiblings
from zkv.node.namespaces import STAMP_BYTES
from zkv.node.op import Op
from zkv.node.quorum import GetQuorum, PutQuorum, joint_enough
from zkv.wire import (
    BUSY,
    E_INVALID,
    E_UNAVAILABLE,
    MAX_WID,
    NO_WRITES,
    WID_SIZE,
    Error,
    Forward,
    RGet,
    RGetOk,
    RPut,
    RPutOk,
    request_size,
)

# Stand-ins asked at once per silent replica. The next node of the walk may be silent too
# (frozen at the same moment, not yet suspected: nothing here knows yet), and each one in
# turn costs a soft timeout: with 2 of 5 nodes frozen, a w=3 put whose first stand-in was
# the other frozen node took 2 soft timeouts (bench_availability: 207-362 ms against a
# 120 ms bound). Asking two costs one extra copy (a hint, delivered and deleted like any)
# only when a replica was already silent past its soft timeout.
STANDINS_PER_SILENCE = 2

# A write whose copies to the replicas come to this many bytes or more counts them against
# its client's request bytes in flight (NodeCore.charge), as its own value counts: smaller
# ones are not worth the bookkeeping (a 1 KiB put's two copies: ~2.2 KiB). So does the
# version a get holds (the merge of the copies read here and answered) until it is done.
CHARGED_COPIES = 1 << 16


def stored_wid(wid: bytes, value: bytes | None) -> bytes:
    """The write id a client write is stored under: WID_SIZE bytes of BLAKE3 over the
    client's write id and the value it writes (None: a delete), so a retry of the same write
    (same id, same value) is known as one on any coordinator (rule D, dvv.pyx), and a write of
    another value can never pass for it. (The client's id went in as it was: any client that
    read a key's context, where write ids are listed, could send a blind put of its own value
    under the id of another client's acknowledged write, and rule D kept only one of the two,
    the greater: an outside security run erased another client's write so.) b"" stays b""
    (no id: no dedup), and an id too long stays as it is, to be refused."""
    if not wid or len(wid) > MAX_WID:
        return wid
    h = blake3.blake3(len(wid).to_bytes(1, "big"))
    h.update(wid)
    if value is None:
        h.update(b"\x00")
    else:
        h.update(b"\x01")
        h.update(value)
    return h.digest(WID_SIZE)


class _FanOut(Op):
    """Shared by reads and writes: per-replica soft timeouts and stand-ins for silent nodes."""

    quorum: GetQuorum | PutQuorum
    woken_at = float("inf")  # when the op's last wake-up was asked for (none yet)

    def __init__(self, ctx, origin, key, deadline, targets: list[tuple[str, str | None]]) -> None:
        Op.__init__(self, ctx, origin, key, deadline)  # (named: no super() per op)
        self.targets = targets  # (node, owner it stands in for, or None)
        self.asked: dict[str, str | None] = {}  # every node asked so far -> owner it covers
        self.soft: dict[str, float] = {}  # pending node -> when it counts as silent
        self.late: set[str] = set()

    def _send(self, node: str, owner: str | None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _ask(self, node: str, owner: str | None, msg, now: float | None = None) -> None:
        ctx = self.ctx
        if now is None:  # (a caller asking several replicas at once reads the clock once)
            now = ctx.now()
        self.asked[node] = owner
        self.pending.add(node)
        self.soft[node] = now + ctx.replica_timeout(node, self.deadline - now)
        ctx.ask(node, msg, self)

    def _arm(self) -> None:
        # the earliest soft timeout of a pending replica not yet late (a loop: per op start
        # and reply, a list and min() cost more than the two or three nodes they scan)
        soft, late = self.soft, self.late
        at: float | None = None
        for n in self.pending:
            if n not in late:
                t = soft[n]
                if at is None or t < at:
                    at = t
        if at is not None and (at < self.woken_at or self.woken_at <= self.ctx.now()):
            self.woken_at = at
            self.ctx.wake(self, at)

    def _enough(self) -> bool:
        return self.quorum.enough()

    def _answer(self) -> None:  # pragma: no cover - overridden
        """Reply to the client with what the quorum holds (R/W reached)."""
        raise NotImplementedError

    def _check(self) -> None:
        if not self.replied and self.quorum.enough():
            self._answer()
        if not self.pending:
            self._fail(settled=True)  # everyone answered and still short: say so now
            self.finish()

    def _fail(self, settled: bool = False) -> None:
        if not self.replied:
            waited = None if settled else self.ctx.now() - self.started
            self.reply(self.quorum.failure(self.silent(), waited), ok=False)

    def on_timeout(self) -> None:
        self._fail()
        super().on_timeout()

    def on_timer(self) -> None:
        now = self.ctx.now()
        self.woken_at = float("inf")
        for node in sorted(self.pending - self.late):
            if now >= self.soft[node]:
                self.late.add(node)
                if not self._enough():
                    self._stand_in_for(node)
        self._arm()

    def _stand_in_for(self, node: str) -> None:
        owner = self.asked[node] or node  # a stand-in for a stand-in still covers the owner
        walk = self.ctx.standins(self.key, set(self.asked) | {self.ctx.me})
        for nxt in walk[:STANDINS_PER_SILENCE]:
            # the walk may reach the owner itself (back since the targets were chosen): then
            # it is a plain replica, not a stand-in keeping a hint for itself
            self._send(nxt, None if nxt == owner else owner)

    def silent(self) -> list[str]:
        return sorted(self.pending)


# a replica whose reply budget for this turn is spent (NodeCore._reply: a frame asked for
# more large values than one turn sends to one peer) answers BUSY unread: it is asked again
# (its next turn has a new budget), at most BUSY_ASKS times per get: enough for a frame of 8
# reads of the largest value (3 failed 2 of 48 gets of 15 MiB values, 4 at a time, on a
# loaded machine), few enough that a replica answering busy for ever costs a get 8 round trips
BUSY_ASKS = 8


class GetOp(_FanOut):
    kind = "get"
    quorum: GetQuorum
    subs: frozenset[str] | set[str] = frozenset()  # previous owners asked (`_ask_previous`)
    previous: dict[str, str | None] = {}  # a read under an unsettled previous state asks
    resent: set[str]  # substitutes asked again (on_timer)
    busy = 0  # replicas asked again after a BUSY answer

    def __init__(self, ctx, origin, key, deadline, targets: list[tuple[str, str | None]],
                 r: int, lww: int = 0,
                 joint: tuple[list[tuple[frozenset[str], int]], dict[str, str | None]] | None
                 = None, ttl_ms: int = 0, pr: int = 0,
                 owners: frozenset[str] = frozenset()) -> None:
        super().__init__(ctx, origin, key, deadline, targets)
        self.required = r
        self.owners = owners  # the key's owners, when pr asks for them (else empty)
        if joint is None:
            self.quorum = GetQuorum(r, lww, None, ttl_ms, pr)
        else:  # (an ownership change not settled: NodeCore._joint)
            self.quorum = GetQuorum(r, lww, joint[0], ttl_ms, pr)
            self.previous = joint[1]

    def start(self) -> None:
        for node_id, owner in self.targets:
            if node_id == self.ctx.me:
                self.asked[node_id] = owner
                held = self.ctx.replica.read(self.key, owner)
                self.quorum.add_result(node_id, held,
                                       not owner and self.ctx.refilling(self.key), False,
                                       owner is None and node_id in self.owners)
                if len(held) >= CHARGED_COPIES:
                    self._charge_merged()
            else:
                self._send(node_id, owner)
        if self.quorum.also is not None:
            self._ask_previous()
        self._arm()
        self._check()

    def _ask_previous(self) -> None:
        """The ownership change has not settled: ask the nodes a get under the previous state
        would ask as well (substitutes: their answers count only toward `also`)."""
        ctx, quorum = self.ctx, self.quorum
        self.subs, self.resent = set(), set()
        for node_id, owner in sorted(self.previous.items()):
            if node_id in self.asked:
                continue
            self.subs.add(node_id)
            if node_id == ctx.me:
                self.asked[node_id] = owner
                held = ctx.replica.read(self.key, owner)
                quorum.add_result(node_id, held, not owner and ctx.refilling(self.key), True)
                if len(held) >= CHARGED_COPIES:
                    self._charge_merged()
            else:
                self._send(node_id, owner)

    def _stand_in_for(self, node: str) -> None:
        if node not in self.subs:  # (a stand-in holds hints for new owners only)
            super()._stand_in_for(node)

    def on_timer(self) -> None:
        quorum = self.quorum
        if quorum.also is not None and not self.replied:
            # a previous owner silent past its soft timeout: a substitute is asked once more
            # (a request a full send queue dropped), then excused, as is an owner asked
            # anyway (stand-ins answer in its place)
            ctx = self.ctx
            now = ctx.now()
            old = {x for nodes, _ in quorum.also for x in nodes}
            for x in sorted(self.pending - self.late):
                if x in old and now >= self.soft[x]:
                    if x in self.subs and x not in quorum.excused and x not in self.resent:
                        self.resent.add(x)
                        self._send(x, self.asked[x])
                    else:
                        quorum.excused.add(x)  # type: ignore[union-attr]  # (a set: also)
        super().on_timer()
        if quorum.also is not None and not self.replied and quorum.enough():
            self._answer()

    def on_timeout(self) -> None:
        quorum = self.quorum
        if quorum.also is not None and not self.replied:
            quorum.excused.update(self.pending)  # type: ignore[union-attr]
            if quorum.enough():
                self._answer()
        super().on_timeout()

    def _send(self, node: str, owner: str | None) -> None:
        self._ask(node, owner, RGet(0, self.key, owner or ""))

    def on_reply(self, node_id: str, msg) -> None:
        if node_id not in self.pending:
            return
        if (type(msg) is Error and msg.message.startswith(BUSY) and not self.replied
                and self.busy < BUSY_ASKS):
            self.busy += 1  # (a frame of reads of 1 MiB and 16 MiB values: the second
            self._send(node_id, self.asked[node_id])  # failed the get with its replicas up)
            return
        self.pending.discard(node_id)
        if isinstance(msg, RGetOk):
            # (a primary: one of the key's owners asked for its own copy, not as a stand-in)
            self.quorum.add_result(node_id, msg.dvv, msg.unsure, node_id in self.subs,
                                   node_id in self.owners and self.asked[node_id] is None)
            if len(msg.dvv) >= CHARGED_COPIES:
                self._charge_merged()
        self._check()

    def _charge_merged(self) -> None:
        """A large version the get holds until it is done counts against its client's bytes in
        flight (NodeCore._bytes_refused), as a write's copies do: the merged one, the only one
        it keeps (GetQuorum keeps a large answer by its digest)."""
        if self.origin is None:
            return
        merged = self.quorum.merged
        held = len(merged) if merged is not None and len(merged) >= CHARGED_COPIES else 0
        if held != self.copies:
            self.ctx.charge(self, held - self.copies)

    def _answer(self) -> None:
        q = self.quorum  # (the wall clock only where a write's own ttl is judged)
        ok, size = q.response(self.ctx.wall_ms() if q.lww > STAMP_BYTES else 0)
        if ok.context and self.ctx.seal.issue:
            ok.context = self.ctx.seal.seal(self.key, ok.context)
        self.reply(ok)
        if size > 1:
            self.ctx.replica.note_siblings(self.key, size)

    def finish(self) -> None:
        for node_id, enc in self.quorum.final_action():
            owner = self.asked.get(node_id)
            if node_id == self.ctx.me:
                try:
                    self.ctx.replica.merge(self.key, enc, owner)
                except (StorageFull, OSError):
                    continue  # this node's disk takes no writes: anti-entropy repairs it later
            else:
                self.ctx.ask(node_id, RPut(0, self.key, enc, owner or ""), None)
            self.ctx.repaired()
        super().finish()

    def on_done(self) -> None:
        self.quorum.release()  # the values read are freed at completion, whatever holds the op
        super().on_done()


class WriteOp(_FanOut):
    """put (value is bytes) or delete (value is None): coordinate locally, fan the result out."""

    quorum: PutQuorum

    def __init__(self, ctx, origin, key, deadline, targets, w, context, value,
                 wid: bytes = b"", extra: list[str] | None = None, stamp: int = 0,
                 pw: int = 0, owners: frozenset[str] = frozenset()) -> None:
        # what Op.__init__ and _FanOut.__init__ set, here without their two calls (one op
        # per put; keep in step with them)
        self.ctx = ctx
        self.origin = origin
        self.key = key
        self.deadline = deadline
        self.pending: set[str] = set()
        self.rids: list[int] = []
        self.targets = targets
        self.asked: dict[str, str | None] = {}
        self.soft: dict[str, float] = {}
        self.late: set[str] = set()
        self.kind = "put" if value is not None else "delete"
        if origin is not None:  # (counted against its client's in-flight bytes)
            self.size = len(value or b"") + len(context or b"")
        self.required = w
        self.quorum = PutQuorum(w, self.kind, pw)
        self.owners = owners  # the key's owners, when pw asks for them (else empty)
        self.context = context
        self.value = value
        self.wid = wid
        # pending owners during a transfer: sent to, not counted
        self.extra = extra if extra is not None else []
        self.stamp = stamp  # lww: the HLC stamp in front of value (0: not lww)
        self.extra_waiting: set[str] = set()  # extra nodes that have not acknowledged yet
        self.version: bytes = b""
        self.written: dvv.DVVSet | None = None  # self.version decoded, when at hand

    def start(self) -> None:
        ctx = self.ctx
        me = ctx.me
        mine = None  # the owner this node stands in for: dict(targets).get(me), no dict
        for node_id, owner in self.targets:
            if node_id == me:
                mine = owner
        try:
            self.version, self.written = ctx.replica.coordinate_set(
                self.key, self.context, self.value, mine, self.wid)
        except InvalidRequest as exc:  # the engine refused it (too large, ...): say what
            # (a sibling refusal's limit and count in required/acked: the client's
            # TooManySiblings, which update() retries; an older client sees InvalidRequest)
            counts = (exc.limit, exc.siblings) if isinstance(exc, TooManySiblings) else (0, 0)
            self.reply(Error(0, E_INVALID, str(exc), *counts), ok=False)
            self.finish()
            return
        except (StorageFull, OSError) as exc:  # this node's disk takes no writes: another may
            self.ctx.storage_refused(exc)
            self.reply(Error(0, E_UNAVAILABLE, f"{ctx.me} {NO_WRITES}: {exc}"),
                       ok=False)
            self.finish()
            return
        except ValueError as exc:  # (a write id too long is the client's, not its context's)
            what = "bad write id" if len(self.wid) > MAX_WID else "bad context"
            self.reply(Error(0, E_INVALID, f"{what}: {exc}"), ok=False)
            self.finish()
            return
        asked, pending, soft = self.asked, self.pending, self.soft
        asked[me] = mine
        self.quorum.add_result(me, True, mine is None and me in self.owners)
        key, version, now, deadline = self.key, self.version, ctx.now(), self.deadline
        timeout, ask = ctx.replica_timeout, ctx.ask
        for node_id, owner in self.targets:
            if node_id != me:  # (_send, then _ask, inline: one call per replica, not three)
                asked[node_id] = owner
                pending.add(node_id)
                soft[node_id] = now + timeout(node_id, deadline - now)
                ask(node_id, RPut(0, key, version, owner or ""), self)
        is_up = ctx.is_up
        for node_id in self.extra:
            if node_id == me or not is_up(node_id):
                # me: a pending (or previous) owner coordinating as a stand-in keeps its own
                # copy; a pending or previous owner that gossip shows down gets its copy as a
                # hint at once, as on_done would after waiting out the op for its silence
                try:
                    self.ctx.replica.merge(self.key, self.version,
                                           None if node_id == me else node_id)
                except (ValueError, StorageFull, OSError):  # (refused: anti-entropy fixes it)
                    pass
                continue
            self.extra_waiting.add(node_id)
            self.ctx.ask(node_id, RPut(0, self.key, self.version), self)
        sent = len(version) * (len(pending) + len(self.extra_waiting))
        if sent >= CHARGED_COPIES and self.holds_slot:
            # the copies sent hold memory until the replicas take them, whatever the request's
            # own size: a 100-byte put to a key of 8 siblings of 1 MiB sends 8 MiB to each
            # replica (an outside run drove a node past 5.7 GB with 0.13 MB of such puts)
            ctx.charge(self, sent)
        self._arm()
        self._check()

    def _send(self, node: str, owner: str | None) -> None:
        self._ask(node, owner, RPut(0, self.key, self.version, owner or ""))

    def on_reply(self, node_id: str, msg) -> None:
        pending = self.pending
        if node_id not in pending:
            if node_id in self.extra_waiting and isinstance(msg, RPutOk) and msg.ok:
                self.extra_waiting.discard(node_id)
                if not pending and not self.extra_waiting:
                    self.finish()
            return
        pending.discard(node_id)
        # (_check inline: asked per acknowledgement)
        q = self.quorum
        ok = isinstance(msg, RPutOk) and msg.ok
        # (a primary: one of the key's owners that stored it for itself, not as a stand-in)
        q.add_result(node_id, ok, node_id in self.owners and self.asked[node_id] is None)
        if not ok and type(msg) is Error and msg.code == E_UNAVAILABLE and not self.replied \
                and len(q.acked) < q.required:
            # the replica takes no writes now (its disk, or it is joining): as for a silent
            # one, stand-ins keep the write as a hint for its owner, without waiting
            self.late.add(node_id)
            self._stand_in_for(node_id)
        if not self.replied and len(q.acked) >= q.required and q.primaries >= q.pw:
            self._answer()
        if not pending:
            if not self.replied:
                self._fail(settled=True)
            if not self.extra_waiting:
                self.finish()

    def _check(self) -> None:
        # (quorum.enough() inline: asked at the start and at every acknowledgement)
        q = self.quorum
        if not self.replied and len(q.acked) >= q.required and q.primaries >= q.pw:
            self._answer()
        if not self.pending:
            if not self.replied:
                self._fail(settled=True)
            if not self.extra_waiting:
                self.finish()

    def on_done(self) -> None:
        # a pending (or previous) owner that did not acknowledge its uncounted copy gets it as
        # a hint: a lost copy is otherwise missing on the new owner until anti-entropy, and
        # for a namespace with N=1 the old owner that held the only other copy drops it
        # (the simulator found this: membership, spaces N=1, seed 1 under faults)
        if self.extra_waiting:
            for node_id in sorted(self.extra_waiting):  # (a set: in an order no hash picks,
                # so the hints' order, and a simulated run, replay alike under any PYTHONHASHSEED)
                try:
                    self.ctx.replica.merge(self.key, self.version, node_id)
                except (ValueError, StorageFull, OSError):  # (refused: anti-entropy fixes it)
                    pass
            self.extra_waiting.clear()
        if self.on_finish is not None:  # (Op.on_done, without the super() call)
            self.on_finish(self)

    def _answer(self) -> None:
        ok, size = self.quorum.response(self.version, self.stamp, self.written,
                                        self.context, self.wid)
        if ok.context and self.ctx.seal.issue:
            ok.context = self.ctx.seal.seal(self.key, ok.context)
        self.reply(ok)
        if size > 1:
            self.ctx.replica.note_siblings(self.key, size, write=True)


class JointWriteOp(WriteOp):
    """A write while an ownership change has not settled here (NodeCore._joint_write): W of
    the current owners as ever, and also, for each previous ring, min(W, live) of its owners
    that were up at the start, counting the acknowledgements of their uncounted copies
    (`extra`): a node that has not heard of the change yet reads by the previous ring, and
    its read quorum then meets this write. A previous owner silent past its soft timeout is
    sent its copy again (a full send queue drops what it does not take), and excused at the
    next one, as is a current owner that is late (stand-ins take its place): a slow or
    frozen previous owner costs a write a soft timeout or two, never an error."""

    def __init__(self, *args, also: list[tuple[frozenset[str], int]], **kw) -> None:
        super().__init__(*args, **kw)
        self.also = also
        self.old = {x for nodes, _ in also for x in nodes}
        self.extra_acked: set[str] = set()
        self.extra_soft: dict[str, float] = {}
        self.excused: set[str] = set()
        self.resent: set[str] = set()

    def _old_enough(self) -> bool:
        return joint_enough(self.also, self.quorum.acked | self.extra_acked, self.excused)

    def _old_waiting(self) -> bool:
        """A previous owner's copy is still unacknowledged and not excused."""
        return any(x in self.old and x not in self.excused for x in self.extra_waiting)

    def _w_reached(self) -> bool:
        return not self.replied and self.quorum.enough()

    def _answer(self) -> None:
        if self._old_enough():  # (else an acknowledgement or a timer answers it later)
            super()._answer()

    def _fail(self, settled: bool = False) -> None:
        if self._w_reached() and self._old_waiting():
            return  # W reached: waiting for the previous owners (or their soft timeouts)
        super()._fail(settled)

    def on_reply(self, node_id: str, msg) -> None:
        if node_id in self.extra_waiting and node_id not in self.pending \
                and isinstance(msg, RPutOk) and msg.ok:
            self.extra_acked.add(node_id)
            if self._w_reached():
                self._answer()
        super().on_reply(node_id, msg)

    def _arm(self) -> None:
        super()._arm()
        ctx = self.ctx
        now = ctx.now()
        at = None
        for x in self.extra_waiting:
            if x not in self.old or x in self.excused:
                continue
            t = self.extra_soft.get(x)
            if t is None:
                t = self.extra_soft[x] = now + ctx.replica_timeout(x, self.deadline - now)
            if at is None or t < at:
                at = t
        if at is not None and (at < self.woken_at or self.woken_at <= now):
            self.woken_at = at
            ctx.wake(self, at)

    def on_timer(self) -> None:
        ctx = self.ctx
        now = ctx.now()
        for x in sorted(self.extra_waiting):
            if x in self.old and x not in self.excused and self.extra_soft.get(x, now) <= now:
                if x in self.resent:
                    self.excused.add(x)
                else:  # sent again: a copy a full send queue dropped
                    self.resent.add(x)
                    self.extra_soft[x] = now + ctx.replica_timeout(x, self.deadline - now)
                    ctx.ask(x, RPut(0, self.key, self.version), self)
        super().on_timer()
        self.excused.update(x for x in self.late if x in self.old)
        if self._w_reached():
            self._answer()

    def on_timeout(self) -> None:
        self.excused.update(self.old)
        if self._w_reached():
            self._answer()
        super().on_timeout()


class ForwardOp(Op):
    """Hand a client request to a preference-list node (one hop) and relay its answer (a
    write this node is no owner of; a get only while one of its owners is unreachable:
    NodeCore._on_client).

    If the chosen node does not answer within `per_try` seconds the next candidate gets it;
    when none answers, this node coordinates it itself (standing in for the owners).
    """

    kind = "forward"

    def __init__(self, ctx, origin, key, deadline, inner, candidates: list[str],
                 per_try: float, stamp: int = 0, gen: int = -1) -> None:
        super().__init__(ctx, origin, key, deadline)
        self.inner = inner
        self.size = request_size(inner)  # (counted against its client's in-flight bytes)
        self.candidates = list(candidates)
        self.per_try = per_try
        self.stamp = stamp  # an lww Put's stamp, given here on receipt (Forward.stamp)
        self.gen = gen  # its namespace's generation on receipt (Forward.gen)
        self.current: str | None = None

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        if not self.candidates:
            self.finish()
            self.ctx.coordinate_here(self.origin, self.inner, self.stamp, self.gen)
            return
        self.current = self.candidates.pop(0)
        self.pending = {self.current}
        self.deadline = self.ctx.now() + self.per_try
        self.ctx.wake(self, self.deadline)
        self.ctx.ask(self.current, Forward(0, self.inner, self.stamp, self.gen), self)

    def on_reply(self, node_id: str, msg) -> None:
        if node_id != self.current:
            return
        self.pending.clear()
        self.reply(msg, ok=not isinstance(msg, Error))
        self.finish()

    def on_timeout(self) -> None:
        if self.ctx.stood_still_since(self.deadline - self.per_try):
            # this node stood still (SIGSTOP, a frozen VM) while the try waited: the request
            # is stale, its client has most likely retried it through another node since.
            # Sent on to the next owner, or coordinated here, it came back as a new write
            # over the ones that client made since (an outside run: values a chain of puts
            # had replaced were siblings again). Refused: a client still waiting retries
            # it, same write id.
            self.reply(Error(0, E_UNAVAILABLE, f"{self.ctx.me} stood still (stopped, or "
                             "starved of CPU) while forwarding this request; retry it"),
                       ok=False)
            self.finish()
            return
        if self.current is not None:
            self.ctx.suspect(self.current, "forward timed out")
        self._next()
